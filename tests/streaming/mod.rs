//! Helpers for the streaming tests (gRPC, WebSocket, auth, limits, TLS, replay): a real server on port 0
//! with the bundled model, clients, synthetic sensor data and metric parsing.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossl_serve::app::{Core, Hooks, Service, launch};
use crossl_serve::config::ServeArgs;
use crossl_serve::proto;
use crossl_serve::proto::ingest_client::IngestClient;
use crossl_serve::proto::predictions_client::PredictionsClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

#[path = "../support/prometheus_text.rs"]
mod prometheus_text;

pub const SECOND: i64 = 1_000_000_000;

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A running server; shut down on drop.
pub struct TestServer {
    pub core: Core,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    service: Option<Service>,
}

/// Starts the bundled model on port 0 (all listeners), after `configure` adjusts the defaults, and waits
/// until ready. The rate limit is off unless a test sets it: tests send seconds of data at once.
pub async fn start(configure: impl FnOnce(&mut ServeArgs)) -> TestServer {
    start_with_hooks(configure, Hooks::default()).await
}

/// [`start`] with test hooks (a manual clock, a test backend).
pub async fn start_with_hooks(configure: impl FnOnce(&mut ServeArgs), hooks: Hooks) -> TestServer {
    let mut args = ServeArgs::defaults();
    args.model = repo_path("models/crossl-dsads");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    args.http_addr = any;
    args.grpc_addr = any;
    args.metrics_addr = any;
    args.rate_limit_factor = 1e6;
    args.warmup_runs = 1;
    // Tests reason about window ends on whole seconds (a test may opt into per-device phases).
    args.window_phase = crossl_serve::window::WindowPhase::Aligned;
    configure(&mut args);
    let (tx, rx) = oneshot::channel::<()>();
    let service = launch(args, hooks, async move {
        let _ = rx.await;
    })
    .await
    .expect("server starts");
    tokio::time::timeout(Duration::from_secs(60), service.ready())
        .await
        .expect("ready within 60 s")
        .expect("server becomes ready");
    TestServer {
        core: service.core.clone(),
        http: service.http_addr,
        grpc: service.grpc_addr,
        metrics: service.metrics_addr,
        stop: Some(tx),
        service: Some(service),
    }
}

impl TestServer {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.http, path_and_query)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_url())
            .expect("url")
            .connect()
            .await
            .expect("gRPC connects")
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await)
    }

    /// Opens an `Ingest.Stream` call: the sender feeds requests (buffer `capacity`), the other half yields
    /// the server's responses.
    pub async fn open_stream(
        &self,
        capacity: usize,
    ) -> (
        tokio::sync::mpsc::Sender<proto::StreamRequest>,
        tonic::Streaming<proto::StreamResponse>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let responses = self
            .ingest()
            .await
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("Ingest.Stream opens")
            .into_inner();
        (tx, responses)
    }

    pub async fn predictions(&self) -> PredictionsClient<Channel> {
        PredictionsClient::new(self.channel().await)
    }

    /// `Predictions.Watch` over every device.
    pub async fn watch_all(&self) -> tonic::Streaming<proto::Prediction> {
        self.predictions()
            .await
            .watch(proto::WatchRequest::default())
            .await
            .expect("Predictions.Watch opens")
            .into_inner()
    }

    /// Prometheus text from the metrics listener.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }

    /// Value of one sample of a metric family with the given labels (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics_text().await, name, labels)
    }

    /// Graceful shutdown; returns the service's result.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.service.take() {
            Some(service) => tokio::time::timeout(Duration::from_secs(30), service.wait())
                .await
                .map_err(|_| anyhow::anyhow!("shutdown took longer than 30 s"))?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sum of the samples of a metric with the given labels (any order); 0 when there is none.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus_text::samples(text, name, labels).sum()
}

/// Next whole second (unix ns) at least `ahead` from now: a device clock origin on the hop grid.
/// A made-up prediction of the bundled model's shape, for filling the store and the feeds directly.
pub fn flood_prediction(
    device_id: String,
    window_end_unix_nanos: i64,
) -> crossl_serve::store::Prediction {
    crossl_serve::store::Prediction {
        device_id,
        window_end_unix_nanos,
        label: "sitting".into(),
        class_index: 0,
        probabilities: vec![0.05; 19],
        embedding: vec![0.25; 32],
        present_modalities: vec!["torso_acc".to_string(); 15].into(),
        timings: Default::default(),
        personalized: false,
        general: None,
    }
}

pub fn next_second(ahead: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
        + ahead.as_nanos() as i64;
    (now / SECOND + 1) * SECOND
}

/// (name, channels, sample_rate_hz) of every modality, manifest order.
pub fn modalities(core: &Core) -> Vec<(String, usize, f64)> {
    core.manifest
        .modalities
        .iter()
        .map(|m| (m.name.clone(), m.channels, m.sample_rate_hz))
        .collect()
}

