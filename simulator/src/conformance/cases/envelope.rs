//! 2 — Envelope and errors (docs/protocol.md, "Envelope").

use super::case;
use crate::conformance::probe::{Got, REPLY_WAIT, error_code, expect, fail, kind};
use crate::conformance::{Case, Ctx, Outcome, mutation};
use serde_json::json;

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "2.1",
            false,
            "Text that is not JSON: ERROR BAD_JSON, and the connection stays usable",
            bad_json
        ),
        case!(
            "2.2",
            false,
            "An unknown frame type: ERROR UNKNOWN_TYPE",
            unknown_type
        ),
        case!("2.3", false, "A binary frame: close 1003", binary_frame),
        case!(
            "2.4",
            false,
            "A server-only event type from a client (SYSTEM_NOTIFICATION): ERROR FORBIDDEN",
            server_only_type
        ),
        case!(
            "2.5",
            false,
            "A mutation without an opId: ERROR INVALID_PAYLOAD",
            no_op_id
        ),
    ]
}

/// The next `ERROR` frame's code (other frames skipped).
async fn next_error(
    ws: &mut crate::conformance::probe::Ws,
    after: &str,
) -> Result<String, crate::conformance::Verdict> {
    let what = format!("an ERROR answering {after}");
    ws.until(&what, REPLY_WAIT, |v| error_code(v).map(str::to_owned))
        .await
}

async fn bad_json(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.send_text("{\"type\": \"REALTIME_EVENT\", oops").await;
    let code = next_error(&mut ws, "text that is not JSON").await?;
    expect(
        code == "BAD_JSON",
        "ERROR BAD_JSON",
        format!("ERROR {code}"),
    )?;
    // Still usable: a write right after is answered.
    ws.send(&mutation(
        "TASK_CREATED",
        "a:1",
        "t1",
        0,
        json!({"title": "after"}),
    ))
    .await;
    let answer = ws.answer("a:1").await?;
    expect(
        kind(&answer) == "ACK",
        "an ACK to a write sent after the bad frame",
        answer.to_string(),
    )?;
    ws.close().await;
    Ok(())
}

async fn unknown_type(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.send(&json!({"type": "NO_SUCH_TYPE", "payload": {}}))
        .await;
    let code = next_error(&mut ws, "type NO_SUCH_TYPE").await?;
    expect(
        code == "UNKNOWN_TYPE",
        "ERROR UNKNOWN_TYPE",
        format!("ERROR {code}"),
    )?;
    ws.close().await;
    Ok(())
}

async fn binary_frame(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    ws.send_binary(vec![0x81, 0x00, 0xff]).await;
    let code = ws.closed_within(REPLY_WAIT).await?;
    expect(code == Some(1003), "close 1003", format!("close {code:?}"))
}

async fn server_only_type(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let frame = json!({"type": "REALTIME_EVENT", "payload": {"type": "SYSTEM_NOTIFICATION", "payload": {}}});
    ws.send(&frame).await;
    let code = next_error(&mut ws, "a SYSTEM_NOTIFICATION from a client").await?;
    expect(
        code == "FORBIDDEN",
        "ERROR FORBIDDEN",
        format!("ERROR {code}"),
    )?;
    ws.close().await;
    Ok(())
}

async fn no_op_id(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let mut m = mutation("TASK_CREATED", "", "t1", 0, json!({"title": "x"}));
    m["payload"]["payload"]
        .as_object_mut()
        .map(|p| p.remove("opId"));
    ws.send(&m).await;
    match ws.read(REPLY_WAIT).await {
        Got::Frame(v) if error_code(&v) == Some("INVALID_PAYLOAD") => {}
        Got::Frame(v) if kind(&v) != "ERROR" => {
            // Presence frames may come first; look further for the answer.
            let code = next_error(&mut ws, "a mutation without an opId").await?;
            expect(
                code == "INVALID_PAYLOAD",
                "ERROR INVALID_PAYLOAD",
                format!("ERROR {code}"),
            )?;
        }
        other => return Err(fail("ERROR INVALID_PAYLOAD", format!("{other:?}"))),
    }
    ws.close().await;
    Ok(())
}
