//! Saturated predict throughput (windows/s) of the serving pipeline (bounded queue → batcher actor →
//! worker thread owning an ONNX Runtime session → per-request replies) against a bare ONNX Runtime session
//! running the same full batches with the same thread settings. The ratio is the pipeline's overhead.
//!
//! cargo bench --bench predict_throughput      (needs ORT_DYLIB_PATH or ./.venv with onnxruntime)

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossl_serve::app::ort_factory;
use crossl_serve::batch::{Batcher, BatcherConfig};
use crossl_serve::config::ServeArgs;
use crossl_serve::infer::{Batch, WorkerPool};
use crossl_serve::metrics::Metrics;
use crossl_serve::model::{Manifest, ModelInput};
use crossl_serve::store::PredictionStore;

const BATCH: usize = 32;
const INTRA_OP_THREADS: usize = 1;

fn args() -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossl-dsads");
    args.intra_op_threads = INTRA_OP_THREADS;
    args.workers = 1;
    args
}

/// A window with every modality present and non-trivial values.
fn window(manifest: &Manifest, seed: usize) -> ModelInput {
    let mut input = ModelInput::zeros(manifest);
    for (i, block) in input.modalities.iter_mut().enumerate() {
        for (j, v) in block.iter_mut().enumerate() {
            *v = ((seed * 31 + i * 7 + j) as f32 * 0.013).sin() * 9.0;
        }
    }
    input.present.iter_mut().for_each(|p| *p = true);
    input
}

fn throughput(c: &mut Criterion) {
    let args = args();
    let manifest = Arc::new(Manifest::load(&args.model).expect("bundled model"));
    let mut group = c.benchmark_group("predict_throughput");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(8));

    // Bare session: the same full batch, run back to back on this thread.
    let mut bare = ort_factory(&args, Arc::clone(&manifest))(0).expect("session");
    let inputs: Vec<ModelInput> = (0..BATCH).map(|i| window(&manifest, i)).collect();
    let batch = Batch::stack(&manifest, &inputs);
    group.bench_function(BenchmarkId::new("bare_ort_session", BATCH), |b| {
        b.iter(|| bare.run(&batch).expect("run"))
    });
    drop(bare);

    // Pipeline: BATCH concurrent callers per iteration through the batcher and one worker session.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (pool, batcher) = rt.block_on(async {
        let (mut pool, ready) =
            WorkerPool::start(1, ort_factory(&args, Arc::clone(&manifest)), Vec::new());
        ready.await.expect("worker ready");
        let metrics = Arc::new(Metrics::new(manifest.modalities.len(), BATCH));
        let (batcher, _actor) = Batcher::start(
            BatcherConfig {
                max_batch_size: BATCH,
                max_batch_delay: Duration::from_millis(2),
                queue_capacity: 4 * BATCH,
                one_shot_queue_capacity: 4 * BATCH,
                window_deadline: Duration::from_secs(60),
            },
            Arc::clone(&manifest),
            pool.sender().expect("sender"),
            PredictionStore::new(1, 1),
            metrics,
        );
        pool.close();
        (pool, batcher)
    });
    group.bench_function(BenchmarkId::new("batcher_and_runtime", BATCH), |b| {
        b.to_async(&rt).iter(|| {
            let batcher = batcher.clone();
            let inputs = inputs.clone();
            async move {
                let now = Instant::now();
                let calls = inputs.into_iter().map(|input| {
                    let batcher = batcher.clone();
                    async move { batcher.predict(input, now).await }
                });
                for answer in futures::future::join_all(calls).await {
                    answer.expect("prediction");
                }
            }
        })
    });
    group.finish();
    batcher.close();
    drop(batcher);
    drop(rt);
    pool.join();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
