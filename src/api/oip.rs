//! The Open Inference Protocol (KServe v2) core shared by its two transports, HTTP/JSON (`api::kserve`) and
//! gRPC `inference.GRPCInferenceService` (`api::oip_grpc`): server and model metadata, the model name and
//! version check, the conversion of named batch tensors into per-window model inputs, output selection and
//! the one inference path (the one-shot queue of `Core::predict_rows`). The adapters only translate their
//! wire types into [`InferRequest`] and [`InferResponse`] back.

use std::future::Future;
use std::time::Instant;

use crate::app::Core;
use crate::error::Error;
use crate::ingest::Transport;
use crate::model::{Manifest, ModelInput};

/// `name` of the server metadata (`GET /v2`, gRPC `ServerMetadata`).
pub const SERVER_NAME: &str = "crossl-serve";

/// The server's version (the crate's).
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Protocol extensions the server supports: none of the optional OIP/Triton extensions (binary tensor
/// data, model repository, statistics, …). Listed so that clients can tell.
pub const EXTENSIONS: &[&str] = &[];

/// Platform named in the model metadata.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// The only tensor data type the model takes and returns.
pub const FP32: &str = "FP32";

/// A tensor's name, data type and shape (-1 = the dynamic batch axis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// The served model's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    /// One input per modality in manifest order (`[-1, channels, window_samples]`), then `present`
    /// (`[-1, n_modalities]`, its columns in the same manifest order).
    pub inputs: Vec<TensorSpec>,
    /// logits, probabilities, embedding.
    pub outputs: Vec<TensorSpec>,
}

fn spec(name: &str, shape: Vec<i64>) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        datatype: FP32,
        shape,
    }
}

/// The model metadata of the manifest.
pub fn model_info(m: &Manifest) -> ModelInfo {
    let mut inputs: Vec<TensorSpec> = m
        .modalities
        .iter()
        .map(|s| {
            spec(
                &s.input,
                vec![-1, s.channels as i64, s.window_samples as i64],
            )
        })
        .collect();
    inputs.push(spec(&m.inputs.present, vec![-1, m.modalities.len() as i64]));
    ModelInfo {
        name: m.name.clone(),
        versions: vec![m.version.clone()],
        platform: PLATFORM,
        inputs,
        outputs: Output::ALL
            .iter()
            .map(|o| spec(o.name(m), vec![-1, o.width(m) as i64]))
            .collect(),
    }
}

/// Checks a model name and, when given (non-empty), a version against the served model: 404 otherwise.
pub fn check_model(m: &Manifest, name: &str, version: Option<&str>) -> Result<(), Error> {
    if name != m.name {
        return Err(Error::NotFound(format!(
            "unknown model {name:?}; this server serves {:?}",
            m.name
        )));
    }
    match version {
        Some(v) if !v.is_empty() && v != m.version => Err(Error::NotFound(format!(
            "unknown version {v:?} of model {name:?}; this server has version {:?}",
            m.version
        ))),
        _ => Ok(()),
    }
}

/// One of the model's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Logits,
    Probabilities,
    Embedding,
}

impl Output {
    /// Every output, in the order they are returned when the request names none.
    pub const ALL: [Output; 3] = [Output::Logits, Output::Probabilities, Output::Embedding];

    /// The output's tensor name (from the manifest).
    pub fn name(self, m: &Manifest) -> &str {
        match self {
            Output::Logits => &m.outputs.logits,
            Output::Probabilities => &m.outputs.probabilities,
            Output::Embedding => &m.outputs.embedding,
        }
    }

    /// Values per row.
    pub fn width(self, m: &Manifest) -> usize {
        match self {
            Output::Logits | Output::Probabilities => m.classes.len(),
            Output::Embedding => m.embedding_size,
        }
    }
}

/// The outputs a request asks for, in its order; none named = all three. An unknown or repeated name is
/// a 400 (`unknown_output`, `duplicate_output`).
pub fn select_outputs(m: &Manifest, requested: &[String]) -> Result<Vec<Output>, Error> {
    if requested.is_empty() {
        return Ok(Output::ALL.to_vec());
    }
    let mut chosen = Vec::with_capacity(requested.len());
    for name in requested {
        let output = Output::ALL
            .into_iter()
            .find(|o| o.name(m) == name)
            .ok_or_else(|| {
                Error::invalid(
                    "unknown_output",
                    format!(
                        "unknown output {name:?}; the model has {}",
                        Output::ALL.map(|o| o.name(m)).join(", ")
                    ),
                )
            })?;
        if chosen.contains(&output) {
            return Err(Error::invalid(
                "duplicate_output",
                format!("output {name:?} is requested twice"),
            ));
        }
        chosen.push(output);
    }
    Ok(chosen)
}

