use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::model::Manifest;
use crate::model::manifest::tests::two_modality_manifest;

const SEC: i64 = 1_000_000_000;
const ACC: usize = 0;
const GYRO: usize = 1;

fn manifest() -> Arc<Manifest> {
    Arc::new(two_modality_manifest())
}

/// `n` rows of `channels` values; row i is `base + i` in every channel (channel c offset by 1000·c).
fn rows(base: usize, n: usize, channels: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|i| (0..channels).map(move |c| (base + i) as f32 + 1000.0 * c as f32))
        .collect()
}

#[test]
fn one_modality_closes_by_data_on_the_hop_grid() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 0, &rows(0, 100, 3), 0); // 10 s at 10 Hz
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    // [−1 s, 1 s) is half covered (absent); [0, 2) … [8, 10) are complete.
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, (2..=10).collect::<Vec<_>>());
    for w in &out {
        assert_eq!(w.input.present, vec![true, false]);
        assert!(!w.by_lateness);
        let first = (w.end_unix_nanos / SEC * 10 - 20) as f32;
        let block = &w.input.modalities[ACC];
        assert_eq!(block[0], first);
        assert_eq!(block[19], first + 19.0);
        assert_eq!(block[20], first + 1000.0, "channel-major layout");
        assert!(w.input.modalities[GYRO].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn a_declared_silent_modality_holds_windows_until_lateness() {
    let policy = WindowPolicy::default();
    let mut d = DeviceWindows::new(manifest(), policy, 0);
    d.declare(&[ACC, GYRO], 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert!(out.is_empty(), "gyro was declared, so windows wait for it");
    d.close_ready(2 * SEC + policy.lateness_nanos - 1, &mut out);
    assert!(out.is_empty());
    d.close_ready(2 * SEC + policy.lateness_nanos, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].by_lateness);
    assert_eq!(out[0].input.present, vec![true, false]);
    // Once gyro is stale it no longer holds windows open.
    let mut out = Vec::new();
    d.close_ready(policy.stale_nanos + 1, &mut out);
    assert_eq!(
        out.iter().map(|w| w.end_unix_nanos).collect::<Vec<_>>(),
        vec![3 * SEC]
    );
}

#[test]
fn two_modalities_at_different_rates_are_both_present() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0);
    d.push(GYRO, 0, &rows(0, 15, 2), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![2, 3]);
    assert_eq!(out[1].input.present, vec![true, true]);
    assert_eq!(out[1].input.modalities[GYRO][0], 5.0); // [1 s, 3 s) at 5 Hz starts at sample 5
    assert_eq!(out[1].input.modalities[GYRO][10], 1005.0);
}

