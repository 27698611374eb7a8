//! Open Inference Protocol (KServe v2) over HTTP/JSON, so generic tooling can call the model: server
//! metadata, health, model metadata/readiness and `infer` (also under `/versions/{version}`), with the
//! ONNX inputs by name (FP32, explicit shape, row-major data) and optional output selection. The protocol
//! logic is shared with the gRPC service in `api::oip`.

use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::body::TensorData;
use super::http_error::{AppPath, ErrorBody};
use super::oip;
use super::rest::OneShotPermit;
use crate::app::Core;
use crate::error::Error;
use crate::ingest::Transport;

/// KServe v2 routes.
pub fn router(core: Core) -> axum::Router {
    axum::Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model_name}", get(model_metadata))
        .route("/v2/models/{model_name}/ready", get(model_ready))
        .route("/v2/models/{model_name}/infer", post(infer))
        .route(
            "/v2/models/{model_name}/versions/{model_version}",
            get(versioned_model_metadata),
        )
        .route(
            "/v2/models/{model_name}/versions/{model_version}/ready",
            get(versioned_model_ready),
        )
        .route(
            "/v2/models/{model_name}/versions/{model_version}/infer",
            post(versioned_infer),
        )
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

impl From<oip::TensorSpec> for TensorMetadata {
    fn from(t: oip::TensorSpec) -> Self {
        Self {
            name: t.name,
            datatype: t.datatype.to_string(),
            shape: t.shape,
        }
    }
}

fn metadata(core: &Core, name: &str, version: Option<&str>) -> Result<ModelMetadata, Error> {
    oip::check_model(&core.manifest, name, version)?;
    let info = oip::model_info(&core.manifest);
    Ok(ModelMetadata {
        name: info.name,
        versions: info.versions,
        platform: info.platform.to_string(),
        inputs: info.inputs.into_iter().map(Into::into).collect(),
        outputs: info.outputs.into_iter().map(Into::into).collect(),
    })
}

/// `GET /v2`: the server's name, version and supported protocol extensions.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    /// Optional OIP extensions supported (none: no binary tensor data, model repository, statistics …).
    pub extensions: Vec<String>,
}

/// Server metadata (open, like the health routes).
#[utoipa::path(get, path = "/v2", responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: oip::SERVER_NAME.into(),
        version: oip::SERVER_VERSION.into(),
        extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
    })
}

/// Model metadata: inputs (one per modality in manifest order, then `present`, whose columns follow the
/// same order) and outputs with their shapes.
#[utoipa::path(
    get, path = "/v2/models/{model_name}",
    params(("model_name" = String, Path, description = "Model name from model.json")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = ErrorBody))
)]
pub async fn model_metadata(
    State(core): State<Core>,
    AppPath(model_name): AppPath<String>,
) -> Result<Json<ModelMetadata>, Error> {
    metadata(&core, &model_name, None).map(Json)
}

/// Metadata of one model version (404 for a version other than the manifest's).
#[utoipa::path(
    get, path = "/v2/models/{model_name}/versions/{model_version}",
    params(("model_name" = String, Path, description = "Model name from model.json"),
           ("model_version" = String, Path, description = "Model version from model.json")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = ErrorBody))
)]
pub async fn versioned_model_metadata(
    State(core): State<Core>,
    AppPath((model_name, model_version)): AppPath<(String, String)>,
) -> Result<Json<ModelMetadata>, Error> {
    metadata(&core, &model_name, Some(&model_version)).map(Json)
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
    oip::check_model(&core.manifest, &model_name, None)?;
    Ok(readiness(&core))
}

/// Readiness of one model version (404 for a version other than the manifest's).
#[utoipa::path(
    get, path = "/v2/models/{model_name}/versions/{model_version}/ready",
    params(("model_name" = String, Path, description = "Model name from model.json"),
           ("model_version" = String, Path, description = "Model version from model.json")),
    responses((status = 200, body = V2Status), (status = 503, body = V2Status), (status = 404, body = ErrorBody))
)]
pub async fn versioned_model_ready(
    State(core): State<Core>,
    AppPath((model_name, model_version)): AppPath<(String, String)>,
) -> Result<Response, Error> {
    oip::check_model(&core.manifest, &model_name, Some(&model_version))?;
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
    /// Echoed in the answer.
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InferInput>,
    /// The outputs to return, in this order; absent or empty = all three. An unknown name is a 400.
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
}

