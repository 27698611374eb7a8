//! Open Inference Protocol (KServe v2) subset, so generic tooling can call the model: health, model
//! metadata/readiness, and `infer` with the ONNX inputs by name (FP32, explicit shape, row-major data).

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::body::TensorData;
use super::http_error::{AppJson, AppPath, ErrorBody};
use super::rest::OneShotPermit;
use crate::app::Core;
use crate::error::Error;
use crate::ingest::Transport;
use crate::model::{Manifest, ModelInput};

/// KServe v2 routes.
pub fn router(core: Core) -> axum::Router {
    axum::Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model_name}", get(model_metadata))
        .route("/v2/models/{model_name}/ready", get(model_ready))
        .route("/v2/models/{model_name}/infer", post(infer))
        .with_state(core)
}

/// `{"live": true}` / `{"ready": …}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct V2Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// Server liveness.
#[utoipa::path(get, path = "/v2/health/live", responses((status = 200, body = V2Status)))]
pub async fn live() -> Json<V2Status> {
    Json(V2Status {
        live: Some(true),
        ready: None,
    })
}

fn readiness(core: &Core) -> Response {
    let ready = core.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(V2Status {
            live: None,
            ready: Some(ready),
        }),
    )
        .into_response()
}

/// Server readiness (200 ready, 503 not).
#[utoipa::path(get, path = "/v2/health/ready", responses((status = 200, body = V2Status), (status = 503, body = V2Status)))]
pub async fn ready(State(core): State<Core>) -> Response {
    readiness(&core)
}

/// A tensor's metadata.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    /// -1 = dynamic (the batch axis).
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

fn check_name(core: &Core, name: &str) -> Result<(), Error> {
    if name == core.manifest.name {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "unknown model {name:?}; this server serves {:?}",
            core.manifest.name
        )))
    }
}

fn tensor(name: &str, shape: Vec<i64>) -> TensorMetadata {
    TensorMetadata {
        name: name.to_string(),
        datatype: "FP32".into(),
        shape,
    }
}

/// Model metadata: inputs and outputs with their shapes.
#[utoipa::path(
    get, path = "/v2/models/{model_name}",
    params(("model_name" = String, Path, description = "Model name from model.json")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = ErrorBody))
)]
pub async fn model_metadata(
    State(core): State<Core>,
    AppPath(model_name): AppPath<String>,
) -> Result<Json<ModelMetadata>, Error> {
    check_name(&core, &model_name)?;
    let m = &core.manifest;
    let mut inputs: Vec<TensorMetadata> = m
        .modalities
        .iter()
        .map(|s| {
            tensor(
                &s.input,
                vec![-1, s.channels as i64, s.window_samples as i64],
            )
        })
        .collect();
    inputs.push(tensor(
        &m.inputs.present,
        vec![-1, m.modalities.len() as i64],
    ));
    let k = m.classes.len() as i64;
    Ok(Json(ModelMetadata {
        name: m.name.clone(),
        versions: vec![m.version.clone()],
        platform: "onnxruntime_onnx".into(),
        inputs,
        outputs: vec![
            tensor(&m.outputs.logits, vec![-1, k]),
            tensor(&m.outputs.probabilities, vec![-1, k]),
            tensor(&m.outputs.embedding, vec![-1, m.embedding_size as i64]),
        ],
    }))
}

/// Model readiness.
#[utoipa::path(
    get, path = "/v2/models/{model_name}/ready",
    params(("model_name" = String, Path, description = "Model name from model.json")),
    responses((status = 200, body = V2Status), (status = 503, body = V2Status), (status = 404, body = ErrorBody))
)]
pub async fn model_ready(
    State(core): State<Core>,
    AppPath(model_name): AppPath<String>,
) -> Result<Response, Error> {
    check_name(&core, &model_name)?;
    Ok(readiness(&core))
}

