//! Transport adapters over the core: REST (+ KServe v2, health, OpenAPI), WebSocket and gRPC.

pub mod auth;
pub mod feed;
pub mod grpc;
pub mod http_error;
pub mod rest;
pub mod ws;

use crate::app::Core;

/// The public HTTP application: REST + WebSocket.
pub fn http_app(core: Core) -> axum::Router {
    rest::router(core.clone()).merge(ws::router(core))
}
