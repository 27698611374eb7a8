//! Generated protobuf/gRPC types of `proto/crossl/v1/crossl.proto` (package `crossl.v1`), shared by the
//! gRPC adapter (`api::grpc`) and the replay client.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::unwrap_used)]

tonic::include_proto!("crossl.v1");

/// Encoded file descriptor set of the crossl.v1 protos, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("crossl_v1_descriptor");

/// Generated types of `proto/inference/grpc_service.proto` (package `inference`): the Open Inference
/// Protocol's `GRPCInferenceService`, served by `api::oip_grpc`.
pub mod inference {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::unwrap_used)]

    tonic::include_proto!("inference");

    /// Encoded file descriptor set of the inference protos, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("inference_descriptor");
}
