//! Per-device personalisation end to end over real sockets (bundled model, `--store memory`): a device
//! streams two distinct signals over gRPC, a user labels one stretch of each with classes the general
//! model never gave them, and from then on the device's predictions — on its own stream after
//! reconnecting, REST latest and history, gRPC Latest and Watch, the WebSocket feed — carry the personal
//! label with `personalized: true` and the general model's answer in `general`. Errors (unknown label, a
//! span outside the stored history or without a whole window, unknown device, another device's key, a
//! read-only key) are clear 4xx and counted; DELETE restores the general answers.

mod streaming;

use std::collections::BTreeSet;
use std::time::Duration;

use crossl_serve::app::Core;
use crossl_serve::proto;
use serde_json::{Value, json};
use streaming::*;

const DEVICE: &str = "pers-1";

/// Samples of one second for signal `b` (A: the shared synthetic signal; B: upside down, twice the
/// frequency, larger swing). Both repeat every second, so every window of one signal is the same.
fn signal_chunks(core: &Core, device: &str, t0: i64, k: usize, b: bool) -> Vec<proto::SensorChunk> {
    let mut chunks = second_of_chunks(core, device, t0, k);
    if b {
        for (m, chunk) in chunks.iter_mut().enumerate() {
            let channels = core.manifest.modalities[m].channels;
            for (j, v) in chunk.samples.iter_mut().enumerate() {
                let (i, c) = (j / channels, j % channels);
                let phase = i as f32 * 0.5 + c as f32 * 1.7 + m as f32;
                *v = if c == 0 { -9.0 } else { 2.0 } + 3.0 * phase.sin();
            }
        }
    }
    chunks
}

async fn request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, format!("{}{path}", server.http_url()));
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn label(server: &TestServer, label: &str, start: i64, end: i64) -> (u16, Value) {
    request(
        server,
        reqwest::Method::POST,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
        Some(json!({"label": label, "start_unix_nanos": start, "end_unix_nanos": end})),
    )
    .await
}

