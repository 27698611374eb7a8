//! WebSocket adapter: `GET /v1/ws/devices/{id}` streams one device (JSON text frames or the compact binary
//! frame of docs/protocol.md) and pushes its predictions back; `GET /v1/ws/predictions?device=…` is the
//! live feed for dashboards. Each device socket has one reader (ingest) and one writer (replies and
//! predictions), so a client that reads slowly never slows ingest: its bounded prediction queue drops what
//! does not fit, and the drops are counted. Dashboards skip ahead on the broadcast feed instead.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::auth::{self, Grant};
use super::feed::{self, DeviceFilter, DeviceSubscription, FeedEvent};
use crate::app::Core;
use crate::error::Error;
use crate::ingest::{SensorChunk, Transport};
use crate::model::Manifest;
use crate::store::Prediction;

/// Metric label of this adapter.
const TRANSPORT: &str = "websocket";
/// Close code of a device socket whose device was taken over by a newer stream or socket (private range).
pub const CLOSE_TAKEN_OVER: u16 = 4409;
/// Replies (error frames, close) queued per socket before its reader waits for the client.
const REPLY_BUFFER: usize = 64;

/// First byte of a binary chunk frame.
pub const BINARY_MAGIC: u8 = 0xC5;
/// Second byte: the binary frame version this server reads.
pub const BINARY_VERSION: u8 = 1;
/// Bytes before the samples in a binary frame.
pub const BINARY_HEADER_BYTES: usize = 16;

/// WebSocket routes, merged into the public HTTP app.
pub fn router(core: Core) -> axum::Router {
    axum::Router::new()
        .route("/v1/ws/devices/{device_id}", get(device_socket))
        .route("/v1/ws/predictions", get(predictions_socket))
        .with_state(core)
}

/// A frame the server sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Welcome(Welcome<'a>),
    Prediction(&'a Prediction),
    Error {
        error: String,
        kind: &'static str,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sequence: Option<u64>,
    },
    Skipped {
        count: u64,
    },
}

impl ServerFrame<'_> {
    fn message(&self) -> Message {
        // Serialising these plain structs cannot fail.
        Message::Text(Utf8Bytes::from(
            serde_json::to_string(self).unwrap_or_default(),
        ))
    }

    fn error(e: &Error, sequence: Option<u64>) -> Message {
        ServerFrame::Error {
            error: e.to_string(),
            kind: e.kind(),
            reason: e.reason(),
            sequence,
        }
        .message()
    }
}

#[derive(Serialize)]
struct Welcome<'a> {
    device_id: &'a str,
    model: &'a str,
    window_seconds: f64,
    hop_seconds: f64,
    max_chunk_samples: usize,
    max_frame_bytes: usize,
    modalities: Vec<WelcomeModality<'a>>,
}

#[derive(Serialize)]
struct WelcomeModality<'a> {
    index: usize,
    name: &'a str,
    channels: usize,
    sample_rate_hz: f64,
}

/// The close frame of a socket whose service is stopping (1001 going away).
fn shutting_down() -> Message {
    close(close_code::AWAY, "server shutting down")
}

fn close(code: u16, reason: &str) -> Message {
    // Close reasons are limited to 123 bytes.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// A JSON text frame from a device: a chunk (default) or a hello.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    sequence: Option<u64>,
    modality: Option<String>,
    start_unix_nanos: Option<i64>,
    /// Samples × channels.
    samples: Option<Vec<Vec<f32>>>,
    /// Hello only.
    modalities: Option<Vec<String>>,
}

/// What a device frame asks for.
enum DeviceRequest {
    Hello(Vec<String>),
    Chunk(SensorChunk),
}

fn parse_text_frame(
    text: &str,
    device_id: &str,
    manifest: &Manifest,
) -> (Option<u64>, Result<DeviceRequest, Error>) {
    let frame: TextFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return (
                None,
                Err(Error::invalid(
                    "bad_json",
                    format!("invalid JSON frame: {e}"),
                )),
            );
        }
    };
    let sequence = frame.sequence;
    let request = match frame.kind.as_deref() {
        Some("hello") => Ok(DeviceRequest::Hello(frame.modalities.unwrap_or_default())),
        None | Some("chunk") => {
            chunk_from_text(frame, device_id, manifest).map(DeviceRequest::Chunk)
        }
        Some(other) => Err(Error::invalid(
            "bad_json",
            format!("unknown frame type {other:?} (chunk, hello)"),
        )),
    };
    (sequence, request)
}

