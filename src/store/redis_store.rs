//! `--store redis://…`: device state shared by every replica through Redis (keys in [`super::keys`]).
//!
//! Data path. The device's own stream never waits on Redis: the batcher stores each prediction in the
//! local [`super::PredictionStore`] and the device's stream is fed from there. A forwarder task copies
//! every local prediction into (a) this replica's shared live feed and (b) a bounded write queue; a
//! writer task drains the queue in batches, one pipeline per batch (latest, history, publish). A full
//! queue drops the write and counts it (`crossl_store_writes_dropped_total`). A heartbeat task queues the
//! registry entries of the devices this replica holds every `--store-heartbeat-ms`. A subscriber task
//! receives the other replicas' predictions from the pub/sub channel into the shared live feed.
//!
//! Personal heads (labels): the labels of a device live in Redis (`crossl:{<device>}:labels`, written with
//! a compare-and-set on their version by whichever replica took the labelling request, which publishes
//! them on `crossl:labels`). The replica holding the device applies the head from a local cache: it takes
//! the published update, and loads the labels of each device it starts to hold (and of every device it
//! holds after re-subscribing) at the next registry heartbeat.
//!
//! Reads for a device this replica holds are answered locally; any other device is read from Redis
//! within `--store-timeout-ms`, else the read fails with 503 "shared store unavailable: …"
//! (`crossl_store_errors_total{op="read"}`). The connection manager reconnects with exponential backoff;
//! the subscriber resubscribes with its own backoff (`crossl_store_errors_total{op="subscribe"}`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

use super::Prediction;
use super::keys;
use super::personal::DeviceLabels;
use super::state::{MemoryState, StateStore};
use crate::error::Error;
use crate::ingest::DeviceInfo;
use crate::metrics::Metrics;
use crate::window::Clock;

/// Settings of the shared store (from `ServeArgs`).
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: String,
    /// Predictions kept per device.
    pub history_len: usize,
    /// Every per-device key expires this long after its last write.
    pub retention: Duration,
    /// Period of the registry refresh; an entry not refreshed for [`STALE_HEARTBEATS`] periods is stale.
    pub heartbeat: Duration,
    /// Bound of every read (and of one write batch).
    pub timeout: Duration,
    /// Writes queued before further ones are dropped.
    pub write_queue: usize,
    /// Capacity of the shared live feed.
    pub feed_capacity: usize,
}

/// A registry entry not refreshed for this many heartbeats belongs to no live replica.
pub const STALE_HEARTBEATS: u32 = 3;

/// Most queued writes sent in one pipeline.
const MAX_BATCH: usize = 256;

/// What the writer sends to Redis.
#[derive(Debug)]
enum Write {
    Prediction(Arc<Prediction>),
    /// Registry entries of the devices this replica holds (or releases: `held_by` = None).
    Devices(Vec<DeviceInfo>),
    /// Answered once everything queued before it was sent (or failed).
    Flush(oneshot::Sender<()>),
}

/// A registry entry as stored in `crossl:{<device>}:device`.
#[derive(Debug, Serialize, Deserialize)]
struct RegistryEntry {
    info: DeviceInfo,
    /// Server time (unix nanos) of the replica that wrote it.
    heartbeat_unix_nanos: i64,
}

/// One pub/sub message of the label channel: a device's new labels, or `None` once deleted.
#[derive(Debug, Serialize, Deserialize)]
struct LabelsMessage {
    device_id: String,
    labels: Option<DeviceLabels>,
}

