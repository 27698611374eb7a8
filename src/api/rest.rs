//! REST API: `/v1` (model, devices, predictions, one-window predict), liveness/readiness, the OpenAPI
//! document, and the separate `/metrics` app.

use std::collections::HashMap;

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::auth::bearer_token;
use super::body::SampleRows;
use super::http_error::{AppJson, AppPath, AppQuery, ErrorBody};
use crate::app::{Core, Health, Phase, PredictOutput};
use crate::batch::{ClientKey, ClientPermit};
use crate::error::Error;
use crate::infer::RuntimeInfo;
use crate::ingest::{DeviceInfo, ModalityStatus, Transport};
use crate::model::Manifest;
use crate::model::manifest::{InputNames, ModalitySpec, OutputNames};
use crate::store::{Prediction, Timings};

/// REST routes of the public HTTP app.
pub fn router(core: Core) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/model", get(model))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/{device_id}", get(device))
        .route("/v1/devices/{device_id}/prediction", get(latest_prediction))
        .route(
            "/v1/devices/{device_id}/predictions",
            get(prediction_history),
        )
        .route(
            "/v1/devices/{device_id}/labels",
            get(super::labels::get_labels)
                .post(super::labels::post_labels)
                .delete(super::labels::delete_labels),
        )
        .route("/v1/predict", post(predict))
        .route("/v1/embed", post(embed))
        .with_state(core)
}

/// The metrics listener's app: `GET /metrics` in Prometheus text format.
pub fn metrics_app(core: Core) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(core)
}

async fn metrics(State(core): State<Core>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        core.metrics.render(),
    )
        .into_response()
}

/// The OpenAPI document of the public HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "crossl-serve",
        description = "Streaming human-activity recognition with CroSSL models"
    ),
    modifiers(&BearerKey),
    // Keys are optional: auth is off unless the server has API keys (`--api-key`).
    security((), ("api_key" = [])),
    paths(
        healthz,
        readyz,
        model,
        devices,
        device,
        latest_prediction,
        prediction_history,
        super::labels::post_labels,
        super::labels::get_labels,
        super::labels::delete_labels,
        predict,
        super::status::status,
        embed,
        super::kserve::server_metadata,
        super::kserve::live,
        super::kserve::ready,
        super::kserve::model_metadata,
        super::kserve::model_ready,
        super::kserve::infer,
        super::kserve::versioned_model_metadata,
        super::kserve::versioned_model_ready,
        super::kserve::versioned_infer
    ),
    components(schemas(
        ErrorBody,
        Manifest,
        ModalitySpec,
        InputNames,
        OutputNames,
        RuntimeInfo,
        Health,
        Phase,
        DeviceInfo,
        ModalityStatus,
        Prediction,
        crate::store::GeneralAnswer,
        Timings,
        crate::store::personal::LabelRequest,
        crate::store::personal::LabelSpan,
        super::labels::LabelsResponse,
        super::labels::ClassWindows,
        super::labels::DeletedLabels,
        PredictRequest,
        PredictResponse,
        EmbedResponse,
        ModelResponse,
        BatchingInfo,
        WindowingInfo,
        DevicesResponse,
        DeviceEntry,
        LatestSummary,
        super::status::StatusResponse,
        super::status::StatusLatency,
        crate::metrics::LatencySummary,
        HistoryResponse,
        Liveness,
        Readiness
    ))
)]
pub struct ApiDoc;

/// The API-key scheme (`authorization: Bearer KEY`), so Swagger UI's "Authorize" can send a key.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key from `--api-key KEY:scopes` (only when the server has keys; see docs/protocol.md)"
                .into(),
        );
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// `GET /openapi.json` as pretty JSON (what `openapi.json` in the repository holds).
pub fn openapi_pretty() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_pretty(),
    )
        .into_response()
}

/// Liveness.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always "live".
    pub status: String,
}

/// Process is up (does not mean the model is ready).
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Liveness)))]
async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: "live".into(),
    })
}

/// Readiness.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub phase: Phase,
    pub model: String,
    /// Execution provider in use, once known.
    pub execution_provider: Option<String>,
    /// Why start-up failed, if it did.
    pub error: Option<String>,
}

