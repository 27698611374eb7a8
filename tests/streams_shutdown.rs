//! Graceful shutdown with long-lived streams open: gRPC streams and Watch end with UNAVAILABLE, WebSocket
//! sockets are closed with 1001, and the service finishes shutting down instead of waiting for them.

mod streaming;

use std::time::Duration;

use futures::StreamExt;
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
