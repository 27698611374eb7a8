//! REST API: /v1 (model, devices, predictions, predict), KServe v2 subset, health, OpenAPI.

use crate::app::Core;

/// REST routes of the public HTTP app.
pub fn router(core: Core) -> axum::Router {
    let _ = core;
    axum::Router::new()
}
