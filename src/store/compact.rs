//! How the in-memory store keeps a device's older predictions: a compact form of [`Prediction`].
//!
//! A device's history is the largest per-device cost of a long-running replica (`--history-len` 256 ×
//! 430 bytes ≈ 107 KiB as full predictions; `cargo bench --bench device_memory`). Older entries are kept
//! here instead: probabilities as 16-bit fixed point (exact to 1/65535 ≈ 1.5e-5), embeddings as IEEE
//! half floats (relative error ≤ 2^-11), timings as f32, and no copy of the device id or the label
//! text. Values outside what a format holds exactly enough (probabilities outside [0, 1], embeddings
//! beyond half's range, non-finite values) are kept as f32, so nothing is ever clipped.

use std::sync::{Arc, RwLock};

use half::f16;

use super::personal::GeneralAnswer;
use super::{Prediction, Timings};

/// Floats in the narrowest form that keeps them well enough (see the module docs).
#[derive(Clone, Debug)]
enum Packed {
    /// Values in [0, 1] as round(v × 65535).
    Unit(Box<[u16]>),
    Half(Box<[f16]>),
    Full(Box<[f32]>),
}

impl Packed {
    fn probabilities(values: &[f32]) -> Self {
        if values.iter().all(|v| (0.0..=1.0).contains(v)) {
            Self::Unit(
                values
                    .iter()
                    .map(|v| (v * 65535.0).round() as u16)
                    .collect(),
            )
        } else {
            Self::Full(values.into())
        }
    }

    fn embedding(values: &[f32]) -> Self {
        // Half holds up to 65504; beyond ±60000 (or NaN/inf) the f32 is kept.
        if values.iter().all(|v| v.abs() <= 60_000.0) {
            Self::Half(values.iter().map(|&v| f16::from_f32(v)).collect())
        } else {
            Self::Full(values.into())
        }
    }

    fn to_vec(&self) -> Vec<f32> {
        match self {
            Self::Unit(q) => q.iter().map(|&q| f32::from(q) / 65535.0).collect(),
            Self::Half(h) => h.iter().map(|h| h.to_f32()).collect(),
            Self::Full(f) => f.to_vec(),
        }
    }
}

/// One stored prediction of a device's history (all but its newest, which the store keeps whole).
#[derive(Clone, Debug)]
pub(super) struct CompactPrediction {
    pub(super) window_end_unix_nanos: i64,
    label: Arc<str>,
    class_index: u32,
    batch_size: u32,
    probabilities: Packed,
    embedding: Packed,
    present_modalities: Arc<[String]>,
    queue_seconds: f32,
    compute_seconds: f32,
    end_to_end_seconds: f32,
    personalized: bool,
    general: Option<Box<GeneralAnswer>>,
}

impl CompactPrediction {
    pub(super) fn new(p: &Prediction, labels: &LabelTable) -> Self {
        Self {
            window_end_unix_nanos: p.window_end_unix_nanos,
            label: labels.intern(&p.label),
            class_index: u32::try_from(p.class_index).unwrap_or(u32::MAX),
            batch_size: u32::try_from(p.timings.batch_size).unwrap_or(u32::MAX),
            probabilities: Packed::probabilities(&p.probabilities),
            embedding: Packed::embedding(&p.embedding),
            present_modalities: Arc::clone(&p.present_modalities),
            queue_seconds: p.timings.queue_seconds as f32,
            compute_seconds: p.timings.compute_seconds as f32,
            end_to_end_seconds: p.timings.end_to_end_seconds as f32,
            personalized: p.personalized,
            general: p.general.clone(),
        }
    }

    pub(super) fn to_prediction(&self, device_id: &str) -> Prediction {
        Prediction {
            device_id: device_id.to_owned(),
            window_end_unix_nanos: self.window_end_unix_nanos,
            label: self.label.to_string(),
            class_index: self.class_index as usize,
            probabilities: self.probabilities.to_vec(),
            embedding: self.embedding.to_vec(),
            present_modalities: Arc::clone(&self.present_modalities),
            timings: Timings {
                queue_seconds: f64::from(self.queue_seconds),
                compute_seconds: f64::from(self.compute_seconds),
                end_to_end_seconds: f64::from(self.end_to_end_seconds),
                batch_size: self.batch_size as usize,
            },
            personalized: self.personalized,
            general: self.general.clone(),
        }
    }
}

