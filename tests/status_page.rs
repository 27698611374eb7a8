//! The pages for people and what they read, over real sockets: the status page and its embedded assets
//! at `/` and `/ui/…`, Swagger UI at `/docs`, `GET /v1/status`, and the filtering and paging of
//! `GET /v1/devices` that keeps the page usable with thousands of devices.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use crossl_serve::app::Core;
use crossl_serve::ingest::{SensorChunk, Transport};

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// Pushes `seconds` of golden case `case` (its window repeated) for `device`, starting at `start`, one
/// chunk per modality and second.
fn stream_golden(core: &Core, device: &str, case: &GoldenCase, start: i64, seconds: usize) {
    for second in 0..seconds {
        for spec in &core.manifest.modalities {
            let Some(rows) = case.modalities.get(&spec.name) else {
                continue;
            };
            let per_second = spec.sample_rate_hz as usize;
            let samples: Vec<f32> = (0..per_second)
                .flat_map(|i| rows[(second * per_second + i) % rows.len()].clone())
                .collect();
            core.ingest
                .push(
                    Transport::Rest,
                    SensorChunk {
                        device_id: device.into(),
                        modality: spec.name.clone(),
                        start_unix_nanos: start + (second as i64) * 1_000_000_000,
                        samples,
                    },
                )
                .expect("chunk accepted");
        }
    }
}

/// One second of one modality, so that `device` is tracked (no window closes).
fn touch(core: &Core, device: &str) {
    let spec = &core.manifest.modalities[0];
    core.ingest
        .push(
            Transport::Rest,
            SensorChunk {
                device_id: device.into(),
                modality: spec.name.clone(),
                start_unix_nanos: now_nanos(),
                samples: vec![0.5; spec.channels],
            },
        )
        .expect("chunk accepted");
}

