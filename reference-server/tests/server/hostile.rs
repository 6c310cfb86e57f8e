//! Hostile and unlucky clients (issue "The server holds against hostile and unlucky
//! clients"): expired tokens, bodies announced too large, tenant names on /metrics,
//! auth edge cases. Each test fails without its fix.

use crate::support::*;
use rtsync_protocol::{ErrorCode, EventType, ServerMsg, close};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_websocket_session_ends_4001_when_its_token_expires_and_later_writes_are_not_applied() {
    let server = TestServer::start(|_| {}).await;
    // `exp` is in whole seconds: at least one second left, at most two.
    let exp = now_s() + 2;
    let mut ws = server
        .ws_query(&format!(
            "token={}&sessionId=a",
            token_exp("alice", "w1", exp)
        ))
        .await;
    let mut watcher = server.ws("bob", "w1", "b").await;
    connected(&mut ws).await;
    connected(&mut watcher).await;
    let started = Instant::now();
    assert_eq!(ws.closed().await, Some(close::TOKEN_EXPIRED));
    assert!(started.elapsed() < Duration::from_secs(3), "closed at exp");
    // The expired token cannot come back; a fresh one can, and nothing leaked meanwhile.
    let (status, _) = server
        .ws_refused(&format!(
            "token={}&sessionId=a",
            token_exp("alice", "w1", exp)
        ))
        .await;
    assert_eq!(status, 401);
    watcher.quiet_for(Duration::from_millis(200)).await;
    let mut again = server.ws("alice", "w1", "a").await;
    connected(&mut again).await;
    again
        .send(&mutation(
            EventType::TaskCreated,
            "a:1",
            "t1",
            0,
            json!({"title": "after refresh"}),
        ))
        .await;
    assert!(matches!(again.recv().await, ServerMsg::Ack(_)));
    let (_, metrics) = server.http("GET", "/metrics", None, None).await;
    assert!(
        metrics.contains("rtsync_closes_token_expired_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_sse_stream_ends_with_token_expired_when_its_token_expires() {
    let server = TestServer::start(|_| {}).await;
    let exp = now_s() + 2;
    let path = format!(
        "/api/events/subscribe?token={}&sessionId=s",
        token_exp("carol", "w1", exp)
    );
    let resp = server
        .request(
            "GET",
            &path,
            &[("accept", "text/event-stream".into())],
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body());
    let text = tokio::time::timeout(Duration::from_secs(4), body)
        .await
        .expect("the stream ends at expiry")
        .expect("a clean end")
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .next_back()
        .expect("events");
    match ServerMsg::decode(last.trim()) {
        Ok(ServerMsg::Error(e)) => assert_eq!(e.code, ErrorCode::TokenExpired),
        other => panic!("last event {other:?}"),
    }
}

#[tokio::test]
async fn a_body_announced_larger_than_the_limit_is_refused_413_before_it_is_read() {
    let server = TestServer::start(|_| {}).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let t = token("mallory", "w1");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n{{}}"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("TOO_LARGE"), "{answer}");
}

#[tokio::test]
async fn metrics_name_no_tenant_unless_asked_to() {
    for per_workspace in [false, true] {
        let server = TestServer::start(|c| c.metrics_per_workspace = per_workspace).await;
        let mut ws = server.ws("alice", "tenant-secret-name", "a").await;
        connected(&mut ws).await;
        let (status, text) = server.http("GET", "/metrics", None, None).await;
        assert_eq!(status, 200);
        assert_eq!(
            text.contains("tenant-secret-name"),
            per_workspace,
            "per_workspace={per_workspace}: {text}"
        );
        assert!(text.contains("rtsync_workspaces 1"), "{text}");
        if !per_workspace {
            assert!(text.contains("rtsync_workspace_sessions 1"), "{text}");
        }
    }
}

#[tokio::test]
async fn auth_reads_bearer_in_any_case_refuses_two_different_tokens_and_oversized_ids() {
    let server = TestServer::start(|_| {}).await;
    let t = token("alice", "w1");
    let get = |scheme: &str, query: Option<String>| {
        let path = match query {
            Some(q) => format!("/api/entities/tasks?token={q}"),
            None => "/api/entities/tasks".to_owned(),
        };
        let headers = vec![("authorization", format!("{scheme} {t}"))];
        let server = &server;
        async move {
            let resp = server.request("GET", &path, &headers, None).await;
            resp.status().as_u16()
        }
    };
    assert_eq!(get("bearer", None).await, 200);
    assert_eq!(get("BEARER", None).await, 200);
    assert_eq!(
        get("Bearer", Some(t.clone())).await,
        200,
        "the same token twice"
    );
    assert_eq!(get("Bearer", Some(token("bob", "w2"))).await, 401);
    let long = "u".repeat(200);
    let (status, body) = server
        .http(
            "GET",
            &format!("/api/entities/tasks?token={}", token(&long, "w1")),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn an_op_number_past_two_to_the_53_is_refused_not_wrapped() {
    let server = TestServer::start(|_| {}).await;
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    for n in [u64::MAX, 1 << 53] {
        ws.send(&mutation(
            EventType::TaskCreated,
            &format!("c:{n}"),
            "t1",
            0,
            json!({"title": "x"}),
        ))
        .await;
        match ws.recv().await {
            ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::InvalidPayload, "{n}"),
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_flooder_that_keeps_sending_still_sees_its_errors_and_the_1008_close() {
    let (_server, mut ws) = flooder().await;
    // Keep writing well past the close: the server must drain, not reset the socket.
    use futures_util::SinkExt;
    let frame =
        tokio_tungstenite::tungstenite::Message::text(r#"{"type":"HEARTBEAT","timestamp":1}"#);
    for _ in 0..400 {
        if ws.stream.feed(frame.clone()).await.is_err() {
            break;
        }
    }
    let _ = ws.stream.flush().await;
    let mut limited = 0;
    let code = loop {
        match ws.next().await {
            Got::Msg(ServerMsg::Error(e)) if e.code == ErrorCode::RateLimited => limited += 1,
            Got::Msg(_) => {}
            Got::Closed(c) => break c,
        }
    };
    assert_eq!(code, Some(close::POLICY), "a close frame, not a reset");
    assert!(
        limited >= 10,
        "the errors that explain it arrived: {limited}"
    );
}

#[tokio::test]
async fn a_binary_frame_closes_1003() {
    let server = TestServer::start(|_| {}).await;
    let mut ws = server.ws("mallory", "w1", "m").await;
    connected(&mut ws).await;
    use futures_util::SinkExt;
    ws.stream
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await
        .unwrap();
    assert_eq!(ws.closed().await, Some(close::UNSUPPORTED_DATA));
    let (_, metrics) = server.http("GET", "/metrics", None, None).await;
    assert!(
        metrics.contains("rtsync_closes_unsupported_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_entity_cannot_grow_past_its_bound_by_writes_that_each_fit_a_frame() {
    let server = TestServer::start(|c| c.core.entity_bytes_max = 100_000).await;
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    let big = "x".repeat(60_000);
    ws.send(&mutation(
        EventType::TaskCreated,
        "ca:1",
        "t1",
        0,
        json!({"a": big}),
    ))
    .await;
    assert!(matches!(ws.recv().await, ServerMsg::Ack(a) if a.version == 1));
    // A second 60 KB field: each message fits the frame bound, the entity would not.
    ws.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"b": big}),
    ))
    .await;
    match ws.recv().await {
        ServerMsg::Error(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge);
            assert_eq!(e.op_id.as_deref(), Some("ca:2"));
            assert!(e.message.contains("at most 100000"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Replacing the large field is fine: the entity stays the same size.
    ws.send(&mutation(
        EventType::TaskUpdated,
        "ca:3",
        "t1",
        1,
        json!({"a": "small"}),
    ))
    .await;
    assert!(matches!(ws.recv().await, ServerMsg::Ack(a) if a.version == 2));
    let (_, body) = server
        .http(
            "GET",
            "/api/entities/tasks/t1",
            Some(&token("alice", "w1")),
            None,
        )
        .await;
    assert!(
        !body.contains("\"b\""),
        "the refused field was not applied: {body}"
    );
}

#[tokio::test]
async fn a_presence_field_past_its_bound_is_refused_and_nothing_changes() {
    let server = TestServer::start(|c| c.core.presence_field_bytes_max = 100).await;
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    let mut watcher = server.ws("bob", "w1", "b").await;
    connected(&mut watcher).await;
    let page = "p".repeat(101);
    ws.send_text(&format!(
        r#"{{"type":"REALTIME_EVENT","payload":{{"type":"USER_PRESENCE_CHANGED","payload":{{"status":"online","currentPage":"{page}"}}}}}}"#
    ))
    .await;
    match ws.recv().await {
        ServerMsg::Error(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge);
            assert!(
                e.message.contains("currentPage is 101 bytes"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    // Nobody hears of it.
    watcher.quiet_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn posts_have_a_session_and_a_user_budget_429_with_retry_after_and_nothing_applied() {
    let server = TestServer::start(|c| {
        c.inbound_rate_per_s = 5.0;
        c.inbound_burst = 5;
        c.connections_per_user_max = 2; // the user's budget: two connections' worth
    })
    .await;
    let post = |user: &'static str, n: u64| post_as(&server, user, "s", n);
    for n in 1..=5 {
        assert_eq!(post("alice", n).await.0, 200, "within the burst");
    }
    let (status, retry, body) = post("alice", 6).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    match ServerMsg::decode(&body).unwrap() {
        ServerMsg::Error(e) => {
            assert_eq!(e.code, ErrorCode::RateLimited);
            assert_eq!(e.op_id.as_deref(), Some("salice:6"));
            assert!(
                e.retry_after_ms.is_some_and(|ms| (1..=200).contains(&ms)),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let (status, _) = server
        .http(
            "GET",
            "/api/entities/tasks/alice-s-6",
            Some(&token("alice", "w1")),
            None,
        )
        .await;
    assert_eq!(status, 404, "the refused write was not applied");
    // Another user's budget is their own; so is another tab's of the same user, up to
    // the user's (2 connections × 5): a third session finds it spent.
    assert_eq!(post("bob", 1).await.0, 200);
    for n in 1..=5 {
        assert_eq!(
            post_as(&server, "alice", "tab2", n).await.0,
            200,
            "tab2 {n}"
        );
    }
    assert_eq!(
        post_as(&server, "alice", "tab3", 1).await.0,
        429,
        "the user's budget"
    );
    // After the wait, the same op goes through.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(post("alice", 6).await.0, 200);
}

/// POSTs mutation `{session}{user}:{n}` creating `{user}-{session}-{n}`: (status,
/// Retry-After, body).
async fn post_as(
    server: &TestServer,
    user: &'static str,
    session: &'static str,
    n: u64,
) -> (u16, Option<String>, String) {
    use http_body_util::BodyExt;
    let body = mutation(
        EventType::TaskCreated,
        &format!("{session}{user}:{n}"),
        &format!("{user}-{session}-{n}"),
        0,
        json!({"title": "x"}),
    )
    .encode();
    let headers = [
        ("authorization", format!("Bearer {}", token(user, "w1"))),
        ("content-type", "application/json".to_owned()),
    ];
    let path = format!("/api/events?sessionId={session}");
    let resp = server.request("POST", &path, &headers, Some(body)).await;
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&bytes).into_owned())
}
