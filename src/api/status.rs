//! For people: the status page at `/` (HTML, JS and CSS compiled into the binary, no CDN), Swagger UI at
//! `/docs` (assets vendored from crates.io) over the same OpenAPI document as `/openapi.json`, and
//! `GET /v1/status`, the service-health summary the page polls.
//!
//! The page and the Swagger UI assets are open (they hold no data); everything they show comes from the
//! `read`-scoped API (`/v1/status`, `/v1/model`, `/v1/devices…`, `/v1/ws/predictions`) with the API key the
//! user types into the page.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::http_error::AppPath;
use crate::app::{Core, Phase};
use crate::error::Error;
use crate::metrics::{LatencySummary, counts_by_label};

/// The page's files: name under `/ui/`, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("status_page/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("status_page/app.css"),
    ),
];

const INDEX_HTML: &str = include_str!("status_page/index.html");

/// Same-origin only: the page's script, style and API/WebSocket calls.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// Whether `path` is one of the open pages (no API key needed): the status page and its assets, and
/// Swagger UI. [`super::auth::required_scope`] asks here.
pub fn is_open_page(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/") || path == "/docs" || path.starts_with("/docs/")
}

/// `/`, `/ui/{file}`, `/v1/status` and Swagger UI under `/docs`.
pub fn router(core: Core) -> axum::Router {
    let swagger: axum::Router = SwaggerUi::new("/docs")
        .config(Config::from("/openapi.json"))
        .into();
    axum::Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
        .route("/v1/status", get(status))
        .with_state(core)
        .merge(swagger)
}

async fn index() -> Response {
    page_response("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(AppPath(file): AppPath<String>) -> Result<Response, Error> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| page_response(content_type, body))
        .ok_or_else(|| Error::NotFound(format!("no status page asset {file:?}")))
}

fn page_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Embedded in the binary: a new build may change them, so browsers revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Latencies since start (see [`LatencySummary`]; the page derives recent means from two polls).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusLatency {
    /// Time a streaming or one-shot window waited in the queue before its batch ran.
    pub queue_wait: LatencySummary,
    /// Session run time per batch (compute).
    pub inference: LatencySummary,
    /// Streaming: window close to prediction ready.
    pub end_to_end_stream: LatencySummary,
    /// One-shot requests (`/v1/predict`, `/v1/embed`, v2 infer): arrival to prediction ready.
    pub end_to_end_predict: LatencySummary,
}

/// `GET /v1/status`: service health for the status page and for people, from the core's state and the
/// same counters `/metrics` exports (totals since start).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusResponse {
    pub phase: Phase,
    pub ready: bool,
    /// Service version.
    pub version: String,
    pub model: String,
    pub model_version: String,
    /// Execution provider in use ("cpu", "cuda"); null until warmed up.
    pub execution_provider: Option<String>,
    /// What was asked for (`cpu`, `cuda`, `auto`).
    pub requested_execution_provider: Option<String>,
    /// Inference sessions (worker threads); null until warmed up.
    pub sessions: Option<usize>,
    /// `memory` or `redis`.
    pub store: String,
    /// Devices with window state on this replica.
    pub active_devices: i64,
    /// The `--max-devices` cap.
    pub max_devices: usize,
    /// Long-lived gRPC and WebSocket streams open now (ingest and feeds).
    pub open_streams: i64,
    /// Jobs waiting in the admission queues now, by class (`streaming`, `one_shot`).
    pub queue_depth: BTreeMap<String, i64>,
    /// Capacity of the streaming window queue (`--queue-capacity`).
    pub queue_capacity: usize,
    /// Predictions produced since start (streaming and one-shot).
    pub predictions_total: u64,
    /// Streaming windows emitted by the window assembler since start.
    pub windows_emitted_total: u64,
    /// Failed session runs since start.
    pub inference_errors_total: u64,
    /// Streaming windows dropped before inference, by reason (`queue_full`, `deadline`, …).
    pub windows_shed_total: BTreeMap<String, u64>,
    /// One-shot requests refused at admission, by reason.
    pub requests_shed_total: BTreeMap<String, u64>,
    /// Live-feed predictions slow subscribers skipped, by transport.
    pub feed_lagged_total: BTreeMap<String, u64>,
    pub latency: StatusLatency,
    /// Why start-up failed, if it did.
    pub error: Option<String>,
}

/// Service health at a glance: phase, execution provider, queue wait vs compute, end-to-end latency,
/// shed counts and load (the status page polls it). Needs the `read` scope.
#[utoipa::path(
    get, path = "/v1/status",
    responses((status = 200, body = StatusResponse), (status = 401, body = super::http_error::ErrorBody), (status = 403, body = super::http_error::ErrorBody))
)]
pub async fn status(State(core): State<Core>) -> Json<StatusResponse> {
    Json(status_of(&core))
}

/// The status as of now.
pub fn status_of(core: &Core) -> StatusResponse {
    let health = core.health();
    let m = &core.metrics;
    let runtime = health.runtime.as_ref();
    let queue_depth = ["streaming", "one_shot"]
        .into_iter()
        .map(|c| (c.to_string(), m.queue_depth.with_label_values(&[c]).get()))
        .collect();
    StatusResponse {
        ready: health.phase == Phase::Ready,
        phase: health.phase,
        version: env!("CARGO_PKG_VERSION").to_string(),
        model: core.manifest.name.clone(),
        model_version: core.manifest.version.clone(),
        execution_provider: runtime.map(|r| r.execution_provider.clone()),
        requested_execution_provider: runtime.and_then(|r| r.requested_execution_provider.clone()),
        sessions: runtime.map(|r| r.sessions),
        store: core.state.kind().to_string(),
        active_devices: m.active_devices.get(),
        max_devices: core.args.max_devices,
        open_streams: m.open_streams_total(),
        queue_depth,
        queue_capacity: core.args.queue_capacity,
        predictions_total: m.predictions.get(),
        windows_emitted_total: m.windows_emitted.get(),
        inference_errors_total: m.inference_errors.get(),
        windows_shed_total: counts_by_label(&m.windows_shed),
        requests_shed_total: counts_by_label(&m.requests_shed),
        feed_lagged_total: counts_by_label(&m.feed_lagged),
        latency: StatusLatency {
            queue_wait: LatencySummary::of(&m.queue_wait_seconds),
            inference: LatencySummary::of(&m.inference_seconds),
            end_to_end_stream: LatencySummary::of(
                &m.end_to_end_latency_seconds.with_label_values(&["stream"]),
            ),
            end_to_end_predict: LatencySummary::of(
                &m.end_to_end_latency_seconds.with_label_values(&["predict"]),
            ),
        },
        error: health.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_pages_are_the_page_its_assets_and_swagger_ui() {
        for open in ["/", "/ui/app.js", "/docs", "/docs/", "/docs/index.css"] {
            assert!(is_open_page(open), "{open}");
        }
        for closed in ["/v1/status", "/v1/devices", "/documents", "/uix", ""] {
            assert!(!is_open_page(closed), "{closed}");
        }
    }

    #[test]
    fn every_asset_the_page_loads_is_embedded() {
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
            assert!(
                INDEX_HTML.contains(&format!("/ui/{name}")),
                "index.html does not load {name}"
            );
        }
    }
}
