//! Compiles `proto/crossl/v1/*.proto` and the Open Inference Protocol service
//! (`proto/inference/grpc_service.proto`) into tonic/prost code, each with a file descriptor set for gRPC
//! reflection.
//!
//! protoc comes from `protoc-bin-vendored` unless `PROTOC` is set, so the build needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let protos = [proto_dir.join("crossl/v1/crossl.proto")];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // Respect an explicitly configured protoc; fall back to the vendored binary.
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let config = || {
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        config
    };

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("crossl_v1_descriptor.bin"))
        .compile_with_config(config(), &protos, std::slice::from_ref(&proto_dir))?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("inference_descriptor.bin"))
        .compile_with_config(
            config(),
            &[proto_dir.join("inference/grpc_service.proto")],
            &[proto_dir],
        )?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    Ok(())
}
