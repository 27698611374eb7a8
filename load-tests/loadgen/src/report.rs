//! The per-step report: a Markdown table for people, JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{LoadArgs, Transport, WsFormat};
use crate::stats::Percentiles;

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub model: String,
    pub args: LoadArgs,
    pub steps: Vec<StepReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub devices: usize,
    pub connected: usize,
    pub connect_failures: u64,
    pub first_connect_failure: Option<String>,
    pub connect_seconds: f64,
    /// Seconds from the step's first due time to its last tick handed out.
    pub streamed_seconds: f64,
    pub chunks_sent: u64,
    pub chunks_sent_per_s: f64,
    /// Sent minus ChunkErrors / error frames.
    pub chunks_accepted: u64,
    pub chunks_accepted_per_s: f64,
    /// Chunks the schedule could not hand over because the connection's queue was full (never sent).
    pub chunks_dropped_queue_full: u64,
    /// Chunks left out on purpose (`--dropout`).
    pub chunks_left_out_dropout: u64,
    /// Ticks handed out more than `--late-ms` after their due time (the generator fell behind).
    pub ticks_late: u64,
    pub chunk_errors: u64,
    pub error_reasons: BTreeMap<String, u64>,
    pub predictions: u64,
    pub predictions_per_s: f64,
    /// Windows entirely inside the devices' data, on the hop grid.
    pub windows_expected: u64,
    /// Predictions of such windows.
    pub windows_received: u64,
    /// Predictions of partly covered windows at the edges of the data (emitted too, not expected).
    pub windows_partial: u64,
    /// Last needed chunk sent → prediction received, client clock.
    pub latency: Option<Percentiles>,
    pub latency_unknown: u64,
    /// The server's `timings.end_to_end_seconds` (last chunk's arrival → prediction sent).
    pub server_latency: Option<Percentiles>,
    /// How late the generator handed ticks out (µs resolution).
    pub schedule_lag: Option<Percentiles>,
    pub feed_skipped: u64,
    pub connection_errors: u64,
    pub first_connection_error: Option<String>,
    /// Deltas of the server's counter families over the step (summed over labels).
    pub server_counters: Option<BTreeMap<String, f64>>,
    pub server_cpu_percent: Option<f64>,
    /// At the end of the streaming phase, and before the step's devices connected.
    pub server_rss_bytes: Option<u64>,
    pub server_rss_bytes_before: Option<u64>,
    pub loadgen_cpu_percent: Option<f64>,
}

fn ms(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.0} / {:.0} / {:.0}", p.p50_ms, p.p99_ms, p.p999_ms),
        None => "–".into(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn counter(step: &StepReport, name: &str) -> String {
    step.server_counters
        .as_ref()
        .and_then(|c| c.get(name))
        .map_or("–".into(), |v| format!("{v:.0}"))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("–".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

/// One line per step on stderr while the run goes on.
pub fn step_line(s: &StepReport) -> String {
    format!(
        "step {} devices: {:.0} chunks/s sent ({} dropped, {} late ticks), {:.1} predictions/s, windows {}/{}, latency p50/p99/p99.9 {} ms, server CPU {}%, loadgen CPU {}%",
        s.devices,
        s.chunks_sent_per_s,
        s.chunks_dropped_queue_full,
        s.ticks_late,
        s.predictions_per_s,
        s.windows_received,
        s.windows_expected,
        ms(&s.latency),
        opt(s.server_cpu_percent, 0),
        opt(s.loadgen_cpu_percent, 0),
    )
}

/// The Markdown table (with the run's setup above it).
pub fn markdown(report: &RunReport) -> String {
    let a = &report.args;
    let transport = match (a.transport, a.ws_format) {
        (Transport::Grpc, _) if a.gateway_devices > 1 => {
            format!("gRPC, gateway streams of {} devices", a.gateway_devices)
        }
        (Transport::Grpc, _) => format!(
            "gRPC, one stream per device, {} stream(s) per connection",
            a.streams_per_connection
        ),
        (Transport::Ws, WsFormat::Binary) => "WebSocket, binary frames".into(),
        (Transport::Ws, WsFormat::Json) => "WebSocket, JSON frames".into(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Model {}; {transport}; {} ms chunks per modality; {} s per step; dropout {}; clock offset {} ms; \
         jitter ≤ {} ms; {} samples.\n",
        report.model,
        a.chunk_ms,
        a.step_seconds,
        a.dropout,
        a.clock_offset_ms,
        a.jitter_ms,
        if a.dsads.is_some() {
            "DSADS"
        } else {
            "synthetic"
        },
    );
    out.push_str(
        "| devices | chunks/s sent | accepted | dropped (queue full) | late ticks | predictions/s | windows received / expected | last chunk → prediction p50 / p99 / p99.9 ms | server e2e p50 / p99 / p99.9 ms | shed | rejected | samples dropped | server CPU % | server RSS MiB (before → during) | loadgen CPU % |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in &report.steps {
        let pct = if s.windows_expected > 0 {
            format!(
                " ({:.1} %)",
                100.0 * s.windows_received as f64 / s.windows_expected as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {}{} | {:.0} | {:.0} | {} | {} | {:.1} | {} / {}{} | {} | {} | {} | {} | {} | {} | {} → {} | {} |",
            s.devices,
            if s.connect_failures > 0 {
                format!(" ({} failed to connect)", s.connect_failures)
            } else {
                String::new()
            },
            s.chunks_sent_per_s,
            s.chunks_accepted_per_s,
            s.chunks_dropped_queue_full,
            s.ticks_late,
            s.predictions_per_s,
            s.windows_received,
            s.windows_expected,
            pct,
            ms(&s.latency),
            ms(&s.server_latency),
            counter(s, "crossl_windows_shed_total"),
            counter(s, "crossl_chunks_rejected_total"),
            counter(s, "crossl_window_samples_dropped_total"),
            opt(s.server_cpu_percent, 0),
            mib(s.server_rss_bytes_before),
            mib(s.server_rss_bytes),
            opt(s.loadgen_cpu_percent, 0),
        );
    }
    let notes: Vec<String> = report
        .steps
        .iter()
        .filter_map(|s| {
            let mut parts = Vec::new();
            if s.chunk_errors > 0 {
                parts.push(format!("chunk errors {:?}", s.error_reasons));
            }
            if let Some(e) = &s.first_connection_error {
                parts.push(format!(
                    "{} connection error(s), first: {e}",
                    s.connection_errors
                ));
            }
            if let Some(e) = &s.first_connect_failure {
                parts.push(format!("connect failure: {e}"));
            }
            (!parts.is_empty()).then(|| format!("* {} devices: {}", s.devices, parts.join("; ")))
        })
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}
