//! Personal heads shared by two replicas on one real Redis: a device streams into replica A, a user labels
//! its stream through replica B (which reads the device's history from Redis), A answers the device with
//! the head at once; the device moves to B (reconnects there) and B answers it with the same head; a
//! DELETE on A makes B answer with the general model again.

mod streaming;

#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::time::Duration;

use crossl_serve::config::ServeArgs;
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

    let mut device = StreamingDevice::open(&a, DEVICE).await;
    device
        .send((0..12).flat_map(|k| second_of_chunks(&core, DEVICE, t0, k)))
        .await;
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
    device
        .send((12..20).flat_map(|k| second_of_chunks(&core, DEVICE, t0, k)))
        .await;
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
    let mut device = StreamingDevice::open(&b, DEVICE).await;
    device
        .send((20..24).flat_map(|k| second_of_chunks(&core, DEVICE, t0, k)))
        .await;
    eventually(
        "B to hold the head of the device it now holds",
        async || b.metric("crossl_personal_heads", &[]).await == 1.0,
    )
    .await;
    device
        .send((24..34).flat_map(|k| second_of_chunks(&core, DEVICE, t0, k)))
        .await;
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
    device
        .send((34..42).flat_map(|k| second_of_chunks(&core, DEVICE, t0, k)))
        .await;
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
