use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::batch::BatcherConfig;
use crate::infer::testing::EchoBackend;
use crate::infer::{Backend, WorkerPool};
use crate::model::manifest::tests::two_modality_manifest;
use crate::window::ManualClock;

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * SEC;

struct Harness {
    ingest: Ingest,
    store: PredictionStore,
    metrics: Arc<Metrics>,
    clock: ManualClock,
    _pool: WorkerPool,
}

async fn harness(limits: IngestLimits) -> Harness {
    let manifest = Arc::new(two_modality_manifest());
    let factory: crate::infer::workers::BackendFactory = Arc::new(|_| {
        Ok(Box::new(EchoBackend {
            sizes: Arc::new(Mutex::new(Vec::new())),
            gate: None,
        }) as Box<dyn Backend>)
    });
    let (pool, ready) = WorkerPool::start(1, factory, Vec::new());
    ready.await.expect("ready");
    let metrics = Arc::new(Metrics::new(2, 8));
    let clock = ManualClock::new(T0);
    // Retention counts on the server clock the ingest ticks with.
    let store = PredictionStore::bounded(
        crate::store::StoreLimits {
            history_len: 64,
            feed_capacity: 64,
            max_devices: usize::MAX,
        },
        Arc::new(clock.clone()),
        metrics.store_devices_evicted.clone(),
    );
    let (batcher, _actor) = Batcher::start(
        BatcherConfig {
            max_batch_size: 8,
            max_batch_delay: Duration::from_millis(1),
            queue_capacity: 64,
            one_shot_queue_capacity: 64,
            window_deadline: Duration::from_secs(30),
        },
        Arc::clone(&manifest),
        pool.sender().expect("sender"),
        store.clone(),
        Arc::clone(&metrics),
    );
    let ingest = Ingest::new(
        manifest,
        WindowPolicy::default(),
        limits,
        batcher,
        store.clone(),
        Arc::clone(&metrics),
        Arc::new(clock.clone()),
    );
    Harness {
        ingest,
        store,
        metrics,
        clock,
        _pool: pool,
    }
}

fn limits() -> IngestLimits {
    IngestLimits {
        max_devices: 2,
        max_chunk_samples: 100,
        rate_limit_factor: 10.0,
        rate_burst_seconds: 10.0,
        max_clock_skew_nanos: 3600 * SEC,
        device_idle_timeout_nanos: 60 * SEC,
        hello_timeout_nanos: 10 * SEC,
        prediction_retention_nanos: 120 * SEC,
        idle_history_len: 1,
    }
}

fn chunk(
    device: &str,
    modality: &str,
    start: i64,
    rows: usize,
    channels: usize,
    value: f32,
) -> SensorChunk {
    SensorChunk {
        device_id: device.into(),
        modality: modality.into(),
        start_unix_nanos: start,
        samples: vec![value; rows * channels],
    }
}

