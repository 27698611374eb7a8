//! A run: for every step, connect N fresh device connections, stream for `--step-seconds` on the open-loop
//! schedule, keep reading for `--drain-ms`, close, and report what happened (with the server's metric
//! deltas and /proc figures around the streaming phase).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crossl_serve::model::manifest::Manifest;

use crate::config::{LoadArgs, Transport, WsFormat};
use crate::frames::FrameTemplate;
use crate::probe::{self, ProcSample};
use crate::report::{RunReport, StepReport};
use crate::samples::{self, DsadsSamples};
use crate::schedule::{MS, StepTiming, gcd};
use crate::stats::{SendRing, StepStats, percentiles};
use crate::step::{ScheduleOptions, StepClock, StepShared, TickBatch, run_schedule};
use crate::{grpc, ws};

/// Time a step may spend connecting its devices before the run gives up.
const CONNECT_BUDGET: Duration = Duration::from_secs(120);
/// Time closing connections may take before their tasks are aborted.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Upper bound of a whole run's duration: the run is cancelled past it.
pub fn run_bound(args: &LoadArgs) -> Duration {
    let per_step = CONNECT_BUDGET
        + Duration::from_secs_f64(args.step_seconds)
        + Duration::from_millis(args.drain_ms + args.pause_ms)
        + CLOSE_GRACE
        + Duration::from_secs(30);
    per_step * args.steps.len() as u32
}

/// Runs every step; bounded by [`run_bound`].
pub async fn run(args: &LoadArgs) -> anyhow::Result<RunReport> {
    args.validate()?;
    let bound = run_bound(args);
    tokio::time::timeout(bound, run_steps(args))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the run passed its time bound of {bound:?} and was stopped")
        })?
}

async fn run_steps(args: &LoadArgs) -> anyhow::Result<RunReport> {
    let manifest = Arc::new(
        Manifest::load(&args.model)
            .with_context(|| format!("loading the manifest in {}", args.model.display()))?,
    );
    anyhow::ensure!(
        !manifest.modalities.is_empty() && manifest.modalities.len() <= 64,
        "the generator handles 1..=64 modalities"
    );
    let chunk_ns = args.chunk_ms as i64 * MS;
    let dsads = match &args.dsads {
        Some(dir) => Some(Arc::new(DsadsSamples::load(
            dir,
            &args.dsads_subjects,
            &manifest,
            chunk_ns,
        )?)),
        None => None,
    };
    let mut steps = Vec::new();
    for (i, &devices) in args.steps.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
        let report = run_step(args, &manifest, dsads.clone(), devices).await?;
        eprintln!("{}", crate::report::step_line(&report));
        steps.push(report);
    }
    Ok(RunReport {
        model: format!("{} {}", manifest.name, manifest.version),
        args: args.clone(),
        steps,
    })
}

/// The step's timing from the manifest and flags.
pub fn step_timing(args: &LoadArgs, manifest: &Manifest) -> anyhow::Result<StepTiming> {
    let chunk_ns = args.chunk_ms as i64 * MS;
    let mut grid_ns = 0;
    let mut min_period_ns = i64::MAX;
    for spec in &manifest.modalities {
        samples::samples_per_chunk(spec, chunk_ns)?;
        let period = (1e9 / spec.sample_rate_hz).round() as i64;
        grid_ns = if grid_ns == 0 {
            period
        } else {
            grid_ns * period / gcd(grid_ns, period)
        };
        min_period_ns = min_period_ns.min(period);
    }
    // Phases move by whole sample periods of every modality, and never by more than a chunk.
    let grid_ns = if grid_ns > 0 && chunk_ns % grid_ns == 0 {
        grid_ns
    } else {
        chunk_ns
    };
    let hop_ms = args
        .hop_ms
        .unwrap_or((manifest.recommended_hop_seconds * 1e3).round() as u64);
    anyhow::ensure!(hop_ms > 0, "the hop must be > 0 ms");
    Ok(StepTiming {
        chunk_ns,
        grid_ns,
        min_period_ns,
        window_ns: (manifest.window_seconds * 1e9).round() as i64,
        hop_ns: hop_ms as i64 * MS,
        ticks: (args.step_seconds * 1e3 / args.chunk_ms as f64).floor() as u32,
        clock_offset_ns: args.clock_offset_ms * MS,
    })
}

