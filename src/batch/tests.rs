// The gate is a std Mutex because backends run on OS threads; tests hold it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::infer::{Backend, WorkerPool};
use crate::model::manifest::tests::two_modality_manifest;

use crate::infer::testing::EchoBackend;

struct Harness {
    batcher: Batcher,
    actor: tokio::task::JoinHandle<()>,
    pool: WorkerPool,
    store: PredictionStore,
    metrics: Arc<Metrics>,
    sizes: Arc<Mutex<Vec<usize>>>,
}

async fn harness(config: BatcherConfig, gate: Option<Arc<Mutex<()>>>) -> Harness {
    let manifest = Arc::new(two_modality_manifest());
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&sizes);
    let factory: crate::infer::workers::BackendFactory = Arc::new(move |_| {
        Ok(Box::new(EchoBackend {
            sizes: Arc::clone(&s),
            gate: gate.clone(),
        }) as Box<dyn Backend>)
    });
    let (pool, ready) = WorkerPool::start(1, factory, Vec::new());
    let info = ready.await.expect("pool ready");
    assert_eq!(info.execution_provider, "echo");
    let metrics = Arc::new(Metrics::new(2, config.max_batch_size));
    let store = PredictionStore::new(16, 16);
    let (batcher, actor) = Batcher::start(
        config,
        Arc::clone(&manifest),
        pool.sender().expect("pool sender"),
        store.clone(),
        Arc::clone(&metrics),
    );
    Harness {
        batcher,
        actor,
        pool,
        store,
        metrics,
        sizes,
    }
}

fn input(v: f32) -> ModelInput {
    let mut i = ModelInput::zeros(&two_modality_manifest());
    i.modalities[0][0] = v;
    i.present[0] = true;
    i
}

fn config(max_batch_size: usize, queue_capacity: usize) -> BatcherConfig {
    BatcherConfig {
        max_batch_size,
        max_batch_delay: Duration::from_millis(20),
        queue_capacity,
        one_shot_queue_capacity: queue_capacity,
        window_deadline: Duration::from_secs(30),
    }
}

fn stream_job(device: &str, end: i64) -> Job {
    Job {
        input: input(end as f32),
        reply: Reply::Store(StreamTarget {
            device_id: device.into(),
            window_end_unix_nanos: end,
        }),
        ready_at: Instant::now(),
        span: tracing::Span::none(),
    }
}

#[tokio::test]
async fn concurrent_callers_are_batched_and_each_gets_its_own_row() {
    let h = harness(config(4, 64), None).await;
    let calls = (0..10).map(|i| {
        let b = h.batcher.clone();
        async move { b.predict(input(i as f32), Instant::now()).await }
    });
    let answers = futures::future::join_all(calls).await;
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.expect("answer");
        assert_eq!(a.output.logits, vec![i as f32, 0.0, 0.0]);
        assert_eq!(a.output.embedding, vec![i as f32; 4]);
        assert_eq!(a.output.class_index(), 1);
        assert!(a.timings.batch_size >= 1 && a.timings.batch_size <= 4);
    }
    let sizes = h.sizes.lock().expect("sizes").clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert!(sizes.iter().all(|&s| s <= 4), "{sizes:?}");
    assert!(
        sizes.len() < 10,
        "windows that arrive together share a batch: {sizes:?}"
    );
    assert_eq!(h.metrics.predictions.get(), 10);
}

