//! What the replay client sends: per simulated device a continuous DSADS recording, cut into chunks of
//! `chunk_samples` rows per modality, minus the dropped units/sensors and random per-chunk dropouts.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::dsads::{MODALITY_CHANNELS, Modality, Recording, SAMPLE_RATE_HZ};

/// One chunk on the wire, transport-neutral.
#[derive(Clone, Debug, PartialEq)]
pub struct OutChunk {
    pub device_id: String,
    pub modality: String,
    pub start_unix_nanos: i64,
    /// Row-major samples × 3 channels.
    pub samples: Vec<f32>,
}

impl OutChunk {
    pub fn sample_count(&self) -> usize {
        self.samples.len() / MODALITY_CHANNELS
    }
}

/// Nanoseconds from the recording start to row `row` at 25 Hz.
pub fn row_offset_nanos(row: usize) -> i64 {
    (row as f64 * 1e9 / SAMPLE_RATE_HZ).round() as i64
}

/// One simulated device: its recording, the modalities it sends and its clock origin.
#[derive(Clone, Debug)]
pub struct DeviceSchedule {
    pub device_id: String,
    pub subject: u32,
    pub recording: Recording,
    /// Modalities this device sends (after --drop-units / --drop-sensors).
    pub modalities: Vec<Modality>,
    /// Device-clock time of row 0.
    pub start_unix_nanos: i64,
}

impl DeviceSchedule {
    /// Number of send steps (each step = one chunk per modality).
    pub fn steps(&self, chunk_samples: usize) -> usize {
        self.recording.rows().div_ceil(chunk_samples)
    }

    /// The chunks of step `step`, with random dropouts applied (`dropout` = probability of skipping one
    /// modality's chunk).
    pub fn chunks(
        &self,
        step: usize,
        chunk_samples: usize,
        dropout: f64,
        rng: &mut StdRng,
    ) -> Vec<OutChunk> {
        let first = step * chunk_samples;
        let last = (first + chunk_samples).min(self.recording.rows());
        if first >= last {
            return Vec::new();
        }
        let start_unix_nanos = self.start_unix_nanos + row_offset_nanos(first);
        self.modalities
            .iter()
            .filter(|_| dropout <= 0.0 || !rng.random_bool(dropout.min(1.0)))
            .map(|m| OutChunk {
                device_id: self.device_id.clone(),
                modality: m.name.clone(),
                start_unix_nanos,
                samples: self.recording.modality_rows(m, first, last),
            })
            .collect()
    }

    /// The true activity of a window `[end − window, end)` of this device, `None` when the window is not
    /// entirely inside the recording or straddles an activity change.
    pub fn truth(&self, window_end_unix_nanos: i64, window_seconds: f64) -> Option<usize> {
        let period = 1e9 / SAMPLE_RATE_HZ;
        let end = (window_end_unix_nanos - self.start_unix_nanos) as f64;
        let start = end - window_seconds * 1e9;
        // Rows whose sample time lies in [start, end).
        let first_row = (start / period).ceil() as i64;
        let end_row = (end / period).ceil() as i64;
        self.recording.activity_of_span(first_row, end_row)
    }

    /// Whether the window `[end − window, end)` lies entirely inside the recording.
    pub fn window_inside(&self, window_end_unix_nanos: i64, window_seconds: f64) -> bool {
        let start = window_end_unix_nanos - (window_seconds * 1e9).round() as i64;
        start >= self.start_unix_nanos && window_end_unix_nanos <= self.end_unix_nanos()
    }

    /// Windows on the device's hop grid (`k · hop + phase_nanos`, the server's phase for this device)
    /// that lie entirely inside the recording: the predictions a device should get back.
    pub fn windows_inside(&self, window_seconds: f64, hop_seconds: f64, phase_nanos: i64) -> u64 {
        let hop = (hop_seconds * 1e9).round() as i64;
        let window = (window_seconds * 1e9).round() as i64;
        if hop <= 0 {
            return 0;
        }
        let earliest = self.start_unix_nanos + window - phase_nanos;
        let first = earliest.div_euclid(hop) + i64::from(earliest.rem_euclid(hop) != 0);
        let last = (self.end_unix_nanos() - phase_nanos).div_euclid(hop);
        (last - first + 1).max(0) as u64
    }

    /// Device-clock end time of the recording (just after its last sample).
    pub fn end_unix_nanos(&self) -> i64 {
        self.start_unix_nanos + row_offset_nanos(self.recording.rows())
    }
}

