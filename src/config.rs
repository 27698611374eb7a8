//! Command-line / environment configuration of `crossl-serve serve`. Every flag has an env var
//! (`CROSSL_*`) and a documented default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which ONNX Runtime execution provider the sessions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderChoice {
    /// CPU only.
    Cpu,
    /// CUDA; a startup error when it cannot be used.
    Cuda,
    /// CUDA when it can be used, else CPU (logged and reported, never silent).
    Auto,
}

/// Flags of `crossl-serve serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Model folder holding model.json + model.onnx (see docs/model-contract.md).
    #[arg(long, env = "CROSSL_MODEL", default_value = "models/crossl-dsads")]
    pub model: PathBuf,

    /// ONNX Runtime shared library (libonnxruntime.so). Unset: the first
    /// `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*` under the working directory.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib_path: Option<PathBuf>,

    /// HTTP listener: REST API, KServe v2, WebSocket, health, OpenAPI.
    #[arg(long, env = "CROSSL_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// gRPC listener.
    #[arg(long, env = "CROSSL_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Prometheus `/metrics` listener (kept off the public port).
    #[arg(long, env = "CROSSL_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Execution provider: cpu, cuda (error if unavailable) or auto (cuda, else cpu, reported).
    #[arg(
        long,
        env = "CROSSL_EXECUTION_PROVIDER",
        value_enum,
        default_value = "cpu"
    )]
    pub execution_provider: ExecutionProviderChoice,

    /// Inference worker threads; each owns one ONNX Runtime session.
    #[arg(long, env = "CROSSL_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Intra-op threads per session (0 = ONNX Runtime's default).
    #[arg(long, env = "CROSSL_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Largest batch handed to a session. Unset: 4 with `--execution-provider cpu`, 256 with cuda or
    /// auto. On a CPU core a small model runs fastest per window at small batches (its activations stay
    /// in cache): the bundled model does 854 windows/s at batch 4 and 706 at batch 32 on one core, and the
    /// service at saturation 405 against 299 predictions/s (docs/benchmarks.md). A GPU needs large ones.
    /// `auto` keeps 256 when it falls back to CPU (the choice is made before the session exists): set
    /// this flag with `auto` on machines that may have no GPU.
    #[arg(long, env = "CROSSL_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,

    /// How long the batcher waits for more windows after the first one of a batch, in milliseconds.
    #[arg(long, env = "CROSSL_MAX_BATCH_DELAY_MS", default_value_t = 3)]
    pub max_batch_delay_ms: u64,

    /// Capacity of the streaming window queue in front of the batcher; a full queue sheds new windows.
    /// One-shot requests have their own queue (--predict-queue-capacity) and never take these places.
    /// The default, 256 windows, is about 0.3–0.5 s of work for one CPU core with the bundled model, so a
    /// saturated server sheds rather than answering every window near the 2-s deadline (and holds 5.6 MiB
    /// of queued input, not 23 MiB at 1,024). Raise it for a faster execution provider.
    #[arg(long, env = "CROSSL_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,

    /// Capacity, in rows, of the one-shot queue (/v1/predict, /v1/embed, OIP infer, gRPC Predict); a
    /// request that does not fit whole is refused with 429. At least --max-request-rows.
    #[arg(long, env = "CROSSL_PREDICT_QUEUE_CAPACITY", default_value_t = 256)]
    pub predict_queue_capacity: usize,

    /// Most rows (windows) in one one-shot request (OIP infer batch size).
    #[arg(long, env = "CROSSL_MAX_REQUEST_ROWS", default_value_t = 64)]
    pub max_request_rows: usize,

    /// Most one-shot requests one client (API key; peer IP when auth is off) may have in flight; more are
    /// refused with 429. 0 = no limit.
    #[arg(long, env = "CROSSL_MAX_REQUESTS_PER_CLIENT", default_value_t = 4)]
    pub max_requests_per_client: usize,

    /// Windows waiting longer than this (ms) before their batch runs are dropped.
    #[arg(long, env = "CROSSL_WINDOW_DEADLINE_MS", default_value_t = 2000)]
    pub window_deadline_ms: u64,

    /// Warm-up runs per session before the service reports ready.
    #[arg(long, env = "CROSSL_WARMUP_RUNS", default_value_t = 2)]
    pub warmup_runs: usize,

    /// Hop between streaming windows in milliseconds (default: the manifest's recommended_hop_seconds).
    #[arg(long, env = "CROSSL_HOP_MS")]
    pub hop_ms: Option<u64>,

    /// Bounded out-of-orderness (ms, device time): a device's watermark trails the newest sample it has
    /// sent by this much, and a window closes once the watermark passes its end, even if a modality is
    /// still missing data. (Formerly `--lateness-ms`, which compared device time with the server clock.)
    #[arg(
        long,
        alias = "lateness-ms",
        env = "CROSSL_OUT_OF_ORDERNESS_MS",
        default_value_t = 2000
    )]
    pub out_of_orderness_ms: u64,

    /// Where devices' windows end on the hop grid: `per-device` spreads them over the hop by a phase derived
    /// from the device id (so inference does not arrive in one burst per hop); `aligned` puts every device's
    /// window ends on multiples of the hop since the epoch.
    #[arg(
        long,
        env = "CROSSL_WINDOW_PHASE",
        value_enum,
        default_value = "per-device"
    )]
    pub window_phase: crate::window::WindowPhase,

    /// A device that has sent no chunk for this long (ms, server clock since the last arrival) is stalled:
    /// every window its data reaches closes.
    #[arg(long, env = "CROSSL_STALL_TIMEOUT_MS", default_value_t = 2000)]
    pub stall_timeout_ms: u64,

    /// Fraction of a modality's window grid that must be covered for it to count as present.
    #[arg(long, env = "CROSSL_MIN_COVERAGE", default_value_t = 0.8)]
    pub min_coverage: f64,

    /// Gaps up to this many sample periods between received samples are filled by linear interpolation.
    #[arg(long, env = "CROSSL_MAX_GAP_SAMPLES", default_value_t = 2.0)]
    pub max_gap_samples: f64,

    /// A modality not heard from for this long (ms) stops holding windows open.
    #[arg(long, env = "CROSSL_MODALITY_STALE_MS", default_value_t = 5000)]
    pub modality_stale_ms: u64,

    /// Devices silent for this long (seconds) are evicted.
    #[arg(long, env = "CROSSL_DEVICE_IDLE_TIMEOUT_S", default_value_t = 300)]
    pub device_idle_timeout_s: u64,

    /// A device's stored predictions are kept this long (seconds) after its latest one was stored (server
    /// clock, whatever the device's own clock says), also for devices that were evicted as idle (so
    /// dashboards still see a device's last predictions).
    #[arg(long, env = "CROSSL_PREDICTION_RETENTION_S", default_value_t = 3600)]
    pub prediction_retention_s: u64,

    /// A device registered by a hello or an open WebSocket that has sent no data is forgotten after this
    /// long (seconds); such devices do not hold one of --max-devices (they sit in a separate set of at most
    /// --max-devices silent devices).
    #[arg(long, env = "CROSSL_HELLO_TIMEOUT_S", default_value_t = 10)]
    pub hello_timeout_s: u64,

    /// Most devices sending data at once; new ones beyond it are refused (max_devices). A device takes a
    /// slot with its first chunk, not with its hello. The prediction store keeps at most this many devices
    /// too (the least recently updated one is forgotten first).
    #[arg(long, env = "CROSSL_MAX_DEVICES", default_value_t = 10_000)]
    pub max_devices: usize,

    /// Most samples (rows) in one chunk.
    #[arg(long, env = "CROSSL_MAX_CHUNK_SAMPLES", default_value_t = 4096)]
    pub max_chunk_samples: usize,

    /// A device sending faster than this multiple of a modality's rate (sustained) is rate-limited.
    #[arg(long, env = "CROSSL_RATE_LIMIT_FACTOR", default_value_t = 10.0)]
    pub rate_limit_factor: f64,

    /// Sanity bound only (windows never compare device time with the server clock): chunks whose start is
    /// further than this (seconds) from the server clock are refused (bad_timestamp).
    #[arg(long, env = "CROSSL_MAX_CLOCK_SKEW_S", default_value_t = 86_400)]
    pub max_clock_skew_s: u64,

    /// Period of the background task that closes the windows of stalled devices and evicts idle ones (ms).
    #[arg(long, env = "CROSSL_TICK_MS", default_value_t = 50)]
    pub tick_ms: u64,

    /// Largest HTTP request body in bytes.
    #[arg(long, env = "CROSSL_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// A client must send a request's complete headers within this long (ms) of connecting or of its
    /// previous request, else the HTTP connection is closed (slowloris guard).
    #[arg(long, env = "CROSSL_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,

    /// Most open HTTP connections (WebSockets included); a connection beyond it is closed at once and
    /// counted. Keep it above --max-devices when devices stream over WebSocket.
    #[arg(long, env = "CROSSL_HTTP_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub http_max_connections: usize,

    /// Most HTTP requests being handled at once (a WebSocket counts only while upgrading); more are
    /// answered 503 at once.
    #[arg(long, env = "CROSSL_HTTP_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub http_max_in_flight: usize,

    /// Predictions kept per device for `/v1/devices/{id}/predictions`.
    #[arg(long, env = "CROSSL_HISTORY_LEN", default_value_t = 256)]
    pub history_len: usize,

    /// Predictions kept of a device evicted as idle (`--device-idle-timeout-s`), for the rest of
    /// `--prediction-retention-s`: its newest ones, so devices that come and go (rotating ids) cost little.
    #[arg(long, env = "CROSSL_IDLE_HISTORY_LEN", default_value_t = 8)]
    pub idle_history_len: usize,

    /// Capacity of the live prediction feed; slower subscribers skip (and count) what they missed.
    #[arg(long, env = "CROSSL_FEED_CAPACITY", default_value_t = 4096)]
    pub feed_capacity: usize,

    /// Where shared device state lives: `memory` (this process only; nothing else needed) or a Redis URL
    /// (`redis://[:password@]host:port[/db]`; TLS `rediss://` is not built in) shared by every replica, so any replica
    /// answers for any device (latest prediction, history, the device registry, the live feeds).
    #[arg(long, env = "CROSSL_STORE", default_value = "memory")]
    pub store: String,

    /// This replica's name in the shared device registry (`held_by`). Empty: the HOSTNAME environment
    /// variable (the pod name on Kubernetes), else a random id.
    #[arg(long, env = "CROSSL_REPLICA_ID", default_value = "")]
    pub replica_id: String,

    /// How often (ms) a replica refreshes the shared registry entries of the devices it holds; an entry
    /// not refreshed for 3 periods is shown as `stale` with `held_by: null` (the replica is gone).
    #[arg(long, env = "CROSSL_STORE_HEARTBEAT_MS", default_value_t = 1000)]
    pub store_heartbeat_ms: u64,

    /// A read from the shared store that takes longer than this (ms) answers 503 (store unavailable).
    #[arg(long, env = "CROSSL_STORE_TIMEOUT_MS", default_value_t = 1000)]
    pub store_timeout_ms: u64,

    /// Writes (predictions, registry updates) queued for the shared store; beyond it writes are dropped
    /// and counted (`crossl_store_writes_dropped_total`), never making ingest wait.
    #[arg(long, env = "CROSSL_STORE_WRITE_QUEUE", default_value_t = 16_384)]
    pub store_write_queue: usize,

    /// Most labelled spans one device keeps (`POST /v1/devices/{id}/labels`); a span beyond it is refused
    /// (409 `label_limit`) until `DELETE /v1/devices/{id}/labels`.
    #[arg(long, env = "CROSSL_LABEL_MAX_SPANS", default_value_t = 64)]
    pub label_max_spans: usize,

    /// Most labelled windows (embeddings) one device's personal head is fitted on; a span that would take
    /// the device beyond it is refused (409 `label_limit`). 512 windows of a 32-value embedding are
    /// ≈ 64 KiB per device.
    #[arg(long, env = "CROSSL_LABEL_MAX_WINDOWS", default_value_t = 512)]
    pub label_max_windows: usize,

    /// Temperature of the personal head's softmax over negative squared distances between the
    /// L2-normalised window embedding and the device's class means (docs/protocol.md, personalisation).
    #[arg(long, env = "CROSSL_PERSONAL_TEMPERATURE", default_value_t = 0.05)]
    pub personal_temperature: f32,

    /// Squared distance (on the unit sphere, 0…4) at which a window is as likely to belong to a class the
    /// device never labelled as to a labelled one: the score of the "unlabelled classes" option, whose
    /// probability mass goes to those classes in the general model's proportions.
    #[arg(long, env = "CROSSL_PERSONAL_REJECT_DISTANCE", default_value_t = 0.25)]
    pub personal_reject_distance: f32,

    /// How a device's personal answer uses the general model's: `replace` (the head decides near a
    /// labelled class mean; the general model shares out the classes never labelled) or `product` (the
    /// two distributions multiplied, so a confident general model can outvote the user's labels).
    #[arg(long, env = "CROSSL_PERSONAL_COMBINE", value_enum, default_value_t = crate::store::personal::Combine::Replace)]
    pub personal_combine: crate::store::personal::Combine,

    /// How long shutdown waits for queued windows and in-flight batches (ms).
    #[arg(long, env = "CROSSL_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// Log as JSON lines instead of human-readable text (filter with RUST_LOG).
    #[arg(long, env = "CROSSL_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    // ---- ingest owner section (auth, TLS, frame sizes): add flags below this line ----
    /// API key and its scopes, `KEY:scope1,scope2` with scopes `ingest` and `read`; repeatable. The env var
    /// takes a `;`-separated list (`k1:ingest;k2:read,ingest`). No key configured = authentication off.
    /// A third part binds the key to device ids matching a glob (`*`, `?`): `k1:ingest,read:ward-3-*` may
    /// only send data for, and read, devices `ward-3-…`. A key without a glob may use every device.
    #[arg(
        long = "api-key",
        env = "CROSSL_API_KEYS",
        value_name = "KEY:SCOPES[:DEVICE_GLOB]"
    )]
    pub api_keys: Vec<String>,

    /// Most distinct devices one gRPC stream (a gateway) carries at once; further hellos and chunks for
    /// new devices are refused (`max_devices_per_stream`). 0 = no cap.
    #[arg(long, env = "CROSSL_MAX_DEVICES_PER_STREAM", default_value_t = 1000)]
    pub max_devices_per_stream: usize,

    /// Most distinct devices the open streams of one API key carry at once (`max_devices_per_key`).
    /// 0 = no cap; never applies when auth is off.
    #[arg(long, env = "CROSSL_MAX_DEVICES_PER_KEY", default_value_t = 0)]
    pub max_devices_per_key: usize,

    /// PEM certificate chain; with --tls-key, the HTTP/WebSocket and gRPC listeners serve TLS only.
    #[arg(long, env = "CROSSL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, env = "CROSSL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest gRPC message in bytes, either direction; a larger request ends its call with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CROSSL_GRPC_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub grpc_max_message_bytes: usize,

    /// Largest WebSocket frame/message in bytes; a larger one closes the socket with code 1009.
    #[arg(long, env = "CROSSL_WS_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub ws_max_frame_bytes: usize,

    /// Read buffer of each WebSocket connection, bytes. Every connection holds (and touches) this much
    /// for its whole life, so it is the largest per-device cost at scale: tungstenite's default of 128 KiB
    /// made a WebSocket device cost ≈ 230 KiB of RSS. Larger frames still arrive whole (the buffer grows
    /// for them, up to --ws-max-frame-bytes); a small buffer only means more reads for bursts.
    #[arg(long, env = "CROSSL_WS_READ_BUFFER_BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(256..))]
    pub ws_read_buffer_bytes: u32,

    /// After a gRPC client finishes sending, its stream keeps delivering predictions this long (ms) for the
    /// windows still closing, then ends.
    #[arg(long, env = "CROSSL_STREAM_LINGER_MS", default_value_t = 2000)]
    pub stream_linger_ms: u64,
}

