//! Two replicas sharing one real Redis (`--store redis://…`): a device streams into replica A over gRPC,
//! and replica B answers for it on every read path (REST latest/history/devices, gRPC Latest and Watch,
//! the WebSocket feed); once A stops, B shows the device as held by nobody and stale. And Redis stopped
//! and restarted mid-stream: A's device keeps streaming and getting predictions, B answers 503 for it
//! (counted), and both replicas reconnect by themselves once Redis is back.

mod streaming;

#[path = "support/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crossl_serve::config::ServeArgs;
use crossl_serve::proto;
use crossl_serve::proto::stream_response::Kind;
use redis_server::RedisServer;
use serde_json::Value;
use streaming::*;

const DEVICE: &str = "wrist-7";

/// Replica settings: the shared store, a name, and a fast registry heartbeat (stale after 3 × 100 ms).
fn replica(url: String, name: &'static str) -> impl FnOnce(&mut ServeArgs) {
    move |a| {
        a.store = url;
        a.replica_id = name.to_string();
        a.store_heartbeat_ms = 100;
        a.store_timeout_ms = 1000;
    }
}

/// Polls `check` every 50 ms until it yields a value; panics with `what` after 60 s (a generous bound
/// for a shared, noisy machine: nothing here asserts on timing).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{}{path}", server.http_url()))
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A device streaming into one replica over gRPC: one second of every modality each 100 ms, until
/// dropped. Counts the predictions that come back on its own stream and remembers the newest window end.
struct StreamingDevice {
    task: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    predictions: Arc<AtomicU64>,
    newest_end: Arc<AtomicI64>,
}

