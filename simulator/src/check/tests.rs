//! Each checker against a small hand-made history: a correct one it must pass, and a
//! broken one it must catch.

use super::*;
use crate::record::{OpRecord, ServerFinal, TabFinal};
use rtsync_protocol::Timestamp;
use serde_json::{Map, Value, json};

fn entity(id: &str, version: u64, fields: Value) -> Entity {
    Entity {
        id: id.into(),
        entity: EntityKind::Task,
        version,
        updated_at: Timestamp(0),
        updated_by: "u".into(),
        op_id: None,
        deleted: false,
        task_id: None,
        fields: fields.as_object().cloned().unwrap_or_default(),
    }
}

fn op(client: &str, n: u64, id: &str, outcome: Outcome) -> OpRecord {
    OpRecord {
        client: client.into(),
        n,
        workspace: "w0".into(),
        kind: EntityKind::Task,
        entity_id: id.into(),
        enqueued_ms: 0,
        first_sent_ms: Some(0),
        late_ms: 0,
        outcome,
        answered_ms: Some(1),
        base: None,
    }
}

fn applied(version: u64, seq: u64, fields: Value) -> Outcome {
    Outcome::Applied {
        epoch: 1,
        seq: Some(seq),
        version,
        fields: fields.as_object().cloned().unwrap_or_default(),
        delete: false,
    }
}

fn with_server(entities: Vec<Entity>) -> Recorder {
    let mut rec = Recorder::default();
    rec.server.insert(
        "w0".into(),
        ServerFinal {
            epoch: 1,
            entities,
            presence: Default::default(),
        },
    );
    rec
}

fn names(rec: &Recorder) -> Vec<&str> {
    rec.anomalies.iter().map(|a| a.invariant.as_str()).collect()
}

#[test]
fn an_acknowledged_write_missing_from_the_final_state_is_lost() {
    // Correct: t1 at v2 shows the write; t2 was overwritten by a later version.
    let mut rec = with_server(vec![
        entity("t1", 2, json!({"a": 1})),
        entity("t2", 5, json!({"a": 9})),
    ]);
    rec.ops.insert(
        "c:1".into(),
        op("c", 1, "t1", applied(2, 2, json!({"a": 1}))),
    );
    rec.ops.insert(
        "c:2".into(),
        op("c", 2, "t2", applied(3, 3, json!({"a": 2}))),
    );
    run_all(&mut rec);
    assert!(names(&rec).is_empty(), "{:?}", rec.anomalies);
    // Broken: same version, other value; a write the final state never saw; a regression.
    let mut rec = with_server(vec![
        entity("t1", 2, json!({"a": 7})),
        entity("t3", 1, json!({})),
    ]);
    rec.ops.insert(
        "c:1".into(),
        op("c", 1, "t1", applied(2, 2, json!({"a": 1}))),
    );
    rec.ops.insert(
        "c:2".into(),
        op("c", 2, "t2", applied(1, 3, json!({"a": 2}))),
    );
    rec.ops.insert(
        "c:3".into(),
        op("c", 3, "t3", applied(4, 4, json!({"b": 1}))),
    );
    run_all(&mut rec);
    assert_eq!(names(&rec), vec!["lost_acked_writes"; 3]);
    assert!(
        rec.anomalies
            .iter()
            .any(|a| a.explanation.contains("went back in time"))
    );
}

#[test]
fn a_write_deleted_later_or_lost_with_a_crashed_server_is_not_lost() {
    let mut rec = with_server(vec![]);
    rec.ops.insert(
        "c:1".into(),
        op("c", 1, "t1", applied(1, 1, json!({"a": 1}))),
    );
    rec.deletes_seen
        .insert((1, "w0".into(), EntityKind::Task, "t1".into()), 2);
    let mut old = op("c", 2, "t2", applied(1, 2, json!({"a": 1})));
    old.outcome = Outcome::Applied {
        epoch: 0,
        seq: Some(1),
        version: 1,
        fields: Map::new(),
        delete: false,
    };
    rec.ops.insert("c:2".into(), old);
    run_all(&mut rec);
    assert!(names(&rec).is_empty(), "{:?}", rec.anomalies);
}

