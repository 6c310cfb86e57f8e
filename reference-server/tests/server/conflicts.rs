use crate::support::*;
use rtsync_protocol::{ErrorCode, EventType, ServerMsg, Strategy};
use serde_json::json;

/// Creates t1 (title, status) from `a`, then changes its status from `b`: t1 is at v2
/// and `a` still holds v1.
async fn two_writers(strategy: Option<Strategy>) -> (TestServer, Ws, Ws) {
    let server = TestServer::start(|c| {
        if let Some(s) = strategy {
            c.core.strategy_task = s;
        }
    })
    .await;
    let mut a = server.ws("alice", "w1", "a").await;
    let mut b = server.ws("bob", "w1", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    a.send(&mutation(
        EventType::TaskCreated,
        "ca:1",
        "t1",
        0,
        json!({"title": "x", "status": "todo"}),
    ))
    .await;
    assert!(matches!(a.recv().await, ServerMsg::Ack(_)));
    b.recv().await;
    b.send(&mutation(
        EventType::TaskUpdated,
        "cb:1",
        "t1",
        1,
        json!({"status": "doing"}),
    ))
    .await;
    assert!(matches!(b.recv().await, ServerMsg::Ack(ack) if ack.version == 2));
    a.recv().await;
    (server, a, b)
}

#[tokio::test]
async fn last_write_wins_applies_on_top_and_names_what_it_overwrote() {
    let (_s, mut a, mut b) = two_writers(Some(Strategy::LastWriteWins)).await;
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"status": "done"}),
    ))
    .await;
    match a.recv().await {
        ServerMsg::Ack(ack) => {
            assert_eq!(
                (ack.version, ack.resolution),
                (3, Some(Strategy::LastWriteWins))
            );
            assert_eq!(ack.overwritten, vec!["status".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(b.recv().await, ServerMsg::RealtimeEvent { event, .. } if event.payload["status"] == "done")
    );
}

#[tokio::test]
async fn merge_applies_disjoint_fields_and_returns_the_overlap() {
    let (_s, mut a, mut b) = two_writers(Some(Strategy::Merge)).await;
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"title": "y", "status": "done"}),
    ))
    .await;
    match a.recv().await {
        ServerMsg::ConflictDetected(c) => {
            assert_eq!(c.resolution.strategy, Strategy::Merge);
            assert_eq!(c.op_id, "ca:2");
            assert_eq!(c.resolution.conflicts.len(), 1);
            let item = &c.resolution.conflicts[0];
            assert_eq!(
                (
                    item.field.as_str(),
                    item.local_value.clone(),
                    item.remote_value.clone()
                ),
                ("status", json!("done"), json!("doing"))
            );
            assert_eq!(item.user_id, "bob");
            assert_eq!(
                (c.current.version, c.current.fields["title"].clone()),
                (3, json!("y"))
            );
            assert!(c.seq.is_some());
        }
        other => panic!("{other:?}"),
    }
    // The applied part (title) reaches the others.
    assert!(
        matches!(b.recv().await, ServerMsg::RealtimeEvent { event, .. } if event.payload["title"] == "y" && event.payload["status"] == "doing")
    );
}

#[tokio::test]
async fn manual_applies_nothing_and_the_resolving_write_goes_on_the_current_version() {
    let (_s, mut a, mut b) = two_writers(Some(Strategy::Manual)).await;
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"title": "y", "status": "done"}),
    ))
    .await;
    let current = match a.recv().await {
        ServerMsg::ConflictDetected(c) => {
            assert_eq!(c.resolution.strategy, Strategy::Manual);
            assert_eq!(c.current.fields["title"], "x", "nothing applied");
            c.current
        }
        other => panic!("{other:?}"),
    };
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:3",
        "t1",
        current.version,
        json!({"status": "done"}),
    ))
    .await;
    assert!(
        matches!(a.recv().await, ServerMsg::Ack(ack) if ack.version == 3 && ack.resolution.is_none())
    );
    assert!(
        matches!(b.recv().await, ServerMsg::RealtimeEvent { event, .. } if event.payload["status"] == "done")
    );
}

