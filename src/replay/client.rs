//! The replay client's connections: a gRPC `Ingest/Stream` (one device, or many as a gateway) or one
//! WebSocket per device. Each connection sends the chunks it is handed and reports what comes back.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::schedule::OutChunk;
use crate::proto;
use crate::proto::ingest_client::IngestClient;

/// A prediction as the replay client saw it.
#[derive(Clone, Debug)]
pub struct ReceivedPrediction {
    pub device_id: String,
    pub window_end_unix_nanos: i64,
    pub label: String,
    pub class_index: usize,
    pub server_end_to_end_seconds: f64,
    pub present_modalities: usize,
    pub received_at: Instant,
}

/// Something the server sent back.
#[derive(Clone, Debug)]
pub enum Inbound {
    Prediction(ReceivedPrediction),
    /// A chunk the server rejected (the connection stays open).
    ChunkError {
        device_id: String,
        reason: String,
        message: String,
    },
    /// Live-feed items the server skipped for this connection.
    Skipped(u64),
}

/// One open connection: push chunks into `chunks`; drop it when done sending.
pub struct Connection {
    pub chunks: mpsc::Sender<OutChunk>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// What every connection needs besides its address.
#[derive(Clone)]
pub struct ConnectionContext {
    pub api_key: Option<String>,
    pub inbound: mpsc::UnboundedSender<Inbound>,
    /// Set to true when the client has what it waits for; connections then close.
    pub stop: watch::Receiver<bool>,
}

const CHUNK_BUFFER: usize = 256;

/// Opens one gRPC `Ingest/Stream` for `devices` (each announced by a `Hello` with `modalities`).
pub async fn connect_grpc(
    target: &str,
    devices: &[String],
    modalities: &[String],
    ctx: ConnectionContext,
) -> anyhow::Result<Connection> {
    let channel = tonic::transport::Endpoint::from_shared(target.to_string())
        .with_context(|| format!("bad gRPC target {target:?}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to gRPC server {target}"))?;
    let bearer = match &ctx.api_key {
        Some(key) => Some(
            format!("Bearer {key}")
                .parse::<tonic::metadata::MetadataValue<_>>()
                .context("API key is not a valid header value")?,
        ),
        None => None,
    };
    let mut client = IngestClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(value) = &bearer {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    });

    let (chunk_tx, mut chunk_rx) = mpsc::channel::<OutChunk>(CHUNK_BUFFER);
    let hellos: Vec<proto::StreamRequest> = devices
        .iter()
        .map(|d| proto::StreamRequest {
            sequence: 0,
            kind: Some(proto::stream_request::Kind::Hello(proto::Hello {
                device_id: d.clone(),
                modalities: modalities.to_vec(),
                metadata: HashMap::from([(
                    "client".to_string(),
                    "crossl-serve replay".to_string(),
                )]),
            })),
        })
        .collect();
    let requests = async_stream::stream! {
        for hello in hellos {
            yield hello;
        }
        let mut sequence = 0u64;
        while let Some(chunk) = chunk_rx.recv().await {
            sequence += 1;
            yield proto::StreamRequest {
                sequence,
                kind: Some(proto::stream_request::Kind::Chunk(proto::SensorChunk {
                    device_id: chunk.device_id,
                    modality: chunk.modality,
                    start_unix_nanos: chunk.start_unix_nanos,
                    samples: chunk.samples,
                })),
            };
        }
    };
    let mut responses = client
        .stream(requests)
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "gRPC Ingest/Stream refused: {:?}: {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();

    let ConnectionContext {
        inbound, mut stop, ..
    } = ctx;
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(response)) => match response.kind {
                        Some(proto::stream_response::Kind::Prediction(p)) => {
                            let _ = inbound.send(Inbound::Prediction(from_proto(p)));
                        }
                        Some(proto::stream_response::Kind::ChunkError(e)) => {
                            let _ = inbound.send(Inbound::ChunkError {
                                device_id: e.device_id,
                                reason: e.reason,
                                message: e.message,
                            });
                        }
                        None => {}
                    },
                    Ok(None) => return Ok(()),
                    Err(status) => bail!("gRPC stream ended: {:?}: {}", status.code(), status.message()),
                },
                _ = stopped(&mut stop) => return Ok(()),
            }
        }
    });
    Ok(Connection {
        chunks: chunk_tx,
        task,
    })
}

