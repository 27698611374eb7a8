//! Limits on the streaming transports over real sockets: gRPC message size, max devices, per-device rate
//! throttling — each a clear status or error, counted, and without hurting other devices.
//! (Unknown modality, NaN/Inf, channel multiple and max chunk samples: grpc_stream.rs and ws_ingest.rs.)

mod streaming;

use std::collections::HashMap;
use std::time::Duration;

use crossl_serve::proto;
use crossl_serve::proto::stream_response::Kind;
use streaming::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tonic::Code;

async fn next_response(
    responses: &mut tonic::Streaming<proto::StreamResponse>,
) -> Result<Option<Kind>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(30), responses.message())
        .await
        .expect("a response within 30 s")
        .map(|r| r.and_then(|r| r.kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_over_the_limit_are_resource_exhausted() {
    let server = start(|a| a.grpc_max_message_bytes = 8 * 1024).await;
    // On a stream: the stream ends with RESOURCE_EXHAUSTED.
    let (tx, mut responses) = server.open_stream(8).await;
    let t0 = next_second(Duration::ZERO);
    let mut big = second_of_chunks(&server.core, "big", t0, 0)[0].clone();
    big.samples = synthetic(0, 3, 0, 1000); // 12 kB
    tx.send(chunk_request(1, big)).await.unwrap();
    let status = loop {
        match next_response(&mut responses).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--grpc-max-message-bytes"),
        "{status:?}"
    );
    assert_eq!(
        server
            .metric(
                "crossl_chunks_rejected_total",
                &[("transport", "grpc"), ("reason", "too_large")]
            )
            .await,
        1.0
    );

    // Unary: tonic refuses before the handler; the client still sees RESOURCE_EXHAUSTED.
    let huge: HashMap<String, proto::ModalityWindow> = HashMap::from([(
        "torso_acc".to_string(),
        proto::ModalityWindow {
            samples: vec![1.0; 4096],
        },
    )]);
    let err = server
        .ingest()
        .await
        .predict(proto::PredictRequest { modalities: huge })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        server
            .metric(
                "crossl_predict_rejected_total",
                &[("transport", "grpc"), ("reason", "too_large")]
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_beyond_max_devices_are_refused_on_grpc_and_websocket() {
    let server = start(|a| a.max_devices = 2).await;
    let (tx, mut responses) = server.open_stream(64).await;
    let t0 = next_second(Duration::ZERO);
    for (i, device) in ["cap-0", "cap-1", "cap-2"].into_iter().enumerate() {
        let chunk = second_of_chunks(&server.core, device, t0, 0)[0].clone();
        tx.send(chunk_request(i as u64, chunk)).await.unwrap();
    }
    let Ok(Some(Kind::ChunkError(e))) = next_response(&mut responses).await else {
        panic!("expected a chunk error");
    };
    assert_eq!(
        (e.device_id.as_str(), e.kind.as_str(), e.reason.as_str()),
        ("cap-2", "resource_exhausted", "max_devices")
    );
    // Known devices keep working on the same stream.
    let chunk = second_of_chunks(&server.core, "cap-0", t0, 1)[0].clone();
    tx.send(chunk_request(9, chunk)).await.unwrap();
    // A third device over WebSocket is told why and the socket closes with 1008.
    let mut ws = ws_connect(&server.ws_url("/v1/ws/devices/cap-ws"), None)
        .await
        .unwrap();
    let error = ws_next_json(&mut ws).await.expect("error frame");
    assert_eq!(error["reason"], "max_devices", "{error}");
    assert_eq!(error["kind"], "resource_exhausted");
    let close = ws_next_json(&mut ws)
        .await
        .expect_err("closed")
        .expect("close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert!(
        server
            .metric(
                "crossl_chunks_rejected_total",
                &[("transport", "grpc"), ("reason", "max_devices")]
            )
            .await
            >= 1.0
    );
    drop(tx);
    // No further error arrived for the known device's chunk.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server
            .metric(
                "crossl_chunks_rejected_total",
                &[("transport", "grpc"), ("reason", "max_devices")]
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_sending_far_faster_than_its_rate_is_throttled_without_hurting_others() {
    // Default factor 10: a 25 Hz modality may sustain 250 samples/s (with a short burst allowance).
    let server = start(|a| a.rate_limit_factor = 10.0).await;
    let (tx, mut flood) = server.open_stream(1024).await;
    let t0 = next_second(Duration::ZERO);
    // 250 s of torso_acc sent at once: far beyond 10× real time and beyond the burst allowance.
    for k in 0..250 {
        let chunk = second_of_chunks(&server.core, "fast", t0, k)[0].clone();
        tx.send(chunk_request(k as u64, chunk)).await.unwrap();
    }
    let mut limited = 0;
    while limited == 0 {
        match next_response(&mut flood).await {
            Ok(Some(Kind::ChunkError(e))) => {
                assert_eq!(
                    (e.kind.as_str(), e.reason.as_str()),
                    ("resource_exhausted", "rate_limited"),
                    "{e:?}"
                );
                limited += 1;
            }
            Ok(Some(Kind::Prediction(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Another device streaming at an honest pace (well, 5 s of data: within the burst allowance) is served.
    let (tx2, mut honest) = server.open_stream(256).await;
    let seconds = window_seconds(&server.core);
    for k in 0..seconds {
        for chunk in second_of_chunks(&server.core, "honest", t0, k) {
            tx2.send(chunk_request(0, chunk)).await.unwrap();
        }
    }
    let last_end = t0 + seconds as i64 * SECOND;
    loop {
        match next_response(&mut honest).await {
            Ok(Some(Kind::Prediction(p))) if p.window_end_unix_nanos == last_end => break,
            Ok(Some(Kind::Prediction(_))) => {}
            other => panic!("the honest device was hurt: {other:?}"),
        }
    }
    assert!(
        server
            .metric(
                "crossl_chunks_rejected_total",
                &[("transport", "grpc"), ("reason", "rate_limited")]
            )
            .await
            >= 1.0
    );
    drop((tx, tx2));
}
