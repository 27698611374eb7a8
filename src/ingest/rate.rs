//! Per-device, per-modality sample-rate sanity: a token bucket refilled at `factor ×` the modality's rate
//! on the server clock. A device that keeps sending faster than that is refused with `rate_limited`.

/// Token bucket in samples.
#[derive(Clone, Debug)]
pub(crate) struct RateBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    updated: i64,
}

impl RateBucket {
    /// Refills `factor × rate_hz` samples per second; holds `burst_seconds` of that (and at least one
    /// full chunk), starting full.
    pub(crate) fn new(
        rate_hz: f64,
        factor: f64,
        burst_seconds: f64,
        min_capacity: usize,
        now: i64,
    ) -> Self {
        let per_second = rate_hz * factor;
        let capacity = (per_second * burst_seconds).max(min_capacity as f64);
        Self {
            tokens: capacity,
            capacity,
            per_second,
            updated: now,
        }
    }

    /// Takes `rows` samples if the bucket holds them.
    pub(crate) fn take(&mut self, rows: usize, now: i64) -> bool {
        let elapsed = (now - self.updated).max(0) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now.max(self.updated);
        if self.tokens >= rows as f64 {
            self.tokens -= rows as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_overspeed_is_refused_and_recovers() {
        const S: i64 = 1_000_000_000;
        // 25 Hz, factor 10 → 250 samples/s, burst 2 s → 500.
        let mut b = RateBucket::new(25.0, 10.0, 2.0, 100, 0);
        assert!(b.take(500, 0));
        assert!(!b.take(1, 0));
        assert!(b.take(250, S));
        assert!(!b.take(26, S + S / 10));
        assert!(b.take(25, S + S / 10));
    }
}
