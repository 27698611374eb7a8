//! Flags of `crossl-loadgen`.

use std::path::PathBuf;

/// Transport the simulated devices stream over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// gRPC `crossl.v1.Ingest/Stream`.
    Grpc,
    /// WebSocket `GET /v1/ws/devices/{id}`.
    Ws,
}

/// Chunk encoding on WebSockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WsFormat {
    Binary,
    Json,
}

/// Open-loop load generator for crossl-serve: N simulated devices stream a model's modalities at their
/// sample rates, ramped in steps; per step it reports what was sent, what came back and how fast, the
/// server's shed/rejected counters and its CPU and memory. Talks to 127.0.0.1 only; every run ends by
/// itself (steps × (connect + step + drain)).
#[derive(Clone, Debug, clap::Parser, serde::Serialize)]
#[command(name = "crossl-loadgen", version)]
pub struct LoadArgs {
    /// Model folder whose manifest (model.json) names the modalities, channels and rates to send.
    #[arg(long, default_value = "models/crossl-dsads")]
    pub model: PathBuf,

    /// grpc or ws.
    #[arg(long, value_enum, default_value = "grpc")]
    pub transport: Transport,

    /// WebSocket chunk encoding: binary (16-byte header + f32) or json.
    #[arg(long, value_enum, default_value = "binary")]
    pub ws_format: WsFormat,

    /// Server address (127.0.0.1 only). Default http://127.0.0.1:50051 (grpc) or http://127.0.0.1:8080 (ws).
    #[arg(long)]
    pub target: Option<String>,

    /// gRPC: devices per `Ingest/Stream` (1 = one stream per device; more = a gateway stream).
    #[arg(long, default_value_t = 1)]
    pub gateway_devices: usize,

    /// gRPC: streams per HTTP/2 connection (1 = a TCP connection per stream, like separate devices; the
    /// server allows 200 streams per connection).
    #[arg(long, default_value_t = 1)]
    pub streams_per_connection: usize,

    /// Device counts of the steps, comma-separated; each step connects that many fresh devices.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub steps: Vec<usize>,

    /// Seconds each step streams.
    #[arg(long, default_value_t = 30.0)]
    pub step_seconds: f64,

    /// After a step's last chunk, how long predictions are still collected before its connections close
    /// (more than the server's --stall-timeout-ms, so windows closed by a stall still count).
    #[arg(long, default_value_t = 3000)]
    pub drain_ms: u64,

    /// Pause between steps (after the connections closed).
    #[arg(long, default_value_t = 1000)]
    pub pause_ms: u64,

    /// Chunk length per modality in ms (a whole number of samples of every modality).
    #[arg(long, default_value_t = 200)]
    pub chunk_ms: u64,

    /// The server's hop in ms (default: the manifest's recommended hop), for the windows expected.
    #[arg(long)]
    pub hop_ms: Option<u64>,

    /// The server's `--window-phase` (where each device's windows end on the hop grid), for the windows
    /// expected.
    #[arg(long, value_enum, default_value = "per-device")]
    pub window_phase: crossl_serve::window::WindowPhase,

    /// Probability that a device leaves out one modality's chunk of one tick.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,

    /// Device clock − this machine's clock, ms (negative: the devices' clocks are behind).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub clock_offset_ms: i64,

    /// Each tick is sent up to this many ms late (uniform), below one chunk so a device's chunks stay in order.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,

    /// Send real DSADS samples from this folder (raw UCI layout) instead of synthetic ones.
    #[arg(long)]
    pub dsads: Option<PathBuf>,

    /// DSADS subjects the devices play (device i plays subject i mod count).
    #[arg(long, value_delimiter = ',', default_value = "p1")]
    pub dsads_subjects: Vec<String>,

    /// Device ids are `<prefix>-<i>` (the same ids in every step; a hello starts each step's timeline).
    #[arg(long, default_value = "loadgen")]
    pub device_prefix: String,

    /// API key with the `ingest` scope.
    #[arg(long, env = "CROSSL_LOADGEN_API_KEY")]
    pub api_key: Option<String>,

    /// The server's Prometheus endpoint, e.g. http://127.0.0.1:9090/metrics (shed/rejected deltas per step).
    #[arg(long)]
    pub metrics_url: Option<String>,

    /// The server's process id: CPU and RSS per step from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Ticks a connection may hold unsent (per device) before the schedule drops newer ones.
    #[arg(long, default_value_t = 5)]
    pub queue_ticks: usize,

    /// A tick handed out more than this many ms after its due time counts as late (the generator fell behind).
    #[arg(long, default_value_t = 50)]
    pub late_ms: u64,

    /// Runtime threads of the generator: 1 = a current-thread runtime (pin it with taskset).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Connections opened at once while a step connects its devices.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Seed of the dropout and jitter draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Also write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

impl LoadArgs {
    pub fn target(&self) -> String {
        self.target.clone().unwrap_or_else(|| {
            match self.transport {
                Transport::Grpc => "http://127.0.0.1:50051",
                Transport::Ws => "http://127.0.0.1:8080",
            }
            .to_string()
        })
    }

    /// Checks the flags against each other before anything connects.
    pub fn validate(&self) -> anyhow::Result<()> {
        crate::probe::ensure_loopback(&self.target())?;
        if let Some(url) = &self.metrics_url {
            crate::probe::ensure_loopback(url)?;
        }
        anyhow::ensure!(
            !self.steps.is_empty() && self.steps.iter().all(|&n| n > 0),
            "--steps needs device counts > 0"
        );
        anyhow::ensure!(
            self.step_seconds > 0.0 && self.step_seconds <= 3600.0,
            "--step-seconds must be in (0, 3600]"
        );
        anyhow::ensure!(
            self.chunk_ms > 0 && self.chunk_ms <= 10_000,
            "--chunk-ms must be in 1..=10000"
        );
        anyhow::ensure!(
            self.jitter_ms < self.chunk_ms,
            "--jitter-ms must be below --chunk-ms"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "--dropout is a probability in [0, 1)"
        );
        anyhow::ensure!(
            self.clock_offset_ms.abs() <= 3_600_000,
            "--clock-offset-ms beyond ±1 h"
        );
        anyhow::ensure!(self.gateway_devices >= 1, "--gateway-devices must be ≥ 1");
        anyhow::ensure!(
            (1..=200).contains(&self.streams_per_connection),
            "--streams-per-connection must be in 1..=200"
        );
        anyhow::ensure!(
            self.queue_ticks >= 1 && self.threads >= 1 && self.connect_concurrency >= 1,
            "--queue-ticks, --threads and --connect-concurrency must be ≥ 1"
        );
        anyhow::ensure!(
            self.drain_ms <= 60_000 && self.pause_ms <= 60_000,
            "--drain-ms and --pause-ms are at most 60000"
        );
        Ok(())
    }
}
