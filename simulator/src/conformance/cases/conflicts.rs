//! 6 — Conflicts (docs/protocol.md, "Mutations: idempotent, ordered, versioned").

use super::case;
use crate::conformance::probe::{QUIET_WAIT, Ws, expect, kind};
use crate::conformance::{Case, Ctx, Outcome, Verdict, mutation};
use serde_json::{Value, json};

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "6.1",
            false,
            "LAST_WRITE_WINS: a stale write is applied and its ACK names the fields it overwrote",
            last_write_wins
        ),
        case!(
            "6.2",
            false,
            "MERGE: a stale write to a field someone else changed is CONFLICT_DETECTED, listing that field",
            merge_overlap
        ),
        case!(
            "6.3",
            false,
            "MERGE: a stale write to other fields is merged: ACK with resolution MERGE",
            merge_disjoint
        ),
        case!(
            "6.4",
            false,
            "MANUAL: a stale write is not applied: CONFLICT_DETECTED with the current entity",
            manual
        ),
    ]
}

/// alice creates t1 {title: "x", status: "todo"} (v1), then bob sets `field` to "theirs"
/// (v2): alice's next write on base 1 is stale. bob has read the create, so the next t1
/// event he gets is alice's.
async fn stale(cx: &Ctx, field: &str) -> Result<(Ws, Ws), Verdict> {
    let (mut alice, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    let created = json!({"title": "x", "status": "todo"});
    alice
        .send(&mutation("TASK_CREATED", "a:1", "t1", 0, created))
        .await;
    let ack = alice.answer("a:1").await?;
    expect(
        kind(&ack) == "ACK",
        "ACK to the create a:1",
        ack.to_string(),
    )?;
    bob.event_for("t1").await?;
    let mut changes = json!({});
    changes[field] = json!("theirs");
    bob.send(&mutation("TASK_UPDATED", "b:1", "t1", 1, changes))
        .await;
    let ack = bob.answer("b:1").await?;
    expect(
        kind(&ack) == "ACK" && ack["payload"]["version"] == 2,
        format!("ACK with version 2 to bob's update of {field} on base 1"),
        ack.to_string(),
    )?;
    Ok((alice, bob))
}

/// alice's write of `changes` on base 1 (t1 is at v2) under `strategy`, and its answer.
/// The strategy is asked for explicitly: defaults are the server's configuration.
async fn stale_write(alice: &mut Ws, strategy: &str, changes: Value) -> Result<Value, Verdict> {
    let mut m = mutation("TASK_UPDATED", "a:2", "t1", 1, changes);
    m["payload"]["payload"]["strategy"] = json!(strategy);
    alice.send(&m).await;
    alice.answer("a:2").await
}

/// The item of a `CONFLICT_DETECTED` payload's `conflicts` about `field`.
fn conflict_on<'a>(p: &'a Value, field: &str) -> Option<&'a Value> {
    p["conflicts"]
        .as_array()?
        .iter()
        .find(|c| c["field"] == field)
}

async fn last_write_wins(cx: &mut Ctx) -> Outcome {
    let (mut alice, mut bob) = stale(cx, "title").await?;
    let ack = stale_write(&mut alice, "LAST_WRITE_WINS", json!({"title": "mine"})).await?;
    expect(
        kind(&ack) == "ACK",
        "ACK (LAST_WRITE_WINS applies a stale write)",
        ack.to_string(),
    )?;
    let p = &ack["payload"];
    let overwritten = p["overwritten"].as_array();
    expect(
        !p["resolution"].is_null() && overwritten.is_some_and(|o| o.contains(&json!("title"))),
        "ACK with resolution and overwritten [\"title\"] (bob changed title after base 1)",
        p.to_string(),
    )?;
    let event = bob.event_for("t1").await?;
    expect(
        event["payload"]["payload"]["title"] == "mine",
        "bob gets t1 with title \"mine\" (the stale write applied on top)",
        event["payload"].to_string(),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn merge_overlap(cx: &mut Ctx) -> Outcome {
    let (mut alice, bob) = stale(cx, "status").await?;
    let answer = stale_write(&mut alice, "MERGE", json!({"status": "mine"})).await?;
    expect(
        kind(&answer) == "CONFLICT_DETECTED",
        "CONFLICT_DETECTED (bob changed status after base 1)",
        answer.to_string(),
    )?;
    let p = &answer["payload"];
    expect(
        conflict_on(p, "status")
            .is_some_and(|c| c["localValue"] == "mine" && c["remoteValue"] == "theirs"),
        "conflicts: [{field: status, localValue: mine, remoteValue: theirs, …}]",
        p.to_string(),
    )?;
    // Every field overlapped: nothing applied, and `current` shows bob's value.
    expect(
        p["current"]["status"] == "theirs",
        "current: t1 as the server holds it (status theirs)",
        p.to_string(),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn merge_disjoint(cx: &mut Ctx) -> Outcome {
    let (mut alice, mut bob) = stale(cx, "status").await?;
    let ack = stale_write(&mut alice, "MERGE", json!({"title": "mine"})).await?;
    expect(
        kind(&ack) == "ACK" && ack["payload"]["resolution"] == "MERGE",
        "ACK with resolution MERGE (nobody changed title after base 1)",
        ack.to_string(),
    )?;
    let event = bob.event_for("t1").await?;
    let entity = &event["payload"]["payload"];
    expect(
        entity["title"] == "mine" && entity["status"] == "theirs",
        "bob gets t1 with both writes: title mine (alice's), status theirs (bob's)",
        event["payload"].to_string(),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn manual(cx: &mut Ctx) -> Outcome {
    let (mut alice, mut bob) = stale(cx, "title").await?;
    let answer = stale_write(&mut alice, "MANUAL", json!({"title": "mine"})).await?;
    expect(
        kind(&answer) == "CONFLICT_DETECTED",
        "CONFLICT_DETECTED (MANUAL never applies a stale write)",
        answer.to_string(),
    )?;
    let p = &answer["payload"];
    expect(
        conflict_on(p, "title").is_some(),
        "conflicts listing {field: title}",
        p.to_string(),
    )?;
    expect(
        p["current"]["title"] == "theirs" && p["current"]["version"] == 2,
        "current: t1 unchanged, version 2 with bob's title \"theirs\"",
        p.to_string(),
    )?;
    let seen: Vec<Value> = bob
        .collect("REALTIME_EVENT", QUIET_WAIT)
        .await
        .into_iter()
        .filter(|e| e["payload"]["payload"]["id"] == "t1")
        .collect();
    expect(
        seen.is_empty(),
        "no event for t1 on bob (nothing was applied)",
        format!("{seen:?}"),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}
