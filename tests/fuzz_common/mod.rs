//! Generators and properties shared by the fuzz tests (tests/fuzz_*.rs): device ids, modality names,
//! timestamps and sample buffers that mix valid values with the hostile ones (empty, too long, NaN/Inf,
//! i64 extremes, oversized), and the checks every refusal must pass. The properties are about the shape of
//! a refusal (status class, JSON shape, non-empty message), never its exact wording: validations change.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::OnceLock;

use crossl_serve::error::Error;
use crossl_serve::model::Manifest;
use crossl_serve::proto;
use crossl_serve::proto::stream_request::Kind;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

pub const SECOND: i64 = 1_000_000_000;

/// Case count: `PROPTEST_CASES` when set (to fuzz longer), else the test's modest default (2 shared cores).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `test` on `cases(default)` inputs of `strategy`; panics with the (shrunk) failing input.
pub fn run<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(default_cases),
        // The runner's own file persistence needs a source file per test; a failure prints its input instead.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
}

/// The bundled model's manifest (read once).
pub fn manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/crossl-dsads");
        Manifest::load(&dir).expect("the bundled model's manifest loads")
    })
}

/// A multi-thread runtime for tests that drive async servers from proptest's synchronous closures.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Device ids: mostly a small valid pool (so state builds up), plus empty, too long, illegal characters.
pub fn device_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0..4u8).prop_map(|i| format!("fz-{i}")),
        1 => Just(String::new()),
        1 => Just("x".repeat(129)),
        1 => "[a-z]{1,6} [a-z/]{1,6}",
        1 => "[A-Za-z0-9._:-]{1,128}",
        1 => any::<String>(),
    ]
}

/// Modality names: mostly the model's own, plus unknown, empty and arbitrary Unicode names.
pub fn modality_name() -> impl Strategy<Value = String> {
    let names: Vec<String> = manifest()
        .modalities
        .iter()
        .map(|m| m.name.clone())
        .collect();
    prop_oneof![
        6 => proptest::sample::select(names),
        1 => Just(String::new()),
        1 => "[a-z_]{1,24}",
        1 => any::<String>(),
    ]
}

/// A chunk start, resolved against the server clock when the case runs.
#[derive(Clone, Debug)]
pub enum Stamp {
    /// Within a few seconds of the server clock (milliseconds from "now" on the whole second).
    Near(i64),
    Zero,
    Negative(i64),
    Min,
    Max,
    /// Just inside or outside the default one-hour skew bound (milliseconds past it; may be negative).
    PastSkewEdge(i64),
    FutureSkewEdge(i64),
    /// Days in the past: a stray chunk from an old timeline.
    DaysAgo(u16),
    Any(i64),
}

impl Stamp {
    pub fn resolve(&self, now_unix_nanos: i64) -> i64 {
        let base = now_unix_nanos / SECOND * SECOND;
        let hour = 3600 * SECOND;
        match *self {
            Stamp::Near(ms) => base.saturating_add(ms.saturating_mul(1_000_000)),
            Stamp::Zero => 0,
            Stamp::Negative(n) => n,
            Stamp::Min => i64::MIN,
            Stamp::Max => i64::MAX,
            Stamp::PastSkewEdge(ms) => base
                .saturating_sub(hour)
                .saturating_sub(ms.saturating_mul(1_000_000)),
            Stamp::FutureSkewEdge(ms) => base
                .saturating_add(hour)
                .saturating_add(ms.saturating_mul(1_000_000)),
            Stamp::DaysAgo(d) => base.saturating_sub(i64::from(d) * 86_400 * SECOND),
            Stamp::Any(n) => n,
        }
    }
}

pub fn stamp() -> impl Strategy<Value = Stamp> {
    prop_oneof![
        8 => (-6_000i64..6_000).prop_map(Stamp::Near),
        1 => Just(Stamp::Zero),
        1 => (i64::MIN..0).prop_map(Stamp::Negative),
        1 => Just(Stamp::Min),
        1 => Just(Stamp::Max),
        1 => (-2_000i64..2_000).prop_map(Stamp::PastSkewEdge),
        1 => (-2_000i64..2_000).prop_map(Stamp::FutureSkewEdge),
        1 => (1u16..4000).prop_map(Stamp::DaysAgo),
        1 => any::<i64>().prop_map(Stamp::Any),
    ]
}

