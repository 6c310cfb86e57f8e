//! 3 — Mutations, ACK and idempotency (docs/protocol.md, "Mutations: idempotent,
//! ordered, versioned").

use super::case;
use crate::conformance::probe::{QUIET_WAIT, error_code, expect, kind};
use crate::conformance::{Case, Ctx, Outcome, mutation};
use serde_json::{Value, json};

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "3.1",
            true,
            "A create is answered ACK with its opId, entityId, version 1, seq and epoch",
            create_acked
        ),
        case!(
            "3.2",
            false,
            "The same opId sent again gets the same ACK and changes nothing (no second event)",
            repeat_is_idempotent
        ),
        case!(
            "3.3",
            false,
            "A gap in a client's op numbers: ERROR OUT_OF_ORDER with expectedN",
            gap_out_of_order
        ),
        case!(
            "3.4",
            false,
            "An update of an id that never existed: ERROR NOT_FOUND",
            update_unknown
        ),
        case!(
            "3.5",
            false,
            "A reserved field in changes: ERROR INVALID_PAYLOAD, and the op's number is consumed",
            reserved_field
        ),
        case!(
            "3.6",
            false,
            "A base version ahead of the entity: ERROR INVALID_PAYLOAD",
            base_ahead
        ),
        case!(
            "3.7",
            false,
            "A delete is acknowledged and leaves a tombstone (deleted: true) in its event",
            delete_tombstone
        ),
    ]
}

/// The answer must be an `ERROR` with `code`.
fn is_error(answer: &Value, code: &str) -> Outcome {
    expect(
        error_code(answer) == Some(code),
        format!("ERROR {code}"),
        answer.to_string(),
    )
}

async fn create_acked(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let ack = ws.create_task("a", 1).await?;
    let p = &ack["payload"];
    expect(kind(&ack) == "ACK", "ACK", ack.to_string())?;
    expect(
        p["entityId"] == "t1" && p["version"] == 1 && p["seq"].is_u64() && p["epoch"].is_u64(),
        "ACK {opId: a:1, entityId: t1, version: 1, seq, epoch}",
        p.to_string(),
    )?;
    ws.close().await;
    Ok(())
}

async fn repeat_is_idempotent(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    let first = ws.create_task("a", 1).await?;
    bob.event_for("t1").await?;
    ws.send(&mutation(
        "TASK_CREATED",
        "a:1",
        "t1",
        0,
        json!({"title": "task t1"}),
    ))
    .await;
    let again = ws.answer("a:1").await?;
    expect(
        again["payload"] == first["payload"],
        format!("the same ACK again: {}", first["payload"]),
        again["payload"].to_string(),
    )?;
    let more = bob.collect("REALTIME_EVENT", QUIET_WAIT).await;
    let logged: Vec<&Value> = more.iter().filter(|e| e["seq"].is_u64()).collect();
    expect(
        logged.is_empty(),
        "no second event for a repeated op",
        format!("{} more: {:?}", logged.len(), logged),
    )?;
    ws.close().await;
    bob.close().await;
    Ok(())
}

async fn gap_out_of_order(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.create_task("a", 1).await?;
    let answer = ws.create_task("a", 3).await?;
    is_error(&answer, "OUT_OF_ORDER")?;
    expect(
        answer["payload"]["expectedN"] == 2,
        "expectedN: 2",
        answer["payload"].to_string(),
    )?;
    ws.close().await;
    Ok(())
}

async fn update_unknown(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.send(&mutation(
        "TASK_UPDATED",
        "a:1",
        "nobody",
        1,
        json!({"title": "x"}),
    ))
    .await;
    let answer = ws.answer("a:1").await?;
    is_error(&answer, "NOT_FOUND")?;
    ws.close().await;
    Ok(())
}

async fn reserved_field(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.send(&mutation(
        "TASK_CREATED",
        "a:1",
        "t1",
        0,
        json!({"version": 7}),
    ))
    .await;
    is_error(&ws.answer("a:1").await?, "INVALID_PAYLOAD")?;
    // n = 1 was consumed: n = 2 is the next in order.
    let next = ws.create_task("a", 2).await?;
    expect(
        kind(&next) == "ACK",
        "ACK to a:2 (the invalid a:1 consumed its number)",
        next.to_string(),
    )?;
    ws.close().await;
    Ok(())
}

async fn base_ahead(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.create_task("a", 1).await?;
    ws.send(&mutation(
        "TASK_UPDATED",
        "a:2",
        "t1",
        5,
        json!({"title": "y"}),
    ))
    .await;
    is_error(&ws.answer("a:2").await?, "INVALID_PAYLOAD")?;
    ws.close().await;
    Ok(())
}

async fn delete_tombstone(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    ws.create_task("a", 1).await?;
    bob.event_for("t1").await?;
    ws.send(&mutation("TASK_DELETED", "a:2", "t1", 1, json!({})))
        .await;
    let ack = ws.answer("a:2").await?;
    expect(kind(&ack) == "ACK", "ACK to the delete", ack.to_string())?;
    let event = bob.event_for("t1").await?;
    let p = &event["payload"];
    expect(
        p["type"] == "TASK_DELETED" && p["payload"]["deleted"] == true,
        "TASK_DELETED with payload.deleted = true",
        p.to_string(),
    )?;
    ws.close().await;
    bob.close().await;
    Ok(())
}
