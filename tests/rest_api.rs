//! REST, KServe v2, error bodies and metrics against a real server with the bundled model.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

/// `/v1/predict` and `/v1/embed` match every golden case (PyTorch outputs) within the golden tolerance.
async fn check_parity(model: std::path::PathBuf) {
    let golden = golden(&model);
    let server = start(test_args(model.clone())).await;
    assert_eq!(
        golden.model_sha256, server.core.manifest.model_sha256,
        "golden.json is for another model.onnx"
    );
    assert!(
        golden.cases.len() >= 3,
        "{}: too few golden cases",
        model.display()
    );
    let tol = golden.tolerance.max(1e-6);
    for case in &golden.cases {
        let (status, body) = server
            .post_json("/v1/predict", &json!({ "modalities": case.modalities }))
            .await;
        assert_eq!(status, 200, "{}: {body}", case.name);
        let floats = |k: &str| -> Vec<f32> {
            serde_json::from_value(body[k].clone()).unwrap_or_else(|e| panic!("{k}: {e}"))
        };
        for (key, want) in [
            ("probabilities", &case.probabilities),
            ("logits", &case.logits),
            ("embedding", &case.embedding),
        ] {
            let d = max_abs_diff(&floats(key), want);
            assert!(d <= tol, "{}: {key} differs by {d} (> {tol})", case.name);
        }
        assert_eq!(body["label"], case.label.as_str(), "{}", case.name);
        let present: Vec<String> =
            serde_json::from_value(body["present"].clone()).expect("present");
        let want: Vec<String> = server
            .core
            .manifest
            .modalities
            .iter()
            .zip(&case.present)
            .filter(|(_, p)| **p == 1.0)
            .map(|(m, _)| m.name.clone())
            .collect();
        assert_eq!(present, want, "{}: present modalities", case.name);
        assert!(
            body["timing"]["end_to_end_seconds"]
                .as_f64()
                .is_some_and(|s| s > 0.0)
        );

        let (status, embedded) = server
            .post_json("/v1/embed", &json!({ "modalities": case.modalities }))
            .await;
        assert_eq!(status, 200, "{}: {embedded}", case.name);
        let embedding: Vec<f32> =
            serde_json::from_value(embedded["embedding"].clone()).expect("embedding");
        let d = max_abs_diff(&embedding, &case.embedding);
        assert!(
            d <= tol,
            "{}: /v1/embed differs by {d} (> {tol})",
            case.name
        );
        assert_eq!(embedded["present"], body["present"], "{}", case.name);
        assert!(embedded.get("label").is_none(), "embed answers no label");
    }
}

#[tokio::test]
async fn predict_matches_every_golden_case_of_the_bundled_model() {
    check_parity(bundled_model()).await;
}

#[tokio::test]
async fn predict_matches_golden_for_a_model_with_other_sensors_rates_and_classes() {
    check_parity(fixture_model()).await;
}

/// Case with most modalities present.
fn fullest_case(golden: &Golden) -> &GoldenCase {
    golden
        .cases
        .iter()
        .max_by_key(|c| c.modalities.len())
        .expect("a case")
}

