//! Timestamped sample buffer of one modality of one device, and resampling onto a window grid.

use std::collections::VecDeque;

/// Counts of what happened to the samples of one chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertStats {
    pub accepted: usize,
    /// Too old for any window that is still open.
    pub late: usize,
    /// Within half a sample period of a sample already held (the first value wins).
    pub duplicate: usize,
    /// Inserted before newer samples already held.
    pub out_of_order: usize,
    /// Oldest samples dropped because the buffer hit its cap.
    pub overflow: usize,
    /// Between two windows that do not touch (hop longer than the window): no window needs them, so they
    /// are skipped, which is neither late nor an error.
    pub unused: usize,
}

/// Sample times and values (row-major, `channels` per sample), ordered by time, no two within half a
/// period of each other.
#[derive(Clone, Debug)]
pub(crate) struct ModalityBuffer {
    channels: usize,
    /// Sample period in nanoseconds.
    period: f64,
    rate_hz: f64,
    cap: usize,
    ts: VecDeque<i64>,
    values: VecDeque<f32>,
}

/// Time of sample `i` of a chunk starting at `start`.
pub(crate) fn sample_time(start: i64, i: usize, rate_hz: f64) -> i64 {
    start.saturating_add((i as f64 * 1e9 / rate_hz).round() as i64)
}

impl ModalityBuffer {
    pub(crate) fn new(channels: usize, rate_hz: f64, cap: usize) -> Self {
        Self {
            channels,
            period: 1e9 / rate_hz,
            rate_hz,
            cap: cap.max(1),
            ts: VecDeque::new(),
            values: VecDeque::new(),
        }
    }

    pub(crate) fn period(&self) -> f64 {
        self.period
    }

    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }

    pub(crate) fn first_time(&self) -> Option<i64> {
        self.ts.front().copied()
    }

    pub(crate) fn last_time(&self) -> Option<i64> {
        self.ts.back().copied()
    }

    pub(crate) fn clear(&mut self) {
        self.ts.clear();
        self.values.clear();
    }

    /// Inserts the rows of a chunk (sample i at start + i/rate). Samples before `drop_before` are not
    /// kept: late when also before `late_before`, else unused (see [`InsertStats::unused`]).
    pub(crate) fn insert(
        &mut self,
        start: i64,
        rows: &[f32],
        drop_before: Option<i64>,
        late_before: Option<i64>,
    ) -> InsertStats {
        let mut stats = InsertStats::default();
        let half = (self.period / 2.0) as i64;
        for (i, row) in rows.chunks_exact(self.channels).enumerate() {
            let t = sample_time(start, i, self.rate_hz);
            if drop_before.is_some_and(|limit| t < limit) {
                if late_before.is_some_and(|limit| t < limit) {
                    stats.late += 1;
                } else {
                    stats.unused += 1;
                }
                continue;
            }
            match self.ts.back() {
                None => self.push_back(t, row),
                Some(&last) if t - last > half => self.push_back(t, row),
                Some(&last) if (t - last).abs() <= half => {
                    stats.duplicate += 1;
                    continue;
                }
                Some(_) => {
                    let pos = self.ts.partition_point(|&x| x < t);
                    let near = |p: Option<&i64>| p.is_some_and(|&x| (x - t).abs() <= half);
                    if near(self.ts.get(pos)) || (pos > 0 && near(self.ts.get(pos - 1))) {
                        stats.duplicate += 1;
                        continue;
                    }
                    self.ts.insert(pos, t);
                    for (c, v) in row.iter().enumerate() {
                        self.values.insert(pos * self.channels + c, *v);
                    }
                    stats.out_of_order += 1;
                }
            }
            stats.accepted += 1;
        }
        while self.ts.len() > self.cap {
            self.ts.pop_front();
            self.values.drain(..self.channels);
            stats.overflow += 1;
        }
        stats
    }

    fn push_back(&mut self, t: i64, row: &[f32]) {
        self.ts.push_back(t);
        self.values.extend(row.iter().copied());
    }

    /// Whether the samples from the last one at or before `from` up to the first at or after `to` are
    /// never more than `max_step` ns apart (no hole that data still in flight could fill). False when no
    /// sample reaches `to`.
    pub(crate) fn gap_free(&self, from: i64, to: i64, max_step: f64) -> bool {
        let mut i = self.ts.partition_point(|&x| x < from).saturating_sub(1);
        let mut prev: Option<i64> = None;
        while let Some(&t) = self.ts.get(i) {
            if prev.is_some_and(|p| (t - p) as f64 > max_step) {
                return false;
            }
            if t >= to {
                return true;
            }
            prev = Some(t);
            i += 1;
        }
        false
    }

    /// Drops samples older than `before`.
    pub(crate) fn prune(&mut self, before: i64) {
        let n = self.ts.partition_point(|&x| x < before);
        self.ts.drain(..n);
        self.values.drain(..n * self.channels);
    }

    /// Resamples onto `n` grid points ending at `end` (point k at end − (n − k)·period) into `out`
    /// (channel-major, `channels × n`). A point is covered by a sample at exactly its time or by linear
    /// interpolation between the neighbouring samples when they are at most `max_gap_periods` apart;
    /// uncovered points take the value of the nearest covered point. Returns the number covered.
    pub(crate) fn resample(
        &self,
        end: i64,
        n: usize,
        max_gap_periods: f64,
        out: &mut [f32],
    ) -> usize {
        debug_assert_eq!(out.len(), n * self.channels);
        let max_gap = max_gap_periods * self.period + 1.0;
        let grid = |k: usize| end - (((n - k) as f64) * self.period).round() as i64;
        let mut covered = vec![false; n];
        let mut j = self.ts.partition_point(|&x| x < grid(0));
        for (k, cov) in covered.iter_mut().enumerate() {
            let g = grid(k);
            while j < self.ts.len() && self.ts[j] < g {
                j += 1;
            }
            if j < self.ts.len() && self.ts[j] == g {
                for c in 0..self.channels {
                    out[c * n + k] = self.values[j * self.channels + c];
                }
                *cov = true;
            } else if j > 0
                && j < self.ts.len()
                && ((self.ts[j] - self.ts[j - 1]) as f64) <= max_gap
            {
                let (t0, t1) = (self.ts[j - 1], self.ts[j]);
                let w = (g - t0) as f64 / (t1 - t0) as f64;
                for c in 0..self.channels {
                    let v0 = f64::from(self.values[(j - 1) * self.channels + c]);
                    let v1 = f64::from(self.values[j * self.channels + c]);
                    out[c * n + k] = (v0 + w * (v1 - v0)) as f32;
                }
                *cov = true;
            }
        }
        let count = covered.iter().filter(|&&c| c).count();
        if count > 0 && count < n {
            fill_uncovered(&covered, self.channels, n, out);
        } else if count == 0 {
            out.iter_mut().for_each(|v| *v = 0.0);
        }
        count
    }
}