/// Resolves once the stop flag is set (the watch guard is dropped before returning, keeping tasks `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn from_proto(p: proto::Prediction) -> ReceivedPrediction {
    ReceivedPrediction {
        device_id: p.device_id,
        window_end_unix_nanos: p.window_end_unix_nanos,
        label: p.label,
        class_index: p.class_index as usize,
        server_end_to_end_seconds: p.timings.map_or(0.0, |t| t.end_to_end_seconds),
        present_modalities: p.present_modalities.len(),
        received_at: Instant::now(),
    }
}

/// How chunks are encoded on a WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WsFormat {
    /// The compact binary frame (docs/protocol.md).
    Binary,
    /// JSON text frames.
    Json,
}

#[derive(serde::Deserialize)]
struct WelcomeModality {
    index: u16,
    name: String,
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame {
    Welcome { modalities: Vec<WelcomeModality> },
    Prediction(WsPrediction),
    Error { error: String, reason: String },
    Skipped { count: u64 },
}

#[derive(serde::Deserialize)]
struct WsPrediction {
    device_id: String,
    window_end_unix_nanos: i64,
    label: String,
    class_index: usize,
    present_modalities: Vec<String>,
    timings: WsTimings,
}

#[derive(serde::Deserialize)]
struct WsTimings {
    end_to_end_seconds: f64,
}

/// Encodes one chunk as the documented binary frame.
pub fn encode_binary_frame(
    modality_index: u16,
    start_unix_nanos: i64,
    samples: &[f32],
    channels: usize,
) -> Vec<u8> {
    let count = (samples.len() / channels.max(1)) as u32;
    let mut frame = Vec::with_capacity(16 + samples.len() * 4);
    frame.push(0xC5);
    frame.push(1);
    frame.extend_from_slice(&modality_index.to_le_bytes());
    frame.extend_from_slice(&count.to_le_bytes());
    frame.extend_from_slice(&start_unix_nanos.to_le_bytes());
    for v in samples {
        frame.extend_from_slice(&v.to_le_bytes());
    }
    frame
}

/// Turns `http://host:port` (or `ws://…`) into the device socket URL.
pub fn device_socket_url(target: &str, device_id: &str) -> anyhow::Result<String> {
    let base = target.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_string()
    } else {
        bail!("WebSocket target must start with http://, https://, ws:// or wss://, got {target:?}")
    };
    Ok(format!("{base}/v1/ws/devices/{device_id}"))
}

