//! Window assembly for one device: per-modality buffers, the hop grid, and the close rule.
//! The policy is documented in docs/windowing.md; keep the two in step.

use std::sync::Arc;

use super::buffer::{InsertStats, ModalityBuffer};
use crate::model::{Manifest, ModelInput};

/// Knobs of window assembly (from `ServeArgs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPolicy {
    /// Distance between window ends; ends are multiples of it since the unix epoch (device time).
    pub hop_nanos: i64,
    /// Bounded out-of-orderness: a device's watermark trails the newest sample it has sent by this much,
    /// and a window closes once the watermark has passed its end.
    pub out_of_orderness_nanos: i64,
    /// A device that has sent nothing for this long (server clock, since its last chunk arrived) is
    /// stalled: every window its data reaches closes.
    pub stall_timeout_nanos: i64,
    /// Fraction of a modality's grid points that must be covered for it to be present.
    pub min_coverage: f64,
    /// Gaps up to this many periods are bridged by linear interpolation.
    pub max_gap_samples: f64,
    /// A modality not heard from (nor declared) for this long no longer holds windows open.
    pub stale_nanos: i64,
    /// Buffer cap per modality, in windows' worth of samples.
    pub max_buffer_windows: usize,
    /// How devices' window ends are placed on the hop grid.
    pub phases: super::WindowPhase,
    /// Step of per-device phases (see [`super::phase_quantum`]).
    pub phase_quantum_nanos: i64,
    /// This device's window ends are `k · hop + phase_nanos` (set by [`WindowPolicy::for_device`]).
    pub phase_nanos: i64,
}

impl WindowPolicy {
    /// The first window end on this policy's grid strictly after `t`.
    fn grid_ceil(&self, t: i64) -> i64 {
        ((t - self.phase_nanos).div_euclid(self.hop_nanos) + 1) * self.hop_nanos + self.phase_nanos
    }

    /// The policy of one device: its phase on the hop grid.
    pub fn for_device(mut self, device_id: &str) -> Self {
        self.phase_nanos =
            self.phases
                .phase_of(device_id, self.hop_nanos, self.phase_quantum_nanos);
        self
    }
}

impl Default for WindowPolicy {
    fn default() -> Self {
        Self {
            hop_nanos: 1_000_000_000,
            out_of_orderness_nanos: 2_000_000_000,
            stall_timeout_nanos: 2_000_000_000,
            min_coverage: 0.8,
            max_gap_samples: 2.0,
            stale_nanos: 5_000_000_000,
            max_buffer_windows: 8,
            phases: super::WindowPhase::Aligned,
            phase_quantum_nanos: 1_000_000,
            phase_nanos: 0,
        }
    }
}

/// What closed a window (a metric label and a field of the window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseTrigger {
    /// Every active modality's data reached the window's end without a gap.
    Data,
    /// The device's watermark (newest sample − out-of-orderness) passed the window's end.
    Watermark,
    /// The device sent nothing for the stall timeout (server clock).
    Stall,
    /// The service is shutting down.
    Flush,
}

impl CloseTrigger {
    pub const ALL: [Self; 4] = [Self::Data, Self::Watermark, Self::Stall, Self::Flush];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Watermark => "watermark",
            Self::Stall => "stall",
            Self::Flush => "flush",
        }
    }
}

/// A closed window with at least one present modality.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow {
    /// The window covers [end − window, end) in device time.
    pub end_unix_nanos: i64,
    pub input: ModelInput,
    pub trigger: CloseTrigger,
}

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub samples: InsertStats,
    /// Every sample of the chunk is older than the device's open windows (time went backwards within its
    /// timeline): the chunk was refused whole and changed nothing.
    pub late_chunk: bool,
    /// The first chunk after a hello went back past the closed windows: the device's timeline restarted
    /// there (buffers and close position reset).
    pub timeline_restart: bool,
    /// The chunk started more than one window after this modality's newest sample; the empty stretch
    /// between is skipped, not walked.
    pub forward_jump: bool,
    /// The chunk started inside the nominal span of the previous chunk of the same modality: the device
    /// samples faster than the manifest rate (or its clock runs slow).
    pub rate_mismatch: bool,
    /// Device time of the chunk's last sample − its arrival (server clock), when any sample was accepted:
    /// one observation of the device's clock offset plus delay.
    pub clock_offset_nanos: Option<i64>,
}