#[tokio::test]
async fn a_mutation_may_ask_for_its_own_strategy() {
    let (_s, mut a, _b) = two_writers(Some(Strategy::Manual)).await;
    let mut m = mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"status": "done"}),
    );
    if let rtsync_protocol::ClientMsg::RealtimeEvent(ev) = &mut m {
        ev.payload["strategy"] = json!("LAST_WRITE_WINS");
    }
    a.send(&m).await;
    assert!(
        matches!(a.recv().await, ServerMsg::Ack(ack) if ack.resolution == Some(Strategy::LastWriteWins))
    );
}

#[tokio::test]
async fn deleted_entities_conflict_on_update_and_ack_a_second_delete() {
    let (_s, mut a, mut b) = two_writers(None).await;
    b.send(&mutation(
        EventType::TaskDeleted,
        "cb:2",
        "t1",
        2,
        json!({}),
    ))
    .await;
    assert!(matches!(b.recv().await, ServerMsg::Ack(ack) if ack.version == 3));
    assert!(
        matches!(a.recv().await, ServerMsg::RealtimeEvent { event, .. } if event.kind == EventType::TaskDeleted && event.payload["deleted"] == true)
    );
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        3,
        json!({"title": "z"}),
    ))
    .await;
    assert!(
        matches!(a.recv().await, ServerMsg::ConflictDetected(c) if c.resolution.conflicts[0].field == "deleted")
    );
    a.send(&mutation(
        EventType::TaskDeleted,
        "ca:3",
        "t1",
        3,
        json!({}),
    ))
    .await;
    assert!(matches!(a.recv().await, ServerMsg::Ack(ack) if ack.seq.is_none() && ack.version == 3));
}

#[tokio::test]
async fn a_duplicate_op_gets_the_same_answer_and_is_not_applied_twice() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.ws("alice", "w1", "a").await;
    let mut b = server.ws("bob", "w1", "b").await;
    connected(&mut a).await;
    connected(&mut b).await;
    let m = mutation(
        EventType::TaskCreated,
        "ca:1",
        "t1",
        0,
        json!({"title": "x"}),
    );
    a.send(&m).await;
    let first = a.recv().await;
    a.send(&m).await;
    let second = a.recv().await;
    assert_eq!(first, second);
    // b saw exactly one event: the next thing it sees is the next op's event (seq 2).
    assert!(matches!(
        b.recv().await,
        ServerMsg::RealtimeEvent { seq: Some(1), .. }
    ));
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"title": "y"}),
    ))
    .await;
    assert!(matches!(
        b.recv().await,
        ServerMsg::RealtimeEvent { seq: Some(2), .. }
    ));
    // A reconnect replaying the same op (another session, same client) is deduplicated too.
    let mut a_again = server.ws("alice", "w1", "a-reconnected").await;
    connected(&mut a_again).await;
    a_again.send(&m).await;
    assert_eq!(a_again.recv().await, first);
}

#[tokio::test]
async fn a_gap_in_op_numbers_is_answered_out_of_order() {
    let server = TestServer::start(|_| {}).await;
    let mut a = server.ws("alice", "w1", "a").await;
    connected(&mut a).await;
    a.send(&mutation(
        EventType::TaskCreated,
        "ca:1",
        "t1",
        0,
        json!({"title": "x"}),
    ))
    .await;
    a.recv().await;
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:3",
        "t1",
        1,
        json!({"title": "y"}),
    ))
    .await;
    match a.recv().await {
        ServerMsg::Error(e) => {
            assert_eq!(
                (e.code, e.op_id.as_deref(), e.expected_n),
                (ErrorCode::OutOfOrder, Some("ca:3"), Some(2))
            );
        }
        other => panic!("{other:?}"),
    }
    // Replaying from the expected n works.
    a.send(&mutation(
        EventType::TaskUpdated,
        "ca:2",
        "t1",
        1,
        json!({"title": "y"}),
    ))
    .await;
    assert!(matches!(a.recv().await, ServerMsg::Ack(_)));
}