fn chunk_from_text(
    frame: TextFrame,
    device_id: &str,
    manifest: &Manifest,
) -> Result<SensorChunk, Error> {
    let missing =
        |field: &str| Error::invalid("bad_json", format!("chunk frame without `{field}`"));
    let modality = frame.modality.ok_or_else(|| missing("modality"))?;
    let start_unix_nanos = frame
        .start_unix_nanos
        .ok_or_else(|| missing("start_unix_nanos"))?;
    let rows = frame.samples.ok_or_else(|| missing("samples"))?;
    // Rows must each hold one sample; the core checks the flattened length, which cannot see ragged rows.
    if let Some(spec) = manifest.modalities.iter().find(|m| m.name == modality)
        && let Some((i, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != spec.channels)
    {
        return Err(Error::invalid(
            "channel_multiple",
            format!(
                "{modality} has {} channels but sample {i} has {} values",
                spec.channels,
                row.len()
            ),
        ));
    }
    Ok(SensorChunk {
        device_id: device_id.to_string(),
        modality,
        start_unix_nanos,
        samples: rows.into_iter().flatten().collect(),
    })
}

/// Decodes the binary chunk frame (docs/protocol.md): magic, version, modality index u16, sample count u32,
/// start i64, then f32 values, all little-endian.
pub fn decode_binary_frame(
    frame: &[u8],
    device_id: &str,
    manifest: &Manifest,
) -> Result<SensorChunk, Error> {
    let bad = |message: String| Error::invalid("bad_frame", message);
    if frame.len() < BINARY_HEADER_BYTES {
        return Err(bad(format!(
            "binary frame of {} bytes is shorter than its 16-byte header",
            frame.len()
        )));
    }
    if frame[0] != BINARY_MAGIC {
        return Err(bad(format!(
            "binary frame starts with 0x{:02X}, expected 0xC5",
            frame[0]
        )));
    }
    if frame[1] != BINARY_VERSION {
        return Err(bad(format!(
            "binary frame version {} is not supported (1)",
            frame[1]
        )));
    }
    let index = u16::from_le_bytes([frame[2], frame[3]]) as usize;
    let count = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
    let mut start = [0u8; 8];
    start.copy_from_slice(&frame[8..16]);
    let start_unix_nanos = i64::from_le_bytes(start);
    let spec = manifest.modalities.get(index).ok_or_else(|| {
        Error::invalid(
            "unknown_modality",
            format!(
                "modality index {index} out of range (the model has {})",
                manifest.modalities.len()
            ),
        )
    })?;
    let expected = count
        .checked_mul(spec.channels)
        .and_then(|v| v.checked_mul(4))
        .and_then(|v| v.checked_add(BINARY_HEADER_BYTES));
    if expected != Some(frame.len()) {
        return Err(bad(format!(
            "binary frame for {} with {count} samples × {} channels must be {} bytes, got {}",
            spec.name,
            spec.channels,
            expected.map_or("too many".to_string(), |e| e.to_string()),
            frame.len()
        )));
    }
    let samples = frame[BINARY_HEADER_BYTES..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(SensorChunk {
        device_id: device_id.to_string(),
        modality: spec.name.clone(),
        start_unix_nanos,
        samples,
    })
}

/// Whether a receive error is a frame/message over the configured size.
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            err.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = err.source();
    }
    false
}

async fn device_socket(
    State(core): State<Core>,
    Path(device_id): Path<String>,
    grant: Option<Extension<Grant>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The auth middleware already refused a bound key's foreign device ids (403 before the upgrade).
    let key = grant.and_then(|Extension(g)| g.key());
    if !core.is_ready() {
        return Error::Unavailable("the service is not ready (starting or shutting down)".into())
            .into_response();
    }
    let limit = core.limits.ws_max_frame_bytes;
    let span = tracing::info_span!("ws_device", device_id = %device_id);
    upgrade
        .max_frame_size(limit)
        .max_message_size(limit)
        .read_buffer_size(core.limits.ws_read_buffer_bytes)
        .on_upgrade(move |socket| run_device_socket(core, device_id, key, socket).instrument(span))
}