#[derive(Clone, Debug)]
struct ModalityState {
    buffer: ModalityBuffer,
    /// Server time of the last chunk or declaration; drives "recently seen".
    last_heard: Option<i64>,
    /// Newest sample time ever accepted on this timeline (survives pruning); drives the data-driven close.
    newest: Option<i64>,
    /// Start and row count of the previous chunk, for rate checks.
    prev_chunk: Option<(i64, usize)>,
}

/// Estimate of a device's clock offset (device time − arrival time on the server clock). Network and
/// buffering only ever delay a chunk, so the largest recent `newest sample − arrival` is the best
/// estimate; the maximum is taken over two rolling spans so it follows a drifting clock.
#[derive(Clone, Copy, Debug, Default)]
struct OffsetEstimate {
    span_start: i64,
    current: Option<i64>,
    previous: Option<i64>,
}

/// Length of one rolling span of the offset estimate (server clock).
const OFFSET_SPAN_NANOS: i64 = 30_000_000_000;

impl OffsetEstimate {
    fn observe(&mut self, offset: i64, now: i64) {
        if now - self.span_start >= OFFSET_SPAN_NANOS {
            self.previous = self.current.take();
            self.span_start = now;
        }
        self.current = Some(self.current.map_or(offset, |c| c.max(offset)));
    }

    fn get(&self) -> Option<i64> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Window state of one device. Windows close on the device's own timeline (event time); the server
/// clock only measures staleness, stalls and idleness since arrivals.
#[derive(Clone, Debug)]
pub struct DeviceWindows {
    manifest: Arc<Manifest>,
    policy: WindowPolicy,
    window_nanos: i64,
    /// Longest sample period of any modality (ns): how far a window's last grid point may lie before its end.
    max_period: f64,
    modalities: Vec<ModalityState>,
    last_closed_end: Option<i64>,
    /// Newest sample time on this timeline, over every modality; the watermark trails it.
    newest: Option<i64>,
    /// Server time of the last chunk or declaration.
    last_seen: i64,
    /// Server time of the last accepted chunk.
    last_chunk_at: Option<i64>,
    /// A hello came after the last chunk: the next chunk may start a new timeline.
    hello_pending: bool,
    /// That hello named modalities (they hold windows on the new timeline).
    hello_declared: bool,
    offset: OffsetEstimate,
}

/// What a modality holds between two closes when its device streams on time: a window, and up to a hop
/// more before the next one closes (beyond a window's worth of hop, the long-hop skip holds only the
/// next window's samples).
fn steady_samples(window_samples: usize, rate_hz: f64, policy: &WindowPolicy) -> usize {
    let hop_samples = (policy.hop_nanos as f64 * rate_hz / 1e9).ceil() as usize;
    window_samples + hop_samples.min(window_samples)
}

/// Upper bound of windows closed in one call, so one device cannot stall the caller.
const MAX_CLOSES_PER_CALL: usize = 256;

impl DeviceWindows {
    pub fn new(manifest: Arc<Manifest>, policy: WindowPolicy, now: i64) -> Self {
        let modalities = manifest
            .modalities
            .iter()
            .map(|m| ModalityState {
                buffer: ModalityBuffer::new(
                    m.channels,
                    m.sample_rate_hz,
                    m.window_samples * policy.max_buffer_windows.max(2),
                )
                .with_steady_samples(steady_samples(
                    m.window_samples,
                    m.sample_rate_hz,
                    &policy,
                )),
                last_heard: None,
                newest: None,
                prev_chunk: None,
            })
            .collect();
        let window_nanos = (manifest.window_seconds * 1e9).round() as i64;
        let max_period = manifest
            .modalities
            .iter()
            .map(|m| 1e9 / m.sample_rate_hz)
            .fold(0.0, f64::max);
        Self {
            manifest,
            policy,
            window_nanos,
            max_period,
            modalities,
            last_closed_end: None,
            newest: None,
            last_seen: now,
            last_chunk_at: None,
            hello_pending: false,
            hello_declared: false,
            offset: OffsetEstimate {
                span_start: now,
                ..OffsetEstimate::default()
            },
        }
    }

