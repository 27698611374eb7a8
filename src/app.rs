//! Wiring: builds the [`Core`] (manifest → ingest → window → batch → infer → store), serves the HTTP,
//! gRPC and metrics listeners, and runs the shutdown sequence (not ready → refuse new data → flush open
//! windows → drain the queue and the workers → deliver the predictions on the still-open streams → end
//! the streams with a status → close listeners).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::batch::{Batcher, BatcherConfig};
use crate::config::ServeArgs;
use crate::error::Error;
use crate::infer::ort_backend::{OrtBackend, OrtOptions};
use crate::infer::workers::BackendFactory;
use crate::infer::{Backend, Batch, RuntimeInfo, WorkerPool};
use crate::ingest::{Ingest, IngestLimits, Transport};
use crate::metrics::Metrics;
use crate::model::{Manifest, ModelInput};
use crate::store::{PredictionStore, Timings};
use crate::window::{Clock, SystemClock, WindowPolicy};

/// Lifecycle phase of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Listening; sessions loading or warming up.
    Starting,
    Ready,
    /// Draining after a shutdown signal.
    ShuttingDown,
    /// Start-up failed (e.g. the requested execution provider is unavailable).
    Failed,
}

/// What readiness reports.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub phase: Phase,
    /// Known once every session is warmed up.
    pub runtime: Option<RuntimeInfo>,
    /// Why start-up failed.
    pub error: Option<String>,
}

/// Everything a transport adapter needs; cloning is cheap.
#[derive(Clone, Debug)]
pub struct Core {
    pub manifest: Arc<Manifest>,
    pub ingest: Ingest,
    pub store: PredictionStore,
    /// What the read paths answer from (REST latest/history/devices, gRPC Latest/Watch, the WebSocket
    /// feed): this replica's store, or state shared by every replica (`--store redis://…`).
    pub state: Arc<dyn crate::store::StateStore>,
    pub metrics: Arc<Metrics>,
    /// API keys (REST, WebSocket and gRPC adapters); empty = auth off.
    pub auth: crate::api::auth::ApiKeys,
    /// Per-device routing of the live feed for device streams (gRPC Stream, WebSocket device sockets).
    /// Built with `DeviceFeeds::start(&store, metrics.clone())` (spawns its dispatcher task).
    pub feeds: crate::api::feed::DeviceFeeds,
    /// Which open stream owns each device (takeover policy, per-stream and per-key device caps).
    pub owners: crate::ingest::owners::DeviceOwners,
    /// Message/frame limits and stream settings of the gRPC and WebSocket adapters.
    pub limits: crate::config::TransportLimits,
    pub batcher: Batcher,
    /// Per-client concurrency limit of one-shot requests.
    pub clients: crate::batch::ClientLimiter,
    pub health: watch::Receiver<Health>,
    /// The configuration the service runs with.
    pub args: Arc<ServeArgs>,
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
        let arrived = Instant::now();
        self.metrics
            .predict_requests
            .with_label_values(&[transport.as_str()])
            .inc();
        let result = async {
            let input = ModelInput::from_samples_major(
                &self.manifest,
                modalities.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            )?;
            self.predict_input(input, arrived).await
        }
        .await;
        if let Err(e) = &result {
            self.metrics
                .predict_rejected
                .with_label_values(&[transport.as_str(), e.reason()])
                .inc();
        }
        result
    }

    /// Runs an already-shaped window (the KServe v2 path shapes its own inputs).
    pub async fn predict_input(
        &self,
        input: ModelInput,
        arrived: Instant,
    ) -> Result<PredictOutput, Error> {
        if !self.is_ready() {
            return Err(self.not_ready_error());
        }
        let present = self
            .manifest
            .modalities
            .iter()
            .zip(&input.present)
            .filter(|(_, p)| **p)
            .map(|(m, _)| m.name.clone())
            .collect();
        let answer = self.batcher.predict(input, arrived).await?;
        let class_index = answer.output.class_index();
        Ok(PredictOutput {
            label: self.manifest.class_name(class_index),
            class_index,
            logits: answer.output.logits,
            probabilities: answer.output.probabilities,
            embedding: answer.output.embedding,
            present,
            timings: answer.timings,
        })
    }

    /// Runs the rows of one one-shot request (the OIP infer path): admitted to the one-shot queue whole
    /// or refused whole, answers in row order.
    pub async fn predict_rows(
        &self,
        inputs: Vec<ModelInput>,
        arrived: Instant,
    ) -> Result<Vec<crate::batch::Answer>, Error> {
        if !self.is_ready() {
            return Err(self.not_ready_error());
        }
        self.batcher.predict_rows(inputs, arrived).await
    }

    /// Readiness (model loaded + warmed + EP known, not shutting down).
    pub fn is_ready(&self) -> bool {
        self.health.borrow().phase == Phase::Ready
    }

    /// Current health snapshot.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    fn not_ready_error(&self) -> Error {
        match self.health.borrow().phase {
            Phase::Starting => {
                Error::Unavailable("the model is still loading or warming up".into())
            }
            Phase::ShuttingDown => Error::Unavailable("the server is shutting down".into()),
            Phase::Failed => Error::Unavailable("the model runtime failed to start".into()),
            Phase::Ready => Error::Internal("ready but refused".into()),
        }
    }
}

