//! `crossl-serve replay`: streams DSADS recordings (raw UCI layout) to a running server as simulated
//! devices over gRPC or WebSocket, paced at real time × `--speed`, and scores the predictions it gets back
//! against the true activity (online accuracy and macro-F1; windows that straddle an activity change or
//! leave the recording are not scored).

pub mod client;
pub mod dsads;
pub mod schedule;
pub mod score;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use client::{Connection, ConnectionContext, Inbound, ReceivedPrediction, WsFormat};
use dsads::{ACTIVITIES, Dataset, RecordingPlan, SAMPLE_RATE_HZ};
use schedule::DeviceSchedule;
use score::{ConfusionMatrix, percentile};

/// Transport the replay client streams over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayTransport {
    /// gRPC `crossl.v1.Ingest/Stream`.
    Grpc,
    /// WebSocket `GET /v1/ws/devices/{id}`.
    Ws,
}

/// Flags of `crossl-serve replay`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// DSADS folder in the raw UCI layout (holding `data/aXX/pY/sZZ.txt`, or the `data` folder itself).
    #[arg(
        long,
        env = "CROSSL_DSADS_DIR",
        default_value = "~/.cache/crossl/dsads"
    )]
    pub data: PathBuf,

    /// Subjects to replay (p1..p8), comma-separated; device i plays subject i mod count.
    #[arg(long, value_delimiter = ',', default_value = "p1")]
    pub subjects: Vec<String>,

    /// Activities played one after the other (a01..a19 or class names), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "a01,a02,a03,a04,a05,a06,a07,a08,a09,a10,a11,a12,a13,a14,a15,a16,a17,a18,a19"
    )]
    pub activities: Vec<String>,

    /// Consecutive 5 s segments played per activity (1..=60).
    #[arg(long, default_value_t = 6)]
    pub segments: usize,

    /// First segment (1-based) of device 0; device i starts `i × segments` later (wrapping after s60) so
    /// devices replay different data.
    #[arg(long, default_value_t = 1)]
    pub first_segment: usize,

    /// Number of simulated devices.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,

    /// Device ids are `<prefix>-<i>`.
    #[arg(long, default_value = "replay")]
    pub device_prefix: String,

    /// Playback speed: 1 = real time, 10 = ten times faster. The server rate-limits devices sending more
    /// than `--rate-limit-factor` (default 10) × a modality's rate, so stay below that.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,

    /// Samples per chunk and modality (25 = 1 s at 25 Hz).
    #[arg(long, default_value_t = 25)]
    pub chunk_samples: usize,

    /// grpc or ws.
    #[arg(long, value_enum, default_value = "grpc")]
    pub transport: ReplayTransport,

    /// Chunk encoding on WebSockets: binary (compact) or json.
    #[arg(long, value_enum, default_value = "binary")]
    pub ws_format: WsFormat,

    /// gRPC only: one stream for all devices (a gateway) instead of one stream per device.
    #[arg(long)]
    pub gateway: bool,

    /// Server address: gRPC (default http://127.0.0.1:50051) or HTTP/WebSocket (default http://127.0.0.1:8080).
    #[arg(long, env = "CROSSL_REPLAY_TARGET")]
    pub target: Option<String>,

    /// API key with the `ingest` scope (sent as `authorization: Bearer …`).
    #[arg(long, env = "CROSSL_REPLAY_API_KEY")]
    pub api_key: Option<String>,

    /// Body units never sent (torso, right_arm, left_arm, right_leg, left_leg), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub drop_units: Vec<String>,

    /// Sensors never sent (acc, gyro, mag), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub drop_sensors: Vec<String>,

    /// Probability of dropping each 1-chunk piece of a modality (random dropouts).
    #[arg(long, default_value_t = 0.0)]
    pub random_dropout: f64,

    /// Seed of the random dropouts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// The simulated devices' clock offset from this machine's clock in ms (negative: behind), to test
    /// event-time windowing against lagging or leading device clocks. Whole seconds keep window ends on
    /// chunk boundaries.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,

    /// Simulate an outage with store-and-forward: from this many seconds into the recording, every
    /// device holds its chunks for `--outage-s`, then uploads the backlog at once and goes on live.
    #[arg(long, requires = "outage_s")]
    pub outage_at_s: Option<f64>,

    /// Length of the simulated outage in recording seconds (see `--outage-at-s`).
    #[arg(long, requires = "outage_at_s")]
    pub outage_s: Option<f64>,

    /// Window length of the served model in seconds (decides which activity a window covers).
    #[arg(long, default_value_t = 5.0)]
    pub window_seconds: f64,

    /// The server's hop in seconds (how many windows each device should get back).
    #[arg(long, default_value_t = 1.0)]
    pub hop_seconds: f64,

    /// The server's `--window-phase` (where each device's windows end on the hop grid).
    #[arg(long, value_enum, default_value = "per-device")]
    pub window_phase: crate::window::WindowPhase,

    /// After the last chunk, wait at most this long (ms) for the remaining predictions.
    #[arg(long, default_value_t = 5000)]
    pub drain_timeout_ms: u64,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl ReplayArgs {
    /// Defaults of every flag (tests start from this).
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ReplayArgs,
        }
        Wrapper::parse_from(["replay"]).args
    }

    fn target(&self) -> String {
        self.target.clone().unwrap_or_else(|| match self.transport {
            ReplayTransport::Grpc => "http://127.0.0.1:50051".into(),
            ReplayTransport::Ws => "http://127.0.0.1:8080".into(),
        })
    }

    fn data_path(&self) -> PathBuf {
        match (self.data.strip_prefix("~"), std::env::var_os("HOME")) {
            (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => self.data.clone(),
        }
    }
}

