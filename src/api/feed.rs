//! Plumbing shared by the live prediction feeds of the gRPC and WebSocket adapters: which devices a
//! subscriber wants, counting what a slow subscriber skipped, and noticing shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, watch};

use super::auth::Grant;
use crate::app::{Core, Phase};
use crate::metrics::Metrics;
use crate::store::{Prediction, PredictionStore};

/// Devices a subscriber wants (empty = every device), within what its API key may read.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    devices: HashSet<String>,
    grant: Grant,
}

impl DeviceFilter {
    pub fn new(devices: impl IntoIterator<Item = String>) -> Self {
        Self {
            devices: devices
                .into_iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
            grant: Grant::open(),
        }
    }

    /// The same filter, limited to the devices `grant` may read.
    pub fn within(self, grant: Grant) -> Self {
        Self { grant, ..self }
    }

    /// The devices named (empty = every device).
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(String::as_str)
    }

    pub fn matches(&self, device_id: &str) -> bool {
        (self.devices.is_empty() || self.devices.contains(device_id))
            && self.grant.allows(device_id)
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

/// Resolves once the shutdown drain has delivered its last prediction to the feeds: the service stopped
/// taking data, flushed every open window, ran the queue and the workers, and the dispatcher has routed
/// every resulting prediction into the per-device subscriptions (see [`DeviceFeeds::finish`]). Long-lived
/// streams select on it (after their predictions, `biased`), send what is still buffered
/// ([`DeviceSubscription::try_recv`], [`drain_buffered`]) and then end with their closing status, so the
/// flushed windows' predictions reach the clients before the listeners close.
pub async fn delivered(core: Core) {
    core.feeds.finished().await;
}

/// Whether the service has begun shutting down (or failed to start), now.
pub fn has_stopped_serving(core: &Core) -> bool {
    is_stopping(core.health.borrow().phase)
}

fn is_stopping(phase: Phase) -> bool {
    matches!(phase, Phase::ShuttingDown | Phase::Failed)
}

/// Every prediction already in a broadcast subscriber's buffer, without waiting (skips are counted under
/// `transport`). Used once [`delivered`] resolved, when nothing new can arrive.
pub fn drain_buffered(
    core: &Core,
    feed: &mut broadcast::Receiver<Arc<Prediction>>,
    transport: &'static str,
) -> Vec<Arc<Prediction>> {
    let mut out = Vec::new();
    loop {
        match feed.try_recv() {
            Ok(p) => out.push(p),
            Err(broadcast::error::TryRecvError::Lagged(n)) => core
                .metrics
                .feed_lagged
                .with_label_values(&[transport])
                .inc_by(n),
            Err(_) => return out,
        }
    }
}

/// Counts one open long-lived stream in `crossl_open_streams{transport,kind}` while it lives.
#[derive(Debug)]
pub struct OpenStream {
    gauge: prometheus::IntGauge,
}

impl OpenStream {
    pub fn new(metrics: &Metrics, transport: &'static str, kind: &'static str) -> Self {
        let gauge = metrics.open_streams.with_label_values(&[transport, kind]);
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Predictions queued per device subscription before further ones are skipped (and counted).
const SUBSCRIPTION_BUFFER: usize = 256;

type Subscribers = Vec<(u64, &'static str, mpsc::Sender<Arc<Prediction>>)>;

/// Routes every prediction of the live feed to the subscriptions of its device, so the cost per
/// prediction does not grow with the number of open device streams (each of which only wants its own
/// devices). One dispatcher task reads the store's broadcast feed; device streams and sockets subscribe
/// here instead.
#[derive(Clone, Debug)]
pub struct DeviceFeeds {
    inner: Arc<FeedsInner>,
}

#[derive(Debug)]
struct FeedsInner {
    by_device: DashMap<String, Subscribers>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    /// Set by [`DeviceFeeds::finish`]: route what the store's feed still holds, then stop.
    finish: watch::Sender<bool>,
    /// True once the dispatcher has routed its last prediction (after `finish`).
    finished: watch::Sender<bool>,
}

impl DeviceFeeds {
    /// Starts the dispatcher (needs a tokio runtime); it ends when the store's feed closes.
    pub fn start(store: &PredictionStore, metrics: Arc<Metrics>) -> Self {
        let (finish_tx, mut finish_rx) = watch::channel(false);
        let feeds = Self {
            inner: Arc::new(FeedsInner {
                by_device: DashMap::new(),
                next_id: AtomicU64::new(0),
                metrics,
                finish: finish_tx,
                finished: watch::channel(false).0,
            }),
        };
        let mut feed = store.subscribe();
        let inner = Arc::downgrade(&feeds.inner);
        tokio::spawn(async move {
            // A dropped `DeviceFeeds` (sender gone) ends this task too.
            let finish = async move {
                if finish_rx.wait_for(|f| *f).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::pin!(finish);
            loop {
                let received = tokio::select! {
                    biased;
                    received = feed.recv() => received,
                    () = &mut finish => {
                        // The pipeline has drained: everything it produced is already in `feed`.
                        if let Some(inner) = inner.upgrade() {
                            loop {
                                match feed.try_recv() {
                                    Ok(p) => inner.dispatch(&p),
                                    Err(broadcast::error::TryRecvError::Lagged(n)) => inner
                                        .metrics
                                        .feed_lagged
                                        .with_label_values(&["dispatch"])
                                        .inc_by(n),
                                    Err(_) => break,
                                }
                            }
                            inner.finished.send_replace(true);
                        }
                        return;
                    }
                };
                let Some(inner) = inner.upgrade() else { return };
                match received {
                    Ok(p) => inner.dispatch(&p),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Only if this one task falls behind the whole service's prediction rate.
                        inner
                            .metrics
                            .feed_lagged
                            .with_label_values(&["dispatch"])
                            .inc_by(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        feeds
    }

    /// Shutdown drain: the pipeline has produced its last prediction, so the dispatcher routes what the
    /// store's feed still holds into the subscriptions and then reports [`Self::finished`].
    pub fn finish(&self) {
        self.inner.finish.send_replace(true);
    }

    /// Resolves once the dispatcher has routed its last prediction after [`Self::finish`] (or is gone).
    pub async fn finished(&self) {
        let mut rx = self.inner.finished.subscribe();
        let _ = rx.wait_for(|f| *f).await;
    }

    /// A subscription with no devices yet; `transport` labels its skips.
    pub fn subscribe(&self, transport: &'static str) -> DeviceSubscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let inner = SubscribedInner {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            transport,
            feeds: Arc::clone(&self.inner),
            tx,
            devices: Mutex::new(HashSet::new()),
        };
        DeviceSubscription {
            devices: SubscribedDevices {
                inner: Arc::new(inner),
            },
            rx,
        }
    }
}

impl FeedsInner {
    fn dispatch(&self, p: &Arc<Prediction>) {
        let Some(subscribers) = self.by_device.get(&p.device_id) else {
            return;
        };
        for (_, transport, tx) in subscribers.iter() {
            // Never wait for a subscriber: one that is this far behind loses the newest predictions.
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Arc::clone(p)) {
                self.metrics
                    .feed_lagged
                    .with_label_values(&[transport])
                    .inc();
            }
        }
    }
}

/// The predictions of the devices added to it (through [`SubscribedDevices`], which other tasks may
/// hold too); unsubscribes once it and every `SubscribedDevices` clone are dropped.
#[derive(Debug)]
pub struct DeviceSubscription {
    pub devices: SubscribedDevices,
    rx: mpsc::Receiver<Arc<Prediction>>,
}

impl DeviceSubscription {
    /// The next prediction for one of this subscription's devices.
    pub async fn recv(&mut self) -> Option<Arc<Prediction>> {
        self.rx.recv().await
    }

    /// The next already-queued prediction, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Prediction>> {
        self.rx.try_recv().ok()
    }
}

/// Adds and removes the devices of a subscription; cloning is cheap.
#[derive(Clone, Debug)]
pub struct SubscribedDevices {
    inner: Arc<SubscribedInner>,
}

#[derive(Debug)]
struct SubscribedInner {
    id: u64,
    transport: &'static str,
    feeds: Arc<FeedsInner>,
    tx: mpsc::Sender<Arc<Prediction>>,
    devices: Mutex<HashSet<String>>,
}

impl SubscribedDevices {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set stays consistent even if a holder panicked: every change is a single insert/remove.
        self.inner
            .devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts receiving `device_id`'s predictions; false when it was already added.
    pub fn add(&self, device_id: &str) -> bool {
        if !self.lock().insert(device_id.to_string()) {
            return false;
        }
        let i = &self.inner;
        i.feeds
            .by_device
            .entry(device_id.to_string())
            .or_default()
            .push((i.id, i.transport, i.tx.clone()));
        true
    }

    /// Stops receiving `device_id`'s predictions.
    pub fn remove(&self, device_id: &str) {
        if self.lock().remove(device_id) {
            self.inner.unsubscribe(device_id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SubscribedInner {
    fn unsubscribe(&self, device_id: &str) {
        self.feeds.by_device.remove_if_mut(device_id, |_, subs| {
            subs.retain(|(id, _, _)| *id != self.id);
            subs.is_empty()
        });
    }
}

impl Drop for SubscribedInner {
    fn drop(&mut self) {
        let devices = std::mem::take(
            self.devices
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for device in devices {
            self.unsubscribe(&device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Timings;

    fn prediction(device: &str, end: i64) -> Prediction {
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

    #[tokio::test]
    async fn subscriptions_get_only_their_devices_and_unsubscribe_on_drop() {
        let store = PredictionStore::new(4, 64);
        let metrics = Arc::new(Metrics::new(1, 4));
        let feeds = DeviceFeeds::start(&store, Arc::clone(&metrics));
        let mut a = feeds.subscribe("grpc");
        let mut ab = feeds.subscribe("websocket");
        assert!(a.devices.add("a"));
        assert!(!a.devices.add("a"));
        let adder = ab.devices.clone();
        adder.add("a");
        adder.add("b");
        drop(adder);
        store.insert(prediction("b", 1));
        store.insert(prediction("c", 2));
        store.insert(prediction("a", 3));
        assert_eq!(a.recv().await.unwrap().window_end_unix_nanos, 3);
        assert_eq!(ab.recv().await.unwrap().window_end_unix_nanos, 1);
        assert_eq!(ab.recv().await.unwrap().window_end_unix_nanos, 3);
        ab.devices.remove("b");
        assert_eq!(ab.devices.len(), 1);
        drop(a);
        assert_eq!(feeds.inner.by_device.len(), 1);
        drop(ab);
        assert!(feeds.inner.by_device.is_empty());
    }

    #[tokio::test]
    async fn a_full_subscription_skips_and_counts_without_blocking() {
        let store = PredictionStore::new(4, 4096);
        let metrics = Arc::new(Metrics::new(1, 4));
        let feeds = DeviceFeeds::start(&store, Arc::clone(&metrics));
        let mut slow = feeds.subscribe("grpc");
        slow.devices.add("d");
        let mut fast = feeds.subscribe("grpc");
        fast.devices.add("e");
        for i in 0..(SUBSCRIPTION_BUFFER as i64 + 10) {
            store.insert(prediction("d", i));
        }
        store.insert(prediction("e", 7));
        // The other subscriber is served although `slow` has not read anything.
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), fast.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.window_end_unix_nanos, 7);
        assert_eq!(metrics.feed_lagged.with_label_values(&["grpc"]).get(), 10);
        assert_eq!(slow.recv().await.unwrap().window_end_unix_nanos, 0);
    }

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