/// Opens `GET /v1/ws/devices/{device_id}` and streams that device's chunks.
pub async fn connect_ws(
    target: &str,
    device_id: &str,
    format: WsFormat,
    ctx: ConnectionContext,
) -> anyhow::Result<Connection> {
    let url = device_socket_url(target, device_id)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("bad URL {url}"))?;
    if let Some(key) = &ctx.api_key {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}")
                .parse()
                .context("API key is not a valid header value")?,
        );
    }
    // Nagle off: chunks and predictions are small frames that must not wait for delayed ACKs.
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let (mut sink, mut stream) = socket.split();

    // The first frame describes the modalities; the binary format needs their indices.
    let indices: HashMap<String, u16> = match stream.next().await {
        Some(Ok(tungstenite::Message::Text(text))) => {
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Welcome { modalities }) => {
                    modalities.into_iter().map(|m| (m.name, m.index)).collect()
                }
                _ => bail!("expected a welcome frame from {url}, got {text}"),
            }
        }
        Some(Ok(tungstenite::Message::Close(frame))) => bail!("{url} closed the socket: {frame:?}"),
        other => bail!("expected a welcome frame from {url}, got {other:?}"),
    };

    let (chunk_tx, mut chunk_rx) = mpsc::channel::<OutChunk>(CHUNK_BUFFER);
    let ConnectionContext {
        inbound, mut stop, ..
    } = ctx;
    let task = tokio::spawn(async move {
        let mut sending = true;
        let mut sequence = 0u64;
        loop {
            tokio::select! {
                chunk = chunk_rx.recv(), if sending => match chunk {
                    Some(chunk) => {
                        sequence += 1;
                        let message = match format {
                            WsFormat::Binary => {
                                let Some(&index) = indices.get(&chunk.modality) else {
                                    bail!("server does not know modality {}", chunk.modality);
                                };
                                tungstenite::Message::Binary(
                                    encode_binary_frame(index, chunk.start_unix_nanos, &chunk.samples, 3).into(),
                                )
                            }
                            WsFormat::Json => {
                                let rows: Vec<&[f32]> = chunk.samples.chunks(3).collect();
                                let body = serde_json::json!({
                                    "sequence": sequence,
                                    "modality": chunk.modality,
                                    "start_unix_nanos": chunk.start_unix_nanos,
                                    "samples": rows,
                                });
                                tungstenite::Message::Text(body.to_string().into())
                            }
                        };
                        sink.send(message).await.context("sending a chunk")?;
                    }
                    None => sending = false,
                },
                frame = stream.next() => match frame {
                    Some(Ok(tungstenite::Message::Text(text))) => match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(ServerFrame::Prediction(p)) => {
                            let _ = inbound.send(Inbound::Prediction(ReceivedPrediction {
                                device_id: p.device_id,
                                window_end_unix_nanos: p.window_end_unix_nanos,
                                label: p.label,
                                class_index: p.class_index,
                                server_end_to_end_seconds: p.timings.end_to_end_seconds,
                                present_modalities: p.present_modalities.len(),
                                received_at: Instant::now(),
                            }));
                        }
                        Ok(ServerFrame::Error { error, reason }) => {
                            let _ = inbound.send(Inbound::ChunkError {
                                device_id: String::new(),
                                reason,
                                message: error,
                            });
                        }
                        Ok(ServerFrame::Skipped { count }) => {
                            let _ = inbound.send(Inbound::Skipped(count));
                        }
                        Ok(ServerFrame::Welcome { .. }) => {}
                        Err(e) => bail!("unexpected frame {text}: {e}"),
                    },
                    Some(Ok(tungstenite::Message::Close(frame))) => {
                        return match frame {
                            Some(f) if f.code != tungstenite::protocol::frame::coding::CloseCode::Normal => {
                                bail!("server closed the socket: {} {}", u16::from(f.code), f.reason)
                            }
                            _ => Ok(()),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("WebSocket error: {e}"),
                    None => return Ok(()),
                },
                _ = stopped(&mut stop) => {
                    let _ = sink.send(tungstenite::Message::Close(None)).await;
                    return Ok(());
                }
            }
        }
    });
    Ok(Connection {
        chunks: chunk_tx,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frame_layout() {
        let f = encode_binary_frame(7, -2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3);
        assert_eq!(f.len(), 16 + 24);
        assert_eq!(&f[..2], &[0xC5, 1]);
        assert_eq!(u16::from_le_bytes([f[2], f[3]]), 7);
        assert_eq!(u32::from_le_bytes(f[4..8].try_into().unwrap()), 2);
        assert_eq!(i64::from_le_bytes(f[8..16].try_into().unwrap()), -2);
        assert_eq!(f32::from_le_bytes(f[36..40].try_into().unwrap()), 6.0);
    }

    #[test]
    fn socket_urls() {
        assert_eq!(
            device_socket_url("http://h:1/", "d").unwrap(),
            "ws://h:1/v1/ws/devices/d"
        );
        assert_eq!(
            device_socket_url("https://h:1", "d").unwrap(),
            "wss://h:1/v1/ws/devices/d"
        );
        assert_eq!(
            device_socket_url("ws://h:1", "d").unwrap(),
            "ws://h:1/v1/ws/devices/d"
        );
        assert!(device_socket_url("h:1", "d").is_err());
    }
}
