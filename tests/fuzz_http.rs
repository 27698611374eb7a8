//! Fuzzing the JSON bodies of `/v1/predict`, `/v1/embed` and `/v2/models/{m}/infer` (issue 16, point 8)
//! through the real HTTP app (`api::http_app`, with its body limit and error mapping) via
//! `tower::ServiceExt::oneshot`: arbitrary bytes, arbitrary JSON values and near-valid bodies (real and
//! unknown modality/input names, ragged and short rows, numbers beyond f32, nulls and strings as samples,
//! OIP shapes from negative to i64::MAX, unknown datatypes, bodies over `--max-body-bytes`). Properties:
//! nothing panics; every answer is a success or a 4xx with a JSON `{"error": non-empty, "kind"}`; a success
//! carries finite numbers; and valid requests still succeed afterwards. `PROPTEST_CASES=N` fuzzes longer.

mod common;
mod fuzz_common;

use axum::body::Body;
use axum::http::{Method, Request, header};
use fuzz_common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const MAX_BODY: usize = 256 * 1024;

#[derive(Clone, Copy, Debug)]
enum Route {
    Predict,
    Embed,
    Infer,
    /// `/v2/models/{name}/infer` with a name that is not the model's.
    InferOtherModel,
}

impl Route {
    fn path(self) -> String {
        match self {
            Route::Predict => "/v1/predict".into(),
            Route::Embed => "/v1/embed".into(),
            Route::Infer => format!("/v2/models/{}/infer", manifest().name),
            Route::InferOtherModel => "/v2/models/not-the-model/infer".into(),
        }
    }
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        3 => Just(Route::Predict),
        2 => Just(Route::Embed),
        4 => Just(Route::Infer),
        1 => Just(Route::InferOtherModel),
    ]
}

/// A request body.
#[derive(Clone, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Json(Value),
    /// Larger than the body limit (413 expected).
    Oversized,
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Json(v) => serde_json::to_vec(v).expect("serialises"),
            Payload::Oversized => {
                let mut b = b"{\"modalities\": {\"torso_acc\": [".to_vec();
                while b.len() <= MAX_BODY {
                    b.extend_from_slice(b"[1.0, 2.0, 3.0],");
                }
                b.extend_from_slice(b"[1.0, 2.0, 3.0]]}}");
                b
            }
        }
    }
}

/// Rows for one modality: the right count and width most of the time, otherwise short, long or ragged.
fn window_rows() -> impl Strategy<Value = Value> {
    let spec = &manifest().modalities[0];
    let (w, c) = (spec.window_samples, spec.channels);
    (
        prop_oneof![6 => Just(w), 1 => Just(0), 1 => Just(1), 1 => Just(w - 1), 1 => Just(w + 1), 1 => 0..w + 8],
        prop_oneof![8 => Just(c), 1 => 0..c + 3],
    )
        .prop_flat_map(|(rows, channels)| json_rows(rows, channels))
}

/// `{"modalities": {name: rows}}` with real and made-up names, sometimes with extra fields.
fn predict_body() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec((modality_name(), window_rows()), 0..4),
        proptest::option::of((json_key(), json_value())),
    )
        .prop_map(|(modalities, extra)| {
            let mut body = json!({
                "modalities": Value::Object(modalities.into_iter().collect()),
            });
            if let Some((k, v)) = extra {
                body[k] = v;
            }
            body
        })
}

/// One OIP dimension: the right ones mostly, then 0, negative, huge.
fn dim() -> impl Strategy<Value = i64> {
    let spec = &manifest().modalities[0];
    prop_oneof![
        3 => Just(1i64),
        2 => Just(spec.channels as i64),
        2 => Just(spec.window_samples as i64),
        1 => Just(manifest().modalities.len() as i64),
        1 => Just(2i64),
        1 => Just(0i64),
        1 => Just(-1i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ]
}

/// An OIP input: a real or made-up name, a shape near the expected one, a datatype, and data whose length
/// matches the shape (when it is small), is random, or is not numbers at all.
fn infer_input() -> impl Strategy<Value = Value> {
    let m = manifest();
    let mut names: Vec<String> = m.modalities.iter().map(|s| s.input.clone()).collect();
    names.push(m.inputs.present.clone());
    let name = prop_oneof![6 => proptest::sample::select(names), 1 => ".{0,12}"];
    let spec = &m.modalities[0];
    let expected = vec![1i64, spec.channels as i64, spec.window_samples as i64];
    let shape = prop_oneof![
        4 => Just(expected),
        1 => (1i64..3).prop_map(|b| vec![b, m.modalities.len() as i64]),
        3 => proptest::collection::vec(dim(), 0..5),
    ];
    let datatype = prop_oneof![
        6 => Just("FP32".to_string()),
        1 => Just("FP64".to_string()),
        1 => Just("INT64".to_string()),
        1 => Just("BYTES".to_string()),
        1 => ".{0,6}",
    ];
    (name, shape, datatype, any::<u8>(), json_value(), proptest::bool::ANY).prop_flat_map(
        |(name, shape, datatype, how, junk, nested)| {
            let len = shape
                .iter()
                .try_fold(1i64, |acc, &d| if d < 0 { None } else { acc.checked_mul(d) })
                .filter(|&n| n <= 1200)
                .map(|n| n as usize);
            let data = match (len, how % 8) {
                (Some(n), 0..=5) => json_rows(1, n)
                    .prop_map(move |rows| {
                        // Flat, or nested per shape row (the endpoint flattens nested arrays).
                        if nested { rows } else { rows[0].clone() }
                    })
                    .boxed(),
                (_, 6) => Just(junk).boxed(),
                _ => (0usize..20).prop_flat_map(|n| json_rows(1, n)).prop_map(|r| r[0].clone()).boxed(),
            };
            (Just(name), Just(shape), Just(datatype), data).prop_map(|(name, shape, datatype, data)| {
                json!({"name": name, "shape": shape, "datatype": datatype, "data": data})
            })
        },
    )
}

fn infer_body() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(infer_input(), 0..5),
        proptest::option::of(prop_oneof![".{0,8}".prop_map(Value::String), json_value()]),
    )
        .prop_map(|(inputs, id)| {
            let mut body = json!({ "inputs": inputs });
            if let Some(id) = id {
                body["id"] = id;
            }
            body
        })
}

