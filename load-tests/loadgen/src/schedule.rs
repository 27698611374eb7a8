//! Open-loop timing: when each simulated device sends which chunk, which chunk a window needs last, and how
//! many windows a step should produce. Pure arithmetic on nanoseconds, so it is unit-tested without clocks.
//!
//! Device `d` of a step of `n` devices gets a phase `φ_d = d·C/n` inside the chunk period `C`, split into
//! a whole number of sample periods (its sample grid is shifted by that much, so devices' chunk
//! boundaries differ as real devices' do) and a remainder (it sends that long after a chunk's last
//! sample). Tick `k` carries the samples of `[s0_d + k·C, s0_d + (k+1)·C)` (device clock) and is due at
//! `s0_d − offset + (k+1)·C + remainder + jitter_{d,k}` on this machine's clock: the moment its last
//! sample exists plus the device's own delays. Nothing a server does moves these times.

/// Nanoseconds per millisecond.
pub const MS: i64 = 1_000_000;

/// The fixed timing of one step: same for every device but its phase.
#[derive(Clone, Debug, PartialEq)]
pub struct StepTiming {
    /// Chunk length `C` in ns (a whole number of every modality's sample period).
    pub chunk_ns: i64,
    /// The finest sample grid every modality's samples lie on (ns); device phases move by multiples of it.
    pub grid_ns: i64,
    /// Shortest sample period among the modalities (ns): a window ending at `t` needs samples up to
    /// `t − min_period_ns`.
    pub min_period_ns: i64,
    /// Window length and hop of the served model (ns).
    pub window_ns: i64,
    pub hop_ns: i64,
    /// Ticks (chunks per modality) each device sends in the step.
    pub ticks: u32,
    /// Device clock − this machine's clock (ns, may be negative).
    pub clock_offset_ns: i64,
}

/// When and what one device sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// Device-clock time of the first sample of tick 0 (on the sample grid).
    pub first_sample_unix_nanos: i64,
    /// Extra delay after a chunk's last sample before it is sent (ns, `< grid_ns`).
    pub send_delay_ns: i64,
}

impl StepTiming {
    /// The plan of device `index` of `devices`, for a step whose first chunk starts on the chunk grid at
    /// or after `earliest_unix_nanos` (device clock).
    pub fn device_plan(
        &self,
        index: usize,
        devices: usize,
        earliest_unix_nanos: i64,
    ) -> DevicePlan {
        let base = ceil_to(earliest_unix_nanos, self.chunk_ns);
        let phase = (index as i128 * self.chunk_ns as i128 / devices.max(1) as i128) as i64;
        let grid_phase = phase - phase.rem_euclid(self.grid_ns);
        DevicePlan {
            first_sample_unix_nanos: base + grid_phase,
            send_delay_ns: phase - grid_phase,
        }
    }

    /// Device-clock start of tick `tick`'s samples.
    pub fn tick_start(&self, plan: &DevicePlan, tick: u32) -> i64 {
        plan.first_sample_unix_nanos + tick as i64 * self.chunk_ns
    }

    /// This machine's unix time (ns) at which tick `tick` is due, before jitter.
    pub fn due_unix_nanos(&self, plan: &DevicePlan, tick: u32) -> i64 {
        self.tick_start(plan, tick) + self.chunk_ns - self.clock_offset_ns + plan.send_delay_ns
    }

    /// Device-clock end of the data the device sends in the step (just after its last sample).
    pub fn data_end(&self, plan: &DevicePlan) -> i64 {
        self.tick_start(plan, self.ticks)
    }

    /// The tick holding the last sample a window ending at `window_end` (device clock) needs, when that
    /// tick is one of the step's.
    pub fn last_tick_needed(&self, plan: &DevicePlan, window_end: i64) -> Option<u32> {
        let last_sample = window_end - self.min_period_ns - plan.first_sample_unix_nanos;
        if last_sample < 0 {
            return None;
        }
        let tick = last_sample / self.chunk_ns;
        (tick < self.ticks as i64).then_some(tick as u32)
    }

    /// Whether the window `[end − window, end)` lies entirely inside the data this device sends.
    pub fn window_inside(&self, plan: &DevicePlan, window_end: i64) -> bool {
        window_end - self.window_ns >= plan.first_sample_unix_nanos
            && window_end <= self.data_end(plan)
    }

    /// Windows on the device's hop grid (`k · hop + window_phase_ns`, the server's phase for the device)
    /// entirely inside the device's data: the predictions it should get back. ≈ `(step − window) / hop + 1`.
    pub fn windows_expected(&self, plan: &DevicePlan, window_phase_ns: i64) -> u64 {
        let first_end = ceil_to(
            plan.first_sample_unix_nanos + self.window_ns - window_phase_ns,
            self.hop_ns,
        ) + window_phase_ns;
        let last_end = (self.data_end(plan) - window_phase_ns).div_euclid(self.hop_ns)
            * self.hop_ns
            + window_phase_ns;
        if last_end < first_end {
            0
        } else {
            ((last_end - first_end) / self.hop_ns + 1) as u64
        }
    }
}

