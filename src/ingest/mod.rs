//! Protocol-neutral ingest core: validates sensor chunks, enforces limits and routes accepted samples into
//! per-device window assembly. gRPC, WebSocket and REST adapters all call [`Ingest`]; nothing here knows a
//! transport beyond its name for metrics.

mod devices;
pub mod owners;
mod rate;
#[cfg(test)]
mod tests;
pub mod validate;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use serde::Serialize;

pub use devices::{DeviceInfo, ModalityStatus};

use crate::batch::{Batcher, Job, Reply, StreamTarget};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::Manifest;
use crate::store::PredictionStore;
use crate::window::{Clock, ClosedWindow, DeviceWindows, WindowPolicy};

/// Which adapter a chunk or request came through (a metric label, nothing more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    WebSocket,
    Rest,
}

impl Transport {
    /// Metric label: "grpc" | "websocket" | "rest".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::WebSocket => "websocket",
            Self::Rest => "rest",
        }
    }
}

/// A run of consecutive samples of one modality from one device.
#[derive(Clone, Debug, PartialEq)]
pub struct SensorChunk {
    pub device_id: String,
    pub modality: String,
    /// Time of the first sample, unix nanoseconds; sample i is at start + i·1e9/rate.
    pub start_unix_nanos: i64,
    /// Row-major samples × channels.
    pub samples: Vec<f32>,
}

/// What happened to an accepted chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkReceipt {
    /// Samples (rows) taken into the window buffer (duplicates and late samples are not).
    pub samples_accepted: usize,
    /// Windows of this device that closed because of this chunk and went to the batcher.
    pub windows_closed: usize,
}

/// Limits of the ingest core (from `ServeArgs`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IngestLimits {
    pub max_devices: usize,
    pub max_chunk_samples: usize,
    /// Refuse a device sending more than this multiple of a modality's rate (sustained).
    pub rate_limit_factor: f64,
    /// Seconds of over-rate sending tolerated before refusing.
    pub rate_burst_seconds: f64,
    /// Chunk starts further than this from the server clock are refused.
    pub max_clock_skew_nanos: i64,
    /// Devices silent for this long are evicted (their window state; predictions stay in the store).
    pub device_idle_timeout_nanos: i64,
    /// Devices registered by a hello (or an open socket) that have sent no data are evicted after this.
    pub hello_timeout_nanos: i64,
    /// Stored predictions whose window ended longer ago than this are pruned (by device).
    pub prediction_retention_nanos: i64,
    /// Predictions kept of a device evicted as idle (its newest).
    pub idle_history_len: usize,
}

/// State of one device: its windows and rate buckets, behind the device's own lock.
#[derive(Debug)]
struct DeviceState {
    windows: DeviceWindows,
    rates: Vec<rate::RateBucket>,
    /// Sent a chunk: holds one of `max_devices`. Until then the device is only registered (hello) and
    /// sits in the separate, short-lived set of silent devices.
    has_data: bool,
}

impl DeviceState {
    /// How long this device may stay silent before eviction.
    fn idle_timeout(&self, limits: &IngestLimits) -> i64 {
        if self.has_data {
            limits.device_idle_timeout_nanos
        } else {
            limits.hello_timeout_nanos
        }
    }
}

#[derive(Debug)]
struct IngestInner {
    manifest: Arc<Manifest>,
    policy: WindowPolicy,
    limits: IngestLimits,
    devices: DashMap<String, Arc<Mutex<DeviceState>>>,
    /// Devices in `devices` that have not sent data yet (see `DeviceState::has_data`).
    silent_devices: AtomicUsize,
    batcher: Batcher,
    store: PredictionStore,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    closing: AtomicBool,
}

/// Handle to the ingest core; cloning is cheap.
#[derive(Clone, Debug)]
pub struct Ingest {
    inner: Arc<IngestInner>,
}