/// Plausible synthetic samples (row-major rows × channels) for one modality starting at sample `first`.
pub fn synthetic(modality_index: usize, channels: usize, first: usize, rows: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * channels);
    for i in first..first + rows {
        for c in 0..channels {
            let phase = i as f32 * 0.25 + c as f32 + modality_index as f32 * 0.5;
            let base = if c == 0 { 9.0 } else { 0.5 };
            out.push(base + phase.sin());
        }
    }
    out
}

/// One second of every modality of a device, for second `k` of a recording starting at `t0`.
pub fn second_of_chunks(
    core: &Core,
    device_id: &str,
    t0: i64,
    k: usize,
) -> Vec<proto::SensorChunk> {
    modalities(core)
        .into_iter()
        .enumerate()
        .map(|(m, (name, channels, rate))| {
            let rows = rate.round() as usize;
            proto::SensorChunk {
                device_id: device_id.to_string(),
                modality: name,
                start_unix_nanos: t0 + k as i64 * SECOND,
                samples: synthetic(m, channels, k * rows, rows),
            }
        })
        .collect()
}

pub fn chunk_request(sequence: u64, chunk: proto::SensorChunk) -> proto::StreamRequest {
    proto::StreamRequest {
        sequence,
        kind: Some(proto::stream_request::Kind::Chunk(chunk)),
    }
}

pub fn hello_request(device_id: &str, modalities: &[&str]) -> proto::StreamRequest {
    proto::StreamRequest {
        sequence: 0,
        kind: Some(proto::stream_request::Kind::Hello(proto::Hello {
            device_id: device_id.to_string(),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            metadata: Default::default(),
        })),
    }
}

/// Seconds of data a device needs before its first full-coverage window (the window length).
pub fn window_seconds(core: &Core) -> usize {
    core.manifest.window_seconds.ceil() as usize
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Opens a WebSocket (optionally with `authorization: Bearer key`); the HTTP error on refusal.
pub async fn ws_connect(
    url: &str,
    bearer: Option<&str>,
) -> Result<WsStream, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    if let Some(key) = bearer {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// The next text frame as JSON (skipping pings); `None` when the socket closed, with the close frame.
pub async fn ws_next_json(
    ws: &mut WsStream,
) -> Result<serde_json::Value, Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>> {
    use futures::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
        {
            Some(Ok(WsMessage::Text(t))) => {
                return Ok(serde_json::from_str(t.as_str()).expect("JSON frame"));
            }
            Some(Ok(WsMessage::Close(frame))) => return Err(frame),
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                eprintln!("ws read error: {e}");
                return Err(None);
            }
            None => {
                eprintln!("ws ended without a close frame");
                return Err(None);
            }
        }
    }
}

/// The compact binary chunk frame of docs/protocol.md, built independently of the server's decoder.
pub fn binary_frame(
    modality_index: u16,
    start_unix_nanos: i64,
    samples: &[f32],
    channels: usize,
) -> Vec<u8> {
    let mut f = vec![0xC5, 1];
    f.extend_from_slice(&modality_index.to_le_bytes());
    f.extend_from_slice(&((samples.len() / channels) as u32).to_le_bytes());
    f.extend_from_slice(&start_unix_nanos.to_le_bytes());
    for v in samples {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f
}

/// A JSON chunk frame (samples as rows of channels).
pub fn json_frame(sequence: u64, chunk: &proto::SensorChunk, channels: usize) -> String {
    let rows: Vec<&[f32]> = chunk.samples.chunks(channels).collect();
    serde_json::json!({
        "sequence": sequence,
        "modality": chunk.modality,
        "start_unix_nanos": chunk.start_unix_nanos,
        "samples": rows,
    })
    .to_string()
}

/// One device's gRPC ingest stream in a test: a hello on open, chunks sent in sequence, the predictions that
/// come back on the stream collected in the background.
pub struct StreamingDevice {
    tx: tokio::sync::mpsc::Sender<proto::StreamRequest>,
    predictions: tokio::sync::mpsc::UnboundedReceiver<proto::Prediction>,
    reader: tokio::task::JoinHandle<()>,
    sequence: u64,
}

impl StreamingDevice {
    pub async fn open(server: &TestServer, device_id: &str) -> Self {
        let (tx, mut responses) = server.open_stream(1024).await;
        let (out, predictions) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(Some(r)) = responses.message().await {
                if let Some(proto::stream_response::Kind::Prediction(p)) = r.kind {
                    let _ = out.send(p);
                }
            }
        });
        tx.send(hello_request(device_id, &[])).await.expect("hello");
        Self {
            tx,
            predictions,
            reader,
            sequence: 0,
        }
    }

    pub async fn send(&mut self, chunks: impl IntoIterator<Item = proto::SensorChunk>) {
        for chunk in chunks {
            self.sequence += 1;
            self.tx
                .send(chunk_request(self.sequence, chunk))
                .await
                .expect("chunk sent");
        }
    }

    /// Predictions on the stream until one ends at or after `until`.
    pub async fn until(&mut self, until: i64) -> Vec<proto::Prediction> {
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

impl Drop for StreamingDevice {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