/// Writes a device's labels if the stored version is still the expected one, and publishes them.
/// KEYS[1] labels; ARGV expected version, new version, labels JSON, channel, message.
const PUT_LABELS_IF_VERSION: &str = r"
local stored = redis.call('HGET', KEYS[1], 'version')
if (stored or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'labels', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// Deletes a device's labels and publishes the deletion. KEYS[1] labels; ARGV channel, message.
const DELETE_LABELS: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

/// One pub/sub message of the live feed.
#[derive(Debug, Serialize, Deserialize)]
struct FeedMessage {
    replica: String,
    prediction: Prediction,
}

/// Writes the latest prediction only when its window ends no earlier than the stored one (workers may
/// finish a device's windows out of order). KEYS[1] latest; ARGV end, prediction JSON, TTL seconds.
const SET_LATEST_IF_NEWER: &str = r"
local stored = redis.call('HGET', KEYS[1], 'end')
if (not stored) or tonumber(stored) <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'end', ARGV[1], 'prediction', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 0
";

/// Writes a registry entry unless another replica has seen the device more recently (the device moved
/// there): the entry is ours, or absent, or older. KEYS[1] device; ARGV entry JSON, our replica id, the
/// entry's last_seen, TTL seconds.
const SET_DEVICE_UNLESS_NEWER_ELSEWHERE: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, old = pcall(cjson.decode, stored)
  if ok and type(old) == 'table' and type(old.info) == 'table' then
    local holder = old.info.held_by
    local seen = tonumber(old.info.last_seen_unix_nanos) or 0
    if holder ~= nil and holder ~= cjson.null and holder ~= ARGV[2] and seen > tonumber(ARGV[3]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1
";

/// Shared state on Redis; see the module docs.
#[derive(Debug)]
pub struct RedisState {
    local: MemoryState,
    conn: ConnectionManager,
    writes: mpsc::Sender<Write>,
    feed: broadcast::Sender<Arc<Prediction>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    settings: RedisSettings,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Stopped first at shutdown: a heartbeat after the release would claim the devices again.
    heartbeat: Mutex<Option<AbortHandle>>,
    /// Held devices whose labels were loaded from Redis; cleared when the label channel is
    /// (re)subscribed, so that updates missed meanwhile are loaded again.
    labels_loaded: Arc<Mutex<HashSet<String>>>,
}

impl RedisState {
    /// Connects lazily (a Redis that is down at start-up does not stop the replica: reads answer 503 until
    /// it is up) and starts the forwarder, writer, heartbeat and subscriber tasks. Fails only on a bad URL.
    pub fn start(
        local: MemoryState,
        settings: RedisSettings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| anyhow::anyhow!("--store {}: {e}", redact(&settings.url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(4);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| anyhow::anyhow!("--store {}: {e}", redact(&settings.url)))?;
        let (writes, writes_rx) = mpsc::channel(settings.write_queue.max(1));
        let (feed, _) = broadcast::channel(settings.feed_capacity.max(1));
        let state = Arc::new(Self {
            local,
            conn,
            writes,
            feed,
            metrics,
            clock,
            settings,
            tasks: Mutex::new(Vec::new()),
            heartbeat: Mutex::new(None),
            labels_loaded: Arc::new(Mutex::new(HashSet::new())),
        });
        let tasks = vec![
            tokio::spawn(forward_local(
                Arc::downgrade(&state),
                state.local.subscribe_local(),
            ))
            .abort_handle(),
            tokio::spawn(write_loop(
                writes_rx,
                state.conn.clone(),
                WriterContext {
                    replica: state.local.replica_id().to_string(),
                    settings: state.settings.clone(),
                    metrics: Arc::clone(&state.metrics),
                    clock: Arc::clone(&state.clock),
                },
            ))
            .abort_handle(),
            tokio::spawn(subscribe_loop(
                client,
                state.local.clone(),
                Arc::clone(&state.labels_loaded),
                state.feed.clone(),
                Arc::clone(&state.metrics),
                state.settings.timeout,
            ))
            .abort_handle(),
        ];
        *state.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        let heartbeat = tokio::spawn(heartbeat_loop(Arc::downgrade(&state))).abort_handle();
        *state.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Some(heartbeat);
        Ok(state)
    }

    /// Queues a write without waiting; a full queue drops it (counted).
    fn queue(&self, write: Write) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.writes.try_send(write) {
            self.metrics.store_writes_dropped.inc();
        }
    }

    /// Runs one read against Redis within the timeout; failures are counted and become 503.
    async fn read<T>(
        &self,
        what: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        self.op("read", what).await
    }

    /// Runs one operation (`op` is the error metric's label) against Redis within the timeout; failures
    /// are counted and become 503.
    async fn op<T>(
        &self,
        op: &'static str,
        what: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let message = match tokio::time::timeout(self.settings.timeout, what).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        self.metrics.store_errors.with_label_values(&[op]).inc();
        Err(Error::Unavailable(format!(
            "shared store unavailable: {message}"
        )))
    }

    fn stale_after_nanos(&self) -> i64 {
        (self.settings.heartbeat * STALE_HEARTBEATS).as_nanos() as i64
    }

    /// A stored registry entry as the read paths show it: an entry not refreshed for
    /// [`STALE_HEARTBEATS`] heartbeats, or released, is held by nobody and stale.
    fn view(&self, entry: RegistryEntry) -> DeviceInfo {
        let mut info = entry.info;
        let now = self.clock.now_unix_nanos();
        if info.held_by.is_none() || now - entry.heartbeat_unix_nanos > self.stale_after_nanos() {
            info.held_by = None;
            info.stale = true;
        } else {
            info.stale = false;
        }
        info
    }

    /// Keeps the local head cache to the devices this replica holds, and loads the labels of held devices
    /// not loaded yet (new here, or all of them after the label channel was re-subscribed). A failed
    /// load is counted and retried at the next heartbeat.
    async fn sync_heads(&self) {
        let held: HashSet<String> = self
            .local
            .devices_local()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        self.local.personal().retain(|id| held.contains(id));
        let todo: Vec<String> = {
            let mut loaded = self.labels_loaded.lock().unwrap_or_else(|e| e.into_inner());
            loaded.retain(|id| held.contains(id));
            held.iter()
                .filter(|id| !loaded.contains(*id))
                .cloned()
                .collect()
        };
        for ids in todo.chunks(MAX_BATCH) {
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.hget(keys::labels(id), "labels");
            }
            let mut conn = self.conn.clone();
            let Ok(raws) = self
                .read::<Vec<Option<String>>>(pipe.query_async(&mut conn))
                .await
            else {
                return;
            };
            let mut loaded = self.labels_loaded.lock().unwrap_or_else(|e| e.into_inner());
            for (id, raw) in ids.iter().zip(raws) {
                match raw.and_then(|r| serde_json::from_str::<DeviceLabels>(&r).ok()) {
                    Some(labels) => self.local.personal().replace(id, labels),
                    None => {
                        self.local.personal().remove(id);
                    }
                }
                loaded.insert(id.clone());
            }
        }
    }

    async fn remote_device(&self, device_id: &str) -> Result<Option<DeviceInfo>, Error> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = self.read(conn.get(keys::device(device_id))).await?;
        Ok(raw
            .and_then(|r| serde_json::from_str::<RegistryEntry>(&r).ok())
            .map(|e| self.view(e)))
    }
}

