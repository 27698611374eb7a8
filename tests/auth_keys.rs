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