/// One output an infer request asks for (its `parameters` are accepted and ignored: outputs are JSON).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestedOutput {
    pub name: String,
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
/// and optionally `present` `[batch, n_modalities]` (columns in the manifest's modality order, the order
/// of the inputs in the model metadata; default: 1 for every modality input given). The batch is at most
/// `--max-request-rows` rows, each with at least one modality present; its rows enter the one-shot queue
/// together (or the request is refused with 429) and are batched with other traffic. Absent modalities
/// are zeroed before inference. `outputs` picks which outputs come back (default all); `id` is echoed.
#[utoipa::path(
    post, path = "/v2/models/{model_name}/infer",
    params(("model_name" = String, Path, description = "Model name from model.json")),
    request_body = InferRequest,
    responses((status = 200, body = InferResponse),
              (status = 400, body = ErrorBody, description = "bad input, too many rows, a row with no modality present, an unknown output, binary tensor data"),
              (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "one-shot queue full, or this client's concurrent one-shot requests at their limit"),
              (status = 503, body = ErrorBody))
)]
pub async fn infer(
    State(core): State<Core>,
    AppPath(model_name): AppPath<String>,
    headers: HeaderMap,
    permit: Result<OneShotPermit, Error>,
    request: Result<OipJson<InferRequest>, Error>,
) -> Result<Json<InferResponse>, Error> {
    run_infer(&core, model_name, None, &headers, permit, request).await
}

/// [`infer`] for one model version (404 for a version other than the manifest's).
#[utoipa::path(
    post, path = "/v2/models/{model_name}/versions/{model_version}/infer",
    params(("model_name" = String, Path, description = "Model name from model.json"),
           ("model_version" = String, Path, description = "Model version from model.json")),
    request_body = InferRequest,
    responses((status = 200, body = InferResponse),
              (status = 400, body = ErrorBody, description = "bad input, too many rows, a row with no modality present, an unknown output, binary tensor data"),
              (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "one-shot queue full, or this client's concurrent one-shot requests at their limit"),
              (status = 503, body = ErrorBody))
)]
pub async fn versioned_infer(
    State(core): State<Core>,
    AppPath((model_name, model_version)): AppPath<(String, String)>,
    headers: HeaderMap,
    permit: Result<OneShotPermit, Error>,
    request: Result<OipJson<InferRequest>, Error>,
) -> Result<Json<InferResponse>, Error> {
    run_infer(
        &core,
        model_name,
        Some(model_version),
        &headers,
        permit,
        request,
    )
    .await
}

/// A JSON body as OIP clients send it: like `Json`, but a request without a content type is read as
/// JSON too (tritonclient and curl's `-d` without `-H` send none); another content type is refused
/// (`bad_content_type`), and the body limit is `--max-body-bytes` (413).
#[derive(Debug)]
pub struct OipJson<T>(pub T);

impl<S, T> FromRequest<S> for OipJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Error> {
        if let Some(content_type) = request.headers().get(axum::http::header::CONTENT_TYPE) {
            let json = content_type.to_str().is_ok_and(|ct| {
                let essence = ct.split(';').next().unwrap_or_default().trim();
                essence.eq_ignore_ascii_case("application/json")
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
            if !json {
                return Err(Error::invalid(
                    "bad_content_type",
                    "Expected request with `Content-Type: application/json`",
                ));
            }
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge(format!(
                        "request body too large: {}",
                        rejection.body_text()
                    ))
                } else {
                    Error::invalid("bad_json", rejection.body_text())
                }
            })?;
        serde_json::from_slice(&bytes).map(OipJson).map_err(|e| {
            Error::invalid(
                "bad_json",
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}

/// Header of the OIP binary tensor data extension (a JSON header followed by raw tensor bytes).
const BINARY_HEADER: &str = "inference-header-content-length";

async fn run_infer(
    core: &Core,
    model_name: String,
    model_version: Option<String>,
    headers: &HeaderMap,
    permit: Result<OneShotPermit, Error>,
    request: Result<OipJson<InferRequest>, Error>,
) -> Result<Json<InferResponse>, Error> {
    let arrived = Instant::now();
    oip::counted(core, Transport::Rest, async {
        if headers.contains_key(BINARY_HEADER) {
            return Err(Error::invalid(
                "binary_tensor_data",
                "the binary tensor data extension is not supported: send the tensors as JSON `data` \
                 (tritonclient: binary_data=False), or use the gRPC service with raw_input_contents",
            ));
        }
        let (_permit, OipJson(request)) = match (permit, request) {
            (Ok(permit), Ok(request)) => (permit, request),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let request = oip::InferRequest {
            model_name,
            model_version,
            id: request.id,
            inputs: request
                .inputs
                .into_iter()
                .map(|input| oip::InputTensor {
                    problem: input.data.problem.map(|p| p.into_error(&input.name)),
                    data: input.data.values,
                    name: input.name,
                    datatype: input.datatype,
                    shape: input.shape,
                })
                .collect(),
            outputs: request.outputs.into_iter().map(|o| o.name).collect(),
        };
        let answer = oip::infer(core, request, arrived).await?;
        Ok(Json(InferResponse {
            model_name: answer.model_name,
            model_version: answer.model_version,
            id: answer.id,
            outputs: answer
                .outputs
                .into_iter()
                .map(|o| InferOutput {
                    name: o.name,
                    shape: o.shape,
                    datatype: oip::FP32.into(),
                    data: o.data,
                })
                .collect(),
        }))
    })
    .await
}