/// One input tensor of an infer request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Row-major values (nested arrays are flattened), decoded straight into `f32` (see `api::body`).
    #[schema(value_type = Vec<f32>)]
    pub data: TensorData,
}

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InferInput>,
}

/// One output tensor.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InferOutput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Vec<f32>,
}

/// `POST /v2/models/{name}/infer` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

/// Runs the model on a batch given as its ONNX inputs: `x_<modality>` `[batch, channels, window_samples]`
/// and optionally `present` `[batch, n_modalities]` (default: 1 for every modality input given). The
/// batch is at most `--max-request-rows` rows, each with at least one modality present; its rows enter
/// the one-shot queue together (or the request is refused with 429) and are batched with other traffic.
/// Absent modalities are zeroed before inference.
#[utoipa::path(
    post, path = "/v2/models/{model_name}/infer",
    params(("model_name" = String, Path, description = "Model name from model.json")),
    request_body = InferRequest,
    responses((status = 200, body = InferResponse),
              (status = 400, body = ErrorBody, description = "bad input, too many rows, a row with no modality present"),
              (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "one-shot queue full, or this client's concurrent one-shot requests at their limit"),
              (status = 503, body = ErrorBody))
)]
pub async fn infer(
    State(core): State<Core>,
    AppPath(model_name): AppPath<String>,
    permit: Result<OneShotPermit, Error>,
    request: Result<AppJson<InferRequest>, Error>,
) -> Result<Json<InferResponse>, Error> {
    check_name(&core, &model_name)?;
    let arrived = Instant::now();
    let transport = Transport::Rest.as_str();
    core.metrics
        .predict_requests
        .with_label_values(&[transport])
        .inc();
    let result = match (permit, request) {
        (Ok(_permit), Ok(AppJson(request))) => run_infer(&core, request, arrived).await,
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    if let Err(e) = &result {
        core.metrics
            .predict_rejected
            .with_label_values(&[transport, e.reason()])
            .inc();
    }
    result.map(Json)
}

async fn run_infer(
    core: &Core,
    request: InferRequest,
    arrived: Instant,
) -> Result<InferResponse, Error> {
    let m = &core.manifest;
    let rows = to_model_inputs(m, request.inputs, core.args.max_request_rows)?;
    let batch = rows.len();
    let answers = core.predict_rows(rows, arrived).await?;
    let k = m.classes.len();
    let (mut logits, mut probabilities, mut embedding) = (
        Vec::with_capacity(batch * k),
        Vec::with_capacity(batch * k),
        Vec::with_capacity(batch * m.embedding_size),
    );
    for a in answers {
        logits.extend(a.output.logits);
        probabilities.extend(a.output.probabilities);
        embedding.extend(a.output.embedding);
    }
    let out = |name: &str, width: usize, data: Vec<f32>| InferOutput {
        name: name.to_string(),
        shape: vec![batch as i64, width as i64],
        datatype: "FP32".into(),
        data,
    };
    Ok(InferResponse {
        model_name: m.name.clone(),
        model_version: m.version.clone(),
        id: request.id,
        outputs: vec![
            out(&m.outputs.logits, k, logits),
            out(&m.outputs.probabilities, k, probabilities),
            out(&m.outputs.embedding, m.embedding_size, embedding),
        ],
    })
}

/// Splits the named batch tensors into per-window model inputs, checking names, types and shapes.
fn to_model_inputs(
    m: &Manifest,
    inputs: Vec<InferInput>,
    max_rows: usize,
) -> Result<Vec<ModelInput>, Error> {
    let mut batch: Option<usize> = None;
    let mut given: Vec<Option<Vec<f32>>> = vec![None; m.modalities.len()];
    let mut present: Option<Vec<f32>> = None;
    for input in inputs {
        if input.datatype != "FP32" {
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
        if let Some(problem) = input.data.problem {
            return Err(problem.into_error(&input.name));
        }
        let data = input.data.values;
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
