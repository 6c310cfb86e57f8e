//! 5 — Fan-out and workspace isolation (docs/protocol.md, "Transports", "Auth").

use super::case;
use crate::conformance::probe::{QUIET_WAIT, expect};
use crate::conformance::{Case, Ctx, Outcome, mutation, not_implemented};
use serde_json::{Value, json};

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "5.1",
            true,
            "Another user of the workspace gets the event with the whole entity",
            others_get_entity
        ),
        case!(
            "5.2",
            false,
            "The sender's tab does not get its own event; the same user's other tab does",
            own_tab_skipped
        ),
        case!(
            "5.3",
            false,
            "A user of another workspace gets nothing",
            isolated
        ),
    ]
}

/// Logged events (with a seq) among `frames`.
fn logged(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|e| e["seq"].is_u64()).collect()
}

async fn others_get_entity(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    let changes = json!({"title": "write the spec", "status": "todo", "priority": 3});
    ws.send(&mutation("TASK_CREATED", "a:1", "t1", 0, changes))
        .await;
    let e = bob.event_for("t1").await?;
    let p = &e["payload"];
    let entity = &p["payload"];
    expect(
        p["type"] == "TASK_CREATED"
            && entity["title"] == "write the spec"
            && entity["status"] == "todo"
            && entity["priority"] == 3
            && entity["version"] == 1,
        "TASK_CREATED whose payload is the whole entity: title, status, priority, version 1",
        p.to_string(),
    )?;
    ws.close().await;
    bob.close().await;
    Ok(())
}

async fn own_tab_skipped(cx: &mut Ctx) -> Outcome {
    let (mut tab1, _) = cx.join("alice", "tab1").await?;
    let (mut tab2, _) = cx.join("alice", "tab2").await?;
    tab1.send(&mutation(
        "TASK_CREATED",
        "tab1:1",
        "t1",
        0,
        json!({"title": "x"}),
    ))
    .await;
    tab1.answer("tab1:1").await?;
    tab2.event_for("t1").await?;
    let own = tab1.collect("REALTIME_EVENT", QUIET_WAIT).await;
    expect(
        logged(&own).is_empty(),
        "no event of its own write on the sending tab (its seq came in the ACK)",
        format!("{:?}", logged(&own)),
    )?;
    tab1.close().await;
    tab2.close().await;
    Ok(())
}

async fn isolated(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let other = cx.other_ws();
    let query = format!(
        "token={}&sessionId=e",
        cx.token_in("eve", &other, crate::conformance::now_s() + 3600)
    );
    let mut eve = match cx.upgrade(&query, "ws eve (other workspace)").await {
        Ok(ws) => ws,
        Err(e) => return Err(not_implemented(format!("a second workspace: {e}"))),
    };
    eve.frame("CONNECTED").await?;
    ws.send(&mutation(
        "TASK_CREATED",
        "a:1",
        "t1",
        0,
        json!({"title": "secret"}),
    ))
    .await;
    ws.answer("a:1").await?;
    let seen = eve.collect("REALTIME_EVENT", QUIET_WAIT).await;
    expect(
        logged(&seen).is_empty(),
        "nothing from another workspace",
        format!("{:?}", logged(&seen)),
    )?;
    ws.close().await;
    eve.close().await;
    Ok(())
}
