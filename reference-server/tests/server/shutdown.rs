use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_returns_within_the_drain_timeout() {
    let mut server = TestServer::start(|c| c.drain_timeout_ms = 2000).await;
    let mut a = server.ws("alice", "w1", "a").await;
    let mut b = server.ws("bob", "w2", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    let mut sse = server.sse("carol", "w1", "c", None).await;
    sse.recv().await;
    let started = tokio::time::Instant::now();
    server.shutdown();
    assert_eq!(a.closed().await, Some(1001));
    assert_eq!(b.closed().await, Some(1001));
    assert!(sse.ended().await, "the SSE stream ends");
    let task = &mut server.task;
    let result = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("serve returned");
    assert!(result.unwrap().is_ok());
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn the_server_can_run_twice_in_one_process() {
    let first = TestServer::start(|_| {}).await;
    let second = TestServer::start(|_| {}).await;
    for s in [&first, &second] {
        let mut ws = s.ws("u", "w", "s").await;
        connected(&mut ws).await;
    }
}
