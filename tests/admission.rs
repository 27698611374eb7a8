//! Fair admission over real sockets: one-shot floods cannot shed streaming windows, every refusal of a
//! one-shot request is a 429 or 400 with a JSON error and is counted.

// The gate is a std Mutex because backends run on OS threads; the test holds it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

mod common;
#[path = "support/gated_backend.rs"]
mod gated_backend;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossl_serve::app::Hooks;
use crossl_serve::ingest::{SensorChunk, Transport};
use crossl_serve::model::Manifest;
use crossl_serve::window::ManualClock;
use serde_json::json;

const SEC: i64 = 1_000_000_000;
/// A multiple of the fixture's 0.64 s hop, so chunks line up with the window grid.
const T0: i64 = 1_700_000_000 * SEC;
const DEVICES: usize = 20;
const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 8;
const ROUNDS: usize = 16;
/// Chunks each device sends while inference is held (the rest stream during the flood).
const HELD_ROUNDS: usize = 4;

fn hooks(
    args: &crossl_serve::config::ServeArgs,
    gate: Arc<Mutex<()>>,
    clock: ManualClock,
) -> Hooks {
    Hooks {
        backend_factory: Some(gated_backend::gated_factory(args, gate)),
        // Time stands still: windows close on their data alone, never by a clock.
        clock: Some(Arc::new(clock)),
    }
}

/// A maximal OIP request: `rows` windows of the first modality.
fn oip_body(m: &Manifest, rows: usize) -> serde_json::Value {
    let spec = &m.modalities[0];
    let data: Vec<f32> = (0..rows * spec.window_len())
        .map(|i| ((i % 97) as f32) / 10.0)
        .collect();
    json!({"inputs": [{
        "name": spec.input, "datatype": "FP32",
        "shape": [rows, spec.channels, spec.window_samples], "data": data
    }]})
}

fn stream_chunk(m: &Manifest, device: usize, round: usize) -> SensorChunk {
    let spec = &m.modalities[0];
    let rows = (0.64 * spec.sample_rate_hz).round() as usize;
    SensorChunk {
        device_id: format!("ward-{device:02}"),
        modality: spec.name.clone(),
        start_unix_nanos: T0 + round as i64 * 640_000_000,
        samples: (0..rows * spec.channels)
            .map(|i| ((i + device) as f32 * 0.1).sin())
            .collect(),
    }
}