impl Drop for RedisState {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        if let Some(heartbeat) = self
            .heartbeat
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            heartbeat.abort();
        }
    }
}

impl StateStore for RedisState {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn replica_id(&self) -> &str {
        self.local.replica_id()
    }

    fn latest<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<Prediction>>, Error>> {
        Box::pin(async move {
            if self.local.holds(device_id) {
                return Ok(self.local.latest_local(device_id));
            }
            let mut conn = self.conn.clone();
            let raw: Option<String> = self
                .read(conn.hget(keys::latest(device_id), "prediction"))
                .await?;
            Ok(raw
                .and_then(|r| serde_json::from_str::<Prediction>(&r).ok())
                .map(Arc::new))
        })
    }

    fn history<'a>(
        &'a self,
        device_id: &'a str,
        since_unix_nanos: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Option<Vec<Arc<Prediction>>>, Error>> {
        Box::pin(async move {
            if self.local.holds(device_id) {
                return Ok(self.local.history_local(device_id, since_unix_nanos, limit));
            }
            let since = since_unix_nanos.unwrap_or(i64::MIN);
            // Scores are f64 (window ends to ~256 ns): fetch from just below `since`, filter exactly here.
            let min = if since == i64::MIN {
                "-inf".to_string()
            } else {
                format!("{}", (since as f64) - 1024.0)
            };
            let mut conn = self.conn.clone();
            let (newest_first, known): (Vec<String>, bool) = self
                .read(async {
                    redis::pipe()
                        .cmd("ZREVRANGEBYSCORE")
                        .arg(keys::history(device_id))
                        .arg("+inf")
                        .arg(&min)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit)
                        .exists(keys::device(device_id))
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let mut predictions: Vec<Arc<Prediction>> = newest_first
                .iter()
                .rev()
                .filter_map(|r| serde_json::from_str::<Prediction>(r).ok())
                .filter(|p| p.window_end_unix_nanos > since)
                .map(Arc::new)
                .collect();
            predictions.sort_by_key(|p| p.window_end_unix_nanos);
            if predictions.is_empty() && !known {
                // Known to neither this replica's store nor the shared one (whose history may simply be
                // empty for `since`).
                let any: bool = self.read(conn.exists(keys::history(device_id))).await?;
                if !any {
                    return Ok(self.local.history_local(device_id, since_unix_nanos, limit));
                }
            }
            Ok(Some(predictions))
        })
    }

    fn device<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeviceInfo>, Error>> {
        Box::pin(async move {
            if let Some(local) = self.local.device_local(device_id) {
                return Ok(Some(local));
            }
            self.remote_device(device_id).await
        })
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceInfo>, Error>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let oldest_ms = (self.clock.now_unix_nanos()
                - self.settings.retention.as_nanos() as i64)
                / 1_000_000;
            let ids: Vec<String> = self
                .read(conn.zrangebyscore(keys::DEVICE_INDEX, oldest_ms, "+inf"))
                .await?;
            let local = self.local.devices_local();
            let remote_ids: Vec<&String> = ids
                .iter()
                .filter(|id| {
                    local
                        .binary_search_by(|d| d.device_id.as_str().cmp(id))
                        .is_err()
                })
                .collect();
            let mut out = local;
            if !remote_ids.is_empty() {
                // One GET per device in a pipeline (not MGET): the keys live in different cluster slots.
                let mut pipe = redis::pipe();
                for id in &remote_ids {
                    pipe.get(keys::device(id));
                }
                let raws: Vec<Option<String>> = self.read(pipe.query_async(&mut conn)).await?;
                out.extend(
                    raws.into_iter()
                        .flatten()
                        .filter_map(|r| serde_json::from_str::<RegistryEntry>(&r).ok())
                        .map(|e| self.view(e)),
                );
            }
            out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
            Ok(out)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Prediction>> {
        self.feed.subscribe()
    }

    fn labels<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<DeviceLabels>>, Error>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let raw: Option<String> = self
                .read(conn.hget(keys::labels(device_id), "labels"))
                .await?;
            raw.map(|r| {
                serde_json::from_str::<DeviceLabels>(&r)
                    .map(Arc::new)
                    .map_err(|e| Error::Internal(format!("stored labels do not decode: {e}")))
            })
            .transpose()
        })
    }

    fn put_labels<'a>(
        &'a self,
        device_id: &'a str,
        labels: DeviceLabels,
        expected: u64,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let json = serde_json::to_string(&labels)
                .map_err(|e| Error::Internal(format!("labels do not encode: {e}")))?;
            let message = serde_json::to_string(&LabelsMessage {
                device_id: device_id.to_string(),
                labels: Some(labels.clone()),
            })
            .map_err(|e| Error::Internal(format!("labels do not encode: {e}")))?;
            let mut conn = self.conn.clone();
            let stored: i64 = self
                .op(
                    "write",
                    redis::cmd("EVAL")
                        .arg(PUT_LABELS_IF_VERSION)
                        .arg(1)
                        .arg(keys::labels(device_id))
                        .arg(expected.to_string())
                        .arg(labels.version.to_string())
                        .arg(json)
                        .arg(keys::LABELS_CHANNEL)
                        .arg(message)
                        .query_async(&mut conn),
                )
                .await?;
            if stored == 1 && self.local.holds(device_id) {
                // Applied here at once; the published copy reaches the other replicas.
                self.local.personal().install(device_id, labels);
            }
            Ok(stored == 1)
        })
    }

    fn delete_labels<'a>(&'a self, device_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let message = serde_json::to_string(&LabelsMessage {
                device_id: device_id.to_string(),
                labels: None,
            })
            .map_err(|e| Error::Internal(format!("labels do not encode: {e}")))?;
            let mut conn = self.conn.clone();
            let deleted: i64 = self
                .op(
                    "write",
                    redis::cmd("EVAL")
                        .arg(DELETE_LABELS)
                        .arg(1)
                        .arg(keys::labels(device_id))
                        .arg(keys::LABELS_CHANNEL)
                        .arg(message)
                        .query_async(&mut conn),
                )
                .await?;
            let here = self.local.personal().remove(device_id);
            Ok(deleted > 0 || here)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // No more heartbeats: they would re-claim the devices released below.
            if let Some(heartbeat) = self
                .heartbeat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                heartbeat.abort();
            }
            let released = self
                .local
                .devices_local()
                .into_iter()
                .map(|mut d| {
                    d.held_by = None;
                    d
                })
                .collect::<Vec<_>>();
            if !released.is_empty() {
                self.queue(Write::Devices(released));
            }
            let (tx, rx) = oneshot::channel();
            self.queue(Write::Flush(tx));
            let _ = tokio::time::timeout(self.settings.timeout * 2, rx).await;
        })
    }
}

