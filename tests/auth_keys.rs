//! API keys and scopes over real sockets, on REST, WebSocket and gRPC: off by default; with keys, a
//! missing or wrong key is 401/UNAUTHENTICATED, a key without the scope is 403/PERMISSION_DENIED, health,
//! readiness, OpenAPI, gRPC health/reflection and /metrics stay open; failures are counted by reason.

mod streaming;

use std::time::Duration;

use crossl_serve::proto;
use crossl_serve::proto::ingest_client::IngestClient;
use crossl_serve::proto::predictions_client::PredictionsClient;
use streaming::*;
use tokio_tungstenite::tungstenite;
use tonic::Code;
use tonic::transport::Channel;

const KEYS: [&str; 3] = ["dev-key:ingest", "dash-key:read", "ops-key:ingest,read"];

async fn rest_get(server: &TestServer, path: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.http_url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

async fn rest_predict(server: &TestServer, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/predict", server.http_url()))
        .json(&serde_json::json!({"modalities": {}}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

fn with_key<T>(mut request: tonic::Request<T>, key: Option<&str>) -> tonic::Request<T> {
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

async fn grpc_stream_code(
    client: &mut IngestClient<Channel>,
    key: Option<&str>,
) -> Result<(), Code> {
    let requests = futures::stream::iter([hello_request("auth-dev", &[])]);
    client
        .stream(with_key(tonic::Request::new(requests), key))
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

async fn grpc_latest_code(client: &mut PredictionsClient<Channel>, key: Option<&str>) -> Code {
    let request = with_key(
        tonic::Request::new(proto::LatestRequest {
            device_id: "nobody".into(),
        }),
        key,
    );
    client
        .latest(request)
        .await
        .expect_err("no prediction for nobody")
        .code()
}

/// HTTP status of a refused WebSocket upgrade, or 101 when it was accepted.
async fn ws_status(url: &str, key: Option<&str>) -> u16 {
    match ws_connect(url, key).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected WebSocket error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_everything_is_open() {
    let server = start(|_| {}).await;
    assert_eq!(rest_get(&server, "/v1/devices", None).await.0, 200);
    let mut ingest = server.ingest().await;
    assert_eq!(grpc_stream_code(&mut ingest, None).await, Ok(()));
    assert_eq!(
        grpc_latest_code(&mut server.predictions().await, None).await,
        Code::NotFound
    );
    assert_eq!(
        ws_status(&server.ws_url("/v1/ws/devices/open-dev"), None).await,
        101
    );
    assert_eq!(
        ws_status(&server.ws_url("/v1/ws/predictions"), None).await,
        101
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requires_the_right_scope() {
    let server = start(|a| a.api_keys = KEYS.iter().map(|k| k.to_string()).collect()).await;
    let (status, body) = rest_get(&server, "/v1/devices", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["kind"], "unauthenticated", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("Bearer")),
        "{body}"
    );
    assert_eq!(rest_get(&server, "/v1/devices", Some("nope")).await.0, 401);
    let (status, body) = rest_get(&server, "/v1/devices", Some("dev-key")).await;
    assert_eq!(status, 403);
    assert_eq!(body["kind"], "permission_denied", "{body}");
    assert_eq!(
        rest_get(&server, "/v1/devices", Some("dash-key")).await.0,
        200
    );
    assert_eq!(
        rest_get(&server, "/v1/devices", Some("ops-key")).await.0,
        200
    );
    assert_eq!(
        rest_get(&server, "/v1/model", Some("dash-key")).await.0,
        200
    );
    // Predict needs `ingest`: with the key it gets past auth (an empty window is a 400, not a 401/403).
    assert_eq!(rest_predict(&server, None).await, 401);
    assert_eq!(rest_predict(&server, Some("dash-key")).await, 403);
    let status = rest_predict(&server, Some("dev-key")).await;
    assert!(status != 401 && status != 403, "{status}");
    // Health, readiness and the OpenAPI document stay open; so does /metrics on its own port.
    for path in ["/healthz", "/readyz", "/openapi.json", "/v2/health/ready"] {
        assert_eq!(rest_get(&server, path, None).await.0, 200, "{path}");
    }
    let text = server.metrics_text().await;
    for (reason, count) in [
        ("missing_key", 2.0),
        ("wrong_key", 1.0),
        ("missing_scope", 2.0),
    ] {
        assert_eq!(
            metric_value(
                &text,
                "crossl_auth_failures_total",
                &[("transport", "rest"), ("reason", reason)]
            ),
            count,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requires_the_right_scope_and_health_and_reflection_stay_open() {
    let server = start(|a| a.api_keys = KEYS.iter().map(|k| k.to_string()).collect()).await;
    let mut ingest = server.ingest().await;
    assert_eq!(
        grpc_stream_code(&mut ingest, None).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        grpc_stream_code(&mut ingest, Some("wrong")).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        grpc_stream_code(&mut ingest, Some("dash-key")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(grpc_stream_code(&mut ingest, Some("dev-key")).await, Ok(()));
    assert_eq!(grpc_stream_code(&mut ingest, Some("ops-key")).await, Ok(()));
    let mut predictions = server.predictions().await;
    assert_eq!(
        grpc_latest_code(&mut predictions, None).await,
        Code::Unauthenticated
    );
    assert_eq!(
        grpc_latest_code(&mut predictions, Some("dev-key")).await,
        Code::PermissionDenied
    );
    assert_eq!(
        grpc_latest_code(&mut predictions, Some("dash-key")).await,
        Code::NotFound
    );
    let err = predictions
        .watch(with_key(
            tonic::Request::new(proto::WatchRequest::default()),
            Some("dev-key"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(status.is_ok(), "{status:?}");
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(replies.message().await.unwrap().is_some());

    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = server.metrics_text().await;
    for (reason, count) in [
        ("missing_key", 2.0),
        ("wrong_key", 1.0),
        ("missing_scope", 3.0),
    ] {
        assert_eq!(
            metric_value(
                &text,
                "crossl_auth_failures_total",
                &[("transport", "grpc"), ("reason", reason)]
            ),
            count,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_take_a_header_or_an_access_token_and_check_the_scope() {
    let server = start(|a| a.api_keys = KEYS.iter().map(|k| k.to_string()).collect()).await;
    let device = server.ws_url("/v1/ws/devices/ws-auth");
    assert_eq!(ws_status(&device, None).await, 401);
    assert_eq!(ws_status(&device, Some("wrong")).await, 401);
    assert_eq!(ws_status(&device, Some("dash-key")).await, 403);
    assert_eq!(ws_status(&device, Some("dev-key")).await, 101);
    assert_eq!(
        ws_status(&format!("{device}?access_token=dev-key"), None).await,
        101
    );
    assert_eq!(
        ws_status(&format!("{device}?access_token=dash-key"), None).await,
        403
    );
    let feed = server.ws_url("/v1/ws/predictions?device=ws-auth");
    assert_eq!(ws_status(&feed, None).await, 401);
    assert_eq!(ws_status(&feed, Some("dev-key")).await, 403);
    assert_eq!(
        ws_status(&format!("{feed}&access_token=dash-key"), None).await,
        101
    );
    // A token in the query string is accepted on WebSocket routes only.
    assert_eq!(
        rest_get(&server, "/v1/devices?access_token=dash-key", None)
            .await
            .0,
        401
    );
    assert_eq!(
        server
            .metric(
                "crossl_auth_failures_total",
                &[("transport", "websocket"), ("reason", "missing_scope")]
            )
            .await,
        3.0
    );
}

/// Sends one device's full first window on `tx` (hello first) and returns the last window end.
async fn stream_window(
    server: &TestServer,
    tx: &tokio::sync::mpsc::Sender<proto::StreamRequest>,
    device: &str,
    t0: i64,
) -> i64 {
    tx.send(hello_request(device, &[])).await.unwrap();
    let seconds = window_seconds(&server.core);
    for k in 0..seconds {
        for chunk in second_of_chunks(&server.core, device, t0, k) {
            tx.send(chunk_request(k as u64, chunk)).await.unwrap();
        }
    }
    t0 + seconds as i64 * SECOND
}

/// Reads stream responses until a prediction for `device` ending at `end`; returns everything read.
async fn until_prediction(
    responses: &mut tonic::Streaming<proto::StreamResponse>,
    device: &str,
    end: i64,
) -> Vec<proto::StreamResponse> {
    use proto::stream_response::Kind;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = responses.message().await.expect("healthy").expect("open");
            let done = matches!(&r.kind, Some(Kind::Prediction(p))
                if p.device_id == device && p.window_end_unix_nanos >= end);
            seen.push(r);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no prediction for {device}; got {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_a_device_glob_reaches_only_its_devices_on_every_path() {
    use futures::StreamExt;
    use proto::stream_response::Kind;
    let server = start(|a| {
        a.api_keys = vec![
            "ward-key:ingest,read:ward-3-*".into(),
            "free-key:ingest,read".into(),
        ]
    })
    .await;
    let ward = Some("ward-key");
    let mut predictions = server.predictions().await;
    // Read paths opened before any prediction exists: they must only ever show ward-3-* devices.
    let mut watch = predictions
        .watch(with_key(
            tonic::Request::new(proto::WatchRequest::default()),
            ward,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut feed = ws_connect(&server.ws_url("/v1/ws/predictions"), ward)
        .await
        .unwrap();

    // The unbound key streams a device outside the glob first …
    let t0 = next_second(Duration::ZERO);
    let (free_tx, free_rx) = tokio::sync::mpsc::channel(256);
    let mut free = server
        .ingest()
        .await
        .stream(with_key(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(free_rx)),
            Some("free-key"),
        ))
        .await
        .unwrap()
        .into_inner();
    let end = stream_window(&server, &free_tx, "ward-4-b", t0).await;
    until_prediction(&mut free, "ward-4-b", end).await;

    // … then the bound key: its own device works, a foreign one is refused per request.
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut own = server
        .ingest()
        .await
        .stream(with_key(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            ward,
        ))
        .await
        .unwrap()
        .into_inner();
    tx.send(hello_request("ward-4-b", &[])).await.unwrap();
    let foreign = second_of_chunks(&server.core, "ward-4-b", t0, 0)[0].clone();
    tx.send(chunk_request(7, foreign)).await.unwrap();
    let end = stream_window(&server, &tx, "ward-3-a", t0).await;
    let seen = until_prediction(&mut own, "ward-3-a", end).await;
    let errors: Vec<_> = seen
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::ChunkError(e)) => Some((e.device_id.as_str(), e.kind.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("ward-4-b", "permission_denied"),
            ("ward-4-b", "permission_denied")
        ]
    );
    assert!(
        seen.iter().all(|r| match &r.kind {
            Some(Kind::Prediction(p)) => p.device_id == "ward-3-a",
            _ => true,
        }),
        "{seen:?}"
    );

    // REST: the list is filtered, foreign device routes are 403, own ones work.
    let (status, body) = rest_get(&server, "/v1/devices", ward).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ward-3-a"], "{body}");
    let (_, body) = rest_get(&server, "/v1/devices", Some("free-key")).await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 2, "{body}");
    for path in [
        "/v1/devices/ward-4-b",
        "/v1/devices/ward-4-b/prediction",
        "/v1/devices/ward-4-b/predictions",
        "/v1/devices/ward%2D4-b/prediction",
    ] {
        let (status, body) = rest_get(&server, path, ward).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["kind"], "permission_denied", "{body}");
    }
    for path in ["/v1/devices/ward-3-a", "/v1/devices/ward-3-a/prediction"] {
        assert_eq!(rest_get(&server, path, ward).await.0, 200, "{path}");
    }
    assert_eq!(
        rest_get(&server, "/v1/devices/ward-4-b/prediction", Some("free-key"))
            .await
            .0,
        200
    );

    // gRPC Latest and Watch.
    let latest = |device: &str| {
        with_key(
            tonic::Request::new(proto::LatestRequest {
                device_id: device.into(),
            }),
            ward,
        )
    };
    assert_eq!(
        predictions
            .latest(latest("ward-4-b"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert!(predictions.latest(latest("ward-3-a")).await.is_ok());
    let err = predictions
        .watch(with_key(
            tonic::Request::new(proto::WatchRequest {
                device_ids: vec!["ward-3-a".into(), "ward-4-b".into()],
            }),
            ward,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.device_id, "ward-3-a",
        "ward-4-b came first and must be hidden"
    );

    // WebSockets: foreign device socket and feed filter are 403 before the upgrade; the open feed only
    // carries own devices.
    assert_eq!(
        ws_status(&server.ws_url("/v1/ws/devices/ward-4-b"), ward).await,
        403
    );
    assert_eq!(
        ws_status(&server.ws_url("/v1/ws/devices/ward-3-z"), ward).await,
        101
    );
    assert_eq!(
        ws_status(
            &server.ws_url("/v1/ws/predictions?device=ward-3-a,ward-4-b"),
            ward
        )
        .await,
        403
    );
    let frame = ws_next_json(&mut feed).await.expect("a prediction frame");
    assert_eq!(frame["device_id"], "ward-3-a", "{frame}");

    for (transport, count) in [("grpc", 4.0), ("rest", 4.0), ("websocket", 2.0)] {
        assert_eq!(
            server
                .metric(
                    "crossl_auth_failures_total",
                    &[("transport", transport), ("reason", "device_not_allowed")]
                )
                .await,
            count,
            "{transport}"
        );
    }
    drop((tx, free_tx));
}
