//! 8 — Presence and cursors (docs/protocol.md, "Presence and cursors").

use super::case;
use crate::conformance::probe::{QUIET_WAIT, REPLY_WAIT, Ws, error_code, expect, fail, kind};
use crate::conformance::{Case, Ctx, Outcome, Verdict, not_implemented};
use serde_json::{Value, json};
use std::time::Duration;

/// How long 8.5 waits for a leave: the grace period (5 s by default, 1 s on the server
/// conformance spawns) and a few ticks, with room for a slower server.
const LEAVE_WAIT: Duration = Duration::from_secs(12);

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "8.1",
            false,
            "PRESENCE_UPDATE right after CONNECTED lists the user itself",
            listed_after_connected
        ),
        case!(
            "8.2",
            false,
            "A second user's join reaches the first as PRESENCE_DIFF joins",
            join_reaches_others
        ),
        case!(
            "8.3",
            false,
            "A presence change (USER_PRESENCE_CHANGED) reaches the others as an event without seq",
            presence_change_relayed
        ),
        case!(
            "8.4",
            false,
            "A cursor move reaches the others as COLLABORATION_CURSOR, without seq",
            cursor_relayed
        ),
        case!(
            "8.5",
            false,
            "A user whose last tab closed leaves (PRESENCE_DIFF leaves) after the grace period",
            leave_after_grace
        ),
    ]
}

/// The userIds of a `UserPresence[]`.
fn users(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|p| p["userId"].as_str()).collect())
        .unwrap_or_default()
}

/// The payload of the first `PRESENCE_DIFF` on `ws` whose `side` (`joins`, `leaves`)
/// lists `user`, within `wait`.
async fn diff_with(ws: &mut Ws, side: &str, user: &str, wait: Duration) -> Result<Value, Verdict> {
    let what = format!("PRESENCE_DIFF with {user} in {side} on {}", ws.name);
    ws.until(&what, wait, |v| {
        (kind(v) == "PRESENCE_DIFF" && users(&v["payload"][side]).contains(&user))
            .then(|| v["payload"].clone())
    })
    .await
}

/// The first ephemeral `REALTIME_EVENT` of type `t` on `to`, relayed from what `from`
/// sent (`sent`). When none comes, `from`'s answer explains why: `UNKNOWN_TYPE` is NOT
/// IMPLEMENTED, any other error is named in the failure.
async fn relayed(to: &mut Ws, from: &mut Ws, t: &str, sent: &str) -> Result<Value, Verdict> {
    let what = format!("a REALTIME_EVENT {t} on {}", to.name);
    let missed = match to
        .until(&what, REPLY_WAIT, |v| {
            (kind(v) == "REALTIME_EVENT" && v["payload"]["type"] == t).then(|| v.clone())
        })
        .await
    {
        Ok(v) => return Ok(v),
        Err(m) => m,
    };
    let errors = from.collect("ERROR", QUIET_WAIT).await;
    Err(match (errors.first(), missed) {
        (Some(e), _) if error_code(e) == Some("UNKNOWN_TYPE") => {
            not_implemented(format!("{sent} answered ERROR UNKNOWN_TYPE"))
        }
        (Some(e), Verdict::Fail { expected, got }) => {
            fail(expected, format!("{got}; {sent} was answered {e}"))
        }
        (_, missed) => missed,
    })
}

async fn listed_after_connected(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let next = ws
        .until("a frame after CONNECTED", REPLY_WAIT, |v| Some(v.clone()))
        .await?;
    expect(
        kind(&next) == "PRESENCE_UPDATE",
        "PRESENCE_UPDATE right after CONNECTED",
        next.to_string(),
    )?;
    expect(
        users(&next["payload"]).contains(&"alice"),
        "PRESENCE_UPDATE's list (UserPresence[]) with userId alice, the new session's own user",
        next["payload"].to_string(),
    )?;
    ws.close().await;
    Ok(())
}

async fn join_reaches_others(cx: &mut Ctx) -> Outcome {
    let (mut alice, _) = cx.join("alice", "a").await?;
    let (bob, _) = cx.join("bob", "b").await?;
    diff_with(&mut alice, "joins", "bob", REPLY_WAIT).await?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn presence_change_relayed(cx: &mut Ctx) -> Outcome {
    let (mut alice, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    let change = json!({"status": "away", "currentPage": "/board"});
    bob.send(&json!({
        "type": "REALTIME_EVENT",
        "payload": {"type": "USER_PRESENCE_CHANGED", "version": 0, "payload": change}
    }))
    .await;
    let e = relayed(
        &mut alice,
        &mut bob,
        "USER_PRESENCE_CHANGED",
        "USER_PRESENCE_CHANGED",
    )
    .await?;
    expect(
        e["seq"].is_null(),
        "no seq (presence is ephemeral, never logged)",
        e.to_string(),
    )?;
    let p = &e["payload"];
    expect(
        p["userId"] == "bob"
            && p["payload"]["status"] == "away"
            && p["payload"]["currentPage"] == "/board",
        "the event from userId bob, its payload with status away and currentPage /board",
        p.to_string(),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn cursor_relayed(cx: &mut Ctx) -> Outcome {
    let (mut alice, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    bob.send(&json!({"type": "USER_ACTION", "payload": {"type": "CURSOR_MOVE", "x": 10, "y": 20}}))
        .await;
    let e = relayed(
        &mut alice,
        &mut bob,
        "COLLABORATION_CURSOR",
        "USER_ACTION CURSOR_MOVE",
    )
    .await?;
    expect(
        e["seq"].is_null(),
        "no seq (cursors are ephemeral, never logged)",
        e.to_string(),
    )?;
    // Compared as numbers: a server may send 10 as 10.0.
    let c = &e["payload"]["payload"];
    expect(
        c["userId"] == "bob" && c["x"].as_f64() == Some(10.0) && c["y"].as_f64() == Some(20.0),
        "a CollaborationCursor {userId: bob, x: 10, y: 20, …}",
        e["payload"].to_string(),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn leave_after_grace(cx: &mut Ctx) -> Outcome {
    let (mut alice, _) = cx.join("alice", "a").await?;
    let (bob, _) = cx.join("bob", "b").await?;
    // Seen online first: a join and a leave inside one batch cancel out.
    diff_with(&mut alice, "joins", "bob", REPLY_WAIT).await?;
    bob.close().await;
    let d = diff_with(&mut alice, "leaves", "bob", LEAVE_WAIT).await?;
    let leave = d["leaves"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["userId"] == "bob"));
    expect(
        leave.is_some_and(|p| p["status"] == "offline"),
        "bob's leave with status offline",
        d.to_string(),
    )?;
    alice.close().await;
    Ok(())
}
