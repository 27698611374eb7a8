//! Helpers for the REST/core integration tests: a real server on port 0 (HTTP, gRPC, metrics), the
//! bundled model and its golden cases, an HTTP client, metric parsing.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossl_serve::app::{Core, Hooks, Service, launch};
use crossl_serve::config::ServeArgs;
use serde::Deserialize;
use tokio::sync::oneshot;

#[path = "../support/prometheus_text.rs"]
mod prometheus_text;

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The bundled model folder; a clear failure when it is missing.
pub fn bundled_model() -> PathBuf {
    let dir = repo_path("models/crossl-dsads");
    assert!(
        dir.join("model.json").is_file() && dir.join("golden.json").is_file(),
        "the bundled model is missing: {} needs model.json, model.onnx and golden.json (see \
         docs/model-contract.md; the training export writes it, see docs/training.md)",
        dir.display()
    );
    dir
}

/// The two-rate fixture model (another sensor set, rates and classes under the same contract).
pub fn fixture_model() -> PathBuf {
    repo_path("tests/fixtures/multirate")
}

/// One case of golden.json.
#[derive(Debug, Deserialize)]
pub struct GoldenCase {
    pub name: String,
    pub modalities: HashMap<String, Vec<Vec<f32>>>,
    /// Mask in manifest order (0/1).
    pub present: Vec<f32>,
    pub label: String,
    pub logits: Vec<f32>,
    pub probabilities: Vec<f32>,
    pub embedding: Vec<f32>,
}

/// golden.json.
#[derive(Debug, Deserialize)]
pub struct Golden {
    pub model_sha256: String,
    pub tolerance: f32,
    pub cases: Vec<GoldenCase>,
}

pub fn golden(model: &Path) -> Golden {
    let path = model.join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest absolute difference; panics on a length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Defaults for tests: every listener on port 0, one warm-up run, no rate limit.
pub fn test_args(model: PathBuf) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.model = model;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    args.http_addr = any;
    args.grpc_addr = any;
    args.metrics_addr = any;
    args.warmup_runs = 1;
    // Tests reason about window ends on whole seconds.
    args.window_phase = crossl_serve::window::WindowPhase::Aligned;
    args.rate_limit_factor = 1e6;
    args.api_keys.clear();
    args
}

/// A running server; shut down on drop.
pub struct TestServer {
    pub core: Core,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    service: Option<Service>,
}

/// Starts a server and returns once it listens (not necessarily ready).
pub async fn launch_server(args: ServeArgs, hooks: Hooks) -> TestServer {
    let (tx, rx) = oneshot::channel::<()>();
    let service = launch(args, hooks, async move {
        let _ = rx.await;
    })
    .await
    .expect("server starts listening");
    TestServer {
        core: service.core.clone(),
        http: service.http_addr,
        metrics: service.metrics_addr,
        client: reqwest::Client::new(),
        stop: Some(tx),
        service: Some(service),
    }
}

/// Starts a server and waits until it is ready.
pub async fn start(args: ServeArgs) -> TestServer {
    let server = launch_server(args, Hooks::default()).await;
    server.ready().await;
    server
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn ready(&self) {
        let service = self.service.as_ref().expect("running");
        tokio::time::timeout(Duration::from_secs(60), service.ready())
            .await
            .expect("ready within 60 s")
            .expect("server becomes ready");
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_raw(path, serde_json::to_vec(body).expect("json"))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let json = match serde_json::from_str(&text) {
            Ok(json) => json,
            Err(_) => serde_json::Value::String(text),
        };
        (status, json)
    }

    /// Prometheus text from the metrics listener.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }

    /// Triggers graceful shutdown.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Graceful shutdown; returns the service's result.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.trigger_shutdown();
        self.wait().await
    }

    /// Waits for the service to end.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.service.take() {
            Some(service) => tokio::time::timeout(Duration::from_secs(60), service.wait())
                .await
                .map_err(|_| anyhow::anyhow!("shutdown took longer than 60 s"))?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Value of one sample of a metric with the given labels (any order); `None` when absent.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    prometheus_text::samples(text, name, labels).next()
}

/// Asserts an error response: the status and a JSON body `{"error": non-empty, "kind": kind}`.
pub fn assert_error(status: u16, body: &serde_json::Value, want_status: u16, want_kind: &str) {
    assert_eq!(status, want_status, "status; body {body}");
    assert_eq!(body["kind"], want_kind, "kind; body {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error message; body {body}"
    );
}