#[test]
fn an_op_applied_at_two_seqs_is_a_duplicate() {
    let mut rec = with_server(vec![]);
    rec.applied(1, "c:1", 5);
    rec.applied(1, "c:1", 5); // seen twice at the same seq: one apply
    rec.applied(1, "c:2", 6);
    run_all(&mut rec);
    assert!(names(&rec).is_empty());
    rec.applied(1, "c:2", 9);
    run_all(&mut rec);
    assert_eq!(names(&rec), vec!["duplicate_applies"]);
}

#[test]
fn a_clients_writes_applied_out_of_order_violate_session_order() {
    let mut rec = with_server(vec![entity("t1", 3, json!({}))]);
    rec.ops
        .insert("c:1".into(), op("c", 1, "t1", applied(1, 10, json!({}))));
    rec.ops
        .insert("c:2".into(), op("c", 2, "t1", applied(2, 11, json!({}))));
    run_all(&mut rec);
    assert!(names(&rec).is_empty(), "{:?}", rec.anomalies);
    rec.ops
        .insert("c:3".into(), op("c", 3, "t1", applied(3, 7, json!({}))));
    run_all(&mut rec);
    assert!(names(&rec).contains(&"session_order_violations"));
}

fn tab(name: &str, user: &str, live: Vec<Entity>, presence: &[&str]) -> TabFinal {
    TabFinal {
        tab: name.into(),
        user: user.into(),
        workspace: "w0".into(),
        open: true,
        closed: false,
        settled: true,
        outbox_len: 0,
        live,
        presence: presence.iter().map(|s| s.to_string()).collect(),
        dropped_silently: 0,
        dashboard: None,
        progress: None,
        focus: None,
    }
}

#[test]
fn dashboards_and_progress_must_match_the_servers_tasks() {
    use rtsync_client::rollup::Rollup;
    let server = vec![
        entity("w0-t1", 2, json!({"status": "done", "projectId": "p0"})),
        entity("w0-t2", 1, json!({"status": "todo", "projectId": "p0"})),
    ];
    let right = Rollup::of(&server).counts().clone();
    let mut rec = with_server(server.clone());
    let mut a = tab("a", "u1", server.clone(), &["u1"]);
    a.dashboard = Some(rtsync_client::rollup::Counts {
        projects: Default::default(),
        ..right.clone()
    });
    a.progress = Some(right.projects.clone());
    rec.tabs.push(a.clone());
    run_all(&mut rec);
    assert!(names(&rec).is_empty(), "{:?}", rec.anomalies);

    // A dashboard that missed the completion of t1, and a stored 1/1 for p0.
    let stale = Rollup::of(&[entity(
        "w0-t1",
        1,
        json!({"status": "todo", "projectId": "p0"}),
    )]);
    let mut b = a.clone();
    b.tab = "b".into();
    b.dashboard = Some(stale.counts().clone());
    let mut project = entity("w0-p0", 3, json!({"progress": 1.0, "done": 1, "all": 1}));
    project.entity = EntityKind::Project;
    let mut rec = with_server(server.into_iter().chain([project]).collect());
    rec.tabs.extend([a, b]);
    run_all(&mut rec);
    let found = names(&rec);
    assert!(found.contains(&"dashboard_drift"), "{found:?}");
    assert!(
        rec.anomalies.iter().any(|x| x.invariant == "progress_drift"
            && x.explanation.contains("stores progress 1/1")
            && x.explanation.contains("1/2 done")),
        "{:?}",
        rec.anomalies
    );
}

#[test]
fn replicas_must_equal_the_server_and_queues_must_drain() {
    let server = vec![entity("t1", 2, json!({"a": 1}))];
    let mut rec = with_server(server.clone());
    rec.tabs.push(tab("a", "u1", server.clone(), &["u1", "u2"]));
    rec.tabs.push(tab("b", "u2", server.clone(), &["u1", "u2"]));
    run_all(&mut rec);
    assert!(names(&rec).is_empty(), "{:?}", rec.anomalies);
    let mut rec = with_server(server.clone());
    rec.tabs.push(tab(
        "a",
        "u1",
        vec![entity("t1", 1, json!({"a": 0}))],
        &["u1", "u2"],
    ));
    let mut stuck = tab("b", "u2", server, &["u1", "u2"]);
    stuck.outbox_len = 3;
    rec.tabs.push(stuck);
    run_all(&mut rec);
    assert_eq!(
        names(&rec),
        vec!["divergent_replicas", "unconverged_clients"]
    );
}

