//! gRPC over real sockets: a device streaming end to end (predictions on the stream, in REST and in
//! Watch), a gateway stream with several devices, recoverable chunk errors, Predict/Latest, health and
//! reflection.

mod streaming;

use std::collections::HashMap;
use std::time::Duration;

use crossl_serve::proto;
use crossl_serve::proto::stream_response::Kind;
use futures::StreamExt;
use streaming::*;
use tonic::Streaming;

/// Reads the stream until `done` says so; panics after `timeout`.
async fn read_until(
    responses: &mut Streaming<proto::StreamResponse>,
    timeout: Duration,
    mut done: impl FnMut(&[proto::StreamResponse]) -> bool,
) -> Vec<proto::StreamResponse> {
    let mut seen = Vec::new();
    tokio::time::timeout(timeout, async {
        while !done(&seen) {
            match responses.message().await.expect("stream healthy") {
                Some(r) => seen.push(r),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; got {} responses: {seen:?}", seen.len()));
    seen
}

fn predictions(responses: &[proto::StreamResponse]) -> Vec<&proto::Prediction> {
    responses
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::Prediction(p)) => Some(p),
            _ => None,
        })
        .collect()
}

fn chunk_errors(responses: &[proto::StreamResponse]) -> Vec<&proto::ChunkError> {
    responses
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::ChunkError(e)) => Some(e),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_streams_and_gets_every_window_back_on_the_stream_in_rest_and_in_watch() {
    let server = start(|_| {}).await;
    let classes = server.core.manifest.classes.len();
    let n_modalities = server.core.manifest.modalities.len();
    let mut watch = server
        .predictions()
        .await
        .watch(proto::WatchRequest {
            device_ids: vec!["dev-a".into()],
        })
        .await
        .expect("watch opens")
        .into_inner();

    let (tx, mut responses) = server.open_stream(256).await;
    tx.send(hello_request("dev-a", &[])).await.unwrap();
    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core) + 2;
    let mut sequence = 0;
    for k in 0..seconds {
        for chunk in second_of_chunks(&server.core, "dev-a", t0, k) {
            sequence += 1;
            tx.send(chunk_request(sequence, chunk)).await.unwrap();
        }
    }
    let last_end = t0 + seconds as i64 * SECOND;
    let seen = read_until(&mut responses, Duration::from_secs(30), |r| {
        predictions(r)
            .iter()
            .any(|p| p.window_end_unix_nanos == last_end)
    })
    .await;
    assert!(
        chunk_errors(&seen).is_empty(),
        "unexpected errors: {seen:?}"
    );
    let preds = predictions(&seen);
    // The three windows fully inside the recording come back, each on the hop grid, all modalities present.
    let full: Vec<_> = preds
        .iter()
        .filter(|p| p.window_end_unix_nanos >= t0 + 5 * SECOND)
        .collect();
    assert_eq!(full.len(), seconds - 5 + 1, "{preds:?}");
    for p in &full {
        assert_eq!(p.device_id, "dev-a");
        assert_eq!(p.window_end_unix_nanos % SECOND, 0);
        assert_eq!(p.probabilities.len(), classes);
        assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-3);
        assert_eq!(p.present_modalities.len(), n_modalities);
        assert!(server.core.manifest.classes.contains(&p.label));
        assert!(p.timings.as_ref().is_some_and(|t| t.batch_size >= 1));
    }

    // The same prediction is visible through REST …
    let rest: serde_json::Value =
        reqwest::get(format!("{}/v1/devices/dev-a/prediction", server.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        rest["window_end_unix_nanos"].as_i64(),
        Some(last_end),
        "{rest}"
    );
    // … through Latest …
    let latest = server
        .predictions()
        .await
        .latest(proto::LatestRequest {
            device_id: "dev-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.window_end_unix_nanos, last_end);
    // … and to the Watch subscriber.
    let watched = tokio::time::timeout(Duration::from_secs(10), async {
        let mut ends = Vec::new();
        while let Some(p) = watch.next().await {
            let p = p.expect("watch healthy");
            assert_eq!(p.device_id, "dev-a");
            ends.push(p.window_end_unix_nanos);
            if p.window_end_unix_nanos == last_end {
                break;
            }
        }
        ends
    })
    .await
    .expect("watch delivers");
    assert_eq!(watched.len(), preds.len());
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stream_carries_several_devices_and_only_their_predictions() {
    let server = start(|_| {}).await;
    let gateway_devices = ["gw-0", "gw-1", "gw-2"];
    let (tx, mut gateway) = server.open_stream(1024).await;
    // Another device on its own stream: its predictions must not show up on the gateway's stream.
    let (other_tx, mut other) = server.open_stream(1024).await;

    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core) + 1;
    let mut sequence = 0;
    for k in 0..seconds {
        for device in gateway_devices {
            for chunk in second_of_chunks(&server.core, device, t0, k) {
                sequence += 1;
                tx.send(chunk_request(sequence, chunk)).await.unwrap();
            }
        }
        for chunk in second_of_chunks(&server.core, "lone", t0, k) {
            other_tx.send(chunk_request(0, chunk)).await.unwrap();
        }
    }
    let last_end = t0 + seconds as i64 * SECOND;
    let seen = read_until(&mut gateway, Duration::from_secs(30), |r| {
        gateway_devices.iter().all(|d| {
            predictions(r)
                .iter()
                .any(|p| p.device_id == *d && p.window_end_unix_nanos == last_end)
        })
    })
    .await;
    assert!(chunk_errors(&seen).is_empty(), "{seen:?}");
    let preds = predictions(&seen);
    assert!(
        preds
            .iter()
            .all(|p| gateway_devices.contains(&p.device_id.as_str())),
        "{preds:?}"
    );
    let lone = read_until(&mut other, Duration::from_secs(30), |r| {
        predictions(r)
            .iter()
            .any(|p| p.window_end_unix_nanos == last_end)
    })
    .await;
    assert!(predictions(&lone).iter().all(|p| p.device_id == "lone"));
    drop((tx, other_tx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_chunks_come_back_as_chunk_errors_and_the_stream_stays_open() {
    let server = start(|a| a.max_chunk_samples = 50).await;
    let (tx, mut responses) = server.open_stream(256).await;
    let t0 = next_second(Duration::ZERO);
    let good = |k| second_of_chunks(&server.core, "dev-e", t0, k);
    let mut bad = Vec::new();
    let mut unknown = good(0)[0].clone();
    unknown.modality = "tail_acc".into();
    bad.push(("unknown_modality", unknown));
    let mut nan = good(0)[0].clone();
    nan.samples[4] = f32::NAN;
    bad.push(("non_finite", nan));
    let mut inf = good(0)[0].clone();
    inf.samples[0] = f32::NEG_INFINITY;
    bad.push(("non_finite", inf));
    let mut ragged = good(0)[0].clone();
    ragged.samples.pop();
    bad.push(("channel_multiple", ragged));
    let mut long = good(0)[0].clone();
    long.samples = synthetic(0, 3, 0, 51);
    bad.push(("too_many_samples", long));
    let mut bad_id = good(0)[0].clone();
    bad_id.device_id = "no spaces allowed".into();
    bad.push(("bad_device_id", bad_id));

    let mut expected = Vec::new();
    for (i, (reason, chunk)) in bad.into_iter().enumerate() {
        expected.push((i as u64, 100 + i as u64, reason, chunk.modality.clone()));
        tx.send(chunk_request(100 + i as u64, chunk)).await.unwrap();
    }
    tx.send(proto::StreamRequest {
        sequence: 200,
        kind: None,
    })
    .await
    .unwrap();
    // Good data afterwards still flows into windows and predictions.
    let seconds = window_seconds(&server.core);
    for k in 0..seconds {
        for chunk in good(k) {
            tx.send(chunk_request(1, chunk)).await.unwrap();
        }
    }
    let last_end = t0 + seconds as i64 * SECOND;
    let seen = read_until(&mut responses, Duration::from_secs(30), |r| {
        predictions(r)
            .iter()
            .any(|p| p.window_end_unix_nanos == last_end)
    })
    .await;
    let errors = chunk_errors(&seen);
    assert_eq!(errors.len(), expected.len() + 1, "{errors:?}");
    for (e, (index, sequence, reason, modality)) in errors.iter().zip(&expected) {
        assert_eq!((e.index, e.sequence), (*index, *sequence));
        assert_eq!(e.reason, *reason, "{e:?}");
        assert_eq!(e.kind, "invalid_input");
        assert_eq!(&e.modality, modality);
        assert!(!e.message.is_empty());
    }
    let empty = errors.last().unwrap();
    assert_eq!(
        (empty.sequence, empty.reason.as_str()),
        (200, "empty_request")
    );
    for (reason, count) in [
        ("unknown_modality", 1.0),
        ("non_finite", 2.0),
        ("channel_multiple", 1.0),
        ("too_many_samples", 1.0),
        ("bad_device_id", 1.0),
        ("empty_request", 1.0),
    ] {
        assert_eq!(
            server
                .metric(
                    "crossl_chunks_rejected_total",
                    &[("transport", "grpc"), ("reason", reason)]
                )
                .await,
            count,
            "{reason}"
        );
    }
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_finishes_sending_is_closed_after_its_last_windows() {
    let server = start(|a| a.stream_linger_ms = 300).await;
    let (tx, mut responses) = server.open_stream(256).await;
    let t0 = next_second(Duration::ZERO);
    let seconds = window_seconds(&server.core);
    for k in 0..seconds {
        for chunk in second_of_chunks(&server.core, "dev-f", t0, k) {
            tx.send(chunk_request(0, chunk)).await.unwrap();
        }
    }
    drop(tx);
    // The response stream delivers the last window, then ends cleanly (status OK) after the linger time.
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = Vec::new();
        while let Some(r) = responses.message().await.expect("ends with OK") {
            seen.push(r);
        }
        seen
    })
    .await
    .expect("stream ends by itself");
    assert!(
        predictions(&seen)
            .iter()
            .any(|p| p.window_end_unix_nanos == t0 + seconds as i64 * SECOND)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_latest_health_and_reflection() {
    let server = start(|_| {}).await;
    let manifest = server.core.manifest.clone();
    let mut ingest = server.ingest().await;
    // One complete window with every modality.
    let modalities: HashMap<String, proto::ModalityWindow> = manifest
        .modalities
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                m.name.clone(),
                proto::ModalityWindow {
                    samples: synthetic(i, m.channels, 0, m.window_samples),
                },
            )
        })
        .collect();
    let p = ingest
        .predict(proto::PredictRequest {
            modalities: modalities.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.probabilities.len(), manifest.classes.len());
    assert_eq!(p.logits.len(), manifest.classes.len());
    assert_eq!(p.embedding.len(), manifest.embedding_size);
    assert_eq!(manifest.classes[p.class_index as usize], p.label);
    assert_eq!(p.present_modalities.len(), manifest.modalities.len());
    // Only one modality: the others are absent.
    let one: HashMap<_, _> = modalities
        .iter()
        .take(1)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let p1 = ingest
        .predict(proto::PredictRequest { modalities: one })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.present_modalities.len(), 1);
    // Wrong length ⇒ INVALID_ARGUMENT with a message.
    let mut short = modalities.clone();
    short.values_mut().next().unwrap().samples.pop();
    let err = ingest
        .predict(proto::PredictRequest { modalities: short })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(!err.message().is_empty());

    let err = server
        .predictions()
        .await
        .latest(proto::LatestRequest {
            device_id: "never-seen".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Standard health follows readiness.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in ["", "crossl.v1.Ingest", "crossl.v1.Predictions"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    // Reflection lists our services.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("a reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "crossl.v1.Ingest",
        "crossl.v1.Predictions",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_naming_an_unknown_modality_is_refused_on_the_stream() {
    let server = start(|_| {}).await;
    let (tx, mut responses) = server.open_stream(8).await;
    tx.send(hello_request("hello-dev", &["torso_acc", "tail_acc"]))
        .await
        .unwrap();
    tx.send(hello_request("hello-dev", &["torso_acc"]))
        .await
        .unwrap();
    tx.send(hello_request("", &[])).await.unwrap();
    let seen = read_until(&mut responses, Duration::from_secs(10), |r| {
        chunk_errors(r).len() == 2
    })
    .await;
    let errors = chunk_errors(&seen);
    assert_eq!(
        (
            errors[0].index,
            errors[0].device_id.as_str(),
            errors[0].reason.as_str()
        ),
        (0, "hello-dev", "unknown_modality")
    );
    assert_eq!(
        (errors[1].index, errors[1].reason.as_str()),
        (2, "bad_device_id")
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_skips_ahead_and_the_skips_are_counted() {
    let server = start(|a| a.feed_capacity = 64).await;
    let mut watch = server.watch_all().await;
    // 20 000 predictions (several MB) while the watcher reads nothing: HTTP/2 flow control stops the
    // stream, the broadcast buffer moves on without it.
    let base = next_second(Duration::ZERO);
    for i in 0..20_000i64 {
        server.core.store.insert(flood_prediction(
            format!("w-{}", i % 100),
            base + (i / 100) * SECOND,
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The watcher then reads on: it gets fewer than were published, and the rest are counted as skipped.
    let mut received = 0u64;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
        p.expect("watch healthy");
        received += 1;
    }
    let skipped = server
        .metric("crossl_feed_lagged_total", &[("transport", "grpc")])
        .await;
    assert!(received < 20_000, "{received}");
    assert!(skipped > 0.0);
    assert_eq!(
        received + skipped as u64,
        20_000,
        "received {received}, skipped {skipped}"
    );
}