#[tokio::test]
async fn full_queue_sheds_with_resource_exhausted() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let h = harness(config(1, 2), Some(Arc::clone(&gate))).await;
    let mut waiting = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        let b = h.batcher.clone();
        let (tx, rx) = oneshot::channel();
        match b.submit(Job {
            input: input(i as f32),
            reply: Reply::Caller(tx),
            ready_at: Instant::now(),
            span: tracing::Span::none(),
        }) {
            Ok(()) => waiting.push(rx),
            Err(e) => {
                assert_eq!(e.reason(), "queue_full");
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(refused > 0, "a blocked worker must make the queue overflow");
    assert_eq!(
        h.metrics
            .requests_shed
            .with_label_values(&["queue_full"])
            .get(),
        refused,
        "one-shot refusals are requests shed"
    );
    assert_eq!(
        h.metrics
            .windows_shed
            .with_label_values(&["queue_full"])
            .get(),
        0,
        "no streaming window was shed"
    );
    drop(held);
    for rx in waiting {
        rx.await
            .expect("reply")
            .expect("accepted jobs still complete");
    }
}

#[tokio::test]
async fn windows_waiting_in_the_queue_past_their_deadline_are_dropped() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let mut c = config(1, 16);
    c.window_deadline = Duration::from_millis(50);
    let h = harness(c, Some(Arc::clone(&gate))).await;
    // The first window blocks the only worker; the others wait in the queue past the deadline.
    for end in 0..3 {
        h.batcher.submit(stream_job("d", end)).expect("queued");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let shed = || {
        h.metrics
            .windows_shed
            .with_label_values(&["deadline"])
            .get()
    };
    for _ in 0..500 {
        if shed() + h.metrics.predictions.get() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(shed() >= 1, "the last window waited past the deadline");
    assert_eq!(shed() + h.metrics.predictions.get(), 3);
    assert!(
        h.store
            .history("d", None, 10)
            .first()
            .is_some_and(|p| p.window_end_unix_nanos == 0),
        "the window that was running completes"
    );
}

#[tokio::test]
async fn a_window_whose_data_arrived_long_ago_is_not_shed_but_its_latency_counts_from_then() {
    let mut c = config(8, 16);
    c.window_deadline = Duration::from_millis(50);
    let h = harness(c, None).await;
    let mut feed = h.store.subscribe();
    let mut job = stream_job("stalled", 9);
    // A stalled device's window: closed now, its last chunk arrived 2 s ago.
    job.ready_at = Instant::now() - Duration::from_secs(2);
    h.batcher.submit(job).expect("queued");
    let p = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("prediction")
        .expect("feed");
    assert_eq!(p.window_end_unix_nanos, 9);
    assert!(p.timings.end_to_end_seconds >= 2.0, "{:?}", p.timings);
    assert_eq!(
        h.metrics
            .windows_shed
            .with_label_values(&["deadline"])
            .get(),
        0
    );
}

#[tokio::test]
async fn streaming_windows_go_to_the_store_and_inference_errors_are_counted() {
    let h = harness(config(8, 16), None).await;
    let mut feed = h.store.subscribe();
    let mut i = input(3.0);
    i.present[1] = true;
    h.batcher
        .submit(Job {
            input: i,
            reply: Reply::Store(StreamTarget {
                device_id: "dev-1".into(),
                window_end_unix_nanos: 42,
            }),
            ready_at: Instant::now(),
            span: tracing::Span::none(),
        })
        .expect("queued");
    let p = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("in time")
        .expect("prediction");
    assert_eq!(p.device_id, "dev-1");
    assert_eq!(p.window_end_unix_nanos, 42);
    assert_eq!(p.label, "b");
    assert_eq!(
        p.present_modalities.to_vec(),
        vec!["acc".to_string(), "gyro".to_string()]
    );
    assert_eq!(h.store.latest("dev-1").as_deref(), Some(&*p));

    let err = h
        .batcher
        .predict(input(-1.0), Instant::now())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "internal");
    assert_eq!(h.metrics.inference_errors.get(), 1);
}

#[tokio::test]
async fn close_drains_the_queue_then_refuses() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let Harness {
        batcher,
        actor,
        mut pool,
        ..
    } = harness(config(2, 16), Some(Arc::clone(&gate))).await;
    let pending: Vec<_> = (0..6)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { b.predict(input(i as f32), Instant::now()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    batcher.close();
    let refused = batcher
        .predict(input(9.0), Instant::now())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), "unavailable");
    drop(held);
    for p in pending {
        p.await
            .expect("task")
            .expect("queued work finishes after close");
    }
    actor.await.expect("actor exits once drained");
    pool.close();
    drop(batcher);
    tokio::task::spawn_blocking(move || pool.join())
        .await
        .expect("workers exit");
}

