//! The generator against an in-process server (bundled model, every listener on port 0): a handful of
//! devices for a few seconds over each transport must get predictions back, with nothing refused. No
//! assertion depends on timing: only that things arrive and are counted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use crossl_loadgen::config::LoadArgs;
use crossl_loadgen::report::StepReport;
use crossl_serve::app::{Hooks, launch};
use crossl_serve::config::ServeArgs;

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

async fn run(extra: &[&str], target: String, metrics: SocketAddr) -> StepReport {
    let model = repo_path("models/crossl-dsads");
    let metrics_url = format!("http://{metrics}/metrics");
    let pid = std::process::id().to_string();
    let mut argv = vec![
        "crossl-loadgen",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--target",
        &target,
        "--metrics-url",
        &metrics_url,
        "--server-pid",
        &pid,
        "--steps",
        "3",
        "--step-seconds",
        "7",
        "--drain-ms",
        "2500",
        "--pause-ms",
        "0",
    ];
    argv.extend_from_slice(extra);
    let args = LoadArgs::parse_from(argv);
    let report = crossl_loadgen::run::run(&args)
        .await
        .unwrap_or_else(|e| panic!("run {extra:?}: {e:#}"));
    assert_eq!(report.steps.len(), 1);
    report.steps.into_iter().next().expect("one step")
}

fn assert_streamed(step: &StepReport, what: &str) {
    let table = format!("{what}: {step:#?}");
    assert_eq!(step.connected, 3, "{table}");
    assert!(step.chunks_sent > 0, "{table}");
    assert_eq!(step.chunk_errors, 0, "{table}");
    assert_eq!(step.connection_errors, 0, "{table}");
    assert!(step.predictions > 0, "no prediction came back: {table}");
    assert!(step.windows_received > 0, "{table}");
    assert!(step.windows_received <= step.windows_expected, "{table}");
    assert!(step.latency.is_some(), "{table}");
    let counters = step.server_counters.as_ref().expect("metrics scraped");
    assert_eq!(counters["crossl_chunks_rejected_total"], 0.0, "{table}");
    assert!(counters["crossl_predictions_total"] > 0.0, "{table}");
    assert!(step.server_cpu_percent.is_some() && step.server_rss_bytes.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_get_predictions_over_every_transport() {
    let mut serve = ServeArgs::defaults();
    serve.model = repo_path("models/crossl-dsads");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    serve.http_addr = any;
    serve.grpc_addr = any;
    serve.metrics_addr = any;
    serve.warmup_runs = 1;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = launch(serve, Hooks::default(), async move {
        let _ = stopped.await;
    })
    .await
    .expect("server starts");
    tokio::time::timeout(Duration::from_secs(60), service.ready())
        .await
        .expect("ready within 60 s")
        .expect("server becomes ready");
    let grpc = format!("http://{}", service.grpc_addr);
    let http = format!("http://{}", service.http_addr);
    let metrics = service.metrics_addr;

    let step = run(
        &[
            "--device-prefix",
            "lg-grpc",
            "--clock-offset-ms",
            "-1500",
            "--jitter-ms",
            "30",
        ],
        grpc.clone(),
        metrics,
    )
    .await;
    assert_streamed(
        &step,
        "gRPC, a stream per device, clock 1.5 s behind, jitter",
    );

    let step = run(
        &["--device-prefix", "lg-gateway", "--gateway-devices", "3"],
        grpc,
        metrics,
    )
    .await;
    assert_streamed(&step, "gRPC gateway stream");

    for format in ["binary", "json"] {
        let prefix = format!("lg-ws-{format}");
        let step = run(
            &[
                "--transport",
                "ws",
                "--ws-format",
                format,
                "--device-prefix",
                &prefix,
            ],
            http.clone(),
            metrics,
        )
        .await;
        assert_streamed(&step, &format!("WebSocket {format}"));
    }

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), service.wait()).await;
}