/// REST history of the device, oldest first.
async fn history(server: &TestServer) -> Vec<Value> {
    let (status, body) = request(
        server,
        reqwest::Method::GET,
        &format!("/v1/devices/{DEVICE}/predictions?limit=256"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["predictions"].as_array().expect("predictions").clone()
}

/// Windows wholly inside `[from, to]` (window ends `from + 5 s ..= to`).
fn inside(end: i64, from: i64, to: i64) -> bool {
    end - 5 * SECOND >= from && end <= to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_spans_personalise_every_path_and_delete_restores_the_general_model() {
    let server = start(|_| {}).await;
    let core = server.core.clone();
    let classes = core.manifest.classes.clone();
    let t0 = next_second(Duration::ZERO);

    // 12 s of signal A, then 12 s of signal B.
    let mut device = StreamingDevice::open(&server, DEVICE).await;
    device
        .send((0..12).flat_map(|k| signal_chunks(&core, DEVICE, t0, k, false)))
        .await;
    device
        .send((12..24).flat_map(|k| signal_chunks(&core, DEVICE, t0, k, true)))
        .await;
    device.until(t0 + 24 * SECOND).await;
    let before = history(&server).await;
    let general_of = |from: i64, to: i64| -> BTreeSet<String> {
        before
            .iter()
            .filter(|p| inside(p["window_end_unix_nanos"].as_i64().expect("end"), from, to))
            .map(|p| p["label"].as_str().expect("label").to_string())
            .collect()
    };
    let (general_a, general_b) = (
        general_of(t0, t0 + 12 * SECOND),
        general_of(t0 + 12 * SECOND, t0 + 24 * SECOND),
    );
    assert!(!general_a.is_empty() && !general_b.is_empty());
    assert!(
        before
            .iter()
            .all(|p| p["personalized"] == false && p.get("general").is_none())
    );
    // Two classes the general model gave neither signal: the personal answers can only come from labels.
    let mut unused = classes
        .iter()
        .filter(|c| !general_a.contains(*c) && !general_b.contains(*c));
    let (x, y) = (
        unused.next().expect("a class").clone(),
        unused.next().expect("another class").clone(),
    );

    // Errors first: nothing is stored by them.
    let (status, body) = label(&server, "flying", t0, t0 + 12 * SECOND).await;
    assert_eq!(
        (status, &body["kind"]),
        (400, &json!("invalid_input")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("unknown label"),
        "{body}"
    );
    let (status, body) = label(&server, &x, t0 - 600 * SECOND, t0 - 500 * SECOND).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("outside the stored history"),
        "{body}"
    );
    let (status, body) = label(&server, &x, t0 + 5 * SECOND, t0 + 8 * SECOND).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("wholly inside"),
        "{body}"
    );
    let (status, body) = label(&server, &x, t0 + 8 * SECOND, t0 + 5 * SECOND).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(
        &server,
        reqwest::Method::POST,
        "/v1/devices/nobody/labels",
        None,
        Some(json!({"label": x, "start_unix_nanos": t0, "end_unix_nanos": t0 + SECOND})),
    )
    .await;
    assert_eq!(
        (status, &body["kind"]),
        (404, &json!("not_found")),
        "{body}"
    );

    // Label a stretch of each signal.
    let (status, body) = label(&server, &x, t0, t0 + 12 * SECOND).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = label(&server, &y, t0 + 12 * SECOND, t0 + 24 * SECOND).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["personalized"], true, "{body}");
    assert_eq!(body["spans"].as_array().expect("spans").len(), 2);
    let per_class: Vec<(String, u64)> = body["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| {
            (
                c["label"].as_str().expect("label").to_string(),
                c["windows"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(per_class.len(), 2, "{body}");
    assert!(
        per_class.iter().all(|(_, n)| *n == 8),
        "8 whole windows per 12 s span: {body}"
    );
    let (status, got) = request(
        &server,
        reqwest::Method::GET,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
        None,
    )
    .await;
    assert_eq!((status, &got["spans"]), (200, &body["spans"]), "{got}");
    assert_eq!(server.metric("crossl_personal_heads", &[]).await, 1.0);

    // The live feeds are open before the next windows; the device reconnects on a new stream.
    let mut watch = server
        .predictions()
        .await
        .watch(proto::WatchRequest {
            device_ids: vec![DEVICE.into()],
        })
        .await
        .expect("Watch opens")
        .into_inner();
    let mut feed = ws_connect(
        &server.ws_url(&format!("/v1/ws/predictions?device={DEVICE}")),
        None,
    )
    .await
    .expect("feed socket");
    drop(device);
    let mut device = StreamingDevice::open(&server, DEVICE).await;
    device
        .send((24..34).flat_map(|k| signal_chunks(&core, DEVICE, t0, k, false)))
        .await;
    device
        .send((34..44).flat_map(|k| signal_chunks(&core, DEVICE, t0, k, true)))
        .await;
    let streamed = device.until(t0 + 44 * SECOND).await;
    let check = |end: i64, personalized: bool, label: &str, general: Option<&str>| {
        if inside(end, t0 + 24 * SECOND, t0 + 34 * SECOND) {
            assert!(personalized, "signal A window at {end} not personalised");
            assert_eq!(label, x, "signal A window at {end}");
        } else if inside(end, t0 + 34 * SECOND, t0 + 44 * SECOND) {
            assert!(personalized, "signal B window at {end} not personalised");
            assert_eq!(label, y, "signal B window at {end}");
        } else {
            return;
        }
        let general = general.expect("general answer kept");
        assert!(
            general != x && general != y,
            "general {general} is the model's own"
        );
    };
    let mut checked = 0;
    for p in &streamed {
        let general = p.general.as_ref();
        check(
            p.window_end_unix_nanos,
            p.personalized,
            &p.label,
            general.map(|g| g.label.as_str()),
        );
        if let Some(g) = general {
            assert_eq!(g.probabilities.len(), classes.len());
            assert_eq!(classes[g.class_index as usize], g.label);
            checked += 1;
        }
    }
    assert!(
        checked >= 12,
        "{checked} personalised predictions on the device stream"
    );
    // REST history and latest.
    let after = history(&server).await;
    let mut rest_checked = 0;
    for p in after
        .iter()
        .filter(|p| p["window_end_unix_nanos"].as_i64() > Some(t0 + 24 * SECOND))
    {
        check(
            p["window_end_unix_nanos"].as_i64().expect("end"),
            p["personalized"] == true,
            p["label"].as_str().expect("label"),
            p["general"]["label"].as_str(),
        );
        rest_checked += usize::from(p["personalized"] == true);
    }
    assert!(rest_checked >= 12, "{rest_checked}");
    let (status, latest) = request(
        &server,
        reqwest::Method::GET,
        &format!("/v1/devices/{DEVICE}/prediction"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &latest["personalized"]),
        (200, &json!(true)),
        "{latest}"
    );
    assert_eq!(
        latest["general"]["probabilities"].as_array().map(Vec::len),
        Some(classes.len())
    );
    // gRPC Latest and Watch, and the WebSocket feed.
    let latest = server
        .predictions()
        .await
        .latest(proto::LatestRequest {
            device_id: DEVICE.into(),
        })
        .await
        .expect("Latest")
        .into_inner();
    assert!(
        latest.personalized && latest.general.is_some(),
        "{latest:?}"
    );
    let watched = tokio::time::timeout(Duration::from_secs(60), watch.message())
        .await
        .expect("Watch within 60 s")
        .expect("Watch healthy")
        .expect("Watch open");
    assert!(
        watched.personalized && watched.general.is_some(),
        "{watched:?}"
    );
    let frame = ws_next_json(&mut feed).await.expect("feed frame");
    assert_eq!(
        (&frame["type"], &frame["personalized"]),
        (&json!("prediction"), &json!(true)),
        "{frame}"
    );
    assert!(frame["general"]["label"].is_string(), "{frame}");

    // DELETE: the next windows are the general model's again.
    let (status, body) = request(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
        None,
    )
    .await;
    assert_eq!((status, &body["deleted"]), (200, &json!(true)), "{body}");
    let (status, body) = request(
        &server,
        reqwest::Method::GET,
        &format!("/v1/devices/{DEVICE}/labels"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["personalized"], &body["spans"]),
        (200, &json!(false), &json!([])),
        "{body}"
    );
    assert_eq!(server.metric("crossl_personal_heads", &[]).await, 0.0);
    device
        .send((44..52).flat_map(|k| signal_chunks(&core, DEVICE, t0, k, false)))
        .await;
    let later = device.until(t0 + 50 * SECOND).await;
    let fresh: Vec<_> = later
        .iter()
        .filter(|p| p.window_end_unix_nanos > t0 + 45 * SECOND)
        .collect();
    assert!(!fresh.is_empty());
    for p in fresh {
        assert!(!p.personalized && p.general.is_none(), "{p:?}");
        assert_ne!(p.label, x);
    }

    // Counted by outcome; personalised predictions counted.
    let text = server.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "crossl_label_requests_total",
            &[("outcome", "added")]
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &text,
            "crossl_label_requests_total",
            &[("outcome", "unknown_label")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "crossl_label_requests_total",
            &[("outcome", "outside_history")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "crossl_label_requests_total",
            &[("outcome", "no_windows_in_span")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &text,
            "crossl_label_requests_total",
            &[("outcome", "deleted")]
        ),
        1.0
    );
    assert!(metric_value(&text, "crossl_personalized_predictions_total", &[]) >= 12.0);
    assert!(metric_value(&text, "crossl_head_fit_seconds_count", &[]) >= 2.0);
    drop(device);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_routes_follow_api_key_scopes_and_device_globs() {
    let server = start(|a| {
        a.api_keys = vec![
            "mine:ingest,read:pers-*".into(),
            "theirs:ingest,read:other-*".into(),
            "viewer:read".into(),
        ];
    })
    .await;
    let body = json!({"label": "sitting", "start_unix_nanos": 0, "end_unix_nanos": SECOND});
    let path = format!("/v1/devices/{DEVICE}/labels");
    // Another device's key: refused before the handler, for every method.
    for method in [
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
    ] {
        let (status, err) = request(
            &server,
            method.clone(),
            &path,
            Some("theirs"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, &err["kind"]),
            (403, &json!("permission_denied")),
            "{method}: {err}"
        );
    }
    // A read-only key may read the labels but not change them.
    let (status, err) = request(
        &server,
        reqwest::Method::POST,
        &path,
        Some("viewer"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403, "{err}");
    let (status, err) = request(
        &server,
        reqwest::Method::DELETE,
        &path,
        Some("viewer"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{err}");
    let (status, got) = request(&server, reqwest::Method::GET, &path, Some("viewer"), None).await;
    assert_eq!(
        (status, &got["personalized"]),
        (200, &json!(false)),
        "{got}"
    );
    // No key at all.
    let (status, _) = request(
        &server,
        reqwest::Method::POST,
        &path,
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 401);
    // The device's own key gets through to the handler (a device that never streamed: 404).
    let (status, err) = request(
        &server,
        reqwest::Method::POST,
        &path,
        Some("mine"),
        Some(body),
    )
    .await;
    assert_eq!((status, &err["kind"]), (404, &json!("not_found")), "{err}");
    assert!(
        server
            .metric(
                "crossl_auth_failures_total",
                &[("reason", "device_not_allowed")]
            )
            .await
            >= 3.0
    );
    server.shutdown().await.expect("clean shutdown");
}