async fn run_device_socket(core: Core, device_id: String, key: Option<usize>, socket: WebSocket) {
    let _open = feed::OpenStream::new(&core.metrics, TRANSPORT, "ingest");
    let (mut sink, mut stream) = socket.split();
    // Registering validates the id and the device limit; a refused device cannot use this socket at all.
    // Connecting is this device's hello: the socket takes the device over from any other stream.
    let (ownership, mut lost) = core.owners.open(key);
    let registered = core
        .ingest
        .hello(Transport::WebSocket, &device_id, &[])
        .and_then(|()| ownership.claim(&device_id, true).map(|_| ()));
    if let Err(e) = registered {
        let code = if matches!(e, Error::Internal(_)) {
            close_code::ERROR
        } else {
            close_code::POLICY
        };
        let _ = sink.send(ServerFrame::error(&e, None)).await;
        let _ = sink.send(close(code, &e.to_string())).await;
        return;
    }
    let manifest = Arc::clone(&core.manifest);
    let welcome = ServerFrame::Welcome(Welcome {
        device_id: &device_id,
        model: &manifest.name,
        window_seconds: manifest.window_seconds,
        hop_seconds: core.limits.hop_seconds,
        max_chunk_samples: core.limits.max_chunk_samples,
        max_frame_bytes: core.limits.ws_max_frame_bytes,
        modalities: manifest
            .modalities
            .iter()
            .enumerate()
            .map(|(index, m)| WelcomeModality {
                index,
                name: &m.name,
                channels: m.channels,
                sample_rate_hz: m.sample_rate_hz,
            })
            .collect(),
    })
    .message();
    if sink.send(welcome).await.is_err() {
        return;
    }

    // Subscribe before reading chunks so no prediction of this device is missed.
    let predictions = core.feeds.subscribe(TRANSPORT);
    predictions.devices.add(&device_id);
    let (replies, replies_rx) = mpsc::channel::<Message>(REPLY_BUFFER);
    let writer = tokio::spawn(
        write_device_socket(core.clone(), sink, replies_rx, predictions).in_current_span(),
    );

    // On shutdown the reader keeps reading (new chunks are refused with an error frame) until the drain has
    // delivered; then the writer says goodbye and the reader must not wait for a client that never answers.
    let delivered = feed::delivered(core.clone());
    tokio::pin!(delivered);
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = &mut delivered => break,
            Some(lost_device) = lost.recv() => {
                if !ownership.lost(&lost_device) {
                    continue;
                }
                // A newer stream or socket streams this device now: say so and close (4409).
                core.metrics.stream_takeovers.with_label_values(&[TRANSPORT]).inc();
                let e = Error::Conflict {
                    reason: "taken_over",
                    message: format!(
                        "device {device_id:?} was taken over by a newer connection"
                    ),
                };
                let _ = replies.send(ServerFrame::error(&e, None)).await;
                let _ = replies.send(close(CLOSE_TAKEN_OVER, &e.to_string())).await;
                break;
            }
        };
        let reply = match frame {
            Some(Ok(Message::Text(text))) => {
                let (sequence, request) = parse_text_frame(text.as_str(), &device_id, &manifest);
                apply(&core, &device_id, request)
                    .err()
                    .map(|e| ServerFrame::error(&e, sequence))
            }
            Some(Ok(Message::Binary(bytes))) => {
                let request =
                    decode_binary_frame(&bytes, &device_id, &manifest).map(DeviceRequest::Chunk);
                apply(&core, &device_id, request)
                    .err()
                    .map(|e| ServerFrame::error(&e, None))
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Err(e)) if is_too_large(&e) => {
                core.metrics
                    .chunks_rejected
                    .with_label_values(&[TRANSPORT, "frame_too_large"])
                    .inc();
                let message = format!(
                    "frame larger than --ws-max-frame-bytes ({} bytes)",
                    core.limits.ws_max_frame_bytes
                );
                let _ = replies.send(close(close_code::SIZE, &message)).await;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket read failed");
                break;
            }
        };
        if let Some(reply) = reply
            && replies.send(reply).await.is_err()
        {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
}

/// Applies a parsed frame; errors that happened before the core saw the frame are counted here.
fn apply(core: &Core, device_id: &str, request: Result<DeviceRequest, Error>) -> Result<(), Error> {
    match request {
        Ok(DeviceRequest::Chunk(chunk)) => {
            core.ingest.push(Transport::WebSocket, chunk).map(|_| ())
        }
        Ok(DeviceRequest::Hello(modalities)) => {
            core.ingest
                .hello(Transport::WebSocket, device_id, &modalities)
        }
        Err(e) => {
            core.metrics
                .chunks_rejected
                .with_label_values(&[TRANSPORT, e.reason()])
                .inc();
            Err(e)
        }
    }
}

