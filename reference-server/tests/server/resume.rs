use crate::support::*;
use rtsync_protocol::{ClientMsg, EventType, Resume, ServerMsg};
use serde_json::json;

async fn write(ws: &mut Ws, op: &str, id: &str) -> u64 {
    ws.send(&mutation(
        EventType::TaskCreated,
        op,
        id,
        0,
        json!({"title": id}),
    ))
    .await;
    match ws.recv().await {
        ServerMsg::Ack(a) => a.seq.unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_reconnect_with_epoch_and_last_seq_gets_exactly_the_missed_events_in_order() {
    let server = TestServer::start(|_| {}).await;
    let mut writer = server.ws("alice", "w1", "a").await;
    let mut reader = server.ws("bob", "w1", "b").await;
    connected(&mut writer).await;
    let (epoch, _) = connected(&mut reader).await;
    write(&mut writer, "ca:1", "t1").await;
    let last_seq = match reader.recv().await {
        ServerMsg::RealtimeEvent { seq: Some(s), .. } => s,
        other => panic!("{other:?}"),
    };
    reader.close().await;
    for (n, id) in [(2, "t2"), (3, "t3"), (4, "t4")] {
        write(&mut writer, &format!("ca:{n}"), id).await;
    }
    let mut back = server
        .ws_query(&format!(
            "token={}&sessionId=b&epoch={epoch}&lastSeq={last_seq}",
            token("bob", "w1")
        ))
        .await;
    connected(&mut back).await;
    match back.recv().await {
        ServerMsg::RecentEvents(r) => {
            assert!(r.complete);
            assert_eq!((r.from_seq, r.to_seq), (2, 4));
            let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, vec![2, 3, 4]);
            let ids: Vec<_> = r
                .events
                .iter()
                .map(|e| e.payload.payload["id"].clone())
                .collect();
            assert_eq!(ids, vec![json!("t2"), json!("t3"), json!("t4")]);
        }
        other => panic!("{other:?}"),
    }
    // Live events continue after the replay, without a gap.
    write(&mut writer, "ca:5", "t5").await;
    assert!(matches!(
        back.recv().await,
        ServerMsg::RealtimeEvent { seq: Some(5), .. }
    ));
}

#[tokio::test]
async fn resume_after_trimmed_history_or_from_another_epoch_is_incomplete() {
    let server = TestServer::start(|c| c.core.history_events_max = 2).await;
    let mut writer = server.ws("alice", "w1", "a").await;
    let (epoch, _) = connected(&mut writer).await;
    for n in 1..=4 {
        write(&mut writer, &format!("ca:{n}"), &format!("t{n}")).await;
    }
    // History keeps seq 3..=4: resuming from 1 lost seq 2.
    let mut r = server.ws("bob", "w1", "b").await;
    connected(&mut r).await;
    r.send(&ClientMsg::Resume(Resume { epoch, last_seq: 1 }))
        .await;
    assert!(
        matches!(r.recv().await, ServerMsg::RecentEvents(e) if !e.complete && e.events.is_empty() && e.to_seq == 4)
    );
    // From 2 continuity holds.
    r.send(&ClientMsg::Resume(Resume { epoch, last_seq: 2 }))
        .await;
    assert!(
        matches!(r.recv().await, ServerMsg::RecentEvents(e) if e.complete && e.events.len() == 2)
    );
    // Another epoch (a restarted server) never continues.
    r.send(&ClientMsg::Resume(Resume {
        epoch: epoch + 1,
        last_seq: 4,
    }))
    .await;
    assert!(matches!(r.recv().await, ServerMsg::RecentEvents(e) if !e.complete));
}

#[tokio::test]
async fn sse_resumes_through_last_event_id() {
    let server = TestServer::start(|_| {}).await;
    let mut writer = server.ws("alice", "w1", "a").await;
    connected(&mut writer).await;
    let mut sse = server.sse("bob", "w1", "b", None).await;
    let (first, _) = sse.recv().await;
    assert_eq!(first.retry_ms, Some(3000), "retry: is sent once, first");
    write(&mut writer, "ca:1", "t1").await;
    let (ev, _) = sse.recv().await;
    let last_id = ev.id.clone().expect("logged events carry id: E:N");
    drop(sse);
    write(&mut writer, "ca:2", "t2").await;
    write(&mut writer, "ca:3", "t3").await;
    let mut back = server.sse("bob", "w1", "b", Some(&last_id)).await;
    assert!(matches!(back.recv().await.1, ServerMsg::Connected(_)));
    match back.recv().await.1 {
        ServerMsg::RecentEvents(r) => {
            assert!(r.complete);
            assert_eq!(
                r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                vec![2, 3]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_snapshot_watermark_lets_a_client_stream_without_a_gap() {
    let server = TestServer::start(|_| {}).await;
    let mut writer = server.ws("alice", "w1", "a").await;
    connected(&mut writer).await;
    write(&mut writer, "ca:1", "t1").await;
    write(&mut writer, "ca:2", "t2").await;
    let t = token("bob", "w1");
    let (status, body) = server
        .http("GET", "/api/entities/tasks", Some(&t), None)
        .await;
    assert_eq!(status, 200);
    let snap: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snap["entities"].as_array().unwrap().len(), 2);
    let (epoch, seq) = (
        snap["epoch"].as_u64().unwrap(),
        snap["seq"].as_u64().unwrap(),
    );
    assert_eq!(seq, 2);
    write(&mut writer, "ca:3", "t3").await;
    let mut r = server
        .ws_query(&format!(
            "token={t}&sessionId=b&epoch={epoch}&lastSeq={seq}"
        ))
        .await;
    connected(&mut r).await;
    assert!(
        matches!(r.recv().await, ServerMsg::RecentEvents(e) if e.complete && e.events.len() == 1 && e.events[0].seq == 3)
    );
}

/// The answer to a resume point the server cannot use: one empty, incomplete batch.
async fn incomplete(ws: &mut Ws) -> (u64, u64) {
    match ws.recv().await {
        ServerMsg::RecentEvents(r) => {
            assert!(!r.complete, "{r:?}");
            assert!(r.events.is_empty());
            (r.from_seq, r.to_seq)
        }
        other => panic!("expected RECENT_EVENTS, got {other:?}"),
    }
}

#[tokio::test]
async fn unreadable_resume_points_in_the_query_are_answered_incomplete_not_refused() {
    let server = TestServer::start(|_| {}).await;
    let mut writer = server.ws("alice", "w1", "a").await;
    connected(&mut writer).await;
    write(&mut writer, "ca:1", "t1").await;
    let t = token("bob", "w1");
    for (n, point) in [
        "epoch=abc&lastSeq=1",
        "epoch=1&lastSeq=-1",
        "epoch=99999999999999999999999&lastSeq=1",
        "epoch=1&lastSeq=18446744073709551616",
        "lastSeq=1",
        "epoch=1&lastSeq=",
    ]
    .into_iter()
    .enumerate()
    {
        let mut ws = server
            .ws_query(&format!("token={t}&sessionId=b{n}&{point}&device=toaster"))
            .await;
        let (_, head) = connected(&mut ws).await;
        let (from, to) = incomplete(&mut ws).await;
        assert_eq!((from, to), (head + 1, head), "{point}");
    }
}

#[tokio::test]
async fn a_resume_frame_that_cannot_be_read_or_is_far_ahead_is_answered_incomplete() {
    let server = TestServer::start(|_| {}).await;
    let mut ws = server.ws("alice", "w1", "a").await;
    let (epoch, _) = connected(&mut ws).await;
    let head = write(&mut ws, "ca:1", "t1").await;
    for payload in [
        r#"{"epoch":"x","lastSeq":1}"#.to_owned(),
        r#"{"epoch":-5,"lastSeq":1.5}"#.to_owned(),
        "null".to_owned(),
        "[1,2]".to_owned(),
        format!(r#"{{"epoch":{epoch},"lastSeq":{}}}"#, u64::MAX),
        format!(r#"{{"epoch":{epoch},"lastSeq":{}}}"#, head + 1000),
    ] {
        ws.send_text(&format!(r#"{{"type":"RESUME","payload":{payload}}}"#))
            .await;
        let (from, to) = incomplete(&mut ws).await;
        assert_eq!((from, to), (head + 1, head), "{payload}");
    }
    // The session is unharmed: a readable point still replays.
    ws.send(&ClientMsg::Resume(Resume {
        epoch,
        last_seq: head - 1,
    }))
    .await;
    assert!(
        matches!(ws.recv().await, ServerMsg::RecentEvents(r) if r.complete && r.events.len() == 1)
    );
}

#[tokio::test]
async fn a_garbage_last_event_id_opens_the_sse_stream_with_an_incomplete_answer() {
    let server = TestServer::start(|_| {}).await;
    for id in ["garbage", "1:-1", "1:99999999999999999999", ":"] {
        let mut sse = server.sse("bob", "w1", "s", Some(id)).await;
        let (_, first) = sse.recv().await;
        assert!(matches!(first, ServerMsg::Connected(_)), "{id}: {first:?}");
        let (_, m) = sse.recv().await;
        assert!(
            matches!(m, ServerMsg::RecentEvents(ref r) if !r.complete),
            "{id}: {m:?}"
        );
    }
}

/// The issue's unlucky user: away for the whole history (10 000 events of ~1 KB, ten
/// times the outbound bound) under the default limits. The replay is paced in batches
/// that fit, so the resume completes instead of ending 1013 before `CONNECTED`.
#[tokio::test]
async fn a_client_away_for_the_whole_history_resumes_under_the_default_limits() {
    let server = TestServer::start(|c| {
        // Only the writer's own rate is raised, to write 10 000 events quickly.
        c.inbound_rate_per_s = 100_000.0;
        c.inbound_burst = 100_000;
    })
    .await;
    let mut writer = server.ws("alice", "w1", "a").await;
    connected(&mut writer).await;
    let mut reader = server.ws("bob", "w1", "b").await;
    let (epoch, last_seq) = connected(&mut reader).await;
    reader.close().await;
    let note = "n".repeat(1000);
    let total = 10_000u64;
    for window in (1..=total).collect::<Vec<_>>().chunks(200) {
        for &n in window {
            writer
                .send(&mutation(
                    EventType::TaskCreated,
                    &format!("ca:{n}"),
                    &format!("t{n}"),
                    0,
                    json!({"note": note}),
                ))
                .await;
        }
        for _ in window {
            assert!(matches!(writer.recv().await, ServerMsg::Ack(_)));
        }
    }
    let mut back = server
        .ws_query(&format!(
            "token={}&sessionId=b&epoch={epoch}&lastSeq={last_seq}",
            token("bob", "w1")
        ))
        .await;
    connected(&mut back).await;
    let mut next = last_seq + 1;
    while next <= last_seq + total {
        match back.recv().await {
            ServerMsg::RecentEvents(r) => {
                assert!(r.complete, "the whole history is still there");
                for e in &r.events {
                    assert_eq!(e.seq, next, "in order, no gap, no repeat");
                    next += 1;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
