//! Fuzzing the protobuf decode → ingest path (issue 16, point 8). Arbitrary-but-structured `StreamRequest`s
//! (hellos and chunks with hostile ids, modality names, timestamps from 0 to the i64 extremes, sample
//! counts past the limit, NaN/±Inf) and arbitrary or damaged bytes are decoded with prost and applied to a
//! real ingest core (manual clock, bundled model); a smaller number go over a real gRPC stream, including
//! messages that are not protobuf at all. Properties: nothing panics, every refusal is a client error with
//! a message (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for limits), and afterwards a well-behaved device
//! still gets its prediction (no poisoned state). `PROPTEST_CASES=N` fuzzes longer.

mod fuzz_common;
mod streaming;

use std::sync::Arc;
use std::time::Duration;

use crossl_serve::app::{Core, Hooks, Service, launch};
use crossl_serve::config::ServeArgs;
use crossl_serve::error::Error;
use crossl_serve::ingest::{SensorChunk, Transport};
use crossl_serve::proto;
use crossl_serve::proto::stream_request::Kind;
use crossl_serve::proto::stream_response::Kind as ResponseKind;
use crossl_serve::window::{Clock, ManualClock};
use fuzz_common::*;
use proptest::prelude::*;
use prost::Message;
use tonic::transport::Channel;

