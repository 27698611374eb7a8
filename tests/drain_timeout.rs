//! Work dropped at the drain timeout is counted: with inference held, a shutdown whose queue cannot drain
//! within `--drain-timeout-ms` still ends, and the windows it gave up are in
//! `crossl_drain_dropped_total{what="windows"}`.

// The gate is a std Mutex because backends run on OS threads; the test holds it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

#[path = "support/gated_backend.rs"]
mod gated_backend;
mod streaming;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossl_serve::app::Hooks;
use streaming::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_still_queued_at_the_drain_timeout_are_dropped_and_counted() {
    let gate = Arc::new(Mutex::new(()));
    let mut ort_args = crossl_serve::config::ServeArgs::defaults();
    ort_args.model = repo_path("models/crossl-dsads");
    let hooks = Hooks {
        backend_factory: Some(gated_backend::gated_factory(&ort_args, Arc::clone(&gate))),
        ..Hooks::default()
    };
    let server = start_with_hooks(
        |a| {
            a.drain_timeout_ms = 300;
            a.max_batch_size = Some(1);
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