#[tokio::test]
async fn omitted_modalities_are_absent_and_their_data_cannot_matter() {
    let model = bundled_model();
    let golden = golden(&model);
    let server = start(test_args(model)).await;
    let case = fullest_case(&golden);
    let names: Vec<String> = server
        .core
        .manifest
        .modalities
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let keep = &names[0];
    let mut one = HashMap::new();
    one.insert(keep.clone(), case.modalities[keep].clone());
    let (status, only) = server
        .post_json("/v1/predict", &json!({ "modalities": one }))
        .await;
    assert_eq!(status, 200, "{only}");
    assert_eq!(only["present"], json!([keep]));
    // v2 with every modality given but all except the first marked absent (and filled with junk) must
    // give the same answer: absent data is zeroed, and the graph ignores it anyway.
    let m = &server.core.manifest;
    let mut inputs = Vec::new();
    let mut present = vec![0.0f32; m.modalities.len()];
    present[0] = 1.0;
    for (i, spec) in m.modalities.iter().enumerate() {
        let data: Vec<f32> = if i == 0 {
            channel_major(&case.modalities[&spec.name], spec.channels)
        } else {
            vec![1.0e6; spec.channels * spec.window_samples]
        };
        inputs.push(json!({"name": spec.input, "datatype": "FP32", "shape": [1, spec.channels, spec.window_samples], "data": data}));
    }
    inputs.push(json!({"name": m.inputs.present, "datatype": "FP32", "shape": [1, m.modalities.len()], "data": present}));
    let (status, v2) = server
        .post_json(
            &format!("/v2/models/{}/infer", m.name),
            &json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(status, 200, "{v2}");
    let probs: Vec<f32> =
        serde_json::from_value(only["probabilities"].clone()).expect("probabilities");
    let v2_probs: Vec<f32> =
        serde_json::from_value(v2["outputs"][1]["data"].clone()).expect("v2 probabilities");
    assert!(
        max_abs_diff(&probs, &v2_probs) <= 1e-5,
        "{probs:?} vs {v2_probs:?}"
    );
}

/// Samples-major rows → channel-major flat (the ONNX layout).
fn channel_major(rows: &[Vec<f32>], channels: usize) -> Vec<f32> {
    (0..channels)
        .flat_map(|c| rows.iter().map(move |r| r[c]))
        .collect()
}

#[tokio::test]
async fn kserve_v2_metadata_readiness_and_batched_infer_match_golden() {
    let model = bundled_model();
    let golden = golden(&model);
    // Two sessions on two worker threads serve the batch's rows.
    let mut args = test_args(model);
    args.workers = 2;
    let server = start(args).await;
    assert_eq!(server.core.health().runtime.map(|r| r.sessions), Some(2));
    let m = server.core.manifest.clone();
    let (status, live) = server.get("/v2/health/live").await;
    assert_eq!((status, &live), (200, &json!({"live": true})));
    let (status, ready) = server.get("/v2/health/ready").await;
    assert_eq!((status, &ready), (200, &json!({"ready": true})));
    let (status, meta) = server.get(&format!("/v2/models/{}", m.name)).await;
    assert_eq!(status, 200);
    assert_eq!(
        meta["inputs"].as_array().map(Vec::len),
        Some(m.modalities.len() + 1)
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, m.classes.len()]));
    let (status, _) = server.get(&format!("/v2/models/{}/ready", m.name)).await;
    assert_eq!(status, 200);
    let (status, body) = server.get("/v2/models/nope").await;
    assert_error(status, &body, 404, "not_found");

    // Two golden cases as one batch of 2.
    let cases: Vec<&GoldenCase> = golden.cases.iter().take(2).collect();
    let mut inputs = Vec::new();
    for spec in &m.modalities {
        let mut data = Vec::new();
        for case in &cases {
            match case.modalities.get(&spec.name) {
                Some(rows) => data.extend(channel_major(rows, spec.channels)),
                None => data.extend(vec![0.0; spec.channels * spec.window_samples]),
            }
        }
        inputs.push(json!({"name": spec.input, "datatype": "FP32", "shape": [2, spec.channels, spec.window_samples], "data": data}));
    }
    let present: Vec<f32> = cases
        .iter()
        .flat_map(|c| c.present.iter().copied())
        .collect();
    inputs.push(json!({"name": m.inputs.present, "datatype": "FP32", "shape": [2, m.modalities.len()], "data": present}));
    let (status, body) = server
        .post_json(
            &format!("/v2/models/{}/infer", m.name),
            &json!({"id": "req-1", "inputs": inputs}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "req-1");
    let k = m.classes.len();
    let e = m.embedding_size;
    for (idx, (name, width)) in [
        (m.outputs.logits.clone(), k),
        (m.outputs.probabilities.clone(), k),
        (m.outputs.embedding.clone(), e),
    ]
    .into_iter()
    .enumerate()
    {
        let out = &body["outputs"][idx];
        assert_eq!(out["name"], name.as_str());
        assert_eq!(out["shape"], json!([2, width]));
        let data: Vec<f32> = serde_json::from_value(out["data"].clone()).expect("data");
        for (row, case) in cases.iter().enumerate() {
            let want = match idx {
                0 => &case.logits,
                1 => &case.probabilities,
                _ => &case.embedding,
            };
            let d = max_abs_diff(&data[row * width..(row + 1) * width], want);
            assert!(
                d <= golden.tolerance.max(1e-6),
                "{} row {row}: {name} differs by {d}",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_json_error_body() {
    let model = bundled_model();
    let golden = golden(&model);
    let mut args = test_args(model);
    args.max_body_bytes = 256 * 1024;
    let server = start(args).await;
    let m = server.core.manifest.clone();
    let spec = &m.modalities[0];
    let good_rows = fullest_case(&golden).modalities[&spec.name].clone();
    let with = |rows: serde_json::Value| json!({"modalities": {spec.name.clone(): rows}});

    // Wrong channel count.
    let mut rows = good_rows.clone();
    rows[3].pop();
    let (s, b) = server.post_json("/v1/predict", &with(json!(rows))).await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"].as_str().unwrap_or_default().contains("channels"),
        "{b}"
    );
    let (s, b) = server.post_json("/v1/embed", &with(json!(rows))).await;
    assert_error(s, &b, 400, "invalid_input");
    // Wrong length (one sample short).
    let (s, b) = server
        .post_json("/v1/predict", &with(json!(good_rows[1..])))
        .await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&spec.window_samples.to_string()),
        "{b}"
    );
    // Unknown modality.
    let (s, b) = server
        .post_json(
            "/v1/predict",
            &json!({"modalities": {"tail_acc": good_rows}}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"].as_str().unwrap_or_default().contains("tail_acc"),
        "{b}"
    );
    // Non-finite: JSON has no NaN/Inf literal, and 1e39 does not fit an f32: refused while parsing.
    let mut text = serde_json::to_string(&with(json!(good_rows))).expect("json");
    let first = serde_json::to_string(&good_rows[0][0]).expect("number");
    text = text.replacen(&first, "1e39", 1);
    let (s, b) = server.post_raw("/v1/predict", text.into_bytes()).await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("out of range"),
        "{b}"
    );
    // … and on the v2 path (parsed as f64, then checked as FP32) it is a non-finite value.
    let mut data = vec![0.0f64; spec.channels * spec.window_samples];
    data[5] = 1e39;
    let (s, b) = server
        .post_json(
            &format!("/v2/models/{}/infer", m.name),
            &json!({"inputs": [{"name": spec.input, "datatype": "FP32", "shape": [1, spec.channels, spec.window_samples], "data": data}]}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(
        b["error"].as_str().unwrap_or_default().contains("finite"),
        "{b}"
    );
    // A string where a number belongs, and JSON that does not parse.
    let mut rows = serde_json::to_value(&good_rows).expect("rows");
    rows[0][0] = json!("NaN");
    let (s, b) = server.post_json("/v1/predict", &with(rows)).await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) = server
        .post_raw("/v1/predict", b"{\"modalities\": [".to_vec())
        .await;
    assert_error(s, &b, 400, "invalid_input");
    // Body over --max-body-bytes.
    let huge = vec![b' '; 300 * 1024];
    let mut body = b"{\"modalities\": {}".to_vec();
    body.extend(huge);
    body.push(b'}');
    let (s, b) = server.post_raw("/v1/predict", body).await;
    assert_error(s, &b, 413, "payload_too_large");
    // v2: wrong shape, wrong datatype, unknown input.
    let url = format!("/v2/models/{}/infer", m.name);
    let (s, b) = server
        .post_json(&url, &json!({"inputs": [{"name": spec.input, "datatype": "FP32", "shape": [1, spec.channels + 1, spec.window_samples], "data": []}]}))
        .await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) = server
        .post_json(&url, &json!({"inputs": [{"name": spec.input, "datatype": "INT64", "shape": [1, spec.channels, spec.window_samples], "data": []}]}))
        .await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) = server
        .post_json(&url, &json!({"inputs": [{"name": "x_nope", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}))
        .await;
    assert_error(s, &b, 400, "invalid_input");
    // Unknown routes and devices.
    let (s, b) = server.get("/v1/devices/ghost").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = server.get("/v1/devices/ghost/prediction").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = server.get("/v1/devices/ghost/predictions?limit=5").await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = server.get("/v1/nothing-here").await;
    assert_error(s, &b, 404, "not_found");

    // Every refusal is counted by reason.
    let text = server.metrics_text().await;
    for reason in [
        "wrong_channels",
        "wrong_length",
        "unknown_modality",
        "non_finite",
        "bad_json",
    ] {
        let n = metric_value(
            &text,
            "crossl_predict_rejected_total",
            &[("transport", "rest"), ("reason", reason)],
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{reason} not counted:\n{text}");
    }
    assert!(
        metric_value(
            &text,
            "crossl_http_requests_total",
            &[("route", "/v1/predict"), ("status", "400")]
        )
        .is_some()
    );
}

#[tokio::test]
async fn model_endpoint_readiness_and_metrics_families() {
    let server = start(test_args(bundled_model())).await;
    let (status, model) = server.get("/v1/model").await;
    assert_eq!(status, 200);
    assert_eq!(
        model["manifest"]["name"],
        server.core.manifest.name.as_str()
    );
    assert_eq!(model["runtime"]["execution_provider"], "cpu");
    assert_eq!(model["runtime"]["sessions"], 1);
    assert_eq!(model["ready"], true);
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["execution_provider"], "cpu");
    let (status, live) = server.get("/healthz").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("live")));
    let (status, devices) = server.get("/v1/devices").await;
    assert_eq!(
        (status, &devices),
        (
            200,
            &json!({"devices": [], "total": 0, "next_cursor": null})
        )
    );
    let (status, _) = server.get("/openapi.json").await;
    assert_eq!(status, 200);

    let text = server.metrics_text().await;
    for family in [
        "crossl_samples_received_total",
        "crossl_chunks_rejected_total",
        "crossl_windows_emitted_total",
        "crossl_windows_absent_modalities",
        "crossl_predictions_total",
        "crossl_windows_shed_total",
        "crossl_batch_size",
        "crossl_queue_wait_seconds",
        "crossl_inference_seconds",
        "crossl_end_to_end_latency_seconds",
        "crossl_active_devices",
        "crossl_build_info",
        "crossl_http_requests_total",
        "crossl_window_samples_dropped_total",
        "crossl_window_events_total",
        "crossl_devices_evicted_total",
        "crossl_ready",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing from /metrics:\n{text}"
        );
    }
    let model_name = server.core.manifest.name.clone();
    assert_eq!(
        metric_value(
            &text,
            "crossl_build_info",
            &[("execution_provider", "cpu"), ("model", &model_name)]
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("device_id=") && !text.contains("device="),
        "no device-id labels"
    );
}
