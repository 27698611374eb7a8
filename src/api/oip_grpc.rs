//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (proto/inference/
//! grpc_service.proto) on the gRPC listener, over the same protocol core as the HTTP routes (`api::oip`).
//!
//! ServerLive, ServerReady, ModelReady and ServerMetadata are open (like `/v2`, `/v2/health/*` and
//! `…/ready` over HTTP); ModelMetadata needs the `read` scope and ModelInfer the `ingest` scope. ModelInfer
//! takes a place in the caller's one-shot concurrency limit and enters the one-shot queue whole, exactly
//! like `POST /v2/models/{name}/infer`. FP32 inputs come as `contents.fp32_contents` or as
//! `raw_input_contents` (little-endian bytes, one entry per input); when the request used raw inputs the
//! outputs come back as `raw_output_contents` (as Triton does), else as `contents.fp32_contents`. Every
//! other method of Triton's superset of the service answers UNIMPLEMENTED with a message naming the ones
//! served.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{Either, Ready, ready};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::auth::{self, Scope};
use super::oip;
use crate::app::Core;
use crate::batch::ClientKey;
use crate::error::Error;
use crate::ingest::Transport;
use crate::proto::inference as pb;
use crate::proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};

/// The methods this server implements; the rest of the service is UNIMPLEMENTED.
const SERVED: [&str; 6] = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
];

/// The service, ready to mount (message size limits as for the crossl.v1 services).
pub fn server(core: Core) -> Unimplemented<GrpcInferenceServiceServer<InferenceService>> {
    let max_message = core.limits.grpc_max_message_bytes;
    Unimplemented {
        inner: GrpcInferenceServiceServer::new(InferenceService { core })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
    }
}

/// Answers a method outside [`SERVED`] with UNIMPLEMENTED and a message (tonic's own answer has none).
#[derive(Clone)]
pub struct Unimplemented<S> {
    inner: S,
}

impl<S: NamedService> NamedService for Unimplemented<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<axum::http::Request<B>> for Unimplemented<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>
        + NamedService,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        if SERVED.contains(&method) {
            return Either::Right(self.inner.call(request));
        }
        let status = Status::unimplemented(format!(
            "{}/{method} is not implemented by crossl-serve; it serves {}",
            S::NAME,
            SERVED.join(", ")
        ));
        Either::Left(ready(Ok(status.into_http())))
    }
}

/// The `inference.GRPCInferenceService` handlers.
pub struct InferenceService {
    core: Core,
}

/// The token of `authorization: Bearer …` metadata (scheme case-insensitive).
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

impl InferenceService {
    /// Checks the call's API key for `scope` (counted and refused like every other transport's).
    fn authorize<T>(&self, request: &Request<T>, scope: Scope) -> Result<(), Status> {
        self.core
            .auth
            .check(bearer(request), scope)
            .map(drop)
            .map_err(|failure| auth::refuse(&self.core, Transport::Grpc, failure).into())
    }

    async fn infer(
        &self,
        request: Request<pb::ModelInferRequest>,
        arrived: Instant,
    ) -> Result<pb::ModelInferResponse, Error> {
        let core = &self.core;
        let client = ClientKey::new(
            core.auth.is_enabled(),
            bearer(&request),
            request.remote_addr().map(|a| a.ip()),
        );
        let _permit = core.clients.acquire(&client)?;
        let request = request.into_inner();
        let raw = !request.raw_input_contents.is_empty();
        let neutral = oip::InferRequest {
            model_name: request.model_name,
            model_version: Some(request.model_version),
            id: Some(request.id).filter(|id| !id.is_empty()),
            inputs: decode_inputs(request.inputs, request.raw_input_contents)?,
            outputs: request.outputs.into_iter().map(|o| o.name).collect(),
        };
        let answer = oip::infer(core, neutral, arrived).await?;
        let mut raw_output_contents = Vec::new();
        let outputs = answer
            .outputs
            .into_iter()
            .map(|o| {
                let contents = if raw {
                    raw_output_contents.push(o.data.iter().flat_map(|v| v.to_le_bytes()).collect());
                    None
                } else {
                    Some(pb::InferTensorContents {
                        fp32_contents: o.data,
                        ..Default::default()
                    })
                };
                pb::model_infer_response::InferOutputTensor {
                    name: o.name,
                    datatype: oip::FP32.into(),
                    shape: o.shape,
                    parameters: Default::default(),
                    contents,
                }
            })
            .collect();
        Ok(pb::ModelInferResponse {
            model_name: answer.model_name,
            model_version: answer.model_version,
            id: answer.id.unwrap_or_default(),
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        })
    }
}