/// Latency percentiles in seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    fn of(samples: &[f64]) -> Self {
        Self {
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: percentile(samples, 100.0),
        }
    }
}

/// Per-class result.
#[derive(Clone, Debug, Serialize)]
pub struct ClassScore {
    pub class: String,
    pub support: u64,
    pub f1: f64,
}

/// Everything a replay measured.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub transport: ReplayTransport,
    pub devices: usize,
    pub subjects: Vec<String>,
    pub activities: Vec<String>,
    pub speed: f64,
    pub recording_seconds_per_device: f64,
    pub wall_seconds: f64,
    pub chunks_sent: u64,
    pub samples_sent: u64,
    pub chunk_errors: BTreeMap<String, u64>,
    pub feed_skipped: u64,
    pub predictions: u64,
    /// Windows entirely inside one activity (scored).
    pub scored: u64,
    /// Windows that straddle an activity change or reach outside the recording (not scored).
    pub unscored: u64,
    /// Predictions whose label is not a DSADS class.
    pub unknown_labels: u64,
    /// Hop-grid windows entirely inside the recordings, all devices: one prediction is due for each.
    pub windows_inside_expected: u64,
    /// Distinct predictions received for those windows (equal to the above when every hop came back).
    pub windows_inside_received: u64,
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub per_class: Vec<ClassScore>,
    pub mean_present_modalities: Option<f64>,
    /// From sending the chunk step that completed a window to receiving its prediction.
    pub client_latency_seconds: Percentiles,
    /// The server's own window-close → prediction time.
    pub server_end_to_end_seconds: Percentiles,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}", v * 1e3));
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        writeln!(
            f,
            "replay over {:?}: {} device(s), subjects {}, {} activities, {:.0} s of recording each, speed {}x, {:.1} s wall",
            self.transport,
            self.devices,
            self.subjects.join(","),
            self.activities.len(),
            self.recording_seconds_per_device,
            self.speed,
            self.wall_seconds
        )?;
        writeln!(
            f,
            "sent {} chunks ({} samples); chunk errors: {:?}; feed items skipped: {}",
            self.chunks_sent, self.samples_sent, self.chunk_errors, self.feed_skipped
        )?;
        writeln!(
            f,
            "predictions: {} received; windows inside the recordings: {} of {} came back; {} scored, {} straddling an activity change or the recording edge, {} unknown labels",
            self.predictions,
            self.windows_inside_received,
            self.windows_inside_expected,
            self.scored,
            self.unscored,
            self.unknown_labels
        )?;
        writeln!(
            f,
            "accuracy {}  macro-F1 {}  mean present modalities {}",
            opt(self.accuracy),
            opt(self.macro_f1),
            self.mean_present_modalities
                .map_or("-".into(), |m| format!("{m:.2}"))
        )?;
        writeln!(
            f,
            "latency ms (client, chunk sent -> prediction): p50 {} p90 {} p99 {} max {}",
            ms(self.client_latency_seconds.p50),
            ms(self.client_latency_seconds.p90),
            ms(self.client_latency_seconds.p99),
            ms(self.client_latency_seconds.max)
        )?;
        writeln!(
            f,
            "latency ms (server end-to-end): p50 {} p90 {} p99 {} max {}",
            ms(self.server_end_to_end_seconds.p50),
            ms(self.server_end_to_end_seconds.p90),
            ms(self.server_end_to_end_seconds.p99),
            ms(self.server_end_to_end_seconds.max)
        )?;
        for c in &self.per_class {
            writeln!(
                f,
                "  {:<32} support {:>4}  F1 {:.3}",
                c.class, c.support, c.f1
            )?;
        }
        Ok(())
    }
}