/// Gives every uncovered point the value of the nearest covered one (ties: the earlier).
fn fill_uncovered(covered: &[bool], channels: usize, n: usize, out: &mut [f32]) {
    let mut nearest = vec![usize::MAX; n];
    let mut last = None;
    for k in 0..n {
        if covered[k] {
            last = Some(k);
        }
        if let Some(l) = last {
            nearest[k] = l;
        }
    }
    let mut next = None;
    for k in (0..n).rev() {
        if covered[k] {
            next = Some(k);
        }
        if let Some(nx) = next
            && (nearest[k] == usize::MAX || nx - k < k - nearest[k])
        {
            nearest[k] = nx;
        }
    }
    for k in (0..n).filter(|&k| !covered[k]) {
        for c in 0..channels {
            out[c * n + k] = out[c * n + nearest[k]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: i64 = 100_000_000; // 10 Hz

    #[test]
    fn duplicates_keep_the_first_value_and_out_of_order_is_sorted() {
        let mut b = ModalityBuffer::new(1, 10.0, 1000);
        let s = b.insert(0, &[0.0, 1.0, 2.0], None, None);
        assert_eq!(s.accepted, 3);
        let s = b.insert(P, &[9.0, 9.0, 3.0], None, None); // 1 and 2 again, then 3
        assert_eq!((s.accepted, s.duplicate), (1, 2));
        let s = b.insert(5 * P, &[5.0], None, None);
        assert_eq!(s.accepted, 1);
        let s = b.insert(4 * P, &[4.0], None, None);
        assert_eq!((s.accepted, s.out_of_order), (1, 1));
        let mut out = vec![0.0; 6];
        assert_eq!(b.resample(6 * P, 6, 2.0, &mut out), 6);
        assert_eq!(out, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let s = b.insert(0, &[7.0], Some(6 * P), Some(6 * P));
        assert_eq!(s.late, 1);
    }

    #[test]
    fn interpolates_small_gaps_only() {
        let mut b = ModalityBuffer::new(2, 10.0, 1000);
        // samples at 0, 1, 3 (gap of 2 periods), 7 (gap of 4)
        for (i, v) in [(0, 0.0), (1, 1.0), (3, 3.0), (7, 7.0)] {
            b.insert(i * P, &[v, -v], None, None);
        }
        let mut out = vec![0.0; 16];
        let covered = b.resample(8 * P, 8, 2.0, &mut out);
        // points 0..=3 covered (2 interpolated), 4,5,6 not (gap 4 > 2), 7 exact
        assert_eq!(covered, 5);
        assert_eq!(&out[..8], &[0.0, 1.0, 2.0, 3.0, 3.0, 3.0, 7.0, 7.0]);
        assert_eq!(&out[8..], &[-0.0, -1.0, -2.0, -3.0, -3.0, -3.0, -7.0, -7.0]);
    }

    #[test]
    fn off_grid_samples_are_interpolated_and_pruned() {
        let mut b = ModalityBuffer::new(1, 10.0, 1000);
        b.insert(P / 2, &[0.5, 1.5, 2.5, 3.5], None, None);
        let mut out = vec![0.0; 3];
        assert_eq!(b.resample(4 * P, 3, 2.0, &mut out), 3);
        for (o, e) in out.iter().zip([1.0, 2.0, 3.0]) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
        b.prune(2 * P);
        assert_eq!(b.first_time(), Some(2 * P + P / 2));
    }

    #[test]
    fn cap_drops_oldest() {
        let mut b = ModalityBuffer::new(1, 10.0, 3);
        let s = b.insert(0, &[0.0, 1.0, 2.0, 3.0, 4.0], None, None);
        assert_eq!((s.accepted, s.overflow), (5, 2));
        assert_eq!((b.len(), b.first_time()), (3, Some(2 * P)));
    }
}