/// Test and benchmark hooks: a different backend or clock than production's.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Creates each worker's backend instead of an ONNX Runtime session.
    pub backend_factory: Option<BackendFactory>,
    /// Clock for window closing (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("backend_factory", &self.backend_factory.is_some())
            .field("clock", &self.clock)
            .finish()
    }
}

/// Window policy from the flags (hop defaults to the manifest's recommendation).
pub fn window_policy(args: &ServeArgs, manifest: &Manifest) -> WindowPolicy {
    let hop_nanos = match args.hop_ms {
        Some(ms) => ms as i64 * 1_000_000,
        None => (manifest.recommended_hop_seconds * 1e9).round() as i64,
    };
    WindowPolicy {
        hop_nanos: hop_nanos.max(1),
        out_of_orderness_nanos: args.out_of_orderness_ms as i64 * 1_000_000,
        stall_timeout_nanos: args.stall_timeout_ms as i64 * 1_000_000,
        phases: args.window_phase,
        phase_quantum_nanos: crate::window::phase_quantum(
            manifest.modalities.iter().map(|m| 1e9 / m.sample_rate_hz),
            hop_nanos.max(1),
        ),
        min_coverage: args.min_coverage,
        max_gap_samples: args.max_gap_samples,
        stale_nanos: args.modality_stale_ms as i64 * 1_000_000,
        ..WindowPolicy::default()
    }
}

/// The ONNX Runtime backend factory for the flags.
pub fn ort_factory(args: &ServeArgs, manifest: Arc<Manifest>) -> BackendFactory {
    let opts = OrtOptions {
        dylib: args.ort_dylib_path.clone(),
        execution_provider: args.execution_provider,
        intra_op_threads: args.intra_op_threads,
    };
    Arc::new(move |_| {
        Ok(Box::new(OrtBackend::load(Arc::clone(&manifest), &opts)?) as Box<dyn Backend>)
    })
}

/// Warm-up batches: one window and a full batch, every modality present (zeros), `runs` times each.
fn warmup_batches(manifest: &Manifest, max_batch: usize, runs: usize) -> Vec<Batch> {
    let mut input = ModelInput::zeros(manifest);
    input.present.iter_mut().for_each(|p| *p = true);
    let mut sizes = vec![1];
    if max_batch > 1 {
        sizes.push(max_batch);
    }
    (0..runs)
        .flat_map(|_| sizes.clone())
        .map(|n| Batch::stack(manifest, std::iter::repeat_n(&input, n)))
        .collect()
}

/// Parts of a built core that the service lifecycle drives.
struct Control {
    health: watch::Sender<Health>,
    pool: WorkerPool,
    actor: tokio::task::JoinHandle<()>,
}

