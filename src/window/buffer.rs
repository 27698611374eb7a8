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
///
/// Times are kept as runs, not one i64 per sample: a device streaming at its nominal rate produces one
/// run per modality however long it streams, so the buffer costs its values (12 bytes per 3-channel
/// sample) and not 8 bytes more per sample for its time (≈ 40 % of a device's window state; `cargo
/// bench --bench device_memory`). Irregular times cost at most one run (16 bytes) per sample.
#[derive(Clone, Debug)]
pub(crate) struct ModalityBuffer {
    channels: usize,
    /// Sample period in nanoseconds.
    period: f64,
    rate_hz: f64,
    cap: usize,
    /// Samples held in steady state (a window and a hop; 0 = no hint). The first sample reserves exactly
    /// that much, rather than the doubling growth's next power of two, and pruning gives back capacity a
    /// backlog grew past twice that, so a burst does not pin its peak for the device's lifetime.
    steady: usize,
    /// The first sample's time, kept beside the runs: the assembler asks every modality for it on every
    /// chunk, and reading it from the runs' heap block cost a cache miss per modality (perf at 600
    /// devices: most of `DeviceWindows::close`'s time). Refreshed by every change to the front.
    first: Option<i64>,
    runs: VecDeque<Run>,
    /// Number of samples (the runs' lengths summed).
    len: usize,
    values: VecDeque<f32>,
}

