//! WebSocket connections: one `GET /v1/ws/devices/{id}` per device. A writer task turns queued ticks into
//! binary or JSON frames (written from the templates into a shared arena, one flush per burst); a reader
//! task counts predictions and error frames. The two halves are separate tasks so a blocked write never
//! stops predictions from being read.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes, client::IntoClientRequest};

use crate::config::WsFormat;
use crate::frames::ws_hello;
use crate::step::{StepShared, TickBatch};

/// `http://host:port` (or `ws://…`) → the device socket URL.
pub fn device_socket_url(target: &str, device_id: &str) -> anyhow::Result<String> {
    let base = target.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") {
        base.to_string()
    } else {
        bail!(
            "WebSocket target must start with http:// or ws:// (plain, 127.0.0.1), got {target:?}"
        )
    };
    Ok(format!("{base}/v1/ws/devices/{device_id}"))
}

#[derive(serde::Deserialize)]
struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    window_end_unix_nanos: Option<i64>,
    timings: Option<Timings>,
    reason: Option<String>,
    count: Option<u64>,
    #[serde(borrow)]
    modalities: Option<Vec<WelcomeModality<'a>>>,
}

#[derive(serde::Deserialize)]
struct Timings {
    end_to_end_seconds: f64,
}

#[derive(serde::Deserialize)]
struct WelcomeModality<'a> {
    index: u16,
    #[serde(borrow)]
    name: &'a str,
}

/// The tasks of one open device socket.
pub struct WsDevice {
    pub queue: mpsc::Sender<TickBatch>,
    pub writer: JoinHandle<()>,
    pub reader: JoinHandle<()>,
}

/// Connects device `device`, checks the welcome frame names the manifest's modalities in order (the
/// binary frame's indices), declares them with a hello and starts the writer and reader tasks.
pub async fn open_device(
    target: &str,
    device: u32,
    shared: Arc<StepShared>,
    format: WsFormat,
    capacity: usize,
    api_key: Option<&str>,
) -> anyhow::Result<WsDevice> {
    let url = device_socket_url(target, &shared.device_ids[device as usize])?;
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("bad URL {url}"))?;
    if let Some(key) = api_key {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}")
                .parse()
                .context("API key is not a valid header value")?,
        );
    }
    let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .with_context(|| format!("connecting to {url} timed out"))?
        .with_context(|| format!("connecting to {url}"))?;
    let (mut sink, mut stream) = socket.split();
    match stream.next().await {
        Some(Ok(Message::Text(text))) => {
            let frame: ServerFrame<'_> = serde_json::from_str(&text)
                .with_context(|| format!("unreadable first frame {text}"))?;
            let names: Vec<(u16, &str)> = frame
                .modalities
                .unwrap_or_default()
                .iter()
                .map(|m| (m.index, m.name))
                .collect();
            let expected: Vec<(u16, &str)> = shared
                .modality_names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as u16, n.as_str()))
                .collect();
            anyhow::ensure!(
                frame.kind == "welcome" && names == expected,
                "the server's welcome does not list the manifest's modalities in order (another model?): {text}"
            );
        }
        other => bail!("expected a welcome frame from {url}, got {other:?}"),
    }
    sink.send(Message::Text(ws_hello(&shared.modality_names).into()))
        .await
        .context("sending the hello")?;

    let (queue, mut ticks) = mpsc::channel::<TickBatch>(capacity);
    let writer_shared = shared.clone();
    let writer = tokio::spawn(async move {
        let shared = writer_shared;
        let mut arena = BytesMut::with_capacity(16 * 1024);
        let mut write_batch = |batch: TickBatch, out: &mut Vec<Message>| {
            for m in batch.modalities() {
                arena.reserve(shared.chunk_len_hint(m));
                shared.write_chunk(&mut arena, &batch, m);
                let bytes = arena.split().freeze();
                out.push(match format {
                    WsFormat::Binary => Message::Binary(bytes),
                    WsFormat::Json => {
                        Message::Text(Utf8Bytes::try_from(bytes).expect("JSON frames are UTF-8"))
                    }
                });
            }
        };
        let mut pending: Vec<Message> = Vec::with_capacity(32);
        let result: Result<(), tungstenite::Error> = async {
            while let Some(batch) = ticks.recv().await {
                write_batch(batch, &mut pending);
                while let Ok(more) = ticks.try_recv() {
                    write_batch(more, &mut pending);
                }
                for message in pending.drain(..) {
                    sink.feed(message).await?;
                }
                sink.flush().await?;
            }
            sink.send(Message::Close(None)).await
        }
        .await;
        if let Err(e) = result {
            shared
                .stats
                .record_connection_error(format!("WebSocket write: {e}"));
        }
    });
    let reader = tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Message::Text(text)) => match serde_json::from_str::<ServerFrame<'_>>(&text) {
                    Ok(f) if f.kind == "prediction" => {
                        if let Some(end) = f.window_end_unix_nanos {
                            shared.on_prediction(
                                device,
                                end,
                                f.timings.map(|t| t.end_to_end_seconds),
                            );
                        }
                    }
                    Ok(f) if f.kind == "error" => {
                        shared
                            .stats
                            .record_error(f.reason.as_deref().unwrap_or("unknown"));
                    }
                    Ok(f) if f.kind == "skipped" => {
                        shared
                            .stats
                            .skipped
                            .fetch_add(f.count.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        shared
                            .stats
                            .record_connection_error(format!("unreadable frame: {e}"));
                    }
                },
                Ok(Message::Close(close)) => {
                    if let Some(c) = close
                        && c.code != tungstenite::protocol::frame::coding::CloseCode::Normal
                    {
                        shared.stats.record_connection_error(format!(
                            "server closed the socket: {} {}",
                            u16::from(c.code),
                            c.reason
                        ));
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    shared
                        .stats
                        .record_connection_error(format!("WebSocket read: {e}"));
                    return;
                }
            }
        }
    });
    Ok(WsDevice {
        queue,
        writer,
        reader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls() {
        assert_eq!(
            device_socket_url("http://127.0.0.1:1/", "d-1").unwrap(),
            "ws://127.0.0.1:1/v1/ws/devices/d-1"
        );
        assert_eq!(
            device_socket_url("ws://127.0.0.1:1", "d").unwrap(),
            "ws://127.0.0.1:1/v1/ws/devices/d"
        );
        assert!(device_socket_url("https://127.0.0.1:1", "d").is_err());
    }
}