#[test]
fn presence_must_list_exactly_the_live_users() {
    let mut rec = with_server(vec![]);
    rec.tabs.push(tab("a", "u1", vec![], &["u1", "ghost"]));
    let mut gone = tab("g", "ghost", vec![], &[]);
    gone.closed = true;
    gone.open = false;
    rec.tabs.push(gone);
    run_all(&mut rec);
    assert_eq!(names(&rec), vec!["ghost_presences"]);
    assert!(rec.anomalies[0].explanation.contains("ghost"));
}

#[test]
fn silent_drops_are_named() {
    let mut rec = with_server(vec![]);
    let mut t = tab("a", "u1", vec![], &["u1"]);
    t.dropped_silently = 4;
    rec.tabs.push(t);
    run_all(&mut rec);
    assert_eq!(names(&rec), vec!["silent_queue_drops"]);
}

#[test]
fn replays_must_continue_right_after_the_resume_point_without_holes_or_repeats() {
    assert!(replay_batch("t", Some(4), 5, 7, &[5, 6, 7]).is_empty());
    assert!(
        replay_batch("t", None, 8, 9, &[8, 9]).is_empty(),
        "a later batch"
    );
    assert!(
        replay_batch("t", Some(4), 5, 4, &[]).is_empty(),
        "nothing missed"
    );
    let gap = replay_batch("t", Some(4), 6, 7, &[6, 7]);
    assert_eq!(
        gap.iter().map(|a| a.invariant.as_str()).collect::<Vec<_>>(),
        vec!["replay_gaps"]
    );
    let dup = replay_batch("t", Some(4), 4, 6, &[4, 5, 6]);
    assert_eq!(dup[0].invariant, "replay_duplicates");
    assert_eq!(
        replay_batch("t", None, 5, 7, &[5, 7])[0].invariant,
        "replay_gaps"
    );
    assert_eq!(
        replay_batch("t", None, 5, 6, &[5, 5, 6])[0].invariant,
        "replay_duplicates"
    );
}

#[test]
fn an_entity_of_another_workspace_is_a_leak() {
    assert!(!leaked("w1", "w1-t5"));
    assert!(leaked("w1", "w12-t5"));
    assert!(leaked("w1", "w2-t5"));
}

#[test]
fn a_note_edit_overwritten_by_a_writer_who_never_saw_it_is_lost() {
    let note = |client: &str, n: u64, version: u64, base: u64, fields: Value| {
        let mut o = op(client, n, "w0-n0", applied(version, version + 10, fields));
        o.kind = EntityKind::Note;
        o.base = Some(base);
        o
    };
    let mut rec = with_server(vec![]);
    let ops = [
        ("a:1", note("a", 1, 1, 0, json!({"body": "x"}))),
        // b saw version 1 only; a's version 2 body is overwritten at 3 unseen.
        ("a:2", note("a", 2, 2, 1, json!({"body": "y"}))),
        (
            "b:1",
            note("b", 1, 3, 1, json!({"body": "z", "title": "t"})),
        ),
        // c saw version 3: overwriting knowingly loses nothing.
        ("c:1", note("c", 1, 4, 3, json!({"body": "w"}))),
        // c's second write was based on 3 and overwrote c's own 4: not a loss.
        ("c:2", note("c", 2, 5, 3, json!({"body": "v"}))),
    ];
    for (id, o) in ops {
        rec.ops.insert(id.into(), o);
    }
    let mut found = Vec::new();
    super::notes::check(&rec, &mut found);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].explanation.contains("edit by a at version 2")
            && found[0].explanation.contains("at version 3 by b"),
        "{found:?}"
    );
}