/// Copies this replica's predictions into the shared feed and the write queue.
async fn forward_local(
    state: std::sync::Weak<RedisState>,
    mut local: broadcast::Receiver<Arc<Prediction>>,
) {
    loop {
        let received = local.recv().await;
        let Some(state) = state.upgrade() else { return };
        match received {
            Ok(p) => {
                let _ = state.feed.send(Arc::clone(&p));
                state.queue(Write::Prediction(p));
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                state
                    .metrics
                    .feed_lagged
                    .with_label_values(&["store"])
                    .inc_by(n);
                state.metrics.store_writes_dropped.inc_by(n);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Queues the registry entries of the devices this replica holds, every heartbeat.
async fn heartbeat_loop(state: std::sync::Weak<RedisState>) {
    let period = match state.upgrade() {
        Some(s) => s.settings.heartbeat.max(Duration::from_millis(10)),
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else { return };
        state.queue(Write::Devices(state.local.devices_local()));
        state.sync_heads().await;
    }
}

struct WriterContext {
    replica: String,
    settings: RedisSettings,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

/// Drains the write queue in batches, one pipeline per batch. A failed batch is counted and dropped: the
/// next prediction of a device replaces its latest, the next heartbeat its registry entry.
async fn write_loop(mut rx: mpsc::Receiver<Write>, mut conn: ConnectionManager, cx: WriterContext) {
    let ttl = cx.settings.retention.as_secs().max(1);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut commands = 0usize;
        let mut flushes = Vec::new();
        let now = cx.clock.now_unix_nanos();
        for write in batch.drain(..) {
            match write {
                Write::Prediction(p) => {
                    let Ok(json) = serde_json::to_string(&*p) else {
                        continue;
                    };
                    let message = serde_json::to_string(&FeedMessage {
                        replica: cx.replica.clone(),
                        prediction: (*p).clone(),
                    })
                    .unwrap_or_default();
                    let id = &p.device_id;
                    let end = p.window_end_unix_nanos;
                    pipe.cmd("EVAL")
                        .arg(SET_LATEST_IF_NEWER)
                        .arg(1)
                        .arg(keys::latest(id))
                        .arg(end)
                        .arg(&json)
                        .arg(ttl)
                        .ignore();
                    let history = keys::history(id);
                    pipe.zadd(&history, &json, end as f64).ignore();
                    // Keep the newest `history_len` (ranks 0..=-(len+1) are the oldest beyond it).
                    pipe.zremrangebyrank(&history, 0, -(cx.settings.history_len as isize) - 1)
                        .ignore();
                    pipe.expire(&history, ttl as i64).ignore();
                    pipe.publish(keys::FEED_CHANNEL, message).ignore();
                    commands += 5;
                }
                Write::Devices(devices) => {
                    for info in devices {
                        let entry = RegistryEntry {
                            heartbeat_unix_nanos: now,
                            info,
                        };
                        let Ok(json) = serde_json::to_string(&entry) else {
                            continue;
                        };
                        pipe.cmd("EVAL")
                            .arg(SET_DEVICE_UNLESS_NEWER_ELSEWHERE)
                            .arg(1)
                            .arg(keys::device(&entry.info.device_id))
                            .arg(json)
                            .arg(&cx.replica)
                            .arg(entry.info.last_seen_unix_nanos)
                            .arg(ttl)
                            .ignore();
                        pipe.zadd(keys::DEVICE_INDEX, &entry.info.device_id, now / 1_000_000)
                            .ignore();
                        commands += 2;
                    }
                    let oldest_ms = (now - cx.settings.retention.as_nanos() as i64) / 1_000_000;
                    pipe.zrembyscore(keys::DEVICE_INDEX, "-inf", format!("({oldest_ms}"))
                        .ignore();
                    commands += 1;
                }
                Write::Flush(done) => flushes.push(done),
            }
        }
        if commands > 0 {
            let sent = tokio::time::timeout(cx.settings.timeout, pipe.exec_async(&mut conn)).await;
            let error = match sent {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {:?}", cx.settings.timeout)),
            };
            if let Some(error) = error {
                cx.metrics.store_errors.with_label_values(&["write"]).inc();
                tracing::warn!(%error, commands, "shared store write failed; the batch is dropped");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Receives the other replicas' predictions into the shared feed, and label updates into the head cache
/// (for the devices this replica holds); resubscribes with backoff when the connection is lost
/// (predictions published meanwhile are not replayed; labels are reloaded at the next heartbeat).
async fn subscribe_loop(
    client: redis::Client,
    local: MemoryState,
    labels_loaded: Arc<Mutex<HashSet<String>>>,
    feed: broadcast::Sender<Arc<Prediction>>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(2);
    let mut backoff = MIN_BACKOFF;
    loop {
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub
                .subscribe(&[keys::FEED_CHANNEL, keys::LABELS_CHANNEL])
                .await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(pubsub)) => {
                tracing::info!("subscribed to the shared live feed");
                backoff = MIN_BACKOFF;
                // Label updates may have been missed while unsubscribed: reload at the next heartbeat.
                labels_loaded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    if message.get_channel_name() == keys::LABELS_CHANNEL {
                        match serde_json::from_str::<LabelsMessage>(&payload) {
                            Ok(m) => match m.labels {
                                Some(labels) if local.holds(&m.device_id) => {
                                    local.personal().install(&m.device_id, labels);
                                }
                                _ => {
                                    local.personal().remove(&m.device_id);
                                }
                            },
                            Err(e) => {
                                tracing::debug!(error = %e, "undecodable label message skipped")
                            }
                        }
                        continue;
                    }
                    match serde_json::from_str::<FeedMessage>(&payload) {
                        // This replica's own predictions are already in the feed (from the local path).
                        Ok(m) if m.replica == local.replica_id() => {}
                        Ok(m) => {
                            let _ = feed.send(Arc::new(m.prediction));
                        }
                        Err(e) => tracing::debug!(error = %e, "undecodable feed message skipped"),
                    }
                }
                tracing::warn!("shared live feed connection lost; resubscribing");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "shared live feed: cannot subscribe"),
            Err(_) => tracing::debug!("shared live feed: subscribe timed out"),
        }
        metrics.store_errors.with_label_values(&["subscribe"]).inc();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