/// One sample value: mostly plausible sensor readings, sometimes NaN, ±Inf, extremes or subnormals.
pub fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        10 => -50.0f32..50.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN),
        1 => Just(f32::MIN_POSITIVE / 4.0),
        1 => Just(-0.0f32),
        1 => any::<f32>(),
    ]
}

/// A chunk's samples, described compactly so that big buffers do not cost a random draw per value.
#[derive(Clone, Debug)]
pub enum Samples {
    /// Explicit values (any length: not necessarily a multiple of the channel count).
    Values(Vec<f32>),
    /// `rows` rows of `channels` copies of `value` (up to past `--max-chunk-samples`).
    Filled {
        rows: usize,
        channels: usize,
        value: f32,
    },
}

impl Samples {
    pub fn build(&self) -> Vec<f32> {
        match self {
            Samples::Values(v) => v.clone(),
            Samples::Filled {
                rows,
                channels,
                value,
            } => vec![*value; rows * channels],
        }
    }
}

pub fn samples() -> impl Strategy<Value = Samples> {
    prop_oneof![
        // Whole rows of three channels (every bundled modality has three).
        6 => (0usize..40).prop_flat_map(|rows| proptest::collection::vec(value(), rows * 3))
            .prop_map(Samples::Values),
        2 => proptest::collection::vec(value(), 0..130).prop_map(Samples::Values),
        1 => (
            prop_oneof![Just(0usize), 1usize..60, 4090usize..4100],
            1usize..5,
            prop_oneof![3 => Just(1.0f32), 1 => value()],
        )
            .prop_map(|(rows, channels, value)| Samples::Filled { rows, channels, value }),
    ]
}

/// A `StreamRequest` before its timestamp is resolved.
#[derive(Clone, Debug)]
pub enum RequestSpec {
    Hello {
        sequence: u64,
        device_id: String,
        modalities: Vec<String>,
        metadata: Vec<(String, String)>,
    },
    Chunk {
        sequence: u64,
        device_id: String,
        modality: String,
        start: Stamp,
        samples: Samples,
    },
    /// Neither hello nor chunk.
    Empty { sequence: u64 },
}

impl RequestSpec {
    pub fn build(&self, now_unix_nanos: i64) -> proto::StreamRequest {
        match self {
            RequestSpec::Hello {
                sequence,
                device_id,
                modalities,
                metadata,
            } => proto::StreamRequest {
                sequence: *sequence,
                kind: Some(Kind::Hello(proto::Hello {
                    device_id: device_id.clone(),
                    modalities: modalities.clone(),
                    metadata: metadata.iter().cloned().collect(),
                })),
            },
            RequestSpec::Chunk {
                sequence,
                device_id,
                modality,
                start,
                samples,
            } => proto::StreamRequest {
                sequence: *sequence,
                kind: Some(Kind::Chunk(proto::SensorChunk {
                    device_id: device_id.clone(),
                    modality: modality.clone(),
                    start_unix_nanos: start.resolve(now_unix_nanos),
                    samples: samples.build(),
                })),
            },
            RequestSpec::Empty { sequence } => proto::StreamRequest {
                sequence: *sequence,
                kind: None,
            },
        }
    }
}

pub fn request() -> impl Strategy<Value = RequestSpec> {
    let hello = (
        any::<u64>(),
        device_id(),
        proptest::collection::vec(modality_name(), 0..20),
        proptest::collection::vec((".{0,8}", ".{0,16}"), 0..3),
    )
        .prop_map(
            |(sequence, device_id, modalities, metadata)| RequestSpec::Hello {
                sequence,
                device_id,
                modalities,
                metadata,
            },
        );
    let chunk = (
        any::<u64>(),
        device_id(),
        modality_name(),
        stamp(),
        samples(),
    )
        .prop_map(
            |(sequence, device_id, modality, start, samples)| RequestSpec::Chunk {
                sequence,
                device_id,
                modality,
                start,
                samples,
            },
        );
    prop_oneof![
        2 => hello,
        8 => chunk,
        1 => any::<u64>().prop_map(|sequence| RequestSpec::Empty { sequence }),
    ]
}

/// Byte-level damage to an encoded message.
#[derive(Clone, Debug)]
pub enum Mutation {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

pub fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip { at, mask } if len > 0 => bytes[at % len] ^= mask,
            Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
            Mutation::Remove { at } if len > 0 => {
                bytes.remove(at % len);
            }
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
}