/// Smallest multiple of `step` that is ≥ `value`.
pub fn ceil_to(value: i64, step: i64) -> i64 {
    let r = value.rem_euclid(step);
    if r == 0 { value } else { value - r + step }
}

/// Greatest common divisor (for the sample grid of several rates).
pub fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// A timing wheel with 1-ms slots: devices wait in the slot of their next due time. Each slot is a
/// reused `Vec`, so steady-state scheduling allocates nothing. The wheel must span more than the longest
/// distance between a device's consecutive due times (one chunk plus the jitter bound).
pub struct TimerWheel {
    slots: Vec<Vec<u32>>,
    /// Slot time (ms since the step origin) the cursor stands on: everything before it was handed out.
    cursor_ms: u64,
}

impl TimerWheel {
    pub fn new(span_ms: u64) -> Self {
        Self {
            slots: (0..span_ms.max(1) + 1).map(|_| Vec::new()).collect(),
            cursor_ms: 0,
        }
    }

    pub fn span_ms(&self) -> u64 {
        self.slots.len() as u64
    }

    /// The cursor: the next slot time to hand out.
    pub fn cursor_ms(&self) -> u64 {
        self.cursor_ms
    }

    /// Puts `device` in the slot of `due_ms` (ms since the origin). A time already passed goes into the
    /// cursor's slot (handed out next); a time beyond the span is a bug in the caller.
    pub fn insert(&mut self, device: u32, due_ms: u64) {
        let due = due_ms.max(self.cursor_ms);
        assert!(
            due < self.cursor_ms + self.span_ms(),
            "timer wheel span {} ms too short for a due time {} ms ahead",
            self.span_ms(),
            due - self.cursor_ms
        );
        let n = self.slots.len() as u64;
        self.slots[(due % n) as usize].push(device);
    }

