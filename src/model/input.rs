//! The tensors of one window as the model sees them (docs/model-contract.md), shared by window assembly,
//! the one-window predict path and the batcher.

use crate::error::Error;
use crate::model::Manifest;

/// One window's model inputs: per manifest modality a channel-major `[channels × window_samples]` block
/// (the ONNX layout without the batch axis) and its presence flag. Absent modalities hold zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInput {
    pub modalities: Vec<Vec<f32>>,
    pub present: Vec<bool>,
}

/// One window's model outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOutput {
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
    pub embedding: Vec<f32>,
}

impl ModelOutput {
    /// Index of the largest probability.
    pub fn class_index(&self) -> usize {
        self.probabilities
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            })
            .0
    }
}

impl ModelInput {
    /// All modalities absent (zeros) — warm-up input.
    pub fn zeros(manifest: &Manifest) -> Self {
        Self {
            modalities: manifest
                .modalities
                .iter()
                .map(|m| vec![0.0; m.window_len()])
                .collect(),
            present: vec![false; manifest.modalities.len()],
        }
    }

    /// Builds the input from samples-major data (the `POST /v1/predict` layout: `window_samples` rows of
    /// `channels` values, flattened row-major) keyed by modality name; an omitted modality is absent, and
    /// at least one must be given. Errors say which modality and what is wrong.
    pub fn from_samples_major<'a>(
        manifest: &Manifest,
        modalities: impl IntoIterator<Item = (&'a str, &'a [f32])>,
    ) -> Result<Self, Error> {
        let mut input = Self::zeros(manifest);
        for (name, values) in modalities {
            let idx = manifest.require_modality(name)?;
            let spec = &manifest.modalities[idx];
            if values.len() != spec.window_len() {
                return Err(Error::invalid(
                    "wrong_length",
                    format!(
                        "modality {name:?} needs {} samples × {} channels = {} values, got {}",
                        spec.window_samples,
                        spec.channels,
                        spec.window_len(),
                        values.len()
                    ),
                ));
            }
            if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    "non_finite",
                    format!(
                        "modality {name:?} sample {} channel {} is not a finite number",
                        pos / spec.channels,
                        pos % spec.channels
                    ),
                ));
            }
            let block = &mut input.modalities[idx];
            for (i, v) in values.iter().enumerate() {
                let (sample, channel) = (i / spec.channels, i % spec.channels);
                block[channel * spec.window_samples + sample] = *v;
            }
            input.present[idx] = true;
        }
        // A window with nothing in it has no answer: the model would only echo its prior.
        if !input.present.contains(&true) {
            return Err(Error::invalid(
                "all_absent",
                format!(
                    "no modality given; a window needs at least one of {}",
                    manifest
                        .modalities
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(input)
    }
}
