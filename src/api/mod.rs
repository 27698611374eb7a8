//! Transport adapters over the core: REST (+ KServe v2, health, OpenAPI), WebSocket and gRPC (crossl.v1
//! and the Open Inference Protocol's `inference.GRPCInferenceService`); the status page and Swagger UI for
//! people (`status`).

pub mod auth;
pub mod body;
pub mod feed;
pub mod grpc;
pub mod http_error;
pub mod kserve;
pub mod labels;
pub mod listeners;
pub mod oip;
pub mod oip_grpc;
pub mod rest;
pub mod status;
pub mod tls;
pub mod ws;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::Core;
use crate::error::Error;

/// The public HTTP application: REST + KServe v2 + WebSocket behind the API-key check (a no-op when no
/// key is set), with the body-size limit and per-route request counting.
pub fn http_app(core: Core) -> axum::Router {
    let max_body = core.args.max_body_bytes;
    rest::router(core.clone())
        .merge(kserve::router(core.clone()))
        .merge(ws::router(core.clone()))
        .merge(status::router(core.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            core.clone(),
            auth::http_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(core, count_requests))
        // One span per request; the batcher records a request's work inside it.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(DefaultBodyLimit::max(max_body))
}

async fn not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut response = axum::response::IntoResponse::into_response(Error::invalid(
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    ));
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Counts every request by matched route template (never the raw path: no device ids in labels).
async fn count_requests(State(core): State<Core>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    core.metrics
        .http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}
