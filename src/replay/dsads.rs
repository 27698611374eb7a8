//! Reader for the raw DSADS layout (`data/aXX/pY/sZZ.txt`, 125 rows × 45 columns at 25 Hz) and the
//! continuous per-device recordings the replay client streams.
//!
//! Column = unit·9 + sensor·3 + axis; a modality is one sensor at one unit (`torso_acc`, `left_leg_mag`, …),
//! named exactly like the bundled model's manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

/// Body units in column order.
pub const UNITS: [&str; 5] = ["torso", "right_arm", "left_arm", "right_leg", "left_leg"];
/// Sensors in column order within a unit.
pub const SENSORS: [&str; 3] = ["acc", "gyro", "mag"];
/// Activities a01..a19 in order; the model's classes use the same order and names.
pub const ACTIVITIES: [&str; 19] = [
    "sitting",
    "standing",
    "lying_on_back",
    "lying_on_right_side",
    "ascending_stairs",
    "descending_stairs",
    "standing_in_elevator",
    "moving_in_elevator",
    "walking_in_parking_lot",
    "walking_on_treadmill_flat",
    "walking_on_treadmill_inclined",
    "running_on_treadmill",
    "exercising_on_stepper",
    "exercising_on_cross_trainer",
    "cycling_horizontal",
    "cycling_vertical",
    "rowing",
    "jumping",
    "playing_basketball",
];
pub const SAMPLE_RATE_HZ: f64 = 25.0;
pub const SEGMENT_ROWS: usize = 125;
pub const COLUMNS: usize = 45;
pub const SEGMENTS_PER_ACTIVITY: usize = 60;
/// Channels of one modality (x, y, z).
pub const MODALITY_CHANNELS: usize = 3;

/// One DSADS modality: a sensor at a body unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modality {
    pub name: String,
    pub unit: &'static str,
    pub sensor: &'static str,
    /// First of the three consecutive columns (x, y, z).
    pub first_column: usize,
}

/// All 15 modalities in column order.
pub fn modalities() -> Vec<Modality> {
    let mut out = Vec::with_capacity(UNITS.len() * SENSORS.len());
    for (u, unit) in UNITS.iter().enumerate() {
        for (s, sensor) in SENSORS.iter().enumerate() {
            out.push(Modality {
                name: format!("{unit}_{sensor}"),
                unit,
                sensor,
                first_column: u * 9 + s * 3,
            });
        }
    }
    out
}

/// Parses an activity as `a09`, `9` or a class name such as `walking_in_parking_lot`; returns 0-based index.
pub fn parse_activity(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    if let Some(i) = ACTIVITIES.iter().position(|a| *a == t) {
        return Ok(i);
    }
    let digits = t.strip_prefix('a').unwrap_or(t);
    match digits.parse::<usize>() {
        Ok(n) if (1..=ACTIVITIES.len()).contains(&n) => Ok(n - 1),
        _ => bail!(
            "unknown DSADS activity {t:?} (expected a01..a19 or a class name such as \"sitting\")"
        ),
    }
}

/// Parses a subject as `p3` or `3`; returns the 1-based subject number.
pub fn parse_subject(text: &str) -> anyhow::Result<u32> {
    let t = text.trim();
    let digits = t.strip_prefix('p').unwrap_or(t);
    match digits.parse::<u32>() {
        Ok(n) if (1..=8).contains(&n) => Ok(n),
        _ => bail!("unknown DSADS subject {t:?} (expected p1..p8)"),
    }
}

/// The dataset root. Accepts the folder that holds `data/` or `data/` itself.
#[derive(Clone, Debug)]
pub struct Dataset {
    data_dir: PathBuf,
}

impl Dataset {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let candidates = [path.join("data"), path.to_path_buf()];
        for dir in candidates {
            if dir.join("a01").is_dir() {
                return Ok(Self { data_dir: dir });
            }
        }
        bail!(
            "{} is not a DSADS folder: expected {}/data/a01/p1/s01.txt (unpack dsads_p1-p6.tar.xz there)",
            path.display(),
            path.display()
        )
    }

    pub fn segment_path(&self, activity: usize, subject: u32, segment: usize) -> PathBuf {
        self.data_dir
            .join(format!("a{:02}", activity + 1))
            .join(format!("p{subject}"))
            .join(format!("s{:02}.txt", segment + 1))
    }

    /// Reads one 5 s segment: 125 rows of 45 values.
    pub fn read_segment(
        &self,
        activity: usize,
        subject: u32,
        segment: usize,
    ) -> anyhow::Result<Segment> {
        let path = self.segment_path(activity, subject, segment);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Segment::parse(&text, activity).with_context(|| format!("parsing {}", path.display()))
    }
}