/// One step of a fuzzed session against the core.
#[derive(Clone, Debug)]
enum Op {
    Request(RequestSpec),
    /// Move the server clock on (milliseconds), as time passes between chunks.
    Advance(u16),
    /// Run the periodic tick (stale modalities, idle devices, windows due on the clock).
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => request().prop_map(Op::Request),
        2 => (0u16..3000).prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

/// Applies a decoded request the way the gRPC adapter does; `None` for a request with neither hello nor
/// chunk (the adapter refuses those itself; see the real-stream test below).
fn apply(core: &Core, request: proto::StreamRequest) -> Option<Result<(), Error>> {
    match request.kind? {
        Kind::Hello(hello) => Some(core.ingest.hello(
            Transport::Grpc,
            &hello.device_id,
            &hello.modalities,
        )),
        Kind::Chunk(chunk) => Some(
            core.ingest
                .push(
                    Transport::Grpc,
                    SensorChunk {
                        device_id: chunk.device_id,
                        modality: chunk.modality,
                        start_unix_nanos: chunk.start_unix_nanos,
                        samples: chunk.samples,
                    },
                )
                .map(|_| ()),
        ),
    }
}

/// A server on port 0 with the bundled model and a manual clock, driven from proptest's closures. (Stopped
/// when the sender drops.)
struct InProcess {
    rt: tokio::runtime::Runtime,
    service: Service,
    _stop: tokio::sync::oneshot::Sender<()>,
    clock: ManualClock,
}

fn in_process() -> InProcess {
    let rt = runtime();
    let clock = ManualClock::new(1_800_000_000 * SECOND);
    let mut args = ServeArgs::defaults();
    args.model = streaming::repo_path("models/crossl-dsads");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    (args.http_addr, args.grpc_addr, args.metrics_addr) = (any, any, any);
    args.warmup_runs = 1;
    // Fuzz cases send seconds of data at once.
    args.rate_limit_factor = 1e6;
    let hooks = Hooks {
        backend_factory: None,
        clock: Some(Arc::new(clock.clone())),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = rt.block_on(async {
        let service = launch(args, hooks, async move {
            let _ = stopped.await;
        })
        .await
        .expect("server starts");
        tokio::time::timeout(Duration::from_secs(60), service.ready())
            .await
            .expect("ready within 60 s")
            .expect("server becomes ready");
        service
    });
    InProcess {
        rt,
        service,
        _stop: stop,
        clock,
    }
}

/// One device sends `window + 1` seconds of every modality (stamped from `now`); its first full window must
/// be predicted and the service must still answer readiness.
fn a_well_behaved_device_still_gets_predictions(f: &InProcess, device_id: &str) {
    let core = &f.service.core;
    let t0 = (f.clock.now_unix_nanos() / SECOND + 1) * SECOND;
    let seconds = core.manifest.window_seconds.ceil() as usize;
    for k in 0..=seconds {
        for chunk in streaming::second_of_chunks(core, device_id, t0, k) {
            let request = streaming::chunk_request(k as u64, chunk);
            let decoded = proto::StreamRequest::decode(request.encode_to_vec().as_slice())
                .expect("a valid request decodes");
            apply(core, decoded)
                .expect("a chunk")
                .expect("a valid chunk is accepted after the fuzz cases");
        }
    }
    let first_full = t0 + seconds as i64 * SECOND;
    f.rt.block_on(async {
        let predicted = async {
            while core
                .store
                .latest(device_id)
                .is_none_or(|p| p.window_end_unix_nanos < first_full)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), predicted)
            .await
            .expect("the well-behaved device gets its window predicted within 60 s");
        let readyz = reqwest::get(format!("http://{}/readyz", f.service.http_addr))
            .await
            .expect("HTTP answers");
        assert_eq!(readyz.status(), 200, "still serving");
    });
}

#[test]
fn structured_stream_requests_decode_into_the_core_and_every_refusal_is_a_clear_client_error() {
    let f = in_process();
    let ops = proptest::collection::vec(op(), 1..16);
    run("structured requests → ingest", 128, ops, |ops| {
        for op in ops {
            match op {
                Op::Request(spec) => {
                    let request = spec.build(f.clock.now_unix_nanos());
                    let wire = request.encode_to_vec();
                    let decoded = proto::StreamRequest::decode(wire.as_slice());
                    prop_assert!(decoded.is_ok(), "prost round trip: {decoded:?}");
                    if let Some(Err(e)) = apply(&f.service.core, decoded.unwrap()) {
                        check_refusal(e)?;
                    }
                }
                Op::Advance(ms) => f.clock.advance(i64::from(ms) * 1_000_000),
                Op::Tick => f.service.core.ingest.tick(),
            }
        }
        Ok(())
    });
    a_well_behaved_device_still_gets_predictions(&f, "fz-after-structured");
}

#[test]
fn arbitrary_and_damaged_bytes_decode_or_fail_cleanly_and_decoded_requests_get_clear_refusals() {
    let f = in_process();
    run("bytes → prost → ingest", 256, wire(), |wire| {
        let bytes = wire.bytes(f.clock.now_unix_nanos());
        // A decode failure is what the gRPC adapter reports for a message that is not a StreamRequest; it
        // must not panic, and anything that does decode goes through the same core checks.
        if let Ok(request) = proto::StreamRequest::decode(bytes.as_slice())
            && let Some(Err(e)) = apply(&f.service.core, request)
        {
            check_refusal(e)?;
        }
        Ok(())
    });
    a_well_behaved_device_still_gets_predictions(&f, "fz-after-bytes");
}

/// Sends raw bytes as the messages of an `Ingest.Stream` call (no protobuf encoding on the client side),
/// and decodes the responses with prost.
mod raw {
    use bytes::BufMut;
    use crossl_serve::proto;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Clone, Copy, Debug, Default)]
    pub struct RawCodec;
    #[derive(Debug)]
    pub struct RawEncoder;
    #[derive(Debug)]
    pub struct ResponseDecoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for ResponseDecoder {
        type Item = proto::StreamResponse;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
            prost::Message::decode(src)
                .map(Some)
                .map_err(|e| Status::internal(format!("client could not decode a response: {e}")))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = proto::StreamResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }
}

/// Runs one `Ingest.Stream` call with `messages` (raw bytes) and reads it to its end. Every chunk error must
/// be a client error with a message; a status that ends the stream must be INVALID_ARGUMENT or
/// RESOURCE_EXHAUSTED with a message. Returns the number of chunk errors and the final status code.
async fn stream_raw(
    channel: &Channel,
    messages: Vec<Vec<u8>>,
) -> Result<(usize, tonic::Code), TestCaseError> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| TestCaseError::fail(format!("channel not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/crossl.v1.Ingest/Stream");
    let sent = messages.len();
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(messages)),
            path,
            raw::RawCodec,
        )
        .await;
    let mut responses = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return check_status(status).map(|code| (0, code)),
    };
    let mut errors = 0;
    let code = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .map_err(|_| TestCaseError::fail("the stream did not end within 30 s"))?;
        match next {
            Ok(Some(response)) => match response.kind {
                Some(ResponseKind::ChunkError(e)) => {
                    errors += 1;
                    prop_assert!(
                        matches!(
                            e.kind.as_str(),
                            "invalid_input" | "resource_exhausted" | "payload_too_large"
                        ),
                        "chunk error of kind {}: {}",
                        e.kind,
                        e.message
                    );
                    prop_assert!(!e.message.trim().is_empty(), "chunk error without message");
                    prop_assert!(!e.reason.is_empty(), "chunk error without reason");
                }
                Some(ResponseKind::Prediction(_)) => {}
                None => return Err(TestCaseError::fail("a response with neither kind")),
            },
            Ok(None) => break tonic::Code::Ok,
            Err(status) => break check_status(status)?,
        }
    };
    prop_assert!(errors <= sent, "{errors} chunk errors for {sent} messages");
    Ok((errors, code))
}