/// Validates the flags that clap cannot.
fn check_args(args: &ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(
        args.max_batch_size() >= 1,
        "--max-batch-size must be at least 1"
    );
    anyhow::ensure!(
        args.queue_capacity >= 1,
        "--queue-capacity must be at least 1"
    );
    anyhow::ensure!(
        args.max_request_rows >= 1,
        "--max-request-rows must be at least 1"
    );
    anyhow::ensure!(
        args.predict_queue_capacity >= args.max_request_rows,
        "--predict-queue-capacity ({}) must hold at least one request of --max-request-rows ({})",
        args.predict_queue_capacity,
        args.max_request_rows
    );
    anyhow::ensure!(
        args.http_max_connections >= 1 && args.http_max_in_flight >= 1,
        "--http-max-connections and --http-max-in-flight must be at least 1"
    );
    anyhow::ensure!(
        args.min_coverage > 0.0 && args.min_coverage <= 1.0,
        "--min-coverage must be in (0, 1]"
    );
    anyhow::ensure!(
        args.max_gap_samples >= 0.0,
        "--max-gap-samples must be >= 0"
    );
    anyhow::ensure!(args.hop_ms != Some(0), "--hop-ms must be positive");
    anyhow::ensure!(args.tick_ms >= 1, "--tick-ms must be positive");
    anyhow::ensure!(
        args.personal_temperature > 0.0 && args.personal_temperature.is_finite(),
        "--personal-temperature must be positive"
    );
    anyhow::ensure!(
        (0.0..=4.0).contains(&args.personal_reject_distance),
        "--personal-reject-distance must be in [0, 4] (squared distance between unit vectors)"
    );
    anyhow::ensure!(
        args.label_max_spans >= 1 && args.label_max_windows >= 1,
        "--label-max-spans and --label-max-windows must be at least 1"
    );
    args.store_backend()?;
    anyhow::ensure!(
        args.store_heartbeat_ms >= 1 && args.store_timeout_ms >= 1,
        "--store-heartbeat-ms and --store-timeout-ms must be positive"
    );
    Ok(())
}