/// Sends replies and this device's predictions; ends when the reader is done (after flushing its replies)
/// or, on shutdown, once the drain has delivered the flushed windows' predictions (then 1001).
async fn write_device_socket(
    core: Core,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut replies: mpsc::Receiver<Message>,
    mut predictions: DeviceSubscription,
) {
    let delivered = feed::delivered(core.clone());
    tokio::pin!(delivered);
    let mut replies_open = true;
    loop {
        let message = tokio::select! {
            biased;
            reply = replies.recv(), if replies_open => match reply {
                Some(message) => message,
                // During the drain the reader may stop first: the flushed predictions and the 1001 still
                // have to go out.
                None if feed::has_stopped_serving(&core) => {
                    replies_open = false;
                    continue;
                }
                None => break,
            },
            prediction = predictions.recv() => match prediction {
                Some(p) => ServerFrame::Prediction(&p).message(),
                None => shutting_down(),
            },
            () = &mut delivered => {
                while let Some(p) = predictions.try_recv() {
                    if sink.send(ServerFrame::Prediction(&p).message()).await.is_err() {
                        return;
                    }
                }
                shutting_down()
            }
        };
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            return;
        }
    }
    let _ = sink.close().await;
}

/// `device=a&device=b` or `device=a,b`; empty = every device.
fn feed_filter(query: Option<&str>) -> DeviceFilter {
    DeviceFilter::new(auth::feed_devices(query))
}

async fn predictions_socket(
    State(core): State<Core>,
    RawQuery(query): RawQuery,
    grant: Option<Extension<Grant>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !core.is_ready() {
        return Error::Unavailable("the service is not ready (starting or shutting down)".into())
            .into_response();
    }
    // Devices named in the query were checked by the auth middleware (403); the rest are filtered here.
    let filter =
        feed_filter(query.as_deref()).within(grant.map(|Extension(g)| g).unwrap_or_default());
    let limit = core.limits.ws_max_frame_bytes;
    upgrade
        .max_frame_size(limit)
        .max_message_size(limit)
        .read_buffer_size(core.limits.ws_read_buffer_bytes)
        .on_upgrade(move |socket| {
            run_predictions_socket(core, filter, socket).instrument(tracing::info_span!("ws_feed"))
        })
}