fn body() -> impl Strategy<Value = Payload> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Payload::Bytes),
        3 => json_value().prop_map(Payload::Json),
        5 => predict_body().prop_map(Payload::Json),
        5 => infer_body().prop_map(Payload::Json),
        1 => Just(Payload::Oversized),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        8 => Just(Some("application/json")),
        1 => Just(Some("text/plain")),
        1 => Just(None),
    ]
}

async fn post(
    app: &axum::Router,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut request = Request::builder().method(Method::POST).uri(path);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let request = request.body(Body::from(body)).expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .expect("response body");
    (status, bytes.to_vec())
}

/// A success must not carry made-up numbers: every float in the answer is finite (JSON null is how
/// serde_json writes NaN/Inf).
fn check_success(route: Route, body: &[u8]) -> Result<(), TestCaseError> {
    let json: Value = serde_json::from_slice(body).expect("checked JSON");
    let arrays: Vec<&Value> = match route {
        Route::Predict => vec![&json["probabilities"], &json["logits"], &json["embedding"]],
        Route::Embed => vec![&json["embedding"]],
        Route::Infer | Route::InferOtherModel => json["outputs"]
            .as_array()
            .map(|o| o.iter().map(|t| &t["data"]).collect())
            .unwrap_or_default(),
    };
    prop_assert!(!arrays.is_empty(), "success without outputs: {json}");
    for a in arrays {
        let values = a.as_array();
        prop_assert!(
            values.is_some_and(
                |v| !v.is_empty() && v.iter().all(|x| x.as_f64().is_some_and(f64::is_finite))
            ),
            "success with missing or non-finite outputs: {json}"
        );
    }
    Ok(())
}

#[test]
fn fuzzed_bodies_get_a_success_or_a_4xx_json_error_and_valid_requests_still_succeed() {
    let rt = runtime();
    let server = rt.block_on(async {
        let mut args = common::test_args(common::bundled_model());
        args.max_body_bytes = MAX_BODY;
        common::start(args).await
    });
    let app = crossl_serve::api::http_app(server.core.clone());
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    run(
        "bodies → HTTP app",
        192,
        (route(), body(), content_type()),
        |(route, body, content_type)| {
            let (status, answer) =
                rt.block_on(post(&app, &route.path(), content_type, body.bytes()));
            check_http_answer(status, &answer)?;
            if (200..300).contains(&status) {
                check_success(route, &answer)?;
            }
            // (A wrong content type or model name is refused before the body counts.)
            if matches!(body, Payload::Oversized)
                && content_type == Some("application/json")
                && !matches!(route, Route::InferOtherModel)
            {
                prop_assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
            }
            *statuses.lock().unwrap().entry(status).or_default() += 1;
            Ok(())
        },
    );
    eprintln!("fuzzed bodies by status: {:?}", statuses.lock().unwrap());

    // No poisoned state: valid requests still succeed, through the router and over the real socket.
    let m = manifest();
    let golden = common::golden(&common::bundled_model());
    let case = golden
        .cases
        .iter()
        .max_by_key(|c| c.modalities.len())
        .expect("a golden case");
    let predict = json!({ "modalities": case.modalities });
    let inputs: Vec<Value> = m
        .modalities
        .iter()
        .filter_map(|spec| {
            let rows = case.modalities.get(&spec.name)?;
            let data: Vec<f32> = (0..spec.channels)
                .flat_map(|c| rows.iter().map(move |r| r[c]))
                .collect();
            Some(json!({"name": spec.input, "datatype": "FP32", "shape": [1, spec.channels, spec.window_samples], "data": data}))
        })
        .collect();
    let infer = json!({ "inputs": inputs });
    rt.block_on(async {
        for (route, body) in [
            (Route::Predict, &predict),
            (Route::Embed, &predict),
            (Route::Infer, &infer),
        ] {
            let (status, answer) = post(
                &app,
                &route.path(),
                Some("application/json"),
                serde_json::to_vec(body).unwrap(),
            )
            .await;
            assert_eq!(
                status,
                200,
                "{route:?} after fuzzing: {}",
                String::from_utf8_lossy(&answer)
            );
            let (status, answer) = server.post_json(&route.path(), body).await;
            assert_eq!(status, 200, "{route:?} over the socket: {answer}");
        }
        let (status, _) = server.get("/readyz").await;
        assert_eq!(status, 200);
    });
}
