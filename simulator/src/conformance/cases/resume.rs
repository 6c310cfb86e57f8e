//! 7 — Resume (docs/protocol.md, "Replay and continuity").

use super::case;
use crate::conformance::probe::{
    QUIET_WAIT, REPLY_WAIT, Refused, Ws, error_code, expect, fail, kind,
};
use crate::conformance::{Case, Ctx, Outcome, Verdict, not_implemented};
use serde_json::{Value, json};

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "7.1",
            false,
            "Resume (epoch, lastSeq) in the query: RECENT_EVENTS complete, with exactly the missed events",
            missed_events
        ),
        case!(
            "7.2",
            false,
            "Resume at the head: one empty, complete batch",
            at_head
        ),
        case!(
            "7.3",
            true,
            "Resume from another epoch: complete false, no events, toSeq = the head",
            other_epoch
        ),
        case!(
            "7.4",
            false,
            "Garbage resume positions are answered complete false, not refused",
            garbage_positions
        ),
        case!(
            "7.5",
            false,
            "A RESUME frame on an open connection is answered RECENT_EVENTS",
            resume_frame
        ),
    ]
}

/// A `CONNECTED` payload's `(epoch, seq)`.
fn position(connected: &Value) -> Result<(u64, u64), Verdict> {
    match (connected["epoch"].as_u64(), connected["seq"].as_u64()) {
        (Some(e), Some(s)) => Ok((e, s)),
        _ => Err(fail(
            "CONNECTED with epoch and seq, numbers",
            connected.to_string(),
        )),
    }
}

/// Creates t1..=tn as client `a` (ops a:1..=a:n); the seqs their ACKs name.
async fn write(ws: &mut Ws, n: usize) -> Result<Vec<u64>, Verdict> {
    let mut seqs = Vec::new();
    for i in 1..=n as u64 {
        seqs.push(ws.create_acked("a", i).await?.1);
    }
    Ok(seqs)
}

/// The payload of the next `RECENT_EVENTS` on `ws`.
async fn recent(ws: &mut Ws) -> Result<Value, Verdict> {
    Ok(ws.frame("RECENT_EVENTS").await?["payload"].clone())
}

/// `p` must say continuity is lost: complete false, no events, toSeq the head.
fn incomplete(p: &Value, head: u64, why: &str) -> Outcome {
    expect(
        p["complete"] == false
            && p["events"].as_array().is_some_and(Vec::is_empty)
            && p["toSeq"] == head,
        format!("RECENT_EVENTS {{complete: false, events: [], toSeq: {head}}} ({why})"),
        p.to_string(),
    )
}

/// `seq id` of each replayed envelope, to compare with what was written.
fn seq_ids(events: &[Value]) -> Vec<String> {
    let id = |e: &Value| {
        e["payload"]["payload"]["id"]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    };
    events
        .iter()
        .map(|e| format!("{} {}", e["seq"], id(e)))
        .collect()
}

async fn missed_events(cx: &mut Ctx) -> Outcome {
    let (mut alice, _) = cx.join("alice", "a").await?;
    let (bob, connected) = cx.join("bob", "b").await?;
    let (epoch, last_seq) = position(&connected)?;
    bob.close().await;
    let seqs = write(&mut alice, 3).await?;
    let extra = format!("&epoch={epoch}&lastSeq={last_seq}");
    let (mut back, _) = cx.join_with("bob", "b", &extra).await?;
    let head = seqs[2];
    let mut events = Vec::new();
    // A server may split even a short replay; each batch holds at least one event.
    for _ in 0..seqs.len() {
        let p = recent(&mut back).await?;
        expect(
            p["complete"] == true,
            "RECENT_EVENTS complete: true (same epoch, nothing trimmed)",
            p.to_string(),
        )?;
        let batch = p["events"].as_array().cloned().unwrap_or_default();
        let last = batch.is_empty() || p["toSeq"].as_u64().is_none_or(|t| t >= head);
        events.extend(batch);
        if last {
            break;
        }
    }
    let want: Vec<String> = seqs
        .iter()
        .zip(["t1", "t2", "t3"])
        .map(|(s, id)| format!("{s} {id}"))
        .collect();
    let got = seq_ids(&events);
    expect(
        got == want,
        format!("events {want:?} (seq id): exactly the three missed, in seq order"),
        format!("{got:?}"),
    )?;
    alice.close().await;
    back.close().await;
    Ok(())
}