/// Ready when the model is loaded and warmed up, the execution provider is known and the server is not
/// shutting down; 503 otherwise.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(core): State<Core>) -> Response {
    let health = core.health();
    let body = Readiness {
        ready: health.phase == Phase::Ready,
        phase: health.phase,
        model: core.manifest.name.clone(),
        execution_provider: health.runtime.map(|r| r.execution_provider),
        error: health.error,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Batcher settings in effect.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchingInfo {
    pub max_batch_size: usize,
    pub max_batch_delay_ms: u64,
    /// Streaming window queue.
    pub queue_capacity: usize,
    /// One-shot queue, in rows.
    pub predict_queue_capacity: usize,
    /// Most rows in one one-shot request.
    pub max_request_rows: usize,
    /// Most one-shot requests in flight per client (0 = no limit).
    pub max_requests_per_client: usize,
    pub window_deadline_ms: u64,
    pub intra_op_threads: usize,
}

/// Window assembly settings in effect.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowingInfo {
    pub window_seconds: f64,
    pub hop_ms: u64,
    pub out_of_orderness_ms: u64,
    pub stall_timeout_ms: u64,
    /// `per-device` (window ends at `k · hop + phase(device)`, see `GET /v1/devices/{id}`) or `aligned`.
    pub window_phase: crate::window::WindowPhase,
    pub min_coverage: f64,
    pub max_gap_samples: f64,
    pub modality_stale_ms: u64,
    pub device_idle_timeout_s: u64,
    pub prediction_retention_s: u64,
}

/// `GET /v1/model`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelResponse {
    pub manifest: Manifest,
    /// Execution provider and session count; null until warmed up.
    pub runtime: Option<RuntimeInfo>,
    pub ready: bool,
    pub batching: BatchingInfo,
    pub windowing: WindowingInfo,
}

/// The served model: manifest, execution provider in use, sessions, batching and windowing settings.
#[utoipa::path(get, path = "/v1/model", responses((status = 200, body = ModelResponse)))]
async fn model(State(core): State<Core>) -> Json<ModelResponse> {
    let a = &core.args;
    let policy = crate::app::window_policy(a, &core.manifest);
    let health = core.health();
    Json(ModelResponse {
        manifest: (*core.manifest).clone(),
        runtime: health.runtime,
        ready: health.phase == Phase::Ready,
        batching: BatchingInfo {
            max_batch_size: a.max_batch_size(),
            max_batch_delay_ms: a.max_batch_delay_ms,
            queue_capacity: a.queue_capacity,
            predict_queue_capacity: a.predict_queue_capacity,
            max_request_rows: a.max_request_rows,
            max_requests_per_client: a.max_requests_per_client,
            window_deadline_ms: a.window_deadline_ms,
            intra_op_threads: a.intra_op_threads,
        },
        windowing: WindowingInfo {
            window_seconds: core.manifest.window_seconds,
            hop_ms: (policy.hop_nanos / 1_000_000) as u64,
            out_of_orderness_ms: a.out_of_orderness_ms,
            stall_timeout_ms: a.stall_timeout_ms,
            window_phase: a.window_phase,
            min_coverage: a.min_coverage,
            max_gap_samples: a.max_gap_samples,
            modality_stale_ms: a.modality_stale_ms,
            device_idle_timeout_s: a.device_idle_timeout_s,
            prediction_retention_s: a.prediction_retention_s,
        },
    })
}

/// Query of `GET /v1/devices`: server-side filtering and paging for large fleets.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DevicesQuery {
    /// Only device ids starting with this.
    pub prefix: Option<String>,
    /// Most devices returned (1 ‥ 10000); without it every matching device.
    pub limit: Option<usize>,
    /// Only device ids after this one (the `next_cursor` of the previous page); ids are in byte order.
    pub cursor: Option<String>,
    /// With `true`, each entry carries a `latest` summary of the device's newest prediction.
    pub latest: Option<bool>,
}

/// Most devices one page of `GET /v1/devices` may ask for.
pub const MAX_DEVICES_PAGE: usize = 10_000;

/// The newest prediction of a device, in brief (`GET /v1/devices?latest=true`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LatestSummary {
    pub label: String,
    pub class_index: usize,
    /// Probability of `label`.
    pub confidence: f32,
    /// End of the window (device clock), unix nanoseconds.
    pub window_end_unix_nanos: i64,
    /// Modalities that had enough coverage in that window, in manifest order.
    pub present_modalities: Vec<String>,
}

impl LatestSummary {
    fn of(p: &Prediction) -> Self {
        Self {
            label: p.label.clone(),
            class_index: p.class_index,
            confidence: p.probabilities.get(p.class_index).copied().unwrap_or(0.0),
            window_end_unix_nanos: p.window_end_unix_nanos,
            present_modalities: p.present_modalities.to_vec(),
        }
    }
}

/// One entry of `GET /v1/devices`: the device, and with `?latest=true` its newest prediction.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceEntry {
    #[serde(flatten)]
    pub device: DeviceInfo,
    /// Only with `?latest=true`; null when the device has no prediction yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<Option<LatestSummary>>,
}

/// `GET /v1/devices`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DevicesResponse {
    /// In device-id order.
    pub devices: Vec<DeviceEntry>,
    /// Devices matching `prefix` (and the API key), over every page.
    pub total: usize,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// Devices with window state: last seen, modalities heard from and whether each is stale. In device-id
