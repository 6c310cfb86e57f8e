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
    let (bad, _) = server
        .http(
            "GET",
            &format!(
                "/api/events/subscribe?token={}&lastEventId=nonsense",
                token("bob", "w1")
            ),
            None,
            None,
        )
        .await;
    assert_eq!(bad, 400);
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
