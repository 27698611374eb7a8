//! `model.json`: types, loading and validation. Every violation is an error naming the file and field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One sensor stream of the model (e.g. `torso_acc`).
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ModalitySpec {
    pub name: String,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub sensor: Option<String>,
    pub channels: usize,
    #[serde(default)]
    pub channel_names: Vec<String>,
    #[serde(default)]
    pub physical_unit: Option<String>,
    pub sample_rate_hz: f64,
    pub window_samples: usize,
    /// ONNX input name, `[batch, channels, window_samples]`.
    pub input: String,
}

impl ModalitySpec {
    /// Values in one complete window of this modality.
    pub fn window_len(&self) -> usize {
        self.channels * self.window_samples
    }
    /// Sample period in nanoseconds.
    pub fn period_nanos(&self) -> f64 {
        1e9 / self.sample_rate_hz
    }
}

/// Names of the non-modality ONNX inputs.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct InputNames {
    pub present: String,
}

/// Names of the ONNX outputs.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct OutputNames {
    pub logits: String,
    pub probabilities: String,
    pub embedding: String,
}

/// `model.json` (format_version 1).
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub model_file: String,
    pub model_sha256: String,
    #[serde(default)]
    pub opset: Option<u32>,
    pub window_seconds: f64,
    pub recommended_hop_seconds: f64,
    pub modalities: Vec<ModalitySpec>,
    pub classes: Vec<String>,
    pub inputs: InputNames,
    pub outputs: OutputNames,
    pub embedding_size: usize,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub training: serde_json::Value,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
    /// Folder the manifest was read from (not part of the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Manifest {
    /// Reads `<dir>/model.json`, validates it and checks the sha256 of the model file.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("model.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read the model manifest", path.display()))?;
        let mut manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid manifest", path.display()))?;
        manifest.dir = dir.to_path_buf();
        manifest
            .validate()
            .with_context(|| format!("{}: invalid manifest", path.display()))?;
        manifest.check_sha256()?;
        Ok(manifest)
    }

    /// Path of the ONNX file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.model_file)
    }

    /// Index of a modality by name.
    pub fn modality_index(&self, name: &str) -> Option<usize> {
        self.modalities.iter().position(|m| m.name == name)
    }

    /// Name of an output class (empty for an index the model cannot produce).
    pub fn class_name(&self, index: usize) -> String {
        self.classes.get(index).cloned().unwrap_or_default()
    }

    /// Index of a modality the caller named; an unknown name is an `unknown_modality` input error that
    /// lists the names the model takes.
    pub fn require_modality(&self, name: &str) -> Result<usize, crate::error::Error> {
        self.modality_index(name).ok_or_else(|| {
            crate::error::Error::invalid(
                "unknown_modality",
                format!(
                    "unknown modality {name:?}; the model takes {}",
                    self.modalities
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// Rules of docs/model-contract.md that can be checked without the graph.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.format_version != 1 {
            bail!(
                "field `format_version`: expected 1, found {}",
                self.format_version
            );
        }
        check_name("name", &self.name, false)?;
        if self.model_file.is_empty() {
            bail!("field `model_file`: empty");
        }
        if self.model_sha256.len() != 64
            || !self.model_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            bail!("field `model_sha256`: expected 64 hex digits");
        }
        if !(self.window_seconds.is_finite() && self.window_seconds > 0.0) {
            bail!("field `window_seconds`: must be > 0");
        }
        if !(self.recommended_hop_seconds.is_finite() && self.recommended_hop_seconds > 0.0) {
            bail!("field `recommended_hop_seconds`: must be > 0");
        }
        if self.modalities.is_empty() {
            bail!("field `modalities`: empty");
        }
        let mut names = HashSet::new();
        let mut inputs = HashSet::new();
        inputs.insert(self.inputs.present.as_str());
        for (i, m) in self.modalities.iter().enumerate() {
            let field = |f: &str| format!("modalities[{i}].{f}");
            check_name(&field("name"), &m.name, true)?;
            if !names.insert(m.name.as_str()) {
                bail!("field `{}`: duplicate modality {:?}", field("name"), m.name);
            }
            if m.channels == 0 {
                bail!("field `{}`: must be >= 1", field("channels"));
            }
            if !m.channel_names.is_empty() && m.channel_names.len() != m.channels {
                bail!(
                    "field `{}`: {} names for {} channels",
                    field("channel_names"),
                    m.channel_names.len(),
                    m.channels
                );
            }
            if !(m.sample_rate_hz.is_finite() && m.sample_rate_hz > 0.0) {
                bail!("field `{}`: must be > 0", field("sample_rate_hz"));
            }
            if m.window_samples == 0 {
                bail!("field `{}`: must be >= 1", field("window_samples"));
            }
            let span = m.window_samples as f64 / m.sample_rate_hz;
            if (span - self.window_seconds).abs() > 1.0 / m.sample_rate_hz {
                bail!(
                    "field `{}`: {} samples at {} Hz span {span} s, but window_seconds is {}",
                    field("window_samples"),
                    m.window_samples,
                    m.sample_rate_hz,
                    self.window_seconds
                );
            }
            if m.input.is_empty() || !inputs.insert(m.input.as_str()) {
                bail!(
                    "field `{}`: empty or duplicate input name {:?}",
                    field("input"),
                    m.input
                );
            }
        }
        if self.classes.is_empty() {
            bail!("field `classes`: empty");
        }
        let mut classes = HashSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            if c.is_empty() || !classes.insert(c.as_str()) {
                bail!("field `classes[{i}]`: empty or duplicate class {c:?}");
            }
        }
        let outs = [
            &self.outputs.logits,
            &self.outputs.probabilities,
            &self.outputs.embedding,
        ];
        if outs.iter().any(|o| o.is_empty()) || outs.iter().collect::<HashSet<_>>().len() != 3 {
            bail!("field `outputs`: names must be non-empty and distinct");
        }
        if self.embedding_size == 0 {
            bail!("field `embedding_size`: must be >= 1");
        }
        Ok(())
    }

    /// Compares the sha256 of the model file with `model_sha256`.
    pub fn check_sha256(&self) -> anyhow::Result<()> {
        let path = self.model_path();
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{}: cannot read the model file", path.display()))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&self.model_sha256) {
            bail!(
                "{}: sha256 is {actual}, but field `model_sha256` of {} says {}",
                path.display(),
                self.dir.join("model.json").display(),
                self.model_sha256
            );
        }
        Ok(())
    }
}