/// Labels shared by every stored prediction: a model has a handful of classes, so each history entry
/// points at one shared string instead of owning a copy.
#[derive(Debug, Default)]
pub(super) struct LabelTable {
    labels: RwLock<Vec<Arc<str>>>,
}

/// More distinct labels than any model has classes: past it a label is not shared (bounded memory).
const MAX_SHARED_LABELS: usize = 4096;

impl LabelTable {
    fn intern(&self, label: &str) -> Arc<str> {
        let find = |labels: &[Arc<str>]| labels.iter().find(|l| &***l == label).cloned();
        if let Some(l) = find(&self.labels.read().unwrap_or_else(|e| e.into_inner())) {
            return l;
        }
        let mut labels = self.labels.write().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = find(&labels) {
            return l;
        }
        let l: Arc<str> = label.into();
        if labels.len() < MAX_SHARED_LABELS {
            labels.push(Arc::clone(&l));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(probabilities: Vec<f32>, embedding: Vec<f32>) -> Prediction {
        Prediction {
            device_id: "d".into(),
            window_end_unix_nanos: 42,
            label: "walking".into(),
            class_index: 3,
            probabilities,
            embedding,
            present_modalities: vec!["torso_acc".to_string()].into(),
            timings: Timings {
                queue_seconds: 0.001,
                compute_seconds: 0.002,
                end_to_end_seconds: 0.0125,
                batch_size: 17,
            },
            personalized: true,
            general: Some(Box::new(GeneralAnswer {
                label: "running".into(),
                class_index: 4,
                probabilities: vec![0.25, 0.75],
            })),
        }
    }

    #[test]
    fn round_trip_keeps_everything_within_the_stated_precision() {
        let p = prediction(
            vec![0.0, 1.0, 0.123_456_7, 0.876_543_3],
            vec![-3.25, 0.1, 1234.5, 1e-3],
        );
        let back = CompactPrediction::new(&p, &LabelTable::default()).to_prediction("d");
        for (a, b) in p.probabilities.iter().zip(&back.probabilities) {
            assert!((a - b).abs() <= 1.0 / 65535.0, "{a} vs {b}");
        }
        assert_eq!(back.probabilities[0], 0.0);
        assert_eq!(back.probabilities[1], 1.0);
        for (a, b) in p.embedding.iter().zip(&back.embedding) {
            assert!((a - b).abs() <= a.abs() / 2048.0 + 1e-7, "{a} vs {b}");
        }
        let (mut p_cmp, mut back_cmp) = (p.clone(), back.clone());
        for x in [&mut p_cmp, &mut back_cmp] {
            x.probabilities.clear();
            x.embedding.clear();
            x.timings = Timings::default();
        }
        assert_eq!(back_cmp, p_cmp, "everything else is kept exactly");
        assert_eq!(back.timings.batch_size, 17);
        assert!((back.timings.end_to_end_seconds - 0.0125).abs() < 1e-9);
    }

    #[test]
    fn values_a_narrow_form_would_change_are_kept_whole() {
        let p = prediction(vec![1.5, -0.5], vec![1e6, f32::NAN]);
        let back = CompactPrediction::new(&p, &LabelTable::default()).to_prediction("d");
        assert_eq!(back.probabilities, p.probabilities);
        assert_eq!(back.embedding[0], 1e6);
        assert!(back.embedding[1].is_nan());
    }

    #[test]
    fn labels_are_shared() {
        let table = LabelTable::default();
        let p = prediction(vec![1.0], vec![]);
        let (a, b) = (
            CompactPrediction::new(&p, &table),
            CompactPrediction::new(&p, &table),
        );
        assert!(Arc::ptr_eq(&a.label, &b.label));
    }
}
