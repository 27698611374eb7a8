//! What one step counts: chunks handed to the transports (or dropped because a connection's queue was
//! full), what came back, and latencies. Written from the scheduler and every connection task at once,
//! so counters are atomics and histograms sit behind (uncontended) mutexes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

/// Send times of a device's recent ticks, for latency: slot `tick mod RING` holds `(tick + 1) << 40 |
/// microseconds since the step origin`. 128 ticks of 200 ms = 25.6 s: a prediction later than that after
/// its last chunk counts as `latency_unknown`.
pub const RING: usize = 128;
const MICROS_BITS: u32 = 40;

/// Per-device send record, lock-free.
pub struct SendRing(Box<[AtomicU64]>);

impl Default for SendRing {
    fn default() -> Self {
        Self((0..RING).map(|_| AtomicU64::new(0)).collect())
    }
}

impl SendRing {
    pub fn record(&self, tick: u32, micros: u64) {
        let value = ((tick as u64 + 1) << MICROS_BITS) | (micros & ((1 << MICROS_BITS) - 1));
        self.0[tick as usize % RING].store(value, Relaxed);
    }

    /// When `tick` was handed to the transport (µs since the origin), if it was and is still remembered.
    pub fn sent_at(&self, tick: u32) -> Option<u64> {
        let value = self.0[tick as usize % RING].load(Relaxed);
        (value >> MICROS_BITS == tick as u64 + 1).then_some(value & ((1 << MICROS_BITS) - 1))
    }
}

/// A latency histogram in microseconds (1 µs … 1 h, 3 significant digits).
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
pub struct StepStats {
    /// Chunks handed to a connection.
    pub chunks_sent: AtomicU64,
    /// Chunks not sent because their connection's queue was full (the schedule never waits).
    pub chunks_dropped: AtomicU64,
    /// Chunks left out on purpose (`--dropout`).
    pub chunks_dropped_out: AtomicU64,
    /// Ticks handed out later than `--late-ms` after their due time (the generator fell behind).
    pub ticks_late: AtomicU64,
    /// ChunkErrors / error frames by reason.
    pub chunk_errors: AtomicU64,
    pub error_reasons: Mutex<BTreeMap<String, u64>>,
    pub predictions: AtomicU64,
    /// Predictions of windows entirely inside a device's data (what `windows_expected` counts).
    pub windows_inside: AtomicU64,
    /// Predictions of windows at the edges of a device's data (partly covered, still emitted).
    pub windows_partial: AtomicU64,
    /// Predictions whose last needed chunk was not found in the send record.
    pub latency_unknown: AtomicU64,
    /// Live-feed skips the server reported (WebSocket `skipped`).
    pub skipped: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connections that ended with an error during the step.
    pub connection_errors: AtomicU64,
    pub first_connection_error: Mutex<Option<String>>,
    /// Last needed chunk sent → prediction received (client clock).
    pub latency: Mutex<Option<Histogram<u64>>>,
    /// The server's own `timings.end_to_end_seconds`.
    pub server_latency: Mutex<Option<Histogram<u64>>>,
}

impl StepStats {
    pub fn new() -> Self {
        Self {
            latency: Mutex::new(Some(micros_histogram())),
            server_latency: Mutex::new(Some(micros_histogram())),
            ..Self::default()
        }
    }

    pub fn record_error(&self, reason: &str) {
        self.chunk_errors.fetch_add(1, Relaxed);
        let mut reasons = self.error_reasons.lock().expect("stats lock");
        match reasons.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                reasons.insert(reason.to_string(), 1);
            }
        }
    }

    pub fn record_connection_error(&self, error: impl std::fmt::Display) {
        self.connection_errors.fetch_add(1, Relaxed);
        let mut first = self.first_connection_error.lock().expect("stats lock");
        if first.is_none() {
            *first = Some(error.to_string());
        }
    }

    pub fn record_latency(&self, micros: u64) {
        if let Some(h) = self.latency.lock().expect("stats lock").as_mut() {
            h.saturating_record(micros.max(1));
        }
    }

    pub fn record_server_latency(&self, seconds: f64) {
        if let Some(h) = self.server_latency.lock().expect("stats lock").as_mut() {
            h.saturating_record(((seconds * 1e6) as u64).max(1));
        }
    }

    pub fn take_histogram(slot: &Mutex<Option<Histogram<u64>>>) -> Histogram<u64> {
        slot.lock()
            .expect("stats lock")
            .take()
            .unwrap_or_else(micros_histogram)
    }
}

/// p50 / p99 / p99.9 / max in milliseconds, `None` when empty.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        count: h.len(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
        p999_ms: h.value_at_quantile(0.999) as f64 / 1e3,
        max_ms: h.max() as f64 / 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_ring_remembers_recent_ticks_only() {
        let ring = SendRing::default();
        assert_eq!(ring.sent_at(0), None);
        ring.record(0, 1_234);
        ring.record(5, 99);
        assert_eq!(ring.sent_at(0), Some(1_234));
        assert_eq!(ring.sent_at(5), Some(99));
        ring.record(RING as u32, 7); // overwrites tick 0's slot
        assert_eq!(ring.sent_at(0), None);
        assert_eq!(ring.sent_at(RING as u32), Some(7));
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = micros_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h).unwrap();
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!(percentiles(&micros_histogram()).is_none());
    }
}