/// The request's tensors in neutral form: values from `contents.fp32_contents`, or from
/// `raw_input_contents` (one little-endian entry per input, and then no input may carry `contents`).
fn decode_inputs(
    inputs: Vec<pb::model_infer_request::InferInputTensor>,
    raw: Vec<Vec<u8>>,
) -> Result<Vec<oip::InputTensor>, Error> {
    if raw.is_empty() {
        return Ok(inputs
            .into_iter()
            .map(|input| {
                let data = input.contents.map(|c| c.fp32_contents).unwrap_or_default();
                oip::InputTensor {
                    problem: oip::non_finite(&input.name, &data),
                    data,
                    name: input.name,
                    datatype: input.datatype,
                    shape: input.shape,
                }
            })
            .collect());
    }
    if raw.len() != inputs.len() {
        return Err(Error::invalid(
            "wrong_length",
            format!(
                "raw_input_contents has {} entries for {} inputs; it needs one per input, in order",
                raw.len(),
                inputs.len()
            ),
        ));
    }
    if let Some(input) = inputs.iter().find(|i| i.contents.is_some()) {
        return Err(Error::invalid(
            "mixed_contents",
            format!(
                "input {:?} has contents although the request uses raw_input_contents; use one or the other",
                input.name
            ),
        ));
    }
    Ok(inputs
        .into_iter()
        .zip(raw)
        .map(|(input, bytes)| {
            let (data, problem) = if bytes.len() % 4 != 0 {
                let e = Error::invalid(
                    "wrong_length",
                    format!(
                        "raw contents of input {:?} are {} bytes, not a whole number of FP32 values",
                        input.name,
                        bytes.len()
                    ),
                );
                (Vec::new(), Some(e))
            } else {
                let data: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let problem = oip::non_finite(&input.name, &data);
                (data, problem)
            };
            oip::InputTensor {
                name: input.name,
                datatype: input.datatype,
                shape: input.shape,
                data,
                problem,
            }
        })
        .collect())
}

fn tensor(t: oip::TensorSpec) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: t.name,
        datatype: t.datatype.into(),
        shape: t.shape,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _request: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        oip::check_model(&self.core.manifest, &request.name, Some(&request.version))?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: oip::SERVER_NAME.into(),
            version: oip::SERVER_VERSION.into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.authorize(&request, Scope::Read)?;
        let request = request.into_inner();
        oip::check_model(&self.core.manifest, &request.name, Some(&request.version))?;
        let info = oip::model_info(&self.core.manifest);
        Ok(Response::new(pb::ModelMetadataResponse {
            name: info.name,
            versions: info.versions,
            platform: info.platform.into(),
            inputs: info.inputs.into_iter().map(tensor).collect(),
            outputs: info.outputs.into_iter().map(tensor).collect(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let arrived = Instant::now();
        self.authorize(&request, Scope::Ingest)?;
        let answer =
            oip::counted(&self.core, Transport::Grpc, self.infer(request, arrived)).await?;
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, contents: Option<Vec<f32>>) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            parameters: Default::default(),
            contents: contents.map(|fp32_contents| pb::InferTensorContents {
                fp32_contents,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn raw_and_typed_contents_decode_to_the_same_values() {
        let typed = decode_inputs(vec![input("a", Some(vec![1.5, -2.0]))], vec![]).expect("typed");
        let bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let raw = decode_inputs(vec![input("a", None)], vec![bytes]).expect("raw");
        assert_eq!(typed[0].data, vec![1.5, -2.0]);
        assert_eq!(raw[0].data, typed[0].data);
        assert!(raw[0].problem.is_none());
    }

    #[test]
    fn raw_contents_are_checked() {
        let e = decode_inputs(vec![input("a", None), input("b", None)], vec![vec![0; 8]])
            .expect_err("one entry for two inputs");
        assert_eq!(e.reason(), "wrong_length");
        let e =
            decode_inputs(vec![input("a", Some(vec![1.0]))], vec![vec![0; 4]]).expect_err("mixed");
        assert_eq!(e.reason(), "mixed_contents");
        let decoded = decode_inputs(vec![input("a", None)], vec![vec![0; 6]]).expect("decoded");
        assert_eq!(
            decoded[0].problem.as_ref().map(Error::reason),
            Some("wrong_length")
        );
        let nan = f32::NAN.to_le_bytes().to_vec();
        let decoded = decode_inputs(vec![input("a", None)], vec![nan]).expect("decoded");
        assert_eq!(
            decoded[0].problem.as_ref().map(Error::reason),
            Some("non_finite")
        );
    }
}
