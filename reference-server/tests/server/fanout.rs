use crate::support::*;
use rtsync_protocol::{EventType, ServerMsg};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_mutation_is_acked_to_the_sender_and_fanned_out_to_every_other_session() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.ws("alice", "w1", "tab-a").await;
    let mut a2 = server.ws("alice", "w1", "tab-a2").await; // another tab of the same user
    let mut b = server.ws("bob", "w1", "tab-b").await;
    let mut other = server.ws("carol", "w2", "tab-c").await; // another workspace
    let mut sse = server.sse("dave", "w1", "sse-d", None).await;
    for ws in [&mut a, &mut a2, &mut b, &mut other] {
        connected(ws).await;
    }
    assert!(matches!(sse.recv().await.1, ServerMsg::Connected(_)));

    a.send(&mutation(
        EventType::TaskCreated,
        "ca:1",
        "t1",
        0,
        json!({"title": "Plan", "status": "todo"}),
    ))
    .await;
    let ack = match a.recv().await {
        ServerMsg::Ack(ack) => ack,
        other => panic!("sender got {other:?}"),
    };
    assert_eq!(
        (ack.op_id.as_str(), ack.version, ack.seq),
        ("ca:1", 1, Some(1))
    );

    for ws in [&mut a2, &mut b] {
        match ws.recv().await {
            ServerMsg::RealtimeEvent {
                seq: Some(1),
                event,
            } => {
                assert_eq!(event.kind, EventType::TaskCreated);
                assert_eq!(event.payload["title"], "Plan");
                assert_eq!(event.payload["opId"], "ca:1");
                assert_eq!(
                    (event.user_id.as_str(), event.session_id.as_str()),
                    ("alice", "tab-a")
                );
            }
            other => panic!("receiver got {other:?}"),
        }
    }
    let (ev, msg) = sse.recv().await;
    assert!(matches!(msg, ServerMsg::RealtimeEvent { seq: Some(1), .. }));
    assert!(
        ev.id.as_deref().is_some_and(|id| id.ends_with(":1")),
        "SSE id is E:N, got {:?}",
        ev.id
    );

    // The sender's own session does not get its event back, and w2 gets nothing.
    a.quiet_for(Duration::from_millis(200)).await;
    other.quiet_for(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn status_changes_carry_the_seeds_task_id_shape() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.ws("alice", "w1", "a").await;
    let mut b = server.ws("bob", "w1", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    a.send(&mutation(
        EventType::TaskCreated,
        "c:1",
        "t1",
        0,
        json!({"status": "todo"}),
    ))
    .await;
    a.recv().await;
    b.recv().await;
    a.send(&mutation(
        EventType::TaskStatusChanged,
        "c:2",
        "t1",
        1,
        json!({"status": "done"}),
    ))
    .await;
    match b.recv().await {
        ServerMsg::RealtimeEvent { event, .. } => {
            assert_eq!(
                (
                    event.payload["taskId"].clone(),
                    event.payload["status"].clone()
                ),
                (json!("t1"), json!("done"))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cursors_are_relayed_to_others_as_ephemeral_events() {
    let server = TestServer::start(|c| c.core.cursor_interval_ms = 10).await;
    let mut a = server.ws("alice", "w1", "a").await;
    let mut b = server.ws("bob", "w1", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    a.send_text(r#"{"type":"USER_ACTION","payload":{"type":"CURSOR_MOVE","x":3,"y":4,"elementId":"task-1"}}"#).await;
    let (seq, cursor) = b
        .until(|m| match m {
            ServerMsg::RealtimeEvent { seq, event }
                if event.kind == EventType::CollaborationCursor =>
            {
                Some((*seq, event.payload.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(seq, None, "cursors are never logged");
    assert_eq!(
        (
            cursor["userId"].clone(),
            cursor["x"].clone(),
            cursor["elementId"].clone()
        ),
        (json!("alice"), json!(3.0), json!("task-1"))
    );
}
