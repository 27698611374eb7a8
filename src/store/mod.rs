//! Prediction store: latest prediction and a bounded history per device, plus a broadcast feed of every
//! prediction for live subscribers (WebSocket/gRPC streams). This is the replica-local store the batcher
//! writes to; [`state::StateStore`] is what the read paths see (this store alone, or shared on Redis).

mod compact;
pub mod keys;
pub mod personal;
pub mod redis_store;
pub mod state;

pub use personal::{GeneralAnswer, PersonalHeads};
pub use state::{MemoryState, StateStore};

use std::collections::VecDeque;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::window::{Clock, SystemClock};
use compact::{CompactPrediction, LabelTable};

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
    // Shared: every prediction with the same present set points at one list (a device's whole history
    // usually has one or two); with `general` boxed this cut a stored prediction from 964 to 430 bytes
    // (`cargo bench --bench device_memory`, docs/benchmarks.md).
    #[schema(value_type = Vec<String>)]
    pub present_modalities: Arc<[String]>,
    pub timings: Timings,
    /// True when `label`, `class_index` and `probabilities` are the device's personal head's answer
    /// (`POST /v1/devices/{id}/labels`); the general model's answer is then in `general`.
    #[serde(default)]
    pub personalized: bool,
    /// The general model's answer, present when `personalized` is true.
    // Boxed: `None` (most predictions) then costs a pointer, not the answer's 56 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general: Option<Box<GeneralAnswer>>,
}

#[derive(Debug)]
struct DeviceHistory {
    /// The newest prediction by window end, whole: what `latest` (dashboards, REST polling) returns.
    newest: Arc<Prediction>,
    /// The rest, oldest first, ordered by window end, in compact form (see [`compact`]): most of a
    /// device's memory is its history.
    older: VecDeque<CompactPrediction>,
    /// Server clock when the latest prediction was stored: retention counts from here, never from the
    /// window end (device time, which may be far off the server's).
    stored_at_unix_nanos: i64,
    /// Store-wide insertion number of the latest prediction: the least recently updated device has the
    /// smallest.
    stored_seq: u64,
}

/// Bounds of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Predictions kept per device (at least 1).
    pub history_len: usize,
    /// Items the live feed buffers for slow subscribers.
    pub feed_capacity: usize,
    /// Devices kept; storing for one more forgets the least recently updated device.
    pub max_devices: usize,
}

#[derive(Debug)]
struct StoreInner {
    devices: DashMap<String, DeviceHistory>,
    limits: StoreLimits,
    feed: broadcast::Sender<Arc<Prediction>>,
    clock: Arc<dyn Clock>,
    next_seq: AtomicU64,
    evicted: IntCounter,
    /// Per-device heads applied to every prediction stored here.
    personal: PersonalHeads,
    labels: LabelTable,
}

/// Shared handle; cloning is cheap.
#[derive(Clone, Debug)]
pub struct PredictionStore {
    inner: Arc<StoreInner>,
}

impl PredictionStore {
    /// `history_len` predictions are kept per device (at least 1); the feed buffers `feed_capacity`. No
    /// device bound, system clock, evictions not exported (tests and benchmarks).
    pub fn new(history_len: usize, feed_capacity: usize) -> Self {
        Self::bounded(
            StoreLimits {
                history_len,
                feed_capacity,
                max_devices: usize::MAX,
            },
            Arc::new(SystemClock),
            IntCounter::new("store_devices_evicted", "not exported").expect("valid counter"),
        )
    }

    /// A store within `limits`; `clock` stamps when predictions are stored (retention), `evicted` counts
    /// devices forgotten to stay within `max_devices`.
    pub fn bounded(limits: StoreLimits, clock: Arc<dyn Clock>, evicted: IntCounter) -> Self {
        let (feed, _) = broadcast::channel(limits.feed_capacity.max(1));
        Self {
            inner: Arc::new(StoreInner {
                devices: DashMap::new(),
                limits: StoreLimits {
                    history_len: limits.history_len.max(1),
                    feed_capacity: limits.feed_capacity.max(1),
                    max_devices: limits.max_devices.max(1),
                },
                feed,
                clock,
                next_seq: AtomicU64::new(0),
                evicted,
                personal: PersonalHeads::disabled(),
                labels: LabelTable::default(),
            }),
        }
    }

