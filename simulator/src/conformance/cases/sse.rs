//! 11 — SSE and HTTP writes (docs/protocol.md, "Transports").

use super::case;
use crate::conformance::probe::{Answer, Sse, Ws, expect, fail, kind};
use crate::conformance::{Case, Ctx, Outcome, Verdict, mutation, not_implemented};
use serde_json::{Value, json};

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "11.1",
            false,
            "An SSE stream starts with CONNECTED",
            sse_connected
        ),
        case!(
            "11.2",
            false,
            "POST /api/events applies a mutation and answers its ACK",
            post_acked
        ),
        case!(
            "11.3",
            false,
            "An event reaches an SSE reader with id E:N matching its seq",
            sse_event_id
        ),
        case!(
            "11.4",
            false,
            "An SSE stream resumed with Last-Event-ID gets the missed events",
            sse_resumed
        ),
        case!(
            "11.5",
            false,
            "POST /api/events without a token: 401",
            post_no_token
        ),
    ]
}

/// NOT IMPLEMENTED when the endpoint is absent (404, 405); any other status goes on to
/// the case's own check.
pub(super) fn absent(a: &Answer, what: &str) -> Outcome {
    if matches!(a.status, 404 | 405) {
        return Err(not_implemented(format!("{what} answered {}", a.status)));
    }
    Ok(())
}

/// `user`'s SSE stream as tab `session`, with `headers` (`Last-Event-ID`).
async fn subscribe(
    cx: &Ctx,
    user: &str,
    session: &str,
    headers: &[(&str, String)],
) -> Result<Sse, Verdict> {
    let path = format!(
        "/api/events/subscribe?token={}&sessionId={session}",
        cx.token(user)
    );
    let name = format!("sse {user}/{session}");
    match Sse::open(&cx.addr, &path, headers, &name, &cx.log).await? {
        Ok(sse) => Ok(sse),
        Err(a) => {
            absent(&a, "GET /api/events/subscribe")?;
            let ct = a.headers.get("content-type").and_then(|v| v.to_str().ok());
            Err(fail(
                "200 text/event-stream",
                format!("{} (content-type {ct:?}) {}", a.status, a.body),
            ))
        }
    }
}

/// Creates `t{n}` as op `a:n` on `ws`: the `(epoch, seq)` its ACK names.
async fn create(ws: &mut Ws, n: u32) -> Result<(u64, u64), Verdict> {
    ws.create_acked("a", u64::from(n)).await
}

/// Picks the logged event for entity `id`.
fn event_for(id: &str) -> impl FnMut(&Value) -> Option<Value> + '_ {
    move |v| (kind(v) == "REALTIME_EVENT" && v["payload"]["payload"]["id"] == id).then(|| v.clone())
}

/// The seqs of the logged events a frame carries: a `REALTIME_EVENT`'s own, or each of
/// a `RECENT_EVENTS` batch's.
fn seqs(v: &Value) -> Vec<u64> {
    match kind(v) {
        "REALTIME_EVENT" => v["seq"].as_u64().into_iter().collect(),
        "RECENT_EVENTS" => v["payload"]["events"]
            .as_array()
            .map(|es| es.iter().filter_map(|e| e["seq"].as_u64()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn sse_connected(cx: &mut Ctx) -> Outcome {
    let mut sse = subscribe(cx, "bob", "s", &[]).await?;
    let (_, first) = sse.until("a first event", |v| Some(v.clone())).await?;
    expect(
        kind(&first) == "CONNECTED",
        "CONNECTED as the first event",
        first.to_string(),
    )?;
    let p = &first["payload"];
    expect(
        p["userId"] == "bob" && p["workspaceId"] == cx.ws.as_str(),
        format!("CONNECTED {{userId: bob, workspaceId: {}}}", cx.ws),
        p.to_string(),
    )
}

async fn post_acked(cx: &mut Ctx) -> Outcome {
    let (mut bob, _) = cx.join("bob", "b").await?;
    let body = mutation("TASK_CREATED", "h:1", "t1", 0, json!({"title": "via POST"}));
    let token = cx.token("alice");
    let a = cx
        .http(
            "POST",
            "/api/events?sessionId=s1",
            Some(&token),
            Some(body.to_string()),
        )
        .await?;
    absent(&a, "POST /api/events")?;
    let ack = a.json();
    expect(
        a.status == 200 && kind(&ack) == "ACK",
        "200 with the ACK frame",
        format!("{} {}", a.status, a.body),
    )?;
    let p = &ack["payload"];
    expect(
        p["opId"] == "h:1" && p["entityId"] == "t1" && p["version"] == 1,
        "ACK {opId: h:1, entityId: t1, version: 1}",
        p.to_string(),
    )?;
    // Applied, not only answered: the others get the write.
    let event = bob.event_for("t1").await?;
    expect(
        event["payload"]["payload"]["title"] == "via POST",
        "bob's event for t1 with title \"via POST\"",
        event.to_string(),
    )?;
    bob.close().await;
    Ok(())
}

async fn sse_event_id(cx: &mut Ctx) -> Outcome {
    let mut sse = subscribe(cx, "bob", "b", &[]).await?;
    sse.until("CONNECTED on bob's stream", |v| {
        (kind(v) == "CONNECTED").then_some(())
    })
    .await?;
    let (mut ws, _) = cx.join("alice", "a").await?;
    let (epoch, seq) = create(&mut ws, 1).await?;
    let (id, event) = sse
        .until("the event for t1 on bob's stream", event_for("t1"))
        .await?;
    let want = format!("{epoch}:{seq}");
    expect(
        id.as_deref() == Some(want.as_str()) && event["seq"] == seq,
        format!("id: {want} on the event, whose seq is {seq}"),
        format!("id: {id:?}, seq {}", event["seq"]),
    )?;
    ws.close().await;
    Ok(())
}

async fn sse_resumed(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let mut sse = subscribe(cx, "bob", "b", &[]).await?;
    let (_, s1) = create(&mut ws, 1).await?;
    let (last_id, _) = sse
        .until("the event for t1 on bob's stream", event_for("t1"))
        .await?;
    let Some(last_id) = last_id else {
        return Err(fail("id: E:N on the event for t1", "an event without id"));
    };
    // Bob goes away; what is written meanwhile must come back with the resume.
    drop(sse);
    let (_, s2) = create(&mut ws, 2).await?;
    let (_, s3) = create(&mut ws, 3).await?;
    let header = [("last-event-id", last_id.clone())];
    let mut back = subscribe(cx, "bob", "b", &header).await?;
    let mut seen: Vec<u64> = Vec::new();
    let found = back
        .until("the missed events", |v| {
            seen.extend(seqs(v));
            (seen.contains(&s2) && seen.contains(&s3)).then_some(())
        })
        .await;
    let got = format!("seqs {seen:?} after Last-Event-ID {last_id}");
    found.map_err(|_| {
        fail(
            format!("the missed events, seqs {s2} and {s3}"),
            got.clone(),
        )
    })?;
    expect(
        !seen.contains(&s1),
        format!("only the events after {last_id} ({s2}, {s3}), not {s1} again"),
        got,
    )?;
    ws.close().await;
    Ok(())
}

async fn post_no_token(cx: &mut Ctx) -> Outcome {
    let body = mutation("TASK_CREATED", "h:1", "t1", 0, json!({"title": "x"}));
    let a = cx
        .http(
            "POST",
            "/api/events?sessionId=s1",
            None,
            Some(body.to_string()),
        )
        .await?;
    absent(&a, "POST /api/events")?;
    expect(a.status == 401, "401", format!("{} {}", a.status, a.body))
}