impl StreamingDevice {
    async fn start(server: &TestServer, device: &'static str) -> Self {
        let (tx, mut responses) = server.open_stream(256).await;
        let predictions = Arc::new(AtomicU64::new(0));
        let newest_end = Arc::new(AtomicI64::new(0));
        let (count, newest) = (Arc::clone(&predictions), Arc::clone(&newest_end));
        let reader = tokio::spawn(async move {
            while let Ok(Some(r)) = responses.message().await {
                if let Some(Kind::Prediction(p)) = r.kind {
                    count.fetch_add(1, Ordering::Relaxed);
                    newest.fetch_max(p.window_end_unix_nanos, Ordering::Relaxed);
                }
            }
        });
        tx.send(hello_request(device, &[])).await.expect("hello");
        let core = server.core.clone();
        let t0 = next_second(Duration::ZERO);
        let task = tokio::spawn(async move {
            let mut sequence = 0;
            for k in 0.. {
                for chunk in second_of_chunks(&core, device, t0, k) {
                    sequence += 1;
                    if tx.send(chunk_request(sequence, chunk)).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            task,
            reader,
            predictions,
            newest_end,
        }
    }

    fn predictions(&self) -> u64 {
        self.predictions.load(Ordering::Relaxed)
    }
}

impl Drop for StreamingDevice {
    fn drop(&mut self) {
        self.task.abort();
        self.reader.abort();
    }
}

/// The newest window end B reports for the device over REST, once it answers 200.
async fn latest_end(server: &TestServer) -> Option<i64> {
    let (status, body) = get(server, &format!("/v1/devices/{DEVICE}/prediction")).await;
    (status == 200).then(|| body["window_end_unix_nanos"].as_i64().expect("window end"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_for_a_device_streaming_into_another_and_sees_it_go_stale() {
    let redis = RedisServer::start();
    let a = start(replica(redis.url(), "replica-a")).await;
    let b = start(replica(redis.url(), "replica-b")).await;
    // B's live feeds are open before the device starts.
    let mut watch = b
        .predictions()
        .await
        .watch(proto::WatchRequest {
            device_ids: vec![DEVICE.into()],
        })
        .await
        .expect("Watch opens on B")
        .into_inner();
    let mut dashboard = ws_connect(
        &b.ws_url(&format!("/v1/ws/predictions?device={DEVICE}")),
        None,
    )
    .await
    .expect("feed socket on B");

    let device = StreamingDevice::start(&a, DEVICE).await;

    // REST latest and history on B.
    let first_end = eventually("B's latest prediction of the device", || latest_end(&b)).await;
    assert!(first_end > 0);
    let (status, history) = get(&b, &format!("/v1/devices/{DEVICE}/predictions?limit=10")).await;
    assert_eq!(status, 200, "{history}");
    let ends: Vec<i64> = history["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p["window_end_unix_nanos"].as_i64().expect("end"))
        .collect();
    assert!(
        !ends.is_empty() && ends.windows(2).all(|w| w[0] < w[1]),
        "{ends:?}"
    );
    assert!(ends.iter().all(|e| *e % SECOND == 0));
    let (status, _) = get(&b, "/v1/devices/nobody/predictions").await;
    assert_eq!(status, 404);

    // The registry on B: held by A, live.
    let listed = eventually("the device in B's /v1/devices", || async {
        let (status, body) = get(&b, "/v1/devices").await;
        assert_eq!(status, 200, "{body}");
        body["devices"]
            .as_array()?
            .iter()
            .find(|d| d["device_id"] == DEVICE)
            .cloned()
    })
    .await;
    assert_eq!(listed["held_by"], "replica-a", "{listed}");
    assert_eq!(listed["stale"], false, "{listed}");
    assert!(
        !listed["modalities"]
            .as_array()
            .expect("modalities")
            .is_empty()
    );
    let (status, one) = get(&b, &format!("/v1/devices/{DEVICE}")).await;
    assert_eq!(
        (status, &one["held_by"]),
        (200, &Value::from("replica-a")),
        "{one}"
    );
    let (status, on_a) = get(&a, &format!("/v1/devices/{DEVICE}")).await;
    assert_eq!(
        (status, &on_a["held_by"]),
        (200, &Value::from("replica-a")),
        "{on_a}"
    );

    // gRPC Latest and Watch on B.
    let latest = b
        .predictions()
        .await
        .latest(proto::LatestRequest {
            device_id: DEVICE.into(),
        })
        .await
        .expect("Latest on B")
        .into_inner();
    assert_eq!(latest.device_id, DEVICE);
    assert!(latest.window_end_unix_nanos >= first_end);
    let watched = tokio::time::timeout(Duration::from_secs(60), watch.message())
        .await
        .expect("a prediction on B's Watch within 60 s")
        .expect("Watch healthy")
        .expect("Watch open");
    assert_eq!(watched.device_id, DEVICE);
    assert_eq!(watched.class_index as usize, {
        let p = &watched.probabilities;
        (0..p.len())
            .max_by(|&i, &j| p[i].total_cmp(&p[j]))
            .expect("classes")
    });

    // The WebSocket dashboard feed on B.
    let frame = ws_next_json(&mut dashboard).await.expect("feed frame on B");
    assert_eq!(frame["type"], "prediction", "{frame}");
    assert_eq!(frame["device_id"], DEVICE, "{frame}");

    // A replica's own device stream is fed locally, as always.
    assert!(device.predictions() > 0);
    let a_metrics = a.metrics_text().await;
    assert_eq!(
        metric_value(&a_metrics, "crossl_store_errors_total", &[]),
        0.0
    );

    // A stops: B shows the device held by nobody and stale; its last predictions stay readable until the
    // retention (--prediction-retention-s) expires them.
    drop(device);
    a.shutdown().await.expect("A stops cleanly");
    let gone = eventually("B to show the device released", || async {
        let (status, body) = get(&b, &format!("/v1/devices/{DEVICE}")).await;
        assert_eq!(status, 200, "{body}");
        (body["stale"] == true).then_some(body)
    })
    .await;
    assert_eq!(gone["held_by"], Value::Null, "{gone}");
    assert!(latest_end(&b).await.is_some_and(|end| end >= first_end));
    let (_, all) = get(&b, "/v1/devices").await;
    let listed = all["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["device_id"] == DEVICE)
        .cloned()
        .expect("still listed");
    assert_eq!(
        (&listed["held_by"], &listed["stale"]),
        (&Value::Null, &Value::from(true))
    );
    b.shutdown().await.expect("B stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_local_streaming_answers_503_elsewhere_and_both_replicas_reconnect() {
    let mut redis = RedisServer::start();
    let a = start(replica(redis.url(), "replica-a")).await;
    let b = start(replica(redis.url(), "replica-b")).await;
    let mut watch = b
        .predictions()
        .await
        .watch(proto::WatchRequest {
            device_ids: vec![DEVICE.into()],
        })
        .await
        .expect("Watch opens on B")
        .into_inner();
    let device = StreamingDevice::start(&a, DEVICE).await;
    eventually("B to see the device", || latest_end(&b)).await;

    // Redis goes away mid-stream.
    redis.stop();
    let outage = eventually("B to answer 503 for a device it does not hold", || async {
        let (status, body) = get(&b, &format!("/v1/devices/{DEVICE}/prediction")).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(outage["kind"], "unavailable", "{outage}");
    assert!(
        outage["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("shared store unavailable")),
        "{outage}"
    );
    let (status, body) = get(&b, "/v1/devices").await;
    assert_eq!(
        (status, &body["kind"]),
        (503, &Value::from("unavailable")),
        "{body}"
    );
    let status = b
        .predictions()
        .await
        .latest(proto::LatestRequest {
            device_id: DEVICE.into(),
        })
        .await
        .expect_err("Latest on B fails while Redis is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // A keeps streaming: predictions keep coming back on the device's own stream and from A's REST.
    let during = device.predictions();
    eventually(
        "more predictions on A's device stream while Redis is down",
        || async { (device.predictions() >= during + 3).then_some(()) },
    )
    .await;
    let (status, local) = get(&a, &format!("/v1/devices/{DEVICE}/prediction")).await;
    assert_eq!(status, 200, "{local}");
    // ... and the failures are counted.
    eventually("A to count failed writes", || async {
        (a.metric("crossl_store_errors_total", &[("op", "write")])
            .await
            > 0.0)
            .then_some(())
    })
    .await;
    assert!(
        b.metric("crossl_store_errors_total", &[("op", "read")])
            .await
            > 0.0
    );
    eventually("B to count the lost subscription", || async {
        (b.metric("crossl_store_errors_total", &[("op", "subscribe")])
            .await
            > 0.0)
            .then_some(())
    })
    .await;

    // Redis is back (empty): both replicas reconnect by themselves and B answers with new predictions.
    let before_restart = device.newest_end.load(Ordering::Relaxed);
    redis.restart();
    let after = eventually("B to answer again after Redis restarted", || async {
        latest_end(&b).await.filter(|end| *end > before_restart)
    })
    .await;
    assert!(after > before_restart);
    let (status, body) = get(&b, &format!("/v1/devices/{DEVICE}")).await;
    assert_eq!(
        (status, &body["held_by"]),
        (200, &Value::from("replica-a")),
        "{body}"
    );
    // B's Watch resubscribed: predictions of windows after the restart arrive.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let p = watch
                .message()
                .await
                .expect("Watch healthy")
                .expect("Watch open");
            if p.window_end_unix_nanos > before_restart {
                return;
            }
        }
    })
    .await
    .expect("a post-restart prediction on B's Watch within 60 s");
    drop(device);
    a.shutdown().await.expect("A stops cleanly");
    b.shutdown().await.expect("B stops cleanly");
}
