//! gRPC adapter (tonic): `crossl.v1.Ingest` (bidirectional device/gateway streams, one-window Predict) and
//! `crossl.v1.Predictions` (Watch, Latest) over the protocol-neutral core, the Open Inference Protocol's
//! `inference.GRPCInferenceService` (`api::oip_grpc`), plus standard health and reflection. API keys are
//! checked by an interceptor per crossl.v1 service (per method in the inference service).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::auth::{self, Grant, Scope};
use super::feed::{self, DeviceFilter, FeedEvent, SubscribedDevices};
use crate::app::Core;
use crate::error::Error;
use crate::ingest::owners::{Claim, StreamOwnership};
use crate::ingest::{SensorChunk, Transport};
use crate::proto;
use crate::proto::ingest_server::{Ingest, IngestServer};
use crate::proto::predictions_server::{Predictions, PredictionsServer};
use crate::proto::stream_request::Kind as RequestKind;
use crate::proto::stream_response::Kind as ResponseKind;
use crate::store::Prediction;

/// Metric label of this adapter.
const TRANSPORT: &str = "grpc";
/// Chunk errors (and the final status) queued per stream before the stream's reader waits for its client.
const STREAM_ERROR_BUFFER: usize = 64;

/// The gRPC services `app::serve` mounts on the gRPC listener: Ingest, Predictions, the OIP inference
/// service, health, reflection.
pub fn routes(core: Core) -> tonic::service::Routes {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(core.clone(), health_reporter));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(proto::inference::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(proto::inference::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the compiled-in descriptor sets are valid");

    let max_message = core.limits.grpc_max_message_bytes;
    let ingest = IngestServer::new(IngestService { core: core.clone() })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let predictions = PredictionsServer::new(PredictionsService { core: core.clone() })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);

    let ingest = InterceptedService::new(
        ingest,
        AuthInterceptor {
            core: core.clone(),
            scope: Scope::Ingest,
        },
    );
    let predictions = InterceptedService::new(
        predictions,
        AuthInterceptor {
            core: core.clone(),
            scope: Scope::Read,
        },
    );
    tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(OversizedIsResourceExhausted {
            inner: ingest,
            core: core.clone(),
        })
        .add_service(OversizedIsResourceExhausted {
            inner: predictions,
            core: core.clone(),
        })
        .add_service(OversizedIsResourceExhausted {
            inner: super::oip_grpc::server(core.clone()),
            core,
        })
}

/// tonic refuses a request message over `max_decoding_message_size` with OUT_OF_RANGE before any handler
/// runs; the gRPC convention (and our error mapping for every other size limit) is RESOURCE_EXHAUSTED.
/// This wrapper rewrites that one status (in the response headers or trailers) and counts it. Streams see
/// the same error in their reader, which maps it itself.
#[derive(Clone)]
struct OversizedIsResourceExhausted<S> {
    inner: S,
    core: Core,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService
    for OversizedIsResourceExhausted<S>
{
    const NAME: &'static str = S::NAME;
}

/// Rewrites an oversized-message OUT_OF_RANGE status to RESOURCE_EXHAUSTED; true when it did.
fn rewrite_oversized(headers: &mut axum::http::HeaderMap) -> bool {
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let oversized = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        // grpc-message is percent-encoded.
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if out_of_range && oversized {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
    out_of_range && oversized
}

impl<S, B, ResBody> tower::Service<axum::http::Request<B>> for OversizedIsResourceExhausted<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = axum::http::Response<axum::body::Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use http_body_util::BodyExt;
        let response = self.inner.call(request);
        let metrics = Arc::clone(&self.core.metrics);
        Box::pin(async move {
            let (mut parts, body) = response.await?.into_parts();
            let count = move || {
                metrics
                    .predict_rejected
                    .with_label_values(&[TRANSPORT, "too_large"])
                    .inc()
            };
            if rewrite_oversized(&mut parts.headers) {
                count();
            }
            let body = body.map_frame(move |frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    if rewrite_oversized(&mut trailers) {
                        count();
                    }
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            });
            Ok(axum::http::Response::from_parts(
                parts,
                axum::body::Body::new(body),
            ))
        })
    }
}