/// One DSADS segment: `rows` × 45 values, row-major.
#[derive(Clone, Debug)]
pub struct Segment {
    pub activity: usize,
    pub values: Vec<f32>,
}

impl Segment {
    pub fn parse(text: &str, activity: usize) -> anyhow::Result<Self> {
        let mut values = Vec::with_capacity(SEGMENT_ROWS * COLUMNS);
        let mut rows = 0;
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let before = values.len();
            for field in line.split(',') {
                let v: f32 = field
                    .trim()
                    .parse()
                    .with_context(|| format!("line {}: bad number {field:?}", line_no + 1))?;
                values.push(v);
            }
            ensure!(
                values.len() - before == COLUMNS,
                "line {}: expected {COLUMNS} columns, found {}",
                line_no + 1,
                values.len() - before
            );
            rows += 1;
        }
        ensure!(rows > 0, "no rows");
        Ok(Self { activity, values })
    }

    pub fn rows(&self) -> usize {
        self.values.len() / COLUMNS
    }
}

/// A continuous recording: segments played back to back, each row one sample at 25 Hz.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// rows × 45, row-major.
    values: Vec<f32>,
    /// (first row, activity) at each activity change, ascending.
    activity_starts: Vec<(usize, usize)>,
}

impl Recording {
    pub fn push_segment(&mut self, segment: &Segment) {
        let first_row = self.rows();
        if self.activity_starts.last().map(|&(_, a)| a) != Some(segment.activity) {
            self.activity_starts.push((first_row, segment.activity));
        }
        self.values.extend_from_slice(&segment.values);
    }

    pub fn rows(&self) -> usize {
        self.values.len() / COLUMNS
    }

    pub fn duration_seconds(&self) -> f64 {
        self.rows() as f64 / SAMPLE_RATE_HZ
    }

    /// Rows `[start, end)` of one modality, row-major samples × 3 channels.
    pub fn modality_rows(&self, modality: &Modality, start: usize, end: usize) -> Vec<f32> {
        let end = end.min(self.rows());
        let mut out = Vec::with_capacity(end.saturating_sub(start) * MODALITY_CHANNELS);
        for row in start..end {
            let base = row * COLUMNS + modality.first_column;
            out.extend_from_slice(&self.values[base..base + MODALITY_CHANNELS]);
        }
        out
    }

    /// The activity of row `row`.
    pub fn activity_at(&self, row: usize) -> Option<usize> {
        if row >= self.rows() {
            return None;
        }
        let idx = self
            .activity_starts
            .partition_point(|&(first, _)| first <= row);
        idx.checked_sub(1).map(|i| self.activity_starts[i].1)
    }

    /// The single activity covering rows `[start, end)`, or `None` when the span leaves the recording or
    /// straddles an activity change (such windows are not scored).
    pub fn activity_of_span(&self, start: i64, end: i64) -> Option<usize> {
        if start < 0 || end <= start || end as usize > self.rows() {
            return None;
        }
        let first = self.activity_at(start as usize)?;
        let last = self.activity_at(end as usize - 1)?;
        (first == last
            && !self
                .activity_starts
                .iter()
                .any(|&(row, _)| row > start as usize && row < end as usize))
        .then_some(first)
    }
}

/// Which segments a device plays: for every activity in order, `segments` consecutive segments of its
/// subject starting at `first_segment` (wrapping after s60).
#[derive(Clone, Debug)]
pub struct RecordingPlan {
    pub subject: u32,
    pub activities: Vec<usize>,
    pub first_segment: usize,
    pub segments: usize,
}