    /// Server time of the last chunk or declaration.
    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    /// Server time of the last accepted chunk.
    pub fn last_chunk_at(&self) -> Option<i64> {
        self.last_chunk_at
    }

    /// End of the last closed window.
    pub fn last_closed_end(&self) -> Option<i64> {
        self.last_closed_end
    }

    /// Newest sample time the device has sent on its current timeline (device clock).
    pub fn newest_sample(&self) -> Option<i64> {
        self.newest
    }

    /// The device's watermark: its newest sample time less the allowed out-of-orderness.
    pub fn watermark(&self) -> Option<i64> {
        self.newest
            .map(|n| n.saturating_sub(self.policy.out_of_orderness_nanos))
    }

    /// Estimated clock offset, device time − server arrival time (ns); negative for a lagging clock or
    /// buffered data.
    pub fn clock_offset(&self) -> Option<i64> {
        self.offset.get()
    }

    /// Per manifest modality: server time it was last heard from.
    pub fn last_heard(&self) -> impl Iterator<Item = Option<i64>> + '_ {
        self.modalities.iter().map(|m| m.last_heard)
    }

    /// A hello: declares that the device sends these modalities and no others (indices into the manifest),
    /// so windows wait for them as if they had just been heard from, and no longer for one left out (a
    /// device back with fewer sensors would otherwise hold its windows until that one went stale). An empty
    /// list declares nothing. Either way the device's next chunk may start a new timeline: if it goes back
    /// past the windows already closed, the device restarts there instead of its data being late.
    pub fn declare(&mut self, modalities: &[usize], now: i64) {
        if !modalities.is_empty() {
            for (m, state) in self.modalities.iter_mut().enumerate() {
                state.last_heard = modalities.contains(&m).then_some(now);
            }
        }
        self.hello_pending = true;
        self.hello_declared = !modalities.is_empty();
        self.last_seen = now;
    }

    /// Samples of modality `m` older than this serve no window that is still open: they are late. Older
    /// than the last *closed* window's end but inside the next window is still useful (windows overlap
    /// when hop < window), less the interpolation reach.
    fn drop_before(&self, m: usize) -> Option<i64> {
        self.last_closed_end
            .map(|lc| lc + self.policy.hop_nanos - self.reach_nanos(m))
    }

    /// How far before its end a window uses samples of modality `m`: its span plus the interpolation
    /// reach.
    fn reach_nanos(&self, m: usize) -> i64 {
        let period = self.modalities[m].buffer.period();
        let span = self.manifest.modalities[m].window_samples as f64 * period;
        (span + self.policy.max_gap_samples * period).round() as i64
    }