/// Pre-encoded frames: per device for gRPC (the chunk names its device), one shared row for WebSocket.
fn build_frames(
    args: &LoadArgs,
    manifest: &Manifest,
    device_ids: &[String],
    chunk_ns: i64,
) -> anyhow::Result<Vec<Vec<FrameTemplate>>> {
    let mut chunks = Vec::new();
    for spec in &manifest.modalities {
        let n = samples::samples_per_chunk(spec, chunk_ns)?;
        chunks.push(samples::synthetic_chunk(spec, n));
    }
    let specs = &manifest.modalities;
    Ok(match args.transport {
        Transport::Grpc => device_ids
            .iter()
            .map(|id| {
                specs
                    .iter()
                    .zip(&chunks)
                    .map(|(s, c)| FrameTemplate::grpc(id, &s.name, c, s.channels))
                    .collect()
            })
            .collect(),
        Transport::Ws => vec![
            specs
                .iter()
                .zip(&chunks)
                .enumerate()
                .map(|(i, (s, c))| match args.ws_format {
                    WsFormat::Binary => FrameTemplate::ws_binary(i as u16, c, s.channels),
                    WsFormat::Json => FrameTemplate::ws_json(&s.name, c, s.channels),
                })
                .collect(),
        ],
    })
}

/// The open connections of a step.
struct Connections {
    /// Per device: its connection's queue (`None`: it did not connect).
    queues: Vec<Option<mpsc::Sender<TickBatch>>>,
    tasks: Vec<JoinHandle<()>>,
    failures: u64,
    first_failure: Option<String>,
}

async fn connect_all(args: &LoadArgs, shared: &Arc<StepShared>) -> Connections {
    let target = args.target();
    let n = shared.devices();
    let api_key = args.api_key.as_deref();
    let mut out = Connections {
        queues: vec![None; n],
        tasks: Vec::new(),
        failures: 0,
        first_failure: None,
    };
    let fail = |out: &mut Connections, devices: usize, e: anyhow::Error| {
        out.failures += devices as u64;
        if out.first_failure.is_none() {
            out.first_failure = Some(format!("{e:#}"));
        }
    };
    match args.transport {
        Transport::Grpc => {
            // Devices → streams of `gateway_devices` → connections of `streams_per_connection` streams.
            let streams: Vec<Vec<u32>> = (0..n as u32)
                .collect::<Vec<_>>()
                .chunks(args.gateway_devices)
                .map(<[u32]>::to_vec)
                .collect();
            let groups: Vec<Vec<Vec<u32>>> = streams
                .chunks(args.streams_per_connection)
                .map(<[Vec<u32>]>::to_vec)
                .collect();
            let capacity = args.queue_ticks * args.gateway_devices;
            let opened = futures::stream::iter(groups)
                .map(|group| {
                    let target = target.clone();
                    let shared = shared.clone();
                    async move {
                        let mut results = Vec::new();
                        match grpc::connect(&target).await {
                            Ok(channel) => {
                                for devices in group {
                                    let r = grpc::open_stream(
                                        channel.clone(),
                                        &devices,
                                        shared.clone(),
                                        capacity,
                                        api_key,
                                    )
                                    .await;
                                    results.push((devices, r));
                                }
                            }
                            Err(e) => {
                                let all: Vec<u32> = group.into_iter().flatten().collect();
                                results.push((all, Err(e)));
                            }
                        }
                        results
                    }
                })
                .buffer_unordered(args.connect_concurrency)
                .collect::<Vec<_>>()
                .await;
            for (devices, result) in opened.into_iter().flatten() {
                match result {
                    Ok((queue, reader)) => {
                        for d in devices {
                            out.queues[d as usize] = Some(queue.clone());
                        }
                        out.tasks.push(reader);
                    }
                    Err(e) => fail(&mut out, devices.len(), e),
                }
            }
        }
        Transport::Ws => {
            let opened = futures::stream::iter(0..n as u32)
                .map(|d| {
                    let target = target.clone();
                    let shared = shared.clone();
                    async move {
                        let r = ws::open_device(
                            &target,
                            d,
                            shared,
                            args.ws_format,
                            args.queue_ticks,
                            api_key,
                        )
                        .await;
                        (d, r)
                    }
                })
                .buffer_unordered(args.connect_concurrency)
                .collect::<Vec<_>>()
                .await;
            for (d, result) in opened {
                match result {
                    Ok(device) => {
                        out.queues[d as usize] = Some(device.queue);
                        out.tasks.push(device.writer);
                        out.tasks.push(device.reader);
                    }
                    Err(e) => fail(&mut out, 1, e),
                }
            }
        }
    }
    out
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn proc_or_none(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|p| probe::read_proc(p).ok())
}

