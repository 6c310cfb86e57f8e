use super::*;
use serde_json::json;

fn ws() -> Workspace {
    let cfg = CoreConfig {
        replay_batch_events: 2,
        cursor_interval_ms: 100,
        ..CoreConfig::default()
    };
    Workspace::new("w1", 42, Arc::new(cfg))
}

fn info(user: &str, session: &str) -> SessionInfo {
    SessionInfo {
        user_id: user.into(),
        session_id: session.into(),
        device: Device::default(),
    }
}

fn mutation(
    kind: EventType,
    op: &str,
    id: &str,
    base: u64,
    changes: serde_json::Value,
) -> ClientEvent {
    ClientEvent {
        id: None,
        kind,
        payload: json!({"opId": op, "id": id, "changes": changes}),
        user_id: None,
        session_id: None,
        timestamp: None,
        version: base,
    }
}

fn decode(d: &Delivery) -> ServerMsg {
    ServerMsg::decode(&d.frame.text).unwrap()
}

fn to(out: &[Delivery], conn: ConnId) -> Vec<ServerMsg> {
    out.iter().filter(|d| d.to == conn).map(decode).collect()
}

#[test]
fn fan_out_skips_the_sender_session_but_reaches_its_other_tabs() {
    let mut w = ws();
    w.connect(1, info("u1", "tab-a"), None, 0);
    w.connect(2, info("u1", "tab-b"), None, 0);
    w.connect(3, info("u2", "tab-c"), None, 0);
    let out = w.handle_event(
        1,
        &mutation(
            EventType::TaskCreated,
            "c1:1",
            "t1",
            0,
            json!({"title": "x"}),
        ),
        10,
    );
    assert!(
        matches!(to(&out, 1).as_slice(), [ServerMsg::Ack(a)] if a.seq == Some(1) && a.version == 1)
    );
    for conn in [2, 3] {
        let msgs = to(&out, conn);
        assert!(
            matches!(msgs.as_slice(), [ServerMsg::RealtimeEvent { seq: Some(1), event }] if event.payload["title"] == "x")
        );
    }
}

#[test]
fn repeats_get_the_same_answer_and_gaps_are_refused() {
    let mut w = ws();
    w.connect(1, info("u1", "s"), None, 0);
    let m1 = mutation(
        EventType::TaskCreated,
        "c1:1",
        "t1",
        0,
        json!({"title": "x"}),
    );
    let first = w.handle_event(1, &m1, 10);
    let again = w.handle_event(1, &m1, 20);
    assert_eq!(first[0].frame, again[0].frame);
    assert_eq!(w.head(), 1, "a repeat changes nothing");
    let m3 = mutation(
        EventType::TaskUpdated,
        "c1:3",
        "t1",
        1,
        json!({"title": "y"}),
    );
    let out = w.handle_event(1, &m3, 30);
    assert!(
        matches!(&to(&out, 1)[0], ServerMsg::Error(e) if e.code == ErrorCode::OutOfOrder && e.expected_n == Some(2))
    );
}

#[test]
fn an_invalid_op_with_a_valid_op_id_is_answered_and_consumes_n() {
    let mut w = ws();
    w.connect(1, info("u1", "s"), None, 0);
    w.handle_event(
        1,
        &mutation(
            EventType::TaskCreated,
            "c1:1",
            "t1",
            0,
            json!({"title": "x"}),
        ),
        10,
    );
    let bad = mutation(
        EventType::TaskUpdated,
        "c1:2",
        "t1",
        1,
        json!({"version": 9}),
    );
    assert!(
        matches!(&to(&w.handle_event(1, &bad, 20), 1)[0], ServerMsg::Error(e) if e.code == ErrorCode::InvalidPayload)
    );
    let next = mutation(
        EventType::TaskUpdated,
        "c1:3",
        "t1",
        1,
        json!({"title": "y"}),
    );
    assert!(matches!(
        &to(&w.handle_event(1, &next, 30), 1)[0],
        ServerMsg::Ack(_)
    ));
}

