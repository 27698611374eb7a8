//! WebSocket ingest and live prediction feed (owned by the ingest engineer; placeholder).

use crate::app::Core;

/// WebSocket routes, merged into the public HTTP app.
pub fn router(core: Core) -> axum::Router {
    let _ = core;
    axum::Router::new()
}
