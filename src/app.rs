//! Wiring: builds the [`Core`] (manifest → ingest → window → batch → infer → store) and serves the HTTP,
//! gRPC and metrics listeners until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::config::ServeArgs;
use crate::error::Error;
use crate::ingest::{Ingest, Transport};
use crate::metrics::Metrics;
use crate::model::Manifest;
use crate::store::{PredictionStore, Timings};

/// Everything a transport adapter needs; cloning is cheap.
#[derive(Clone, Debug)]
pub struct Core {
    pub manifest: Arc<Manifest>,
    pub ingest: Ingest,
    pub store: PredictionStore,
    pub metrics: Arc<Metrics>,
    /// API keys (REST, WebSocket and gRPC adapters); empty = auth off.
    /// Built with `ApiKeys::parse(&args.api_keys)` (an error there is a startup error).
    pub auth: crate::api::auth::ApiKeys,
    /// Message/frame limits and stream settings of the gRPC and WebSocket adapters.
    /// Built with `TransportLimits::from_args(&args, manifest.recommended_hop_seconds)`.
    pub limits: crate::config::TransportLimits,
}

/// Result of one complete window.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictOutput {
    pub label: String,
    pub class_index: usize,
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
    pub embedding: Vec<f32>,
    /// Modalities that were given, in manifest order.
    pub present: Vec<String>,
    pub timings: Timings,
}

impl Core {
    /// One complete window (REST /v1/predict, gRPC Predict): modality name → row-major samples×channels,
    /// exactly window_samples×channels values; omitted modality = absent. Goes through the same batcher.
    pub async fn predict(
        &self,
        transport: Transport,
        modalities: HashMap<String, Vec<f32>>,
    ) -> Result<PredictOutput, Error> {
        let _ = (transport, modalities);
        todo!()
    }

    /// Readiness (model loaded + warmed + EP known, not shutting down).
    pub fn is_ready(&self) -> bool {
        todo!()
    }
}

/// Runs the service until `shutdown` completes, then drains and returns.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = (args, shutdown);
    todo!()
}
