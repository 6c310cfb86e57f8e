use crate::support::*;
use rtsync_protocol::{EventType, ServerMsg};
use serde_json::json;

#[tokio::test]
async fn sse_clients_write_over_post_and_get_ack_or_409() {
    let server =
        TestServer::start(|c| c.core.strategy_task = rtsync_protocol::Strategy::Manual).await;
    let mut ws = server.ws("bob", "w1", "b").await;
    connected(&mut ws).await;
    let t = token("alice", "w1");
    let body = mutation(
        EventType::TaskCreated,
        "sa:1",
        "t1",
        0,
        json!({"title": "via POST"}),
    )
    .encode();
    let (status, answer) = server
        .http(
            "POST",
            "/api/events?sessionId=sse-a",
            Some(&t),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(matches!(ServerMsg::decode(&answer).unwrap(), ServerMsg::Ack(a) if a.seq == Some(1)));
    match ws.recv().await {
        ServerMsg::RealtimeEvent { event, .. } => assert_eq!(
            (event.session_id.as_str(), event.payload["title"].clone()),
            ("sse-a", json!("via POST"))
        ),
        other => panic!("{other:?}"),
    }
    // The same op again: the same answer, nothing applied twice.
    let (status, again) = server
        .http("POST", "/api/events?sessionId=sse-a", Some(&t), Some(body))
        .await;
    assert_eq!((status, again), (200, answer));
    // A stale write under MANUAL: 409 with CONFLICT_DETECTED.
    ws.send(&mutation(
        EventType::TaskUpdated,
        "cb:1",
        "t1",
        1,
        json!({"title": "bob"}),
    ))
    .await;
    ws.recv().await;
    let stale = mutation(
        EventType::TaskUpdated,
        "sa:2",
        "t1",
        1,
        json!({"title": "alice"}),
    )
    .encode();
    let (status, answer) = server
        .http("POST", "/api/events", Some(&t), Some(stale))
        .await;
    assert_eq!(status, 409);
    assert!(matches!(
        ServerMsg::decode(&answer).unwrap(),
        ServerMsg::ConflictDetected(_)
    ));
    let (status, _) = server
        .http("POST", "/api/events", None, Some("{}".into()))
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .http("POST", "/api/events", Some(&t), Some("{oops".into()))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn entity_reads_health_metrics_and_analytics() {
    let server = TestServer::start(|_| {}).await;
    let t = token("alice", "w1");
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    ws.send(&mutation(
        EventType::TaskCreated,
        "c:1",
        "t1",
        0,
        json!({"title": "a", "projectId": "p1"}),
    ))
    .await;
    ws.recv().await;
    ws.send(&mutation(
        EventType::TaskCreated,
        "c:2",
        "t2",
        0,
        json!({"title": "b", "projectId": "p2"}),
    ))
    .await;
    ws.recv().await;
    let (status, body) = server
        .http("GET", "/api/entities/tasks?projectId=p1", Some(&t), None)
        .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entities"].as_array().unwrap().len(), 1);
    assert_eq!(
        (v["seq"].clone(), v["entities"][0]["id"].clone()),
        (json!(2), json!("t1"))
    );
    let (status, body) = server
        .http("GET", "/api/entities/tasks/t2", Some(&t), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["entity"]["title"],
        "b"
    );
    assert_eq!(
        server
            .http("GET", "/api/entities/tasks/nope", Some(&t), None)
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .http("GET", "/api/entities/widgets", Some(&t), None)
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .http("GET", "/api/entities/tasks", None, None)
            .await
            .0,
        401
    );
    // Another workspace sees none of it.
    let (_, other) = server
        .http(
            "GET",
            "/api/entities/tasks",
            Some(&token("eve", "w2")),
            None,
        )
        .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&other).unwrap()["entities"],
        json!([])
    );

    let (status, health) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    assert!(health.contains(r#""status":"ok""#));
    assert!(health.contains(r#""durability":"memory""#), "{health}");
    let (_, metrics) = server.http("GET", "/metrics", None, None).await;
    assert!(metrics.contains("# TYPE rtsync_mutations counter"));
    assert!(metrics.contains("rtsync_mutations_total 2"));
    assert!(metrics.contains("rtsync_connections_active 1"));
    assert!(metrics.contains("rtsync_outbound_queue_wait_seconds_bucket{le=\"+Inf\"}"));

    let report = json!({
        "id": "m1", "sessionId": "a", "userId": "alice", "timestamp": "2026-11-24T22:43:09.123Z",
        "LCP": 1200, "FID": 8, "CLS": 0.02, "FCP": 800, "TTI": 1500,
        "memory": {"used": 1e7, "total": 2e7, "limit": 4e9}, "networkRequests": [], "cacheHitRate": 0.9,
        "bundleSize": 250000, "renderTime": 4, "stateUpdateTime": 1, "queryResolutionTime": 20,
        "userActions": [], "errorCount": 0, "warningCount": 0
    });
    let (status, _) = server
        .http(
            "POST",
            "/api/analytics/performance",
            Some(&t),
            Some(report.to_string()),
        )
        .await;
    assert_eq!(status, 202);
    let mut bad = report.clone();
    bad["LCP"] = json!(-1);
    let (status, body) = server
        .http(
            "POST",
            "/api/analytics/performance",
            Some(&t),
            Some(bad.to_string()),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("LCP"));
}

#[tokio::test]
async fn cors_preflight_is_answered_for_configured_origins() {
    let server = TestServer::start(|c| c.cors_origins = vec!["http://app.example".into()]).await;
    let headers = [
        ("origin", "http://app.example".to_string()),
        ("access-control-request-method", "GET".to_string()),
        (
            "access-control-request-headers",
            "last-event-id".to_string(),
        ),
    ];
    let resp = server
        .request("OPTIONS", "/api/events/subscribe", &headers, None)
        .await;
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "http://app.example"
    );
    let other = [
        ("origin", "http://evil.example".to_string()),
        ("access-control-request-method", "GET".to_string()),
    ];
    let resp = server
        .request("OPTIONS", "/api/events/subscribe", &other, None)
        .await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn snapshots_come_in_pages_whose_first_watermark_covers_writes_made_while_paging() {
    let server = TestServer::start(|c| c.core.snapshot_page_entities = 10).await;
    let mut ws = server.ws("alice", "w1", "a").await;
    connected(&mut ws).await;
    for i in 0..25 {
        ws.send(&mutation(
            EventType::TaskCreated,
            &format!("ca:{}", i + 1),
            &format!("t{i:02}"),
            0,
            json!({"title": "x"}),
        ))
        .await;
        assert!(matches!(ws.recv().await, ServerMsg::Ack(_)));
    }
    let t = token("alice", "w1");
    let page = |q: String| {
        let (server, t) = (&server, &t);
        async move {
            let (status, body) = server
                .http("GET", &format!("/api/entities/tasks?{q}"), Some(t), None)
                .await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    // Asking for more than the cap gets the cap.
    let first = page("limit=1000".into()).await;
    let watermark = first["seq"].as_u64().unwrap();
    let mut ids: Vec<String> = Vec::new();
    let mut next = first["next"].as_str().map(str::to_owned);
    ids.extend(
        first["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned()),
    );
    assert_eq!(ids.len(), 10);
    // A write while paging, behind the cursor: not in a later page, but in the stream
    // after the first page's watermark.
    ws.send(&mutation(
        EventType::TaskCreated,
        "ca:26",
        "t00a",
        0,
        json!({"title": "late"}),
    ))
    .await;
    let late_seq = match ws.recv().await {
        ServerMsg::Ack(a) => a.seq.unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(late_seq > watermark);
    let mut pages = 1;
    while let Some(after) = next {
        let p = page(format!("after={after}")).await;
        pages += 1;
        assert!(p["seq"].as_u64().unwrap() >= watermark);
        ids.extend(
            p["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        next = p["next"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    assert_eq!(ids, want, "every entity once, in id order");
    // A small explicit limit, and a project filter, page the same way.
    let small = page("limit=3&projectId=nope".into()).await;
    assert_eq!(small["entities"].as_array().unwrap().len(), 0);
    assert!(small.get("next").is_none());
}