impl Ingest {
    pub fn new(
        manifest: Arc<Manifest>,
        policy: WindowPolicy,
        limits: IngestLimits,
        batcher: Batcher,
        store: PredictionStore,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(IngestInner {
                manifest,
                policy,
                limits,
                devices: DashMap::new(),
                silent_devices: AtomicUsize::new(0),
                batcher,
                store,
                metrics,
                clock,
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// Validate (unknown modality, empty/bad device id, NaN/Inf, channel multiple, max chunk samples,
    /// max devices, per-device sample-rate sanity: > 10× the modality rate sustained ⇒ rate_limited) and
    /// accept a chunk. Every rejection is counted in metrics by transport and reason. Windows that close are
    /// handed to the batcher; their predictions appear in the PredictionStore and its broadcast feed.
    pub fn push(&self, transport: Transport, chunk: SensorChunk) -> Result<ChunkReceipt, Error> {
        let result = self.push_inner(transport, &chunk);
        let m = &self.inner.metrics;
        match &result {
            Ok(_) => m
                .chunks_received
                .with_label_values(&[transport.as_str()])
                .inc(),
            Err(e) => {
                m.chunks_rejected
                    .with_label_values(&[transport.as_str(), e.reason()])
                    .inc();
                tracing::debug!(device_id = %chunk.device_id, modality = %chunk.modality, error = %e, "chunk refused");
            }
        }
        result
    }

    fn push_inner(&self, transport: Transport, chunk: &SensorChunk) -> Result<ChunkReceipt, Error> {
        let inner = &*self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "shutting down: no new data is accepted".into(),
            ));
        }
        validate::device_id(&chunk.device_id)?;
        let m = inner.manifest.require_modality(&chunk.modality)?;
        let spec = &inner.manifest.modalities[m];
        let rows = validate::samples(spec, &chunk.samples, inner.limits.max_chunk_samples)?;
        let now = inner.clock.now_unix_nanos();
        validate::timestamp(
            chunk.start_unix_nanos,
            now,
            inner.limits.max_clock_skew_nanos,
        )?;
        let device = self.device(&chunk.device_id, now)?;
        let mut closed = Vec::new();
        let outcome = {
            let mut state = device
                .lock()
                .map_err(|_| Error::Internal("device state lock poisoned".into()))?;
            if !state.rates[m].take(rows, now) {
                return Err(Error::ResourceExhausted {
                    reason: "rate_limited",
                    message: format!(
                        "device {:?} sends {:?} faster than {}× its {} Hz rate",
                        chunk.device_id,
                        spec.name,
                        inner.limits.rate_limit_factor,
                        spec.sample_rate_hz
                    ),
                });
            }
            let outcome = state
                .windows
                .push(m, chunk.start_unix_nanos, &chunk.samples, now);
            if outcome.late_chunk {
                return Err(late_chunk_error(&state.windows, spec, chunk));
            }
            state.windows.close_ready(now, &mut closed);
            outcome
        };
        let met = &inner.metrics;
        let s = outcome.samples;
        met.samples_received
            .with_label_values(&[transport.as_str(), spec.name.as_str()])
            .inc_by(s.accepted as u64);
        for (reason, n) in [
            ("late", s.late),
            ("duplicate", s.duplicate),
            ("buffer_full", s.overflow),
        ] {
            if n > 0 {
                met.samples_dropped
                    .with_label_values(&[reason])
                    .inc_by(n as u64);
            }
        }
        if let Some(offset) = outcome.clock_offset_nanos {
            met.device_clock_offset_seconds.observe(offset as f64 / 1e9);
        }
        for (happened, event) in [
            (s.out_of_order > 0, "out_of_order"),
            (outcome.timeline_restart, "timeline_restart"),
            (outcome.forward_jump, "forward_jump"),
            (outcome.rate_mismatch, "rate_mismatch"),
        ] {
            if happened {
                met.window_events.with_label_values(&[event]).inc();
            }
        }
        if outcome.timeline_restart {
            tracing::info!(device_id = %chunk.device_id, modality = %spec.name, "device timeline restarted after a hello");
        }
        let windows_closed = self.submit(&chunk.device_id, closed, 0);
        Ok(ChunkReceipt {
            samples_accepted: s.accepted,
            windows_closed,
        })
    }

    /// Optional declaration of the modalities a device will send (validates names, registers the device).
    pub fn hello(
        &self,
        transport: Transport,
        device_id: &str,
        modalities: &[String],
    ) -> Result<(), Error> {
        let result = self.hello_inner(device_id, modalities);
        if let Err(e) = &result {
            self.inner
                .metrics
                .chunks_rejected
                .with_label_values(&[transport.as_str(), e.reason()])
                .inc();
        }
        result
    }

