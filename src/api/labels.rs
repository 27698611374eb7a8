//! `/v1/devices/{id}/labels`: label spans of a device's stream, read and drop its personal head (see
//! [`crate::store::personal`]). Thin over the state store; every request is counted by outcome.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::http_error::{AppJson, AppPath, ErrorBody};
use crate::app::Core;
use crate::error::Error;
use crate::store::personal::{self, DeviceLabels, LabelContext, LabelRequest, LabelSpan};

/// Labelled windows of one class.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassWindows {
    pub label: String,
    pub windows: usize,
}

/// A device's labels and the state of its personal head.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabelsResponse {
    pub device_id: String,
    /// Whether the device has a head (its predictions are personalised from now on).
    pub personalized: bool,
    /// Labelled spans, oldest first.
    pub spans: Vec<LabelSpan>,
    /// The head's classes and its labelled windows per class (a window labelled twice counts once, under
    /// its newer label); classes not listed fall back to the general model.
    pub classes: Vec<ClassWindows>,
    /// Labelled windows kept (at most `max_windows`).
    pub windows: usize,
    /// Updates so far (0 = never labelled).
    pub version: u64,
    /// `--personal-temperature`.
    pub temperature: f32,
    /// `--personal-reject-distance`.
    pub reject_distance: f32,
    /// `--label-max-spans`.
    pub max_spans: usize,
    /// `--label-max-windows`.
    pub max_windows: usize,
}

/// `DELETE /v1/devices/{id}/labels` answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedLabels {
    pub device_id: String,
    /// Whether the device had labels.
    pub deleted: bool,
}

fn response(core: &Core, device_id: String, labels: Option<&DeviceLabels>) -> LabelsResponse {
    let heads = core.store.personal();
    let params = heads.params();
    let empty = DeviceLabels::default();
    let labels = labels.unwrap_or(&empty);
    LabelsResponse {
        device_id,
        personalized: !labels.windows.is_empty(),
        spans: labels.spans.clone(),
        classes: labels
            .windows_per_class()
            .into_iter()
            .map(|(c, windows)| ClassWindows {
                label: core.manifest.class_name(c),
                windows,
            })
            .collect(),
        windows: labels.windows.len(),
        version: labels.version,
        temperature: params.temperature,
        reject_distance: params.reject_distance,
        max_spans: params.max_spans,
        max_windows: params.max_windows,
    }
}

fn count<T>(core: &Core, ok: &'static str, result: &Result<T, Error>) {
    let outcome = match result {
        Ok(_) => ok,
        Err(e) => e.reason(),
    };
    core.metrics
        .label_requests
        .with_label_values(&[outcome])
        .inc();
}

/// Labels a span of the device's already streamed (and still stored) windows with one of the model's
/// classes, and refits the device's personal head: from then on its predictions carry the personal
/// answer (`personalized: true`) and the general model's (`general`).
#[utoipa::path(
    post, path = "/v1/devices/{device_id}/labels", request_body = LabelRequest,
    params(("device_id" = String, Path, description = "Device id")),
    responses(
        (status = 201, body = LabelsResponse),
        (status = 400, body = ErrorBody, description = "unknown_label, bad_span (end not after start), outside_history (the span does not overlap the stored windows), no_windows_in_span (no stored window lies wholly inside), bad JSON"),
        (status = 403, body = ErrorBody, description = "the API key lacks the ingest scope or may not use this device"),
        (status = 404, body = ErrorBody, description = "unknown device"),
        (status = 409, body = ErrorBody, description = "label_limit (--label-max-spans, --label-max-windows, personalised devices), concurrent_update"),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn post_labels(
    State(core): State<Core>,
    AppPath(device_id): AppPath<String>,
    request: Result<AppJson<LabelRequest>, Error>,
) -> Result<(StatusCode, Json<LabelsResponse>), Error> {
    let result = async {
        let AppJson(request) = request?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let cx = LabelContext {
            state: core.state.as_ref(),
            heads: core.store.personal(),
            window_nanos: (core.manifest.window_seconds * 1e9).round() as i64,
            history_len: core.args.history_len,
            now_unix_nanos: now,
            fit_seconds: &core.metrics.head_fit_seconds,
        };
        personal::add_span(cx, &device_id, &request).await
    }
    .await;
    count(&core, "added", &result);
    let labels = result?;
    tracing::info!(device_id = %device_id, version = labels.version, windows = labels.windows.len(), "device labels updated");
    Ok((
        StatusCode::CREATED,
        Json(response(&core, device_id, Some(&labels))),
    ))
}

/// The device's labelled spans and its personal head's state (classes, windows per class).
#[utoipa::path(
    get, path = "/v1/devices/{device_id}/labels",
    params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = LabelsResponse), (status = 503, body = ErrorBody))
)]
pub async fn get_labels(
    State(core): State<Core>,
    AppPath(device_id): AppPath<String>,
) -> Result<Json<LabelsResponse>, Error> {
    let result = core.state.labels(&device_id).await;
    count(&core, "read", &result);
    let labels = result?;
    Ok(Json(response(&core, device_id, labels.as_deref())))
}

/// Drops the device's labels and head: its next predictions are the general model's again (stored ones
/// keep what they were answered).
#[utoipa::path(
    delete, path = "/v1/devices/{device_id}/labels",
    params(("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeletedLabels), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn delete_labels(
    State(core): State<Core>,
    AppPath(device_id): AppPath<String>,
) -> Result<Json<DeletedLabels>, Error> {
    let result = core.state.delete_labels(&device_id).await;
    count(&core, "deleted", &result);
    Ok(Json(DeletedLabels {
        deleted: result?,
        device_id,
    }))
}
