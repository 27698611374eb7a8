//! The HTTP listener's self-protection over real sockets: header-read timeout (slowloris), the cap on
//! open connections and the cap on requests in flight.

// The gate is a std Mutex because backends run on OS threads; the test holds it across awaits on purpose.
#![allow(clippy::await_holding_lock)]

mod common;
#[path = "support/gated_backend.rs"]
mod gated_backend;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use crossl_serve::app::Hooks;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (EOF or reset); panics after `limit`.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the server closed the connection");
    got
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let mut args = test_args(fixture_model());
    args.http_header_timeout_ms = 200;
    let server = start(args).await;
    let mut slow = TcpStream::connect(server.http).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: crossl\r\nX-Slow: ")
        .await
        .expect("partial headers");
    // Generous: the point is that it closes at all (without the timeout it would stay open forever).
    closed_by_server(&mut slow, Duration::from_secs(30)).await;
    // A normal client is unaffected.
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_counted() {
    let mut args = test_args(fixture_model());
    args.http_max_connections = 2;
    let server = start(args).await;
    let mut first = TcpStream::connect(server.http).await.expect("connect");
    let second = TcpStream::connect(server.http).await.expect("connect");
    // Both are served (a request on the first proves the server holds it).
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: crossl\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.expect("response");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A third connection is closed before any request is read.
    let mut third = TcpStream::connect(server.http).await.expect("TCP accept");
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: crossl\r\n\r\n")
        .await;
    let answer = closed_by_server(&mut third, Duration::from_secs(30)).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let text = server.metrics_text().await;
    assert!(
        metric_value(&text, "crossl_http_connections_refused_total", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "crossl_http_connections", &[]),
        Some(2.0)
    );
    // Once one closes, new clients are served again.
    drop((first, second));
    let mut served = false;
    for _ in 0..600 {
        let response = server.client.get(server.url("/healthz")).send().await;
        if response.is_ok_and(|r| r.status().as_u16() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a place was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_cap_get_503() {
    let mut args = test_args(fixture_model());
    args.http_max_in_flight = 1;
    let gate = Arc::new(Mutex::new(()));
    let hooks = Hooks {
        backend_factory: Some(gated_backend::gated_factory(&args, Arc::clone(&gate))),
        clock: None,
    };
    let server = launch_server(args, hooks).await;
    server.ready().await;
    let m = server.core.manifest.clone();
    let spec = &m.modalities[0];
    let rows = vec![vec![0.5f32; spec.channels]; spec.window_samples];
    let body = serde_json::json!({"modalities": {spec.name.clone(): rows}});
    let held = gate.lock().expect("gate");
    let spawn_stuck = || {
        let (client, url, body) = (
            server.client.clone(),
            server.url("/v1/predict"),
            body.clone(),
        );
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };
    let mut stuck = spawn_stuck();
    // Wait until the predict holds the only slot (its window reached the queue), then one more is refused.
    // A probe can win the race for the slot before the predict arrives; the predict is then the one
    // refused, so it is sent again.
    let mut refused = None;
    for _ in 0..600 {
        if stuck.is_finished() {
            let early = stuck.await.expect("task").expect("response");
            assert_eq!(
                early.status().as_u16(),
                503,
                "only the cap may end it early"
            );
            stuck = spawn_stuck();
        }
        let (status, body) = server.get("/healthz").await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = refused.expect("a request beyond the in-flight cap was refused");
    assert_error(503, &body, 503, "unavailable");
    drop(held);
    let answer = stuck.await.expect("task").expect("response");
    assert_eq!(answer.status().as_u16(), 200);
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200, "the slot is free again");
    let text = server.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "crossl_requests_shed_total",
            &[("reason", "in_flight_limit")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}