/// Bytes for a decoder: fully random, or a valid encoding damaged by a few mutations (which reaches
/// deeper than random bytes).
#[derive(Clone, Debug)]
pub enum Wire {
    Random(Vec<u8>),
    Mutated(RequestSpec, Vec<Mutation>),
}

pub fn wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Wire::Random),
        (request(), proptest::collection::vec(mutation(), 1..6))
            .prop_map(|(r, m)| Wire::Mutated(r, m)),
    ]
}

impl Wire {
    pub fn bytes(&self, now_unix_nanos: i64) -> Vec<u8> {
        match self {
            Wire::Random(b) => b.clone(),
            Wire::Mutated(request, mutations) => {
                let mut b = prost::Message::encode_to_vec(&request.build(now_unix_nanos));
                mutate(&mut b, mutations);
                b
            }
        }
    }
}

/// A refusal from the core is a client error with a message: invalid input (→ 400 / INVALID_ARGUMENT) or a
/// limit (→ 413/429 / RESOURCE_EXHAUSTED), never an internal error or an unavailable service.
pub fn check_refusal(e: Error) -> Result<(), TestCaseError> {
    let (kind, reason, message) = (e.kind(), e.reason(), e.to_string());
    prop_assert!(
        matches!(
            kind,
            "invalid_input" | "resource_exhausted" | "payload_too_large"
        ),
        "refusal of kind {kind} ({reason}): {message}"
    );
    prop_assert!(!message.trim().is_empty(), "empty message ({reason})");
    prop_assert!(!reason.is_empty() && reason.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let status = tonic::Status::from(e);
    prop_assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
        ),
        "gRPC status {:?}: {}",
        status.code(),
        status.message()
    );
    prop_assert!(!status.message().trim().is_empty());
    Ok(())
}

/// An HTTP answer to a fuzzed body: success, or a 4xx with a JSON body `{"error": non-empty, "kind": ...}`;
/// never a 5xx, never plain text.
pub fn check_http_answer(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(body);
    prop_assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "status {status}: {text}"
    );
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "status {status}, body not JSON ({e}): {text}"
            )));
        }
    };
    if status >= 400 {
        prop_assert!(
            json["error"].as_str().is_some_and(|m| !m.trim().is_empty()),
            "status {status} without an error message: {json}"
        );
        prop_assert!(
            json["kind"].as_str().is_some_and(|k| !k.is_empty()),
            "status {status} without a kind: {json}"
        );
    }
    Ok(())
}

/// Object keys: the names the request bodies use (so the fuzzer reaches past the first field check), the
/// model's modality and input names, and arbitrary strings.
pub fn json_key() -> impl Strategy<Value = String> {
    let m = manifest();
    let mut known: Vec<String> = [
        "modalities",
        "inputs",
        "name",
        "shape",
        "datatype",
        "data",
        "id",
        "type",
        "sequence",
        "modality",
        "start_unix_nanos",
        "samples",
        "present",
        "hello",
        "parameters",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    known.extend(m.modalities.iter().map(|s| s.name.clone()));
    known.extend(m.modalities.iter().map(|s| s.input.clone()));
    prop_oneof![
        4 => proptest::sample::select(known),
        1 => ".{0,12}",
    ]
}

/// A JSON number as a request would carry it: mostly plausible, sometimes beyond f32 (→ ±Inf), huge
/// integers, or negative zero.
pub fn json_number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        8 => (-50.0f64..50.0).prop_map(serde_json::Value::from),
        1 => Just(serde_json::json!(1e39)),
        1 => Just(serde_json::json!(-1e39)),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => any::<u64>().prop_map(serde_json::Value::from),
        1 => any::<f64>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::json!(-0.0)),
    ]
}

/// Arbitrary JSON values (nested arrays and objects, numbers of every range, strings, nulls).
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        json_number(),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `rows` rows of `channels` values, each a plausible number or (rarely) something hostile.
pub fn json_rows(rows: usize, channels: usize) -> impl Strategy<Value = serde_json::Value> {
    let cell = prop_oneof![
        20 => (-50.0f64..50.0).prop_map(serde_json::Value::from),
        1 => json_number(),
        1 => Just(serde_json::Value::Null),
        1 => Just(serde_json::json!("1.0")),
        1 => Just(serde_json::json!([1.0])),
    ];
    proptest::collection::vec(proptest::collection::vec(cell, channels), rows)
        .prop_map(|rows| serde_json::json!(rows))
}
