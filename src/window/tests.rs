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
        assert_eq!(w.trigger, CloseTrigger::Data);
        let first = (w.end_unix_nanos / SEC * 10 - 20) as f32;
        let block = &w.input.modalities[ACC];
        assert_eq!(block[0], first);
        assert_eq!(block[19], first + 19.0);
        assert_eq!(block[20], first + 1000.0, "channel-major layout");
        assert!(w.input.modalities[GYRO].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn a_declared_silent_modality_holds_windows_until_the_watermark_passes() {
    let policy = WindowPolicy::default();
    let mut d = DeviceWindows::new(manifest(), policy, 0);
    d.declare(&[ACC, GYRO], 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0); // 0 … 2.9 s: watermark 0.9 s
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert!(out.is_empty(), "gyro was declared, so windows wait for it");
    assert_eq!(
        d.watermark(),
        Some(29 * SEC / 10 - policy.out_of_orderness_nanos)
    );
    d.push(ACC, 3 * SEC, &rows(30, 20, 3), 0); // … 4.9 s: watermark 2.9 s passes the end 2 s
    d.close_ready(0, &mut out);
    assert_eq!(
        out.iter()
            .map(|w| (w.end_unix_nanos / SEC, w.trigger))
            .collect::<Vec<_>>(),
        vec![(2, CloseTrigger::Watermark)]
    );
    assert_eq!(out[0].input.present, vec![true, false]);
}

#[test]
fn a_stalled_device_closes_every_window_its_data_reaches() {
    let policy = WindowPolicy::default();
    let mut d = DeviceWindows::new(manifest(), policy, 0);
    d.declare(&[ACC, GYRO], 0);
    d.push(ACC, 0, &rows(0, 50, 3), 0); // 0 … 4.9 s
    let mut out = Vec::new();
    d.close_ready(policy.stall_timeout_nanos - 1, &mut out);
    assert_eq!(out.len(), 1, "only the watermark's window (2 s) so far");
    d.close_ready(policy.stall_timeout_nanos, &mut out);
    assert_eq!(
        out.iter()
            .map(|w| (w.end_unix_nanos / SEC, w.trigger))
            .collect::<Vec<_>>(),
        vec![
            (2, CloseTrigger::Watermark),
            (3, CloseTrigger::Stall),
            (4, CloseTrigger::Stall),
            (5, CloseTrigger::Stall),
        ],
        "5 s: its last grid point 4.9 s is held; 6 s would need data the device has not sent"
    );
}

#[test]
fn a_stale_modality_stops_holding_windows() {
    let policy = WindowPolicy::default();
    let mut d = DeviceWindows::new(manifest(), policy, 0);
    d.declare(&[ACC, GYRO], 0);
    let mut out = Vec::new();
    for sec in 0..8 {
        d.push(ACC, sec * SEC, &rows(sec as usize * 10, 10, 3), sec * SEC);
        d.close_ready(sec * SEC, &mut out);
    }
    // Until 5 s gyro (declared, silent) holds windows to the watermark; after that acc's data closes them.
    let last = out.last().expect("windows");
    assert_eq!(
        (last.end_unix_nanos, last.trigger),
        (8 * SEC, CloseTrigger::Data)
    );
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, (2..=8).collect::<Vec<_>>(), "every window, in order");
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
    // A window with a hole waits for the watermark (the hole's data may still be in flight): 5 s closes
    // by it (watermark 7.4 − 2 = 5.4 s), 6 s waits.
    d.push(ACC, 45 * SEC / 10, &rows(45, 30, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![4]);
    // 7.5 … 7.9 s then 8.1 s onwards (watermark 8 s): 6 s closes by the watermark (absent), 7 s and 8 s by
    // data; 9 s holds the one-sample hole at 8.0 s and waits for the watermark.
    d.push(ACC, 75 * SEC / 10, &rows(75, 5, 3), 0);
    d.push(ACC, 81 * SEC / 10, &rows(81, 20, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![7, 8]);
    // Once the watermark passes 9 s the hole of 2 periods is bridged.
    d.push(ACC, 101 * SEC / 10, &rows(101, 10, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(
        out.iter()
            .map(|w| (w.end_unix_nanos / SEC, w.trigger))
            .collect::<Vec<_>>(),
        vec![(9, CloseTrigger::Watermark)]
    );
    assert_eq!(
        out[0].input.modalities[ACC][10], 80.0,
        "8.0 s interpolated between 7.9 and 8.1"
    );
}

#[test]
fn time_going_back_is_late_data_unless_a_hello_restarts_the_timeline() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 100 * SEC, &rows(0, 30, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(d.last_closed_end(), Some(103 * SEC));
    // A stray chunk from the past is refused whole and changes nothing.
    let o = d.push(ACC, 10 * SEC, &rows(0, 30, 3), 0);
    assert!(o.late_chunk);
    assert_eq!(o.samples, InsertStats::default());
    assert_eq!(d.last_closed_end(), Some(103 * SEC));
    assert_eq!(d.newest_sample(), Some(1029 * SEC / 10));
    d.push(ACC, 103 * SEC, &rows(30, 10, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(
        out.last().map(|w| w.end_unix_nanos),
        Some(104 * SEC),
        "the live timeline goes on"
    );
    // After a hello the device may start over.
    d.declare(&[], 0);
    let o = d.push(ACC, 10 * SEC, &rows(0, 30, 3), 0);
    assert!(o.timeline_restart && !o.late_chunk);
    assert_eq!(o.samples.late, 0, "after the restart nothing is late");
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert_eq!(out.last().map(|w| w.end_unix_nanos), Some(13 * SEC));
    let o = d.push(ACC, 1000 * SEC, &rows(0, 30, 3), 0);
    assert!(o.forward_jump, "forward jump is counted");
    let mut out = Vec::new();
    // 14 s and 15 s (the old tail, by the watermark), then 1001 s … 1003 s: not the ~990 empty windows
    // in between.
    assert_eq!(d.close_ready(0, &mut out), 5);
    assert_eq!(out.last().map(|w| w.end_unix_nanos), Some(1003 * SEC));
}

#[test]
fn a_hello_whose_next_chunk_continues_the_timeline_restarts_nothing() {
    let mut d = DeviceWindows::new(manifest(), WindowPolicy::default(), 0);
    d.push(ACC, 0, &rows(0, 30, 3), 0);
    d.close_ready(0, &mut Vec::new());
    // A reconnecting gateway says hello and re-sends its unacknowledged tail (2.5 … 3.4 s).
    d.declare(&[], SEC);
    let o = d.push(ACC, 25 * SEC / 10, &rows(25, 10, 3), SEC);
    assert!(!o.timeline_restart && !o.late_chunk);
    assert_eq!((o.samples.duplicate, o.samples.accepted), (5, 5));
    assert_eq!(d.last_closed_end(), Some(3 * SEC));
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
    assert!(out.iter().all(|w| w.trigger == CloseTrigger::Data));
    out.iter().map(|w| w.end_unix_nanos / SEC).collect()
}

#[test]
fn after_a_backward_clock_jump_only_modalities_sent_again_hold_windows() {
    // The device comes back (hello, clock reset to 10 s) with acc only, while gyro is not yet stale.
    let mut d = device_with_an_old_timeline();
    d.declare(&[], SEC);
    assert!(d.push(ACC, 10 * SEC, &rows(0, 30, 3), SEC).timeline_restart);
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
    assert!(d.push(ACC, 10 * SEC, &rows(0, 30, 3), SEC).timeline_restart);
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
    // Only the data closes windows here (the watermark is tested below): the streams may be far apart.
    let policy = WindowPolicy {
        out_of_orderness_nanos: 3600 * SEC,
        ..WindowPolicy::default()
    };
    let mut d = DeviceWindows::new(Arc::clone(&manifest), policy, 0);
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
    d.flush(0, &mut out);
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
        let content = |w: Vec<ClosedWindow>| {
            w.into_iter().map(|w| (w.end_unix_nanos, w.input)).collect::<Vec<_>>()
        };
        prop_assert_eq!(content(whole), content(pieces));
    }
}

// ---- Event time: device clocks, backlogs and delays (server time comes only from the `now` passed in) ----

/// Chunk length of the simulated devices.
const CHUNK_MS: i64 = 200;
/// A device-time origin on the hop grid.
const ORIGIN: i64 = 1_700_000_000 * SEC;

/// The chunks of a device streaming acc (10 Hz) and gyro (5 Hz) for `seconds`, in 200 ms chunks:
/// (modality, first row, rows, device time just after its last sample), in device-time order.
fn realtime_chunks(seconds: i64) -> Vec<(usize, usize, usize, i64)> {
    let mut out = Vec::new();
    for step in 0..seconds * 1000 / CHUNK_MS {
        let end = (step + 1) * CHUNK_MS * 1_000_000;
        out.push((ACC, step as usize * 2, 2, end));
        out.push((GYRO, step as usize, 1, end));
    }
    out
}

/// Streams `chunks` into a device whose clock is `offset` ahead of the server's; chunk `i` arrives at
/// server time `arrival(i)` (relative to the origin, must be sorted). The server ticks every 50 ms
/// until 10 s after the last arrival. Returns every window with its end shifted back onto server time.
fn stream(
    policy: WindowPolicy,
    offset: i64,
    chunks: &[(usize, usize, usize, i64)],
    arrival: impl Fn(usize) -> i64,
) -> Vec<(i64, CloseTrigger, ModelInputRef)> {
    let manifest = manifest();
    let server = |t: i64| ORIGIN + t;
    let mut d = DeviceWindows::new(Arc::clone(&manifest), policy, server(0));
    d.declare(&[ACC, GYRO], server(0));
    let mut out = Vec::new();
    let mut tick = 0;
    let last = arrival(chunks.len() - 1);
    for (i, &(m, from, n, _)) in chunks.iter().enumerate() {
        let at = arrival(i);
        while tick <= at {
            d.close_ready(server(tick), &mut out);
            tick += 50_000_000;
        }
        let spec = &manifest.modalities[m];
        let start = ORIGIN + offset + (from as f64 * 1e9 / spec.sample_rate_hz).round() as i64;
        let o = d.push(m, start, &rows(from, n, spec.channels)[..], server(at));
        assert!(!o.late_chunk, "chunk {i} refused as late");
        d.close_ready(server(at), &mut out);
    }
    while tick <= last + 10 * SEC {
        d.close_ready(server(tick), &mut out);
        tick += 50_000_000;
    }
    out.into_iter()
        .map(|w| {
            (
                w.end_unix_nanos - offset - ORIGIN,
                w.trigger,
                ModelInputRef(w.input),
            )
        })
        .collect()
}

/// A window's content, compared exactly.
#[derive(Debug, PartialEq)]
struct ModelInputRef(crate::model::ModelInput);

/// Ends (seconds after the origin) of the windows, asserting they come in order, one per hop, with both
/// modalities present.
fn assert_every_window(windows: &[(i64, CloseTrigger, ModelInputRef)], first: i64, last: i64) {
    let ends: Vec<i64> = windows.iter().map(|w| w.0).collect();
    assert_eq!(ends, (first..=last).map(|s| s * SEC).collect::<Vec<_>>());
    for w in windows {
        assert_eq!(w.2.0.present, vec![true, true], "window ending at {}", w.0);
    }
}

#[test]
fn device_clocks_far_behind_or_ahead_give_identical_windows() {
    let chunks = realtime_chunks(20);
    let in_real_time = |i: usize| chunks[i].3;
    let reference = stream(WindowPolicy::default(), 0, &chunks, in_real_time);
    assert_every_window(&reference, 2, 20);
    for offset_s in [-3600, -60, -2, 2, 60] {
        let windows = stream(
            WindowPolicy::default(),
            offset_s * SEC,
            &chunks,
            in_real_time,
        );
        assert_eq!(windows, reference, "device clock {offset_s} s off");
    }
}

#[test]
fn a_backlog_uploaded_after_60_s_offline_gets_every_window_in_order() {
    // Streams in real time for 10 s, is offline until 70 s, then uploads its backlog in bursts of 10 s of
    // data every 0.5 s (70 … 72.5 s) and goes on in real time.
    let chunks = realtime_chunks(90);
    let arrival = |i: usize| {
        let end = chunks[i].3;
        if end <= 10 * SEC {
            end
        } else {
            end.max(70 * SEC + (end - 1 - 10 * SEC) / (10 * SEC) * SEC / 2)
        }
    };
    for policy in [
        WindowPolicy::default(),
        WindowPolicy {
            stall_timeout_nanos: 200_000_000,
            ..WindowPolicy::default()
        },
    ] {
        let windows = stream(policy, -2 * SEC, &chunks, arrival);
        assert_every_window(&windows, 2, 90);
        let reference = stream(policy, 0, &chunks, |i| chunks[i].3);
        assert_eq!(
            windows.iter().map(|w| &w.2).collect::<Vec<_>>(),
            reference.iter().map(|w| &w.2).collect::<Vec<_>>(),
            "the backlog's windows equal those streamed live"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Chunks delayed by 0–3 s at random (so reordered within and across modalities) lose no window; with
    /// an out-of-orderness above the largest delay the windows equal those of an in-order stream.
    #[test]
    fn randomly_delayed_and_reordered_chunks_lose_no_window(seed in any::<u64>(), offset_s in -60i64..60) {
        let chunks = realtime_chunks(30);
        let mut rng = seed | 1;
        let mut delayed: Vec<(i64, (usize, usize, usize, i64))> = chunks
            .iter()
            .map(|&c| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (c.3 + (rng % 3_000_000_000) as i64, c)
            })
            .collect();
        delayed.sort_by_key(|(at, _)| *at);
        let arrivals: Vec<i64> = delayed.iter().map(|(at, _)| *at).collect();
        let order: Vec<_> = delayed.iter().map(|(_, c)| *c).collect();
        let windows = stream(WindowPolicy::default(), offset_s * SEC, &order, |i| arrivals[i]);
        // Data delayed past the watermark is missing from (or interpolated in) its windows, but every
        // window comes, in order.
        let ends: Vec<i64> = windows.iter().map(|w| w.0 / SEC).collect();
        prop_assert_eq!(ends, (2..=30).collect::<Vec<_>>());
        let patient = WindowPolicy { out_of_orderness_nanos: 4 * SEC, ..WindowPolicy::default() };
        let windows = stream(patient, offset_s * SEC, &order, |i| arrivals[i]);
        let reference = stream(patient, 0, &chunks, |i| chunks[i].3);
        prop_assert_eq!(
            windows.iter().map(|w| (w.0, &w.2)).collect::<Vec<_>>(),
            reference.iter().map(|w| (w.0, &w.2)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_per_device_phase_moves_the_window_ends_and_keeps_samples_on_the_grid() {
    let manifest = manifest();
    let policy = WindowPolicy {
        phases: crate::window::WindowPhase::PerDevice,
        phase_quantum_nanos: crate::window::phase_quantum(
            manifest.modalities.iter().map(|m| 1e9 / m.sample_rate_hz),
            SEC,
        ),
        ..WindowPolicy::default()
    }
    .for_device("watch-7");
    assert_eq!(
        policy.phase_quantum_nanos,
        SEC / 5,
        "lcm of 100 ms and 200 ms"
    );
    let phase = crate::window::device_phase("watch-7", SEC, SEC / 5);
    assert_eq!(policy.phase_nanos, phase);
    let mut d = DeviceWindows::new(manifest, policy, 0);
    d.push(ACC, 0, &rows(0, 60, 3), 0);
    let mut out = Vec::new();
    d.close_ready(0, &mut out);
    assert!(out.len() >= 3);
    for w in &out {
        assert_eq!(w.end_unix_nanos.rem_euclid(SEC), phase);
        // Samples on whole 100 ms steps land exactly on the grid points: passed through unchanged.
        let start = w.end_unix_nanos - 2 * SEC;
        if start >= 0 {
            assert_eq!(w.input.modalities[ACC][0], (start / (SEC / 10)) as f32);
        }
    }
}

#[test]
fn a_hop_longer_than_the_window_skips_the_data_between_windows_without_calling_it_late() {
    // 2-s windows every 5 s: the 3 s between a closed window and the next one's start serve no window.
    let policy = WindowPolicy {
        hop_nanos: 5 * SEC,
        ..WindowPolicy::default()
    };
    let mut d = DeviceWindows::new(manifest(), policy, 0);
    let mut out = Vec::new();
    let (mut unused, mut accepted) = (0, 0);
    for k in 0..150 {
        // 30 s of 200 ms chunks (2 samples at 10 Hz)
        let o = d.push(ACC, k * SEC / 5, &rows(2 * k as usize, 2, 3), 0);
        assert!(!o.late_chunk, "chunk {k} called late");
        assert_eq!(o.samples.late, 0, "chunk {k}");
        unused += o.samples.unused;
        accepted += o.samples.accepted;
        d.close_ready(0, &mut out);
    }
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![5, 10, 15, 20, 25, 30]);
    assert!(out.iter().all(|w| w.input.present == vec![true, false]));
    assert!(unused > 0, "the gaps between windows were skipped");
    assert_eq!(unused + accepted, 300);
    // Time going backwards past a closed window is still late data.
    assert!(d.push(ACC, 10 * SEC, &rows(0, 2, 3), 0).late_chunk);
}

#[test]
fn before_the_first_window_of_a_long_hop_only_its_data_is_held() {
    // 2-s windows every 60 s: 50 s of data arrive before the first window (ending at 60 s) could close.
    // Only the samples that window can use are held, not 50 s up to the buffer's cap.
    let policy = WindowPolicy {
        hop_nanos: 60 * SEC,
        ..WindowPolicy::default()
    };
    let mut d = DeviceWindows::new(manifest(), policy, 0);
    let mut out = Vec::new();
    let mut unused = 0;
    for k in 0..250 {
        // 0 .. 49.9 s in 200 ms chunks (2 samples at 10 Hz)
        let o = d.push(ACC, k * SEC / 5, &rows(2 * k as usize, 2, 3), 0);
        assert!(!o.late_chunk && o.samples.late == 0, "chunk {k}");
        unused += o.samples.unused;
        d.close_ready(0, &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(unused, 500, "no window reaches back to these samples");
    assert_eq!(d.buffered_samples(), 0);
    for k in 250..300 {
        d.push(ACC, k * SEC / 5, &rows(2 * k as usize, 2, 3), 0);
        assert!(d.buffered_samples() <= 22, "{} held", d.buffered_samples());
        d.close_ready(0, &mut out);
    }
    // The window [58 s, 60 s) and its interpolation reach (2 samples) were held, and it closed whole.
    let ends: Vec<i64> = out.iter().map(|w| w.end_unix_nanos / SEC).collect();
    assert_eq!(ends, vec![60]);
    assert_eq!(out[0].input.present, vec![true, false]);
}