/// One input tensor of a request, as its transport decoded it.
#[derive(Debug)]
pub struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    /// Row-major values.
    pub data: Vec<f32>,
    /// What was wrong with the values while decoding them (a non-finite or non-numeric value); reported
    /// after the name, type and shape checks.
    pub problem: Option<Error>,
}

/// An infer request in protocol-neutral form.
#[derive(Debug)]
pub struct InferRequest {
    pub model_name: String,
    /// `None` or empty: the served version.
    pub model_version: Option<String>,
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    /// Output names; empty = every output.
    pub outputs: Vec<String>,
}

/// One output tensor of an answer (FP32, `[batch, width]`).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

/// An infer answer in protocol-neutral form.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

/// Counts one infer request of `transport` (`crossl_predict_requests_total`) and, when `work` fails,
/// its rejection reason (`crossl_predict_rejected_total`).
pub async fn counted<T>(
    core: &Core,
    transport: Transport,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    core.metrics
        .predict_requests
        .with_label_values(&[transport.as_str()])
        .inc();
    let result = work.await;
    if let Err(e) = &result {
        core.metrics
            .predict_rejected
            .with_label_values(&[transport.as_str(), e.reason()])
            .inc();
    }
    result
}

/// Runs an infer request: model and version check, output selection, tensors to rows, the one-shot
/// queue (admitted whole or refused whole), then the selected outputs, each `[batch, width]`.
/// Admission per client (the caller's permit) and counting ([`counted`]) are the adapter's.
pub async fn infer(
    core: &Core,
    request: InferRequest,
    arrived: Instant,
) -> Result<InferResponse, Error> {
    let m = &core.manifest;
    check_model(m, &request.model_name, request.model_version.as_deref())?;
    let selected = select_outputs(m, &request.outputs)?;
    let rows = to_model_inputs(m, request.inputs, core.args.max_request_rows)?;
    let batch = rows.len();
    let answers = core.predict_rows(rows, arrived).await?;
    let mut outputs: Vec<OutputTensor> = selected
        .iter()
        .map(|o| OutputTensor {
            name: o.name(m).to_string(),
            shape: vec![batch as i64, o.width(m) as i64],
            data: Vec::with_capacity(batch * o.width(m)),
        })
        .collect();
    for a in answers {
        for (tensor, o) in outputs.iter_mut().zip(&selected) {
            tensor.data.extend_from_slice(match o {
                Output::Logits => &a.output.logits,
                Output::Probabilities => &a.output.probabilities,
                Output::Embedding => &a.output.embedding,
            });
        }
    }
    Ok(InferResponse {
        model_name: m.name.clone(),
        model_version: m.version.clone(),
        id: request.id,
        outputs,
    })
}