#[test]
fn late_samples_are_dropped_and_gaps_make_a_modality_absent() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(d.last_closed_end(), Some(3 * SEC));
    // Next window is [2 s, 4 s): 0.0 … 1.7 s can no longer matter (late), 1.8 … 2.9 s are held already
    // (duplicates), 3.0 … 3.9 s are new.
    let o = d.push(ACC, 0, &rows(0, 40, 3), 0);
    assert_eq!(
        (o.samples.late, o.samples.duplicate, o.samples.accepted),
        (18, 12, 10)
    );
    // Hole from 3.9 s to 4.5 s (6 periods, too long to bridge): 4.0 … 4.4 s uncovered, so [3 s, 5 s)
    // and [4 s, 6 s) are 75 % covered → absent (not emitted).
    d.push(ACC, 45 * SEC / 10, &rows(45, 30, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![4, 7]);
    // A hole of 2 periods is bridged: 7.5 … 7.9 s then 8.1 s onwards.
    d.push(ACC, 75 * SEC / 10, &rows(75, 5, 3), 0);
    d.push(ACC, 81 * SEC / 10, &rows(81, 20, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![8, 9, 10]);
    assert_eq!(
        out[1].input.modalities[ACC][10], 80.0,
        "8.0 s interpolated between 7.9 and 8.1"
    );
}

#[test]
fn backward_clock_jump_resets_the_device_timeline() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 100 * SEC, &rows(0, 30, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(d.last_closed_end(), Some(103 * SEC));
    let o = d.push(ACC, 10 * SEC, &rows(0, 30, 3), 0);
    assert!(o.clock_jump);
    assert_eq!(o.samples.late, 0, "after the reset nothing is late");
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(out.last().map(|w| w.end_unix_nanos), Some(13 * SEC));
    let o = d.push(ACC, 1000 * SEC, &rows(0, 30, 3), 0);
    assert!(o.clock_jump, "forward jump is counted too");
    let mut out = Vec::new();
    // 14 s and 15 s (the old tail), then 1001 s … 1003 s: not the ~990 empty windows in between.
    assert_eq!(d.close_ready(0, &mut out), 5);
    assert_eq!(out.last().map(|w| w.end_unix_nanos), Some(1003 * SEC));
}

/// A device that streamed acc and gyro on an old timeline (100 s…103 s, server time 0).
fn device_with_an_old_timeline() -> DeviceWindows {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 100 * SEC, &rows(0, 30, 3), 0);
    d.push(GYRO, 100 * SEC, &rows(0, 15, 2), 0);
    d.close_ready(0, &mut Vec::new());
    d
}

/// Ends (in seconds) of the windows that close at server time `now`, all by data.
fn closed_by_data(d: &mut DeviceWindows, now: i64) -> Vec<i64> {
    let mut out = Vec::new();
    d.close_ready(now, &mut out);
    assert!(out.iter().all(|w| !w.by_lateness));
    out.iter().map(|w| w.end_unix_nanos / SEC).collect()
}

#[test]
fn after_a_backward_clock_jump_only_modalities_sent_again_hold_windows() {
    // The device comes back (clock reset to 10 s) with acc only, while gyro is not yet stale.
    let mut d = device_with_an_old_timeline();
    assert!(d.push(ACC, 10 * SEC, &rows(0, 30, 3), SEC).clock_jump);
    assert_eq!(
        closed_by_data(&mut d, SEC),
        vec![12, 13],
        "the old gyro does not hold them"
    );
    // gyro counts again as soon as it sends: acc reaches 13.9 s, gyro only 13.4 s, so 14 s waits
    d.push(GYRO, 13 * SEC, &rows(0, 3, 2), SEC);
    d.push(ACC, 13 * SEC, &rows(30, 10, 3), SEC);
    assert!(closed_by_data(&mut d, SEC).is_empty());
}

#[test]
fn a_hello_before_the_jump_speaks_for_the_new_timeline() {
    let mut d = device_with_an_old_timeline();
    d.declare(&[ACC, GYRO], SEC);
    assert!(d.push(ACC, 10 * SEC, &rows(0, 30, 3), SEC).clock_jump);
    assert!(
        closed_by_data(&mut d, SEC).is_empty(),
        "gyro was declared for the new timeline, so windows wait for it"
    );
}

#[test]
fn a_hello_replaces_the_declared_modalities() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.declare(&[ACC, GYRO], 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0);
    assert!(closed_by_data(&mut d, 0).is_empty(), "gyro was declared");
    d.declare(&[ACC], 0);
    assert_eq!(closed_by_data(&mut d, 0), vec![2, 3]);
    // an empty hello only registers the device: what was declared stays
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.declare(&[ACC, GYRO], 0);
    d.declare(&[], 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0);
    assert!(closed_by_data(&mut d, 0).is_empty());
}

