//! Graceful shutdown with long-lived streams open: gRPC streams and Watch end with UNAVAILABLE, WebSocket
//! sockets are closed with 1001, and the service finishes shutting down instead of waiting for them.

mod streaming;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use streaming::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_and_sockets_end_cleanly_on_shutdown() {
    let server = start(|_| {}).await;
    let (tx, mut stream) = server.open_stream(8).await;
    tx.send(hello_request("bye-dev", &[])).await.unwrap();
    let mut watch = server.watch_all().await;
    let mut device = ws_connect(&server.ws_url("/v1/ws/devices/bye-ws"), None)
        .await
        .unwrap();
    ws_next_json(&mut device).await.expect("welcome");
    let mut feed = ws_connect(&server.ws_url("/v1/ws/predictions"), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let shutdown = tokio::spawn(server.shutdown());

    let status = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends")
        .expect_err("with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let status = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("watch ends")
        .expect("an item")
        .expect_err("a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    for socket in [&mut device, &mut feed] {
        let close = ws_next_json(socket)
            .await
            .expect_err("closed")
            .expect("close frame");
        assert_eq!(close.code, CloseCode::Away, "{close:?}");
    }
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown completes with streams having been open")
        .unwrap()
        .expect("clean shutdown");
    drop(tx);
}

/// Reads a gRPC stream to its end: the items before the closing status, and the status.
async fn read_to_status<T>(
    stream: &mut (impl futures::Stream<Item = Result<T, tonic::Status>> + Unpin),
) -> (Vec<T>, tonic::Status) {
    let mut items = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an item within 30 s")
        {
            Some(Ok(item)) => items.push(item),
            Some(Err(status)) => return (items, status),
            None => panic!(
                "the stream ended without a status after {} items",
                items.len()
            ),
        }
    }
}

/// Reads a WebSocket to its close frame: the window ends of the prediction frames before it, and the close.
async fn ws_predictions_to_close(
    socket: &mut WsStream,
) -> (
    Vec<i64>,
    tokio_tungstenite::tungstenite::protocol::CloseFrame,
) {
    let mut ends = Vec::new();
    loop {
        match ws_next_json(socket).await {
            Ok(frame) if frame["type"] == "prediction" => {
                ends.push(frame["window_end_unix_nanos"].as_i64().expect("window end"))
            }
            Ok(_) => {}
            Err(close) => return (ends, close.expect("a close frame")),
        }
    }
}

/// Drain that reaches clients: partial windows (they can only close by the shutdown flush) are flushed, their
/// predictions arrive on the still-open gRPC ingest stream, Watch, WebSocket device socket and dashboard
/// feed, and only then does each end with UNAVAILABLE / 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_the_flushed_windows_predictions_before_closing_streams() {
    let server = start(|a| {
        // Neither the watermark, a stall nor staleness can close the partial window: only the shutdown
        // flush does.
        a.out_of_orderness_ms = 600_000;
        a.stall_timeout_ms = 600_000;
        a.modality_stale_ms = 600_000;
    })
    .await;
    let core = server.core.clone();
    let mods = modalities(&core);
    let w = window_seconds(&core);
    let t0 = next_second(Duration::ZERO);
    let flushed_end = t0 + w as i64 * SECOND;

    let mut watch = server
        .predictions()
        .await
        .watch(crossl_serve::proto::WatchRequest {
            device_ids: vec!["drain-grpc".into()],
        })
        .await
        .expect("watch opens")
        .into_inner();
    let mut feed = ws_connect(&server.ws_url("/v1/ws/predictions?device=drain-ws"), None)
        .await
        .unwrap();

    // gRPC: one second short of the first full window.
    let (tx, mut stream) = server.open_stream(256).await;
    tx.send(hello_request("drain-grpc", &[])).await.unwrap();
    let mut sent = 0;
    for k in 0..w - 1 {
        for chunk in second_of_chunks(&core, "drain-grpc", t0, k) {
            sent += 1;
            tx.send(chunk_request(sent, chunk)).await.unwrap();
        }
    }
    // WebSocket: the same, as JSON frames.
    let mut device = ws_connect(&server.ws_url("/v1/ws/devices/drain-ws"), None)
        .await
        .unwrap();
    ws_next_json(&mut device).await.expect("welcome");
    let mut ws_sent = 0;
    for k in 0..w - 1 {
        for (chunk, (_, channels, _)) in
            second_of_chunks(&core, "drain-ws", t0, k).iter().zip(&mods)
        {
            ws_sent += 1;
            device
                .send(WsMessage::Text(
                    json_frame(ws_sent, chunk, *channels).into(),
                ))
                .await
                .unwrap();
        }
    }
    // Every chunk accepted before the shutdown starts.
    tokio::time::timeout(Duration::from_secs(30), async {
        let received = |t: &str| core.metrics.chunks_received.with_label_values(&[t]).get();
        while received("grpc") < sent || received("websocket") < ws_sent {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all chunks accepted");
    for id in ["drain-grpc", "drain-ws"] {
        assert!(
            core.store
                .latest(id)
                .is_none_or(|p| p.window_end_unix_nanos < flushed_end),
            "{id}: the partial window must not have closed before the shutdown"
        );
    }

    let shutdown = tokio::spawn(server.shutdown());

    let (items, status) = read_to_status(&mut stream).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    let ends: Vec<i64> = items
        .iter()
        .filter_map(|r| match &r.kind {
            Some(crossl_serve::proto::stream_response::Kind::Prediction(p)) => {
                Some(p.window_end_unix_nanos)
            }
            _ => None,
        })
        .collect();
    assert!(ends.contains(&flushed_end), "ingest stream got {ends:?}");

    let (watched, status) = read_to_status(&mut watch).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        watched
            .iter()
            .any(|p| p.device_id == "drain-grpc" && p.window_end_unix_nanos == flushed_end),
        "watch got {watched:?}"
    );

    for socket in [&mut device, &mut feed] {
        let (ends, close) = ws_predictions_to_close(socket).await;
        assert_eq!(close.code, CloseCode::Away, "{close:?}");
        assert!(!close.reason.is_empty());
        assert!(ends.contains(&flushed_end), "socket got {ends:?}");
    }
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown completes")
        .unwrap()
        .expect("clean shutdown");
    for what in ["windows", "streams"] {
        assert_eq!(
            core.metrics.drain_dropped.with_label_values(&[what]).get(),
            0,
            "{what}"
        );
    }
    drop(tx);
}
