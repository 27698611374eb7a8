//! Start-up (readiness before/after warm-up, execution-provider choice) and graceful shutdown.

// The gate is a std Mutex because backends run on OS threads; tests hold it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

mod common;
#[path = "support/gated_backend.rs"]
mod gated_backend;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossl_serve::app::Hooks;
use crossl_serve::config::ExecutionProviderChoice;
use crossl_serve::ingest::{SensorChunk, Transport};
use serde_json::json;

fn gated_hooks(args: &crossl_serve::config::ServeArgs, gate: Arc<Mutex<()>>) -> Hooks {
    Hooks {
        backend_factory: Some(gated_backend::gated_factory(args, gate)),
        clock: None,
    }
}

async fn wait_status(server: &TestServer, path: &str, want: u16) -> serde_json::Value {
    for _ in 0..400 {
        let (status, body) = server.get(path).await;
        if status == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never answered {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_warmed_up_then_ready() {
    let model = bundled_model();
    let golden = golden(&model);
    let args = test_args(model);
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let server = launch_server(args.clone(), gated_hooks(&args, Arc::clone(&gate))).await;

    // Listening, alive, but warm-up is blocked: not ready, and predictions are refused with 503.
    let (status, live) = server.get("/healthz").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("live")));
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["phase"], "starting");
    assert_eq!(ready["execution_provider"], serde_json::Value::Null);
    let (status, _) = server.get("/v2/health/ready").await;
    assert_eq!(status, 503);
    let body = json!({"modalities": golden.cases[0].modalities});
    let (status, err) = server.post_json("/v1/predict", &body).await;
    assert_error(status, &err, 503, "unavailable");
    assert!(server.metrics_text().await.contains("crossl_ready 0"));

    drop(held);
    let ready = wait_status(&server, "/readyz", 200).await;
    assert_eq!(ready["phase"], "ready");
    assert_eq!(ready["execution_provider"], "cpu");
    let (status, _) = server.post_json("/v1/predict", &body).await;
    assert_eq!(status, 200);
    assert!(server.metrics_text().await.contains("crossl_ready 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_then_finishes_queued_work_and_pending_windows() {
    let model = bundled_model();
    let golden = golden(&model);
    let mut args = test_args(model);
    args.out_of_orderness_ms = 600_000; // only the shutdown flush closes the pending streaming window
    args.stall_timeout_ms = 600_000;
    let gate = Arc::new(Mutex::new(()));
    let mut server = launch_server(args.clone(), gated_hooks(&args, Arc::clone(&gate))).await;
    server.ready().await;
    let core = server.core.clone();

    // A streaming window that waits for a declared modality that never comes.
    let m = &core.manifest;
    let names: Vec<String> = m.modalities.iter().map(|s| s.name.clone()).collect();
    core.ingest
        .hello(Transport::Rest, "dev-drain", &names[..2])
        .expect("hello");
    let spec = &m.modalities[0];
    let now = crossl_serve::window::SystemClock;
    let t = crossl_serve::window::Clock::now_unix_nanos(&now);
    let rows = (spec.sample_rate_hz * m.window_seconds) as usize;
    core.ingest
        .push(
            Transport::Rest,
            SensorChunk {
                device_id: "dev-drain".into(),
                modality: spec.name.clone(),
                start_unix_nanos: t - 6_000_000_000,
                samples: vec![0.5; rows * spec.channels],
            },
        )
        .expect("chunk accepted");
    assert!(core.store.latest("dev-drain").is_none());

    // Requests stuck behind a held session.
    let held = gate.lock().expect("gate");
    let body = json!({"modalities": golden.cases[0].modalities});
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let client = server.client.clone();
            let url = server.url("/v1/predict");
            let body = body.clone();
            tokio::spawn(async move { client.post(url).json(&body).send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.trigger_shutdown();
    let ready = wait_status(&server, "/readyz", 503).await;
    assert_eq!(ready["phase"], "shutting_down");
    let (status, err) = server.post_json("/v1/predict", &body).await;
    assert_error(status, &err, 503, "unavailable");
    let refused = core.ingest.push(
        Transport::Rest,
        SensorChunk {
            device_id: "dev-drain".into(),
            modality: spec.name.clone(),
            start_unix_nanos: t,
            samples: vec![0.5; spec.channels],
        },
    );
    assert_eq!(refused.expect_err("closed").kind(), "unavailable");

    drop(held);
    for request in in_flight {
        let response = request.await.expect("task").expect("response");
        assert_eq!(
            response.status().as_u16(),
            200,
            "queued request finished during the drain"
        );
        let out: HashMap<String, serde_json::Value> = response.json().await.expect("json");
        assert_eq!(out["label"], golden.cases[0].label.as_str());
    }
    server.wait().await.expect("clean shutdown");
    let flushed = core
        .store
        .latest("dev-drain")
        .expect("pending window was flushed and predicted");
    assert_eq!(flushed.present_modalities.to_vec(), vec![names[0].clone()]);
    assert!(
        reqwest::get(server.url("/healthz")).await.is_err(),
        "the HTTP listener is closed after shutdown"
    );
}

#[tokio::test]
async fn cuda_requested_but_unavailable_is_a_startup_error_and_auto_reports_its_fallback() {
    let mut args = test_args(bundled_model());
    args.execution_provider = ExecutionProviderChoice::Cuda;
    let mut server = launch_server(args, Hooks::default()).await;
    // The service ends on its own (listeners closed) with the start-up error.
    let error = format!(
        "{:#}",
        server
            .wait()
            .await
            .expect_err("a failed start-up ends the service with an error")
    );
    assert!(error.to_lowercase().contains("cuda"), "{error}");
    let health = server.core.health();
    assert_eq!(health.phase, crossl_serve::app::Phase::Failed);
    assert!(
        health
            .error
            .unwrap_or_default()
            .to_lowercase()
            .contains("cuda")
    );
    assert!(
        health.runtime.is_none(),
        "no execution provider is reported as in use"
    );

    let mut args = test_args(bundled_model());
    args.execution_provider = ExecutionProviderChoice::Auto;
    let server = start(args).await;
    let (_, ready) = server.get("/readyz").await;
    if !cfg!(feature = "cuda") {
        assert_eq!(
            ready["execution_provider"], "cpu",
            "auto without CUDA falls back to cpu, and says so"
        );
    }
    let (_, model) = server.get("/v1/model").await;
    assert_eq!(model["runtime"]["requested_execution_provider"], "auto");
    assert_eq!(
        model["runtime"]["execution_provider"],
        ready["execution_provider"]
    );
    let text = server.metrics_text().await;
    let ep = ready["execution_provider"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        metric_value(&text, "crossl_build_info", &[("execution_provider", &ep)]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_with_429_and_counts_it() {
    let model = bundled_model();
    let golden = golden(&model);
    let mut args = test_args(model);
    // One-shot requests have their own queue; all eight come from one peer, so no per-client limit here.
    args.predict_queue_capacity = 1;
    args.max_request_rows = 1;
    args.max_requests_per_client = 0;
    args.max_batch_size = Some(1);
    let gate = Arc::new(Mutex::new(()));
    let server = launch_server(args.clone(), gated_hooks(&args, Arc::clone(&gate))).await;
    server.ready().await;
    let held = gate.lock().expect("gate");
    let body = json!({"modalities": golden.cases[0].modalities});
    // One runs (blocked), one waits for a worker, one sits in the queue: the rest are shed.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let client = server.client.clone();
            let url = server.url("/v1/predict");
            let body = body.clone();
            tokio::spawn(async move {
                let r = client.post(url).json(&body).send().await.expect("response");
                let status = r.status().as_u16();
                (
                    status,
                    r.json::<serde_json::Value>().await.unwrap_or_default(),
                )
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let mut shed = 0;
    for r in requests {
        let (status, body) = r.await.expect("task");
        if status == 429 {
            assert_error(status, &body, 429, "resource_exhausted");
            shed += 1;
        } else {
            assert_eq!(status, 200, "{body}");
        }
    }
    assert!(shed >= 1, "some requests must be shed");
    let text = server.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "crossl_requests_shed_total",
            &[("reason", "queue_full")]
        ),
        Some(f64::from(shed))
    );
    assert_eq!(
        metric_value(
            &text,
            "crossl_windows_shed_total",
            &[("reason", "queue_full")]
        ),
        Some(0.0),
        "one-shot requests never count as streaming windows shed"
    );
}
