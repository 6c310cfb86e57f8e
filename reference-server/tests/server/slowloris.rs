//! Sockets that hold the server without finishing a request: header-read and idle
//! timeouts, the bound on connections waiting for their first request, and what must
//! stay open all the same (upgraded WebSockets, SSE streams).

use super::support::*;
use rtsync_protocol::{EventType, ServerMsg};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT_MS: u64 = 400;

/// Waits for the server to close `s`; how long it took from `since`.
async fn closed_after(s: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept the socket open for {WAIT:?}"),
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue, // an answer to a finished request
        }
    }
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_read_timeout() {
    let server = TestServer::start(|c| c.header_read_timeout_ms = TIMEOUT_MS).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    let dribble = async {
        for b in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // The dribble never finishes the headers; the server must end it.
    let _ = tokio::time::timeout(WAIT, dribble).await;
    let took = closed_after(&mut s, start).await;
    assert!(
        took < Duration::from_millis(TIMEOUT_MS * 4),
        "closed after {took:?}"
    );
    let (_, metrics) = server.http("GET", "/metrics", None, None).await;
    assert!(
        metrics.contains("rtsync_header_timeouts_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_idle_past_the_timeout_is_closed_after_its_answer() {
    let server = TestServer::start(|c| c.header_read_timeout_ms = TIMEOUT_MS).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = closed_after(&mut s, Instant::now()).await;
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS / 2)
            && took < Duration::from_millis(TIMEOUT_MS * 4),
        "idle connection closed after {took:?}"
    );
}

#[tokio::test]
async fn past_the_handshake_bound_the_oldest_silent_socket_goes_and_healthz_still_answers() {
    let server = TestServer::start(|c| {
        c.handshakes_max = 8;
        c.header_read_timeout_ms = 60_000; // only the bound can free them here
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Every newcomer gets in; the oldest silent sockets were closed to make room.
    let (status, _) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let start = Instant::now();
    for s in &mut silent[..12] {
        closed_after(s, start).await;
    }
    let (_, metrics) = server.http("GET", "/metrics", None, None).await;
    let evicted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rtsync_handshakes_evicted_total "))
        .and_then(|v| v.parse().ok())
        .expect("handshakes_evicted_total is exported");
    // 20 silent + 2 requests through a bound of 8.
    assert!((13..=14).contains(&evicted), "evicted {evicted}: {metrics}");
    assert!(metrics.contains("rtsync_handshakes_waiting "), "{metrics}");
}

#[tokio::test]
async fn upgraded_websockets_and_sse_streams_outlive_the_header_read_timeout() {
    let server = TestServer::start(|c| c.header_read_timeout_ms = TIMEOUT_MS).await;
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    let mut sse = server.sse("bob", "w1", "b", None).await;
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 3)).await;
    // Both still carry traffic: alice writes, alice gets the ACK, bob the event.
    ws.send(&mutation(
        EventType::TaskCreated,
        "ca:1",
        "t1",
        0,
        json!({"title": "still here"}),
    ))
    .await;
    assert!(matches!(ws.recv().await, ServerMsg::Ack(_)));
    loop {
        if let (_, ServerMsg::RealtimeEvent { event, .. }) = sse.recv().await
            && event.kind == EventType::TaskCreated
        {
            break;
        }
    }
}

#[tokio::test]
async fn at_the_connection_limit_new_sessions_get_503_and_healthz_still_answers() {
    let server = TestServer::start(|c| c.connections_max = 2).await;
    let mut a = server.ws("a", "w1", "a").await;
    let mut b = server.ws("b", "w1", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    let (status, body) = server
        .ws_refused(&format!("token={}", token("c", "w1")))
        .await;
    assert_eq!(status, 503, "{body}");
    let (status, health) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{health}");
    assert!(health.contains("\"connections\":2"), "{health}");
}