impl ServeArgs {
    /// `--max-batch-size`, or the execution provider's default.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
            .unwrap_or(match self.execution_provider {
                ExecutionProviderChoice::Cpu => 4,
                ExecutionProviderChoice::Cuda | ExecutionProviderChoice::Auto => 256,
            })
    }

    /// Defaults for every flag not set through its env var (tests start from this).
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        Wrapper::parse_from(["crossl-serve"]).args
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_millis(self.max_batch_delay_ms)
    }
    pub fn window_deadline(&self) -> Duration {
        Duration::from_millis(self.window_deadline_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Where shared device state lives (`--store`).
    pub fn store_backend(&self) -> anyhow::Result<StoreBackend> {
        let store = self.store.trim();
        if store.is_empty() || store == "memory" {
            Ok(StoreBackend::Memory)
        } else if ["redis://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| store.starts_with(scheme))
        {
            Ok(StoreBackend::Redis(store.to_string()))
        } else {
            anyhow::bail!(
                "--store must be `memory` or a Redis URL (redis://host:port), got {store:?}"
            )
        }
    }
}

/// `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// This process only.
    Memory,
    /// Shared by every replica through Redis at this URL.
    Redis(String),
}

/// Limits and settings the streaming adapters (gRPC, WebSocket) need at run time.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    pub grpc_max_message_bytes: usize,
    pub ws_max_frame_bytes: usize,
    pub ws_read_buffer_bytes: usize,
    pub stream_linger: Duration,
    /// Reported to WebSocket clients (the core enforces it).
    pub max_chunk_samples: usize,
    /// Hop between streaming windows, reported to WebSocket clients.
    pub hop_seconds: f64,
}

