//! The storage trait behind every read path that answers for a device (REST latest/history/devices, gRPC
//! `Latest`/`Watch`, the WebSocket dashboard feed): [`StateStore`]. `--store memory` ([`MemoryState`])
//! answers from this process alone, as the service always did; `--store redis://…`
//! ([`super::redis_store::RedisState`]) shares predictions, the device registry and the live feed between
//! replicas, so any replica answers for any device.
//!
//! Writes never go through here on the streaming path: the batcher stores each prediction in the local
//! [`PredictionStore`] (which the device's own stream is fed from), and a shared store copies them out
//! asynchronously. Reads for a device this replica holds are answered locally and never wait on a shared
//! store.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use super::personal::DeviceLabels;
use super::{Prediction, PredictionStore};
use crate::error::Error;
use crate::ingest::{DeviceInfo, Ingest};

/// State that the read paths see: this replica's, or every replica's.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// `memory` or `redis` (logs, `/readyz`).
    fn kind(&self) -> &'static str;

    /// This replica's name in the registry (`held_by`).
    fn replica_id(&self) -> &str;

    /// Newest prediction (by window end) of a device.
    fn latest<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Prediction>>, Error>>;

    /// Up to `limit` newest predictions with window end > `since`, oldest first; `None` when the device
    /// is unknown (no prediction and no registry entry).
    fn history<'a>(
        &'a self,
        device_id: &'a str,
        since_unix_nanos: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<Arc<Prediction>>>, Error>>;

    /// The registry entry of one device.
    fn device<'a>(&'a self, device_id: &'a str)
    -> BoxFuture<'a, Result<Option<DeviceInfo>, Error>>;

    /// Every device in the registry, sorted by id.
    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceInfo>, Error>>;

    /// Live feed of every prediction the store sees (every replica's, for a shared store). A lagging
    /// receiver gets `Lagged(n)` and must count the skips.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Prediction>>;

    /// The labelled spans and windows a device's personal head is fitted from (`None`: never labelled).
    fn labels<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<DeviceLabels>>, Error>>;

    /// Stores a device's labels if its stored version is still `expected` (0 = none yet), and from then
    /// on the replica that holds the device answers its predictions with the new head; `Ok(false)` when
    /// another update came first (the caller re-reads and retries).
    fn put_labels<'a>(
        &'a self,
        device_id: &'a str,
        labels: DeviceLabels,
        expected: u64,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Drops a device's labels and head (its predictions are the general model's again); whether it had
    /// any.
    fn delete_labels<'a>(&'a self, device_id: &'a str) -> BoxFuture<'a, Result<bool, Error>>;

    /// Shutdown: hand over what is still queued (bounded by the store's own timeout) and release this
    /// replica's devices in the registry.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// `--store memory`: this process's prediction store and ingest registry, nothing shared.
#[derive(Clone, Debug)]
pub struct MemoryState {
    store: PredictionStore,
    ingest: Ingest,
    replica_id: Arc<str>,
}

impl MemoryState {
    pub fn new(store: PredictionStore, ingest: Ingest, replica_id: &str) -> Self {
        Self {
            store,
            ingest,
            replica_id: Arc::from(replica_id),
        }
    }

    /// Whether this replica's ingest holds the device (window state): then it is the authority for it.
    pub fn holds(&self, device_id: &str) -> bool {
        self.ingest.device_info(device_id).is_some()
    }

    pub fn latest_local(&self, device_id: &str) -> Option<Arc<Prediction>> {
        self.store.latest(device_id)
    }

    pub fn history_local(
        &self,
        device_id: &str,
        since_unix_nanos: Option<i64>,
        limit: usize,
    ) -> Option<Vec<Arc<Prediction>>> {
        if self.store.latest(device_id).is_none() && !self.holds(device_id) {
            return None;
        }
        Some(self.store.history(device_id, since_unix_nanos, limit))
    }

    pub fn device_local(&self, device_id: &str) -> Option<DeviceInfo> {
        self.ingest
            .device_info(device_id)
            .map(|d| self.held_here(d))
    }

    /// The devices this replica holds, sorted by id.
    pub fn devices_local(&self) -> Vec<DeviceInfo> {
        self.ingest
            .devices()
            .into_iter()
            .map(|d| self.held_here(d))
            .collect()
    }

    /// This replica's own prediction feed.
    pub fn subscribe_local(&self) -> broadcast::Receiver<Arc<Prediction>> {
        self.store.subscribe()
    }

    /// The personal heads this replica applies.
    pub fn personal(&self) -> &super::PersonalHeads {
        self.store.personal()
    }

    fn held_here(&self, mut info: DeviceInfo) -> DeviceInfo {
        info.held_by = Some(self.replica_id.to_string());
        info.stale = false;
        info
    }
}

impl StateStore for MemoryState {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn replica_id(&self) -> &str {
        &self.replica_id
    }

    fn latest<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Prediction>>, Error>> {
        Box::pin(async move { Ok(self.latest_local(device_id)) })
    }

    fn history<'a>(
        &'a self,
        device_id: &'a str,
        since_unix_nanos: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<Arc<Prediction>>>, Error>> {
        Box::pin(async move { Ok(self.history_local(device_id, since_unix_nanos, limit)) })
    }

    fn device<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeviceInfo>, Error>> {
        Box::pin(async move { Ok(self.device_local(device_id)) })
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceInfo>, Error>> {
        Box::pin(async move { Ok(self.devices_local()) })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Prediction>> {
        self.subscribe_local()
    }

    fn labels<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<DeviceLabels>>, Error>> {
        Box::pin(async move { Ok(self.personal().labels(device_id)) })
    }

    fn put_labels<'a>(
        &'a self,
        device_id: &'a str,
        labels: DeviceLabels,
        expected: u64,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move { self.personal().compare_and_set(device_id, labels, expected) })
    }

    fn delete_labels<'a>(&'a self, device_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move { Ok(self.personal().remove(device_id)) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// `--replica-id`, else `HOSTNAME` (the pod name on Kubernetes), else a random id.
pub fn resolve_replica_id(configured: &str) -> String {
    let configured = configured.trim();
    if !configured.is_empty() {
        return configured.to_string();
    }
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ => format!("replica-{:08x}", rand::random::<u32>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServeArgs, StoreBackend};

    #[test]
    fn store_flag_is_memory_or_a_redis_url() {
        let mut args = ServeArgs::defaults();
        assert_eq!(args.store_backend().unwrap(), StoreBackend::Memory);
        args.store = "redis://10.0.0.5:6379/2".into();
        assert_eq!(
            args.store_backend().unwrap(),
            StoreBackend::Redis("redis://10.0.0.5:6379/2".into())
        );
        args.store = "postgres://x".into();
        let e = args.store_backend().unwrap_err().to_string();
        assert!(e.contains("--store"), "{e}");
    }

    #[test]
    fn a_configured_replica_id_wins() {
        assert_eq!(resolve_replica_id(" pod-1 "), "pod-1");
        assert!(!resolve_replica_id("").is_empty());
    }
}
