//! Transport adapters over the core: REST (+ KServe v2, health, OpenAPI), WebSocket and gRPC.

pub mod auth;
pub mod feed;
pub mod grpc;
pub mod http_error;
pub mod kserve;
pub mod listeners;
pub mod rest;
pub mod tls;
pub mod ws;

use crate::app::Core;

/// The public HTTP application: REST + WebSocket, behind the API-key check (a no-op when no key is set).
pub fn http_app(core: Core) -> axum::Router {
    rest::router(core.clone())
        .merge(ws::router(core.clone()))
        .layer(axum::middleware::from_fn_with_state(core, auth::http_auth))
}
