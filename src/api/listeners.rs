//! Serves the HTTP router and the gRPC routes on already-bound listeners, in plain TCP or TLS
//! (`--tls-cert`/`--tls-key`, see `api::tls`), until a stop future completes.
//!
//! The HTTP listener guards itself against slow or greedy clients: a connection must send each request's
//! headers within `--http-header-timeout-ms` (else it is closed: a slowloris cannot hold a socket), at most
//! `--http-max-connections` connections are open at once (WebSockets included, for their whole life; one
//! more is closed at once and counted), and at most `--http-max-in-flight` requests are handled at once
//! (one more is answered 503 at once and counted).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::TcpIncoming;
use tower::Service;

use super::tls::TlsIdentity;
use crate::error::Error;
use crate::metrics::Metrics;

/// Protection limits of an HTTP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request's complete headers.
    pub header_read_timeout: Duration,
    /// Open connections at most (WebSockets included).
    pub max_connections: usize,
    /// Requests being handled at most.
    pub max_in_flight: usize,
}

impl HttpLimits {
    pub fn from_args(args: &crate::config::ServeArgs) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(args.http_header_timeout_ms.max(1)),
            max_connections: args.http_max_connections.max(1),
            max_in_flight: args.http_max_in_flight.max(1),
        }
    }
}

/// A connection holding its place under the connection cap until it is dropped (for a WebSocket: until
/// the socket closes, since the upgraded stream owns this).
struct Counted<S> {
    inner: S,
    _place: OwnedSemaphorePermit,
    open: Option<prometheus::IntGauge>,
}

impl<S> Counted<S> {
    fn new(inner: S, place: OwnedSemaphorePermit, open: Option<prometheus::IntGauge>) -> Self {
        if let Some(g) = &open {
            g.inc();
        }
        Self {
            inner,
            _place: place,
            open,
        }
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Places under the connection cap, and what counts refusals.
#[derive(Clone)]
struct ConnectionCap {
    places: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
}

impl ConnectionCap {
    /// A place for a new connection, or `None` (counted) when the cap is reached.
    fn admit<S>(&self, stream: S) -> Option<Counted<S>> {
        match Arc::clone(&self.places).try_acquire_owned() {
            Ok(place) => Some(Counted::new(
                stream,
                place,
                self.metrics.as_ref().map(|m| m.http_connections.clone()),
            )),
            Err(_) => {
                if let Some(m) = &self.metrics {
                    m.http_connections_refused.inc();
                }
                tracing::debug!("HTTP connection refused: --http-max-connections reached");
                None
            }
        }
    }
}

/// Refuses a request with 503 when `--http-max-in-flight` requests are being handled.
async fn limit_in_flight(
    State((slots, metrics)): State<(Arc<Semaphore>, Option<Arc<Metrics>>)>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_slot) = slots.try_acquire() else {
        if let Some(m) = &metrics {
            m.requests_shed
                .with_label_values(&["in_flight_limit"])
                .inc();
        }
        return Error::Unavailable(
            "the server is handling too many requests at once; retry shortly".into(),
        )
        .into_response();
    };
    next.run(request).await
}

/// Serves `app` until `stop` completes; in-flight requests finish first. `metrics` (the public listener
/// only) counts connections and refusals.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsIdentity>,
    limits: HttpLimits,
    metrics: Option<Arc<Metrics>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_in_flight));
    let app = app.layer(axum::middleware::from_fn_with_state(
        (slots, metrics.clone()),
        limit_in_flight,
    ));
    let cap = ConnectionCap {
        places: Arc::new(Semaphore::new(limits.max_connections)),
        metrics,
    };
    let Some(tls) = tls else {
        return serve_plain(listener, app, limits, cap, stop).await;
    };
    let config = tls.http_config();
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stop.await;
        on_stop.graceful_shutdown(None);
    });
    let acceptor = CappedAcceptor {
        inner: axum_server::tls_rustls::RustlsAcceptor::new(config),
        cap,
    };
    let mut server = axum_server::Server::from_tcp(listener.into_std()?).acceptor(acceptor);
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    server
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("HTTPS server failed")
}

/// The plain-TCP accept loop: connection cap, then hyper with the header-read timer.
async fn serve_plain(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    cap: ConnectionCap,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        // Reap finished connection tasks so the set does not grow with the connections served.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(stream) = cap.admit(tcp) else {
            continue;
        };
        // Predictions are small frames pushed as soon as they exist: Nagle would hold them back (~40 ms).
        if let Err(e) = stream.inner.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let router = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().call(request)
            });
        let builder = builder.clone();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                () = async { let _ = closing.wait_for(|c| *c).await; } => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
        });
    }
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Wraps a TLS acceptor with the connection cap: a connection beyond it is dropped before its handshake.
#[derive(Clone)]
struct CappedAcceptor<A> {
    inner: A,
    cap: ConnectionCap,
}

impl<A, S> axum_server::accept::Accept<TcpStream, S> for CappedAcceptor<A>
where
    A: axum_server::accept::Accept<Counted<TcpStream>, S> + Clone + Send + 'static,
    A::Future: Send,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let admitted = self.cap.admit(stream);
        let inner = self.inner.clone();
        Box::pin(async move {
            match admitted {
                Some(stream) => inner.accept(stream, service).await,
                None => Err(std::io::Error::other(
                    "connection refused: --http-max-connections reached",
                )),
            }
        })
    }
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
