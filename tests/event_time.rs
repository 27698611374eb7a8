//! Event-time windows over real gRPC sockets, with the server on a manual clock: device clocks far off
//! the server's give identical predictions, a backlog uploaded after an outage gets every window in order,
//! and time going back within a stream is late data reported on that stream.

mod streaming;

use std::sync::Arc;
use std::time::Duration;

use crossl_serve::app::Hooks;
use crossl_serve::proto;
use crossl_serve::proto::stream_response::Kind;
use crossl_serve::window::ManualClock;
use streaming::*;

/// Server time the tests start at (a whole second).
const T0: i64 = 1_800_000_000 * SECOND;
/// Chunk length of the simulated devices.
const CHUNK: i64 = SECOND / 5;

async fn start_on_manual_clock() -> (TestServer, ManualClock) {
    let clock = ManualClock::new(T0);
    let hooks = Hooks {
        clock: Some(Arc::new(clock.clone())),
        ..Hooks::default()
    };
    (start_with_hooks(|_| {}, hooks).await, clock)
}

/// The 200 ms chunks of every modality of `device` for step `k` of a recording whose device clock starts
/// at `origin`.
fn step_chunks(
    server: &TestServer,
    device: &str,
    origin: i64,
    k: usize,
) -> Vec<proto::SensorChunk> {
    modalities(&server.core)
        .into_iter()
        .enumerate()
        .map(|(m, (name, channels, rate))| {
            let rows = (rate / 5.0).round() as usize;
            proto::SensorChunk {
                device_id: device.to_string(),
                modality: name,
                start_unix_nanos: origin + k as i64 * CHUNK,
                samples: synthetic(m, channels, k * rows, rows),
            }
        })
        .collect()
}

/// Everything that arrived on a stream so far (waits `quiet` for more after the last response).
async fn drain(
    responses: &mut tonic::Streaming<proto::StreamResponse>,
    quiet: Duration,
) -> Vec<proto::StreamResponse> {
    let mut seen = Vec::new();
    while let Ok(Some(Ok(r))) =
        tokio::time::timeout(quiet, futures::StreamExt::next(responses)).await
    {
        seen.push(r);
    }
    seen
}

