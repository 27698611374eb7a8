//! Every Prometheus metric family of the service, in one registry owned by one struct. Names are in base
//! units, counters end in `_total`, everything starts with `crossl_`, and no label carries a device id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, 100 µs … 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Device clock offset buckets in seconds, symmetric around 0, ±100 ms … ±1 day.
const OFFSET_BUCKETS: &[f64] = &[
    -86400.0, -3600.0, -600.0, -60.0, -10.0, -2.0, -0.5, -0.1, 0.0, 0.1, 0.5, 2.0, 10.0, 60.0,
    600.0, 3600.0, 86400.0,
];

/// All metric families. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Sensor samples (rows) accepted, by transport and modality.
    pub samples_received: IntCounterVec,
    /// Chunks accepted, by transport.
    pub chunks_received: IntCounterVec,
    /// Chunks refused, by transport and reason (see `Error::reason`).
    pub chunks_rejected: IntCounterVec,
    /// One-window predict requests, by transport.
    pub predict_requests: IntCounterVec,
    /// One-window predict requests refused, by transport and reason.
    pub predict_rejected: IntCounterVec,
    /// Samples the window assembler dropped, by reason (late, duplicate, clock_jump).
    pub samples_dropped: IntCounterVec,
    /// Window policy events, by event (out_of_order, timeline_restart, forward_jump, rate_mismatch).
    pub window_events: IntCounterVec,
    /// Emitted streaming windows by what closed them (data, watermark, stall, flush).
    pub window_closes: IntCounterVec,
    /// Device clock offset per accepted chunk: device time of its last sample − its arrival (server
    /// clock). Negative for lagging clocks and for buffered or delayed data.
    pub device_clock_offset_seconds: Histogram,
    /// Streaming windows closed and sent to the batcher.
    pub windows_emitted: IntCounter,
    /// Number of absent modalities per emitted window.
    pub windows_absent_modalities: Histogram,
    /// Streaming windows dropped before inference, by reason (queue_full, deadline, shutdown,
    /// inference_error). One-shot requests are never counted here (see `requests_shed`).
    pub windows_shed: IntCounterVec,
    /// One-shot requests refused at admission, by reason (queue_full, concurrency_limit, shutdown), and
    /// HTTP requests refused at the listener's in-flight cap (in_flight_limit).
    pub requests_shed: IntCounterVec,
    /// Devices the prediction store forgot to stay within `--max-devices` (least recently updated first).
    pub store_devices_evicted: IntCounter,
    /// HTTP connections refused because `--http-max-connections` were open.
    pub http_connections_refused: IntCounter,
    /// HTTP connections open now.
    pub http_connections: IntGauge,
    /// Predictions produced (streaming and one-window).
    pub predictions: IntCounter,
    /// Failed session runs.
    pub inference_errors: IntCounter,
    /// Windows per session run.
    pub batch_size: Histogram,
    /// Time a window waited in the queue before its batch ran.
    pub queue_wait_seconds: Histogram,
    /// Session run time per batch.
    pub inference_seconds: Histogram,
    /// Window close (or request arrival) to prediction ready, by path (stream, predict).
    pub end_to_end_latency_seconds: HistogramVec,
    /// Devices with window state.
    pub active_devices: IntGauge,
    /// Devices evicted for being idle.
    pub devices_evicted: IntCounter,
    /// Live-feed items a slow subscriber skipped, by transport.
    pub feed_lagged: IntCounterVec,
    /// Requests refused by API-key checks, by transport and reason (missing_key, wrong_key, missing_scope).
    pub auth_failures: IntCounterVec,
    /// Long-lived streams open now, by transport and kind (ingest: device/gateway streams; feed: Watch and
    /// dashboard sockets).
    pub open_streams: IntGaugeVec,
    /// 1 when ready to serve.
    pub ready: IntGauge,
    /// Constant 1 with version, execution provider and model labels.
    pub build_info: IntGaugeVec,
    /// HTTP requests by matched route and status code.
    pub http_requests: IntCounterVec,
    /// Work the shutdown drain gave up on at --drain-timeout-ms, by what (windows: queued windows that never
    /// ran; streams: streams or sockets still open, e.g. a client that stopped reading).
    pub drain_dropped: IntCounterVec,
    /// Hellos accepted without registering the device because the set of silent (no data yet) devices
    /// was full; the device registers with its first chunk.
    pub hellos_unregistered: IntCounter,
    /// Device streams that lost a device to a newer stream (takeover), by transport.
    pub stream_takeovers: IntCounterVec,
    /// Jobs waiting in the admission queues now, by class (streaming, one_shot).
    pub queue_depth: IntGaugeVec,
    /// Predictions produced, by the model's class name (bounded: the manifest's classes).
    pub predictions_by_class: IntCounterVec,
    /// The `--max-devices` cap, so alerts can compare `crossl_active_devices` with it.
    pub max_devices: IntGauge,
    /// Failed operations on the shared state store (`--store redis://…`), by op (write, read, subscribe);
    /// the memory store never fails, the family exists at zero for dashboards and alerts.
    pub store_errors: IntCounterVec,
    /// Writes to the shared state store dropped because its write queue was full (never blocks ingest).
    pub store_writes_dropped: IntCounter,
    /// Personal heads this replica applies to its devices' predictions (`POST /v1/devices/{id}/labels`).
    pub personal_heads: IntGauge,
    /// Requests to `/v1/devices/{id}/labels`, by outcome (`added`, `read`, `deleted`, or the error reason).
    pub label_requests: IntCounterVec,
    /// Streaming predictions answered by a personal head.
    pub personalized_predictions: IntCounter,
    /// Time to merge a labelled span and fit the device's head (CPU work only, no store round trips).
    pub head_fit_seconds: Histogram,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

