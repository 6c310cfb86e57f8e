//! 9 — Heartbeats (docs/protocol.md, "Presence and cursors": heartbeats).

use super::case;
use crate::conformance::probe::{REPLY_WAIT, error_code, expect, fail, kind};
use crate::conformance::{Case, Ctx, Outcome, Verdict, not_implemented};
use serde_json::json;
use std::time::Duration;

/// The longest `heartbeatMs` 9.2 waits out: two intervals and a second of slack must fit
/// the case's bound (`CASE_BOUND`, 20 s) with the connect.
const HEARTBEAT_MS_MAX: u64 = 8000;

pub fn cases() -> Vec<Case> {
    vec![
        case!("9.1", true, "HEARTBEAT is answered HEARTBEAT_ACK", answered),
        case!(
            "9.2",
            false,
            "The server sends HEARTBEAT every heartbeatMs",
            server_beats
        ),
    ]
}

/// Milliseconds since the Unix epoch: the seed's heartbeat sends `Date.now()`.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn answered(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.send(&json!({"type": "HEARTBEAT", "payload": {"timestamp": now_ms()}}))
        .await;
    let answer = ws
        .until("HEARTBEAT_ACK", REPLY_WAIT, |v| {
            matches!(kind(v), "HEARTBEAT_ACK" | "ERROR").then(|| v.clone())
        })
        .await?;
    if error_code(&answer) == Some("UNKNOWN_TYPE") {
        return Err(not_implemented("HEARTBEAT answered ERROR UNKNOWN_TYPE"));
    }
    expect(
        kind(&answer) == "HEARTBEAT_ACK",
        "HEARTBEAT_ACK",
        answer.to_string(),
    )?;
    ws.close().await;
    Ok(())
}

async fn server_beats(cx: &mut Ctx) -> Outcome {
    let (mut ws, connected) = cx.join("alice", "a").await?;
    let Some(h) = connected["heartbeatMs"].as_u64() else {
        return Err(fail(
            "CONNECTED.heartbeatMs, a number",
            connected.to_string(),
        ));
    };
    if h > HEARTBEAT_MS_MAX {
        ws.close().await;
        return Err(Verdict::Skipped {
            why: format!(
                "heartbeatMs {h} is longer than this case may wait (8 s): start the server with a shorter heartbeat to run it"
            ),
        });
    }
    // Two intervals: the first may have started just before the connect.
    let wait = Duration::from_millis(h * 2 + 1000);
    let what = format!("HEARTBEAT within {} ms (heartbeatMs {h})", wait.as_millis());
    ws.until(&what, wait, |v| (kind(v) == "HEARTBEAT").then_some(()))
        .await?;
    ws.send(&json!({"type": "HEARTBEAT_ACK", "payload": {"timestamp": now_ms()}}))
        .await;
    ws.close().await;
    Ok(())
}