/// Splits the named batch tensors into per-window model inputs, checking names, types and shapes:
/// `x_<modality>` `[batch, channels, window_samples]` (channel-major per row) and optionally `present`
/// `[batch, n_modalities]` (columns in manifest modality order; default: 1 for every modality input
/// given). Every row needs at least one modality present.
pub fn to_model_inputs(
    m: &Manifest,
    inputs: Vec<InputTensor>,
    max_rows: usize,
) -> Result<Vec<ModelInput>, Error> {
    let mut batch: Option<usize> = None;
    let mut given: Vec<Option<Vec<f32>>> = vec![None; m.modalities.len()];
    let mut present: Option<Vec<f32>> = None;
    for input in inputs {
        if input.datatype != FP32 {
            return Err(Error::invalid(
                "wrong_datatype",
                format!(
                    "input {:?} has datatype {}, only FP32 is accepted",
                    input.name, input.datatype
                ),
            ));
        }
        let (idx, expected): (Option<usize>, Vec<usize>) = if input.name == m.inputs.present {
            (None, vec![m.modalities.len()])
        } else if let Some(i) = m.modalities.iter().position(|s| s.input == input.name) {
            (
                Some(i),
                vec![m.modalities[i].channels, m.modalities[i].window_samples],
            )
        } else {
            return Err(Error::invalid(
                "unknown_modality",
                format!(
                    "unknown input {:?}; the model takes {}, {}",
                    input.name,
                    m.modalities
                        .iter()
                        .map(|s| s.input.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.inputs.present
                ),
            ));
        };
        let shape_ok = input.shape.len() == expected.len() + 1
            && input.shape[0] >= 1
            && input.shape[1..]
                .iter()
                .zip(&expected)
                .all(|(&got, &want)| got == want as i64);
        if !shape_ok {
            return Err(Error::invalid(
                "wrong_shape",
                format!(
                    "input {:?} has shape {:?}, expected [batch, {expected:?}]",
                    input.name, input.shape
                ),
            ));
        }
        let rows = input.shape[0] as usize;
        if rows > max_rows {
            return Err(Error::invalid(
                "too_many_rows",
                format!(
                    "batch of {rows} rows; at most {max_rows} per request (--max-request-rows): \
                     split it into several requests"
                ),
            ));
        }
        if *batch.get_or_insert(rows) != rows {
            return Err(Error::invalid(
                "wrong_shape",
                format!(
                    "input {:?} has batch size {rows}, other inputs have {}",
                    input.name,
                    batch.unwrap_or(0)
                ),
            ));
        }
        if let Some(problem) = input.problem {
            return Err(problem);
        }
        let data = input.data;
        if data.len() != rows * expected.iter().product::<usize>() {
            return Err(Error::invalid(
                "wrong_length",
                format!(
                    "input {:?} has {} values, its shape {:?} needs {}",
                    input.name,
                    data.len(),
                    input.shape,
                    rows * expected.iter().product::<usize>()
                ),
            ));
        }
        match idx {
            Some(i) => given[i] = Some(data),
            None => present = Some(data),
        }
    }
    let rows = batch.ok_or_else(|| Error::invalid("wrong_length", "the request has no inputs"))?;
    let n_mod = m.modalities.len();
    let mut out = Vec::with_capacity(rows);
    for r in 0..rows {
        let mut input = ModelInput::zeros(m);
        for (i, spec) in m.modalities.iter().enumerate() {
            let flag = match &present {
                Some(p) => p[r * n_mod + i] != 0.0,
                None => given[i].is_some(),
            };
            match (&given[i], flag) {
                (Some(data), true) => {
                    let len = spec.window_len();
                    input.modalities[i].copy_from_slice(&data[r * len..(r + 1) * len]);
                    input.present[i] = true;
                }
                (None, true) => {
                    return Err(Error::invalid(
                        "wrong_length",
                        format!(
                            "present marks {:?} present in row {r}, but input {:?} is missing",
                            spec.name, spec.input
                        ),
                    ));
                }
                (_, false) => {}
            }
        }
        if !input.present.contains(&true) {
            return Err(Error::invalid(
                "all_absent",
                format!(
                    "row {r} has no modality present; every row needs at least one of {}",
                    m.modalities
                        .iter()
                        .map(|s| s.input.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        out.push(input);
    }
    Ok(out)
}

/// The first non-finite value of a tensor decoded from binary or protobuf floats, as the same error the
/// JSON decoder reports.
pub fn non_finite(name: &str, data: &[f32]) -> Option<Error> {
    data.iter().find(|v| !v.is_finite()).map(|v| {
        Error::invalid(
            "non_finite",
            format!("input {name:?} holds {v}, which is not a finite FP32 value"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossl-dsads");
        Manifest::load(&path).expect("bundled manifest")
    }

    #[test]
    fn outputs_are_selected_by_name_in_request_order() {
        let m = manifest();
        let all = select_outputs(&m, &[]).expect("all");
        assert_eq!(all, Output::ALL.to_vec());
        let picked = select_outputs(&m, &[m.outputs.embedding.clone(), m.outputs.logits.clone()])
            .expect("two");
        assert_eq!(picked, vec![Output::Embedding, Output::Logits]);
        let e = select_outputs(&m, &["nope".into()]).expect_err("unknown");
        assert_eq!(e.reason(), "unknown_output");
        assert!(e.to_string().contains(&m.outputs.probabilities), "{e}");
        let e = select_outputs(&m, &[m.outputs.logits.clone(), m.outputs.logits.clone()])
            .expect_err("twice");
        assert_eq!(e.reason(), "duplicate_output");
    }

    #[test]
    fn model_and_version_are_checked() {
        let m = manifest();
        assert!(check_model(&m, &m.name, None).is_ok());
        assert!(check_model(&m, &m.name, Some("")).is_ok());
        assert!(check_model(&m, &m.name, Some(&m.version)).is_ok());
        let e = check_model(&m, &m.name, Some("0.0.0-nope")).expect_err("version");
        assert_eq!(e.kind(), "not_found");
        assert!(e.to_string().contains(&m.version), "{e}");
        let e = check_model(&m, "other", Some(&m.version)).expect_err("name");
        assert_eq!(e.kind(), "not_found");
    }

    #[test]
    fn metadata_lists_modalities_then_present_in_manifest_order() {
        let m = manifest();
        let info = model_info(&m);
        assert_eq!(info.inputs.len(), m.modalities.len() + 1);
        for (spec, modality) in info.inputs.iter().zip(&m.modalities) {
            assert_eq!(spec.name, modality.input);
        }
        assert_eq!(info.inputs.last().map(|s| s.name.as_str()), Some("present"));
        assert_eq!(info.outputs[1].shape, vec![-1, m.classes.len() as i64]);
        assert_eq!(info.versions, vec![m.version.clone()]);
    }

    #[test]
    fn non_finite_values_are_found() {
        assert!(non_finite("x", &[1.0, 2.0]).is_none());
        let e = non_finite("x", &[1.0, f32::NAN]).expect("nan");
        assert_eq!(e.reason(), "non_finite");
    }
}
