//! Window assembly for one device: per-modality buffers, the hop grid, and the close rule.
//! The policy is documented in docs/windowing.md; keep the two in step.

use std::sync::Arc;

use super::buffer::{InsertStats, ModalityBuffer};
use crate::model::{Manifest, ModelInput};

/// Knobs of window assembly (from `ServeArgs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPolicy {
    /// Distance between window ends; ends are multiples of it since the unix epoch.
    pub hop_nanos: i64,
    /// A window closes at the latest this long after its end, on the server clock.
    pub lateness_nanos: i64,
    /// Fraction of a modality's grid points that must be covered for it to be present.
    pub min_coverage: f64,
    /// Gaps up to this many periods are bridged by linear interpolation.
    pub max_gap_samples: f64,
    /// A modality not heard from (nor declared) for this long no longer holds windows open.
    pub stale_nanos: i64,
    /// Buffer cap per modality, in windows' worth of samples.
    pub max_buffer_windows: usize,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        Self {
            hop_nanos: 1_000_000_000,
            lateness_nanos: 500_000_000,
            min_coverage: 0.8,
            max_gap_samples: 2.0,
            stale_nanos: 5_000_000_000,
            max_buffer_windows: 8,
        }
    }
}

/// A closed window with at least one present modality.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow {
    /// The window covers [end − window, end).
    pub end_unix_nanos: i64,
    pub input: ModelInput,
    /// Closed by the lateness tolerance rather than by every active modality reaching its end.
    pub by_lateness: bool,
}

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub samples: InsertStats,
    /// The chunk ended more than one window before this modality's newest sample (the device clock went
    /// back: the device's window state was reset), or started more than one window after it (forward).
    pub clock_jump: bool,
    /// The chunk started inside the nominal span of the previous chunk of the same modality: the device
    /// samples faster than the manifest rate (or its clock runs slow).
    pub rate_mismatch: bool,
}

#[derive(Clone, Debug)]
struct ModalityState {
    buffer: ModalityBuffer,
    /// Server time of the last chunk or declaration; drives "recently seen".
    last_heard: Option<i64>,
    /// Newest sample time ever accepted (survives pruning); drives the data-driven close.
    newest: Option<i64>,
    /// Start and row count of the previous chunk, for rate checks.
    prev_chunk: Option<(i64, usize)>,
}