#[tokio::test]
async fn one_shot_load_never_sheds_streaming_windows() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let mut c = config(4, 8);
    c.one_shot_queue_capacity = 6;
    let h = harness(c, Some(Arc::clone(&gate))).await;
    // Fill the one-shot class until it refuses (a blocked worker holds what the actor took).
    let mut pending = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let b = h.batcher.clone();
        let rows = vec![input(i as f32), input(i as f32)];
        pending.push(tokio::spawn(async move {
            b.predict_rows(rows, Instant::now()).await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Streaming windows still find their whole queue free of one-shot rows.
    for end in 0..8 {
        h.batcher
            .submit(stream_job("dev", end))
            .expect("streaming has its own places");
    }
    drop(held);
    for p in pending {
        match p.await.expect("task") {
            Ok(answers) => assert_eq!(answers.len(), 2),
            Err(e) => {
                assert_eq!(e.reason(), "queue_full");
                assert!(e.to_string().contains("one-shot"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the one-shot class overflowed");
    assert_eq!(
        h.metrics
            .requests_shed
            .with_label_values(&["queue_full"])
            .get(),
        refused
    );
    assert_eq!(
        h.metrics
            .windows_shed
            .with_label_values(&["queue_full"])
            .get(),
        0
    );
    for _ in 0..500 {
        if h.store.history("dev", None, 100).len() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.store.history("dev", None, 100).len(), 8);
}

#[tokio::test]
async fn a_request_is_admitted_whole_or_refused_whole() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let mut c = config(1, 8);
    c.one_shot_queue_capacity = 4;
    let h = harness(c, Some(Arc::clone(&gate))).await;
    let err = h
        .batcher
        .predict_rows((0..5).map(|i| input(i as f32)).collect(), Instant::now())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "queue_full");
    assert_eq!(
        h.batcher.queued(),
        0,
        "no row of a refused request stays queued"
    );
    drop(held);
    let answers = h
        .batcher
        .predict_rows((0..4).map(|i| input(i as f32)).collect(), Instant::now())
        .await
        .expect("four rows fit");
    let firsts: Vec<f32> = answers.iter().map(|a| a.output.logits[0]).collect();
    assert_eq!(firsts, vec![0.0, 1.0, 2.0, 3.0], "answers in row order");
}

#[test]
fn batches_fill_with_streaming_first_after_the_one_shot_share() {
    let mut q = queues::Queues::new(64, 64);
    let now = Instant::now();
    let one_shot = |i: usize| Job {
        input: input(i as f32),
        reply: Reply::Caller(oneshot::channel().0),
        ready_at: now,
        span: tracing::Span::none(),
    };
    q.admit(Class::OneShot, (0..10).map(one_shot).collect(), now)
        .expect("one-shot");
    q.admit(
        Class::Streaming,
        (0..10).map(|i| stream_job("d", i)).collect(),
        now,
    )
    .expect("streaming");
    let classes = |b: &Vec<Queued>| {
        b.iter()
            .filter(|q| q.job.reply.class() == Class::OneShot)
            .count()
    };
    // 8 slots, share 2: two one-shot rows, six streaming windows.
    let (mut batch, mut os) = (Vec::new(), 0);
    assert_eq!(q.take(&mut batch, &mut os, 8, 2), 8);
    assert_eq!((classes(&batch), os), (2, 2));
    // Next batch: the last four streaming windows, then one-shot rows fill the rest.
    let (mut batch, mut os) = (Vec::new(), 0);
    assert_eq!(q.take(&mut batch, &mut os, 8, 2), 8);
    assert_eq!(classes(&batch), 4);
    // A top-up of a batch that already holds its share takes streaming first.
    q.admit(
        Class::Streaming,
        (0..3).map(|i| stream_job("d", i)).collect(),
        now,
    )
    .expect("streaming");
    let (mut batch, mut os) = (Vec::new(), 2);
    assert_eq!(q.take(&mut batch, &mut os, 4, 2), 4);
    assert_eq!(
        classes(&batch),
        1,
        "three streaming windows, then one one-shot row"
    );
    q.close();
    assert_eq!(
        q.admit(Class::Streaming, vec![stream_job("d", 9)], now),
        Err(queues::Refusal::Closed)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn every_job_is_answered_once_within_the_batch_limit(
        jobs in 1usize..40,
        max_batch in 1usize..9,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        rt.block_on(async {
            let mut c = config(max_batch, 64);
            c.max_batch_delay = Duration::from_millis(1);
            let h = harness(c, None).await;
            let calls = (0..jobs).map(|i| {
                let b = h.batcher.clone();
                async move { b.predict(input(i as f32), Instant::now()).await }
            });
            let answers = futures::future::join_all(calls).await;
            for (i, a) in answers.into_iter().enumerate() {
                assert_eq!(a.expect("answer").output.logits[0], i as f32);
            }
            let sizes = h.sizes.lock().expect("sizes").clone();
            assert_eq!(sizes.iter().sum::<usize>(), jobs);
            assert!(sizes.iter().all(|&s| s >= 1 && s <= max_batch), "{sizes:?}");
            drop(h.actor);
        });
    }
}

#[tokio::test]
async fn queue_depth_gauge_follows_the_queues_and_predictions_are_counted_by_class() {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().expect("gate");
    let h = harness(config(1, 64), Some(Arc::clone(&gate))).await;
    let depth = |class: &str| h.metrics.queue_depth.with_label_values(&[class]).get();
    assert_eq!(
        h.metrics
            .predictions_by_class
            .with_label_values(&["a"])
            .get(),
        0,
        "every class of the manifest exists before its first prediction"
    );
    for i in 0..8 {
        h.batcher.submit(stream_job("d", i)).expect("queued");
    }
    // The worker holds at most a batch or two behind the gate; the rest waits in the streaming queue.
    let mut seen = 0;
    for _ in 0..500 {
        seen = depth("streaming");
        if seen > 0 && seen as usize == h.batcher.queued() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen > 0, "blocked worker: windows wait in the queue");
    assert_eq!(seen as usize, h.batcher.queued());
    assert_eq!(depth("one_shot"), 0);
    drop(held);
    for _ in 0..500 {
        if h.metrics.predictions.get() == 8 && depth("streaming") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(depth("streaming"), 0, "drained queue reads zero");
    assert_eq!(h.metrics.predictions.get(), 8);
    // EchoBackend's logits put the maximum at index 1: class "b" of the two-modality manifest.
    assert_eq!(
        h.metrics
            .predictions_by_class
            .with_label_values(&["b"])
            .get(),
        8
    );
}