    fn hello_inner(&self, device_id: &str, modalities: &[String]) -> Result<(), Error> {
        let inner = &*self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "shutting down: no new data is accepted".into(),
            ));
        }
        validate::device_id(device_id)?;
        let indices = modalities
            .iter()
            .map(|name| inner.manifest.require_modality(name))
            .collect::<Result<Vec<_>, _>>()?;
        let now = inner.clock.now_unix_nanos();
        let Some(device) = self.hello_device(device_id, now)? else {
            return Ok(());
        };
        let mut state = device
            .lock()
            .map_err(|_| Error::Internal("device state lock poisoned".into()))?;
        state.windows.declare(&indices, now);
        Ok(())
    }

    /// Devices holding one of `max_devices` (they have sent data).
    fn data_devices(&self) -> usize {
        let inner = &*self.inner;
        inner
            .devices
            .len()
            .saturating_sub(inner.silent_devices.load(Ordering::Acquire))
    }

    fn max_devices_error(&self) -> Error {
        Error::ResourceExhausted {
            reason: "max_devices",
            message: format!(
                "the server tracks its maximum of {} devices",
                self.inner.limits.max_devices
            ),
        }
    }

    /// The state of a device sending data, created on first contact; a device counts against
    /// `max_devices` from its first chunk on (refused beyond it).
    fn device(&self, id: &str, now: i64) -> Result<Arc<Mutex<DeviceState>>, Error> {
        let inner = &*self.inner;
        if let Some(d) = inner.devices.get(id).map(|d| Arc::clone(&d)) {
            let mut state = d
                .lock()
                .map_err(|_| Error::Internal("device state lock poisoned".into()))?;
            if !state.has_data {
                // A registered device's first data: it takes a slot now.
                if self.data_devices() >= inner.limits.max_devices {
                    return Err(self.max_devices_error());
                }
                state.has_data = true;
                let _ =
                    inner
                        .silent_devices
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
            drop(state);
            return Ok(d);
        }
        if self.data_devices() >= inner.limits.max_devices {
            return Err(self.max_devices_error());
        }
        Ok(self.insert_device(id, now, true))
    }

    /// The state of a device saying hello (or opening a socket) without data. It does not take one of
    /// `max_devices`: it joins a separate set of silent devices (bounded by `max_devices` too, evicted after
    /// `hello_timeout`). When that set is full the hello is accepted without registering (`None`, counted):
    /// the device registers with its first chunk, so a flood of empty hellos cannot lock a real device out.
    fn hello_device(&self, id: &str, now: i64) -> Result<Option<Arc<Mutex<DeviceState>>>, Error> {
        let inner = &*self.inner;
        if let Some(d) = inner.devices.get(id) {
            return Ok(Some(Arc::clone(&d)));
        }
        // It could not send data anyway.
        if self.data_devices() >= inner.limits.max_devices {
            return Err(self.max_devices_error());
        }
        if inner.silent_devices.load(Ordering::Acquire) >= inner.limits.max_devices {
            inner.metrics.hellos_unregistered.inc();
            return Ok(None);
        }
        Ok(Some(self.insert_device(id, now, false)))
    }

    fn insert_device(&self, id: &str, now: i64, has_data: bool) -> Arc<Mutex<DeviceState>> {
        let inner = &*self.inner;
        let entry = inner.devices.entry(id.to_string()).or_insert_with(|| {
            let rates = inner
                .manifest
                .modalities
                .iter()
                .map(|m| {
                    rate::RateBucket::new(
                        m.sample_rate_hz,
                        inner.limits.rate_limit_factor,
                        inner.limits.rate_burst_seconds,
                        inner.limits.max_chunk_samples,
                        now,
                    )
                })
                .collect();
            if !has_data {
                inner.silent_devices.fetch_add(1, Ordering::AcqRel);
            }
            Arc::new(Mutex::new(DeviceState {
                windows: DeviceWindows::new(
                    Arc::clone(&inner.manifest),
                    inner.policy.for_device(id),
                    now,
                ),
                rates,
                has_data,
            }))
        });
        let device = Arc::clone(&entry);
        drop(entry);
        if has_data && let Ok(mut state) = device.lock() {
            // Created by a racing hello meanwhile: this chunk's device has data now.
            if !state.has_data {
                state.has_data = true;
                let _ =
                    inner
                        .silent_devices
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
        }
        inner.metrics.active_devices.set(inner.devices.len() as i64);
        device
    }

    /// Hands closed windows to the batcher; returns how many it took. `since_arrival_nanos`: server time
    /// since the last chunk these windows needed arrived (0 when that chunk closed them), where their
    /// end-to-end latency starts.
    fn submit(
        &self,
        device_id: &str,
        closed: Vec<ClosedWindow>,
        since_arrival_nanos: i64,
    ) -> usize {
        let met = &self.inner.metrics;
        let now = Instant::now();
        let ready_at = now
            .checked_sub(std::time::Duration::from_nanos(
                u64::try_from(since_arrival_nanos).unwrap_or(0),
            ))
            .unwrap_or(now);
        let mut taken = 0;
        for w in closed {
            met.windows_emitted.inc();
            met.window_closes
                .with_label_values(&[w.trigger.as_str()])
                .inc();
            let absent = w.input.present.iter().filter(|p| !**p).count();
            met.windows_absent_modalities.observe(absent as f64);
            let job = Job {
                input: w.input,
                reply: Reply::Store(StreamTarget {
                    device_id: device_id.to_string(),
                    window_end_unix_nanos: w.end_unix_nanos,
                }),
                ready_at,
                span: tracing::Span::current(),
            };
            // A refused window is counted by the batcher (queue_full / shutdown); the chunk itself stays accepted.
            if self.inner.batcher.submit(job).is_ok() {
                taken += 1;
            }
        }
        taken
    }

    /// Closes the windows of stalled devices and of modalities gone stale, evicts idle devices and prunes
    /// old predictions. Called periodically; it walks every device, so call it off the async runtime
    /// (`spawn_blocking`) when there are many.
    pub fn tick(&self) {
        let inner = &*self.inner;
        let now = inner.clock.now_unix_nanos();
        let mut idle = Vec::new();
        let devices: Vec<(String, Arc<Mutex<DeviceState>>)> = inner
            .devices
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        for (id, device) in devices {
            let mut closed = Vec::new();
            let mut since_arrival = 0;
            if let Ok(mut state) = device.lock() {
                if now - state.windows.last_seen() > state.idle_timeout(&inner.limits) {
                    idle.push(id);
                    continue;
                }
                state.windows.close_ready(now, &mut closed);
                since_arrival = state.windows.last_chunk_at().map_or(0, |at| now - at);
            }
            if !closed.is_empty() {
                self.submit(&id, closed, since_arrival);
            }
        }
        for id in idle {
            let removed = inner.devices.remove_if(&id, |_, d| {
                d.lock()
                    .map(|s| now - s.windows.last_seen() > s.idle_timeout(&inner.limits))
                    .unwrap_or(true)
            });
            if let Some((_, d)) = &removed
                && d.lock().is_ok_and(|s| !s.has_data)
            {
                let _ =
                    inner
                        .silent_devices
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
            if removed.is_some() {
                inner.metrics.devices_evicted.inc();
                // Its newest predictions stay for dashboards; the rest would make every id that comes and
                // goes cost a full history for the whole retention period.
                inner.store.trim(&id, inner.limits.idle_history_len);
                tracing::info!(device_id = %id, "idle device evicted");
            }
        }
        // Dashboards may still ask for a device's last predictions after it went quiet, so the store keeps
        // them for their own retention period instead of following the (shorter) window-state eviction.
        inner
            .store
            .prune_older_than(now.saturating_sub(inner.limits.prediction_retention_nanos));
        inner.metrics.active_devices.set(inner.devices.len() as i64);
    }

    /// Stops accepting data and closes every window that the devices' data reaches (as if every device had
    /// stalled), so accepted samples still reach the batcher before it drains.
    pub fn close_and_flush(&self) -> usize {
        let inner = &*self.inner;
        inner.closing.store(true, Ordering::Release);
        let devices: Vec<(String, Arc<Mutex<DeviceState>>)> = inner
            .devices
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        let now = inner.clock.now_unix_nanos();
        let mut flushed = 0;
        for (id, device) in devices {
            let mut closed = Vec::new();
            let mut since_arrival = 0;
            if let Ok(mut state) = device.lock() {
                state.windows.flush(now, &mut closed);
                since_arrival = state.windows.last_chunk_at().map_or(0, |at| now - at);
            }
            flushed += self.submit(&id, closed, since_arrival);
        }
        flushed
    }

    /// Every tracked device, sorted by id.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let mut out: Vec<DeviceInfo> = self
            .inner
            .devices
            .iter()
            .filter_map(|e| self.describe(e.key(), e.value()))
            .collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        out
    }

    /// One device, if tracked.
    pub fn device_info(&self, id: &str) -> Option<DeviceInfo> {
        let d = self.inner.devices.get(id).map(|d| Arc::clone(&d))?;
        self.describe(id, &d)
    }

    fn describe(&self, id: &str, device: &Mutex<DeviceState>) -> Option<DeviceInfo> {
        let state = device.lock().ok()?;
        Some(devices::describe(
            id,
            &self.inner.manifest,
            &state.windows,
            self.inner.clock.now_unix_nanos(),
            self.inner.policy.stale_nanos,
        ))
    }

    /// The clock windows are closed by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
}

/// The refusal of a chunk that is older than every window of its device still open.
fn late_chunk_error(
    windows: &DeviceWindows,
    spec: &crate::model::ModalitySpec,
    chunk: &SensorChunk,
) -> Error {
    let closed = windows.last_closed_end().unwrap_or_default();
    Error::invalid(
        "late_data",
        format!(
            "chunk of {:?} for device {:?} (start_unix_nanos {}) is older than every open window: the \
             device's windows up to {closed} are closed. Time going backwards within a timeline is late \
             data; send a hello first to start a new timeline (e.g. after a clock reset)",
            spec.name, chunk.device_id, chunk.start_unix_nanos
        ),
    )
}
