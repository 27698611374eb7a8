//! Plumbing shared by the live prediction feeds of the gRPC and WebSocket adapters: which devices a
//! subscriber wants, counting what a slow subscriber skipped, and noticing shutdown.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::app::{Core, Phase};
use crate::store::Prediction;

/// Devices a subscriber wants; empty = every device.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    devices: HashSet<String>,
}

impl DeviceFilter {
    pub fn new(devices: impl IntoIterator<Item = String>) -> Self {
        Self {
            devices: devices
                .into_iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    pub fn matches(&self, device_id: &str) -> bool {
        self.devices.is_empty() || self.devices.contains(device_id)
    }
}

/// One step of a feed subscription.
pub enum FeedEvent {
    Prediction(Arc<Prediction>),
    /// The subscriber fell behind the broadcast buffer; this many predictions were skipped (already
    /// counted in `crossl_feed_lagged_total`).
    Skipped(u64),
    /// The store is gone (the service is stopping).
    Closed,
}

/// Receives the next feed item, counting skips under `transport` ("grpc" / "websocket").
pub async fn next_event(
    core: &Core,
    feed: &mut broadcast::Receiver<Arc<Prediction>>,
    transport: &'static str,
) -> FeedEvent {
    match feed.recv().await {
        Ok(p) => FeedEvent::Prediction(p),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            core.metrics
                .feed_lagged
                .with_label_values(&[transport])
                .inc_by(n);
            FeedEvent::Skipped(n)
        }
        Err(broadcast::error::RecvError::Closed) => FeedEvent::Closed,
    }
}

/// Resolves once the service has begun shutting down (or failed to start). Long-lived streams select on
/// it and end themselves, so the listeners' graceful shutdown is not held open by subscribers that never
/// leave.
pub async fn stopped_serving(core: Core) {
    let mut health = core.health.clone();
    // A dropped sender means the service is gone: stop as well.
    let _ = health
        .wait_for(|h| matches!(h.phase, Phase::ShuttingDown | Phase::Failed))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_filter_matches_everything() {
        let all = DeviceFilter::new(Vec::<String>::new());
        assert!(all.matches("anything"));
        let some = DeviceFilter::new(["a".to_string(), " b ".to_string(), String::new()]);
        assert!(some.matches("a"));
        assert!(some.matches("b"));
        assert!(!some.matches("c"));
        assert!(!some.matches(""));
    }
}
