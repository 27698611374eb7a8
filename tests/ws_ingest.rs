//! WebSocket over real sockets: device ingest with JSON and binary frames, error frames that keep the
//! socket open, close codes, and the dashboard feed (filtering, and a deliberately slow reader that
//! must not hold up ingest).

mod streaming;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use streaming::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sends `seconds` of every modality of one device over a device socket: even seconds as JSON frames,
/// odd seconds as binary frames.
async fn send_seconds(
    server: &TestServer,
    ws: &mut WsStream,
    t0: i64,
    seconds: std::ops::Range<usize>,
) {
    let device = "ignored-by-the-socket";
    for k in seconds {
        for (m, chunk) in second_of_chunks(&server.core, device, t0, k)
            .into_iter()
            .enumerate()
        {
            let channels = server.core.manifest.modalities[m].channels;
            let message = if k % 2 == 0 {
                WsMessage::Text(json_frame(k as u64, &chunk, channels).into())
            } else {
                WsMessage::Binary(
                    binary_frame(m as u16, chunk.start_unix_nanos, &chunk.samples, channels).into(),
                )
            };
            ws.send(message).await.expect("send");
        }
    }
}

/// Reads prediction frames until one ends at `end`; returns them (panics on error frames).
async fn predictions_until(ws: &mut WsStream, end: i64) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    loop {
        let frame = ws_next_json(ws).await.expect("socket open");
        assert_eq!(frame["type"], "prediction", "{frame}");
        let done = frame["window_end_unix_nanos"].as_i64() == Some(end);
        out.push(frame);
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_binary_frames_stream_a_device_and_predictions_come_back() {
    let server = start(|_| {}).await;
    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/ws-a"), None)
        .await
        .expect("upgrade");
    let welcome = ws_next_json(&mut ws).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["device_id"], "ws-a");
    let listed = welcome["modalities"].as_array().unwrap();
    assert_eq!(listed.len(), server.core.manifest.modalities.len());
    for (i, (m, spec)) in listed
        .iter()
        .zip(&server.core.manifest.modalities)
        .enumerate()
    {
        assert_eq!(m["index"], i);
        assert_eq!(m["name"], spec.name.as_str());
        assert_eq!(m["channels"], spec.channels);
    }

    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core) + 2;
    send_seconds(&server, &mut ws, t0, 0..seconds).await;
    let last_end = t0 + seconds as i64 * SECOND;
    let preds = predictions_until(&mut ws, last_end).await;
    let full: Vec<_> = preds
        .iter()
        .filter(|p| p["window_end_unix_nanos"].as_i64().unwrap() >= t0 + 5 * SECOND)
        .collect();
    assert_eq!(full.len(), seconds - 4, "{preds:?}");
    for p in full {
        assert_eq!(p["device_id"], "ws-a");
        assert_eq!(
            p["present_modalities"].as_array().unwrap().len(),
            server.core.manifest.modalities.len()
        );
        assert_eq!(
            p["probabilities"].as_array().unwrap().len(),
            server.core.manifest.classes.len()
        );
    }
    let latest = server.core.store.latest("ws-a").expect("stored");
    assert_eq!(latest.window_end_unix_nanos, last_end);
    let open = [("transport", "websocket"), ("kind", "ingest")];
    assert_eq!(server.metric("crossl_open_streams", &open).await, 1.0);
    assert!(
        server
            .metric(
                "crossl_samples_received_total",
                &[("transport", "websocket")]
            )
            .await
            > 0.0
    );
    ws.close(None).await.unwrap();
    let closed = async {
        while server.metric("crossl_open_streams", &open).await != 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the gauge drops when the socket closes");
}

