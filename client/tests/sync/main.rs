//! Client sessions against the reference server's real domain core, with lost,
//! duplicated and reordered-by-reconnect frames.

mod harness;

use harness::Net;
use proptest::prelude::*;
use rtsync_client::session::{Note, RollbackReason, SessionConfig};
use rtsync_protocol::{
    ClientMsg, EntityKind, EventType, Resume, ServerMsg, Strategy as ConflictStrategy,
};
use rtsync_server::core::CoreConfig;
use serde_json::{Map, Value, json};

fn core(strategy: ConflictStrategy) -> CoreConfig {
    CoreConfig {
        strategy_task: strategy,
        ..CoreConfig::default()
    }
}

fn changes(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Every logged event of the server, in seq order: (seq, opId).
fn server_log(net: &mut Net) -> Vec<(u64, String)> {
    let out = net.ws.resume(
        u64::MAX,
        Resume {
            epoch: net.ws.epoch(),
            last_seq: 0,
        },
    );
    out.iter()
        .flat_map(|d| match ServerMsg::decode(&d.frame.text).unwrap() {
            ServerMsg::RecentEvents(r) => r
                .events
                .into_iter()
                .map(|e| {
                    (
                        e.seq,
                        e.payload.payload["opId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// At quiescence every client's replica equals the server, and its view too.
fn assert_converged(net: &Net) {
    for kind in EntityKind::ALL {
        let server = net.ws.snapshot(kind, None).entities;
        for (i, c) in net.clients.iter().enumerate() {
            let mine: Vec<_> =
                c.s.replica()
                    .live()
                    .filter(|e| e.entity == kind)
                    .cloned()
                    .collect();
            let strip = |v: &Vec<rtsync_protocol::Entity>| {
                v.iter()
                    .map(|e| (e.id.clone(), e.version, e.fields.clone(), e.deleted))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                strip(&mine),
                strip(&server),
                "client {i} diverged on {kind:?}"
            );
            for e in &server {
                assert_eq!(
                    c.s.view(kind, &e.id).map(|v| v.fields),
                    Some(e.fields.clone()),
                    "client {i}'s view of {}",
                    e.id
                );
            }
        }
    }
}

fn acked(net: &Net, i: usize) -> Vec<String> {
    net.clients[i]
        .notes
        .iter()
        .filter_map(|n| match n {
            Note::Acked { op, .. } => Some(op.op_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn offline_edits_replay_exactly_once_after_reconnect() {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    let now = net.now;
    net.clients[0].s.go_offline(now);
    net.pump();
    let s = &mut net.clients[0].s;
    s.mutate(
        EventType::TaskCreated,
        "t1",
        changes(json!({"title": "a"})),
        None,
        vec![],
        now,
    )
    .unwrap();
    s.mutate(
        EventType::TaskUpdated,
        "t1",
        changes(json!({"title": "b"})),
        None,
        vec![],
        now,
    )
    .unwrap();
    s.mutate(
        EventType::TaskStatusChanged,
        "t1",
        changes(json!({"status": "done"})),
        None,
        vec![],
        now,
    )
    .unwrap();
    assert_eq!(
        s.view(EntityKind::Task, "t1").unwrap().fields["title"],
        "b",
        "the view shows queued changes at once"
    );
    assert_eq!(s.replica().len(), 0, "nothing is confirmed while offline");
    net.settle();
    assert_eq!(acked(&net, 0), vec!["c0:1", "c0:2", "c0:3"]);
    let log: Vec<String> = server_log(&mut net).into_iter().map(|(_, op)| op).collect();
    assert_eq!(log, vec!["c0:1", "c0:2", "c0:3"]);
    assert_converged(&net);
}

#[test]
fn a_lost_connection_mid_flight_replays_without_duplicates() {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    for n in 0..5 {
        net.mutate(0, EventType::TaskCreated, &format!("t{n}"), json!({"n": n}));
    }
    net.pump();
    // Three ops reach the server (one twice), then the connection dies before any answer.
    net.deliver_up(0, false);
    net.deliver_up(0, true);
    net.deliver_up(0, false);
    net.drop_conn(0);
    net.settle();
    let log: Vec<String> = server_log(&mut net).into_iter().map(|(_, op)| op).collect();
    assert_eq!(log, (1..=5).map(|n| format!("c0:{n}")).collect::<Vec<_>>());
    assert_converged(&net);
}

#[test]
fn a_conflict_rolls_back_that_op_alone() {
    let mut net = Net::settled(2, ConflictStrategy::Manual);
    net.mutate(0, EventType::TaskCreated, "t1", json!({"title": "x"}));
    net.mutate(0, EventType::TaskCreated, "t2", json!({"title": "y"}));
    net.settle();
    // Both edit t1 on v1; client 1 wins the race. Client 0 also edits t2.
    net.mutate(1, EventType::TaskUpdated, "t1", json!({"title": "theirs"}));
    net.mutate(0, EventType::TaskUpdated, "t1", json!({"title": "mine"}));
    net.mutate(
        0,
        EventType::TaskUpdated,
        "t2",
        json!({"title": "mine too"}),
    );
    net.pump();
    net.deliver_up(1, false);
    net.settle();
    let rolled: Vec<_> = net.clients[0]
        .notes
        .iter()
        .filter_map(|n| match n {
            Note::RolledBack {
                op,
                reason: RollbackReason::Conflict,
            } => Some(op.entity_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rolled, vec!["t1"]);
    assert!(net.clients[0].notes.iter().any(
        |n| matches!(n, Note::Conflict(c) if c.resolution.strategy == ConflictStrategy::Manual)
    ));
    let s = &net.clients[0].s;
    assert_eq!(
        s.view(EntityKind::Task, "t1").unwrap().fields["title"],
        "theirs"
    );
    assert_eq!(
        s.view(EntityKind::Task, "t2").unwrap().fields["title"],
        "mine too"
    );
    assert_converged(&net);
}

#[test]
fn a_server_bounce_is_survived_by_snapshot_resync_and_queue_replay() {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    net.mutate(0, EventType::TaskCreated, "t1", json!({"title": "before"}));
    net.settle();
    net.bounce_server(|_, _| {}); // the in-memory server lost everything
    net.mutate(1, EventType::TaskCreated, "t9", json!({"title": "after"}));
    net.settle();
    assert!(net.clients.iter().all(|c| c.notes.iter().any(|n| matches!(
        n,
        Note::Synced {
            by_snapshot: true,
            ..
        }
    ))));
    assert_eq!(net.ws.snapshot(EntityKind::Task, None).entities.len(), 1);
    assert_converged(&net);
}

#[test]
fn duplicated_server_frames_are_applied_once() {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    net.mutate(0, EventType::TaskCreated, "t1", json!({"n": 1}));
    net.pump();
    net.deliver_up(0, false);
    while !net.clients[1].to_client.is_empty() {
        net.deliver_down(1, true);
    }
    let applied = net.clients[1]
        .notes
        .iter()
        .filter(|n| matches!(n, Note::Applied { .. }))
        .count();
    let dups = net.clients[1]
        .notes
        .iter()
        .filter(|n| matches!(n, Note::Duplicate { .. }))
        .count();
    assert_eq!((applied, dups), (1, 1));
    net.settle();
    assert_converged(&net);
}

#[test]
fn a_reload_restores_the_persisted_queue_and_loses_no_write() {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    let now = net.now;
    net.clients[0].s.go_offline(now);
    net.pump();
    for n in 0..3 {
        net.mutate(0, EventType::TaskCreated, &format!("t{n}"), json!({"n": n}));
    }
    // The tab is closed and reopened: a new session from what it had persisted.
    let stored = net.clients[0]
        .stored_queue
        .clone()
        .expect("the queue was persisted before mutate returned");
    let sync: rtsync_client::session::SyncState = serde_json::from_str(&stored).unwrap();
    assert_eq!(sync.outbox.len(), 3);
    let entities: Vec<_> = net.clients[0].s.replica().entities().cloned().collect();
    let mut fresh = rtsync_client::session::Session::new(
        "u0",
        "c0",
        SessionConfig::default(),
        rtsync_client::rng::Rng::new(9),
    );
    fresh.restore(entities, sync);
    net.clients[0].s = fresh;
    net.clients[0].s.start(now);
    net.pump();
    net.settle();
    assert_eq!(net.ws.snapshot(EntityKind::Task, None).entities.len(), 3);
    assert_converged(&net);
}

#[derive(Debug, Clone)]
enum Step {
    Mutate {
        client: usize,
        entity: u8,
        value: u8,
        delete: bool,
    },
    ToServer {
        client: usize,
        dup: bool,
    },
    ToClient {
        client: usize,
        dup: bool,
    },
    Drop {
        client: usize,
    },
    Offline {
        client: usize,
    },
    Online {
        client: usize,
    },
    Tick {
        ms: u64,
    },
}

fn step(clients: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..clients, 0u8..4, any::<u8>(), proptest::bool::weighted(0.1)).prop_map(|(client, entity, value, delete)| Step::Mutate { client, entity, value, delete }),
        4 => (0..clients, proptest::bool::weighted(0.2)).prop_map(|(client, dup)| Step::ToServer { client, dup }),
        4 => (0..clients, proptest::bool::weighted(0.2)).prop_map(|(client, dup)| Step::ToClient { client, dup }),
        1 => (0..clients).prop_map(|client| Step::Drop { client }),
        1 => (0..clients).prop_map(|client| Step::Offline { client }),
        1 => (0..clients).prop_map(|client| Step::Online { client }),
        1 => (1u64..3000).prop_map(|ms| Step::Tick { ms }),
    ]
}

fn run(net: &mut Net, steps: &[Step]) -> Vec<Vec<String>> {
    let mut enqueued = vec![Vec::new(); net.clients.len()];
    for s in steps {
        let now = net.now;
        match *s {
            Step::Mutate {
                client,
                entity,
                value,
                delete,
            } => {
                let id = format!("t{entity}");
                let session = &mut net.clients[client].s;
                let exists = session.view(EntityKind::Task, &id).is_some();
                let (kind, ch) = match (exists, delete) {
                    (false, _) => (EventType::TaskCreated, json!({"v": value, "by": client})),
                    (true, true) => (EventType::TaskDeleted, json!({})),
                    (true, false) => (EventType::TaskUpdated, json!({"v": value, "by": client})),
                };
                if let Ok(op) = session.mutate(kind, &id, changes(ch), None, vec![], now) {
                    enqueued[client].push(op);
                }
                net.pump();
            }
            Step::ToServer { client, dup } => net.deliver_up(client, dup),
            Step::ToClient { client, dup } => net.deliver_down(client, dup),
            Step::Drop { client } => net.drop_conn(client),
            Step::Offline { client } => {
                net.clients[client].s.go_offline(now);
                net.pump();
            }
            Step::Online { client } => {
                net.clients[client].s.go_online(now);
                net.pump();
            }
            Step::Tick { ms } => net.advance(ms),
        }
    }
    net.settle();
    enqueued
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer hunt.

    /// Across random disconnects, duplicate deliveries and offline periods, every op is
    /// answered exactly once, each client's applied ops appear in the server log in
    /// the order they were made, and at quiescence every view equals the server.
    #[test]
    fn ops_apply_exactly_once_in_order_and_views_converge(steps in proptest::collection::vec(step(3), 1..80)) {
        check_exactly_once_and_convergence(ConflictStrategy::LastWriteWins, &steps)?;
    }

    /// The same under MERGE, where stale writes conflict and are rolled back.
    #[test]
    fn under_merge_conflicts_roll_back_and_views_still_converge(steps in proptest::collection::vec(step(3), 1..80)) {
        check_exactly_once_and_convergence(ConflictStrategy::Merge, &steps)?;
    }
}

fn check_exactly_once_and_convergence(
    strategy: ConflictStrategy,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut net = Net::new(3, SessionConfig::default(), core(strategy));
    net.start_all();
    let enqueued = run(&mut net, steps);
    let log = server_log(&mut net);
    for (i, ops) in enqueued.iter().enumerate() {
        let answered: Vec<String> = net.clients[i]
            .notes
            .iter()
            .filter_map(|n| match n {
                Note::Acked { op, .. } | Note::RolledBack { op, .. } => Some(op.op_id.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&answered, ops, "client {} answered ops", i);
        let prefix = format!("c{i}:");
        let in_log: Vec<&String> = log
            .iter()
            .map(|(_, op)| op)
            .filter(|op| op.starts_with(&prefix))
            .collect();
        let mut sorted = in_log.clone();
        sorted.sort_by_key(|op| op[prefix.len()..].parse::<u64>().unwrap());
        sorted.dedup();
        prop_assert_eq!(
            &in_log,
            &sorted,
            "client {}: each op logged once, in order",
            i
        );
        prop_assert!(net.clients[i].s.outbox().is_empty());
    }
    assert_converged(&net);
    Ok(())
}

#[test]
fn resolving_a_conflict_on_a_stale_replica_bases_the_change_on_the_servers_version() {
    let mut net = Net::settled(2, ConflictStrategy::Manual);
    let now = net.now;
    net.mutate(0, EventType::TaskCreated, "t1", json!({"title": "a"}));
    net.settle();
    // Client 1 moves t1 to v3; client 0 never sees those events (its replica stays at v1).
    for n in 0..2 {
        net.mutate(1, EventType::TaskUpdated, "t1", json!({"n": n}));
        net.pump();
        net.deliver_up(1, false);
        net.deliver_down(1, false);
    }
    net.clients[0]
        .to_client
        .retain(|m| !matches!(m, ServerMsg::RealtimeEvent { .. }));
    net.mutate(0, EventType::TaskUpdated, "t1", json!({"title": "mine"}));
    net.pump();
    net.deliver_up(0, false);
    while let Some(m) = net.clients[0].to_client.pop_front() {
        if !matches!(m, ServerMsg::RealtimeEvent { .. }) {
            net.clients[0].s.handle_frame(m, now);
        }
    }
    net.pump();
    assert!(
        net.clients[0]
            .notes
            .iter()
            .any(|n| matches!(n, Note::Conflict(c) if c.current.version == 3))
    );
    assert_eq!(
        net.clients[0]
            .s
            .replica()
            .get(EntityKind::Task, "t1")
            .unwrap()
            .version,
        1,
        "still stale"
    );
    // The user keeps their value: the resolving write must be based on v3, not v1.
    net.mutate(0, EventType::TaskUpdated, "t1", json!({"title": "mine"}));
    assert_eq!(net.clients[0].s.outbox().ops().last().unwrap().base, 3);
    net.pump();
    net.deliver_up(0, false);
    // Accepted on the current version: no second conflict.
    assert!(
        matches!(net.clients[0].to_client.back(), Some(ServerMsg::Ack(a)) if a.version == 4 && a.resolution.is_none())
    );
    assert_eq!(
        net.ws.entity(EntityKind::Task, "t1").unwrap().fields["title"],
        "mine"
    );
}

/// Client 0 makes t1 v2; client 1, still at v1, writes another field, which LWW makes
/// v3 = v2 + its title. Client 1's queue then holds v2's event and its own ack for v3.
fn stale_write() -> Net {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    net.mutate(
        0,
        EventType::TaskCreated,
        "t1",
        json!({"title": "a", "status": "todo"}),
    );
    net.settle();
    net.mutate(0, EventType::TaskUpdated, "t1", json!({"status": "done"}));
    net.deliver_up(0, false);
    net.mutate(1, EventType::TaskUpdated, "t1", json!({"title": "b"}));
    net.deliver_up(1, false);
    net
}

fn t1_of(net: &Net, i: usize) -> Option<(u64, Map<String, Value>)> {
    net.clients[i]
        .s
        .replica()
        .get(EntityKind::Task, "t1")
        .map(|e| (e.version, e.fields.clone()))
}

fn resumed(net: &Net, i: usize) -> bool {
    net.clients[i]
        .to_server
        .iter()
        .any(|m| matches!(m, ClientMsg::Resume(_)))
}

#[test]
fn an_ack_ahead_of_a_stale_replica_waits_for_the_versions_it_skipped() {
    let mut net = stale_write();
    // v2's event never reaches client 1 (lost).
    net.clients[1]
        .to_client
        .retain(|m| !matches!(m, ServerMsg::RealtimeEvent { .. }));
    while !net.clients[1].to_client.is_empty() {
        net.deliver_down(1, false);
    }
    assert_eq!(
        t1_of(&net, 1).map(|(v, _)| v),
        Some(1),
        "the ack waits: v3 on top of v1 would never learn v2's status"
    );
    assert!(
        !net.clients[1].s.is_settled(),
        "a parked ack is unfinished business"
    );
    // Nothing fills the gap: after the gap timeout the stream is replayed.
    net.advance(SessionConfig::default().gap_timeout_ms);
    assert!(resumed(&net, 1));
    net.settle();
    let done = changes(json!({"title": "b", "status": "done"}));
    assert_eq!(t1_of(&net, 1), Some((3, done)));
    assert_converged(&net);
}

#[test]
fn an_ack_that_overtakes_the_stream_is_applied_when_the_stream_catches_up() {
    let mut net = stale_write();
    // The answer overtakes the stream (an SSE POST answer can): ack first, event after.
    let q = &mut net.clients[1].to_client;
    let ev = q
        .iter()
        .position(|m| matches!(m, ServerMsg::RealtimeEvent { .. }))
        .expect("v2's event");
    let event = q.remove(ev).expect("v2's event");
    q.push_back(event);
    while !net.clients[1].to_client.is_empty() {
        net.deliver_down(1, false);
    }
    let done = changes(json!({"title": "b", "status": "done"}));
    assert_eq!(
        t1_of(&net, 1),
        Some((3, done)),
        "v2 landed, then the parked v3"
    );
    assert!(!resumed(&net, 1), "no replay needed");
    assert!(net.clients[1].s.is_settled());
    net.settle();
    assert_converged(&net);
}

#[test]
fn events_buffered_during_a_resync_are_noted_when_the_snapshot_lands() {
    let mut net = Net::settled(2, ConflictStrategy::LastWriteWins);
    net.mutate(0, EventType::TaskCreated, "t1", json!({"title": "a"}));
    net.settle();
    // Client 1 loses its state and resyncs; its snapshot is taken now, answered later.
    net.clients[1].hold_snapshot = true;
    net.clients[1].s.reset_state();
    net.drop_conn(1);
    for _ in 0..100 {
        net.advance(100);
        while !net.clients[1].to_client.is_empty() {
            net.deliver_down(1, false);
        }
        if net.clients[1].s.is_resyncing() {
            break;
        }
    }
    assert!(net.clients[1].s.is_resyncing());
    // Meanwhile client 0 writes twice; client 1 receives both events and must buffer them.
    let ops: Vec<String> = (0..2)
        .map(|n| {
            let op = net.mutate(0, EventType::TaskUpdated, "t1", json!({"n": n}));
            net.deliver_up(0, false);
            op
        })
        .collect();
    while !net.clients[1].to_client.is_empty() {
        net.deliver_down(1, false);
    }
    let applied = |net: &Net| -> Vec<String> {
        net.clients[1]
            .notes
            .iter()
            .filter_map(|n| match n {
                Note::Applied { op_id, .. } => op_id.clone(),
                _ => None,
            })
            .collect()
    };
    assert!(
        ops.iter().all(|o| !applied(&net).contains(o)),
        "buffered, not applied"
    );
    net.answer_snapshot(1);
    // The snapshot predates both writes: they are applied from the buffer — and noted,
    // so their delivery is counted and timed like any other.
    let noted = applied(&net);
    assert!(
        ops.iter().all(|o| noted.contains(o)),
        "{noted:?} lacks {ops:?}"
    );
    assert_eq!(
        net.clients[1]
            .s
            .replica()
            .get(EntityKind::Task, "t1")
            .map(|e| e.version),
        Some(3)
    );
    net.settle();
    assert_converged(&net);
}