    /// The store with `heads` answering its devices' predictions (call before cloning the store).
    pub fn with_personal(mut self, heads: PersonalHeads) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.personal = heads,
            None => tracing::error!("with_personal on a shared store handle: heads not installed"),
        }
        self
    }

    /// The per-device heads of this store.
    pub fn personal(&self) -> &PersonalHeads {
        &self.inner.personal
    }

    /// Records a prediction and publishes it on the feed; a device with a personal head gets its answer
    /// (see [`personal`]). Predictions of one device may finish out of
    /// order (several workers); history stays ordered by window end. A device new to a full store first
    /// makes room by forgetting the least recently updated device (counted).
    pub fn insert(&self, mut prediction: Prediction) {
        self.inner.personal.personalise(&mut prediction);
        let prediction = Arc::new(prediction);
        let inner = &*self.inner;
        if !inner.devices.contains_key(&prediction.device_id) {
            while inner.devices.len() >= inner.limits.max_devices {
                if !self.evict_least_recent() {
                    break;
                }
            }
        }
        let stored_at = inner.clock.now_unix_nanos();
        let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
        match inner.devices.entry(prediction.device_id.clone()) {
            dashmap::Entry::Vacant(slot) => {
                slot.insert(DeviceHistory {
                    newest: Arc::clone(&prediction),
                    older: VecDeque::new(),
                    stored_at_unix_nanos: stored_at,
                    stored_seq: seq,
                });
            }
            dashmap::Entry::Occupied(mut slot) => {
                let h = slot.get_mut();
                h.stored_at_unix_nanos = stored_at;
                h.stored_seq = seq;
                if prediction.window_end_unix_nanos >= h.newest.window_end_unix_nanos {
                    let previous = std::mem::replace(&mut h.newest, Arc::clone(&prediction));
                    h.older
                        .push_back(CompactPrediction::new(&previous, &inner.labels));
                } else {
                    // Finished out of order (several workers): into its place among the older ones.
                    let at = h
                        .older
                        .iter()
                        .rposition(|p| p.window_end_unix_nanos <= prediction.window_end_unix_nanos)
                        .map_or(0, |i| i + 1);
                    h.older
                        .insert(at, CompactPrediction::new(&prediction, &inner.labels));
                }
                while h.older.len() + 1 > inner.limits.history_len {
                    h.older.pop_front();
                }
            }
        }
        // No subscriber is not an error.
        let _ = inner.feed.send(prediction);
    }

    /// Forgets the device updated longest ago; false when there was none to forget. A linear scan, run
    /// only when a new device meets a full store.
    fn evict_least_recent(&self) -> bool {
        let inner = &*self.inner;
        let oldest = inner
            .devices
            .iter()
            .min_by_key(|e| e.value().stored_seq)
            .map(|e| (e.key().clone(), e.value().stored_seq));
        let Some((id, seq)) = oldest else {
            return false;
        };
        // Only if it was not updated meanwhile; either way the caller re-checks the bound.
        if inner
            .devices
            .remove_if(&id, |_, h| h.stored_seq == seq)
            .is_some()
        {
            inner.evicted.inc();
            tracing::debug!(device_id = %id, "prediction store full: least recently updated device forgotten");
        }
        true
    }

    /// Newest prediction (by window end) of a device.
    pub fn latest(&self, device_id: &str) -> Option<Arc<Prediction>> {
        self.inner
            .devices
            .get(device_id)
            .map(|h| Arc::clone(&h.newest))
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
        let older = h.older.iter().filter(|p| p.window_end_unix_nanos > since);
        let newest = (h.newest.window_end_unix_nanos > since).then_some(&h.newest);
        let n_older = older.clone().count();
        let skip = (n_older + usize::from(newest.is_some())).saturating_sub(limit);
        // Skipped before decoding: only the entries returned are decoded.
        older
            .skip(skip)
            .map(|p| Arc::new(p.to_prediction(&h.newest.device_id)))
            .chain(newest.filter(|_| skip <= n_older).cloned())
            .collect()
    }

    /// Live feed of every prediction; a lagging receiver gets RecvError::Lagged(n) and must count the skips.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Prediction>> {
        self.inner.feed.subscribe()
    }

    /// Forgets every device whose latest prediction was stored before `cutoff_unix_nanos` on the store's
    /// (server) clock. The window end plays no part: a device whose clock runs an hour behind keeps its
    /// predictions as long as any other.
    pub fn prune_older_than(&self, cutoff_unix_nanos: i64) {
        self.inner
            .devices
            .retain(|_, h| h.stored_at_unix_nanos >= cutoff_unix_nanos);
    }

    /// Keeps only the newest `keep` predictions of a device (at least one).
    pub fn trim(&self, device_id: &str, keep: usize) {
        if let Some(mut h) = self.inner.devices.get_mut(device_id) {
            let excess = h.older.len().saturating_sub(keep.max(1) - 1);
            h.older.drain(..excess);
        }
    }

    /// Number of devices with at least one prediction.
    pub fn device_count(&self) -> usize {
        self.inner.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::ManualClock;

    fn pred(device: &str, end: i64) -> Prediction {
        Prediction {
            device_id: device.into(),
            window_end_unix_nanos: end,
            label: "a".into(),
            class_index: 0,
            probabilities: vec![1.0],
            embedding: vec![],
            present_modalities: Vec::new().into(),
            timings: Timings::default(),
            personalized: false,
            general: None,
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
    }

    #[test]
    fn the_newest_is_kept_whole_and_older_entries_compact_within_their_precision() {
        let store = PredictionStore::new(8, 8);
        let with_values = |end: i64| Prediction {
            probabilities: vec![0.123_456_7, 0.876_543_3],
            embedding: vec![0.333_333_3, -2.5],
            ..pred("d", end)
        };
        for end in [1, 2, 3] {
            store.insert(with_values(end));
        }
        let newest = store.latest("d").expect("latest");
        assert_eq!(*newest, with_values(3), "the newest comes back exactly");
        let history = store.history("d", None, 10);
        assert_eq!(history.len(), 3);
        assert!(Arc::ptr_eq(&history[2], &newest));
        for p in &history[..2] {
            assert_eq!(p.device_id, "d");
            assert_eq!(p.label, "a");
            assert!((p.probabilities[0] - 0.123_456_7).abs() <= 1.0 / 65535.0);
            assert!((p.embedding[0] - 0.333_333_3).abs() <= 0.333_333_3 / 2048.0);
        }
        assert!(store.history("d", None, 0).is_empty());
        store.trim("d", 2);
        let ends: Vec<_> = store
            .history("d", None, 10)
            .iter()
            .map(|p| p.window_end_unix_nanos)
            .collect();
        assert_eq!(ends, vec![2, 3]);
        store.trim("d", 0);
        assert_eq!(
            store.history("d", None, 10).len(),
            1,
            "trim keeps at least one"
        );
    }

    fn bounded(max_devices: usize, clock: &ManualClock) -> (PredictionStore, IntCounter) {
        let evicted = IntCounter::new("evicted", "test").expect("counter");
        let store = PredictionStore::bounded(
            StoreLimits {
                history_len: 4,
                feed_capacity: 8,
                max_devices,
            },
            Arc::new(clock.clone()),
            evicted.clone(),
        );
        (store, evicted)
    }

    #[test]
    fn retention_counts_from_the_server_time_a_prediction_was_stored() {
        const SEC: i64 = 1_000_000_000;
        let clock = ManualClock::new(1_000 * SEC);
        let (store, _) = bounded(10, &clock);
        // A device an hour behind the server, one a minute ahead, one on time.
        store.insert(pred("behind", (1_000 - 3_600) * SEC));
        store.insert(pred("ahead", (1_000 + 60) * SEC));
        clock.advance(10 * SEC);
        store.insert(pred("later", 1_010 * SEC));
        // A retention of 30 s at server time 1 030 s: everything stored at or after 1 000 s stays.
        clock.advance(20 * SEC);
        store.prune_older_than(clock.now_unix_nanos() - 30 * SEC);
        assert_eq!(
            store.device_count(),
            3,
            "a lagging device clock does not age its predictions"
        );
        // 5 s later the first two were stored 35 s ago, the third 25 s ago.
        clock.advance(5 * SEC);
        store.prune_older_than(clock.now_unix_nanos() - 30 * SEC);
        assert!(store.latest("behind").is_none() && store.latest("ahead").is_none());
        assert!(store.latest("later").is_some());
    }

    #[test]
    fn rotating_device_ids_stay_within_the_device_cap() {
        let clock = ManualClock::new(0);
        let (store, evicted) = bounded(3, &clock);
        store.insert(pred("steady", 0));
        for i in 0..100 {
            store.insert(pred(&format!("rotating-{i}"), i));
            // The steady device keeps reporting, so it is never the least recently updated.
            store.insert(pred("steady", i + 1));
            assert!(
                store.device_count() <= 3,
                "{} devices",
                store.device_count()
            );
        }
        assert_eq!(store.device_count(), 3);
        assert!(store.latest("steady").is_some());
        assert!(store.latest("rotating-99").is_some() && store.latest("rotating-98").is_some());
        assert!(store.latest("rotating-97").is_none());
        assert_eq!(evicted.get(), 98);
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