/// Builds the core and starts the workers (warm-up runs in the background).
fn build_core(
    args: ServeArgs,
    manifest: Arc<Manifest>,
    hooks: Hooks,
) -> anyhow::Result<(
    Core,
    Control,
    impl Future<Output = anyhow::Result<RuntimeInfo>> + Send + 'static,
)> {
    let auth = crate::api::auth::ApiKeys::parse(&args.api_keys)
        .map_err(|e| anyhow::anyhow!("--api-key: {e}"))?;
    let limits = crate::config::TransportLimits::from_args(&args, manifest.recommended_hop_seconds);
    let metrics = Arc::new(Metrics::new(
        manifest.modalities.len(),
        args.max_batch_size(),
    ));
    let names: Vec<&str> = manifest
        .modalities
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    metrics.preregister(&names);
    metrics.max_devices.set(args.max_devices as i64);
    let clock = hooks.clock.unwrap_or_else(|| Arc::new(SystemClock));
    // Retention counts from when a prediction was stored, on the same server clock the ingest ticks with.
    let store = PredictionStore::bounded(
        crate::store::StoreLimits {
            history_len: args.history_len,
            feed_capacity: args.feed_capacity,
            max_devices: args.max_devices,
        },
        Arc::clone(&clock),
        metrics.store_devices_evicted.clone(),
    )
    .with_personal(crate::store::PersonalHeads::new(
        manifest.classes.clone(),
        crate::store::personal::HeadParams {
            temperature: args.personal_temperature,
            reject_distance: args.personal_reject_distance,
            max_spans: args.label_max_spans,
            max_windows: args.label_max_windows,
            combine: args.personal_combine,
        },
        args.max_devices,
        metrics.personal_heads.clone(),
        metrics.personalized_predictions.clone(),
    ));
    let factory = hooks
        .backend_factory
        .unwrap_or_else(|| ort_factory(&args, Arc::clone(&manifest)));
    let warmup = warmup_batches(&manifest, args.max_batch_size(), args.warmup_runs);
    let (mut pool, ready) = WorkerPool::start(args.workers, factory, warmup);
    let (batcher, actor) = Batcher::start(
        BatcherConfig {
            max_batch_size: args.max_batch_size(),
            max_batch_delay: args.max_batch_delay(),
            queue_capacity: args.queue_capacity,
            one_shot_queue_capacity: args.predict_queue_capacity,
            window_deadline: args.window_deadline(),
        },
        Arc::clone(&manifest),
        pool.sender().context("worker pool has no sender")?,
        store.clone(),
        Arc::clone(&metrics),
    );
    // The batcher now holds the only sender: when it drains, the workers finish and exit.
    pool.close();
    let ingest = Ingest::new(
        Arc::clone(&manifest),
        window_policy(&args, &manifest),
        IngestLimits {
            max_devices: args.max_devices,
            max_chunk_samples: args.max_chunk_samples,
            rate_limit_factor: args.rate_limit_factor,
            rate_burst_seconds: 10.0,
            max_clock_skew_nanos: (args.max_clock_skew_s as i64).saturating_mul(1_000_000_000),
            device_idle_timeout_nanos: (args.device_idle_timeout_s as i64)
                .saturating_mul(1_000_000_000),
            hello_timeout_nanos: (args.hello_timeout_s as i64).saturating_mul(1_000_000_000),
            idle_history_len: args.idle_history_len,
            prediction_retention_nanos: (args.prediction_retention_s as i64)
                .saturating_mul(1_000_000_000),
        },
        batcher.clone(),
        store.clone(),
        Arc::clone(&metrics),
        Arc::clone(&clock),
    );
    let state = shared_state(&args, &store, &ingest, &metrics, clock)?;
    let (health_tx, health_rx) = watch::channel(Health {
        phase: Phase::Starting,
        runtime: None,
        error: None,
    });
    let feeds = crate::api::feed::DeviceFeeds::start(&store, Arc::clone(&metrics));
    let owners = crate::ingest::owners::DeviceOwners::new(crate::ingest::owners::OwnerLimits {
        max_devices_per_stream: args.max_devices_per_stream,
        max_devices_per_key: args.max_devices_per_key,
    });
    let clients =
        crate::batch::ClientLimiter::new(args.max_requests_per_client, Arc::clone(&metrics));
    let core = Core {
        manifest,
        ingest,
        store,
        state,
        metrics,
        auth,
        feeds,
        owners,
        limits,
        batcher,
        clients,
        health: health_rx,
        args: Arc::new(args),
    };
    Ok((
        core,
        Control {
            health: health_tx,
            pool,
            actor,
        },
        ready,
    ))
}

