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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_empty_hellos_cannot_lock_out_a_real_device() {
    let server = start(|a| {
        a.max_devices = 100;
        a.max_devices_per_stream = 2000;
    })
    .await;
    // 10,000 hellos for distinct devices over 5 streams, none of which ever sends data.
    let mut streams = Vec::new();
    for s in 0..5 {
        let (tx, responses) = server.open_stream(1024).await;
        for i in 0..2000 {
            tx.send(hello_request(&format!("ghost-{s}-{i}"), &[]))
                .await
                .unwrap();
        }
        streams.push((tx, responses));
    }
    // Every stream read past its hellos: one more that surely fails (beyond the per-stream cap) comes back.
    for (s, (tx, responses)) in streams.iter_mut().enumerate() {
        tx.send(hello_request(&format!("ghost-{s}-extra"), &[]))
            .await
            .unwrap();
        loop {
            let Kind::ChunkError(e) = next_kind(responses).await else {
                continue;
            };
            assert_eq!(e.reason, "max_devices_per_stream", "{e:?}");
            if e.device_id == format!("ghost-{s}-extra") {
                break;
            }
        }
    }
    let m = &server.core.metrics;
    assert!(
        m.hellos_unregistered.get() >= 9_900 - 100,
        "the silent set is bounded"
    );

    // A real device over WebSocket (connecting is a hello) and one over gRPC stream and get predictions.
    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core);
    let (tx, mut real) = server.open_stream(256).await;
    tx.send(hello_request("real-grpc", &[])).await.unwrap();
    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/real-ws"), None)
        .await
        .expect("the socket is accepted");
    ws_next_json(&mut ws).await.expect("welcome");
    let mods = modalities(&server.core);
    for k in 0..seconds {
        for chunk in second_of_chunks(&server.core, "real-grpc", t0, k) {
            tx.send(chunk_request(k as u64, chunk)).await.unwrap();
        }
        for (chunk, (index, (_, channels, _))) in second_of_chunks(&server.core, "real-ws", t0, k)
            .iter()
            .zip(mods.iter().enumerate())
        {
            use futures::SinkExt;
            let frame = binary_frame(
                index as u16,
                chunk.start_unix_nanos,
                &chunk.samples,
                *channels,
            );
            ws.send(WsMessage::Binary(frame.into())).await.unwrap();
        }
    }
    let last = t0 + seconds as i64 * SECOND;
    loop {
        match next_kind(&mut real).await {
            Kind::Prediction(p) if p.window_end_unix_nanos == last => break,
            Kind::Prediction(_) => {}
            Kind::ChunkError(e) => panic!("real device refused: {e:?}"),
        }
    }
    loop {
        let frame = ws_next_json(&mut ws).await.expect("socket open");
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "prediction" && frame["window_end_unix_nanos"].as_i64() == Some(last) {
            break;
        }
    }
    assert_eq!(
        server
            .metric("crossl_chunks_rejected_total", &[("reason", "max_devices")])
            .await,
        0.0
    );
    drop((tx, streams));
}