/// order; `prefix`, `cursor` and `limit` filter and page on the server (fleets of thousands).
#[utoipa::path(
    get, path = "/v1/devices",
    params(DevicesQuery),
    responses((status = 200, body = DevicesResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn devices(
    State(core): State<Core>,
    grant: Option<axum::extract::Extension<crate::api::auth::Grant>>,
    AppQuery(query): AppQuery<DevicesQuery>,
) -> Result<Json<DevicesResponse>, Error> {
    if let Some(limit) = query.limit
        && !(1..=MAX_DEVICES_PAGE).contains(&limit)
    {
        return Err(Error::invalid(
            "bad_query",
            format!("limit must be between 1 and {MAX_DEVICES_PAGE}"),
        ));
    }
    // Every replica's devices with a shared store (503 while it is unreachable), else this replica's.
    let mut devices = core.state.devices().await?;
    let prefix = query.prefix.as_deref().unwrap_or_default();
    // A key bound to a device glob sees only its own devices (auth middleware; none = auth off).
    let grant = grant.map(|axum::extract::Extension(g)| g);
    devices.retain(|d| {
        d.device_id.starts_with(prefix) && grant.as_ref().is_none_or(|g| g.allows(&d.device_id))
    });
    devices.sort_unstable_by(|a, b| a.device_id.cmp(&b.device_id));
    let total = devices.len();
    let start = query.cursor.as_deref().map_or(0, |cursor| {
        devices.partition_point(|d| d.device_id.as_str() <= cursor)
    });
    let end = query
        .limit
        .map_or(devices.len(), |limit| (start + limit).min(devices.len()));
    let next_cursor =
        (end < devices.len() && end > start).then(|| devices[end - 1].device_id.clone());
    let mut entries = Vec::with_capacity(end - start);
    for device in devices.drain(start..end) {
        let latest = if query.latest.unwrap_or(false) {
            Some(
                core.state
                    .latest(&device.device_id)
                    .await?
                    .map(|p| LatestSummary::of(&p)),
            )
        } else {
            None
        };
        entries.push(DeviceEntry { device, latest });
    }
    Ok(Json(DevicesResponse {
        devices: entries,
        total,
        next_cursor,
    }))
}

/// One device.
#[utoipa::path(
    get, path = "/v1/devices/{device_id}",
    params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceInfo), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn device(
    State(core): State<Core>,
    AppPath(device_id): AppPath<String>,
) -> Result<Json<DeviceInfo>, Error> {
    core.state
        .device(&device_id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("unknown device {device_id:?}")))
}

/// Latest prediction of a device.
#[utoipa::path(
    get, path = "/v1/devices/{device_id}/prediction",
    params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = Prediction), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn latest_prediction(
    State(core): State<Core>,
    AppPath(device_id): AppPath<String>,
) -> Result<Json<Prediction>, Error> {
    core.state
        .latest(&device_id)
        .await?
        .map(|p| Json((*p).clone()))
        .ok_or_else(|| Error::NotFound(format!("no prediction for device {device_id:?}")))
}

/// Query of `GET /v1/devices/{id}/predictions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Most predictions returned (newest kept), default 50.
    pub limit: Option<usize>,
    /// Only windows ending after this time (unix nanoseconds).
    pub since: Option<i64>,
}

/// `GET /v1/devices/{id}/predictions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryResponse {
    pub device_id: String,
    /// Oldest first.
    pub predictions: Vec<Prediction>,
}

/// Recent predictions of a device, oldest first.
#[utoipa::path(
    get, path = "/v1/devices/{device_id}/predictions",
    params(("device_id" = String, Path, description = "Device id"), HistoryQuery),
    responses((status = 200, body = HistoryResponse), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn prediction_history(
    State(core): State<Core>,
    AppPath(device_id): AppPath<String>,
    AppQuery(query): AppQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, Error> {
    let limit = query.limit.unwrap_or(50);
    if limit == 0 {
        return Err(Error::invalid("bad_query", "limit must be at least 1"));
    }
    let predictions = core
        .state
        .history(&device_id, query.since, limit)
        .await?
        .ok_or_else(|| Error::NotFound(format!("unknown device {device_id:?}")))?
        .into_iter()
        .map(|p| (*p).clone())
        .collect();
    Ok(Json(HistoryResponse {
        device_id,
        predictions,
    }))
}

/// `POST /v1/predict` body: one complete window.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PredictRequest {
    /// Modality name → `window_samples` samples, each an array of `channels` values (raw sensor units).
    /// An omitted modality is absent; at least one must be given. Decoded straight into flat `f32`
    /// buffers (see `api::body`).
    #[schema(value_type = HashMap<String, Vec<Vec<f32>>>)]
    pub modalities: HashMap<String, SampleRows>,
}

/// A place in the caller's one-shot concurrency limit (`--max-requests-per-client`), taken before the
/// body is read; the caller is its API key when auth is on, else its peer address.
#[derive(Debug)]
pub struct OneShotPermit(#[allow(dead_code)] ClientPermit);

impl FromRequestParts<Core> for OneShotPermit {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, core: &Core) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let client = ClientKey::new(core.auth.is_enabled(), bearer_token(&parts.headers), peer);
        core.clients.acquire(&client).map(OneShotPermit)
    }
}

