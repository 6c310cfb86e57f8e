use crate::support::*;
use rtsync_protocol::{ErrorCode, EventType, ServerMsg};
use serde_json::json;

/// A bystander in the same workspace proves the server still works for others.
async fn bystander_round_trip(server: &TestServer, n: u32) {
    let mut a = server.ws("bystander", "w1", &format!("by{n}")).await;
    connected(&mut a).await;
    a.send(&mutation(
        EventType::TaskCreated,
        &format!("by{n}:1"),
        &format!("by-{n}"),
        0,
        json!({"ok": true}),
    ))
    .await;
    assert!(
        matches!(a.recv().await, ServerMsg::Ack(_)),
        "bystander still served"
    );
}

async fn expect_error(ws: &mut Ws, text: &str, code: ErrorCode) {
    ws.send_text(text).await;
    match ws.recv().await {
        ServerMsg::Error(e) => assert_eq!(e.code, code, "{text}: {}", e.message),
        other => panic!("{text}: got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_frames_get_documented_errors_and_the_session_goes_on() {
    let server = TestServer::start(|_| {}).await;
    let mut ws = server.ws("mallory", "w1", "m").await;
    connected(&mut ws).await;
    expect_error(&mut ws, "{not json", ErrorCode::BadJson).await;
    expect_error(
        &mut ws,
        r#"{"type":"SUBSCRIBE","payload":{}}"#,
        ErrorCode::UnknownType,
    )
    .await;
    expect_error(&mut ws, r#"{"type":"REALTIME_EVENT","payload":{"type":"TASK_UPDATED","version":"one","payload":{}}}"#, ErrorCode::InvalidPayload).await;
    expect_error(&mut ws, r#"{"type":"REALTIME_EVENT","payload":{"type":"TASK_UPDATED","version":0,"payload":{"opId":"m:1","id":"t","changes":{"version":3}}}}"#, ErrorCode::InvalidPayload).await;
    expect_error(
        &mut ws,
        r#"{"type":"REALTIME_EVENT","payload":{"type":"SYSTEM_NOTIFICATION","payload":{}}}"#,
        ErrorCode::Forbidden,
    )
    .await;
    expect_error(&mut ws, r#"{"type":"REALTIME_EVENT","payload":{"type":"USER_PRESENCE_CHANGED","payload":{"userId":"someone-else","status":"online"}}}"#, ErrorCode::Forbidden).await;
    expect_error(&mut ws, r#"{"type":"REALTIME_EVENT","payload":{"type":"TASK_UPDATED","version":5,"payload":{"opId":"m:2","id":"nope","changes":{"a":1}}}}"#, ErrorCode::NotFound).await;
    // Still usable:
    ws.send(&mutation(
        EventType::TaskCreated,
        "m:3",
        "t1",
        0,
        json!({"a": 1}),
    ))
    .await;
    assert!(matches!(ws.recv().await, ServerMsg::Ack(_)));
    bystander_round_trip(&server, 1).await;
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009_and_hurts_nobody_else() {
    let server = TestServer::start(|c| c.frame_bytes_max = 4096).await;
    let mut ws = server.ws("mallory", "w1", "m").await;
    connected(&mut ws).await;
    let big = format!(
        r#"{{"type":"HEARTBEAT","payload":{{"timestamp":1,"pad":"{}"}}}}"#,
        "x".repeat(8000)
    );
    ws.send_text(&big).await;
    assert_eq!(ws.closed().await, Some(1009));
    bystander_round_trip(&server, 2).await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_with_1008() {
    let (server, mut ws) = flooder().await;
    for _ in 0..40 {
        ws.send_text(r#"{"type":"HEARTBEAT","timestamp":1}"#).await;
    }
    let mut acks = 0;
    let mut limited = 0;
    let code = loop {
        match ws.next().await {
            Got::Msg(ServerMsg::HeartbeatAck(_)) => acks += 1,
            Got::Msg(ServerMsg::Error(e)) if e.code == ErrorCode::RateLimited => limited += 1,
            Got::Msg(_) => {}
            Got::Closed(c) => break c,
        }
    };
    assert_eq!(code, Some(1008));
    assert!((5..=7).contains(&acks), "the burst was served: {acks}");
    assert!(
        limited >= 10,
        "each refused message was answered: {limited}"
    );
    bystander_round_trip(&server, 3).await;
}

#[tokio::test]
async fn bad_tokens_and_user_mismatches_are_refused_before_the_upgrade() {
    let server = TestServer::start(|_| {}).await;
    let expired = rtsync_protocol::auth::mint(
        &rtsync_protocol::auth::Claims {
            sub: "u".into(),
            ws: "w1".into(),
            exp: 1,
        },
        SECRET,
    );
    let forged = rtsync_protocol::auth::mint(
        &rtsync_protocol::auth::Claims {
            sub: "u".into(),
            ws: "w1".into(),
            exp: 4_000_000_000,
        },
        b"wrong",
    );
    let cases = [
        (String::new(), "no token"),
        ("token=garbage".to_string(), "not a compact JWT"),
        (format!("token={expired}"), "expired"),
        (format!("token={forged}"), "signature"),
        (
            format!("token={}&userId=someone-else", token("u", "w1")),
            "does not match",
        ),
    ];
    for (query, needle) in cases {
        let (status, body) = server.ws_refused(&query).await;
        assert_eq!(status, 401, "{query}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert_eq!(body["error"], "UNAUTHORIZED");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
    // The seed's matching userId parameter is fine.
    let mut ok = server
        .ws_query(&format!("token={}&userId=u&sessionId=s", token("u", "w1")))
        .await;
    connected(&mut ok).await;
    bystander_round_trip(&server, 4).await;
}

#[tokio::test]
async fn connection_limits_and_the_admission_rate_answer_with_retry_after() {
    let server = TestServer::start(|c| {
        c.connections_per_user_max = 2;
        c.admission_rate_per_s = 1.0;
        c.admission_burst = 3;
    })
    .await;
    let t = token("u", "w1");
    let mut a = server.ws("u", "w1", "a").await;
    let mut b = server.ws("u", "w1", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    assert_eq!(server.ws_refused(&format!("token={t}")).await.0, 429);
    // The 429 took no admission token, so one more user gets in; then the burst of 3
    // is spent and the next connection is refused with 503.
    let mut c = server.ws("v", "w1", "c").await;
    connected(&mut c).await;
    let (status, body) = server
        .ws_refused(&format!("token={}", token("x", "w1")))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ADMISSION_RATE"));
    let resp = server
        .request(
            "GET",
            &format!("/ws?token={}", token("y", "w1")),
            &[
                ("connection", "upgrade".into()),
                ("upgrade", "websocket".into()),
                ("sec-websocket-version", "13".into()),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
            ],
            None,
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
}