/// Frames several times the connection's read buffer arrive whole: the buffer only sizes each read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_read_buffer_arrive_whole() {
    let server = start(|a| a.ws_read_buffer_bytes = 256).await;
    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/ws-big"), None)
        .await
        .expect("upgrade");
    ws_next_json(&mut ws).await.expect("welcome");
    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core) + 3;
    let seconds = seconds + seconds % 2;
    // Two seconds per frame, every modality in turn: JSON for even modalities, binary for odd ones.
    for k in (0..seconds).step_by(2) {
        let (a, b) = (
            second_of_chunks(&server.core, "ws-big", t0, k),
            second_of_chunks(&server.core, "ws-big", t0, k + 1),
        );
        for (m, spec) in server.core.manifest.modalities.iter().enumerate() {
            let mut both = a[m].clone();
            both.samples.extend_from_slice(&b[m].samples);
            let message = if m % 2 == 0 {
                let text = json_frame(k as u64, &both, spec.channels);
                assert!(text.len() > 4 * 256, "{} bytes", text.len());
                WsMessage::Text(text.into())
            } else {
                let frame = binary_frame(
                    m as u16,
                    both.start_unix_nanos,
                    &both.samples,
                    spec.channels,
                );
                assert!(frame.len() > 2 * 256, "{} bytes", frame.len());
                WsMessage::Binary(frame.into())
            };
            ws.send(message).await.expect("send");
        }
    }
    let last_end = t0 + seconds as i64 * SECOND;
    let preds = predictions_until(&mut ws, last_end).await;
    let full = preds
        .iter()
        .filter(|p| p["window_end_unix_nanos"].as_i64().unwrap() >= t0 + 5 * SECOND)
        .filter(|p| {
            p["present_modalities"].as_array().unwrap().len()
                == server.core.manifest.modalities.len()
        })
        .count();
    assert_eq!(full, seconds - 4, "{preds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let server = start(|a| a.max_chunk_samples = 50).await;
    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/ws-e"), None)
        .await
        .unwrap();
    ws_next_json(&mut ws).await.expect("welcome");
    let t0 = next_second(Duration::ZERO);
    let good = second_of_chunks(&server.core, "ws-e", t0, 0)[0].clone();
    let rows = |n: usize, v: f64| serde_json::json!(vec![vec![v; 3]; n]);
    let bad: Vec<(&str, WsMessage)> = vec![
        ("bad_json", WsMessage::Text("{not json".into())),
        ("bad_json", WsMessage::Text(r#"{"modality": "torso_acc", "samples": [[1,2,3]]}"#.into())),
        (
            "unknown_modality",
            WsMessage::Text(
                serde_json::json!({"modality": "tail_acc", "start_unix_nanos": t0, "samples": rows(2, 1.0)})
                    .to_string()
                    .into(),
            ),
        ),
        // JSON cannot carry NaN; 1e39 overflows f32 to infinity, which is refused as non-finite.
        (
            "non_finite",
            WsMessage::Text(
                serde_json::json!({"modality": "torso_acc", "start_unix_nanos": t0, "samples": rows(2, 1e39)})
                    .to_string()
                    .into(),
            ),
        ),
        (
            "channel_multiple",
            WsMessage::Text(
                serde_json::json!({"modality": "torso_acc", "start_unix_nanos": t0, "samples": [[1, 2, 3], [4, 5]]})
                    .to_string()
                    .into(),
            ),
        ),
        (
            "too_many_samples",
            WsMessage::Text(
                serde_json::json!({"modality": "torso_acc", "start_unix_nanos": t0, "samples": rows(51, 1.0)})
                    .to_string()
                    .into(),
            ),
        ),
        ("bad_frame", WsMessage::Binary(vec![0x00, 1, 0, 0].into())),
        ("bad_frame", WsMessage::Binary(binary_frame(0, t0, &good.samples[..4], 1).into())),
        ("unknown_modality", WsMessage::Binary(binary_frame(999, t0, &good.samples, 3).into())),
        ("non_finite", WsMessage::Binary(binary_frame(0, t0, &[1.0, f32::NAN, 2.0], 3).into())),
    ];
    let expected: Vec<&str> = bad.iter().map(|(r, _)| *r).collect();
    for (_, message) in bad {
        ws.send(message).await.unwrap();
    }
    for reason in &expected {
        let frame = ws_next_json(&mut ws).await.expect("socket stays open");
        assert_eq!(frame["type"], "error", "{frame}");
        assert_eq!(frame["reason"], *reason, "{frame}");
        assert_eq!(frame["kind"], "invalid_input");
        assert!(!frame["error"].as_str().unwrap().is_empty());
    }
    // The socket still works: good data produces predictions.
    let seconds = window_seconds(&server.core);
    send_seconds(&server, &mut ws, t0, 0..seconds).await;
    predictions_until(&mut ws, t0 + seconds as i64 * SECOND).await;
    for (reason, count) in [
        ("bad_json", 2.0),
        ("unknown_modality", 2.0),
        ("non_finite", 2.0),
        ("bad_frame", 2.0),
    ] {
        assert_eq!(
            server
                .metric(
                    "crossl_chunks_rejected_total",
                    &[("transport", "websocket"), ("reason", reason)]
                )
                .await,
            count,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_with_1009_and_bad_device_ids_with_1008() {
    let server = start(|a| a.ws_max_frame_bytes = 4096).await;
    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/ws-big"), None)
        .await
        .unwrap();
    let welcome = ws_next_json(&mut ws).await.expect("welcome");
    assert_eq!(welcome["max_frame_bytes"], 4096);
    ws.send(WsMessage::Binary(vec![0u8; 8192].into()))
        .await
        .unwrap();
    let close = ws_next_json(&mut ws).await.expect_err("closed");
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Size, "{close:?}");
    assert_eq!(
        server
            .metric(
                "crossl_chunks_rejected_total",
                &[("transport", "websocket"), ("reason", "frame_too_large")]
            )
            .await,
        1.0
    );

    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/bad%20id"), None)
        .await
        .unwrap();
    let error = ws_next_json(&mut ws).await.expect("error frame first");
    assert_eq!(error["reason"], "bad_device_id", "{error}");
    let close = ws_next_json(&mut ws)
        .await
        .expect_err("closed")
        .expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_feed_filters_devices_and_a_slow_reader_skips_without_blocking_ingest() {
    let server = start(|a| a.feed_capacity = 64).await;
    // A filtered dashboard: only devices a and c.
    let mut dashboard = ws_connect(
        &server.ws_url("/v1/ws/predictions?device=dash-a,dash-c"),
        None,
    )
    .await
    .unwrap();
    // A dashboard that never reads, with a tiny receive buffer so its TCP window closes quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(server.http).await.unwrap();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(server.ws_url("/v1/ws/predictions"), stream)
            .await
            .expect("feed upgrade");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 20 000 predictions (~25 MB of frames) arrive while the stalled dashboard reads nothing.
    let base = next_second(Duration::ZERO);
    for i in 0..20_000 {
        server.core.store.insert(flood_prediction(
            format!("flood-{}", i % 500),
            base + (i / 500) as i64 * SECOND,
        ));
    }
    // Ingest is not held up: devices stream and get their predictions while the dashboard is stalled.
    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core);
    let mut devices = Vec::new();
    for id in ["dash-a", "dash-b", "dash-c"] {
        let mut ws = ws_connect(&server.ws_url(&format!("/v1/ws/devices/{id}")), None)
            .await
            .unwrap();
        ws_next_json(&mut ws).await.expect("welcome");
        send_seconds(&server, &mut ws, t0, 0..seconds).await;
        devices.push(ws);
    }
    let last_end = t0 + seconds as i64 * SECOND;
    for ws in &mut devices {
        tokio::time::timeout(Duration::from_secs(20), predictions_until(ws, last_end))
            .await
            .expect("device predictions arrive while a dashboard is stalled");
    }
    // The filtered dashboard sees a and c (the flood and b are filtered out), possibly after a skip notice.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        let frame = ws_next_json(&mut dashboard).await.expect("feed open");
        match frame["type"].as_str() {
            Some("prediction") => {
                let device = frame["device_id"].as_str().unwrap().to_string();
                assert!(device == "dash-a" || device == "dash-c", "{frame}");
                if frame["window_end_unix_nanos"].as_i64() == Some(last_end) {
                    seen.insert(device);
                }
            }
            Some("skipped") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
    // Now the stalled dashboard reads: somewhere in its stream the server tells it what it skipped.
    let skipped = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.next().await {
                Some(Ok(WsMessage::Text(t))) => {
                    let frame: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if frame["type"] == "skipped" {
                        return frame["count"].as_u64().unwrap();
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("stalled feed ended without a skip notice: {other:?}"),
            }
        }
    })
    .await
    .expect("a skip notice");
    assert!(skipped > 0);
    assert!(
        server
            .metric("crossl_feed_lagged_total", &[("transport", "websocket")])
            .await
            >= skipped as f64
    );
}