/// Counts a one-shot request refused before it reached the core (the core counts its own refusals).
pub(crate) fn count_refused_request(core: &Core, e: &Error) {
    core.metrics
        .predict_requests
        .with_label_values(&[Transport::Rest.as_str()])
        .inc();
    core.metrics
        .predict_rejected
        .with_label_values(&[Transport::Rest.as_str(), e.reason()])
        .inc();
}

/// `POST /v1/predict` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictResponse {
    pub label: String,
    pub class_index: usize,
    /// In manifest class order.
    pub probabilities: Vec<f32>,
    pub logits: Vec<f32>,
    pub embedding: Vec<f32>,
    /// Modalities given, in manifest order.
    pub present: Vec<String>,
    pub timing: Timings,
}

/// Classifies one complete window. Goes through the same batcher as streaming windows.
#[utoipa::path(
    post, path = "/v1/predict", request_body = PredictRequest,
    responses(
        (status = 200, body = PredictResponse),
        (status = 400, body = ErrorBody, description = "no modality, unknown modality, wrong channel count, wrong length, non-finite value, bad or empty JSON"),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "one-shot queue full, or this client's concurrent one-shot requests at their limit"),
        (status = 503, body = ErrorBody)
    )
)]
async fn predict(
    State(core): State<Core>,
    permit: Result<OneShotPermit, Error>,
    request: Result<AppJson<PredictRequest>, Error>,
) -> Result<Json<PredictResponse>, Error> {
    let out = run_window(&core, permit, request).await?;
    Ok(Json(PredictResponse {
        label: out.label,
        class_index: out.class_index,
        probabilities: out.probabilities,
        logits: out.logits,
        embedding: out.embedding,
        present: out.present,
        timing: out.timings,
    }))
}

/// `POST /v1/embed` answer: the CroSSL global embedding of the window, without the classifier's view.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbedResponse {
    pub embedding: Vec<f32>,
    /// Modalities given, in manifest order.
    pub present: Vec<String>,
    pub timing: Timings,
}

/// The global embedding of one complete window (for retrieval, clustering or a head of your own). Same
/// body, validation and batcher as `/v1/predict`.
#[utoipa::path(
    post, path = "/v1/embed", request_body = PredictRequest,
    responses(
        (status = 200, body = EmbedResponse),
        (status = 400, body = ErrorBody, description = "no modality, unknown modality, wrong channel count, wrong length, non-finite value, bad or empty JSON"),
        (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "one-shot queue full, or this client's concurrent one-shot requests at their limit"),
        (status = 503, body = ErrorBody)
    )
)]
async fn embed(
    State(core): State<Core>,
    permit: Result<OneShotPermit, Error>,
    request: Result<AppJson<PredictRequest>, Error>,
) -> Result<Json<EmbedResponse>, Error> {
    let out = run_window(&core, permit, request).await?;
    Ok(Json(EmbedResponse {
        embedding: out.embedding,
        present: out.present,
        timing: out.timings,
    }))
}

/// Validates a one-window body and runs it through the core; a body refused here is counted like one
/// the core refuses. The permit is held until the answer is ready.
async fn run_window(
    core: &Core,
    permit: Result<OneShotPermit, Error>,
    request: Result<AppJson<PredictRequest>, Error>,
) -> Result<PredictOutput, Error> {
    let checked = permit.and_then(|permit| {
        request
            .and_then(|AppJson(r)| flatten_rows(core, r))
            .map(|m| (permit, m))
    });
    let (_permit, modalities) = match checked {
        Ok(m) => m,
        Err(e) => {
            count_refused_request(core, &e);
            return Err(e);
        }
    };
    core.predict(Transport::Rest, modalities).await
}

/// Checks every row's channel count and hands over the already flat row-major values.
fn flatten_rows(core: &Core, request: PredictRequest) -> Result<HashMap<String, Vec<f32>>, Error> {
    let mut out = HashMap::with_capacity(request.modalities.len());
    for (name, rows) in request.modalities {
        let channels = match core.manifest.modality_index(&name) {
            Some(i) => core.manifest.modalities[i].channels,
            // Unknown names are reported by the core with the list of known ones.
            None => rows.width,
        };
        rows.check_channels(&name, channels)?;
        out.insert(name, rows.values);
    }
    Ok(out)
}
