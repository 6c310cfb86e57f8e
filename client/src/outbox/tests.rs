use super::*;
use serde_json::json;

fn changes(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn sequenced(capacity: usize) -> Outbox {
    Outbox::new(
        "c1",
        OutboxConfig {
            policy: OutboxPolicy::Sequenced { capacity },
            inflight_max: 8,
            ack_timeout_ms: 100,
        },
    )
}

fn op_id(m: &ClientMsg) -> String {
    match m {
        ClientMsg::RealtimeEvent(ev) => ev.payload["opId"].as_str().unwrap().to_owned(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn numbers_contiguously_and_sends_in_order() {
    let mut o = sequenced(10);
    for i in 0..3 {
        o.enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"i": i})),
            None,
            vec![],
            0,
        )
        .unwrap();
    }
    let sent: Vec<_> = std::iter::from_fn(|| o.poll_send(1))
        .map(|m| op_id(&m))
        .collect();
    assert_eq!(sent, vec!["c1:1", "c1:2", "c1:3"]);
}

#[test]
fn a_full_queue_refuses_loudly() {
    let mut o = sequenced(2);
    o.enqueue(
        EventType::TaskUpdated,
        "t",
        1,
        changes(json!({"a": 1})),
        None,
        vec![],
        0,
    )
    .unwrap();
    o.enqueue(
        EventType::TaskUpdated,
        "t",
        1,
        changes(json!({"a": 2})),
        None,
        vec![],
        0,
    )
    .unwrap();
    let e = o
        .enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"a": 3})),
            None,
            vec![],
            0,
        )
        .unwrap_err();
    assert_eq!(e, OutboxError::Full { capacity: 2 });
    assert_eq!(
        (o.len(), o.stats.refused_full, o.stats.dropped_silently),
        (2, 1, 0)
    );
}

#[test]
fn the_legacy_queue_drops_the_oldest_silently() {
    let mut o = Outbox::new(
        "c1",
        OutboxConfig {
            policy: OutboxPolicy::Legacy,
            ..Default::default()
        },
    );
    for i in 0..(LEGACY_CAPACITY + 3) {
        o.enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"i": i})),
            None,
            vec![],
            0,
        )
        .unwrap();
    }
    assert_eq!((o.len(), o.stats.dropped_silently), (LEGACY_CAPACITY, 3));
    assert_eq!(o.dropped_ids.front().map(String::as_str), Some("c1-1:1"));
    // Sent ops are forgotten on a disconnect, then rolled back at the timeout.
    let first = o.poll_send(0).unwrap();
    o.on_disconnect();
    assert_ne!(
        o.poll_send(1).map(|m| op_id(&m)),
        Some(op_id(&first)),
        "not resent"
    );
    let (_, late) = o.handle_timeout(20_000);
    assert_eq!(late.len(), 2);
}

#[test]
fn replays_everything_unanswered_after_a_disconnect_and_rewinds_on_out_of_order() {
    let mut o = sequenced(10);
    for i in 0..3 {
        o.enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"i": i})),
            None,
            vec![],
            0,
        )
        .unwrap();
    }
    while o.poll_send(1).is_some() {}
    o.answer("c1:1", false).unwrap();
    o.on_disconnect();
    let again: Vec<_> = std::iter::from_fn(|| o.poll_send(2))
        .map(|m| op_id(&m))
        .collect();
    assert_eq!(again, vec!["c1:2", "c1:3"]);
    o.rewind_to(3);
    assert_eq!(o.poll_send(3).map(|m| op_id(&m)), Some("c1:3".into()));
}