async fn wait_for_predictions(
    store: &PredictionStore,
    device: &str,
    n: usize,
) -> Vec<Arc<crate::store::Prediction>> {
    for _ in 0..500 {
        let h = store.history(device, None, 100);
        if h.len() >= n {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("fewer than {n} predictions for {device}");
}

#[tokio::test]
async fn chunks_become_windows_and_predictions() {
    let h = harness(limits()).await;
    let start = T0 - 3 * SEC;
    let r = h
        .ingest
        .push(Transport::Grpc, chunk("d1", "acc", start, 30, 3, 7.0))
        .expect("accepted");
    assert_eq!(r.samples_accepted, 30);
    assert_eq!(
        r.windows_closed, 2,
        "[T0−3 s, T0−1 s) and [T0−2 s, T0) are complete"
    );
    let preds = wait_for_predictions(&h.store, "d1", 2).await;
    assert_eq!(preds[1].window_end_unix_nanos, T0);
    assert_eq!(
        preds[1].present_modalities.to_vec(),
        vec!["acc".to_string()]
    );
    assert_eq!(preds[1].embedding, vec![7.0; 4]);
    assert_eq!(
        h.metrics
            .samples_received
            .with_label_values(&["grpc", "acc"])
            .get(),
        30
    );
    assert_eq!(h.metrics.windows_emitted.get(), 2);
    let info = h.ingest.device_info("d1").expect("tracked");
    assert_eq!(info.modalities.len(), 1);
    assert!(!info.modalities[0].stale);
    assert_eq!(info.last_window_end_unix_nanos, Some(T0));
}

#[tokio::test]
async fn every_rejection_is_counted_by_transport_and_reason() {
    let h = harness(limits()).await;
    let cases = [
        (chunk("", "acc", T0, 1, 3, 0.0), "bad_device_id"),
        (chunk("d", "magnet", T0, 1, 3, 0.0), "unknown_modality"),
        (chunk("d", "acc", T0, 1, 2, 0.0), "channel_multiple"),
        (chunk("d", "acc", T0, 101, 3, 0.0), "too_many_samples"),
        (chunk("d", "acc", T0, 1, 3, f32::NAN), "non_finite"),
        (
            chunk("d", "acc", T0 + 7200 * SEC, 1, 3, 0.0),
            "bad_timestamp",
        ),
    ];
    for (c, reason) in cases {
        let e = h.ingest.push(Transport::WebSocket, c).unwrap_err();
        assert_eq!(e.reason(), reason);
        assert_eq!(
            h.metrics
                .chunks_rejected
                .with_label_values(&["websocket", reason])
                .get(),
            1
        );
    }
    assert!(
        h.ingest.devices().is_empty(),
        "refused chunks create no device state"
    );
    h.ingest
        .push(Transport::Rest, chunk("a", "acc", T0, 1, 3, 0.0))
        .expect("a");
    h.ingest
        .push(Transport::Rest, chunk("b", "acc", T0, 1, 3, 0.0))
        .expect("b");
    let e = h
        .ingest
        .push(Transport::Rest, chunk("c", "acc", T0, 1, 3, 0.0))
        .unwrap_err();
    assert_eq!(e.reason(), "max_devices");
    assert_eq!(e.kind(), "resource_exhausted");
    let e = h
        .ingest
        .hello(Transport::Grpc, "a", &["acc".into(), "nope".into()])
        .unwrap_err();
    assert_eq!(e.reason(), "unknown_modality");
    assert_eq!(
        h.metrics
            .chunks_rejected
            .with_label_values(&["grpc", "unknown_modality"])
            .get(),
        1
    );
}

#[tokio::test]
async fn sustained_overspeed_is_rate_limited_without_poisoning_the_device() {
    let h = harness(limits()).await;
    // 10 Hz × factor 10 × 10 s burst = 1000 samples, then 100/s.
    let mut t = T0 - 200 * SEC;
    let mut refused = None;
    for i in 0..20 {
        match h
            .ingest
            .push(Transport::Grpc, chunk("fast", "acc", t, 100, 3, 1.0))
        {
            Ok(_) => t += 10 * SEC,
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("refused at some point");
    assert_eq!(i, 10);
    assert_eq!(e.reason(), "rate_limited");
    h.clock.advance(SEC);
    h.ingest
        .push(Transport::Grpc, chunk("fast", "acc", t, 100, 3, 1.0))
        .expect("accepted again once the bucket refilled");
}

#[tokio::test]
async fn tick_closes_stalled_devices_evicts_idle_ones_and_prunes_old_predictions() {
    let h = harness(limits()).await;
    h.ingest
        .hello(Transport::Grpc, "d", &["acc".into(), "gyro".into()])
        .expect("hello");
    let r = h
        .ingest
        .push(Transport::Grpc, chunk("d", "acc", T0 - 2 * SEC, 20, 3, 1.0))
        .expect("ok");
    assert_eq!(r.windows_closed, 0, "gyro was declared: wait for it");
    h.clock.advance(2 * SEC - 1);
    h.ingest.tick();
    assert_eq!(h.metrics.windows_emitted.get(), 0, "not stalled yet");
    h.clock.advance(1);
    h.ingest.tick();
    wait_for_predictions(&h.store, "d", 1).await;
    assert_eq!(h.metrics.active_devices.get(), 1);
    h.clock.advance(61 * SEC);
    h.ingest.tick();
    assert!(h.ingest.devices().is_empty());
    assert_eq!(h.metrics.devices_evicted.get(), 1);
    assert_eq!(h.metrics.active_devices.get(), 0);
    assert!(
        h.store.latest("d").is_some(),
        "an evicted device's predictions outlive its window state"
    );
    h.clock.advance(60 * SEC);
    h.ingest.tick();
    assert!(
        h.store.latest("d").is_none(),
        "pruned once its newest window is older than the retention"
    );
}

#[tokio::test]
async fn close_and_flush_runs_pending_windows_then_refuses() {
    let h = harness(limits()).await;
    h.ingest
        .hello(Transport::Grpc, "d", &["acc".into(), "gyro".into()])
        .expect("hello");
    h.ingest
        .push(Transport::Grpc, chunk("d", "acc", T0 - 2 * SEC, 20, 3, 1.0))
        .expect("ok");
    assert_eq!(h.ingest.close_and_flush(), 1);
    wait_for_predictions(&h.store, "d", 1).await;
    let e = h
        .ingest
        .push(Transport::Grpc, chunk("d", "acc", T0, 10, 3, 1.0))
        .unwrap_err();
    assert_eq!(e.kind(), "unavailable");
}

#[tokio::test]
async fn a_stray_chunk_from_the_past_is_refused_as_late_and_erases_nothing() {
    let h = harness(limits()).await;
    h.ingest
        .push(Transport::Grpc, chunk("d", "acc", T0 - 3 * SEC, 30, 3, 1.0))
        .expect("accepted");
    wait_for_predictions(&h.store, "d", 2).await;
    let e = h
        .ingest
        .push(
            Transport::Grpc,
            chunk("d", "acc", T0 - 600 * SEC, 10, 3, 9.0),
        )
        .unwrap_err();
    assert_eq!((e.kind(), e.reason()), ("invalid_input", "late_data"));
    assert!(e.to_string().contains("hello"), "{e}");
    assert_eq!(
        h.metrics
            .chunks_rejected
            .with_label_values(&["grpc", "late_data"])
            .get(),
        1
    );
    // The live timeline goes on where it was.
    let r = h
        .ingest
        .push(Transport::Grpc, chunk("d", "acc", T0, 10, 3, 1.0))
        .expect("accepted");
    assert_eq!(r.windows_closed, 1);
    let preds = wait_for_predictions(&h.store, "d", 3).await;
    assert_eq!(preds[2].window_end_unix_nanos, T0 + SEC);
    // After a hello the device may start a new timeline in the past.
    h.ingest.hello(Transport::Grpc, "d", &[]).expect("hello");
    let r = h
        .ingest
        .push(
            Transport::Grpc,
            chunk("d", "acc", T0 - 600 * SEC, 30, 3, 2.0),
        )
        .expect("a new timeline");
    assert_eq!(
        r.windows_closed, 2,
        "the first window of the new timeline is half covered"
    );
    assert_eq!(
        h.metrics
            .window_events
            .with_label_values(&["timeline_restart"])
            .get(),
        1
    );
}

#[tokio::test]
async fn the_clock_offset_is_estimated_and_reported() {
    let h = harness(limits()).await;
    // The device's clock is 90 s behind; its chunks arrive 0.3 s and 0.1 s after their last sample.
    let lag = 90 * SEC;
    h.ingest
        .push(
            Transport::Grpc,
            chunk("d", "acc", T0 - lag - 1_200_000_000, 10, 3, 1.0),
        )
        .expect("accepted");
    h.ingest
        .push(
            Transport::Grpc,
            chunk("d", "acc", T0 - lag - 1_000_000_000, 10, 3, 1.0),
        )
        .expect("accepted");
    let info = h.ingest.device_info("d").expect("tracked");
    let offset = info.clock_offset_seconds.expect("estimated");
    assert!((offset - (-90.1)).abs() < 1e-6, "{offset}");
    assert_eq!(info.newest_sample_unix_nanos, Some(T0 - lag - 100_000_000));
    assert_eq!(
        info.watermark_unix_nanos,
        Some(T0 - lag - 100_000_000 - WindowPolicy::default().out_of_orderness_nanos)
    );
    let text = h.metrics.render();
    assert!(
        text.contains("crossl_device_clock_offset_seconds_bucket{le=\"-60\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn silent_devices_take_no_slot_and_expire_after_the_hello_timeout() {
    // max_devices 2: two silent devices, then two with data, all fit; a hello beyond the silent set is
    // accepted without registering.
    let h = harness(limits()).await;
    h.ingest.hello(Transport::Grpc, "s1", &[]).expect("hello");
    h.ingest.hello(Transport::Grpc, "s2", &[]).expect("hello");
    h.ingest
        .hello(Transport::Grpc, "s3", &[])
        .expect("accepted");
    assert_eq!(h.metrics.hellos_unregistered.get(), 1);
    h.ingest
        .push(Transport::Rest, chunk("a", "acc", T0, 1, 3, 0.0))
        .expect("a takes a slot despite two silent devices");
    h.ingest
        .push(Transport::Rest, chunk("s1", "acc", T0, 1, 3, 0.0))
        .expect("a silent device's first data takes the second slot");
    let e = h
        .ingest
        .push(Transport::Rest, chunk("s2", "acc", T0, 1, 3, 0.0))
        .unwrap_err();
    assert_eq!(e.reason(), "max_devices");
    // The silent one is forgotten after the hello timeout (10 s); devices with data stay.
    h.clock.advance(11 * SEC);
    h.ingest.tick();
    let ids: Vec<String> = h
        .ingest
        .devices()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["a", "s1"]);
}

#[tokio::test]
async fn an_idle_device_keeps_only_its_newest_predictions() {
    let h = harness(limits()).await;
    h.ingest
        .push(
            Transport::Grpc,
            chunk("rotating-1", "acc", T0 - 5 * SEC, 50, 3, 1.0),
        )
        .expect("accepted");
    assert!(wait_for_predictions(&h.store, "rotating-1", 3).await.len() >= 3);
    h.clock.advance(61 * SEC);
    h.ingest.tick();
    assert_eq!(h.metrics.devices_evicted.get(), 1);
    let kept = h.store.history("rotating-1", None, 100);
    assert_eq!(
        kept.iter()
            .map(|p| p.window_end_unix_nanos)
            .collect::<Vec<_>>(),
        vec![T0],
        "limits().idle_history_len = 1: the newest prediction stays for dashboards"
    );
}
