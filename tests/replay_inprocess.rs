//! `crossl-serve replay` against an in-process server on a few DSADS segments, over gRPC (one stream per
//! device and a gateway) and WebSocket (binary and JSON). Needs the unpacked DSADS layout (`make data`;
//! `CROSSL_DSADS_DIR` or `~/.cache/crossl/dsads`).

mod streaming;

use crossl_serve::replay::{ReplayArgs, ReplayReport, ReplayTransport, client::WsFormat, replay};
use streaming::*;

fn dataset_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("CROSSL_DSADS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/crossl/dsads")
        });
    assert!(
        dir.join("data/a01/p1/s01.txt").is_file(),
        "DSADS is not unpacked at {} (run `make data`, or set CROSSL_DSADS_DIR)",
        dir.display()
    );
    dir
}

/// Two activities × 2 segments = 20 s per device, at 8× real time (under the default 10× rate limit).
fn args(transport: ReplayTransport, target: String) -> ReplayArgs {
    let mut a = ReplayArgs::defaults();
    a.data = dataset_dir();
    a.subjects = vec!["p1".into(), "p2".into()];
    a.activities = vec!["a01".into(), "a12".into()];
    a.segments = 2;
    a.speed = 8.0;
    a.transport = transport;
    a.target = Some(target);
    // The test server puts every device on the whole-second grid.
    a.window_phase = crossl_serve::window::WindowPhase::Aligned;
    a
}

fn check(report: &ReplayReport, devices: usize) {
    println!("{report}");
    assert!(report.chunk_errors.is_empty(), "{:?}", report.chunk_errors);
    assert_eq!(report.devices, devices);
    // 20 s of data per device: the windows ending at 5 s … 20 s are entirely inside the recording, and
    // every one of them comes back.
    assert_eq!(report.windows_inside_expected, 16 * devices as u64);
    assert_eq!(
        report.windows_inside_received, report.windows_inside_expected,
        "{report}"
    );
    assert_eq!(
        report.scored + report.unscored + report.unknown_labels,
        report.predictions
    );
    assert_eq!(report.unknown_labels, 0);
    // Windows ending at 5..=10 s and 15..=20 s are within one activity.
    assert!(report.scored >= 12 * devices as u64, "{report}");
    let accuracy = report.accuracy.expect("accuracy");
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(report.macro_f1.is_some());
    assert!(
        report.client_latency_seconds.p50.is_some()
            && report.server_end_to_end_seconds.p50.is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_over_grpc_streams_and_a_gateway_and_scores_the_predictions() {
    let server = start(|a| a.rate_limit_factor = 10.0).await;
    let mut a = args(ReplayTransport::Grpc, server.grpc_url());
    a.devices = 2;
    let report = replay(&a).await.expect("replay runs");
    check(&report, 2);
    assert!(report.mean_present_modalities.unwrap() > 14.0);
    // Sitting vs running of training subjects with every sensor: a scoring or label-mapping bug shows up
    // here as chance level or worse.
    assert!(report.accuracy.unwrap() >= 0.75, "{report}");

    // A gateway with units and sensors dropped: the server sees only what was sent.
    a.gateway = true;
    a.device_prefix = "gw".into();
    a.drop_units = vec!["left_arm".into()];
    a.drop_sensors = vec!["mag".into()];
    let report = replay(&a).await.expect("gateway replay runs");
    check(&report, 2);
    assert!(report.mean_present_modalities.unwrap() <= 8.0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_over_websocket_binary_and_json() {
    let server = start(|a| a.rate_limit_factor = 10.0).await;
    let mut a = args(ReplayTransport::Ws, server.http_url());
    let report = replay(&a).await.expect("binary replay runs");
    check(&report, 1);
    a.ws_format = WsFormat::Json;
    a.device_prefix = "json".into();
    let report = replay(&a).await.expect("JSON replay runs");
    check(&report, 1);
}
