//! What the simulated devices measure: a fixed synthetic chunk per modality (default; the same bytes
//! every time, so chunks are pure template copies) or real DSADS recordings (`--dsads DIR`), each device
//! playing a subject's activities in a loop from its own starting row.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crossl_serve::model::manifest::{Manifest, ModalitySpec};
use crossl_serve::replay::dsads::{self, Dataset, RecordingPlan};

/// Samples per chunk of a modality: `chunk_ns` must hold a whole number of its sample periods.
pub fn samples_per_chunk(spec: &ModalitySpec, chunk_ns: i64) -> anyhow::Result<usize> {
    let exact = chunk_ns as f64 * spec.sample_rate_hz / 1e9;
    let n = exact.round();
    anyhow::ensure!(
        n >= 1.0 && (exact - n).abs() < 1e-6,
        "--chunk-ms {} ms holds {exact} samples of {} at {} Hz; pick a whole number of samples",
        chunk_ns / 1_000_000,
        spec.name,
        spec.sample_rate_hz
    );
    Ok(n as usize)
}

/// A plausible constant chunk: gravity on an accelerometer's last axis, small values elsewhere; a small
/// ramp so no two samples are equal.
pub fn synthetic_chunk(spec: &ModalitySpec, samples: usize) -> Vec<f32> {
    let acc = spec.sensor.as_deref() == Some("acc") || spec.name.ends_with("acc");
    (0..samples)
        .flat_map(|i| {
            (0..spec.channels).map(move |c| {
                let base = if acc && c + 1 == spec.channels {
                    9.81
                } else {
                    0.1 * (c as f32 + 1.0)
                };
                base + 0.01 * i as f32
            })
        })
        .collect()
}

/// DSADS recordings, one per subject, split per modality (manifest order) into row-major samples × 3.
pub struct DsadsSamples {
    /// `[subject][modality]` → rows × 3 values.
    columns: Vec<Vec<Arc<[f32]>>>,
    /// Rows used per recording: a whole number of chunks, so a chunk never wraps around.
    rows: usize,
    chunk_rows: usize,
}

impl DsadsSamples {
    /// Loads every activity and segment of `subjects` (p1..p8) from the raw UCI layout under `dir`. The
    /// manifest's modalities must all be DSADS modalities at 25 Hz.
    pub fn load(
        dir: &Path,
        subjects: &[String],
        manifest: &Manifest,
        chunk_ns: i64,
    ) -> anyhow::Result<Self> {
        let all = dsads::modalities();
        let mut picked = Vec::new();
        for spec in &manifest.modalities {
            let m = all.iter().find(|m| m.name == spec.name).with_context(|| {
                format!(
                    "--dsads: the model's modality {} is not a DSADS one",
                    spec.name
                )
            })?;
            anyhow::ensure!(
                spec.sample_rate_hz == dsads::SAMPLE_RATE_HZ
                    && spec.channels == dsads::MODALITY_CHANNELS,
                "--dsads: {} is {} Hz × {} channels in the model, DSADS has 25 Hz × 3",
                spec.name,
                spec.sample_rate_hz,
                spec.channels
            );
            picked.push(m.clone());
        }
        let chunk_rows = samples_per_chunk(&manifest.modalities[0], chunk_ns)?;
        let dataset = Dataset::open(dir)?;
        let mut columns = Vec::new();
        let mut rows = usize::MAX;
        for subject in subjects {
            let plan = RecordingPlan {
                subject: dsads::parse_subject(subject)?,
                activities: (0..dsads::ACTIVITIES.len()).collect(),
                first_segment: 0,
                segments: dsads::SEGMENTS_PER_ACTIVITY,
            };
            let recording = plan
                .load(&dataset)
                .with_context(|| format!("loading DSADS subject {subject}"))?;
            rows = rows.min(recording.rows());
            columns.push(
                picked
                    .iter()
                    .map(|m| Arc::from(recording.modality_rows(m, 0, recording.rows())))
                    .collect(),
            );
        }
        anyhow::ensure!(!columns.is_empty(), "--dsads-subjects is empty");
        let rows = rows - rows % chunk_rows;
        anyhow::ensure!(rows > 0, "DSADS recordings shorter than one chunk");
        Ok(Self {
            columns,
            rows,
            chunk_rows,
        })
    }

    /// The samples of `modality` for tick `tick` of device `device`: subject `device mod subjects`,
    /// starting at a device-specific row so that devices do not send identical data.
    pub fn chunk(&self, device: u32, modality: usize, tick: u32) -> &[f32] {
        let subject = device as usize % self.columns.len();
        let chunks = self.rows / self.chunk_rows;
        let first = (device as usize).wrapping_mul(7919) % chunks;
        let row = ((first + tick as usize) % chunks) * self.chunk_rows;
        let channels = dsads::MODALITY_CHANNELS;
        &self.columns[subject][modality][row * channels..(row + self.chunk_rows) * channels]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate: f64, sensor: &str) -> ModalitySpec {
        serde_json::from_value(serde_json::json!({
            "name": format!("x_{sensor}"), "sensor": sensor, "channels": 3,
            "sample_rate_hz": rate, "window_samples": 125, "input": "x"
        }))
        .expect("a modality spec")
    }

    #[test]
    fn chunks_hold_whole_samples() {
        assert_eq!(
            samples_per_chunk(&spec(25.0, "acc"), 200_000_000).unwrap(),
            5
        );
        assert_eq!(
            samples_per_chunk(&spec(25.0, "acc"), 1_000_000_000).unwrap(),
            25
        );
        assert!(samples_per_chunk(&spec(25.0, "acc"), 30_000_000).is_err());
        assert!(samples_per_chunk(&spec(25.0, "acc"), 10_000_000).is_err());
    }

    #[test]
    fn synthetic_chunks_are_finite_rows_of_channels() {
        let acc = synthetic_chunk(&spec(25.0, "acc"), 5);
        assert_eq!(acc.len(), 15);
        assert!((acc[2] - 9.81).abs() < 1e-6 && acc.iter().all(|v| v.is_finite()));
        let gyro = synthetic_chunk(&spec(25.0, "gyro"), 5);
        assert!(gyro.iter().all(|v| v.abs() < 1.0));
    }
}