/// Seeded RNG for the dropouts, so a replay is reproducible.
pub fn dropout_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Drops the modalities whose unit or sensor is listed. Unknown names are an error, not a silent no-op.
pub fn select_modalities(
    all: Vec<Modality>,
    drop_units: &[String],
    drop_sensors: &[String],
) -> anyhow::Result<Vec<Modality>> {
    for unit in drop_units {
        anyhow::ensure!(
            super::dsads::UNITS.contains(&unit.as_str()),
            "unknown unit {unit:?} in --drop-units (expected one of {:?})",
            super::dsads::UNITS
        );
    }
    for sensor in drop_sensors {
        anyhow::ensure!(
            super::dsads::SENSORS.contains(&sensor.as_str()),
            "unknown sensor {sensor:?} in --drop-sensors (expected one of {:?})",
            super::dsads::SENSORS
        );
    }
    let kept: Vec<_> = all
        .into_iter()
        .filter(|m| {
            !drop_units.iter().any(|u| u == m.unit) && !drop_sensors.iter().any(|s| s == m.sensor)
        })
        .collect();
    anyhow::ensure!(
        !kept.is_empty(),
        "--drop-units/--drop-sensors leave no modality to send"
    );
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::super::dsads::{COLUMNS, Segment, modalities};
    use super::*;

    fn schedule(rows_per_activity: &[(usize, usize)]) -> DeviceSchedule {
        let mut recording = Recording::default();
        let mut row = 0;
        for &(activity, rows) in rows_per_activity {
            let mut values = Vec::new();
            for r in 0..rows {
                values.extend((0..COLUMNS).map(|c| ((row + r) * 1000 + c) as f32));
            }
            row += rows;
            recording.push_segment(&Segment { activity, values });
        }
        DeviceSchedule {
            device_id: "d".into(),
            subject: 1,
            recording,
            modalities: modalities(),
            start_unix_nanos: 1_000_000_000_000,
        }
    }

    #[test]
    fn chunks_tile_the_recording_with_exact_timestamps() {
        let s = schedule(&[(0, 60)]);
        let mut rng = dropout_rng(1);
        assert_eq!(s.steps(25), 3);
        let step1 = s.chunks(1, 25, 0.0, &mut rng);
        assert_eq!(step1.len(), 15);
        assert_eq!(step1[0].modality, "torso_acc");
        assert_eq!(step1[0].start_unix_nanos, 1_000_000_000_000 + 1_000_000_000);
        assert_eq!(step1[0].sample_count(), 25);
        assert_eq!(step1[0].samples[..3], [25_000.0, 25_001.0, 25_002.0]);
        let last = s.chunks(2, 25, 0.0, &mut rng);
        assert_eq!(last[0].sample_count(), 10);
        assert!(s.chunks(3, 25, 0.0, &mut rng).is_empty());
        assert_eq!(s.end_unix_nanos(), 1_000_000_000_000 + 2_400_000_000);
    }

    #[test]
    fn dropout_is_seeded_and_roughly_the_asked_fraction() {
        let s = schedule(&[(0, 25 * 200)]);
        let count = |seed| {
            let mut rng = dropout_rng(seed);
            (0..200)
                .map(|k| s.chunks(k, 25, 0.25, &mut rng).len())
                .sum::<usize>()
        };
        assert_eq!(count(7), count(7));
        let kept = count(7) as f64 / (200.0 * 15.0);
        assert!((0.70..0.80).contains(&kept), "kept {kept}");
    }

    #[test]
    fn truth_ignores_partial_and_straddling_windows() {
        // 10 s of activity 3 then 10 s of activity 7; 5 s windows.
        let s = schedule(&[(3, 250), (7, 250)]);
        let t = |secs: i64| s.start_unix_nanos + secs * 1_000_000_000;
        assert_eq!(s.truth(t(4), 5.0), None); // starts before the recording
        assert_eq!(s.truth(t(5), 5.0), Some(3));
        assert_eq!(s.truth(t(10), 5.0), Some(3));
        assert_eq!(s.truth(t(11), 5.0), None); // straddles the change at 10 s
        assert_eq!(s.truth(t(15), 5.0), Some(7));
        assert_eq!(s.truth(t(20), 5.0), Some(7));
        assert_eq!(s.truth(t(21), 5.0), None); // past the end
    }

    #[test]
    fn counts_the_windows_inside_the_recording() {
        // 20 s recording starting on a whole second: 5 s windows ending at 5, 6, …, 20 s → 16.
        let s = schedule(&[(3, 250), (7, 250)]);
        assert_eq!(s.windows_inside(5.0, 1.0, 0), 16);
        assert_eq!(s.windows_inside(5.0, 2.0, 0), 8);
        assert_eq!(s.windows_inside(30.0, 1.0, 0), 0);
        // Window ends at k s + 0.56 s: one fewer fits.
        assert_eq!(s.windows_inside(5.0, 1.0, 560_000_000), 15);
        assert!(s.window_inside(s.start_unix_nanos + 5 * 1_000_000_000, 5.0));
        assert!(!s.window_inside(s.start_unix_nanos + 4 * 1_000_000_000, 5.0));
        assert!(!s.window_inside(s.start_unix_nanos + 21 * 1_000_000_000, 5.0));
    }

    #[test]
    fn drop_filters_by_unit_and_sensor_and_reject_unknown_names() {
        let kept = select_modalities(modalities(), &["left_arm".into()], &["mag".into()]).unwrap();
        assert_eq!(kept.len(), 8);
        assert!(
            kept.iter()
                .all(|m| m.unit != "left_arm" && m.sensor != "mag")
        );
        assert!(select_modalities(modalities(), &["tail".into()], &[]).is_err());
        assert!(select_modalities(modalities(), &[], &["baro".into()]).is_err());
        let all_units: Vec<String> = super::super::dsads::UNITS
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert!(select_modalities(modalities(), &all_units, &[]).is_err());
    }
}
