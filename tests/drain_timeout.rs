//! Work dropped at the drain timeout is counted: with inference held, a shutdown whose queue cannot drain
//! within `--drain-timeout-ms` still ends, and the windows it gave up are in
//! `crossl_drain_dropped_total{what="windows"}`.

// The gate is a std Mutex because backends run on OS threads; the test holds it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

mod streaming;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossl_serve::app::{Hooks, ort_factory};
use crossl_serve::error::Error;
use crossl_serve::infer::{Backend, Batch, BatchOutput};
use crossl_serve::model::Manifest;
use streaming::*;

/// Wraps the real backend; every run waits while the gate is held.
struct GatedBackend {
    inner: Box<dyn Backend>,
    gate: Arc<Mutex<()>>,
}

impl Backend for GatedBackend {
    fn run(&mut self, batch: &Batch) -> Result<BatchOutput, Error> {
        let _open = self
            .gate
            .lock()
            .map_err(|_| Error::Internal("gate poisoned".into()))?;
        self.inner.run(batch)
    }
    fn execution_provider(&self) -> &str {
        self.inner.execution_provider()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_still_queued_at_the_drain_timeout_are_dropped_and_counted() {
    let gate = Arc::new(Mutex::new(()));
    let factory_gate = Arc::clone(&gate);
    let model = repo_path("models/crossl-dsads");
    let mut ort_args = crossl_serve::config::ServeArgs::defaults();
    ort_args.model = model.clone();
    let real = ort_factory(
        &ort_args,
        Arc::new(Manifest::load(&model).expect("manifest")),
    );
    let hooks = Hooks {
        backend_factory: Some(Arc::new(move |i| {
            Ok(Box::new(GatedBackend {
                inner: real(i)?,
                gate: Arc::clone(&factory_gate),
            }) as Box<dyn Backend>)
        })),
        ..Hooks::default()
    };
    let server = start_with_hooks(
        |a| {
            a.drain_timeout_ms = 300;
            a.max_batch_size = 1;
        },
        hooks,
    )
    .await;
    let core = server.core.clone();
    // Inference stops; a device streams 8 s, so four full windows close and wait for it.
    let held = gate.lock().expect("gate");
    let (tx, _responses) = server.open_stream(256).await;
    tx.send(hello_request("drain-timeout", &[])).await.unwrap();
    let t0 = next_second(Duration::ZERO);
    let mut seq = 0;
    for k in 0..8 {
        for chunk in second_of_chunks(&core, "drain-timeout", t0, k) {
            seq += 1;
            tx.send(chunk_request(seq, chunk)).await.unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while core.metrics.windows_emitted.get() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("windows closed");
    let result = tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the shutdown ends at its drain timeout, not when inference resumes");
    assert!(result.is_ok(), "{result:?}");
    let dropped = core
        .metrics
        .drain_dropped
        .with_label_values(&["windows"])
        .get();
    assert!(
        dropped >= 1,
        "windows given up at the drain timeout are counted"
    );
    assert!(
        dropped <= core.metrics.windows_emitted.get(),
        "{dropped} dropped of {} emitted",
        core.metrics.windows_emitted.get()
    );
    drop(held);
}