fn stored_predictions(server: &TestServer) -> usize {
    (0..DEVICES)
        .map(|d| {
            server
                .core
                .store
                .history(&format!("ward-{d:02}"), None, 10_000)
                .len()
        })
        .sum()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_maximal_oip_requests_never_sheds_streaming_windows() {
    let mut args = test_args(fixture_model());
    // Small queues, so the old shared queue would have been overrun by the flood within its first round.
    args.queue_capacity = 128;
    args.predict_queue_capacity = 128;
    args.max_request_rows = 64;
    args.max_requests_per_client = 4;
    // The test holds inference on purpose; no window may age out meanwhile.
    args.window_deadline_ms = 600_000;
    let gate = Arc::new(Mutex::new(()));
    let clock = ManualClock::new(T0);
    let server = launch_server(args.clone(), hooks(&args, Arc::clone(&gate), clock)).await;
    server.ready().await;
    let m = server.core.manifest.clone();
    let url = server.url(&format!("/v2/models/{}/infer", m.name));
    let body = Arc::new(serde_json::to_vec(&oip_body(&m, 64)).expect("json"));

    // Inference held: the devices' first windows and the flood's first requests all wait.
    let held = gate.lock().expect("gate");
    for round in 0..HELD_ROUNDS {
        for d in 0..DEVICES {
            server
                .core
                .ingest
                .push(Transport::Grpc, stream_chunk(&m, d, round))
                .expect("chunk accepted");
        }
    }
    let too_many = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let first_round_done = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, body) = (server.client.clone(), url.clone(), Arc::clone(&body));
            let (too_many, answered, first) = (
                Arc::clone(&too_many),
                Arc::clone(&answered),
                Arc::clone(&first_round_done),
            );
            tokio::spawn(async move {
                for i in 0..REQUESTS_PER_CLIENT {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone())
                        .send()
                        .await
                        .expect("response");
                    let status = r.status().as_u16();
                    let json: serde_json::Value = r.json().await.unwrap_or_default();
                    match status {
                        200 => {
                            assert_eq!(json["outputs"][0]["shape"][0], 64, "{json}");
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        429 => {
                            assert_error(status, &json, 429, "resource_exhausted");
                            too_many.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("flood request answered {other}: {json}"),
                    }
                    if i == 0 {
                        first.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // At most four of the eight first requests hold a place (the per-client limit; all come from one
    // peer), and at most two fit the one-shot queue: the others are refused while inference is held.
    wait_until("the first flood requests were refused", || {
        too_many.load(Ordering::SeqCst) >= CLIENTS / 2
    })
    .await;
    drop(held);

    // The devices keep streaming through the flood; each round waits for its predictions first, as a
    // device sending a chunk every hop would see them.
    for round in HELD_ROUNDS..ROUNDS {
        let emitted = server.core.metrics.windows_emitted.get() as usize;
        wait_until("every emitted window has its prediction", || {
            stored_predictions(&server) >= emitted
        })
        .await;
        for d in 0..DEVICES {
            server
                .core
                .ingest
                .push(Transport::Grpc, stream_chunk(&m, d, round))
                .expect("chunk accepted");
        }
    }
    for f in flood {
        f.await.expect("flood client");
    }
    let emitted = server.core.metrics.windows_emitted.get() as usize;
    wait_until("every emitted window has its prediction", || {
        stored_predictions(&server) >= emitted
    })
    .await;
    assert!(
        emitted >= DEVICES * (ROUNDS - HELD_ROUNDS),
        "{emitted} windows"
    );
    assert_eq!(
        stored_predictions(&server),
        emitted,
        "one prediction per window"
    );
    for d in 0..DEVICES {
        assert!(
            server.core.store.latest(&format!("ward-{d:02}")).is_some(),
            "device {d} got predictions"
        );
    }

    let refused = too_many.load(Ordering::SeqCst);
    println!(
        "flood: {} requests answered, {refused} refused with 429; streaming: {emitted} windows, {} predictions",
        answered.load(Ordering::SeqCst),
        stored_predictions(&server)
    );
    assert!(refused >= CLIENTS / 2, "the flood saw 429s");
    assert!(
        answered.load(Ordering::SeqCst) >= 1,
        "the flood was served too"
    );
    let text = server.metrics_text().await;
    for reason in ["queue_full", "deadline", "shutdown", "inference_error"] {
        assert_eq!(
            metric_value(&text, "crossl_windows_shed_total", &[("reason", reason)]),
            Some(0.0),
            "streaming windows shed ({reason})"
        );
    }
    let shed: f64 = ["queue_full", "concurrency_limit"]
        .iter()
        .map(|r| metric_value(&text, "crossl_requests_shed_total", &[("reason", r)]).unwrap_or(0.0))
        .sum();
    assert_eq!(shed, refused as f64, "every 429 is counted:\n{text}");
}

#[tokio::test]
async fn empty_and_all_absent_requests_and_oversized_batches_are_refused_with_400() {
    let mut args = test_args(fixture_model());
    args.max_request_rows = 4;
    let server = start(args).await;
    let m = server.core.manifest.clone();
    let url = format!("/v2/models/{}/infer", m.name);

    // `{"modalities": {}}` used to answer 200 with a made-up activity.
    for path in ["/v1/predict", "/v1/embed"] {
        let (s, b) = server.post_json(path, &json!({"modalities": {}})).await;
        assert_error(s, &b, 400, "invalid_input");
        assert!(
            b["error"]
                .as_str()
                .unwrap_or_default()
                .contains("no modality"),
            "{b}"
        );
        let (s, b) = server.post_raw(path, Vec::new()).await;
        assert_error(s, &b, 400, "invalid_input");
    }
    let (s, b) = server.post_raw(&url, Vec::new()).await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) = server.post_json(&url, &json!({"inputs": []})).await;
    assert_error(s, &b, 400, "invalid_input");

    // A row whose presence flags are all zero.
    let spec = &m.modalities[0];
    let mut body = oip_body(&m, 2);
    body["inputs"].as_array_mut().expect("inputs").push(
        json!({"name": m.inputs.present, "datatype": "FP32", "shape": [2, m.modalities.len()],
                     "data": [[1.0, 0.0], [0.0, 0.0]]}),
    );
    let (s, b) = server.post_json(&url, &body).await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("row 1 has no modality"),
        "{b}"
    );
    // Only the presence tensor, nothing present.
    let (s, b) = server
        .post_json(
            &url,
            &json!({"inputs": [{"name": m.inputs.present, "datatype": "FP32",
                                   "shape": [1, m.modalities.len()], "data": [0.0, 0.0]}]}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_input");

    // More rows than --max-request-rows.
    let (s, b) = server.post_json(&url, &oip_body(&m, 5)).await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 4"),
        "{b}"
    );
    let (s, b) = server.post_json(&url, &oip_body(&m, 4)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["outputs"][0]["shape"], json!([4, m.classes.len()]));

    let text = server.metrics_text().await;
    for reason in ["all_absent", "too_many_rows", "bad_json"] {
        let n = metric_value(
            &text,
            "crossl_predict_rejected_total",
            &[("transport", "rest"), ("reason", reason)],
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{reason} not counted:\n{text}");
    }
    let _ = spec;
}