fn check_status(status: tonic::Status) -> Result<tonic::Code, TestCaseError> {
    prop_assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
        ),
        "stream ended with {:?}: {}",
        status.code(),
        status.message()
    );
    prop_assert!(
        !status.message().trim().is_empty(),
        "status without message"
    );
    Ok(status.code())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// `--grpc-max-message-bytes` of the real-stream test: small enough that the fuzzer's biggest chunks hit it.
const GRPC_MAX_MESSAGE: usize = 32 * 1024;

#[test]
fn a_real_grpc_stream_answers_fuzzed_and_garbage_messages_with_clear_errors_and_keeps_serving() {
    let rt = runtime();
    let server = rt.block_on(streaming::start(|a| {
        a.stream_linger_ms = 50;
        a.grpc_max_message_bytes = GRPC_MAX_MESSAGE;
    }));
    let channel = rt.block_on(server.channel());

    let requests = proptest::collection::vec(request(), 1..12);
    run("structured requests over gRPC", 24, requests, |requests| {
        let now = unix_now();
        let messages = requests
            .iter()
            .map(|r| r.build(now).encode_to_vec())
            .collect();
        rt.block_on(stream_raw(&channel, messages)).map(|_| ())
    });

    // Garbage between two valid messages: either it decodes (and is answered per request) or the stream
    // ends with INVALID_ARGUMENT naming the problem.
    run("bytes over gRPC", 24, wire(), |wire| {
        let now = unix_now();
        let hello = streaming::hello_request("fz-raw", &[]).encode_to_vec();
        let chunk = streaming::second_of_chunks(&server.core, "fz-raw", now / SECOND * SECOND, 0)
            .swap_remove(0);
        let chunk = streaming::chunk_request(1, chunk).encode_to_vec();
        let garbage = wire.bytes(now);
        let decodes = proto::StreamRequest::decode(garbage.as_slice()).is_ok();
        let oversized = garbage.len() > GRPC_MAX_MESSAGE;
        let (_, code) = rt.block_on(stream_raw(&channel, vec![hello, garbage, chunk]))?;
        if oversized {
            prop_assert_eq!(code, tonic::Code::ResourceExhausted, "an oversized message");
        } else if !decodes {
            prop_assert_eq!(
                code,
                tonic::Code::InvalidArgument,
                "a message that is not a StreamRequest"
            );
        }
        Ok(())
    });

    // No poisoned state: a well-behaved device streams its first full window and gets it back.
    rt.block_on(async {
        let (tx, mut responses) = server.open_stream(256).await;
        tx.send(streaming::hello_request("fz-after-grpc", &[]))
            .await
            .unwrap();
        let t0 = streaming::next_second(Duration::ZERO);
        let seconds = streaming::window_seconds(&server.core);
        for k in 0..=seconds {
            for chunk in streaming::second_of_chunks(&server.core, "fz-after-grpc", t0, k) {
                tx.send(streaming::chunk_request(k as u64, chunk))
                    .await
                    .unwrap();
            }
        }
        let first_full = t0 + seconds as i64 * SECOND;
        let got = async {
            loop {
                match responses.message().await.expect("stream healthy") {
                    Some(proto::StreamResponse {
                        kind: Some(ResponseKind::Prediction(p)),
                    }) if p.device_id == "fz-after-grpc"
                        && p.window_end_unix_nanos >= first_full =>
                    {
                        return;
                    }
                    Some(proto::StreamResponse {
                        kind: Some(ResponseKind::ChunkError(e)),
                    }) => panic!("a valid chunk was refused after the fuzz cases: {e:?}"),
                    Some(_) => {}
                    None => panic!("the stream ended before the prediction"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), got)
            .await
            .expect("a prediction within 60 s");
    });
}