#[test]
fn dependencies_hold_an_op_back_and_a_failure_cascades() {
    let mut o = sequenced(10);
    o.enqueue(
        EventType::TaskCreated,
        "p",
        0,
        changes(json!({"a": 1})),
        None,
        vec![],
        0,
    )
    .unwrap();
    o.enqueue(
        EventType::TaskUpdated,
        "q",
        1,
        changes(json!({"b": 1})),
        None,
        vec!["c1:1".into()],
        0,
    )
    .unwrap();
    o.enqueue(
        EventType::TaskUpdated,
        "r",
        1,
        changes(json!({"c": 1})),
        None,
        vec!["c1:2".into()],
        0,
    )
    .unwrap();
    assert!(o.poll_send(0).is_some());
    assert!(o.poll_send(0).is_none(), "c1:2 waits for c1:1");
    let (_, cascaded) = o.answer("c1:1", true).unwrap();
    assert_eq!(
        cascaded
            .iter()
            .map(|o| o.op_id.as_str())
            .collect::<Vec<_>>(),
        vec!["c1:2", "c1:3"]
    );
    assert!(o.is_empty());
    // Answered: a second answer is a duplicate. Cascaded without an answer: an answer
    // to one later means it applied after all.
    assert!(o.was_answered("c1:1"));
    assert!(!o.was_answered("c1:2") && !o.was_answered("c1:3"));
}

#[test]
fn an_overdue_op_makes_the_connection_suspect() {
    let mut o = sequenced(10);
    o.enqueue(
        EventType::TaskUpdated,
        "t",
        1,
        changes(json!({"a": 1})),
        None,
        vec![],
        0,
    )
    .unwrap();
    o.poll_send(10);
    assert_eq!(o.poll_timeout(), Some(110));
    assert_eq!(o.handle_timeout(109), (false, vec![]));
    assert!(o.handle_timeout(110).0);
    assert_eq!(o.len(), 1, "still queued: nothing is given up");
}

#[test]
fn persisted_ops_restore_unsent() {
    let mut o = sequenced(10);
    o.enqueue(
        EventType::TaskUpdated,
        "t",
        1,
        changes(json!({"a": 1})),
        None,
        vec![],
        0,
    )
    .unwrap();
    o.poll_send(0);
    let saved = serde_json::to_string(&o.ops().cloned().collect::<Vec<_>>()).unwrap();
    let mut restored = sequenced(10);
    restored.restore(serde_json::from_str(&saved).unwrap(), o.next_n());
    assert_eq!(
        restored.poll_send(5).map(|m| op_id(&m)),
        Some("c1:1".into())
    );
    restored
        .enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"a": 2})),
            None,
            vec![],
            0,
        )
        .unwrap();
    assert_eq!(restored.ops().last().unwrap().op_id, "c1:2");
}

#[test]
fn a_rate_limited_op_and_those_after_it_go_again_in_order_after_the_hold() {
    let mut o = sequenced(10);
    for i in 0..3 {
        o.enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"i": i})),
            None,
            vec![],
            0,
        )
        .unwrap();
    }
    let sent: Vec<String> = std::iter::from_fn(|| o.poll_send(0))
        .map(|m| op_id(&m))
        .collect();
    assert_eq!(sent, ["c1:1", "c1:2", "c1:3"]);
    // c1:1 answered; c1:2 refused: it and c1:3 wait until 500, then go in order.
    o.answer("c1:1", false);
    o.retry_later("c1:2", 500);
    assert_eq!(o.poll_timeout(), Some(500));
    assert!(o.poll_send(499).is_none(), "held");
    // One at a time after a refusal, one more per answer (not the whole window).
    let sends = |o: &mut Outbox| -> Vec<String> {
        std::iter::from_fn(|| o.poll_send(500))
            .map(|m| op_id(&m))
            .collect()
    };
    assert_eq!(sends(&mut o), ["c1:2"]);
    o.answer("c1:2", false);
    assert_eq!(sends(&mut o), ["c1:3"]);
    assert_eq!(o.stats.resent, 2);
    for i in 0..8 {
        o.enqueue(
            EventType::TaskUpdated,
            "t",
            1,
            changes(json!({"j": i})),
            None,
            vec![],
            0,
        )
        .unwrap();
    }
    o.answer("c1:3", false);
    assert_eq!(sends(&mut o).len(), 3, "window 1, then 2, then 3");
    // A later refusal never shortens a hold already set.
    o.retry_later("c1:4", 900);
    o.retry_later("c1:5", 700);
    assert!(o.poll_send(800).is_none());
    assert!(o.poll_send(900).is_some());
}
