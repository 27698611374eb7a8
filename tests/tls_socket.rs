//! TLS over real sockets with a self-signed certificate generated at test time: HTTPS and gRPC over TLS
//! work with the certificate trusted, plain-text clients are refused, metrics stay plain.

mod streaming;

use std::collections::HashMap;
use std::time::Duration;

use crossl_serve::proto;
use crossl_serve::proto::ingest_client::IngestClient;
use crossl_serve::proto::predictions_client::PredictionsClient;
use streaming::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_grpc_listeners_serve_tls_with_the_configured_certificate() {
    let identity =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert_pem = identity.cert.pem();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, identity.signing_key.serialize_pem()).unwrap();
    let server = start(|a| {
        a.tls_cert = Some(cert_path.clone());
        a.tls_key = Some(key_path.clone());
    })
    .await;

    // HTTPS with the certificate trusted.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", server.http)
        .build()
        .unwrap();
    let https = format!("https://localhost:{}", server.http.port());
    let health = client
        .get(format!("{https}/healthz"))
        .send()
        .await
        .expect("HTTPS works");
    assert_eq!(health.status(), 200);
    let devices = client
        .get(format!("{https}/v1/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);
    // Without trusting it, or in plain text, nothing gets through.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", server.http)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{https}/healthz"))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("{}/healthz", server.http_url()))
            .send()
            .await
            .is_err()
    );
    // Metrics stay on plain HTTP.
    assert!(server.metrics_text().await.contains("crossl_ready 1"));

    // gRPC over TLS.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", server.grpc.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS connects");
    let err = PredictionsClient::new(channel.clone())
        .latest(proto::LatestRequest {
            device_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let manifest = &server.core.manifest;
    let modalities: HashMap<String, proto::ModalityWindow> = manifest
        .modalities
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                m.name.clone(),
                proto::ModalityWindow {
                    samples: synthetic(i, m.channels, 0, m.window_samples),
                },
            )
        })
        .collect();
    let p = IngestClient::new(channel)
        .predict(proto::PredictRequest { modalities })
        .await
        .expect("predict over TLS");
    assert!(manifest.classes.contains(&p.into_inner().label));
    // A plain-text gRPC client cannot talk to the TLS listener.
    let plain = Endpoint::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = PredictionsClient::new(channel)
            .latest(proto::LatestRequest {
                device_id: "x".into(),
            })
            .await;
        assert!(refused.is_err_and(|s| s.code() != tonic::Code::NotFound));
    }
}

#[test]
fn a_key_without_a_certificate_is_a_startup_error() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: crossl_serve::config::ServeArgs,
    }
    let err = Cli::try_parse_from(["serve", "--tls-key", "key.pem"])
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
}