fn predictions(responses: &[proto::StreamResponse]) -> Vec<proto::Prediction> {
    responses
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::Prediction(p)) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Waits (real time) until the store holds a prediction for `device` ending at `end`.
async fn wait_for_window(server: &TestServer, device: &str, end: i64) {
    for _ in 0..2000 {
        if server
            .core
            .store
            .history(device, Some(end - 1), 1)
            .first()
            .is_some_and(|p| p.window_end_unix_nanos == end)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no prediction for {device} ending at {end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_clocks_minus_60_s_to_plus_2_s_get_identical_predictions() {
    let (server, clock) = start_on_manual_clock().await;
    let offsets = [-60, -2, 0, 2];
    let mut streams = Vec::new();
    for offset in offsets {
        let (tx, responses) = server.open_stream(1024).await;
        let device = format!("clock{offset}");
        tx.send(hello_request(&device, &[])).await.unwrap();
        streams.push((offset, device, tx, responses));
    }
    // 8 s of data in real time on each device's own clock; the server clock advances with it.
    let steps = 40;
    for k in 0..steps {
        for (offset, device, tx, _) in &streams {
            let origin = T0 + offset * SECOND;
            for (i, c) in step_chunks(&server, device, origin, k)
                .into_iter()
                .enumerate()
            {
                tx.send(chunk_request((k * 100 + i) as u64, c))
                    .await
                    .unwrap();
            }
        }
        clock.advance(CHUNK);
    }
    // The last full window of every device (its own clock) closes by data.
    for (offset, device, _, _) in &streams {
        wait_for_window(&server, device, T0 + offset * SECOND + 8 * SECOND).await;
    }
    let mut per_device = Vec::new();
    for (offset, device, tx, mut responses) in streams {
        drop(tx);
        let preds = predictions(&drain(&mut responses, Duration::from_millis(500)).await);
        let shifted: Vec<(i64, String, Vec<f32>)> = preds
            .into_iter()
            .map(|p| {
                (
                    p.window_end_unix_nanos - offset * SECOND,
                    p.label,
                    p.probabilities,
                )
            })
            .collect();
        assert!(shifted.len() >= 4, "{device}: {shifted:?}");
        per_device.push((offset, shifted));
        let info = server.core.ingest.device_info(&device).expect("tracked");
        let estimated = info.clock_offset_seconds.expect("offset estimated");
        // Each chunk "arrives" within one chunk of its last sample on the manual clock.
        assert!(
            (estimated - offset as f64).abs() <= 0.25,
            "{device}: offset {estimated} s"
        );
    }
    let (_, reference) = &per_device[2];
    for (offset, windows) in &per_device {
        assert_eq!(windows.len(), reference.len(), "clock {offset} s");
        for (w, r) in windows.iter().zip(reference) {
            assert_eq!((w.0, &w.1), (r.0, &r.1), "clock {offset} s");
            let diff =
                w.2.iter()
                    .zip(&r.2)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
            assert!(
                diff < 1e-5,
                "clock {offset} s: probabilities differ by {diff}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_uploaded_after_60_s_offline_gets_every_window_in_order() {
    let (server, clock) = start_on_manual_clock().await;
    let device = "backlog";
    // Live for 6 s on a clock 2 s behind the server's.
    let origin = T0 - 2 * SECOND;
    let (tx, mut first) = server.open_stream(1024).await;
    tx.send(hello_request(device, &[])).await.unwrap();
    let mut seq = 0;
    for k in 0..30 {
        for c in step_chunks(&server, device, origin, k) {
            seq += 1;
            tx.send(chunk_request(seq, c)).await.unwrap();
        }
        clock.advance(CHUNK);
    }
    wait_for_window(&server, device, origin + 6 * SECOND).await;
    // Offline for 60 s: the connection is gone, the server clock moves on.
    drop(tx);
    drain(&mut first, Duration::from_millis(200)).await;
    clock.advance(60 * SECOND);
    tokio::time::sleep(Duration::from_millis(200)).await; // a few ticks on the advanced clock
    // It reconnects and uploads 60 s of backlog in bursts of 10 s, then goes on live for 4 s.
    let (tx, mut second) = server.open_stream(8192).await;
    tx.send(hello_request(device, &[])).await.unwrap();
    for burst in 0..6 {
        for k in 30 + burst * 50..30 + (burst + 1) * 50 {
            for c in step_chunks(&server, device, origin, k) {
                seq += 1;
                tx.send(chunk_request(seq, c)).await.unwrap();
            }
        }
        clock.advance(SECOND / 2);
    }
    for k in 330..350 {
        for c in step_chunks(&server, device, origin, k) {
            seq += 1;
            tx.send(chunk_request(seq, c)).await.unwrap();
        }
        clock.advance(CHUNK);
    }
    let last = origin + 70 * SECOND;
    wait_for_window(&server, device, last).await;
    let on_stream = predictions(&drain(&mut second, Duration::from_millis(500)).await);
    let ends: Vec<i64> = on_stream.iter().map(|p| p.window_end_unix_nanos).collect();
    let expected: Vec<i64> = (7..=70).map(|s| origin + s * SECOND).collect();
    assert_eq!(
        ends, expected,
        "every backlog window on the new stream, in order"
    );
    let history = server.core.store.history(device, None, 1000);
    let all: Vec<i64> = history.iter().map(|p| p.window_end_unix_nanos).collect();
    let first_full = origin + 5 * SECOND;
    let from = all
        .iter()
        .position(|&e| e == first_full)
        .expect("first full window");
    assert_eq!(
        all[from..].to_vec(),
        (5..=70).map(|s| origin + s * SECOND).collect::<Vec<_>>(),
        "one prediction per window, none lost"
    );
    assert_eq!(
        server
            .metric("crossl_chunks_rejected_total", &[("reason", "late_data")])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_going_back_within_a_stream_is_late_data_reported_on_that_stream() {
    let (server, clock) = start_on_manual_clock().await;
    let device = "stray";
    let (tx, mut responses) = server.open_stream(1024).await;
    tx.send(hello_request(device, &[])).await.unwrap();
    let mut seq = 0;
    for k in 0..35 {
        for c in step_chunks(&server, device, T0, k) {
            seq += 1;
            tx.send(chunk_request(seq, c)).await.unwrap();
        }
        clock.advance(CHUNK);
    }
    wait_for_window(&server, device, T0 + 7 * SECOND).await;
    // One chunk stamped 10 minutes in the past.
    let mut stray = step_chunks(&server, device, T0 - 600 * SECOND, 0).remove(0);
    stray.device_id = device.into();
    tx.send(chunk_request(9999, stray)).await.unwrap();
    for k in 35..45 {
        for c in step_chunks(&server, device, T0, k) {
            seq += 1;
            tx.send(chunk_request(seq, c)).await.unwrap();
        }
        clock.advance(CHUNK);
    }
    wait_for_window(&server, device, T0 + 9 * SECOND).await;
    drop(tx);
    let seen = drain(&mut responses, Duration::from_millis(500)).await;
    let errors: Vec<&proto::ChunkError> = seen
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::ChunkError(e)) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].sequence, 9999);
    assert_eq!(errors[0].reason, "late_data");
    assert!(!errors[0].message.is_empty());
    let ends: Vec<i64> = predictions(&seen)
        .iter()
        .map(|p| p.window_end_unix_nanos)
        .collect();
    assert!(
        ends.windows(2).all(|w| w[1] == w[0] + SECOND),
        "the live windows go on, one per hop: {ends:?}"
    );
    assert_eq!(ends.last(), Some(&(T0 + 9 * SECOND)));
    assert_eq!(
        server
            .metric("crossl_chunks_rejected_total", &[("reason", "late_data")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_phases_spread_window_ends_over_the_hop() {
    let clock = ManualClock::new(T0);
    let hooks = Hooks {
        clock: Some(Arc::new(clock.clone())),
        ..Hooks::default()
    };
    let server = start_with_hooks(
        |a| a.window_phase = crossl_serve::window::WindowPhase::PerDevice,
        hooks,
    )
    .await;
    // FNV-1a of the id, modulo the 25 steps of 40 ms in a 1 s hop (docs/windowing.md).
    let expected = [("dev-2", 560_000_000), ("watch-7", 120_000_000)];
    let (tx, mut responses) = server.open_stream(1024).await;
    for (device, _) in expected {
        tx.send(hello_request(device, &[])).await.unwrap();
    }
    let mut seq = 0;
    for k in 0..40 {
        for (device, _) in expected {
            for c in step_chunks(&server, device, T0, k) {
                seq += 1;
                tx.send(chunk_request(seq, c)).await.unwrap();
            }
        }
        clock.advance(CHUNK);
    }
    for (device, phase) in expected {
        wait_for_window(&server, device, T0 + 7 * SECOND + phase).await;
        let info = server.core.ingest.device_info(device).expect("tracked");
        assert_eq!(info.window_phase_nanos, phase);
    }
    drop(tx);
    let preds = predictions(&drain(&mut responses, Duration::from_millis(500)).await);
    assert!(preds.len() >= 6);
    for p in preds {
        let phase = expected
            .iter()
            .find(|(d, _)| *d == p.device_id)
            .expect("known")
            .1;
        assert_eq!(
            p.window_end_unix_nanos.rem_euclid(SECOND),
            phase,
            "{}",
            p.device_id
        );
    }
}