/// The read paths' state store (`--store`): this replica's, or shared on Redis.
fn shared_state(
    args: &ServeArgs,
    store: &PredictionStore,
    ingest: &Ingest,
    metrics: &Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn crate::store::StateStore>> {
    let replica_id = crate::store::state::resolve_replica_id(&args.replica_id);
    let local = crate::store::MemoryState::new(store.clone(), ingest.clone(), &replica_id);
    Ok(match args.store_backend()? {
        crate::config::StoreBackend::Memory => Arc::new(local),
        crate::config::StoreBackend::Redis(url) => {
            tracing::info!(
                store = %crate::store::redis_store::redact(&url),
                replica_id,
                "shared device state on Redis"
            );
            crate::store::redis_store::RedisState::start(
                local,
                crate::store::redis_store::RedisSettings {
                    url,
                    history_len: args.history_len.max(1),
                    retention: Duration::from_secs(args.prediction_retention_s.max(1)),
                    heartbeat: Duration::from_millis(args.store_heartbeat_ms),
                    timeout: Duration::from_millis(args.store_timeout_ms),
                    write_queue: args.store_write_queue,
                    feed_capacity: args.feed_capacity,
                },
                Arc::clone(metrics),
                clock,
            )?
        }
    })
}

/// After the drain deadline, how long streams still get to send their closing status before they are
/// counted as dropped and the listeners close.
const STREAM_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A running service (see [`launch`]).
#[derive(Debug)]
pub struct Service {
    pub core: Core,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Waits until the service is ready (Ok) or failed to start (Err).
    pub async fn ready(&self) -> anyhow::Result<()> {
        let mut rx = self.core.health.clone();
        let health = rx
            .wait_for(|h| h.phase != Phase::Starting)
            .await
            .context("the service stopped while starting")?
            .clone();
        match health.phase {
            Phase::Ready => Ok(()),
            _ => anyhow::bail!(
                "service did not become ready: {}",
                health.error.unwrap_or_default()
            ),
        }
    }

    /// Waits until the service has shut down; the error of a failed start-up comes out here.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the service task panicked")?
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Loads the model, binds the listeners and starts serving; returns once listening (not yet ready).
/// `shutdown` completing starts the graceful shutdown.
pub async fn launch(
    args: ServeArgs,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Service> {
    check_args(&args)?;
    let manifest = Arc::new(Manifest::load(&args.model)?);
    let http = bind(args.http_addr, "--http-addr").await?;
    let grpc = bind(args.grpc_addr, "--grpc-addr").await?;
    let metrics_listener = bind(args.metrics_addr, "--metrics-addr").await?;
    let (http_addr, grpc_addr, metrics_addr) = (
        http.local_addr()?,
        grpc.local_addr()?,
        metrics_listener.local_addr()?,
    );
    let tls = crate::api::tls::TlsIdentity::from_args(&args)?;
    let drain_timeout = args.drain_timeout();
    let tick = Duration::from_millis(args.tick_ms);
    let (core, control, ready) = build_core(args, manifest, hooks)?;
    tracing::info!(
        model = %core.manifest.name,
        version = %core.manifest.version,
        %http_addr, %grpc_addr, %metrics_addr,
        "listening; loading and warming up the model"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_limits = crate::api::listeners::HttpLimits::from_args(&core.args);
    let servers = vec![
        tokio::spawn(crate::api::listeners::serve_http(
            http,
            crate::api::http_app(core.clone()),
            tls.clone(),
            http_limits,
            Some(Arc::clone(&core.metrics)),
            stopped(stop_rx.clone()),
        )),
        tokio::spawn(crate::api::listeners::serve_grpc(
            grpc,
            crate::api::grpc::routes(core.clone()),
            tls,
            stopped(stop_rx.clone()),
        )),
        tokio::spawn(crate::api::listeners::serve_http(
            metrics_listener,
            crate::api::rest::metrics_app(core.clone()),
            None,
            http_limits,
            None,
            stopped(stop_rx.clone()),
        )),
    ];
    let ticker = {
        let ingest = core.ingest.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                // Walks every device: off the runtime's worker threads.
                let ingest = ingest.clone();
                let _ = tokio::task::spawn_blocking(move || ingest.tick()).await;
            }
        })
    };
    let task_core = core.clone();
    let task = tokio::spawn(async move {
        let core = task_core;
        let Control {
            health,
            pool,
            actor,
        } = control;
        tokio::pin!(shutdown);
        let startup = tokio::select! {
            r = ready => Some(r),
            () = &mut shutdown => None,
        };
        let mut result = Ok(());
        match startup {
            Some(Ok(mut runtime)) => {
                runtime.requested_execution_provider =
                    Some(format!("{:?}", core.args.execution_provider).to_lowercase());
                core.metrics
                    .build_info
                    .with_label_values(&[
                        env!("CARGO_PKG_VERSION"),
                        &runtime.execution_provider,
                        &core.manifest.name,
                    ])
                    .set(1);
                core.metrics.ready.set(1);
                tracing::info!(
                    execution_provider = %runtime.execution_provider,
                    requested = ?runtime.requested_execution_provider,
                    sessions = runtime.sessions,
                    "ready"
                );
                health.send_modify(|h| {
                    h.phase = Phase::Ready;
                    h.runtime = Some(runtime);
                });
                shutdown.await;
            }
            Some(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "start-up failed");
                health.send_modify(|h| {
                    h.phase = Phase::Failed;
                    h.error = Some(format!("{e:#}"));
                });
                result = Err(e);
            }
            None => tracing::info!("shutdown requested during start-up"),
        }
        // 1. Not ready: readiness probes fail and no new stream or request is taken. Open streams stay
        //    open: they are to receive the predictions of the windows flushed below.
        core.metrics.ready.set(0);
        health.send_modify(|h| {
            if h.phase != Phase::Failed {
                h.phase = Phase::ShuttingDown;
            }
        });
        let drain_started = Instant::now();
        let deadline = tokio::time::Instant::now() + drain_timeout;
        // 2. Refuse new data; windows that hold accepted samples are closed now so they still run.
        let flushed = core.ingest.close_and_flush();
        // 3. Drain the queue and finish in-flight batches.
        core.batcher.close();
        if tokio::time::timeout_at(deadline, actor).await.is_err() {
            let dropped = core.batcher.queued();
            core.metrics
                .drain_dropped
                .with_label_values(&["windows"])
                .inc_by(dropped as u64);
            tracing::warn!(dropped, "the batch queue did not drain in time");
        }
        let joined = tokio::task::spawn_blocking(move || pool.join());
        if tokio::time::timeout_at(deadline, joined).await.is_err() {
            tracing::warn!("inference workers did not finish in time");
        }
        // 4. Deliver: every prediction is in the store's feed now; route it to the device streams, after
        //    which each stream sends what it holds and ends with its status (UNAVAILABLE / 1001).
        core.feeds.finish();
        let _ = tokio::time::timeout_at(deadline, core.feeds.finished()).await;
        //    A shared store gets what is still queued and releases this replica's devices.
        core.state.shutdown().await;
        // 5. Wait for the streams to end (a client that stops reading is given up at the deadline).
        let deadline = tokio::time::Instant::now().max(deadline) + STREAM_CLOSE_GRACE;
        while core.metrics.open_streams_total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let still_open = core.metrics.open_streams_total();
        if still_open > 0 {
            core.metrics
                .drain_dropped
                .with_label_values(&["streams"])
                .inc_by(still_open as u64);
            tracing::warn!(still_open, "streams still open at the drain deadline");
        }
        tracing::info!(
            flushed_windows = flushed,
            seconds = drain_started.elapsed().as_secs_f64(),
            "drained; closing listeners"
        );
        // 6. Close the listeners (in-flight HTTP requests finish first).
        let _ = stop_tx.send(true);
        let _ = ticker.await;
        for server in servers {
            match tokio::time::timeout(drain_timeout, server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = format!("{e:#}"), "listener failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "listener task panicked"),
                Err(_) => tracing::warn!("a listener did not close in time"),
            }
        }
        tracing::info!("stopped");
        result
    });
    Ok(Service {
        core,
        http_addr,
        grpc_addr,
        metrics_addr,
        task,
    })
}

/// Runs the service until `shutdown` completes, then drains and returns.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    launch(args, Hooks::default(), shutdown).await?.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_batch_size_or_queue_is_refused_with_the_flag_named() {
        let mut args = ServeArgs::defaults();
        check_args(&args).expect("defaults are valid");
        args.max_batch_size = Some(0);
        let err = check_args(&args).expect_err("batch size 0 accepted");
        assert!(err.to_string().contains("--max-batch-size"), "{err}");
        let mut args = ServeArgs::defaults();
        args.queue_capacity = 0;
        let err = check_args(&args).expect_err("queue capacity 0 accepted");
        assert!(err.to_string().contains("--queue-capacity"), "{err}");
    }
}
