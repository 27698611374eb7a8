//! Personal heads shared by two replicas on one real Redis: a device streams into replica A, a user labels
//! its stream through replica B (which reads the device's history from Redis), A answers the device with
//! the head at once; the device moves to B (reconnects there) and B answers it with the same head; a
//! DELETE on A makes B answer with the general model again.

mod streaming;

#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::time::Duration;

use crossl_serve::app::Core;
use crossl_serve::config::ServeArgs;
use crossl_serve::proto;
use crossl_serve::proto::stream_response::Kind;
use redis_server::RedisServer;
use serde_json::{Value, json};
use streaming::*;

const DEVICE: &str = "wrist-p";

fn replica(url: String, name: &'static str) -> impl FnOnce(&mut ServeArgs) {
    move |a| {
        a.store = url;
        a.replica_id = name.to_string();
        a.store_heartbeat_ms = 100;
        a.store_timeout_ms = 1000;
    }
}

/// A gRPC device stream into one replica that collects its predictions.
struct Device {
    tx: tokio::sync::mpsc::Sender<proto::StreamRequest>,
    predictions: tokio::sync::mpsc::UnboundedReceiver<proto::Prediction>,
    reader: tokio::task::JoinHandle<()>,
    sequence: u64,
}

impl Device {
    async fn open(server: &TestServer) -> Self {
        let (tx, mut responses) = server.open_stream(1024).await;
        let (out, predictions) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(Some(r)) = responses.message().await {
                if let Some(Kind::Prediction(p)) = r.kind {
                    let _ = out.send(p);
                }
            }
        });
        tx.send(hello_request(DEVICE, &[])).await.expect("hello");
        Self {
            tx,
            predictions,
            reader,
            sequence: 0,
        }
    }

    async fn send(&mut self, core: &Core, t0: i64, seconds: std::ops::Range<usize>) {
        for k in seconds {
            for chunk in second_of_chunks(core, DEVICE, t0, k) {
                self.sequence += 1;
                self.tx
                    .send(chunk_request(self.sequence, chunk))
                    .await
                    .expect("chunk sent");
            }
        }
    }

    async fn until(&mut self, until: i64) -> Vec<proto::Prediction> {
        let mut got = Vec::new();
        loop {
            let p = tokio::time::timeout(Duration::from_secs(60), self.predictions.recv())
                .await
                .expect("a prediction within 60 s")
                .expect("stream open");
            let end = p.window_end_unix_nanos;
            got.push(p);
            if end >= until {
                return got;
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, format!("{}{path}", server.http_url()));
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `check` is true; panics after 60 s (no timing is asserted).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_labelled_on_one_replica_answers_the_device_on_whichever_replica_holds_it() {
    let redis = RedisServer::start();
    let a = start(replica(redis.url(), "replica-a")).await;
    let b = start(replica(redis.url(), "replica-b")).await;
    let core = a.core.clone();
    let t0 = next_second(Duration::ZERO);

    let mut device = Device::open(&a).await;
    device.send(&core, t0, 0..12).await;
    let first = device.until(t0 + 12 * SECOND).await;
    let general: BTreeSet<String> = first.iter().map(|p| p.label.clone()).collect();
    let target = core
        .manifest
        .classes
        .iter()
        .find(|c| !general.contains(*c))
        .expect("a class the general model did not give")
        .clone();
    // B sees the device's history through Redis.
    eventually("B to see the device's windows", async || {
        let (status, body) = request(
            &b,
            reqwest::Method::GET,
            &format!("/v1/devices/{DEVICE}/predictions?limit=256"),
            None,
        )
        .await;
        status == 200
            && body["predictions"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["window_end_unix_nanos"].as_i64() >= Some(t0 + 10 * SECOND))
            })
    })
    .await;

    // Labelled through B: one class for the whole stretch (the other classes fall back to the general
    // model, which this signal is far from once labelled).
    let (status, body) = request(
        &b,
        reqwest::Method::POST,
        &format!("/v1/devices/{DEVICE}/labels"),
        Some(json!({"label": target, "start_unix_nanos": t0, "end_unix_nanos": t0 + 10 * SECOND})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["classes"][0]["windows"], 6, "{body}");
    let (status, on_a) = request(
        &a,
        reqwest::Method::GET,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
    )
    .await;
    assert_eq!((status, &on_a["spans"]), (200, &body["spans"]), "{on_a}");
    eventually("A to hold the head", async || {
        a.metric("crossl_personal_heads", &[]).await == 1.0
    })
    .await;

    // A answers the device's own stream with the head.
    device.send(&core, t0, 12..20).await;
    let answered = device.until(t0 + 20 * SECOND).await;
    let personal: Vec<_> = answered
        .iter()
        .filter(|p| p.window_end_unix_nanos > t0 + 13 * SECOND)
        .collect();
    assert!(!personal.is_empty());
    for p in &personal {
        assert!(p.personalized, "{p:?}");
        assert_eq!(p.label, target);
        assert!(general.contains(&p.general.as_ref().expect("general").label));
    }
    // ... and B reads them from Redis as they were answered.
    eventually("B to show a personalised latest prediction", async || {
        let (status, body) = request(
            &b,
            reqwest::Method::GET,
            &format!("/v1/devices/{DEVICE}/prediction"),
            None,
        )
        .await;
        status == 200 && body["personalized"] == true && body["label"] == json!(target)
    })
    .await;

    // The device moves to B: B loads the head from Redis and answers with it.
    drop(device);
    let mut device = Device::open(&b).await;
    device.send(&core, t0, 20..24).await;
    eventually(
        "B to hold the head of the device it now holds",
        async || b.metric("crossl_personal_heads", &[]).await == 1.0,
    )
    .await;
    device.send(&core, t0, 24..34).await;
    let on_b = device.until(t0 + 34 * SECOND).await;
    let last = on_b.last().expect("predictions");
    assert!(last.personalized && last.label == target, "{last:?}");

    // DELETE through A: B drops the head and answers with the general model again.
    let (status, body) = request(
        &a,
        reqwest::Method::DELETE,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
    )
    .await;
    assert_eq!((status, &body["deleted"]), (200, &json!(true)), "{body}");
    eventually("B to drop the head", async || {
        b.metric("crossl_personal_heads", &[]).await == 0.0
    })
    .await;
    device.send(&core, t0, 34..42).await;
    let after = device.until(t0 + 42 * SECOND).await;
    let last = after.last().expect("predictions");
    assert!(!last.personalized && last.general.is_none(), "{last:?}");
    let (_, body) = request(
        &b,
        reqwest::Method::GET,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
    )
    .await;
    assert_eq!(body["personalized"], false, "{body}");
    drop(device);
    a.shutdown().await.expect("A stops cleanly");
    b.shutdown().await.expect("B stops cleanly");
}
