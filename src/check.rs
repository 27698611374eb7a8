//! `crossl-serve check-model`: validates a model folder against docs/model-contract.md the way the server
//! would load it (manifest, sha256, graph inputs/outputs) and replays golden.json through ONNX Runtime.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::ExecutionProviderChoice;
use crate::infer::ort_backend::{OrtBackend, OrtOptions};
use crate::infer::{Backend, Batch};
use crate::model::{Manifest, ModelInput};

/// Flags of `crossl-serve check-model`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// Model folder holding model.json, model.onnx and golden.json.
    #[arg(long, env = "CROSSL_MODEL", default_value = "models/crossl-dsads")]
    pub model: PathBuf,
    /// ONNX Runtime shared library (default: found under ./.venv).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct GoldenCase {
    name: String,
    modalities: std::collections::HashMap<String, Vec<Vec<f32>>>,
    label: String,
    logits: Vec<f32>,
    probabilities: Vec<f32>,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Golden {
    model_sha256: String,
    tolerance: f32,
    cases: Vec<GoldenCase>,
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Loads the model like the server does and checks every golden case; returns a one-line summary.
pub fn run(args: &CheckArgs) -> anyhow::Result<String> {
    let manifest = Arc::new(Manifest::load(&args.model)?);
    let mut backend = OrtBackend::load(
        Arc::clone(&manifest),
        &OrtOptions {
            dylib: args.ort_dylib_path.clone(),
            execution_provider: ExecutionProviderChoice::Cpu,
            intra_op_threads: 1,
        },
    )?;
    let path = args.model.join("golden.json");
    let golden: Golden = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?,
    )
    .with_context(|| format!("{}: not a valid golden file", path.display()))?;
    if golden.model_sha256 != manifest.model_sha256 {
        bail!("{}: model_sha256 does not match model.json", path.display());
    }
    let mut worst = 0.0f32;
    for case in &golden.cases {
        let flat: Vec<(String, Vec<f32>)> = case
            .modalities
            .iter()
            .map(|(k, rows)| (k.clone(), rows.iter().flatten().copied().collect()))
            .collect();
        let input = ModelInput::from_samples_major(
            &manifest,
            flat.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        )
        .with_context(|| format!("golden case {}", case.name))?;
        let out = backend.run(&Batch::stack(&manifest, [&input]))?.row(0);
        let diff = max_abs_diff(&out.logits, &case.logits)
            .max(max_abs_diff(&out.probabilities, &case.probabilities))
            .max(max_abs_diff(&out.embedding, &case.embedding));
        let label = &manifest.classes[out.class_index()];
        if diff > golden.tolerance || label != &case.label {
            bail!(
                "golden case {}: max |Δ| {diff:e} (tolerance {:e}), label {label} vs {}",
                case.name,
                golden.tolerance,
                case.label
            );
        }
        worst = worst.max(diff);
    }
    Ok(format!(
        "{} {}: manifest, sha256 and graph OK; {} golden cases within {:e} (max |Δ| {worst:e})",
        manifest.name,
        manifest.version,
        golden.cases.len(),
        golden.tolerance
    ))
}
