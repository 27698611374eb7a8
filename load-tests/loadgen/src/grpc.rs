//! gRPC connections: `crossl.v1.Ingest/Stream` with a codec that writes the pre-encoded chunk templates
//! straight into tonic's frame buffer (no `StreamRequest` is built per chunk) and decodes responses with
//! prost. One stream per device, or one per `--gateway-devices` devices.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes};
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use crossl_serve::proto;

use crate::frames::grpc_hello;
use crate::step::{StepShared, TickBatch};

/// One request on the stream: a pre-encoded hello, or one modality's chunk of a tick.
pub enum Outgoing {
    Raw(Bytes),
    Chunk(TickBatch, usize),
}

struct LoadCodec {
    shared: Arc<StepShared>,
}

struct ChunkEncoder {
    shared: Arc<StepShared>,
}

struct ResponseDecoder;

impl Codec for LoadCodec {
    type Encode = Outgoing;
    type Decode = proto::StreamResponse;
    type Encoder = ChunkEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> ChunkEncoder {
        ChunkEncoder {
            shared: self.shared.clone(),
        }
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for ChunkEncoder {
    type Item = Outgoing;
    type Error = tonic::Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        match item {
            Outgoing::Raw(bytes) => dst.put_slice(&bytes),
            Outgoing::Chunk(batch, modality) => self.shared.write_chunk(dst, &batch, modality),
        }
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = proto::StreamResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<proto::StreamResponse>, tonic::Status> {
        proto::StreamResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable StreamResponse: {e}")))
    }
}

/// Opens one HTTP/2 connection.
pub async fn connect(target: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(target.to_string())
        .with_context(|| format!("bad gRPC target {target:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {target}"))
}

/// Opens an `Ingest/Stream` on `channel` for `devices` (each announced by a hello declaring every
/// modality). Returns the queue the scheduler feeds (`capacity` ticks) and the task reading responses.
pub async fn open_stream(
    channel: Channel,
    devices: &[u32],
    shared: Arc<StepShared>,
    capacity: usize,
    api_key: Option<&str>,
) -> anyhow::Result<(mpsc::Sender<TickBatch>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<TickBatch>(capacity);
    let hellos: Vec<Outgoing> = devices
        .iter()
        .map(|&d| {
            Outgoing::Raw(Bytes::from(grpc_hello(
                &shared.device_ids[d as usize],
                &shared.modality_names,
            )))
        })
        .collect();
    let chunks = ReceiverStream::new(rx).flat_map(|batch: TickBatch| {
        futures::stream::iter(batch.modalities().map(move |m| Outgoing::Chunk(batch, m)))
    });
    let requests = futures::stream::iter(hellos).chain(chunks);
    let mut request = tonic::Request::new(requests);
    if let Some(key) = api_key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}")
                .parse()
                .context("API key is not a valid header value")?,
        );
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| anyhow::anyhow!("gRPC channel not ready: {e}"))?;
    let codec = LoadCodec {
        shared: shared.clone(),
    };
    let mut responses = grpc
        .streaming(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static("/crossl.v1.Ingest/Stream"),
            codec,
        )
        .await
        .map_err(|s| anyhow::anyhow!("Ingest/Stream refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let single = (devices.len() == 1).then(|| devices[0]);
    let reader = tokio::spawn(async move {
        loop {
            match responses.message().await {
                Ok(Some(response)) => match response.kind {
                    Some(proto::stream_response::Kind::Prediction(p)) => {
                        let device = single.or_else(|| shared.device_index(&p.device_id));
                        if let Some(device) = device {
                            shared.on_prediction(
                                device,
                                p.window_end_unix_nanos,
                                p.timings.map(|t| t.end_to_end_seconds),
                            );
                        }
                    }
                    Some(proto::stream_response::Kind::ChunkError(e)) => {
                        shared.stats.record_error(&e.reason);
                    }
                    None => {}
                },
                Ok(None) => return,
                Err(status) => {
                    shared.stats.record_connection_error(format!(
                        "gRPC stream ended: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    return;
                }
            }
        }
    });
    Ok((tx, reader))
}