async fn wait_for_prediction(core: &Core, device: &str) {
    for _ in 0..600 {
        if core.store.latest(device).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no prediction for {device} within 60 s");
}

struct Page {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    /// After redirects.
    path: String,
    text: String,
}

async fn get_text(server: &TestServer, path: &str, key: Option<&str>) -> Page {
    let mut request = server.client.get(server.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let headers = response.headers().clone();
    Page {
        status: response.status().as_u16(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        path: response.url().path().to_string(),
        headers,
        text: response.text().await.expect("body"),
    }
}

#[tokio::test]
async fn page_assets_and_swagger_ui_are_served_without_a_key_and_the_data_needs_one() {
    let mut args = test_args(bundled_model());
    args.api_keys = vec!["reader:read".into(), "ward:read:ward-b-*".into()];
    let server = start(args).await;

    let page = get_text(&server, "/", None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.text.contains("/ui/app.js") && page.text.contains("/ui/app.css"));
    let csp = page
        .headers
        .get("content-security-policy")
        .expect("the page has a CSP")
        .to_str()
        .expect("ascii");
    assert!(csp.contains("default-src 'self'"), "{csp}");

    let page = get_text(&server, "/ui/app.js", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/javascript"),
        "{}",
        page.content_type
    );
    let js = page.text;
    // The page follows the live feed with the key in the query, as the WebSocket routes accept it.
    assert!(js.contains("/v1/ws/predictions") && js.contains("access_token"));
    assert!(js.contains("/v1/status") && js.contains("/v1/devices?"));
    let page = get_text(&server, "/ui/app.css", None).await;
    assert_eq!(
        (page.status, page.content_type.starts_with("text/css")),
        (200, true)
    );
    let (status, body) = server.get("/ui/missing.js").await;
    assert_eq!((status, body["kind"].as_str()), (404, Some("not_found")));

    // Swagger UI: /docs redirects to /docs/, the assets are embedded, and it loads /openapi.json.
    let docs = get_text(&server, "/docs", None).await;
    assert_eq!(docs.status, 200, "{}", docs.text);
    assert_eq!(docs.path, "/docs/");
    assert!(docs.text.contains("swagger-ui"), "{}", docs.text);
    let init = get_text(&server, "/docs/swagger-initializer.js", None).await;
    assert_eq!(init.status, 200);
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
    let bundle = get_text(&server, "/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(bundle.status, 200);
    assert!(
        bundle.content_type.contains("javascript"),
        "{}",
        bundle.content_type
    );
    assert!(
        bundle.text.len() > 100_000,
        "the Swagger UI bundle is embedded"
    );
    let (status, openapi) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/v1/status"]["get"].is_object());
    let device_params: Vec<&str> = openapi["paths"]["/v1/devices"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(device_params, ["prefix", "limit", "cursor", "latest"]);

    // The data behind the page needs the read scope.
    let (status, body) = server.get("/v1/status").await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (401, Some("unauthenticated"))
    );
    let page = get_text(&server, "/v1/status", Some("reader")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let text = server.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "crossl_auth_failures_total",
            &[("transport", "rest"), ("reason", "missing_key")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test]
async fn status_reports_provider_queue_compute_latency_and_shed_counts() {
    let server = start(test_args(bundled_model())).await;
    let (status, before) = server.get("/v1/status").await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["ready"], true);
    assert_eq!(before["phase"], "ready");
    assert_eq!(before["execution_provider"], "cpu");
    assert_eq!(before["sessions"], 1);
    assert_eq!(before["store"], "memory");
    assert_eq!(before["model"], server.core.manifest.name.as_str());
    assert_eq!(before["latency"]["end_to_end_stream"]["count"], 0);
    assert!(before["latency"]["end_to_end_stream"]["p50_seconds"].is_null());
    for reason in ["queue_full", "deadline", "shutdown", "inference_error"] {
        assert_eq!(before["windows_shed_total"][reason], 0, "{before}");
    }
    assert_eq!(before["requests_shed_total"]["concurrency_limit"], 0);

    let golden = golden(&bundled_model());
    stream_golden(&server.core, "status-1", &golden.cases[0], now_nanos(), 12);
    wait_for_prediction(&server.core, "status-1").await;
    let mut after = serde_json::Value::Null;
    for _ in 0..600 {
        after = server.get("/v1/status").await.1;
        if after["latency"]["end_to_end_stream"]["count"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let predictions = after["predictions_total"].as_u64().expect("count");
    assert!(predictions >= 1, "{after}");
    assert_eq!(after["active_devices"], 1);
    for part in ["queue_wait", "inference", "end_to_end_stream"] {
        let s = &after["latency"][part];
        assert!(s["count"].as_u64() >= Some(1), "{part}: {s}");
        let (p50, p99) = (
            s["p50_seconds"].as_f64().expect("p50"),
            s["p99_seconds"].as_f64().expect("p99"),
        );
        assert!(0.0 <= p50 && p50 <= p99 && p99 <= 10.0, "{part}: {s}");
        let mean = s["mean_seconds"].as_f64().expect("mean");
        let sum = s["sum_seconds"].as_f64().expect("sum");
        let count = s["count"].as_f64().expect("count");
        assert!((mean - sum / count).abs() < 1e-9, "{part}: {s}");
    }
    // The same counters /metrics exports.
    let text = server.metrics_text().await;
    let exported = metric_value(&text, "crossl_predictions_total", &[]).expect("exported");
    assert!(exported >= predictions as f64, "{exported} < {predictions}");
}

#[tokio::test]
async fn device_list_filters_by_prefix_pages_by_cursor_and_carries_the_latest_prediction() {
    let mut args = test_args(bundled_model());
    args.api_keys = vec!["reader:read".into(), "ward:read:ward-b-*".into()];
    let server = start(args).await;
    let core = &server.core;
    for i in 0..15 {
        touch(core, &format!("ward-a-{i:02}"));
    }
    for i in 0..6 {
        touch(core, &format!("ward-b-{i:02}"));
    }
    let golden = golden(&bundled_model());
    stream_golden(core, "ward-c-live", &golden.cases[0], now_nanos(), 12);
    wait_for_prediction(core, "ward-c-live").await;

    let get = |path: String, key: &'static str| {
        let client = server.client.clone();
        let url = server.url(&path);
        async move {
            let r = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["device_id"].as_str().expect("id").to_string())
            .collect()
    };

    // Everything, in id order (old clients see the same entries as before, plus total / next_cursor).
    let (status, all) = get("/v1/devices".into(), "reader").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 22);
    assert!(all["next_cursor"].is_null());
    let all_ids = ids(&all);
    let mut sorted = all_ids.clone();
    sorted.sort();
    assert_eq!(all_ids, sorted);
    assert!(
        all["devices"][0].get("latest").is_none(),
        "latest only on request"
    );

    // Pages of 4 under a prefix: every device once, in order, and the cursor ends.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/devices?prefix=ward-a-&limit=4".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(path, "reader").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 15);
        paged.extend(ids(&page));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "the cursor never ends");
    }
    assert_eq!(pages, 4);
    let expected: Vec<String> = (0..15).map(|i| format!("ward-a-{i:02}")).collect();
    assert_eq!(paged, expected);
    let (_, past_end) = get("/v1/devices?cursor=zzz&limit=5".into(), "reader").await;
    assert_eq!(
        (ids(&past_end).len(), past_end["total"].as_u64()),
        (0, Some(22))
    );
    assert!(past_end["next_cursor"].is_null());

    // The latest prediction, in brief; null for a device without one.
    let (_, live) = get("/v1/devices?prefix=ward-c&latest=true".into(), "reader").await;
    let latest = &live["devices"][0]["latest"];
    let full = core.store.latest("ward-c-live").expect("prediction");
    assert_eq!(latest["label"], full.label.as_str());
    let class = latest["class_index"].as_u64().expect("class") as usize;
    let confidence = latest["confidence"].as_f64().expect("confidence");
    assert!((confidence - f64::from(full.probabilities[class])).abs() < 1e-6);
    assert!(latest["window_end_unix_nanos"].as_i64() >= Some(0));
    assert!(
        latest["present_modalities"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    );
    let (_, quiet) = get("/v1/devices?prefix=ward-a-00&latest=true".into(), "reader").await;
    assert!(quiet["devices"][0]["latest"].is_null(), "{quiet}");
    assert!(quiet["devices"][0].get("latest").is_some());

    // A key bound to a glob pages within its own devices only.
    let (_, bound) = get("/v1/devices?limit=4".into(), "ward").await;
    assert_eq!(bound["total"], 6);
    assert_eq!(
        ids(&bound),
        ["ward-b-00", "ward-b-01", "ward-b-02", "ward-b-03"]
    );
    assert_eq!(bound["next_cursor"], "ward-b-03");

    // Bad paging is a clear 400, counted by route and status.
    for bad in ["limit=0", "limit=10001", "limit=x", "latest=maybe"] {
        let (status, body) = get(format!("/v1/devices?{bad}"), "reader").await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["kind"], "invalid_input", "{bad}: {body}");
    }
    let text = server.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "crossl_http_requests_total",
            &[("route", "/v1/devices"), ("status", "400")]
        )
        .is_some_and(|n| n >= 4.0),
        "{text}"
    );
}
