//! One step's shared state (devices, pre-encoded frames, send records, counters) and its open-loop
//! scheduler: a 1-ms timer wheel hands each device's ticks to its connection's queue with `try_send`, so
//! a slow connection or server never delays a tick — a full queue drops the tick and counts it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BufMut;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::mpsc;

use crossl_serve::model::manifest::Manifest;

use crate::frames::FrameTemplate;
use crate::samples::DsadsSamples;
use crate::schedule::{DevicePlan, MS, StepTiming, TimerWheel};
use crate::stats::{SendRing, StepStats, micros_histogram};

/// One tick of one device, as handed to its connection: the chunks of the modalities in `mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickBatch {
    pub device: u32,
    pub tick: u32,
    pub start_unix_nanos: i64,
    /// Bit `m` set: modality `m` (manifest order) is sent this tick.
    pub mask: u64,
}

impl TickBatch {
    /// Modality indices in the mask, ascending.
    pub fn modalities(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |m| self.mask & (1 << m) != 0)
    }
}

/// The step's clock, fixed when streaming starts (after every device connected).
pub struct StepClock {
    pub origin: Instant,
    /// This machine's unix time (ns) at `origin`.
    pub origin_unix_nanos: i64,
    pub plans: Vec<DevicePlan>,
}

/// Everything the scheduler and the connections of one step share.
pub struct StepShared {
    pub manifest: Arc<Manifest>,
    pub modality_names: Vec<String>,
    pub device_prefix: String,
    pub device_ids: Vec<String>,
    /// `[device][modality]`, or a single `[0][modality]` row shared by all devices (WebSocket frames do
    /// not name the device).
    pub frames: Vec<Vec<FrameTemplate>>,
    pub dsads: Option<Arc<DsadsSamples>>,
    pub rings: Vec<SendRing>,
    pub stats: StepStats,
    pub timing: StepTiming,
    pub clock: OnceLock<StepClock>,
}

impl StepShared {
    pub fn devices(&self) -> usize {
        self.device_ids.len()
    }

    fn frame(&self, device: u32, modality: usize) -> &FrameTemplate {
        let row = if self.frames.len() == 1 {
            0
        } else {
            device as usize
        };
        &self.frames[row][modality]
    }

    /// Writes one chunk message of `device`'s tick into `out`.
    pub fn write_chunk(&self, out: &mut impl BufMut, batch: &TickBatch, modality: usize) {
        let samples = self
            .dsads
            .as_ref()
            .map(|d| d.chunk(batch.device, modality, batch.tick));
        self.frame(batch.device, modality)
            .write(out, batch.start_unix_nanos, samples);
    }

    /// Size hint of one chunk message.
    pub fn chunk_len_hint(&self, modality: usize) -> usize {
        self.frames[0][modality].len_hint()
    }

