//! ONNX Runtime backend: finds and loads the shared library, creates a session with the requested
//! execution provider, checks the graph against the manifest, and runs batches.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, anyhow, bail};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::{Backend, Batch, BatchOutput};
use crate::config::ExecutionProviderChoice;
use crate::error::Error;
use crate::model::Manifest;

/// How to build sessions.
#[derive(Clone, Debug)]
pub struct OrtOptions {
    /// The shared library; `None` searches the local venv (see [`find_ort_dylib`]).
    pub dylib: Option<PathBuf>,
    pub execution_provider: ExecutionProviderChoice,
    /// 0 = ONNX Runtime's default.
    pub intra_op_threads: usize,
}

/// The configured library, else the first `.venv/lib/python3*/site-packages/onnxruntime/capi/
/// libonnxruntime.so*` under the working directory.
pub fn find_ort_dylib(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = configured {
        if !p.is_file() {
            bail!(
                "ONNX Runtime library {} (ORT_DYLIB_PATH / --ort-dylib-path) does not exist",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    let lib = Path::new(".venv/lib");
    let mut candidates = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(lib) {
        for dir in dirs.flatten() {
            if !dir.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            let capi = dir.path().join("site-packages/onnxruntime/capi");
            if let Ok(files) = std::fs::read_dir(&capi) {
                for f in files.flatten() {
                    if f.file_name()
                        .to_string_lossy()
                        .starts_with("libonnxruntime.so")
                    {
                        candidates.push(f.path());
                    }
                }
            }
        }
    }
    candidates.sort();
    candidates.into_iter().next().ok_or_else(|| {
        anyhow!(
            "no ONNX Runtime library: set ORT_DYLIB_PATH (or --ort-dylib-path) to libonnxruntime.so, or install \
             the onnxruntime wheel into ./.venv (none found under {})",
            std::env::current_dir().unwrap_or_default().join(lib).display()
        )
    })
}

/// Loads the library once per process and returns the shared environment.
fn environment(dylib: &Path) -> anyhow::Result<ort::environment::Environment> {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    if let Some(env) = ENV.get() {
        return Ok(env.clone());
    }
    let builder = ort::init_from(dylib)
        .map_err(|e| anyhow!("cannot load ONNX Runtime from {}: {e}", dylib.display()))?;
    let env = builder
        .with_name("crossl-serve")
        .build()
        .map_err(|e| anyhow!("cannot create the ONNX Runtime environment: {e}"))?;
    Ok(ENV.get_or_init(|| env).clone())
}

/// One session on one worker thread.
#[derive(Debug)]
pub struct OrtBackend {
    session: Session,
    manifest: Arc<Manifest>,
    execution_provider: &'static str,
}

impl OrtBackend {
    /// Creates the session, registers the execution provider (never falling back silently) and checks the
    /// graph's inputs and outputs against the manifest.
    pub fn load(manifest: Arc<Manifest>, opts: &OrtOptions) -> anyhow::Result<Self> {
        let dylib = find_ort_dylib(opts.dylib.as_deref())?;
        let env = environment(&dylib)?;
        let mut builder = Session::builder(&env).map_err(|e| anyhow!("session builder: {e}"))?;
        builder = builder
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| anyhow!("optimization level: {e}"))?;
        if opts.intra_op_threads > 0 {
            builder = builder
                .with_intra_threads(opts.intra_op_threads)
                .map_err(|e| anyhow!("intra-op threads: {e}"))?;
        }
        let (builder, execution_provider) =
            register_execution_provider(builder, opts.execution_provider)?;
        let path = manifest.model_path();
        let mut builder = builder;
        let session = builder.commit_from_file(&path).map_err(|e| {
            anyhow!(
                "{}: ONNX Runtime cannot load the model: {e}",
                path.display()
            )
        })?;
        check_graph(&session, &manifest)
            .with_context(|| format!("{}: graph does not match model.json", path.display()))?;
        Ok(Self {
            session,
            manifest,
            execution_provider,
        })
    }
}

type Builder = ort::session::builder::SessionBuilder;

#[cfg(feature = "cuda")]
fn try_cuda(builder: Builder) -> anyhow::Result<Builder> {
    use ort::ep::ExecutionProvider;
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        bail!("this ONNX Runtime library has no CUDA execution provider (install onnxruntime-gpu)");
    }
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| anyhow!("cannot register the CUDA execution provider: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn try_cuda(_builder: Builder) -> anyhow::Result<Builder> {
    bail!("crossl-serve was built without the `cuda` feature (cargo build --features cuda)")
}

/// Applies the choice; `auto` falls back to CPU with a warning, `cuda` fails loudly.
fn register_execution_provider(
    builder: Builder,
    choice: ExecutionProviderChoice,
) -> anyhow::Result<(Builder, &'static str)> {
    match choice {
        ExecutionProviderChoice::Cpu => Ok((builder, "cpu")),
        ExecutionProviderChoice::Cuda => {
            let builder = try_cuda(builder).context("execution provider `cuda` was requested")?;
            Ok((builder, "cuda"))
        }
        ExecutionProviderChoice::Auto => match try_cuda(builder.clone()) {
            Ok(b) => Ok((b, "cuda")),
            Err(e) => {
                tracing::warn!(reason = %e, "execution provider auto: CUDA unavailable, falling back to cpu");
                Ok((builder, "cpu"))
            }
        },
    }
}

/// Every graph input/output the manifest names, float32, with the manifest's static dims and a dynamic
/// batch axis; nothing else.
fn check_graph(session: &Session, manifest: &Manifest) -> anyhow::Result<()> {
    let n_mod = manifest.modalities.len() as i64;
    let mut expected_inputs: Vec<(&str, Vec<i64>)> = manifest
        .modalities
        .iter()
        .map(|m| {
            (
                m.input.as_str(),
                vec![m.channels as i64, m.window_samples as i64],
            )
        })
        .collect();
    expected_inputs.push((manifest.inputs.present.as_str(), vec![n_mod]));
    let k = manifest.classes.len() as i64;
    let expected_outputs: Vec<(&str, Vec<i64>)> = vec![
        (manifest.outputs.logits.as_str(), vec![k]),
        (manifest.outputs.probabilities.as_str(), vec![k]),
        (
            manifest.outputs.embedding.as_str(),
            vec![manifest.embedding_size as i64],
        ),
    ];
    for (what, outlets, expected) in [
        ("input", session.inputs(), &expected_inputs),
        ("output", session.outputs(), &expected_outputs),
    ] {
        let names: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
        for (name, _) in expected.iter() {
            if !names.contains(name) {
                bail!("the graph has no {what} {name:?} (it has {names:?})");
            }
        }
        for outlet in outlets {
            let Some((_, dims)) = expected.iter().find(|(n, _)| *n == outlet.name()) else {
                bail!(
                    "the graph has an {what} {:?} that model.json does not name",
                    outlet.name()
                );
            };
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                bail!("{what} {:?} is not a tensor", outlet.name());
            };
            if *ty != TensorElementType::Float32 {
                bail!("{what} {:?} is {ty:?}, expected float32", outlet.name());
            }
            let shape: Vec<i64> = shape.iter().copied().collect();
            if shape.len() != dims.len() + 1 {
                bail!(
                    "{what} {:?} has shape {shape:?}, expected [batch, {dims:?}]",
                    outlet.name()
                );
            }
            if shape[0] >= 0 {
                bail!(
                    "{what} {:?} has a static batch axis ({}); it must be dynamic",
                    outlet.name(),
                    shape[0]
                );
            }
            for (i, (&got, &want)) in shape[1..].iter().zip(dims.iter()).enumerate() {
                if got >= 0 && got != want {
                    bail!(
                        "{what} {:?} dimension {} is {got}, model.json says {want}",
                        outlet.name(),
                        i + 1
                    );
                }
            }
        }
    }
    Ok(())
}

fn ort_err(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

impl Backend for OrtBackend {
    fn run(&mut self, batch: &Batch) -> Result<BatchOutput, Error> {
        let manifest = &self.manifest;
        let mut inputs: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::with_capacity(manifest.modalities.len() + 1);
        for (spec, data) in manifest.modalities.iter().zip(&batch.modalities) {
            let t = TensorRef::from_array_view((
                [batch.size, spec.channels, spec.window_samples],
                data.as_slice(),
            ))
            .map_err(ort_err("input tensor"))?;
            inputs.push((spec.input.as_str().into(), t.into()));
        }
        let present = TensorRef::from_array_view((
            [batch.size, manifest.modalities.len()],
            batch.present.as_slice(),
        ))
        .map_err(ort_err("present tensor"))?;
        inputs.push((manifest.inputs.present.as_str().into(), present.into()));
        let outputs = self.session.run(inputs).map_err(ort_err("session run"))?;
        let extract = |name: &str, width: usize| -> Result<Vec<f32>, Error> {
            let value = outputs.get(name).ok_or_else(|| {
                Error::Internal(format!("the session returned no output {name:?}"))
            })?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(ort_err("output tensor"))?;
            if data.len() != batch.size * width {
                return Err(Error::Internal(format!(
                    "output {name:?} has shape {shape}, expected [{}, {width}]",
                    batch.size
                )));
            }
            Ok(data.to_vec())
        };
        let classes = manifest.classes.len();
        Ok(BatchOutput {
            size: batch.size,
            classes,
            embedding_size: manifest.embedding_size,
            logits: extract(&manifest.outputs.logits, classes)?,
            probabilities: extract(&manifest.outputs.probabilities, classes)?,
            embedding: extract(&manifest.outputs.embedding, manifest.embedding_size)?,
        })
    }

    fn execution_provider(&self) -> &str {
        self.execution_provider
    }
}
