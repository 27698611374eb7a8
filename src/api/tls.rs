//! TLS for the public listeners (rustls with the ring provider): one certificate/key pair serves the
//! HTTP/WebSocket listener (axum-server) and the gRPC listener (tonic). The metrics listener stays plain.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServeArgs;

/// A loaded and checked certificate chain + private key.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The identity configured by `--tls-cert`/`--tls-key`, or `None` when TLS is off.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Option<Self>> {
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Self::load(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
        }
    }

    /// Reads PEM files; errors name the file that is wrong.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read(cert)
            .with_context(|| format!("reading --tls-cert {}", cert.display()))?;
        let key_pem =
            std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
        Self::from_pem(cert_pem, key_pem).with_context(|| {
            format!(
                "TLS identity from --tls-cert {} and --tls-key {}",
                cert.display(),
                key.display()
            )
        })
    }

    /// Parses and checks an identity from PEM bytes.
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("certificate file is not valid PEM")?;
        anyhow::ensure!(
            !certs.is_empty(),
            "certificate file holds no CERTIFICATE block"
        );
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .context("key file holds no valid PEM private key")?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not form a usable identity")?;
        // HTTP/2 for REST clients that want it; HTTP/1.1 for WebSocket upgrades.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert_pem,
            key_pem,
            server_config: Arc::new(config),
        })
    }

    /// Config for the HTTP/WebSocket listener (axum-server).
    pub fn http_config(&self) -> axum_server::tls_rustls::RustlsConfig {
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::clone(&self.server_config))
    }

    /// Config for the gRPC listener (tonic).
    pub fn grpc_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_missing_files() {
        assert!(TlsIdentity::from_pem(b"nope".to_vec(), b"nope".to_vec()).is_err());
        let err = TlsIdentity::load(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("--tls-cert /nonexistent/cert.pem"),
            "{err:#}"
        );
    }
}