impl RecordingPlan {
    pub fn load(&self, dataset: &Dataset) -> anyhow::Result<Recording> {
        let mut recording = Recording::default();
        for &activity in &self.activities {
            for k in 0..self.segments {
                let segment = (self.first_segment + k) % SEGMENTS_PER_ACTIVITY;
                recording.push_segment(&dataset.read_segment(activity, self.subject, segment)?);
            }
        }
        Ok(recording)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(activity: usize, rows: usize, fill: f32) -> Segment {
        Segment {
            activity,
            values: vec![fill; rows * COLUMNS],
        }
    }

    #[test]
    fn modalities_follow_the_column_layout() {
        let m = modalities();
        assert_eq!(m.len(), 15);
        assert_eq!(m[0].name, "torso_acc");
        assert_eq!(m[0].first_column, 0);
        assert_eq!(m[5].name, "right_arm_mag");
        assert_eq!(m[5].first_column, 15);
        assert_eq!(m[14].name, "left_leg_mag");
        assert_eq!(m[14].first_column, 42);
    }

    #[test]
    fn parses_activities_and_subjects() {
        assert_eq!(parse_activity("a01").unwrap(), 0);
        assert_eq!(parse_activity("19").unwrap(), 18);
        assert_eq!(parse_activity("walking_in_parking_lot").unwrap(), 8);
        assert!(parse_activity("a20").is_err());
        assert!(parse_activity("a00").is_err());
        assert_eq!(parse_subject("p6").unwrap(), 6);
        assert!(parse_subject("p9").is_err());
    }

    #[test]
    fn parses_a_segment_and_rejects_bad_rows() {
        let row: Vec<String> = (0..COLUMNS).map(|c| format!("{c}.5")).collect();
        let text = format!("{}\n{}\n", row.join(","), row.join(","));
        let seg = Segment::parse(&text, 3).unwrap();
        assert_eq!(seg.rows(), 2);
        assert_eq!(seg.values[44], 44.5);
        assert!(Segment::parse("1,2,3\n", 0).is_err());
        assert!(Segment::parse(&text.replace("7.5", "x"), 0).is_err());
        assert!(Segment::parse("", 0).is_err());
    }

    #[test]
    fn modality_rows_pick_three_columns_per_row() {
        let mut values = Vec::new();
        for r in 0..2 {
            values.extend((0..COLUMNS).map(|c| (r * 100 + c) as f32));
        }
        let mut rec = Recording::default();
        rec.push_segment(&Segment {
            activity: 0,
            values,
        });
        let left_leg_gyro = modalities()
            .into_iter()
            .find(|m| m.name == "left_leg_gyro")
            .unwrap();
        assert_eq!(
            rec.modality_rows(&left_leg_gyro, 0, 2),
            vec![39.0, 40.0, 41.0, 139.0, 140.0, 141.0]
        );
        assert_eq!(
            rec.modality_rows(&left_leg_gyro, 1, 99),
            vec![139.0, 140.0, 141.0]
        );
    }

    #[test]
    fn spans_straddling_an_activity_change_have_no_label() {
        let mut rec = Recording::default();
        rec.push_segment(&segment(4, 125, 0.0));
        rec.push_segment(&segment(4, 125, 0.0));
        rec.push_segment(&segment(8, 125, 0.0));
        assert_eq!(rec.rows(), 375);
        assert_eq!(rec.activity_at(0), Some(4));
        assert_eq!(rec.activity_at(249), Some(4));
        assert_eq!(rec.activity_at(250), Some(8));
        assert_eq!(rec.activity_at(375), None);
        // Same activity across a segment boundary is one continuous label.
        assert_eq!(rec.activity_of_span(100, 225), Some(4));
        assert_eq!(rec.activity_of_span(125, 250), Some(4));
        assert_eq!(rec.activity_of_span(126, 251), None);
        assert_eq!(rec.activity_of_span(250, 375), Some(8));
        assert_eq!(rec.activity_of_span(-1, 124), None);
        assert_eq!(rec.activity_of_span(300, 376), None);
    }

    #[test]
    fn reads_the_real_dataset_when_present() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let root = PathBuf::from(home).join(".cache/crossl/dsads");
        let Ok(dataset) = Dataset::open(&root) else {
            eprintln!("DSADS not unpacked at {}; skipping", root.display());
            return;
        };
        let plan = RecordingPlan {
            subject: 1,
            activities: vec![0, 8],
            first_segment: 59,
            segments: 2,
        };
        let rec = plan.load(&dataset).unwrap();
        assert_eq!(rec.rows(), 4 * SEGMENT_ROWS);
        assert_eq!(rec.activity_of_span(0, 250), Some(0));
        assert_eq!(rec.activity_of_span(250, 500), Some(8));
        // Torso acceleration at rest is about 1 g.
        let torso = &modalities()[0];
        let first = rec.modality_rows(torso, 0, 1);
        let g = first.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((5.0..15.0).contains(&g), "|acc| = {g}");
    }
}