fn check_name(field: &str, name: &str, strict: bool) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("field `{field}`: empty");
    }
    let ok = |b: u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'_'
            || (!strict && (b == b'-' || b == b'.'))
    };
    if !name.bytes().all(ok) {
        bail!("field `{field}`: {name:?} must match [a-z0-9_]+");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid manifest (two modalities at different rates) for unit tests.
    pub(crate) fn two_modality_manifest() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "name": "test", "version": "0", "model_file": "model.onnx",
            "model_sha256": "0".repeat(64), "window_seconds": 2.0, "recommended_hop_seconds": 1.0,
            "modalities": [
                {"name": "acc", "channels": 3, "sample_rate_hz": 10.0, "window_samples": 20, "input": "x_acc"},
                {"name": "gyro", "channels": 2, "sample_rate_hz": 5.0, "window_samples": 10, "input": "x_gyro"}
            ],
            "classes": ["a", "b", "c"], "inputs": {"present": "present"},
            "outputs": {"logits": "logits", "probabilities": "probabilities", "embedding": "embedding"},
            "embedding_size": 4
        }))
        .expect("valid test manifest")
    }

    #[test]
    fn valid_manifest_passes() {
        two_modality_manifest().validate().expect("valid");
    }

    #[test]
    fn errors_name_the_field() {
        let mut m = two_modality_manifest();
        m.modalities[1].window_samples = 30;
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("modalities[1].window_samples"), "{e}");

        let mut m = two_modality_manifest();
        m.modalities[0].name = "Acc".into();
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("modalities[0].name"), "{e}");

        let mut m = two_modality_manifest();
        m.classes.push("a".into());
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("classes[3]"), "{e}");

        let mut m = two_modality_manifest();
        m.format_version = 2;
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("format_version")
        );
    }

    #[test]
    fn sha256_mismatch_names_file_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("model.onnx"), b"not a model").expect("write");
        let mut m = two_modality_manifest();
        m.dir = dir.path().to_path_buf();
        let e = m.check_sha256().unwrap_err().to_string();
        assert!(
            e.contains("model.onnx") && e.contains("model_sha256"),
            "{e}"
        );
        m.model_sha256 = hex::encode(Sha256::digest(b"not a model"));
        m.check_sha256().expect("matches");
    }
}