async fn scrape(args: &LoadArgs) -> anyhow::Result<Option<BTreeMap<String, f64>>> {
    match &args.metrics_url {
        Some(url) => Ok(Some(probe::sum_counters(&probe::http_get(url).await?))),
        None => Ok(None),
    }
}

/// One step of `devices` devices.
pub async fn run_step(
    args: &LoadArgs,
    manifest: &Arc<Manifest>,
    dsads: Option<Arc<DsadsSamples>>,
    devices: usize,
) -> anyhow::Result<StepReport> {
    let timing = step_timing(args, manifest)?;
    let device_ids: Vec<String> = (0..devices)
        .map(|i| format!("{}-{i}", args.device_prefix))
        .collect();
    let frames = build_frames(args, manifest, &device_ids, timing.chunk_ns)?;
    let shared = Arc::new(StepShared {
        manifest: manifest.clone(),
        modality_names: manifest.modalities.iter().map(|m| m.name.clone()).collect(),
        device_prefix: args.device_prefix.clone(),
        rings: (0..devices).map(|_| SendRing::default()).collect(),
        device_ids,
        frames,
        dsads,
        stats: StepStats::new(),
        timing: timing.clone(),
        clock: OnceLock::new(),
    });

    let server_idle = proc_or_none(args.server_pid);
    let connect_started = Instant::now();
    let connections = tokio::time::timeout(CONNECT_BUDGET, connect_all(args, &shared))
        .await
        .map_err(|_| {
            anyhow::anyhow!("connecting {devices} devices took over {CONNECT_BUDGET:?}")
        })?;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    shared
        .stats
        .connect_failures
        .store(connections.failures, Relaxed);
    anyhow::ensure!(
        connections.failures < devices as u64,
        "no device could connect: {}",
        connections.first_failure.unwrap_or_default()
    );

    let metrics_before = scrape(args).await?;
    let server_before = proc_or_none(args.server_pid);
    let self_before = proc_or_none(Some(std::process::id()));

    // The clock starts a little ahead so that the first due times are not already past.
    let lead = Duration::from_millis(100);
    let origin = Instant::now() + lead;
    let origin_unix_nanos = unix_nanos_now() + lead.as_nanos() as i64;
    let earliest = origin_unix_nanos + timing.clock_offset_ns;
    let plans = (0..devices)
        .map(|d| timing.device_plan(d, devices, earliest))
        .collect();
    let _ = shared.clock.set(StepClock {
        origin,
        origin_unix_nanos,
        plans,
    });
    let options = ScheduleOptions {
        dropout: args.dropout,
        jitter_ms: args.jitter_ms,
        late_ms: args.late_ms,
        seed: args.seed,
    };
    let lag = run_schedule(&shared, &connections.queues, &options).await;
    let streamed_seconds = origin.elapsed().as_secs_f64();
    let server_end = proc_or_none(args.server_pid);
    let self_end = proc_or_none(Some(std::process::id()));

    tokio::time::sleep(Duration::from_millis(args.drain_ms)).await;
    // Close: dropping the queues ends every stream (gRPC half-close, WebSocket close frame).
    let Connections { queues, tasks, .. } = connections;
    drop(queues);
    let mut tasks = tasks;
    let closing = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout(CLOSE_GRACE, closing).await.is_err() {
        for t in &tasks {
            t.abort();
        }
    }
    let metrics_after = scrape(args).await?;

    let stats = &shared.stats;
    let clock = shared.clock.get().expect("set above");
    // The server's phase of each device's window ends (`--window-phase`, computed as the server does).
    let quantum = crossl_serve::window::phase_quantum(
        manifest.modalities.iter().map(|m| 1e9 / m.sample_rate_hz),
        timing.hop_ns,
    );
    let windows_expected: u64 = clock
        .plans
        .iter()
        .zip(&shared.device_ids)
        .map(|(p, id)| {
            let phase = args.window_phase.phase_of(id, timing.hop_ns, quantum);
            timing.windows_expected(p, phase)
        })
        .sum();
    let cpu_percent = |before: Option<ProcSample>, after: Option<ProcSample>| {
        before
            .zip(after)
            .map(|(b, a)| 100.0 * (a.cpu_seconds - b.cpu_seconds) / streamed_seconds)
    };
    let counter_deltas = metrics_before.zip(metrics_after).map(|(b, a)| {
        a.iter()
            .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
            .collect()
    });
    let sent = stats.chunks_sent.load(Relaxed);
    let errors = stats.chunk_errors.load(Relaxed);
    let predictions = stats.predictions.load(Relaxed);
    Ok(StepReport {
        devices,
        connected: devices - connections.failures as usize,
        connect_failures: connections.failures,
        first_connect_failure: connections.first_failure,
        connect_seconds,
        streamed_seconds,
        chunks_sent: sent,
        chunks_sent_per_s: sent as f64 / streamed_seconds,
        chunks_accepted: sent.saturating_sub(errors),
        chunks_accepted_per_s: sent.saturating_sub(errors) as f64 / streamed_seconds,
        chunks_dropped_queue_full: stats.chunks_dropped.load(Relaxed),
        chunks_left_out_dropout: stats.chunks_dropped_out.load(Relaxed),
        ticks_late: stats.ticks_late.load(Relaxed),
        chunk_errors: errors,
        error_reasons: stats.error_reasons.lock().expect("stats lock").clone(),
        predictions,
        predictions_per_s: predictions as f64 / streamed_seconds,
        windows_expected,
        windows_received: stats.windows_inside.load(Relaxed),
        windows_partial: stats.windows_partial.load(Relaxed),
        latency: percentiles(&StepStats::take_histogram(&stats.latency)),
        latency_unknown: stats.latency_unknown.load(Relaxed),
        server_latency: percentiles(&StepStats::take_histogram(&stats.server_latency)),
        schedule_lag: percentiles(&lag),
        feed_skipped: stats.skipped.load(Relaxed),
        connection_errors: stats.connection_errors.load(Relaxed),
        first_connection_error: stats
            .first_connection_error
            .lock()
            .expect("stats lock")
            .clone(),
        server_counters: counter_deltas,
        server_cpu_percent: cpu_percent(server_before, server_end),
        server_rss_bytes: server_end.map(|s| s.rss_bytes),
        server_rss_bytes_before: server_idle.map(|s| s.rss_bytes),
        loadgen_cpu_percent: cpu_percent(self_before, self_end),
    })
}
