//! Serves the HTTP router and the gRPC routes on already-bound listeners, in plain TCP or TLS
//! (`--tls-cert`/`--tls-key`, see `api::tls`), until a stop future completes.

use std::future::Future;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use super::tls::TlsIdentity;

/// Serves `app` until `stop` completes; in-flight requests finish first.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsIdentity>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Some(tls) = tls else {
        // Predictions are small frames pushed as soon as they exist: Nagle would hold them back (~40 ms).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        return axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .context("HTTP server failed");
    };
    let config = tls.http_config();
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stop.await;
        on_stop.graceful_shutdown(None);
    });
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::Server::from_tcp(listener.into_std()?)
        .acceptor(acceptor)
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
        .context("HTTPS server failed")
}

/// Serves the gRPC `routes` until `stop` completes.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: tonic::service::Routes,
    tls: Option<TlsIdentity>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.grpc_config())
            .context("invalid gRPC TLS configuration")?;
    }
    builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await
        .context("gRPC server failed")
}
