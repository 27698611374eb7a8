//! Device ownership over real sockets: a second stream for a device that is streaming takes it over, and
//! the first is told (gRPC `ChunkError` notice `conflict`/`taken_over`, WebSocket error frame + close
//! 4409) instead of two timelines mixing; device slots: empty hellos cannot lock out a real device.

mod streaming;

use std::time::Duration;

use crossl_serve::proto;
use crossl_serve::proto::stream_response::Kind;
use streaming::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn next_kind(responses: &mut tonic::Streaming<proto::StreamResponse>) -> Kind {
    tokio::time::timeout(Duration::from_secs(30), responses.message())
        .await
        .expect("a response within 30 s")
        .expect("stream healthy")
        .expect("stream open")
        .kind
        .expect("a kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_grpc_stream_takes_the_device_over_and_the_first_is_told() {
    let server = start(|_| {}).await;
    let t0 = next_second(Duration::ZERO);
    let (old_tx, mut old) = server.open_stream(64).await;
    old_tx.send(hello_request("dev-t", &[])).await.unwrap();
    let first = second_of_chunks(&server.core, "dev-t", t0, 0);
    for (i, chunk) in first.into_iter().enumerate() {
        old_tx.send(chunk_request(i as u64, chunk)).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while server.core.owners.owned() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();

    let (new_tx, mut new) = server.open_stream(256).await;
    new_tx.send(hello_request("dev-t", &[])).await.unwrap();
    let Kind::ChunkError(notice) = next_kind(&mut old).await else {
        panic!("expected the takeover notice");
    };
    assert_eq!(
        (
            notice.device_id.as_str(),
            notice.kind.as_str(),
            notice.reason.as_str(),
            notice.index
        ),
        ("dev-t", "conflict", "taken_over", u64::MAX),
        "{notice:?}"
    );
    // The old stream's further chunks for the device are refused, not mixed into the new timeline.
    let stray = second_of_chunks(&server.core, "dev-t", t0, 1)[0].clone();
    old_tx.send(chunk_request(99, stray)).await.unwrap();
    let Kind::ChunkError(refused) = next_kind(&mut old).await else {
        panic!("expected a refusal");
    };
    assert_eq!(
        (refused.sequence, refused.reason.as_str()),
        (99, "taken_over")
    );

    // The new stream owns the device and gets its predictions.
    let seconds = window_seconds(&server.core);
    for k in 1..=seconds {
        for chunk in second_of_chunks(&server.core, "dev-t", t0, k) {
            new_tx.send(chunk_request(k as u64, chunk)).await.unwrap();
        }
    }
    let last = t0 + (seconds + 1) as i64 * SECOND;
    loop {
        match next_kind(&mut new).await {
            Kind::Prediction(p) if p.window_end_unix_nanos == last => break,
            Kind::Prediction(_) => {}
            Kind::ChunkError(e) => panic!("new stream refused: {e:?}"),
        }
    }
    assert_eq!(
        server
            .metric("crossl_stream_takeovers_total", &[("transport", "grpc")])
            .await,
        1.0
    );
    drop((old_tx, new_tx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_socket_or_stream_takes_a_websocket_device_over_with_close_4409() {
    let server = start(|_| {}).await;
    let url = server.ws_url("/v1/ws/devices/dev-w");
    let mut first = ws_connect(&url, None).await.unwrap();
    ws_next_json(&mut first).await.expect("welcome");
    let mut second = ws_connect(&url, None).await.unwrap();
    ws_next_json(&mut second).await.expect("welcome");
    let error = ws_next_json(&mut first).await.expect("error frame");
    assert_eq!(
        (error["kind"].as_str(), error["reason"].as_str()),
        (Some("conflict"), Some("taken_over")),
        "{error}"
    );
    let close = ws_next_json(&mut first)
        .await
        .expect_err("closed")
        .expect("close frame");
    assert_eq!(close.code, CloseCode::from(4409), "{close:?}");
    assert!(close.reason.contains("taken over"), "{close:?}");

    // A gRPC hello for the device takes it over from the socket as well.
    let (tx, _responses) = server.open_stream(8).await;
    tx.send(hello_request("dev-w", &[])).await.unwrap();
    let error = ws_next_json(&mut second).await.expect("error frame");
    assert_eq!(error["reason"], "taken_over", "{error}");
    let close = ws_next_json(&mut second)
        .await
        .expect_err("closed")
        .expect("close frame");
    assert_eq!(close.code, CloseCode::from(4409));
    drop(tx);
}