/// CLI entry: replays, prints the report, optionally writes it as JSON.
// The report on stdout is this command's output.
#[allow(clippy::print_stdout)]
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let report = replay(&args).await?;
    print!("{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn validate(args: &ReplayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.devices >= 1, "--devices must be at least 1");
    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0,
        "--speed must be a positive number"
    );
    anyhow::ensure!(
        args.chunk_samples >= 1,
        "--chunk-samples must be at least 1"
    );
    anyhow::ensure!(
        (1..=dsads::SEGMENTS_PER_ACTIVITY).contains(&args.segments),
        "--segments must be 1..=60"
    );
    anyhow::ensure!(
        (1..=dsads::SEGMENTS_PER_ACTIVITY).contains(&args.first_segment),
        "--first-segment must be 1..=60"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.random_dropout),
        "--random-dropout must be in [0, 1)"
    );
    anyhow::ensure!(
        args.window_seconds > 0.0 && args.hop_seconds > 0.0,
        "--window-seconds and --hop-seconds must be positive"
    );
    anyhow::ensure!(!args.subjects.is_empty(), "--subjects is empty");
    anyhow::ensure!(!args.activities.is_empty(), "--activities is empty");
    anyhow::ensure!(
        !(args.gateway && args.transport == ReplayTransport::Ws),
        "--gateway is for --transport grpc (a WebSocket carries one device)"
    );
    Ok(())
}

fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Loads the recordings of every simulated device.
fn build_schedules(args: &ReplayArgs) -> anyhow::Result<Vec<DeviceSchedule>> {
    let dataset = Dataset::open(&args.data_path())?;
    let subjects = args
        .subjects
        .iter()
        .map(|s| dsads::parse_subject(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let activities = args
        .activities
        .iter()
        .map(|a| dsads::parse_activity(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let modalities =
        schedule::select_modalities(dsads::modalities(), &args.drop_units, &args.drop_sensors)?;
    // Recordings start on the next whole second so window ends (on the server's 1 s hop grid) fall on
    // chunk boundaries.
    let start = (now_unix_nanos() / 1_000_000_000 + 1) * 1_000_000_000
        + args.clock_offset_ms.saturating_mul(1_000_000);
    (0..args.devices)
        .map(|i| {
            let subject = subjects[i % subjects.len()];
            let plan = RecordingPlan {
                subject,
                activities: activities.clone(),
                first_segment: (args.first_segment - 1 + i * args.segments)
                    % dsads::SEGMENTS_PER_ACTIVITY,
                segments: args.segments,
            };
            Ok(DeviceSchedule {
                device_id: format!("{}-{i}", args.device_prefix),
                subject,
                recording: plan.load(&dataset)?,
                modalities: modalities.clone(),
                start_unix_nanos: start,
            })
        })
        .collect()
}

async fn open_connections(
    args: &ReplayArgs,
    schedules: &[DeviceSchedule],
    ctx: &ConnectionContext,
) -> anyhow::Result<(Vec<Connection>, Vec<usize>)> {
    let target = args.target();
    let modality_names: Vec<String> = schedules[0]
        .modalities
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let mut connections = Vec::new();
    // Index of the connection each device sends on.
    let mut route = Vec::with_capacity(schedules.len());
    match (args.transport, args.gateway) {
        (ReplayTransport::Grpc, true) => {
            let devices: Vec<String> = schedules.iter().map(|s| s.device_id.clone()).collect();
            connections
                .push(client::connect_grpc(&target, &devices, &modality_names, ctx.clone()).await?);
            route.resize(schedules.len(), 0);
        }
        (ReplayTransport::Grpc, false) => {
            for (i, s) in schedules.iter().enumerate() {
                let devices = [s.device_id.clone()];
                connections.push(
                    client::connect_grpc(&target, &devices, &modality_names, ctx.clone()).await?,
                );
                route.push(i);
            }
        }
        (ReplayTransport::Ws, _) => {
            for (i, s) in schedules.iter().enumerate() {
                connections.push(
                    client::connect_ws(&target, &s.device_id, args.ws_format, ctx.clone()).await?,
                );
                route.push(i);
            }
        }
    }
    Ok((connections, route))
}

/// Replays and scores; returns the report (also used by the integration tests).
pub async fn replay(args: &ReplayArgs) -> anyhow::Result<ReplayReport> {
    validate(args)?;
    let schedules = build_schedules(args)?;
    let (inbound_tx, mut inbound_rx) = mpsc::unbounded_channel::<Inbound>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = ConnectionContext {
        api_key: args.api_key.clone(),
        inbound: inbound_tx,
        stop: stop_rx,
    };
    let (connections, route) = open_connections(args, &schedules, &ctx).await?;
    drop(ctx);

    let steps = schedules
        .iter()
        .map(|s| s.steps(args.chunk_samples))
        .max()
        .unwrap_or(0);
    let step_wall =
        Duration::from_secs_f64(args.chunk_samples as f64 / SAMPLE_RATE_HZ / args.speed);
    let mut rng = schedule::dropout_rng(args.seed);
    let mut received: Vec<ReceivedPrediction> = Vec::new();
    let mut chunk_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut feed_skipped = 0u64;
    let mut absorb = |event: Inbound, received: &mut Vec<ReceivedPrediction>| match event {
        Inbound::Prediction(p) => received.push(p),
        Inbound::ChunkError {
            device_id,
            reason,
            message,
        } => {
            tracing::warn!(device_id, reason, message, "chunk rejected");
            *chunk_errors.entry(reason).or_default() += 1;
        }
        Inbound::Skipped(n) => feed_skipped += n,
    };

    let started = Instant::now();
    // Wall time at which each step had been handed to the connections.
    let mut step_sent_at = vec![started; steps];
    let (mut chunks_sent, mut samples_sent) = (0u64, 0u64);
    let step_seconds = args.chunk_samples as f64 / SAMPLE_RATE_HZ;
    let outage = args.outage_at_s.zip(args.outage_s).map(|(at, len)| {
        let first = (at / step_seconds).ceil() as usize;
        first..first + (len / step_seconds).ceil() as usize
    });
    // Steps held back during the outage, sent (oldest first) with the first step after it.
    let mut held = Vec::new();
    // One pass more than there are steps, so an outage running to the end still uploads its backlog.
    for step in 0..=steps {
        tokio::time::sleep_until((started + step_wall * step as u32).into()).await;
        if outage.as_ref().is_some_and(|o| o.contains(&step)) && step < steps {
            held.push(step);
            continue;
        }
        let live = (step < steps).then_some(step);
        for step in held.drain(..).chain(live) {
            for (device, s) in schedules.iter().enumerate() {
                for chunk in s.chunks(step, args.chunk_samples, args.random_dropout, &mut rng) {
                    chunks_sent += 1;
                    samples_sent += chunk.sample_count() as u64;
                    connections[route[device]]
                        .chunks
                        .send(chunk)
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!("connection for {} closed early", s.device_id)
                        })?;
                }
            }
            step_sent_at[step] = Instant::now();
        }
        while let Ok(event) = inbound_rx.try_recv() {
            absorb(event, &mut received);
        }
    }

    // Done sending: close the request side, then wait for the last windows (or the drain timeout).
    let (senders, tasks): (Vec<_>, Vec<_>) =
        connections.into_iter().map(|c| (c.chunks, c.task)).unzip();
    drop(senders);
    let last_window_end: HashMap<&str, i64> = schedules
        .iter()
        .map(|s| {
            (
                s.device_id.as_str(),
                s.end_unix_nanos() / 1_000_000_000 * 1_000_000_000,
            )
        })
        .collect();
    let all_done = |received: &[ReceivedPrediction]| {
        last_window_end.iter().all(|(device, end)| {
            received
                .iter()
                .any(|p| p.device_id == *device && p.window_end_unix_nanos >= *end)
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(args.drain_timeout_ms);
    while !all_done(&received) {
        match tokio::time::timeout_at(deadline, inbound_rx.recv()).await {
            Ok(Some(event)) => absorb(event, &mut received),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "connection ended with an error"),
            Err(e) => tracing::warn!(error = %e, "connection task failed"),
        }
    }
    while let Ok(event) = inbound_rx.try_recv() {
        absorb(event, &mut received);
    }
    let wall_seconds = started.elapsed().as_secs_f64();

    Ok(score_predictions(
        args,
        &schedules,
        &received,
        &step_sent_at,
        Summary {
            chunks_sent,
            samples_sent,
            chunk_errors,
            feed_skipped,
            wall_seconds,
        },
    ))
}

struct Summary {
    chunks_sent: u64,
    samples_sent: u64,
    chunk_errors: BTreeMap<String, u64>,
    feed_skipped: u64,
    wall_seconds: f64,
}

fn score_predictions(
    args: &ReplayArgs,
    schedules: &[DeviceSchedule],
    received: &[ReceivedPrediction],
    step_sent_at: &[Instant],
    summary: Summary,
) -> ReplayReport {
    let by_device: HashMap<&str, &DeviceSchedule> = schedules
        .iter()
        .map(|s| (s.device_id.as_str(), s))
        .collect();
    let mut matrix = ConfusionMatrix::new(ACTIVITIES.len());
    let (mut scored, mut unscored, mut unknown_labels) = (0u64, 0u64, 0u64);
    let mut client_latency = Vec::new();
    let mut server_latency = Vec::new();
    let mut present_total = 0usize;
    let chunk_nanos = (args.chunk_samples as f64 * 1e9 / SAMPLE_RATE_HZ) as i64;
    let mut inside = std::collections::HashSet::new();
    for p in received {
        let Some(schedule) = by_device.get(p.device_id.as_str()) else {
            continue;
        };
        server_latency.push(p.server_end_to_end_seconds);
        present_total += p.present_modalities;
        if schedule.window_inside(p.window_end_unix_nanos, args.window_seconds) {
            inside.insert((p.device_id.as_str(), p.window_end_unix_nanos));
        }
        // The step whose chunks reach the window end completed the window.
        let offset = p.window_end_unix_nanos - schedule.start_unix_nanos;
        if offset > 0 {
            let step = ((offset + chunk_nanos - 1) / chunk_nanos - 1) as usize;
            if let Some(sent) = step_sent_at.get(step) {
                client_latency.push(p.received_at.saturating_duration_since(*sent).as_secs_f64());
            }
        }
        match schedule.truth(p.window_end_unix_nanos, args.window_seconds) {
            Some(truth) => match ACTIVITIES.iter().position(|a| *a == p.label) {
                Some(predicted) => {
                    scored += 1;
                    matrix.record(truth, predicted);
                }
                None => unknown_labels += 1,
            },
            None => unscored += 1,
        }
    }
    let recording_seconds = schedules
        .first()
        .map_or(0.0, |s| s.recording.duration_seconds());
    ReplayReport {
        transport: args.transport,
        devices: schedules.len(),
        subjects: args.subjects.clone(),
        activities: args.activities.clone(),
        speed: args.speed,
        recording_seconds_per_device: recording_seconds,
        wall_seconds: summary.wall_seconds,
        chunks_sent: summary.chunks_sent,
        samples_sent: summary.samples_sent,
        chunk_errors: summary.chunk_errors,
        feed_skipped: summary.feed_skipped,
        predictions: received.len() as u64,
        scored,
        unscored,
        unknown_labels,
        windows_inside_expected: schedules
            .iter()
            .map(|s| {
                let hop = ((args.hop_seconds * 1e9).round() as i64).max(1);
                let quantum = crate::window::phase_quantum([1e9 / SAMPLE_RATE_HZ], hop);
                let phase = args.window_phase.phase_of(&s.device_id, hop, quantum);
                s.windows_inside(args.window_seconds, args.hop_seconds, phase)
            })
            .sum(),
        windows_inside_received: inside.len() as u64,
        accuracy: matrix.accuracy(),
        macro_f1: matrix.macro_f1(),
        per_class: matrix
            .per_class_f1()
            .into_iter()
            .map(|(c, support, f1)| ClassScore {
                class: ACTIVITIES[c].to_string(),
                support,
                f1,
            })
            .collect(),
        mean_present_modalities: (!received.is_empty())
            .then(|| present_total as f64 / received.len() as f64),
        client_latency_seconds: Percentiles::of(&client_latency),
        server_end_to_end_seconds: Percentiles::of(&server_latency),
    }
}