/// Window state of one device.
#[derive(Clone, Debug)]
pub struct DeviceWindows {
    manifest: Arc<Manifest>,
    policy: WindowPolicy,
    window_nanos: i64,
    modalities: Vec<ModalityState>,
    last_closed_end: Option<i64>,
    last_seen: i64,
    /// A declaration came after the device's last chunk: it speaks for the timeline that comes next.
    declared_since_chunk: bool,
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
                ),
                last_heard: None,
                newest: None,
                prev_chunk: None,
            })
            .collect();
        let window_nanos = (manifest.window_seconds * 1e9).round() as i64;
        Self {
            manifest,
            policy,
            window_nanos,
            modalities,
            last_closed_end: None,
            declared_since_chunk: false,
            last_seen: now,
        }
    }

    /// Server time of the last chunk or declaration.
    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    /// End of the last closed window.
    pub fn last_closed_end(&self) -> Option<i64> {
        self.last_closed_end
    }

    /// Per manifest modality: server time it was last heard from.
    pub fn last_heard(&self) -> impl Iterator<Item = Option<i64>> + '_ {
        self.modalities.iter().map(|m| m.last_heard)
    }

    /// Declares that the device sends these modalities and no others (indices into the manifest): windows
    /// wait for them as if they had just been heard from, and no longer for one left out (a device back
    /// with fewer sensors would otherwise hold its windows until that one went stale). An empty list only
    /// registers the device.
    pub fn declare(&mut self, modalities: &[usize], now: i64) {
        if !modalities.is_empty() {
            for (m, state) in self.modalities.iter_mut().enumerate() {
                state.last_heard = modalities.contains(&m).then_some(now);
            }
            self.declared_since_chunk = true;
        }
        self.last_seen = now;
    }

    /// Adds a chunk of modality `m` (row-major samples × channels, already validated).
    pub fn push(&mut self, m: usize, start: i64, rows: &[f32], now: i64) -> PushOutcome {
        let mut outcome = PushOutcome::default();
        self.last_seen = now;
        let manifest = Arc::clone(&self.manifest);
        let spec = &manifest.modalities[m];
        let n_rows = rows.len() / spec.channels;
        let last_sample =
            super::buffer::sample_time(start, n_rows.saturating_sub(1), spec.sample_rate_hz);
        let state = &mut self.modalities[m];
        if let Some(newest) = state.newest {
            if last_sample < newest - self.window_nanos {
                outcome.clock_jump = true;
                self.reset_timeline();
                if !self.declared_since_chunk {
                    // The old timeline's modalities say nothing about the new one: each counts again
                    // once it sends (or a hello declares it), so windows do not wait for a sensor
                    // that is gone.
                    for s in &mut self.modalities {
                        s.last_heard = None;
                    }
                }
            } else if start > newest + self.window_nanos {
                outcome.clock_jump = true;
            }
        }
        let state = &mut self.modalities[m];
        let period = state.buffer.period();
        if let Some((prev_start, prev_rows)) = state.prev_chunk {
            let nominal_end = prev_start as f64 + prev_rows as f64 * period;
            if start > prev_start
                && (start as f64) < nominal_end - period / 2.0
                && !outcome.clock_jump
            {
                outcome.rate_mismatch = true;
            }
        }
        state.prev_chunk = Some((start, n_rows));
        state.last_heard = Some(now);
        self.declared_since_chunk = false;
        // Late = too old for any window still open: before the next window's start (less the
        // interpolation reach). Older-than-closed samples inside it still serve the next windows.
        let drop_before = self.last_closed_end.map(|lc| {
            let span = spec.window_samples as f64 * period;
            (lc + self.policy.hop_nanos)
                - (span + self.policy.max_gap_samples * period).round() as i64
        });
        outcome.samples = state.buffer.insert(start, rows, drop_before);
        if outcome.samples.accepted > 0 {
            let last = state.buffer.last_time();
            state.newest = state.newest.max(last);
        }
        outcome
    }

    fn reset_timeline(&mut self) {
        for s in &mut self.modalities {
            s.buffer.clear();
            s.newest = None;
            s.prev_chunk = None;
        }
        self.last_closed_end = None;
    }

    fn grid_ceil(&self, t: i64) -> i64 {
        (t.div_euclid(self.policy.hop_nanos) + 1) * self.policy.hop_nanos
    }

    /// Closes every window that is ready at server time `now`, oldest first, appending those with at
    /// least one present modality to `out`. Returns the number closed (emitted or not).
    pub fn close_ready(&mut self, now: i64, out: &mut Vec<ClosedWindow>) -> usize {
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
            let first_useful = self.grid_ceil(earliest);
            let t = match self.last_closed_end {
                Some(lc) => (lc + self.policy.hop_nanos).max(first_useful),
                None => first_useful,
            };
            let active: Vec<&ModalityState> = self
                .modalities
                .iter()
                .filter(|s| {
                    s.last_heard
                        .is_some_and(|h| now - h <= self.policy.stale_nanos)
                })
                .collect();
            let data_ready = !active.is_empty()
                && active.iter().all(|s| {
                    s.newest
                        .is_some_and(|nw| nw as f64 >= t as f64 - s.buffer.period() - 0.5)
                });
            let time_ready = now >= t.saturating_add(self.policy.lateness_nanos);
            if !data_ready && !time_ready {
                break;
            }
            if let Some(window) = self.assemble(t, !data_ready) {
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
    fn assemble(&self, end: i64, by_lateness: bool) -> Option<ClosedWindow> {
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
            by_lateness,
        })
    }
}
