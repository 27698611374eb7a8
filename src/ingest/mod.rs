//! Protocol-neutral ingest core: validates sensor chunks, enforces limits and routes accepted samples into
//! per-device window assembly. gRPC, WebSocket and REST adapters all call [`Ingest`]; nothing here knows a
//! transport beyond its name for metrics.

use std::sync::Arc;

use crate::error::Error;

/// Which adapter a chunk or request came through (a metric label, nothing more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    WebSocket,
    Rest,
}

impl Transport {
    /// Metric label: "grpc" | "websocket" | "rest".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::WebSocket => "websocket",
            Self::Rest => "rest",
        }
    }
}

/// A run of consecutive samples of one modality from one device.
#[derive(Clone, Debug, PartialEq)]
pub struct SensorChunk {
    pub device_id: String,
    pub modality: String,
    /// Time of the first sample, unix nanoseconds; sample i is at start + i·1e9/rate.
    pub start_unix_nanos: i64,
    /// Row-major samples × channels.
    pub samples: Vec<f32>,
}

/// What happened to an accepted chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkReceipt {
    /// Samples (rows) taken into the window buffer (duplicates and late samples are not).
    pub samples_accepted: usize,
    /// Windows of this device that closed because of this chunk and went to the batcher.
    pub windows_closed: usize,
}

#[derive(Debug)]
struct IngestInner {}

/// Handle to the ingest core; cloning is cheap.
#[derive(Clone, Debug)]
pub struct Ingest {
    inner: Arc<IngestInner>,
}

impl Ingest {
    /// Validate (unknown modality, empty/bad device id, NaN/Inf, channel multiple, max chunk samples,
    /// max devices, per-device sample-rate sanity: > 10× the modality rate sustained ⇒ rate_limited) and
    /// accept a chunk. Every rejection is counted in metrics by transport and reason. Windows that close are
    /// handed to the batcher; their predictions appear in the PredictionStore and its broadcast feed.
    pub fn push(&self, transport: Transport, chunk: SensorChunk) -> Result<ChunkReceipt, Error> {
        let _ = (&self.inner, transport, chunk);
        todo!()
    }

    /// Optional declaration of the modalities a device will send (validates names, registers the device).
    pub fn hello(
        &self,
        transport: Transport,
        device_id: &str,
        modalities: &[String],
    ) -> Result<(), Error> {
        let _ = (transport, device_id, modalities);
        todo!()
    }
}