    /// Adds a chunk of modality `m` (row-major samples × channels, already validated) that arrived at
    /// server time `now`.
    pub fn push(&mut self, m: usize, start: i64, rows: &[f32], now: i64) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        let spec = &self.manifest.modalities[m];
        let n_rows = rows.len() / spec.channels;
        let last_sample =
            super::buffer::sample_time(start, n_rows.saturating_sub(1), spec.sample_rate_hz);
        let (mut drop_before, mut late_before) = self.limits(m);
        if drop_before.is_some_and(|limit| last_sample < limit) {
            if !self.hello_pending && late_before.is_some_and(|limit| last_sample >= limit) {
                // Between two windows that do not touch (hop > window): no window wants it, but time did
                // not go backwards. Skipped, not late; the device is alive.
                self.last_seen = now;
                self.last_chunk_at = Some(now);
                outcome.samples.unused = n_rows;
                return outcome;
            }
            if !self.hello_pending {
                // Time went backwards within the timeline: late data, refused whole. Only a hello may
                // restart a timeline, so one stray old chunk cannot erase a live device's windows.
                outcome.late_chunk = true;
                return outcome;
            }
            outcome.timeline_restart = true;
            self.restart_timeline();
            (drop_before, late_before) = self.limits(m);
        }
        self.hello_pending = false;
        self.last_seen = now;
        self.last_chunk_at = Some(now);
        // With a hop longer than the window, samples between one window's reach and the next window are
        // never used: skipped on arrival, else a device's buffer fills to its cap before its first window
        // closes (≈ 400 KiB per device at --hop-ms 60000).
        let (reach, policy) = (self.reach_nanos(m), self.policy);
        let unneeded = |t: i64| policy.hop_nanos > reach && policy.grid_ceil(t) - t > reach;
        let state = &mut self.modalities[m];
        if state
            .newest
            .is_some_and(|newest| start > newest + self.window_nanos)
        {
            outcome.forward_jump = true;
        }
        let period = state.buffer.period();
        if let Some((prev_start, prev_rows)) = state.prev_chunk {
            let nominal_end = prev_start as f64 + prev_rows as f64 * period;
            if start > prev_start
                && (start as f64) < nominal_end - period / 2.0
                && !outcome.forward_jump
            {
                outcome.rate_mismatch = true;
            }
        }
        state.prev_chunk = Some((start, n_rows));
        state.last_heard = Some(now);
        outcome.samples = state
            .buffer
            .insert(start, rows, drop_before, late_before, unneeded);
        if outcome.samples.accepted > 0 {
            let last = state.buffer.last_time();
            state.newest = state.newest.max(last);
            self.newest = self.newest.max(state.newest);
            self.offset.observe(last_sample - now, now);
            outcome.clock_offset_nanos = Some(last_sample - now);
        }
        outcome
    }

    /// A new timeline: nothing of the old one's data or close position counts any more. Its modalities
    /// stop holding windows until they send again, unless the hello that opened the new timeline named
    /// modalities (then its list holds): a device back with fewer sensors is not kept waiting.
    fn restart_timeline(&mut self) {
        for s in &mut self.modalities {
            s.buffer.clear();
            s.newest = None;
            s.prev_chunk = None;
            if !self.hello_declared {
                s.last_heard = None;
            }
        }
        self.newest = None;
        self.last_closed_end = None;
    }

    /// `(drop_before, late_before)` of modality `m`: samples older than `drop_before` serve no open window
    /// (see [`Self::drop_before`]); those also older than `late_before` are late — the data has moved past a
    /// window that closed. The two are equal when windows touch or overlap (hop ≤ window); with a hop longer
    /// than the window, what lies between a closed window and the next one is only unused.
    fn limits(&self, m: usize) -> (Option<i64>, Option<i64>) {
        let drop_before = self.drop_before(m);
        let late_before = drop_before
            .zip(self.last_closed_end)
            .map(|(drop, lc)| drop.min(lc));
        (drop_before, late_before)
    }

    /// Samples held over all modalities (what the device's window state costs).
    pub fn buffered_samples(&self) -> usize {
        self.modalities.iter().map(|s| s.buffer.len()).sum()
    }

    /// Offset of this device's window ends on the hop grid (ns).
    pub fn phase_nanos(&self) -> i64 {
        self.policy.phase_nanos
    }

    /// Every active modality has every sample up to the window's last grid point: not one missing, since a
    /// missing stretch may be a chunk still in flight (reordered or delayed) that would change the window.
    /// A window with a gap waits for the watermark (or a stall), then gaps are interpolated or absent.
    fn data_ready(&self, t: i64, now: i64) -> bool {
        let active = || {
            self.modalities
                .iter()
                .zip(&self.manifest.modalities)
                .filter(move |(s, _)| {
                    s.last_heard
                        .is_some_and(|h| now - h <= self.policy.stale_nanos)
                })
        };
        let last_point = |s: &ModalityState| t as f64 - s.buffer.period() - 0.5;
        // The cheap test first for every modality: most chunks arrive before the window's end is
        // reached by all of them, and the gap scan below walks the whole window.
        let mut any_active = false;
        for (s, _) in active() {
            any_active = true;
            if !s.newest.is_some_and(|nw| nw as f64 >= last_point(s)) {
                return false;
            }
        }
        any_active
            && active().all(|(s, spec)| {
                let period = s.buffer.period();
                let from = t - (spec.window_samples as f64 * period).round() as i64;
                s.buffer.gap_free(from, last_point(s) as i64, 1.5 * period)
            })
    }

    /// Closes every window that is ready at server time `now`, oldest first, appending those with at
    /// least one present modality to `out`. Returns the number closed (emitted or not).
    pub fn close_ready(&mut self, now: i64, out: &mut Vec<ClosedWindow>) -> usize {
        let stalled = self
            .last_chunk_at
            .is_some_and(|at| now - at >= self.policy.stall_timeout_nanos);
        self.close(now, stalled.then_some(CloseTrigger::Stall), out)
    }

    /// Closes every window that holds any of the device's data (shutdown); those covered enough are
    /// emitted.
    pub fn flush(&mut self, now: i64, out: &mut Vec<ClosedWindow>) -> usize {
        self.close(now, Some(CloseTrigger::Flush), out)
    }

    fn close(
        &mut self,
        now: i64,
        stalled: Option<CloseTrigger>,
        out: &mut Vec<ClosedWindow>,
    ) -> usize {
        let mut closed = 0;
        while closed < MAX_CLOSES_PER_CALL {
            let Some(earliest) = self
                .modalities
                .iter()
                .filter_map(|s| s.buffer.first_time())
                .min()
            else {
                break;
            };
            let first_useful = self.policy.grid_ceil(earliest);
            let t = match self.last_closed_end {
                Some(lc) => (lc + self.policy.hop_nanos).max(first_useful),
                None => first_useful,
            };
            let trigger = if self.data_ready(t, now) {
                CloseTrigger::Data
            } else if self.watermark().is_some_and(|w| w >= t) {
                CloseTrigger::Watermark
            } else if let Some(stall) = stalled
                && self.newest.is_some_and(|n| match stall {
                    // The window's last grid point is held: nothing more is due for it.
                    CloseTrigger::Stall => n as f64 >= t as f64 - self.max_period - 0.5,
                    // Shutting down: every window that holds any data (emitted if covered enough).
                    _ => n >= t - self.window_nanos,
                })
            {
                stall
            } else {
                break;
            };
            if let Some(window) = self.assemble(t, trigger) {
                out.push(window);
            }
            closed += 1;
            self.last_closed_end = Some(t);
            let next = t + self.policy.hop_nanos;
            for (s, spec) in self.modalities.iter_mut().zip(&self.manifest.modalities) {
                let keep_from = next as f64
                    - (spec.window_samples as f64 + self.policy.max_gap_samples + 1.0)
                        * s.buffer.period();
                s.buffer.prune(keep_from.floor() as i64);
            }
        }
        closed
    }

    /// Resamples every modality onto its grid ending at `end`; `None` when no modality is present.
    fn assemble(&self, end: i64, trigger: CloseTrigger) -> Option<ClosedWindow> {
        let mut input = ModelInput::zeros(&self.manifest);
        for (m, (state, spec)) in self
            .modalities
            .iter()
            .zip(&self.manifest.modalities)
            .enumerate()
        {
            if state.buffer.len() == 0 {
                continue;
            }
            let block = &mut input.modalities[m];
            let covered =
                state
                    .buffer
                    .resample(end, spec.window_samples, self.policy.max_gap_samples, block);
            if covered as f64 >= self.policy.min_coverage * spec.window_samples as f64 - 1e-9
                && covered > 0
            {
                input.present[m] = true;
            } else {
                block.iter_mut().for_each(|v| *v = 0.0);
            }
        }
        input.present.iter().any(|&p| p).then_some(ClosedWindow {
            end_unix_nanos: end,
            input,
            trigger,
        })
    }
}
