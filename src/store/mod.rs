//! Prediction store: latest prediction and a bounded history per device, plus a broadcast feed of every
//! prediction for live subscribers (WebSocket/gRPC streams).

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

/// Where the time of one prediction went, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// From the window entering the batch queue to its batch starting to run.
    pub queue_seconds: f64,
    /// Session run time of the batch the window was in.
    pub compute_seconds: f64,
    /// From the window closing (or the request arriving) to the prediction being ready.
    pub end_to_end_seconds: f64,
    /// Number of windows in the batch.
    pub batch_size: usize,
}

/// One prediction for one device window.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    pub device_id: String,
    /// End of the window `[end − window, end)`, unix nanoseconds.
    pub window_end_unix_nanos: i64,
    pub label: String,
    pub class_index: usize,
    /// In manifest class order.
    pub probabilities: Vec<f32>,
    pub embedding: Vec<f32>,
    /// Modalities that had enough coverage, in manifest order.
    pub present_modalities: Vec<String>,
    pub timings: Timings,
}

#[derive(Debug)]
struct DeviceHistory {
    /// Oldest first, ordered by window end.
    entries: VecDeque<Arc<Prediction>>,
}

#[derive(Debug)]
struct StoreInner {
    devices: DashMap<String, DeviceHistory>,
    history_len: usize,
    feed: broadcast::Sender<Arc<Prediction>>,
}

/// Shared handle; cloning is cheap.
#[derive(Clone, Debug)]
pub struct PredictionStore {
    inner: Arc<StoreInner>,
}

impl PredictionStore {
    /// `history_len` predictions are kept per device (at least 1); the feed buffers `feed_capacity`.
    pub fn new(history_len: usize, feed_capacity: usize) -> Self {
        let (feed, _) = broadcast::channel(feed_capacity.max(1));
        Self {
            inner: Arc::new(StoreInner {
                devices: DashMap::new(),
                history_len: history_len.max(1),
                feed,
            }),
        }
    }

    /// Records a prediction and publishes it on the feed. Predictions of one device may finish out of
    /// order (several workers); history stays ordered by window end.
    pub fn insert(&self, prediction: Prediction) {
        let prediction = Arc::new(prediction);
        {
            let mut entry = self
                .inner
                .devices
                .entry(prediction.device_id.clone())
                .or_insert_with(|| DeviceHistory {
                    entries: VecDeque::new(),
                });
            let entries = &mut entry.entries;
            let at = entries
                .iter()
                .rposition(|p| p.window_end_unix_nanos <= prediction.window_end_unix_nanos)
                .map_or(0, |i| i + 1);
            entries.insert(at, Arc::clone(&prediction));
            while entries.len() > self.inner.history_len {
                entries.pop_front();
            }
        }
        // No subscriber is not an error.
        let _ = self.inner.feed.send(prediction);
    }

    /// Newest prediction (by window end) of a device.
    pub fn latest(&self, device_id: &str) -> Option<Arc<Prediction>> {
        self.inner
            .devices
            .get(device_id)
            .and_then(|h| h.entries.back().cloned())
    }

    /// Up to `limit` newest predictions with window end > `since`, oldest first.
    pub fn history(
        &self,
        device_id: &str,
        since_unix_nanos: Option<i64>,
        limit: usize,
    ) -> Vec<Arc<Prediction>> {
        let Some(h) = self.inner.devices.get(device_id) else {
            return Vec::new();
        };
        let since = since_unix_nanos.unwrap_or(i64::MIN);
        let newer: Vec<_> = h
            .entries
            .iter()
            .filter(|p| p.window_end_unix_nanos > since)
            .cloned()
            .collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).collect()
    }

    /// Live feed of every prediction; a lagging receiver gets RecvError::Lagged(n) and must count the skips.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Prediction>> {
        self.inner.feed.subscribe()
    }

    /// Forgets every device whose newest prediction's window ended before `cutoff_unix_nanos`.
    pub fn prune_older_than(&self, cutoff_unix_nanos: i64) {
        self.inner.devices.retain(|_, h| {
            h.entries
                .back()
                .is_some_and(|p| p.window_end_unix_nanos >= cutoff_unix_nanos)
        });
    }

    /// Number of devices with at least one prediction.
    pub fn device_count(&self) -> usize {
        self.inner.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(device: &str, end: i64) -> Prediction {
        Prediction {
            device_id: device.into(),
            window_end_unix_nanos: end,
            label: "a".into(),
            class_index: 0,
            probabilities: vec![1.0],
            embedding: vec![],
            present_modalities: vec![],
            timings: Timings::default(),
        }
    }

    #[test]
    fn history_is_bounded_ordered_and_filtered() {
        let store = PredictionStore::new(3, 8);
        for end in [1, 3, 2, 5, 4] {
            store.insert(pred("d", end));
        }
        let ends = |v: Vec<Arc<Prediction>>| {
            v.iter()
                .map(|p| p.window_end_unix_nanos)
                .collect::<Vec<_>>()
        };
        assert_eq!(ends(store.history("d", None, 10)), vec![3, 4, 5]);
        assert_eq!(ends(store.history("d", Some(3), 10)), vec![4, 5]);
        assert_eq!(ends(store.history("d", None, 1)), vec![5]);
        assert_eq!(store.latest("d").map(|p| p.window_end_unix_nanos), Some(5));
        assert!(store.latest("other").is_none());
        assert!(store.history("other", None, 10).is_empty());
        store.insert(pred("recent", 10));
        store.prune_older_than(6);
        assert!(store.latest("d").is_none(), "newest window 5 < cutoff 6");
        assert_eq!(
            store.latest("recent").map(|p| p.window_end_unix_nanos),
            Some(10)
        );
    }

    #[tokio::test]
    async fn feed_reports_lag() {
        let store = PredictionStore::new(4, 2);
        let mut rx = store.subscribe();
        for end in 0..5 {
            store.insert(pred("d", end));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 3),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.expect("item").window_end_unix_nanos, 3);
    }
}
