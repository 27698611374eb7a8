//! The real ONNX Runtime backend behind a gate: every session run (warm-up included) waits while a test
//! holds the gate, so tests can hold inference still without any timing.
// Each test binary includes this file and uses part of it.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use crossl_serve::app::ort_factory;
use crossl_serve::config::ServeArgs;
use crossl_serve::error::Error;
use crossl_serve::infer::workers::BackendFactory;
use crossl_serve::infer::{Backend, Batch, BatchOutput};
use crossl_serve::model::Manifest;

/// Wraps the real backend; every run waits while the gate is held.
pub struct GatedBackend {
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

/// ONNX Runtime sessions for `args.model`, each behind `gate` (for `Hooks::backend_factory`).
pub fn gated_factory(args: &ServeArgs, gate: Arc<Mutex<()>>) -> BackendFactory {
    let manifest = Arc::new(Manifest::load(&args.model).expect("manifest"));
    let real = ort_factory(args, manifest);
    Arc::new(move |i| {
        Ok(Box::new(GatedBackend {
            inner: real(i)?,
            gate: Arc::clone(&gate),
        }) as Box<dyn Backend>)
    })
}
