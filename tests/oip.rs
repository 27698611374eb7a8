//! The Open Inference Protocol over real sockets: HTTP (`GET /v2`, versioned model paths, output
//! selection, the request id) and gRPC `inference.GRPCInferenceService` (tonic client: health, metadata,
//! ModelInfer with typed and raw contents against the golden cases, UNIMPLEMENTED methods, auth scopes and
//! the one-shot admission shared with HTTP).

// The gate is a std Mutex because backends run on OS threads; the test holds it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

#[path = "support/gated_backend.rs"]
mod gated_backend;
mod streaming;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossl_serve::app::Hooks;
use crossl_serve::model::Manifest;
use crossl_serve::proto::inference as pb;
use crossl_serve::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde::Deserialize;
use serde_json::json;
use streaming::*;
use tonic::transport::Channel;

#[derive(Debug, Deserialize)]
struct GoldenCase {
    name: String,
    /// Samples-major rows per modality.
    modalities: HashMap<String, Vec<Vec<f32>>>,
    present: Vec<f32>,
    label: String,
    logits: Vec<f32>,
    probabilities: Vec<f32>,
    embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Golden {
    tolerance: f32,
    cases: Vec<GoldenCase>,
}

fn golden() -> Golden {
    let text =
        std::fs::read_to_string(repo_path("models/crossl-dsads/golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The cases as OIP tensors: per modality input `[rows, channels, window_samples]` (channel-major per
/// row), then `present` `[rows, n_modalities]` in manifest order.
fn tensors(m: &Manifest, cases: &[&GoldenCase]) -> Vec<(String, Vec<i64>, Vec<f32>)> {
    let rows = cases.len() as i64;
    let mut out = Vec::new();
    for spec in &m.modalities {
        let mut data = Vec::new();
        for case in cases {
            match case.modalities.get(&spec.name) {
                Some(samples) => {
                    for c in 0..spec.channels {
                        data.extend(samples.iter().map(|s| s[c]));
                    }
                }
                None => data.extend(vec![0.0; spec.window_len()]),
            }
        }
        out.push((
            spec.input.clone(),
            vec![rows, spec.channels as i64, spec.window_samples as i64],
            data,
        ));
    }
    out.push((
        m.inputs.present.clone(),
        vec![rows, m.modalities.len() as i64],
        cases.iter().flat_map(|c| c.present.clone()).collect(),
    ));
    out
}

fn json_inputs(m: &Manifest, cases: &[&GoldenCase]) -> serde_json::Value {
    tensors(m, cases)
        .into_iter()
        .map(|(name, shape, data)| json!({"name": name, "datatype": "FP32", "shape": shape, "data": data}))
        .collect()
}

fn pb_inputs(
    m: &Manifest,
    cases: &[&GoldenCase],
    raw: bool,
) -> (Vec<pb::model_infer_request::InferInputTensor>, Vec<Vec<u8>>) {
    let mut raw_contents = Vec::new();
    let inputs = tensors(m, cases)
        .into_iter()
        .map(|(name, shape, data)| {
            let contents = if raw {
                raw_contents.push(data.iter().flat_map(|v| v.to_le_bytes()).collect());
                None
            } else {
                Some(pb::InferTensorContents {
                    fp32_contents: data,
                    ..Default::default()
                })
            };
            pb::model_infer_request::InferInputTensor {
                name,
                datatype: "FP32".into(),
                shape,
                parameters: Default::default(),
                contents,
            }
        })
        .collect();
    (inputs, raw_contents)
}

async fn http_get(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{}{path}", server.http_url()))
        .await
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn http_post(
    server: &TestServer,
    path: &str,
    body: &serde_json::Value,
    extra_header: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.http_url()))
        .json(body);
    if let Some((k, v)) = extra_header {
        request = request.header(k, v);
    }
    let r = request.send().await.expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    serde_json::from_value(v.clone()).expect("floats")
}

#[tokio::test]
async fn http_server_metadata_versioned_paths_output_selection_and_request_id() {
    let server = start(|_| {}).await;
    let m = server.core.manifest.clone();
    let golden = golden();
    let tol = golden.tolerance.max(1e-6);

    let (status, meta) = http_get(&server, "/v2").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "crossl-serve");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["extensions"].is_array(), "{meta}");

    let versioned = format!("/v2/models/{}/versions/{}", m.name, m.version);
    let (status, model) = http_get(&server, &versioned).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["versions"], json!([m.version]));
    let names: Vec<String> = model["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut want: Vec<String> = m.modalities.iter().map(|s| s.input.clone()).collect();
    want.push(m.inputs.present.clone());
    assert_eq!(names, want, "inputs in manifest order, then present");
    let (status, _) = http_get(&server, &format!("{versioned}/ready")).await;
    assert_eq!(status, 200);

    // An unknown version is a 404 with the JSON error body, on every versioned route.
    let unknown = format!("/v2/models/{}/versions/0.0.0-nope", m.name);
    for path in [unknown.clone(), format!("{unknown}/ready")] {
        let (status, body) = http_get(&server, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["kind"], "not_found", "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(&m.version),
            "{body}"
        );
    }

    // The fullest golden case through the versioned infer route, asking for probabilities only.
    let case = golden
        .cases
        .iter()
        .max_by_key(|c| c.modalities.len())
        .expect("a golden case");
    let body = json!({
        "id": "req-42",
        "inputs": json_inputs(&m, &[case]),
        "outputs": [{"name": m.outputs.probabilities, "parameters": {"binary_data": false}}],
    });
    let (status, answer) = http_post(&server, &format!("{versioned}/infer"), &body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "req-42");
    assert_eq!(answer["model_version"], m.version.as_str());
    let outputs = answer["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 1, "only the selected output: {answer}");
    assert_eq!(outputs[0]["name"], m.outputs.probabilities.as_str());
    assert_eq!(outputs[0]["shape"], json!([1, m.classes.len()]));
    let probabilities = floats(&outputs[0]["data"]);
    let d = max_abs_diff(&probabilities, &case.probabilities);
    assert!(d <= tol, "{}: probabilities differ by {d}", case.name);
    let best = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("classes");
    assert_eq!(m.classes[best], case.label);

    // OIP clients (tritonclient) send no content type: the body is read as JSON all the same; another
    // content type is refused.
    let body =
        json!({"inputs": json_inputs(&m, &[case]), "outputs": [{"name": m.outputs.probabilities}]});
    let url = format!("{}{versioned}/infer", server.http_url());
    let r = reqwest::Client::new()
        .post(&url)
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .await
        .expect("POST without content type");
    assert_eq!(r.status().as_u16(), 200);
    let answer: serde_json::Value = r.json().await.expect("JSON");
    let d = max_abs_diff(&floats(&answer["outputs"][0]["data"]), &case.probabilities);
    assert!(d <= tol, "probabilities differ by {d}");
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .await
        .expect("POST as text");
    assert_eq!(r.status().as_u16(), 400);

    // Two outputs, in the order asked; the unversioned route takes `outputs` too.
    let body = json!({
        "inputs": json_inputs(&m, &[case]),
        "outputs": [{"name": m.outputs.embedding}, {"name": m.outputs.logits}],
    });
    let (status, answer) = http_post(
        &server,
        &format!("/v2/models/{}/infer", m.name),
        &body,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("id").is_none(), "no id asked, none echoed");
    assert_eq!(answer["outputs"][0]["name"], m.outputs.embedding.as_str());
    assert_eq!(answer["outputs"][1]["name"], m.outputs.logits.as_str());
    let d = max_abs_diff(&floats(&answer["outputs"][1]["data"]), &case.logits);
    assert!(d <= tol, "logits differ by {d}");
    let d = max_abs_diff(&floats(&answer["outputs"][0]["data"]), &case.embedding);
    assert!(d <= tol, "embedding differs by {d}");

    // Refusals: an unknown output (400), an unknown version (404), binary tensor data (400); counted.
    let before = server
        .metric(
            "crossl_predict_rejected_total",
            &[("transport", "rest"), ("reason", "unknown_output")],
        )
        .await;
    let body = json!({"inputs": json_inputs(&m, &[case]), "outputs": [{"name": "softmax"}]});
    let (status, err) = http_post(&server, &format!("{versioned}/infer"), &body, None).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["kind"], "invalid_input");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or_default()
            .contains("softmax"),
        "{err}"
    );
    let after = server
        .metric(
            "crossl_predict_rejected_total",
            &[("transport", "rest"), ("reason", "unknown_output")],
        )
        .await;
    assert_eq!(after - before, 1.0);
    let (status, err) = http_post(&server, &format!("{unknown}/infer"), &body, None).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["kind"], "not_found");
    let (status, err) = http_post(
        &server,
        &format!("{versioned}/infer"),
        &json!({"inputs": json_inputs(&m, &[case])}),
        Some(("inference-header-content-length", "123")),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or_default()
            .contains("binary tensor data"),
        "{err}"
    );
}