impl TransportLimits {
    /// From the flags; `manifest_hop_seconds` applies when `--hop-ms` is not set.
    pub fn from_args(args: &ServeArgs, manifest_hop_seconds: f64) -> Self {
        Self {
            grpc_max_message_bytes: args.grpc_max_message_bytes,
            ws_max_frame_bytes: args.ws_max_frame_bytes,
            ws_read_buffer_bytes: args.ws_read_buffer_bytes as usize,
            stream_linger: Duration::from_millis(args.stream_linger_ms),
            max_chunk_samples: args.max_chunk_samples,
            hop_seconds: args
                .hop_ms
                .map_or(manifest_hop_seconds, |ms| ms as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn the_personal_combine_rule_and_the_websocket_read_buffer_parse_and_are_checked() {
        let defaults = ServeArgs::defaults();
        assert_eq!(
            defaults.personal_combine,
            crate::store::personal::Combine::Replace
        );
        assert_eq!(defaults.ws_read_buffer_bytes, 4096);
        let args = Cli::try_parse_from([
            "serve",
            "--personal-combine",
            "product",
            "--ws-read-buffer-bytes",
            "65536",
        ])
        .expect("valid")
        .args;
        assert_eq!(
            args.personal_combine,
            crate::store::personal::Combine::Product
        );
        assert_eq!(args.ws_read_buffer_bytes, 65536);
        for bad in [
            ["serve", "--personal-combine", "average"],
            ["serve", "--ws-read-buffer-bytes", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_batch_size_defaults_per_execution_provider_and_a_flag_overrides_it() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).expect("valid").args;
        assert_eq!(parse(&["serve"]).max_batch_size(), 4);
        for ep in ["cuda", "auto"] {
            assert_eq!(
                parse(&["serve", "--execution-provider", ep]).max_batch_size(),
                256
            );
        }
        let set = parse(&[
            "serve",
            "--execution-provider",
            "cuda",
            "--max-batch-size",
            "32",
        ]);
        assert_eq!(set.max_batch_size(), 32);
    }
}