    /// Hands every device due at or before `now_ms` to `fire` (with its slot time), in slot order, and
    /// moves the cursor past `now_ms`. `fire` may insert again (later slots only).
    pub fn advance(&mut self, now_ms: u64, mut fire: impl FnMut(&mut Self, u32, u64)) {
        let n = self.slots.len() as u64;
        let mut scratch = Vec::new();
        while self.cursor_ms <= now_ms {
            let slot_ms = self.cursor_ms;
            std::mem::swap(&mut scratch, &mut self.slots[(slot_ms % n) as usize]);
            self.cursor_ms += 1;
            for &device in &scratch {
                fire(self, device, slot_ms);
            }
            scratch.clear();
            // Give the (now empty, still allocated) vector back to its slot.
            std::mem::swap(&mut scratch, &mut self.slots[(slot_ms % n) as usize]);
            if !scratch.is_empty() {
                // `fire` re-inserted into this very slot (a span of one): keep those.
                self.slots[(slot_ms % n) as usize].append(&mut scratch);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn timing() -> StepTiming {
        StepTiming {
            chunk_ns: 200 * MS,
            grid_ns: 40 * MS,
            min_period_ns: 40 * MS,
            window_ns: 5 * S,
            hop_ns: S,
            ticks: 50, // 10 s
            clock_offset_ns: 0,
        }
    }

    #[test]
    fn phases_spread_devices_over_the_chunk_period() {
        let t = timing();
        let base = 1_700_000_000 * S;
        let plans: Vec<_> = (0..10).map(|d| t.device_plan(d, 10, base + 1)).collect();
        // The step starts on the next chunk boundary; phases are d · 20 ms, split into 40-ms sample-grid
        // shifts and a send delay below one sample period.
        assert_eq!(plans[0].first_sample_unix_nanos, base + 200 * MS);
        assert_eq!(plans[0].send_delay_ns, 0);
        assert_eq!(plans[1].first_sample_unix_nanos, base + 200 * MS);
        assert_eq!(plans[1].send_delay_ns, 20 * MS);
        assert_eq!(plans[3].first_sample_unix_nanos, base + 240 * MS);
        assert_eq!(plans[3].send_delay_ns, 20 * MS);
        assert_eq!(plans[9].first_sample_unix_nanos, base + 360 * MS);
        for p in &plans {
            assert_eq!(
                p.first_sample_unix_nanos % (40 * MS),
                0,
                "on the sample grid"
            );
            assert!(p.send_delay_ns < 40 * MS);
        }
    }

    #[test]
    fn ticks_are_due_when_their_last_sample_exists_whatever_the_server_does() {
        let mut t = timing();
        let plan = DevicePlan {
            first_sample_unix_nanos: 1_000 * S,
            send_delay_ns: 7 * MS,
        };
        assert_eq!(t.tick_start(&plan, 0), 1_000 * S);
        assert_eq!(t.due_unix_nanos(&plan, 0), 1_000 * S + 207 * MS);
        assert_eq!(t.due_unix_nanos(&plan, 4), 1_000 * S + S + 7 * MS);
        // Open loop: due times are an arithmetic sequence, nothing else enters.
        let gaps: Vec<i64> = (1..10)
            .map(|k| t.due_unix_nanos(&plan, k) - t.due_unix_nanos(&plan, k - 1))
            .collect();
        assert!(gaps.iter().all(|&g| g == 200 * MS));
        // A device clock 1.5 s behind stamps its samples 1.5 s earlier but sends at the same real time.
        t.clock_offset_ns = -1_500 * MS;
        let behind = DevicePlan {
            first_sample_unix_nanos: 1_000 * S - 1_500 * MS,
            send_delay_ns: 7 * MS,
        };
        assert_eq!(t.due_unix_nanos(&behind, 4), 1_000 * S + S + 7 * MS);
    }

    #[test]
    fn last_tick_a_window_needs() {
        let t = timing();
        let plan = DevicePlan {
            first_sample_unix_nanos: 1_000 * S + 40 * MS,
            send_delay_ns: 0,
        };
        // Window ending at 1005 s needs the sample at 1004.96 s: offset 4.92 s → tick 24 (4.8–5.0 s).
        assert_eq!(t.last_tick_needed(&plan, 1_005 * S), Some(24));
        // Ending at 1005.04 s it needs 1005.00 s: offset 4.96 s, still tick 24.
        assert_eq!(t.last_tick_needed(&plan, 1_005 * S + 40 * MS), Some(24));
        // Ending at 1005.08 s it needs 1005.04 s: offset 5.00 s, the first sample of tick 25.
        assert_eq!(t.last_tick_needed(&plan, 1_005 * S + 80 * MS), Some(25));
        assert_eq!(t.last_tick_needed(&plan, 1_005 * S + 240 * MS), Some(25));
        assert_eq!(t.last_tick_needed(&plan, 1_000 * S), None);
        assert_eq!(t.last_tick_needed(&plan, 1_100 * S), None);
    }

    #[test]
    fn expected_windows_follow_the_hop_grid() {
        let t = timing();
        // 10 s of data from a whole second: windows ending at 5, 6, …, 10 s → 6 = (10 − 5)/1 + 1.
        let aligned = DevicePlan {
            first_sample_unix_nanos: 1_000 * S,
            send_delay_ns: 0,
        };
        assert_eq!(t.windows_expected(&aligned, 0), 6);
        assert!(t.window_inside(&aligned, 1_005 * S));
        assert!(t.window_inside(&aligned, 1_010 * S));
        assert!(!t.window_inside(&aligned, 1_004 * S));
        assert!(!t.window_inside(&aligned, 1_011 * S));
        // Starting 40 ms after a second: the first full window ends at 6 s, the last at 10 s → 5.
        let shifted = DevicePlan {
            first_sample_unix_nanos: 1_000 * S + 40 * MS,
            send_delay_ns: 0,
        };
        assert_eq!(t.windows_expected(&shifted, 0), 5);
        // Counting agrees with window_inside over the grid.
        let inside = (990..1_020)
            .filter(|s| t.window_inside(&shifted, s * S))
            .count() as u64;
        assert_eq!(inside, 5);
        // A 2-s hop and a step shorter than the window.
        let two = StepTiming {
            hop_ns: 2 * S,
            ..t.clone()
        };
        assert_eq!(two.windows_expected(&aligned, 0), 3);
        // With the server's per-device phase the grid moves: ends 1005.56 … 1009.56 s inside 1000…1010 s.
        assert_eq!(t.windows_expected(&aligned, 560 * MS), 5);
        let short = StepTiming { ticks: 20, ..t };
        assert_eq!(short.windows_expected(&aligned, 0), 0);
    }

    #[test]
    fn wheel_hands_out_in_time_order_and_reuses_slots() {
        let mut wheel = TimerWheel::new(250);
        wheel.insert(1, 5);
        wheel.insert(2, 3);
        wheel.insert(3, 249);
        let mut fired = Vec::new();
        wheel.advance(10, |w, d, at| {
            fired.push((d, at));
            if d == 2 {
                w.insert(20, at + 200); // re-schedule one chunk later
            }
        });
        assert_eq!(fired, vec![(2, 3), (1, 5)]);
        fired.clear();
        wheel.advance(300, |_, d, at| fired.push((d, at)));
        assert_eq!(fired, vec![(20, 203), (3, 249)]);
        assert!(wheel.is_empty());
        // A time already passed is handed out on the next advance, not lost.
        wheel.insert(9, 0);
        wheel.advance(301, |_, d, at| fired.push((d, at)));
        assert_eq!(fired.last(), Some(&(9, 301)));
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn wheel_refuses_times_beyond_its_span() {
        let mut wheel = TimerWheel::new(100);
        wheel.insert(1, 500);
    }
}