async fn oip_client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(server.channel().await)
}

fn infer_request(
    m: &Manifest,
    cases: &[&GoldenCase],
    raw: bool,
    outputs: &[&str],
) -> pb::ModelInferRequest {
    let (inputs, raw_input_contents) = pb_inputs(m, cases, raw);
    pb::ModelInferRequest {
        model_name: m.name.clone(),
        model_version: String::new(),
        id: "grpc-1".into(),
        parameters: Default::default(),
        inputs,
        outputs: outputs
            .iter()
            .map(|name| pb::model_infer_request::InferRequestedOutputTensor {
                name: name.to_string(),
                parameters: Default::default(),
            })
            .collect(),
        raw_input_contents,
    }
}

fn le_floats(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[tokio::test]
async fn grpc_inference_service_health_metadata_and_infer_match_golden() {
    let server = start(|_| {}).await;
    let m = server.core.manifest.clone();
    let golden = golden();
    let tol = golden.tolerance.max(1e-6);
    let mut client = oip_client(&server).await;

    let live = client
        .server_live(pb::ServerLiveRequest {})
        .await
        .expect("ServerLive");
    assert!(live.into_inner().live);
    let ready = client
        .server_ready(pb::ServerReadyRequest {})
        .await
        .expect("ServerReady");
    assert!(ready.into_inner().ready);
    let meta = client
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .expect("ServerMetadata")
        .into_inner();
    assert_eq!(meta.name, "crossl-serve");
    assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
    for version in [String::new(), m.version.clone()] {
        let ready = client
            .model_ready(pb::ModelReadyRequest {
                name: m.name.clone(),
                version: version.clone(),
            })
            .await
            .expect("ModelReady");
        assert!(ready.into_inner().ready, "version {version:?}");
        let model = client
            .model_metadata(pb::ModelMetadataRequest {
                name: m.name.clone(),
                version,
            })
            .await
            .expect("ModelMetadata")
            .into_inner();
        assert_eq!(model.versions, vec![m.version.clone()]);
        assert_eq!(model.inputs.len(), m.modalities.len() + 1);
        assert_eq!(model.inputs[0].shape, vec![-1, 3, 125]);
        assert_eq!(model.outputs[1].name, m.outputs.probabilities);
    }
    let missing = client
        .model_metadata(pb::ModelMetadataRequest {
            name: m.name.clone(),
            version: "0.0.0-nope".into(),
        })
        .await
        .expect_err("unknown version");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let missing = client
        .model_ready(pb::ModelReadyRequest {
            name: "other".into(),
            version: String::new(),
        })
        .await
        .expect_err("unknown model");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Two golden cases as one batch, typed contents: every output, as fp32_contents.
    let cases: Vec<&GoldenCase> = golden.cases.iter().take(2).collect();
    let answer = client
        .model_infer(infer_request(&m, &cases, false, &[]))
        .await
        .expect("ModelInfer")
        .into_inner();
    assert_eq!(answer.id, "grpc-1");
    assert_eq!(answer.model_version, m.version);
    assert!(answer.raw_output_contents.is_empty());
    assert_eq!(answer.outputs.len(), 3);
    for (out, (name, width)) in answer.outputs.iter().zip([
        (&m.outputs.logits, m.classes.len()),
        (&m.outputs.probabilities, m.classes.len()),
        (&m.outputs.embedding, m.embedding_size),
    ]) {
        assert_eq!(&out.name, name);
        assert_eq!(out.datatype, "FP32");
        assert_eq!(out.shape, vec![2, width as i64]);
        let data = &out.contents.as_ref().expect("typed contents").fp32_contents;
        for (row, case) in cases.iter().enumerate() {
            let want = if *name == m.outputs.logits {
                &case.logits
            } else if *name == m.outputs.probabilities {
                &case.probabilities
            } else {
                &case.embedding
            };
            let d = max_abs_diff(&data[row * width..(row + 1) * width], want);
            assert!(d <= tol, "{} {name}: differs by {d}", case.name);
        }
    }

    // Raw inputs: raw outputs, and only the one selected.
    let answer = client
        .model_infer(infer_request(
            &m,
            &cases,
            true,
            &[m.outputs.probabilities.as_str()],
        ))
        .await
        .expect("ModelInfer raw")
        .into_inner();
    assert_eq!(answer.outputs.len(), 1);
    assert!(answer.outputs[0].contents.is_none());
    assert_eq!(answer.raw_output_contents.len(), 1);
    let k = m.classes.len();
    let probabilities = le_floats(&answer.raw_output_contents[0]);
    for (row, case) in cases.iter().enumerate() {
        let d = max_abs_diff(&probabilities[row * k..(row + 1) * k], &case.probabilities);
        assert!(d <= tol, "{} raw probabilities differ by {d}", case.name);
    }

    // Refusals are INVALID_ARGUMENT / NOT_FOUND with a message, and counted.
    let e = client
        .model_infer(infer_request(&m, &cases, false, &["softmax"]))
        .await
        .expect_err("unknown output");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("softmax"), "{e:?}");
    let mut request = infer_request(&m, &cases, true, &[]);
    request.raw_input_contents.pop();
    let e = client
        .model_infer(request)
        .await
        .expect_err("raw contents short by one");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("raw_input_contents"), "{e:?}");
    let mut request = infer_request(&m, &cases, false, &[]);
    request.inputs[0].shape = vec![2, 3, 100];
    let e = client.model_infer(request).await.expect_err("wrong shape");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let mut request = infer_request(&m, &cases, false, &[]);
    request.model_version = "9.9.9".into();
    let e = client
        .model_infer(request)
        .await
        .expect_err("unknown version");
    assert_eq!(e.code(), tonic::Code::NotFound);
    for reason in ["unknown_output", "wrong_length", "wrong_shape", "not_found"] {
        let n = server
            .metric(
                "crossl_predict_rejected_total",
                &[("transport", "grpc"), ("reason", reason)],
            )
            .await;
        assert_eq!(n, 1.0, "{reason}");
    }

    // A method of Triton's superset: UNIMPLEMENTED, with a message naming what is served.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("channel ready");
    let e = grpc
        .unary(
            tonic::Request::new(pb::ServerLiveRequest {}),
            "/inference.GRPCInferenceService/ModelConfig"
                .parse()
                .expect("path"),
            tonic_prost::ProstCodec::<pb::ServerLiveRequest, pb::ServerLiveResponse>::default(),
        )
        .await
        .expect_err("not served");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    assert!(
        e.message().contains("ModelConfig") && e.message().contains("ModelInfer"),
        "{e:?}"
    );
}

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("metadata"),
    );
    request
}