fn recent(out: &[Delivery], conn: ConnId) -> Vec<rtsync_protocol::RecentEvents> {
    to(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::RecentEvents(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replay_is_bounded_in_bytes_and_live_events_wait_in_the_log_until_it_catches_up() {
    let cfg = CoreConfig {
        replay_batch_events: 100,
        replay_batch_bytes: 1_000,
        ..CoreConfig::default()
    };
    let mut w = Workspace::new("w1", 42, Arc::new(cfg));
    w.connect(1, info("u1", "s"), None, 0);
    let write = |w: &mut Workspace, n: u64| {
        let m = mutation(
            EventType::TaskCreated,
            &format!("c1:{n}"),
            &format!("t{n}"),
            0,
            json!({"text": "x".repeat(400)}),
        );
        w.handle_event(1, &m, n)
    };
    for n in 1..=6 {
        write(&mut w, n);
    }
    let first = recent(
        &w.connect(
            2,
            info("u2", "s2"),
            Some(Resume {
                epoch: 42,
                last_seq: 0,
            }),
            10,
        ),
        2,
    );
    assert_eq!(first.len(), 1);
    assert!(first[0].events.len() < 6, "bounded by bytes, not all six");
    // A write while session 2 catches up is not fanned out to it...
    let live = write(&mut w, 7);
    assert!(
        to(&live, 2).is_empty(),
        "no live event before the replay ends"
    );
    // ...its replay reads it from the log, in order, with nothing missing or repeated.
    let mut seqs: Vec<u64> = first[0].events.iter().map(|e| e.seq).collect();
    while w.is_replaying(2) {
        for r in recent(&w.continue_replay(2), 2) {
            assert!(r.complete);
            seqs.extend(r.events.iter().map(|e| e.seq));
        }
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    // Live again: the next write reaches it.
    assert!(!to(&write(&mut w, 8), 2).is_empty());
}

#[test]
fn resume_replays_in_batches_that_decode() {
    let mut w = ws();
    w.connect(1, info("u1", "s"), None, 0);
    for n in 1..=5 {
        let m = mutation(
            EventType::TaskCreated,
            &format!("c1:{n}"),
            &format!("t{n}"),
            0,
            json!({"n": n}),
        );
        w.handle_event(1, &m, n);
    }
    let out = w.connect(
        2,
        info("u2", "s2"),
        Some(Resume {
            epoch: 42,
            last_seq: 1,
        }),
        10,
    );
    // The first batch comes with the connect; the rest as the connection drains.
    let mut batches = recent(&out, 2);
    assert!(w.is_replaying(2));
    batches.extend(recent(&w.continue_replay(2), 2));
    assert!(!w.is_replaying(2), "caught up with the head");
    assert!(w.continue_replay(2).is_empty());
    let ranges: Vec<_> = batches
        .iter()
        .map(|r| (r.from_seq, r.to_seq, r.complete, r.events.len()))
        .collect();
    assert_eq!(ranges, vec![(2, 3, true, 2), (4, 5, true, 2)]);
    let lost = w.resume(
        2,
        Resume {
            epoch: 41,
            last_seq: 1,
        },
    );
    assert!(
        matches!(&to(&lost, 2)[0], ServerMsg::RecentEvents(r) if !r.complete && r.events.is_empty())
    );
}

#[test]
fn cursors_are_throttled_and_the_latest_wins() {
    let mut w = ws();
    w.connect(1, info("u1", "s1"), None, 0);
    w.connect(2, info("u2", "s2"), None, 0);
    assert_eq!(w.cursor(1, 1.0, 1.0, None, 1000).len(), 1);
    assert!(w.cursor(1, 2.0, 2.0, None, 1010).is_empty());
    assert!(w.cursor(1, 3.0, 3.0, None, 1020).is_empty());
    assert!(
        w.tick(1050)
            .iter()
            .all(|d| !d.frame.text.contains("COLLABORATION_CURSOR"))
    );
    let out = w.tick(1100);
    let cursors: Vec<_> = to(&out, 2)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::RealtimeEvent { seq: None, event }
                if event.kind == EventType::CollaborationCursor =>
            {
                Some(event.payload["x"].clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(cursors, vec![json!(3.0)]);
    assert!(
        to(&out, 1)
            .iter()
            .all(|m| !matches!(m, ServerMsg::RealtimeEvent { .. }))
    );
}