/// The standard `process_*` families (CPU seconds, resident memory, open and max fds, start time,
/// threads) read from /proc at scrape time, in the service's own registry. Only Linux has them.
#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(collector)) {
        tracing::warn!(error = %e, "process metrics unavailable");
    }
}

#[cfg(not(target_os = "linux"))]
fn register_process_collector(_registry: &Registry) {}

impl Metrics {
    /// `n_modalities` and `max_batch_size` size the count histograms.
    pub fn new(n_modalities: usize, max_batch_size: usize) -> Self {
        let r = Registry::new();
        let count_buckets = |n: usize| (0..=n).map(|i| i as f64).collect::<Vec<_>>();
        let batch_buckets = {
            let mut b = vec![1.0];
            while *b.last().expect("non-empty") < max_batch_size as f64 {
                let next = b.last().expect("non-empty") * 2.0;
                b.push(next.min(max_batch_size as f64));
            }
            b
        };
        let end_to_end = HistogramVec::new(
            HistogramOpts::new(
                "crossl_end_to_end_latency_seconds",
                "Window close (stream) or request arrival (predict) to prediction ready",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["path"],
        )
        .expect("valid metric");
        r.register(Box::new(end_to_end.clone()))
            .expect("unique metric");
        let ready = IntGauge::new(
            "crossl_ready",
            "1 when the model is loaded and warmed and not shutting down",
        )
        .expect("valid metric");
        r.register(Box::new(ready.clone())).expect("unique metric");
        let personal_heads = IntGauge::new(
            "crossl_personal_heads",
            "Personal heads this replica applies to its devices' predictions",
        )
        .expect("valid metric");
        r.register(Box::new(personal_heads.clone()))
            .expect("unique metric");
        let active_devices = IntGauge::new("crossl_active_devices", "Devices with window state")
            .expect("valid metric");
        r.register(Box::new(active_devices.clone()))
            .expect("unique metric");
        let open_streams = IntGaugeVec::new(
            Opts::new(
                "crossl_open_streams",
                "Long-lived streams open now (gRPC streams, WebSockets)",
            ),
            &["transport", "kind"],
        )
        .expect("valid metric");
        r.register(Box::new(open_streams.clone()))
            .expect("unique metric");
        let http_connections =
            IntGauge::new("crossl_http_connections", "HTTP connections open now")
                .expect("valid metric");
        r.register(Box::new(http_connections.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "crossl_build_info",
                "Constant 1; labels describe the running build and model",
            ),
            &["version", "execution_provider", "model"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("unique metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "crossl_queue_depth",
                "Jobs waiting in the admission queues now, by class",
            ),
            &["class"],
        )
        .expect("valid metric");
        r.register(Box::new(queue_depth.clone()))
            .expect("unique metric");
        let max_devices = IntGauge::new(
            "crossl_max_devices",
            "The --max-devices cap on devices this replica tracks",
        )
        .expect("valid metric");
        r.register(Box::new(max_devices.clone()))
            .expect("unique metric");
        register_process_collector(&r);
        Self {
            samples_received: counter_vec(
                &r,
                "crossl_samples_received_total",
                "Sensor samples accepted",
                &["transport", "modality"],
            ),
            chunks_received: counter_vec(
                &r,
                "crossl_chunks_received_total",
                "Chunks accepted",
                &["transport"],
            ),
            chunks_rejected: counter_vec(
                &r,
                "crossl_chunks_rejected_total",
                "Chunks refused",
                &["transport", "reason"],
            ),
            predict_requests: counter_vec(
                &r,
                "crossl_predict_requests_total",
                "One-window predict requests",
                &["transport"],
            ),
            predict_rejected: counter_vec(
                &r,
                "crossl_predict_rejected_total",
                "One-window predict requests refused",
                &["transport", "reason"],
            ),
            samples_dropped: counter_vec(
                &r,
                "crossl_window_samples_dropped_total",
                "Samples dropped by the window assembler",
                &["reason"],
            ),
            window_events: counter_vec(
                &r,
                "crossl_window_events_total",
                "Window policy events (out of order, timeline restarts, forward jumps, rate mismatches)",
                &["event"],
            ),
            window_closes: counter_vec(
                &r,
                "crossl_window_closes_total",
                "Emitted streaming windows by what closed them (data, watermark, stall, flush)",
                &["trigger"],
            ),
            device_clock_offset_seconds: histogram(
                &r,
                "crossl_device_clock_offset_seconds",
                "Device time of a chunk's last sample minus its arrival on the server clock",
                OFFSET_BUCKETS.to_vec(),
            ),
            windows_emitted: counter(
                &r,
                "crossl_windows_emitted_total",
                "Streaming windows closed",
            ),
            windows_absent_modalities: histogram(
                &r,
                "crossl_windows_absent_modalities",
                "Absent modalities per emitted window",
                count_buckets(n_modalities),
            ),
            windows_shed: counter_vec(
                &r,
                "crossl_windows_shed_total",
                "Streaming windows dropped before inference",
                &["reason"],
            ),
            requests_shed: counter_vec(
                &r,
                "crossl_requests_shed_total",
                "One-shot requests refused at admission",
                &["reason"],
            ),
            store_devices_evicted: counter(
                &r,
                "crossl_store_devices_evicted_total",
                "Devices the prediction store forgot to stay within --max-devices",
            ),
            http_connections_refused: counter(
                &r,
                "crossl_http_connections_refused_total",
                "HTTP connections refused at the --http-max-connections cap",
            ),
            http_connections,
            predictions: counter(&r, "crossl_predictions_total", "Predictions produced"),
            inference_errors: counter(&r, "crossl_inference_errors_total", "Failed session runs"),
            batch_size: histogram(
                &r,
                "crossl_batch_size",
                "Windows per session run",
                batch_buckets,
            ),
            queue_wait_seconds: histogram(
                &r,
                "crossl_queue_wait_seconds",
                "Time a window waited before its batch ran",
                SECONDS_BUCKETS.to_vec(),
            ),
            inference_seconds: histogram(
                &r,
                "crossl_inference_seconds",
                "Session run time per batch",
                SECONDS_BUCKETS.to_vec(),
            ),
            end_to_end_latency_seconds: end_to_end,
            active_devices,
            devices_evicted: counter(
                &r,
                "crossl_devices_evicted_total",
                "Devices evicted for being idle",
            ),
            store_errors: counter_vec(
                &r,
                "crossl_store_errors_total",
                "Failed operations on the shared state store, by op",
                &["op"],
            ),
            store_writes_dropped: counter(
                &r,
                "crossl_store_writes_dropped_total",
                "Shared-store writes dropped because the write queue was full",
            ),
            feed_lagged: counter_vec(
                &r,
                "crossl_feed_lagged_total",
                "Live-feed predictions a slow subscriber skipped",
                &["transport"],
            ),
            auth_failures: counter_vec(
                &r,
                "crossl_auth_failures_total",
                "Requests refused by API-key checks",
                &["transport", "reason"],
            ),
            open_streams,
            ready,
            build_info,
            http_requests: counter_vec(
                &r,
                "crossl_http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            drain_dropped: counter_vec(
                &r,
                "crossl_drain_dropped_total",
                "Work dropped when the shutdown drain timed out",
                &["what"],
            ),
            hellos_unregistered: counter(
                &r,
                "crossl_hellos_unregistered_total",
                "Hellos not registered because the set of silent devices was full",
            ),
            stream_takeovers: counter_vec(
                &r,
                "crossl_stream_takeovers_total",
                "Devices taken over by a newer stream",
                &["transport"],
            ),
            queue_depth,
            max_devices,
            predictions_by_class: counter_vec(
                &r,
                "crossl_predictions_by_class_total",
                "Predictions produced, by predicted class",
                &["class"],
            ),
            personal_heads,
            label_requests: counter_vec(
                &r,
                "crossl_label_requests_total",
                "Requests to /v1/devices/{id}/labels, by outcome",
                &["outcome"],
            ),
            personalized_predictions: counter(
                &r,
                "crossl_personalized_predictions_total",
                "Streaming predictions answered by a personal head",
            ),
            head_fit_seconds: histogram(
                &r,
                "crossl_head_fit_seconds",
                "Time to merge a labelled span and fit a device's personal head",
                SECONDS_BUCKETS.to_vec(),
            ),
            registry: r,
        }
    }

    /// Creates the series every dashboard expects at zero (Prometheus only shows a labelled series once
    /// it exists): per transport and modality, and the fixed reasons of refusals, drops and events.
    pub fn preregister(&self, modalities: &[&str]) {
        const TRANSPORTS: [&str; 3] = ["grpc", "websocket", "rest"];
        const CHUNK_REASONS: [&str; 11] = [
            "bad_device_id",
            "unknown_modality",
            "empty_chunk",
            "channel_multiple",
            "too_many_samples",
            "non_finite",
            "bad_timestamp",
            "late_data",
            "max_devices",
            "rate_limited",
            "unavailable",
        ];
        for t in TRANSPORTS {
            self.chunks_received.with_label_values(&[t]);
            self.predict_requests.with_label_values(&[t]);
            self.feed_lagged.with_label_values(&[t]);
            for m in modalities {
                self.samples_received.with_label_values(&[t, m]);
            }
            for r in CHUNK_REASONS {
                self.chunks_rejected.with_label_values(&[t, r]);
            }
        }
        for r in ["queue_full", "deadline", "shutdown", "inference_error"] {
            self.windows_shed.with_label_values(&[r]);
        }
        for r in [
            "queue_full",
            "concurrency_limit",
            "shutdown",
            "in_flight_limit",
        ] {
            self.requests_shed.with_label_values(&[r]);
        }
        for op in ["write", "read", "subscribe"] {
            self.store_errors.with_label_values(&[op]);
        }
        for r in ["late", "duplicate", "buffer_full"] {
            self.samples_dropped.with_label_values(&[r]);
        }
        for e in [
            "out_of_order",
            "timeline_restart",
            "forward_jump",
            "rate_mismatch",
        ] {
            self.window_events.with_label_values(&[e]);
        }
        for t in crate::window::CloseTrigger::ALL {
            self.window_closes.with_label_values(&[t.as_str()]);
        }
        for p in ["stream", "predict"] {
            self.end_to_end_latency_seconds.with_label_values(&[p]);
        }
        for w in ["windows", "streams"] {
            self.drain_dropped.with_label_values(&[w]);
        }
        for t in ["grpc", "websocket"] {
            self.stream_takeovers.with_label_values(&[t]);
            // "Devices streaming" reads 0, not "no data", before the first stream opens.
            for k in ["ingest", "feed"] {
                self.open_streams.with_label_values(&[t, k]);
            }
        }
        for c in ["streaming", "one_shot"] {
            self.queue_depth.with_label_values(&[c]);
        }
    }

    /// Creates `crossl_predictions_by_class_total` at zero for every class the model can predict, so a
    /// per-class rate exists before the first prediction of that class.
    pub fn preregister_classes<S: AsRef<str>>(&self, classes: &[S]) {
        for c in classes {
            self.predictions_by_class.with_label_values(&[c.as_ref()]);
        }
    }

    /// Long-lived streams open now, every transport and kind together.
    pub fn open_streams_total(&self) -> i64 {
        ["grpc", "websocket"]
            .iter()
            .flat_map(|t| ["ingest", "feed"].map(|k| (*t, k)))
            .map(|(t, k)| self.open_streams.with_label_values(&[t, k]).get())
            .sum()
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The registry, for adapters that add their own families (e.g. per-transport connection gauges).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// A latency histogram since the service started: sample count, sum, and quantiles estimated from the
/// buckets the way Prometheus' `histogram_quantile` does (linear within the bucket; a quantile in the
/// open top bucket reads as the largest finite bound). Quantiles are `null` before the first sample.
#[derive(
    Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    pub mean_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram) -> Self {
        use prometheus::core::Metric;
        let proto = histogram.metric();
        let h = proto.get_histogram();
        let buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        Self::from_buckets(h.get_sample_count(), h.get_sample_sum(), &buckets)
    }

    /// From cumulative `(upper bound, count)` buckets in ascending order (without the `+Inf` one).
    pub fn from_buckets(count: u64, sum_seconds: f64, buckets: &[(f64, u64)]) -> Self {
        let quantile = |q: f64| -> Option<f64> {
            if count == 0 {
                return None;
            }
            let rank = q * count as f64;
            let mut lower = (0.0, 0u64);
            for &(bound, cumulative) in buckets {
                if cumulative as f64 >= rank {
                    let in_bucket = (cumulative - lower.1) as f64;
                    let fraction = if in_bucket > 0.0 {
                        (rank - lower.1 as f64) / in_bucket
                    } else {
                        1.0
                    };
                    return Some(lower.0 + (bound - lower.0) * fraction.clamp(0.0, 1.0));
                }
                lower = (bound, cumulative);
            }
            buckets.last().map(|&(bound, _)| bound)
        };
        Self {
            count,
            sum_seconds,
            mean_seconds: (count > 0).then(|| sum_seconds / count as f64),
            p50_seconds: quantile(0.5),
            p90_seconds: quantile(0.9),
            p99_seconds: quantile(0.99),
        }
    }
}

/// A one-label counter family as label value → count (every series that exists, zeros included).
pub fn counts_by_label(family: &IntCounterVec) -> std::collections::BTreeMap<String, u64> {
    use prometheus::core::Collector;
    family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric().iter())
        .filter_map(|m| {
            let label = m.get_label().first()?.value().to_string();
            Some((label, m.get_counter().get_value() as u64))
        })
        .fold(std::collections::BTreeMap::new(), |mut acc, (k, v)| {
            *acc.entry(k).or_insert(0) += v;
            acc
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_interpolates_like_histogram_quantile() {
        let empty = LatencySummary::from_buckets(0, 0.0, &[(0.1, 0), (1.0, 0)]);
        assert_eq!(empty.p50_seconds, None);
        assert_eq!(empty.mean_seconds, None);
        // 10 samples: 4 in (0, 0.1], 6 in (0.1, 1.0].
        let s = LatencySummary::from_buckets(10, 3.0, &[(0.1, 4), (1.0, 10)]);
        assert_eq!(s.mean_seconds, Some(0.3));
        // rank 5 is the 1st of 6 in the second bucket: 0.1 + 0.9 / 6.
        assert!((s.p50_seconds.unwrap() - 0.25).abs() < 1e-9, "{s:?}");
        assert!((s.p99_seconds.unwrap() - (0.1 + 0.9 * 5.9 / 6.0)).abs() < 1e-9);
        // Past the last finite bucket (the +Inf one): the largest finite bound.
        let over = LatencySummary::from_buckets(2, 40.0, &[(0.1, 0), (10.0, 0)]);
        assert_eq!(over.p50_seconds, Some(10.0));
        let h = Histogram::with_opts(HistogramOpts::new("h", "h").buckets(vec![0.01, 0.1]))
            .expect("histogram");
        for v in [0.005, 0.05, 0.05, 0.05] {
            h.observe(v);
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 0.155).abs() < 1e-9);
        assert!(s.p50_seconds.unwrap() > 0.01 && s.p50_seconds.unwrap() <= 0.1);
    }

    #[test]
    fn counts_by_label_sums_each_series() {
        let m = Metrics::new(3, 32);
        m.preregister(&["acc"]);
        m.windows_shed.with_label_values(&["queue_full"]).inc_by(3);
        let shed = counts_by_label(&m.windows_shed);
        assert_eq!(shed.get("queue_full"), Some(&3));
        assert_eq!(shed.get("deadline"), Some(&0));
    }

    #[test]
    fn renders_all_families_without_device_labels() {
        let m = Metrics::new(3, 32);
        m.samples_received
            .with_label_values(&["rest", "acc"])
            .inc_by(5);
        m.chunks_rejected
            .with_label_values(&["grpc", "non_finite"])
            .inc();
        m.build_info
            .with_label_values(&["0.1.0", "cpu", "m"])
            .set(1);
        m.end_to_end_latency_seconds
            .with_label_values(&["stream"])
            .observe(0.01);
        m.batch_size.observe(3.0);
        let text = m.render();
        for family in [
            "crossl_samples_received_total",
            "crossl_chunks_rejected_total",
            "crossl_build_info",
            "crossl_end_to_end_latency_seconds_bucket",
            "crossl_batch_size_bucket",
            "crossl_windows_emitted_total",
            "crossl_active_devices",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
        assert!(!text.contains("device_id="));
    }

    #[test]
    fn new_families_exist_at_zero_and_process_metrics_are_in_the_same_registry() {
        let m = Metrics::new(3, 32);
        m.preregister(&["acc"]);
        m.preregister_classes(&["walking", "sitting"]);
        let text = m.render();
        for series in [
            "crossl_queue_depth{class=\"streaming\"} 0",
            "crossl_queue_depth{class=\"one_shot\"} 0",
            "crossl_predictions_by_class_total{class=\"walking\"} 0",
            "crossl_store_errors_total{op=\"write\"} 0",
            "crossl_store_errors_total{op=\"read\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        if cfg!(target_os = "linux") {
            for family in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                assert!(text.contains(family), "{family} missing from\n{text}");
            }
        }
    }
}