#[test]
fn overlapping_successive_chunks_are_a_rate_mismatch() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    assert!(!d.push(ACC, 0, &rows(0, 10, 3), 0).rate_mismatch);
    assert!(
        !d.push(ACC, SEC, &rows(10, 10, 3), 0).rate_mismatch,
        "contiguous"
    );
    // 20 samples per second at a declared 10 Hz: the next chunk starts inside the previous one's span.
    assert!(
        d.push(ACC, 2 * SEC, &rows(20, 20, 3), 0)
            .rate_mismatch
            .eq(&false)
    );
    let o = d.push(ACC, 3 * SEC, &rows(40, 20, 3), 0);
    assert!(o.rate_mismatch);
    assert_eq!(o.samples.duplicate, 10);
    // Re-sending an old chunk is a duplicate, not a rate mismatch.
    let o = d.push(ACC, 2 * SEC, &rows(20, 10, 3), 0);
    assert!(!o.rate_mismatch);
    assert_eq!(o.samples.duplicate, 10);
}

/// Cuts a stream of `len` rows into chunks at the given (sorted, deduplicated) cut points.
fn cut(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % len).filter(|&c| c > 0).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for p in points.into_iter().chain([len]) {
        out.push((from, p - from));
        from = p;
    }
    out
}

/// Runs a device over the chunks in the given order, then flushes by lateness; returns every window.
fn run(
    chunks: &[(usize, usize, usize)],
    data: &[Vec<f32>],
    start: i64,
    resend: Option<usize>,
) -> Vec<ClosedWindow> {
    let manifest = manifest();
    let mut d = DeviceWindows::new(Arc::clone(&manifest), WindowPolicy::default(), 0);
    d.declare(&[ACC, GYRO], 0);
    let mut out = Vec::new();
    for (i, &(m, from, n)) in chunks.iter().enumerate() {
        let spec = &manifest.modalities[m];
        let t = start + (from as f64 * 1e9 / spec.sample_rate_hz).round() as i64;
        let c = spec.channels;
        d.push(m, t, &data[m][from * c..(from + n) * c], 0);
        d.close_ready(0, &mut out);
        if resend == Some(i) {
            d.push(m, t, &data[m][from * c..(from + n) * c], 0);
            d.close_ready(0, &mut out);
        }
    }
    d.close_ready(i64::MAX / 2, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn windows_do_not_depend_on_how_streams_are_cut(
        seconds in 3usize..9,
        start_offset_ms in 0i64..3000,
        acc_cuts in proptest::collection::vec(1usize..1000, 0..12),
        gyro_cuts in proptest::collection::vec(1usize..1000, 0..8),
        order_seed in any::<u64>(),
        resend in proptest::option::of(0usize..20),
        values in proptest::collection::vec(-50.0f32..50.0, 1..64),
    ) {
        let manifest = manifest();
        let start = 1_700_000_000 * SEC + start_offset_ms * 1_000_000;
        let lens = [seconds * 10, seconds * 5];
        let data: Vec<Vec<f32>> = (0..2).map(|m| {
            let c = manifest.modalities[m].channels;
            (0..lens[m] * c).map(|i| values[(i * 7 + m) % values.len()] + i as f32 * 0.01).collect()
        }).collect();

        // Reference: each modality in one chunk.
        let whole = run(&[(ACC, 0, lens[0]), (GYRO, 0, lens[1])], &data, start, None);
        prop_assert!(!whole.is_empty());

        // Same streams cut anywhere, interleaved in a random order that keeps each modality in order.
        let mut queues: Vec<Vec<(usize, usize, usize)>> = vec![
            cut(lens[0], &acc_cuts).into_iter().map(|(f, n)| (ACC, f, n)).collect(),
            cut(lens[1], &gyro_cuts).into_iter().map(|(f, n)| (GYRO, f, n)).collect(),
        ];
        let mut rng = order_seed;
        let mut order = Vec::new();
        while queues.iter().any(|q| !q.is_empty()) {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pick = (rng >> 33) as usize % 2;
            let q = if queues[pick].is_empty() { 1 - pick } else { pick };
            order.push(queues[q].remove(0));
        }
        let pieces = run(&order, &data, start, resend);
        prop_assert_eq!(whole, pieces);
    }
}