/// `len` samples at `sample_time(t0, k0 + i)` for `i` in `0..len`: exactly the times the samples had
/// (a run split or pruned keeps `t0` and moves `k0`, so no time is recomputed from a rounded start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    t0: i64,
    k0: u32,
    len: u32,
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
            steady: 0,
            first: None,
            runs: VecDeque::new(),
            len: 0,
            values: VecDeque::new(),
        }
    }

    /// Sizes the buffer for `samples` held in steady state (see `steady`).
    pub(crate) fn with_steady_samples(mut self, samples: usize) -> Self {
        self.steady = samples.min(self.cap);
        self
    }

    pub(crate) fn period(&self) -> f64 {
        self.period
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn run_time(&self, run: &Run, i: u32) -> i64 {
        sample_time(run.t0, (run.k0 + i) as usize, self.rate_hz)
    }

    pub(crate) fn first_time(&self) -> Option<i64> {
        debug_assert_eq!(self.first, self.front_time());
        self.first
    }

    fn front_time(&self) -> Option<i64> {
        self.runs.front().map(|r| self.run_time(r, 0))
    }

    pub(crate) fn last_time(&self) -> Option<i64> {
        self.runs.back().map(|r| self.run_time(r, r.len - 1))
    }

    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
        self.values.clear();
        self.first = None;
    }

    /// The run holding sample `i` and `i`'s offset in it; `(runs.len(), i − len)` past the last sample.
    fn locate(&self, mut i: usize) -> (usize, usize) {
        let mut r = 0;
        while r < self.runs.len() && i >= self.runs[r].len as usize {
            i -= self.runs[r].len as usize;
            r += 1;
        }
        (r, i)
    }

    /// Sample times from index `i` on, in order.
    fn times_from(&self, i: usize) -> impl Iterator<Item = i64> + '_ {
        let (r, i) = self.locate(i);
        self.runs.range(r..).enumerate().flat_map(move |(n, run)| {
            let skip = if n == 0 { i as u32 } else { 0 };
            (skip..run.len).map(move |k| self.run_time(run, k))
        })
    }

    /// Index of the first sample at or after `t` (`len` when none is).
    fn partition_point(&self, t: i64) -> usize {
        let mut before = 0;
        for run in &self.runs {
            if self.run_time(run, run.len - 1) >= t {
                // Times within a run increase with the index.
                let (mut lo, mut hi) = (0u32, run.len - 1);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.run_time(run, mid) < t {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                return before + lo as usize;
            }
            before += run.len as usize;
        }
        before
    }

    /// Inserts the rows of a chunk (sample i at start + i/rate). Samples before `drop_before` are not
    /// kept: late when also before `late_before`, else unused (see [`InsertStats::unused`]), as are those
    /// `unneeded` says no window will use.
    pub(crate) fn insert(
        &mut self,
        start: i64,
        rows: &[f32],
        drop_before: Option<i64>,
        late_before: Option<i64>,
        unneeded: impl Fn(i64) -> bool,
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
            if unneeded(t) {
                stats.unused += 1;
                continue;
            }
            match self.last_time() {
                None => self.push_back(t, row),
                Some(last) if t - last > half => self.push_back(t, row),
                Some(last) if (t - last).abs() <= half => {
                    stats.duplicate += 1;
                    continue;
                }
                Some(_) => {
                    let pos = self.partition_point(t);
                    let near = self
                        .times_from(pos.saturating_sub(1))
                        .take(2)
                        .any(|x| (x - t).abs() <= half);
                    if near {
                        stats.duplicate += 1;
                        continue;
                    }
                    self.insert_at(pos, t);
                    for (c, v) in row.iter().enumerate() {
                        self.values.insert(pos * self.channels + c, *v);
                    }
                    stats.out_of_order += 1;
                }
            }
            stats.accepted += 1;
        }
        if self.len > self.cap {
            stats.overflow += self.len - self.cap;
            self.drop_front(self.len - self.cap);
        }
        self.first = self.front_time();
        stats
    }

    fn push_back(&mut self, t: i64, row: &[f32]) {
        match self.runs.back_mut() {
            Some(run)
                if run.len < u32::MAX - run.k0
                    && sample_time(run.t0, (run.k0 + run.len) as usize, self.rate_hz) == t =>
            {
                run.len += 1
            }
            _ => self.runs.push_back(Run {
                t0: t,
                k0: 0,
                len: 1,
            }),
        }
        self.len += 1;
        if self.values.capacity() == 0 {
            self.values.reserve_exact(self.steady * self.channels);
        }
        self.values.extend(row.iter().copied());
    }

    /// A one-sample run at time `t` before the sample now at index `pos`, splitting the run `pos` falls
    /// in. A run's samples are one period apart, so a new sample between two of them is usually a
    /// duplicate; only a period that is not a whole number of ns can leave a 1-ns-wider step with room
    /// for one (e.g. 30 Hz).
    fn insert_at(&mut self, pos: usize, t: i64) {
        let single = Run {
            t0: t,
            k0: 0,
            len: 1,
        };
        let (mut r, pos) = self.locate(pos);
        if r < self.runs.len() && pos > 0 {
            let run = self.runs[r];
            let k = pos as u32;
            self.runs[r].len = k;
            self.runs.insert(
                r + 1,
                Run {
                    t0: run.t0,
                    k0: run.k0 + k,
                    len: run.len - k,
                },
            );
            r += 1;
        }
        self.runs.insert(r, single);
        self.len += 1;
    }

    /// Drops the `n` oldest samples.
    fn drop_front(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        self.values.drain(..n * self.channels);
        while n > 0 {
            let Some(front) = self.runs.front_mut() else {
                break;
            };
            if (front.len as usize) <= n {
                n -= front.len as usize;
                self.runs.pop_front();
            } else {
                front.k0 += n as u32;
                front.len -= n as u32;
                n = 0;
            }
        }
        self.first = self.front_time();
        let steady = self.steady * self.channels;
        if steady > 0 && self.values.capacity() > 2 * steady && self.values.len() <= steady {
            self.values.shrink_to(steady);
            self.runs.shrink_to(self.runs.len().max(4));
        }
    }

    /// Whether the samples from the last one at or before `from` up to the first at or after `to` are
    /// never more than `max_step` ns apart (no hole that data still in flight could fill). False when no
    /// sample reaches `to`.
    pub(crate) fn gap_free(&self, from: i64, to: i64, max_step: f64) -> bool {
        let i = self.partition_point(from).saturating_sub(1);
        let mut prev: Option<i64> = None;
        for t in self.times_from(i) {
            if prev.is_some_and(|p| (t - p) as f64 > max_step) {
                return false;
            }
            if t >= to {
                return true;
            }
            prev = Some(t);
        }
        false
    }

    /// Drops samples older than `before`.
    pub(crate) fn prune(&mut self, before: i64) {
        self.drop_front(self.partition_point(before));
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
        let first = self.partition_point(grid(0));
        if self.copy_exact(first, end, n, out) {
            return n;
        }
        let mut covered = vec![false; n];
        // Walk the samples once: `prev` is the last one before the grid point, `next` the first at or
        // after it (with their indices, for the values).
        let mut times = self
            .times_from(first.saturating_sub(1))
            .zip(first.saturating_sub(1)..);
        let mut prev = None;
        let mut next = times.next();
        if first > 0 {
            prev = next;
            next = times.next();
        }
        for (k, cov) in covered.iter_mut().enumerate() {
            let g = grid(k);
            while next.is_some_and(|(t, _)| t < g) {
                prev = next;
                next = times.next();
            }
            match (prev, next) {
                (_, Some((t, j))) if t == g => {
                    for c in 0..self.channels {
                        out[c * n + k] = self.values[j * self.channels + c];
                    }
                    *cov = true;
                }
                (Some((t0, j0)), Some((t1, j1))) if ((t1 - t0) as f64) <= max_gap => {
                    let w = (g - t0) as f64 / (t1 - t0) as f64;
                    for c in 0..self.channels {
                        let v0 = f64::from(self.values[j0 * self.channels + c]);
                        let v1 = f64::from(self.values[j1 * self.channels + c]);
                        out[c * n + k] = (v0 + w * (v1 - v0)) as f32;
                    }
                    *cov = true;
                }
                _ => {}
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

impl ModalityBuffer {
    /// The common case of [`ModalityBuffer::resample`]: a device streaming at its nominal rate, so the
    /// `n` grid points ending at `end` are exactly the `n` samples of one run from index `first` on. Then
    /// every point is covered by its own sample and the values are copied (transposed to channel-major)
    /// without a time computed per point. Taken only where that equality holds for every point: a whole
    /// number of ns per period and sample indices small enough that `i · 1e9 / rate` is exact in an f64,
    /// so run times and grid times are both exact arithmetic progressions and equal ends mean equal
    /// points. Returns false (nothing written) otherwise. (`DeviceWindows::close` was the largest function
    /// outside ONNX Runtime at saturation; docs/benchmarks.md.)
    fn copy_exact(&self, first: usize, end: i64, n: usize, out: &mut [f32]) -> bool {
        const EXACT: f64 = (1u64 << 53) as f64;
        if n == 0 || self.period.fract() != 0.0 {
            return false;
        }
        let (r, skip) = self.locate(first);
        let Some(run) = self.runs.get(r) else {
            return false;
        };
        let last = skip + n - 1;
        if last >= run.len as usize || (u64::from(run.k0) + last as u64) as f64 * 1e9 >= EXACT {
            return false;
        }
        // Grid point k is at end − (n − k)·period: the first at end − n·period, the last one period before end.
        let period = self.period as i64;
        if self.run_time(run, skip as u32) != end - n as i64 * period
            || self.run_time(run, last as u32) != end - period
        {
            return false;
        }
        let ch = self.channels;
        let (mut k, mut c) = (0, 0);
        for &v in self.values.range(first * ch..(first + n) * ch) {
            out[c * n + k] = v;
            c += 1;
            if c == ch {
                c = 0;
                k += 1;
            }
        }
        true
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
    use proptest::prelude::*;

    /// The buffer as it was before run-length times: one i64 per sample. The runs must behave exactly
    /// like it.
    struct Reference {
        channels: usize,
        rate_hz: f64,
        cap: usize,
        ts: Vec<i64>,
        values: Vec<f32>,
    }

    impl Reference {
        fn insert(&mut self, start: i64, rows: &[f32]) -> InsertStats {
            let mut stats = InsertStats::default();
            let half = (1e9 / self.rate_hz / 2.0) as i64;
            for (i, row) in rows.chunks_exact(self.channels).enumerate() {
                let t = sample_time(start, i, self.rate_hz);
                let pos = self.ts.partition_point(|&x| x < t);
                let near = |p: Option<&i64>| p.is_some_and(|&x| (x - t).abs() <= half);
                if near(self.ts.get(pos)) || (pos > 0 && near(self.ts.get(pos - 1))) {
                    stats.duplicate += 1;
                    continue;
                }
                if pos < self.ts.len() {
                    stats.out_of_order += 1;
                }
                self.ts.insert(pos, t);
                let at = pos * self.channels;
                self.values.splice(at..at, row.iter().copied());
                stats.accepted += 1;
            }
            while self.ts.len() > self.cap {
                self.ts.remove(0);
                self.values.drain(..self.channels);
                stats.overflow += 1;
            }
            stats
        }

        fn prune(&mut self, before: i64) {
            let n = self.ts.partition_point(|&x| x < before);
            self.ts.drain(..n);
            self.values.drain(..n * self.channels);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A chunk starting `periods` periods (plus `jitter_ns`) after 0, `rows` samples long.
        Chunk {
            periods: i64,
            jitter_ns: i64,
            rows: usize,
        },
        Prune {
            periods: i64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..60, prop_oneof![3 => Just(0i64), 1 => -3_000_000i64..3_000_000], 1usize..9)
                .prop_map(|(periods, jitter_ns, rows)| Op::Chunk { periods, jitter_ns, rows }),
            1 => (0i64..60).prop_map(|periods| Op::Prune { periods }),
        ]
    }

    proptest! {
        #[test]
        fn run_length_times_behave_like_one_time_per_sample(
            rate_hz in prop_oneof![Just(25.0), Just(30.0), Just(7.0)],
            channels in 1usize..4,
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let period = 1e9 / rate_hz;
            let mut b = ModalityBuffer::new(channels, rate_hz, 24);
            let mut r = Reference { channels, rate_hz, cap: 24, ts: vec![], values: vec![] };
            let mut next_value = 0.0f32;
            for op in ops {
                match op {
                    Op::Chunk { periods, jitter_ns, rows } => {
                        let start = (periods as f64 * period).round() as i64 + jitter_ns;
                        let samples: Vec<f32> = (0..rows * channels)
                            .map(|_| { next_value += 1.0; next_value })
                            .collect();
                        let got = b.insert(start, &samples, None, None, |_| false);
                        prop_assert_eq!(got, r.insert(start, &samples));
                    }
                    Op::Prune { periods } => {
                        let before = (periods as f64 * period).round() as i64;
                        b.prune(before);
                        r.prune(before);
                    }
                }
                prop_assert_eq!(b.times_from(0).collect::<Vec<_>>(), r.ts.clone());
                prop_assert_eq!(b.values.iter().copied().collect::<Vec<_>>(), r.values.clone());
                prop_assert_eq!(b.len(), r.ts.len());
                prop_assert_eq!(b.first_time(), r.ts.first().copied());
                prop_assert_eq!(b.last_time(), r.ts.last().copied());
                for probe in [0i64, 7, 20, 33, 61] {
                    let t = (probe as f64 * period).round() as i64;
                    prop_assert_eq!(b.partition_point(t), r.ts.partition_point(|&x| x < t));
                }
            }
            // Resampling reads the same samples through the runs.
            let end = (40.0 * period).round() as i64;
            let mut out = vec![0.0; 16 * channels];
            let covered = b.resample(end, 16, 2.0, &mut out);
            let mut reference = ModalityBuffer::new(channels, rate_hz, 1 << 20);
            for (i, &t) in r.ts.iter().enumerate() {
                // One run per sample: the reference layout through the same resampling code.
                reference.runs.push_back(Run { t0: t, k0: 0, len: 1 });
                reference.len += 1;
                reference.values.extend(&r.values[i * channels..(i + 1) * channels]);
            }
            let mut expected = vec![0.0; 16 * channels];
            prop_assert_eq!(covered, reference.resample(end, 16, 2.0, &mut expected));
            prop_assert_eq!(out, expected);
            let from = (20.0 * period).round() as i64;
            prop_assert_eq!(b.gap_free(from, end, 1.5 * period), reference.gap_free(from, end, 1.5 * period));
        }
    }

    #[test]
    fn a_sample_in_a_one_ns_wider_step_splits_its_run_and_keeps_every_time() {
        // 30 Hz: samples at 0, 33_333_333, 66_666_667 (a step of 33_333_334 ns); 50_000_000 is more than
        // half a period (16_666_666 ns) from both neighbours, so it is not a duplicate.
        let mut b = ModalityBuffer::new(1, 30.0, 100);
        b.insert(0, &[0.0, 1.0, 2.0], None, None, |_| false);
        assert_eq!(b.runs.len(), 1);
        let s = b.insert(50_000_000, &[1.5], None, None, |_| false);
        assert_eq!((s.accepted, s.out_of_order), (1, 1));
        assert_eq!(
            b.times_from(0).collect::<Vec<_>>(),
            vec![0, 33_333_333, 50_000_000, 66_666_667]
        );
        assert_eq!(
            b.values.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 1.0, 1.5, 2.0]
        );
        assert_eq!(b.runs.len(), 3);
    }

    #[test]
    fn a_regular_stream_is_one_run() {
        let mut b = ModalityBuffer::new(3, 25.0, 1000);
        for chunk in 0..50 {
            b.insert(chunk * 200_000_000, &[0.5; 15], None, None, |_| false);
        }
        assert_eq!((b.len(), b.runs.len()), (250, 1));
        b.prune(5_000_000_000);
        assert_eq!((b.len(), b.runs.len()), (125, 1));
        assert_eq!(b.first_time(), Some(5_000_000_000));
    }

    #[test]
    fn the_steady_size_is_reserved_exactly_and_a_backlog_gives_its_capacity_back() {
        // 25 Hz, 3 channels, a window (125) and a hop (25): 450 floats, not the doubling's 512
        let mut b = ModalityBuffer::new(3, 25.0, 100_000).with_steady_samples(150);
        let chunk = |b: &mut ModalityBuffer, k: i64| {
            b.insert(k * 200_000_000, &[0.5; 15], None, None, |_| false);
        };
        for k in 0..30 {
            chunk(&mut b, k);
        }
        assert_eq!(b.values.capacity(), 450);
        // a 60-s backlog grows the buffer; once pruned back to a window it returns to the steady size
        for k in 30..330 {
            chunk(&mut b, k);
        }
        assert!(b.values.capacity() >= 330 * 15);
        b.prune(62_000_000_000);
        assert_eq!(b.len(), 100);
        assert_eq!(b.values.capacity(), 450);
        assert_eq!(b.first_time(), Some(62_000_000_000));
        assert!(b.values.iter().all(|&v| v == 0.5));
    }

    const P: i64 = 100_000_000; // 10 Hz

    #[test]
    fn duplicates_keep_the_first_value_and_out_of_order_is_sorted() {
        let mut b = ModalityBuffer::new(1, 10.0, 1000);
        let s = b.insert(0, &[0.0, 1.0, 2.0], None, None, |_| false);
        assert_eq!(s.accepted, 3);
        let s = b.insert(P, &[9.0, 9.0, 3.0], None, None, |_| false); // 1 and 2 again, then 3
        assert_eq!((s.accepted, s.duplicate), (1, 2));
        let s = b.insert(5 * P, &[5.0], None, None, |_| false);
        assert_eq!(s.accepted, 1);
        let s = b.insert(4 * P, &[4.0], None, None, |_| false);
        assert_eq!((s.accepted, s.out_of_order), (1, 1));
        let mut out = vec![0.0; 6];
        assert_eq!(b.resample(6 * P, 6, 2.0, &mut out), 6);
        assert_eq!(out, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let s = b.insert(0, &[7.0], Some(6 * P), Some(6 * P), |_| false);
        assert_eq!(s.late, 1);
    }

    #[test]
    fn interpolates_small_gaps_only() {
        let mut b = ModalityBuffer::new(2, 10.0, 1000);
        // samples at 0, 1, 3 (gap of 2 periods), 7 (gap of 4)
        for (i, v) in [(0, 0.0), (1, 1.0), (3, 3.0), (7, 7.0)] {
            b.insert(i * P, &[v, -v], None, None, |_| false);
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
        b.insert(P / 2, &[0.5, 1.5, 2.5, 3.5], None, None, |_| false);
        let mut out = vec![0.0; 3];
        assert_eq!(b.resample(4 * P, 3, 2.0, &mut out), 3);
        for (o, e) in out.iter().zip([1.0, 2.0, 3.0]) {
            assert!((o - e).abs() < 1e-6, "{out:?}");
        }
        b.prune(2 * P);
        assert_eq!(b.first_time(), Some(2 * P + P / 2));
    }

    /// The same buffer, one run per sample: resampling it takes the general path.
    fn one_run_per_sample(b: &ModalityBuffer) -> ModalityBuffer {
        let mut r = ModalityBuffer::new(b.channels, b.rate_hz, 1 << 20);
        for (i, t) in b.times_from(0).enumerate() {
            r.runs.push_back(Run {
                t0: t,
                k0: 0,
                len: 1,
            });
            r.len += 1;
            r.values
                .extend(b.values.range(i * b.channels..(i + 1) * b.channels));
        }
        r
    }

    #[test]
    fn a_window_of_one_on_grid_run_is_copied_and_matches_the_general_path() {
        // 25 Hz, 3 channels, streamed in 5-sample chunks from an arbitrary start on a 40 ms grid.
        let (rate, ch, n) = (25.0, 3, 125);
        let period = 40_000_000i64;
        let mut b = ModalityBuffer::new(ch, rate, 1000);
        let t0 = 1_733_400_000_000_000_000i64; // 2024-12-05, unix ns
        let mut v = 0.0f32;
        for chunk in 0..40 {
            let rows: Vec<f32> = (0..5 * ch)
                .map(|_| {
                    v += 1.0;
                    v
                })
                .collect();
            b.insert(t0 + chunk * 5 * period, &rows, None, None, |_| false);
        }
        assert_eq!(b.runs.len(), 1);
        let general = one_run_per_sample(&b);
        for end in [t0 + 125 * period, t0 + 150 * period, t0 + 200 * period] {
            let first = b.partition_point(end - n as i64 * period);
            let mut copied = vec![f32::NAN; n * ch];
            assert!(
                b.copy_exact(first, end, n, &mut copied),
                "on-grid window not copied"
            );
            let mut out = vec![f32::NAN; n * ch];
            assert_eq!(b.resample(end, n, 2.0, &mut out), n);
            assert_eq!(out, copied);
            let mut expected = vec![f32::NAN; n * ch];
            assert_eq!(general.resample(end, n, 2.0, &mut expected), n);
            assert_eq!(out, expected);
        }
        // Off the grid by 1 ns, past the data, or across a hole: the general path, same answers.
        let mut late = ModalityBuffer::new(ch, rate, 1000);
        late.insert(t0, &vec![1.0; 100 * ch], None, None, |_| false);
        late.insert(t0 + 110 * period, &vec![2.0; 100 * ch], None, None, |_| {
            false
        });
        for (buf, end) in [
            (&b, t0 + 125 * period + 1),
            (&b, t0 + 201 * period),
            (&late, t0 + 150 * period),
        ] {
            let first = buf.partition_point(end - n as i64 * period);
            assert!(!buf.copy_exact(first, end, n, &mut vec![0.0; n * ch]));
            let mut out = vec![0.0; n * ch];
            let mut expected = vec![0.0; n * ch];
            assert_eq!(
                buf.resample(end, n, 2.0, &mut out),
                one_run_per_sample(buf).resample(end, n, 2.0, &mut expected)
            );
            assert_eq!(out, expected);
        }
        // A period that is not a whole number of ns (30 Hz) never takes the copy.
        let mut b30 = ModalityBuffer::new(1, 30.0, 1000);
        b30.insert(0, &[0.0; 60], None, None, |_| false);
        let end = sample_time(0, 40, 30.0);
        assert!(!b30.copy_exact(
            b30.partition_point(sample_time(0, 10, 30.0)),
            end,
            30,
            &mut [0.0; 30]
        ));
    }

    #[test]
    fn cap_drops_oldest() {
        let mut b = ModalityBuffer::new(1, 10.0, 3);
        let s = b.insert(0, &[0.0, 1.0, 2.0, 3.0, 4.0], None, None, |_| false);
        assert_eq!((s.accepted, s.overflow), (5, 2));
        assert_eq!((b.len(), b.first_time()), (3, Some(2 * P)));
    }
}
