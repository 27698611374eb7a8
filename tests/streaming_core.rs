//! Streaming through the protocol-neutral core: chunks pushed with `Ingest::push` become windows on the
//! hop grid, are batched and predicted, and land in the store and its live feed — with the same outputs
//! as PyTorch when the streamed samples are exactly a golden window.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use crossl_serve::app::Hooks;
use crossl_serve::ingest::{SensorChunk, Transport};
use crossl_serve::window::ManualClock;

const SEC: i64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_golden_window_matches_pytorch_and_reaches_store_and_feed() {
    let model = bundled_model();
    let golden = golden(&model);
    let case = golden
        .cases
        .iter()
        .max_by_key(|c| c.modalities.len())
        .expect("a case");
    // Device and server clocks: the window ends on the hop grid at `end`; the server clock stays before
    // end + lateness, so only the data (all modalities reaching `end`) closes it.
    let end = 1_800_000_000 * SEC;
    let clock = ManualClock::new(end - SEC);
    let args = test_args(model);
    let hooks = Hooks {
        backend_factory: None,
        clock: Some(Arc::new(clock.clone())),
    };
    let server = launch_server(args, hooks).await;
    server.ready().await;
    let core = server.core.clone();
    let mut feed = core.store.subscribe();
    let m = core.manifest.clone();
    let window_ns = (m.window_seconds * 1e9).round() as i64;

    // One-second chunks, modality after modality, like a device gateway would send them.
    let seconds = m.window_seconds as usize;
    for k in 0..seconds {
        for spec in &m.modalities {
            let Some(rows) = case.modalities.get(&spec.name) else {
                continue;
            };
            let per = spec.window_samples / seconds;
            let samples: Vec<f32> = rows[k * per..(k + 1) * per]
                .iter()
                .flatten()
                .copied()
                .collect();
            let start =
                end - window_ns + (k * per) as i64 * (1e9 / spec.sample_rate_hz).round() as i64;
            let receipt = core
                .ingest
                .push(
                    Transport::Rest,
                    SensorChunk {
                        device_id: "wrist-7".into(),
                        modality: spec.name.clone(),
                        start_unix_nanos: start,
                        samples,
                    },
                )
                .expect("chunk accepted");
            assert_eq!(receipt.samples_accepted, per);
        }
    }

    let prediction = loop {
        let p = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("a prediction within 10 s")
            .expect("feed open");
        if p.window_end_unix_nanos == end {
            break p;
        }
    };
    assert_eq!(prediction.device_id, "wrist-7");
    let tol = golden.tolerance.max(1e-6);
    let d = max_abs_diff(&prediction.probabilities, &case.probabilities);
    assert!(
        d <= tol,
        "{}: streamed probabilities differ by {d}",
        case.name
    );
    let d = max_abs_diff(&prediction.embedding, &case.embedding);
    assert!(d <= tol, "{}: streamed embedding differs by {d}", case.name);
    assert_eq!(prediction.label, case.label);
    let want_present: Vec<String> = m
        .modalities
        .iter()
        .filter(|s| case.modalities.contains_key(&s.name))
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(prediction.present_modalities.to_vec(), want_present);
    assert!(prediction.timings.end_to_end_seconds > 0.0);

    // The store and the REST views agree.
    assert_eq!(
        core.store
            .latest("wrist-7")
            .map(|p| p.window_end_unix_nanos),
        Some(end)
    );
    let (status, latest) = server.get("/v1/devices/wrist-7/prediction").await;
    assert_eq!(status, 200);
    assert_eq!(latest["window_end_unix_nanos"], end);
    let (status, history) = server
        .get(&format!(
            "/v1/devices/wrist-7/predictions?since={}&limit=10",
            end - SEC
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["predictions"].as_array().map(Vec::len), Some(1));
    let (status, device) = server.get("/v1/devices/wrist-7").await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["last_window_end_unix_nanos"], end);
    assert_eq!(
        device["modalities"].as_array().map(Vec::len),
        Some(want_present.len())
    );
    let (_, devices) = server.get("/v1/devices").await;
    assert_eq!(devices["devices"][0]["device_id"], "wrist-7");

    let text = server.metrics_text().await;
    let first = &want_present[0];
    let received = metric_value(
        &text,
        "crossl_samples_received_total",
        &[("transport", "rest"), ("modality", first)],
    );
    assert_eq!(
        received,
        Some(m.modalities[m.modality_index(first).expect("known")].window_samples as f64)
    );
    assert!(metric_value(&text, "crossl_windows_emitted_total", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(metric_value(&text, "crossl_active_devices", &[]), Some(1.0));
}