async fn at_head(cx: &mut Ctx) -> Outcome {
    let (mut alice, connected) = cx.join("alice", "a").await?;
    let (epoch, _) = position(&connected)?;
    let head = write(&mut alice, 1).await?[0];
    let extra = format!("&epoch={epoch}&lastSeq={head}");
    let (mut bob, _) = cx.join_with("bob", "b", &extra).await?;
    let p = recent(&mut bob).await?;
    expect(
        p["complete"] == true && p["events"].as_array().is_some_and(Vec::is_empty),
        format!("RECENT_EVENTS {{complete: true, events: []}} (lastSeq {head} is the head)"),
        p.to_string(),
    )?;
    let more = bob.collect("RECENT_EVENTS", QUIET_WAIT).await;
    expect(
        more.is_empty(),
        "one batch, no more",
        format!("{} more: {more:?}", more.len()),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn other_epoch(cx: &mut Ctx) -> Outcome {
    let (mut alice, connected) = cx.join("alice", "a").await?;
    let (epoch, _) = position(&connected)?;
    // A write first, so that the head is not 0 and toSeq says something.
    let head = write(&mut alice, 1).await?[0];
    // Another epoch is another log (a restarted server): its seqs mean nothing here.
    let other = epoch.wrapping_add(1);
    let extra = format!("&epoch={other}&lastSeq={head}");
    let (mut bob, _) = cx.join_with("bob", "b", &extra).await?;
    incomplete(
        &recent(&mut bob).await?,
        head,
        &format!("epoch {other}, not {epoch}"),
    )?;
    alice.close().await;
    bob.close().await;
    Ok(())
}

async fn garbage_positions(cx: &mut Ctx) -> Outcome {
    // Not numbers or negative; past 64 bits; half missing.
    let points = [
        "epoch=abc&lastSeq=-1",
        "epoch=1&lastSeq=18446744073709551616",
        "lastSeq=1",
    ];
    for (n, point) in points.into_iter().enumerate() {
        let query = format!("token={}&sessionId=b{n}&{point}", cx.token("bob"));
        let mut ws = match cx.upgrade(&query, &format!("ws bob/b{n}")).await {
            Ok(ws) => ws,
            Err(Refused::Status(404)) => return Err(not_implemented("GET /ws answered 404")),
            Err(e) => {
                // A 400 would strand a client whose stored position was damaged.
                return Err(fail(
                    format!("the upgrade with {point} accepted (resume points are never refused)"),
                    e.to_string(),
                ));
            }
        };
        let (_, head) = position(&ws.frame("CONNECTED").await?["payload"])?;
        incomplete(&recent(&mut ws).await?, head, point)?;
        ws.close().await;
    }
    Ok(())
}

async fn resume_frame(cx: &mut Ctx) -> Outcome {
    let (mut alice, connected) = cx.join("alice", "a").await?;
    let (epoch, _) = position(&connected)?;
    let seqs = write(&mut alice, 2).await?;
    let resume = json!({"type": "RESUME", "payload": {"epoch": epoch, "lastSeq": seqs[0]}});
    alice.send(&resume).await;
    let answer = alice
        .until("RECENT_EVENTS answering RESUME", REPLY_WAIT, |v| {
            matches!(kind(v), "RECENT_EVENTS" | "ERROR").then(|| v.clone())
        })
        .await?;
    if error_code(&answer) == Some("UNKNOWN_TYPE") {
        return Err(not_implemented("RESUME answered ERROR UNKNOWN_TYPE"));
    }
    expect(
        kind(&answer) == "RECENT_EVENTS",
        "RECENT_EVENTS",
        answer.to_string(),
    )?;
    let p = &answer["payload"];
    let events = p["events"].as_array().cloned().unwrap_or_default();
    let want = vec![format!("{} t2", seqs[1])];
    expect(
        p["complete"] == true && seq_ids(&events) == want,
        format!(
            "RECENT_EVENTS {{complete: true}} with the one event after lastSeq {}: {want:?} (seq id)",
            seqs[0]
        ),
        p.to_string(),
    )?;
    alice.close().await;
    Ok(())
}
