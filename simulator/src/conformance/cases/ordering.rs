//! 4 — Ordering and seq (docs/protocol.md, "Envelope", "Replay and continuity").

use super::case;
use crate::conformance::probe::expect;
use crate::conformance::{Case, Ctx, Outcome, mutation};
use serde_json::json;

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "4.1",
            true,
            "Events of consecutive writes carry consecutive seqs, in order",
            consecutive_seqs
        ),
        case!(
            "4.2",
            false,
            "An ACK's seq is the seq the others see for that write",
            ack_seq_matches
        ),
        case!(
            "4.3",
            false,
            "A new connection's CONNECTED seq is the log head",
            connected_at_head
        ),
    ]
}

async fn consecutive_seqs(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    for i in 1..=4 {
        let (op, id) = (format!("a:{i}"), format!("t{i}"));
        ws.send(&mutation(
            "TASK_CREATED",
            &op,
            &id,
            0,
            json!({"title": "x"}),
        ))
        .await;
    }
    let mut seqs = Vec::new();
    for i in 1..=4 {
        let e = bob.event_for(&format!("t{i}")).await?;
        seqs.push(e["seq"].as_u64());
    }
    let ok =
        seqs.iter().all(Option::is_some) && seqs.windows(2).all(|w| w[1] == w[0].map(|s| s + 1));
    expect(ok, "seqs n, n+1, n+2, n+3 for t1..t4", format!("{seqs:?}"))?;
    ws.close().await;
    bob.close().await;
    Ok(())
}

async fn ack_seq_matches(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let (mut bob, _) = cx.join("bob", "b").await?;
    ws.send(&mutation(
        "TASK_CREATED",
        "a:1",
        "t1",
        0,
        json!({"title": "x"}),
    ))
    .await;
    let ack = ws.answer("a:1").await?;
    let event = bob.event_for("t1").await?;
    expect(
        ack["payload"]["seq"].is_u64() && ack["payload"]["seq"] == event["seq"],
        format!("the ACK's seq = the event's seq ({})", event["seq"]),
        ack["payload"].to_string(),
    )?;
    ws.close().await;
    bob.close().await;
    Ok(())
}

async fn connected_at_head(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    for i in 1..=2 {
        let op = format!("a:{i}");
        ws.send(&mutation(
            "TASK_CREATED",
            &op,
            &format!("t{i}"),
            0,
            json!({"title": "x"}),
        ))
        .await;
        ws.answer(&op).await?;
    }
    let ack_seq = {
        ws.send(&mutation(
            "TASK_CREATED",
            "a:3",
            "t3",
            0,
            json!({"title": "x"}),
        ))
        .await;
        ws.answer("a:3").await?["payload"]["seq"].clone()
    };
    let (bob, connected) = cx.join("bob", "b").await?;
    expect(
        connected["seq"] == ack_seq,
        format!("CONNECTED.seq = {ack_seq}, the last write's seq"),
        connected.to_string(),
    )?;
    ws.close().await;
    bob.close().await;
    Ok(())
}
