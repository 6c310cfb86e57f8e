use crate::support::*;
use futures_util::StreamExt;
use rtsync_protocol::{EventType, ServerMsg};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics"))
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_1013_and_others_are_unaffected() {
    let server = TestServer::start(|c| {
        c.outbound_messages_max = 8;
        c.outbound_bytes_max = 256 * 1024;
        c.frame_bytes_max = 64 * 1024;
        c.inbound_rate_per_s = 10_000.0;
        c.inbound_burst = 10_000;
    })
    .await;
    // The slow client: a tiny receive buffer, and it never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(server.addr).await.unwrap();
    let url = format!(
        "ws://{}/ws?token={}&sessionId=slow",
        server.addr,
        token("slow", "w1")
    );
    let (mut slow, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();

    let mut writer = server.ws("writer", "w1", "w").await;
    let mut fast = server.ws("fast", "w1", "f").await;
    connected(&mut writer).await;
    connected(&mut fast).await;
    let pad = "x".repeat(30_000);
    let n = 120;
    for i in 1..=n {
        writer
            .send(&mutation(
                EventType::TaskCreated,
                &format!("w:{i}"),
                &format!("t{i}"),
                0,
                json!({"pad": pad}),
            ))
            .await;
        assert!(matches!(writer.recv().await, ServerMsg::Ack(_)));
    }
    // The fast reader got everything, in order.
    for i in 1..=n {
        assert!(
            matches!(fast.recv().await, ServerMsg::RealtimeEvent { seq: Some(s), .. } if s == i)
        );
    }
    let (_, metrics) = server.http("GET", "/metrics", None, None).await;
    assert_eq!(gauge(&metrics, "rtsync_closes_slow_consumer_total"), 1);
    // Fed nothing more, but still in the hub until its socket is gone: what it sends
    // meanwhile is applied, not read and dropped.
    assert_eq!(
        gauge(&metrics, "rtsync_workspace_sessions"),
        3,
        "the slow session stays until its socket is gone"
    );
    // The slow client, reading at last, finds some frames and then the 1013 close.
    let mut frames = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("close arrives")
        {
            Some(Ok(Message::Text(_))) => frames += 1,
            Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => {}
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1013));
    assert!(
        frames < n,
        "the slow client was cut off, not fed everything: {frames}"
    );
    // Its socket gone, it leaves the hub.
    drop(slow);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, m) = server.http("GET", "/metrics", None, None).await;
        if gauge(&m, "rtsync_workspace_sessions") == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow session never left the hub"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `/metrics` until `name` reads `want`.
async fn settles(server: &TestServer, name: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, m) = server.http("GET", "/metrics", None, None).await;
        if gauge(&m, name) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {} (want {want})",
            gauge(&m, name)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_sse_stream_that_stops_reading_is_cut_at_once_and_its_place_freed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(|c| {
        c.outbound_messages_max = 8;
        c.outbound_bytes_max = 256 * 1024;
        c.connections_per_user_max = 1;
        c.inbound_rate_per_s = 10_000.0;
        c.inbound_burst = 10_000;
    })
    .await;
    // The slow reader: a tiny receive buffer, and it never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = sock.connect(server.addr).await.unwrap();
    let head = format!(
        "GET /api/events/subscribe?token={}&sessionId=slow HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n",
        token("slow", "w1")
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut writer = server.ws("writer", "w1", "w").await;
    connected(&mut writer).await;
    settles(&server, "rtsync_connections_active", 2).await;
    let pad = "x".repeat(30_000);
    for i in 1..=120 {
        writer
            .send(&mutation(
                EventType::TaskCreated,
                &format!("w:{i}"),
                &format!("t{i}"),
                0,
                json!({"pad": pad}),
            ))
            .await;
        assert!(matches!(writer.recv().await, ServerMsg::Ack(_)));
    }
    // Its place is free although it never read a byte: the session left the hub, the
    // connection count fell, and the same user may subscribe again (1 per user).
    settles(&server, "rtsync_closes_slow_consumer_total", 1).await;
    settles(&server, "rtsync_connections_active", 1).await;
    settles(&server, "rtsync_workspace_sessions", 1).await;
    let mut again = server.sse("slow", "w1", "slow2", None).await;
    assert!(matches!(again.recv().await.1, ServerMsg::Connected(_)));
    // And its socket was cut: reading at last, it finds what was buffered, then the end.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(WAIT, slow.read(&mut buf))
            .await
            .expect("the slow socket was closed")
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