#[tokio::test]
async fn grpc_inference_service_checks_api_key_scopes() {
    let server = start(|args| {
        args.api_keys = vec!["reader:read".into(), "writer:ingest,read".into()];
    })
    .await;
    let m = server.core.manifest.clone();
    let golden = golden();
    let case = &golden.cases[0];
    let mut client = oip_client(&server).await;

    // Health and server metadata are open.
    client
        .server_live(pb::ServerLiveRequest {})
        .await
        .expect("ServerLive without a key");
    client
        .model_ready(pb::ModelReadyRequest {
            name: m.name.clone(),
            version: String::new(),
        })
        .await
        .expect("ModelReady without a key");
    client
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .expect("ServerMetadata without a key");
    // Model metadata needs `read`.
    let metadata = || pb::ModelMetadataRequest {
        name: m.name.clone(),
        version: String::new(),
    };
    let e = client.model_metadata(metadata()).await.expect_err("no key");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    client
        .model_metadata(with_key(metadata(), "reader"))
        .await
        .expect("reader reads metadata");
    // Inference needs `ingest`.
    let e = client
        .model_infer(infer_request(&m, &[case], false, &[]))
        .await
        .expect_err("no key");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = client
        .model_infer(with_key(infer_request(&m, &[case], false, &[]), "reader"))
        .await
        .expect_err("read scope only");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = client
        .model_infer(with_key(infer_request(&m, &[case], false, &[]), "nobody"))
        .await
        .expect_err("unknown key");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let answer = client
        .model_infer(with_key(infer_request(&m, &[case], false, &[]), "writer"))
        .await
        .expect("writer infers")
        .into_inner();
    assert_eq!(answer.outputs.len(), 3);
    for (reason, n) in [
        ("missing_key", 2.0),
        ("missing_scope", 1.0),
        ("wrong_key", 1.0),
    ] {
        let counted = server
            .metric(
                "crossl_auth_failures_total",
                &[("transport", "grpc"), ("reason", reason)],
            )
            .await;
        assert_eq!(counted, n, "{reason}");
    }
}