    /// The device index of a `<prefix>-<i>` id of this step.
    pub fn device_index(&self, id: &str) -> Option<u32> {
        let index: u32 = id
            .strip_prefix(self.device_prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        ((index as usize) < self.devices()).then_some(index)
    }

    /// Counts a prediction of `device` for the window ending at `window_end` (device clock) and the
    /// latency from the send of the last chunk that window needed.
    pub fn on_prediction(&self, device: u32, window_end: i64, server_seconds: Option<f64>) {
        let received = Instant::now();
        let stats = &self.stats;
        stats.predictions.fetch_add(1, Relaxed);
        if let Some(seconds) = server_seconds {
            stats.record_server_latency(seconds);
        }
        let Some(clock) = self.clock.get() else {
            stats.latency_unknown.fetch_add(1, Relaxed);
            return;
        };
        let plan = &clock.plans[device as usize];
        if self.timing.window_inside(plan, window_end) {
            stats.windows_inside.fetch_add(1, Relaxed);
        } else {
            stats.windows_partial.fetch_add(1, Relaxed);
        }
        let sent = self
            .timing
            .last_tick_needed(plan, window_end)
            .and_then(|tick| self.rings[device as usize].sent_at(tick));
        match sent {
            Some(sent_micros) => {
                let now_micros =
                    received.saturating_duration_since(clock.origin).as_micros() as u64;
                stats.record_latency(now_micros.saturating_sub(sent_micros));
            }
            None => {
                stats.latency_unknown.fetch_add(1, Relaxed);
            }
        }
    }
}

/// How the scheduler behaves.
pub struct ScheduleOptions {
    pub dropout: f64,
    pub jitter_ms: u64,
    pub late_ms: u64,
    pub seed: u64,
}

/// Sends every tick of every device on its schedule, from `clock.origin` until each device sent
/// `timing.ticks` ticks. `queues[d]` is device `d`'s connection queue (`None`: it never connected; its
/// ticks are skipped). Returns the lag of ticks behind their due times (µs).
pub async fn run_schedule(
    shared: &StepShared,
    queues: &[Option<mpsc::Sender<TickBatch>>],
    options: &ScheduleOptions,
) -> Histogram<u64> {
    let clock = shared
        .clock
        .get()
        .expect("the step clock is set before scheduling");
    let timing = &shared.timing;
    let modalities = shared.modality_names.len();
    let all_mask: u64 = if modalities == 64 {
        u64::MAX
    } else {
        (1u64 << modalities) - 1
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut lag = micros_histogram();
    let jitter_ns = options.jitter_ms as i64 * MS;
    let late_ns = options.late_ms as i64 * MS;
    let draw_jitter = move |rng: &mut StdRng| {
        if jitter_ns > 0 {
            rng.random_range(0..=jitter_ns)
        } else {
            0
        }
    };
    // Due times relative to the origin, in ns; the wheel works in whole ms (rounded up: never early).
    let due_rel =
        |plan: &DevicePlan, tick: u32| timing.due_unix_nanos(plan, tick) - clock.origin_unix_nanos;
    let to_slot = |ns: i64| (ns.max(0) as u64).div_ceil(MS as u64);
    let span_ms = (timing.chunk_ns * 4 + jitter_ns) as u64 / MS as u64 + 16;
    let mut wheel = TimerWheel::new(span_ms);
    let mut next_due: Vec<i64> = Vec::with_capacity(shared.devices());
    let mut next_tick: Vec<u32> = vec![0; shared.devices()];
    let mut remaining = 0usize;
    for (d, plan) in clock.plans.iter().enumerate() {
        let due = due_rel(plan, 0) + draw_jitter(&mut rng);
        next_due.push(due);
        if queues[d].is_some() && timing.ticks > 0 {
            wheel.insert(d as u32, to_slot(due));
            remaining += 1;
        }
    }
    let stats = &shared.stats;
    while remaining > 0 {
        let now_ms = clock.origin.elapsed().as_millis() as u64;
        if Instant::now() >= clock.origin {
            wheel.advance(now_ms, |wheel, device, _slot| {
                let d = device as usize;
                let tick = next_tick[d];
                let plan = &clock.plans[d];
                let now_ns = clock.origin.elapsed().as_nanos() as i64;
                let behind = (now_ns - next_due[d]).max(0);
                lag.saturating_record((behind / 1_000) as u64);
                if behind > late_ns {
                    stats.ticks_late.fetch_add(1, Relaxed);
                }
                let mut mask = all_mask;
                if options.dropout > 0.0 {
                    for m in 0..modalities {
                        if rng.random_bool(options.dropout) {
                            mask &= !(1 << m);
                        }
                    }
                    stats
                        .chunks_dropped_out
                        .fetch_add((modalities - mask.count_ones() as usize) as u64, Relaxed);
                }
                let chunks = mask.count_ones() as u64;
                if chunks > 0 {
                    let batch = TickBatch {
                        device,
                        tick,
                        start_unix_nanos: timing.tick_start(plan, tick),
                        mask,
                    };
                    let queue = queues[d].as_ref().expect("scheduled devices have a queue");
                    match queue.try_send(batch) {
                        Ok(()) => {
                            stats.chunks_sent.fetch_add(chunks, Relaxed);
                            shared.rings[d].record(tick, (now_ns / 1_000) as u64);
                        }
                        Err(_) => {
                            stats.chunks_dropped.fetch_add(chunks, Relaxed);
                        }
                    }
                }
                next_tick[d] = tick + 1;
                if tick + 1 < timing.ticks {
                    next_due[d] = due_rel(plan, tick + 1) + draw_jitter(&mut rng);
                    wheel.insert(device, to_slot(next_due[d]));
                } else {
                    remaining -= 1;
                }
            });
        }
        if remaining == 0 {
            break;
        }
        tokio::time::sleep_until((clock.origin + Duration::from_millis(wheel.cursor_ms())).into())
            .await;
    }
    lag
}