/// Maps the one error type to a gRPC status (codes documented on `Error`).
impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidInput { .. } => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::PayloadTooLarge(_) | Error::ResourceExhausted { .. } => {
                tonic::Code::ResourceExhausted
            }
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::Conflict { .. } => tonic::Code::Aborted,
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            Error::Internal(_) => tonic::Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Serving status of the whole server and of each service follows the core's readiness; the task ends
/// with the service.
async fn report_health(core: Core, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    const SERVICES: [&str; 4] = [
        "",
        "crossl.v1.Ingest",
        "crossl.v1.Predictions",
        "inference.GRPCInferenceService",
    ];
    let mut health = core.health.clone();
    loop {
        let ready = health.borrow_and_update().phase == crate::app::Phase::Ready;
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in SERVICES {
            reporter.set_service_status(service, status).await;
        }
        if health.changed().await.is_err() {
            for service in SERVICES {
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            return;
        }
    }
}

/// Checks `authorization: Bearer …` metadata for one scope.
#[derive(Clone)]
struct AuthInterceptor {
    core: Core,
    scope: Scope,
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.core.auth.is_enabled() {
            return Ok(request);
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match self.core.auth.check(token, self.scope) {
            Ok(grant) => {
                // The handlers check a bound key's devices.
                request.extensions_mut().insert(grant);
                Ok(request)
            }
            Err(failure) => Err(auth::refuse(&self.core, Transport::Grpc, failure).into()),
        }
    }
}

fn prediction_to_proto(p: &Prediction) -> proto::Prediction {
    proto::Prediction {
        device_id: p.device_id.clone(),
        window_end_unix_nanos: p.window_end_unix_nanos,
        label: p.label.clone(),
        class_index: p.class_index as u32,
        probabilities: p.probabilities.clone(),
        embedding: p.embedding.clone(),
        present_modalities: p.present_modalities.to_vec(),
        timings: Some(proto::Timings {
            queue_seconds: p.timings.queue_seconds,
            compute_seconds: p.timings.compute_seconds,
            end_to_end_seconds: p.timings.end_to_end_seconds,
            batch_size: p.timings.batch_size as u32,
        }),
        logits: Vec::new(),
        personalized: p.personalized,
        general: p.general.as_ref().map(|g| proto::GeneralAnswer {
            label: g.label.clone(),
            class_index: g.class_index as u32,
            probabilities: g.probabilities.clone(),
        }),
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How a long-lived stream ends when the service stops under it.
fn shutting_down() -> Status {
    Error::Unavailable("server shutting down".into()).into()
}

fn not_ready() -> Status {
    Error::Unavailable("the service is not ready (starting or shutting down)".into()).into()
}

struct IngestService {
    core: Core,
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ResponseStream<proto::StreamResponse>;

    async fn stream(
        &self,
        request: Request<Streaming<proto::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let core = self.core.clone();
        if !core.is_ready() {
            return Err(not_ready());
        }
        let span = tracing::info_span!("grpc_stream", peer = ?request.remote_addr());
        let grant = grant_of(&request);
        // Devices join the subscription before their first chunk is pushed, so no prediction is missed.
        let mut predictions = core.feeds.subscribe(TRANSPORT);
        let (replies, mut replies_rx) = mpsc::channel(STREAM_ERROR_BUFFER);
        let (ownership, lost) = core.owners.open(grant.key());
        let stream = StreamContext {
            grant,
            ownership,
            devices: predictions.devices.clone(),
        };
        tokio::spawn(
            read_stream(core.clone(), request.into_inner(), stream, lost, replies)
                .instrument(span.clone()),
        );
        let linger = core.limits.stream_linger;

        let output = async_stream::stream! {
            let _open = feed::OpenStream::new(&core.metrics, TRANSPORT, "ingest");
            // Shutdown: the stream stays open through the drain and ends once the flushed windows'
            // predictions have been routed to it (docs/protocol.md, "Shutdown").
            let delivered = feed::delivered(core.clone());
            tokio::pin!(delivered);
            let mut input_open = true;
            let linger_until = tokio::time::sleep(std::time::Duration::MAX / 4);
            tokio::pin!(linger_until);
            loop {
                tokio::select! {
                    biased;
                    reply = replies_rx.recv(), if input_open => match reply {
                        Some(Ok(response)) => yield Ok(response),
                        Some(Err(status)) => {
                            yield Err(status);
                            break;
                        }
                        None => {
                            // The client finished sending: deliver the windows still closing, then end.
                            input_open = false;
                            linger_until.as_mut().reset(tokio::time::Instant::now() + linger);
                        }
                    },
                    prediction = predictions.recv() => match prediction {
                        Some(p) => yield Ok(proto::StreamResponse {
                            kind: Some(ResponseKind::Prediction(prediction_to_proto(&p))),
                        }),
                        None => break,
                    },
                    () = &mut linger_until, if !input_open => break,
                    () = &mut delivered => {
                        while let Some(p) = predictions.try_recv() {
                            yield Ok(proto::StreamResponse {
                                kind: Some(ResponseKind::Prediction(prediction_to_proto(&p))),
                            });
                        }
                        yield Err(shutting_down());
                        break;
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(output)))
    }

    async fn predict(
        &self,
        request: Request<proto::PredictRequest>,
    ) -> Result<Response<proto::Prediction>, Status> {
        // One-shot admission: a place in this caller's concurrency limit (API key, else peer address).
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
        let client = crate::batch::ClientKey::new(
            self.core.auth.is_enabled(),
            token.as_deref(),
            request.remote_addr().map(|a| a.ip()),
        );
        let _permit = self.core.clients.acquire(&client).inspect_err(|e| {
            let m = &self.core.metrics;
            m.predict_requests.with_label_values(&[TRANSPORT]).inc();
            m.predict_rejected
                .with_label_values(&[TRANSPORT, e.reason()])
                .inc();
        })?;
        let modalities: HashMap<String, Vec<f32>> = request
            .into_inner()
            .modalities
            .into_iter()
            .map(|(name, w)| (name, w.samples))
            .collect();
        let out = self.core.predict(Transport::Grpc, modalities).await?;
        Ok(Response::new(proto::Prediction {
            device_id: String::new(),
            window_end_unix_nanos: 0,
            label: out.label,
            class_index: out.class_index as u32,
            probabilities: out.probabilities,
            embedding: out.embedding,
            present_modalities: out.present,
            timings: Some(proto::Timings {
                queue_seconds: out.timings.queue_seconds,
                compute_seconds: out.timings.compute_seconds,
                end_to_end_seconds: out.timings.end_to_end_seconds,
                batch_size: out.timings.batch_size as u32,
            }),
            logits: out.logits,
            // One-shot windows belong to no device: always the general model.
            personalized: false,
            general: None,
        }))
    }
}

/// What the key of a call may touch (auth off: everything).
fn grant_of<T>(request: &Request<T>) -> Grant {
    request
        .extensions()
        .get::<Grant>()
        .cloned()
        .unwrap_or_default()
}

/// `ChunkError.index` of a notice that answers no request (a device taken over by another stream).
pub const NOTICE_INDEX: u64 = u64::MAX;

/// One ingest stream's view: its key's grant, the devices it owns and the predictions it subscribes to.
struct StreamContext {
    grant: Grant,
    ownership: StreamOwnership,
    devices: SubscribedDevices,
}

/// Reads one stream's requests into the ingest core. Rejected requests become `ChunkError` replies; only a
/// broken or oversized message ends the stream (with a status). A device taken over by a newer stream is
/// reported as a `ChunkError` notice (`conflict` / `taken_over`, index [`NOTICE_INDEX`]) and its
/// predictions stop.
async fn read_stream(
    core: Core,
    mut requests: Streaming<proto::StreamRequest>,
    stream: StreamContext,
    mut lost: mpsc::UnboundedReceiver<String>,
    replies: mpsc::Sender<Result<proto::StreamResponse, Status>>,
) {
    let mut index = 0u64;
    loop {
        let message = tokio::select! {
            message = requests.message() => message,
            Some(device_id) = lost.recv() => {
                if stream.ownership.lost(&device_id) {
                    stream.devices.remove(&device_id);
                    core.metrics.stream_takeovers.with_label_values(&[TRANSPORT]).inc();
                    let e = taken_over_notice(&device_id);
                    let reply = chunk_error_reply(NOTICE_INDEX, 0, device_id, String::new(), &e);
                    if replies.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            // The client is gone (the response stream was dropped).
            () = replies.closed() => return,
        };
        let request = match message {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(status) => {
                let status = if status.code() == tonic::Code::OutOfRange {
                    // tonic reports an oversized message as OUT_OF_RANGE; the gRPC convention (and our
                    // error mapping) is RESOURCE_EXHAUSTED.
                    core.metrics
                        .chunks_rejected
                        .with_label_values(&[TRANSPORT, "too_large"])
                        .inc();
                    Error::PayloadTooLarge(format!(
                        "{} (raise --grpc-max-message-bytes or send smaller chunks)",
                        status.message()
                    ))
                    .into()
                } else if is_decode_failure(&status) {
                    // tonic reports a message that is not a StreamRequest as INTERNAL (gRPC's convention
                    // for parse errors); it is the client's mistake, so it is INVALID_ARGUMENT here.
                    core.metrics
                        .chunks_rejected
                        .with_label_values(&[TRANSPORT, "bad_message"])
                        .inc();
                    Error::invalid(
                        "bad_message",
                        format!("{} (not a crossl.v1.StreamRequest)", status.message()),
                    )
                    .into()
                } else {
                    status
                };
                tracing::debug!(code = ?status.code(), message = status.message(), "stream input failed");
                let _ = replies.send(Err(status)).await;
                return;
            }
        };
        let sequence = request.sequence;
        let (device_id, modality, result) = apply_request(&core, &stream, request.kind);
        if let Err(e) = result {
            let reply = chunk_error_reply(index, sequence, device_id, modality, &e);
            if replies.send(Ok(reply)).await.is_err() {
                return;
            }
        }
        index += 1;
    }
}

fn taken_over_notice(device_id: &str) -> Error {
    Error::Conflict {
        reason: "taken_over",
        message: format!(
            "device {device_id:?} was taken over by a newer stream; this stream no longer carries it \
             (its chunks are refused until it sends a hello for the device)"
        ),
    }
}

/// A `ChunkError` reply on an ingest stream.
fn chunk_error_reply(
    index: u64,
    sequence: u64,
    device_id: String,
    modality: String,
    e: &Error,
) -> proto::StreamResponse {
    proto::StreamResponse {
        kind: Some(ResponseKind::ChunkError(proto::ChunkError {
            index,
            sequence,
            device_id,
            modality,
            kind: e.kind().to_string(),
            reason: e.reason().to_string(),
            message: e.to_string(),
        })),
    }
}

/// Whether a request-stream error is tonic's protobuf decode failure (tonic-prost's wording).
fn is_decode_failure(status: &Status) -> bool {
    status.code() == tonic::Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
}

/// Applies one hello or chunk; returns the device and modality it named, for the error report.
fn apply_request(
    core: &Core,
    stream: &StreamContext,
    kind: Option<RequestKind>,
) -> (String, String, Result<(), Error>) {
    let StreamContext {
        grant,
        ownership,
        devices,
    } = stream;
    match kind {
        Some(RequestKind::Hello(hello)) => {
            let result = auth::require_device(core, Transport::Grpc, grant, &hello.device_id)
                .and_then(|()| {
                    // A hello says "this stream is the device's timeline now": it takes over.
                    let claim = ownership.claim(&hello.device_id, true)?;
                    let registered =
                        core.ingest
                            .hello(Transport::Grpc, &hello.device_id, &hello.modalities);
                    if registered.is_err() && claim == Claim::New {
                        ownership.release(&hello.device_id);
                    }
                    registered
                });
            if result.is_ok() {
                tracing::debug!(device_id = %hello.device_id, metadata = ?hello.metadata, "hello");
                devices.add(&hello.device_id);
            }
            (hello.device_id, String::new(), result)
        }
        Some(RequestKind::Chunk(chunk)) => {
            let (device_id, modality) = (chunk.device_id.clone(), chunk.modality.clone());
            let result = auth::require_device(core, Transport::Grpc, grant, &device_id)
                .and_then(|()| ownership.claim(&device_id, false))
                .and_then(|claim| {
                    // Listen for the device before its chunk can close a window, so the prediction is
                    // never missed.
                    let newly_added = devices.add(&device_id);
                    let pushed = core
                        .ingest
                        .push(
                            Transport::Grpc,
                            SensorChunk {
                                device_id: chunk.device_id,
                                modality: chunk.modality,
                                start_unix_nanos: chunk.start_unix_nanos,
                                samples: chunk.samples,
                            },
                        )
                        .map(|_receipt| ());
                    if pushed.is_err() && newly_added {
                        devices.remove(&device_id);
                    }
                    if pushed.is_err() && claim == Claim::New {
                        ownership.release(&device_id);
                    }
                    pushed
                });
            (device_id, modality, result)
        }
        None => {
            core.metrics
                .chunks_rejected
                .with_label_values(&[TRANSPORT, "empty_request"])
                .inc();
            (
                String::new(),
                String::new(),
                Err(Error::invalid(
                    "empty_request",
                    "StreamRequest has neither hello nor chunk",
                )),
            )
        }
    }
}

struct PredictionsService {
    core: Core,
}

#[tonic::async_trait]
impl Predictions for PredictionsService {
    type WatchStream = ResponseStream<proto::Prediction>;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let core = self.core.clone();
        if !core.is_ready() {
            return Err(not_ready());
        }
        let grant = grant_of(&request);
        let filter = DeviceFilter::new(request.into_inner().device_ids);
        // A bound key may name only its own devices, and an empty list means all of its own.
        for device in filter.devices() {
            auth::require_device(&core, Transport::Grpc, &grant, device)?;
        }
        let filter = filter.within(grant);
        // Every replica's predictions with a shared store (`--store redis://…`), else this replica's.
        let mut predictions = core.state.subscribe();
        // The stream is pulled by the transport: a client that reads slowly stops pulling, the broadcast
        // buffer moves on without it, and the skipped predictions are counted. Ingest never waits.
        let output = async_stream::stream! {
            let _open = feed::OpenStream::new(&core.metrics, TRANSPORT, "feed");
            let delivered = feed::delivered(core.clone());
            tokio::pin!(delivered);
            loop {
                tokio::select! {
                    biased;
                    event = feed::next_event(&core, &mut predictions, TRANSPORT) => match event {
                        FeedEvent::Prediction(p) if filter.matches(&p.device_id) => yield Ok(prediction_to_proto(&p)),
                        FeedEvent::Prediction(_) | FeedEvent::Skipped(_) => {}
                        FeedEvent::Closed if feed::has_stopped_serving(&core) => {
                            yield Err(shutting_down());
                            break;
                        }
                        FeedEvent::Closed => break,
                    },
                    () = &mut delivered => {
                        // The drain is over: what the flushed windows produced is already buffered here.
                        for p in feed::drain_buffered(&core, &mut predictions, TRANSPORT) {
                            if filter.matches(&p.device_id) {
                                yield Ok(prediction_to_proto(&p));
                            }
                        }
                        yield Err(shutting_down());
                        break;
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(output)))
    }

    async fn latest(
        &self,
        request: Request<proto::LatestRequest>,
    ) -> Result<Response<proto::Prediction>, Status> {
        let grant = grant_of(&request);
        let device_id = request.into_inner().device_id;
        auth::require_device(&self.core, Transport::Grpc, &grant, &device_id)?;
        let prediction = self.core.state.latest(&device_id).await?.ok_or_else(|| {
            Error::NotFound(format!("no prediction for device {device_id:?} yet"))
        })?;
        Ok(Response::new(prediction_to_proto(&prediction)))
    }
}