#[tokio::test]
async fn grpc_infer_shares_the_per_client_one_shot_limit_with_http() {
    let gate = Arc::new(Mutex::new(()));
    let mut model_args = crossl_serve::config::ServeArgs::defaults();
    model_args.model = repo_path("models/crossl-dsads");
    let server = start_with_hooks(
        |args| args.max_requests_per_client = 1,
        Hooks {
            backend_factory: Some(gated_backend::gated_factory(&model_args, Arc::clone(&gate))),
            clock: None,
        },
    )
    .await;
    let m = server.core.manifest.clone();
    let golden = golden();
    let case = &golden.cases[0];

    // Inference held: the first request stays in flight, holding this client's only place.
    let held = gate.lock().expect("gate");
    let mut first_client = oip_client(&server).await;
    let request = infer_request(&m, &[case], false, &[]);
    let first = tokio::spawn(async move { first_client.model_infer(request).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.core.clients.clients() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first request never got its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same client (127.0.0.1, auth off) is refused at once, over gRPC and over HTTP.
    let e = oip_client(&server)
        .await
        .model_infer(infer_request(&m, &[case], false, &[]))
        .await
        .expect_err("second request of the client");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    let (status, body) = http_post(
        &server,
        &format!("/v2/models/{}/infer", m.name),
        &json!({"inputs": json_inputs(&m, &[case])}),
        None,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("the held request finishes")
        .expect("task")
        .expect("first request answered")
        .into_inner();
    assert_eq!(answer.outputs.len(), 3);
    let refused = server
        .metric(
            "crossl_predict_rejected_total",
            &[("transport", "grpc"), ("reason", "concurrency_limit")],
        )
        .await;
    assert_eq!(refused, 1.0);
}