/// The dashboard feed. Sending waits for the client, but the broadcast feed never waits for anyone: while
/// this socket is slow the buffer moves on, and the next receive reports (and counts) what was skipped.
async fn run_predictions_socket(core: Core, filter: DeviceFilter, socket: WebSocket) {
    let _open = feed::OpenStream::new(&core.metrics, TRANSPORT, "feed");
    let (mut sink, mut stream) = socket.split();
    // Every replica's predictions with a shared store (`--store redis://…`), else this replica's.
    let mut predictions = core.state.subscribe();
    // Reading the client side only to notice it leaving (and to answer pings).
    let client_gone = async move {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    tokio::pin!(client_gone);
    let delivered = feed::delivered(core.clone());
    tokio::pin!(delivered);
    loop {
        let message = tokio::select! {
            biased;
            () = &mut client_gone => return,
            event = feed::next_event(&core, &mut predictions, TRANSPORT) => match event {
                FeedEvent::Prediction(p) if filter.matches(&p.device_id) => ServerFrame::Prediction(&p).message(),
                FeedEvent::Prediction(_) => continue,
                FeedEvent::Skipped(count) => ServerFrame::Skipped { count }.message(),
                FeedEvent::Closed => shutting_down(),
            },
            () = &mut delivered => {
                // The drain is over: what the flushed windows produced is already buffered here.
                for p in feed::drain_buffered(&core, &mut predictions, TRANSPORT) {
                    if filter.matches(&p.device_id)
                        && sink.send(ServerFrame::Prediction(&p).message()).await.is_err()
                    {
                        return;
                    }
                }
                shutting_down()
            }
        };
        let closing = matches!(message, Message::Close(_));
        let sent = tokio::select! {
            sent = sink.send(message) => sent.is_ok(),
            () = &mut client_gone => false,
        };
        if !sent || closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let json = serde_json::json!({
            "format_version": 1, "name": "t", "version": "1", "model_file": "model.onnx",
            "model_sha256": "00", "window_seconds": 1.0, "recommended_hop_seconds": 1.0,
            "modalities": [
                {"name": "acc", "channels": 3, "sample_rate_hz": 4.0, "window_samples": 4, "input": "x_acc"},
                {"name": "hr", "channels": 1, "sample_rate_hz": 1.0, "window_samples": 1, "input": "x_hr"}
            ],
            "classes": ["a", "b"], "inputs": {"present": "present"},
            "outputs": {"logits": "logits", "probabilities": "probabilities", "embedding": "embedding"},
            "embedding_size": 2
        });
        serde_json::from_value(json).expect("test manifest parses")
    }

    fn frame(index: u16, count: u32, start: i64, values: &[f32]) -> Vec<u8> {
        let mut f = vec![BINARY_MAGIC, BINARY_VERSION];
        f.extend_from_slice(&index.to_le_bytes());
        f.extend_from_slice(&count.to_le_bytes());
        f.extend_from_slice(&start.to_le_bytes());
        for v in values {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f
    }

    #[test]
    fn decodes_a_binary_frame() {
        let m = manifest();
        let chunk =
            decode_binary_frame(&frame(0, 2, 123, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), "d", &m)
                .unwrap();
        assert_eq!(chunk.modality, "acc");
        assert_eq!(chunk.start_unix_nanos, 123);
        assert_eq!(chunk.samples, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let hr = decode_binary_frame(&frame(1, 1, -5, &[70.0]), "d", &m).unwrap();
        assert_eq!(
            (hr.modality.as_str(), hr.samples.as_slice()),
            ("hr", &[70.0][..])
        );
    }

    #[test]
    fn rejects_malformed_binary_frames_with_reasons() {
        let m = manifest();
        let reason = |f: &[u8]| decode_binary_frame(f, "d", &m).unwrap_err().reason();
        assert_eq!(reason(&[0xC5, 1, 0]), "bad_frame");
        let mut wrong_magic = frame(0, 1, 0, &[1.0, 2.0, 3.0]);
        wrong_magic[0] = b'{';
        assert_eq!(reason(&wrong_magic), "bad_frame");
        let mut wrong_version = frame(0, 1, 0, &[1.0, 2.0, 3.0]);
        wrong_version[1] = 2;
        assert_eq!(reason(&wrong_version), "bad_frame");
        assert_eq!(
            reason(&frame(2, 1, 0, &[1.0, 2.0, 3.0])),
            "unknown_modality"
        );
        assert_eq!(reason(&frame(0, 2, 0, &[1.0, 2.0, 3.0])), "bad_frame");
        assert_eq!(
            reason(&frame(0, u32::MAX, 0, &[1.0, 2.0, 3.0])),
            "bad_frame"
        );
    }

    #[test]
    fn parses_json_chunks_and_hellos() {
        let m = manifest();
        let text = r#"{"sequence": 4, "modality": "acc", "start_unix_nanos": 10, "samples": [[1, 2, 3], [4, 5, 6]]}"#;
        let (sequence, request) = parse_text_frame(text, "dev", &m);
        assert_eq!(sequence, Some(4));
        let Ok(DeviceRequest::Chunk(chunk)) = request else {
            panic!("expected a chunk")
        };
        assert_eq!(chunk.device_id, "dev");
        assert_eq!(chunk.samples, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let (_, hello) = parse_text_frame(r#"{"type": "hello", "modalities": ["acc"]}"#, "dev", &m);
        assert!(matches!(hello, Ok(DeviceRequest::Hello(ref v)) if v == &["acc".to_string()]));
    }

    #[test]
    fn rejects_bad_json_frames_with_reasons() {
        let m = manifest();
        let reason = |t: &str| match parse_text_frame(t, "d", &m).1 {
            Err(e) => e.reason(),
            Ok(_) => "accepted",
        };
        assert_eq!(reason("not json"), "bad_json");
        assert_eq!(
            reason(r#"{"modality": "acc", "samples": [[1,2,3]]}"#),
            "bad_json"
        );
        assert_eq!(
            reason(r#"{"modality": "acc", "start_unix_nanos": 1, "samples": [[1,2,3]], "x": 1}"#),
            "bad_json"
        );
        assert_eq!(reason(r#"{"type": "bye"}"#), "bad_json");
        assert_eq!(
            reason(r#"{"modality": "acc", "start_unix_nanos": 1, "samples": [[1,2,3],[4,5]]}"#),
            "channel_multiple"
        );
        assert_eq!(
            reason(r#"{"modality": "acc", "start_unix_nanos": 1, "samples": "x"}"#),
            "bad_json"
        );
        // Unknown modalities are the core's to reject (with its own reason).
        assert_eq!(
            reason(r#"{"modality": "gps", "start_unix_nanos": 1, "samples": [[1]]}"#),
            "accepted"
        );
    }

    #[test]
    fn feed_filters_from_queries() {
        let f = feed_filter(Some("device=a&device=b,c&other=x"));
        assert!(f.matches("a") && f.matches("b") && f.matches("c") && !f.matches("x"));
        assert!(feed_filter(None).matches("anything"));
        assert!(feed_filter(Some("device=a%2Cb")).matches("b"));
    }
}
