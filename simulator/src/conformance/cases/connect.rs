//! 1 — Connect and auth (docs/protocol.md, "Transports", "Auth").

use super::case;
use crate::conformance::probe::{Refused, expect, fail, kind};
use crate::conformance::{Case, Ctx, Outcome, not_implemented, now_s};

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "1.1",
            true,
            "A WebSocket with a valid token gets CONNECTED first, naming the user, workspace, epoch, seq and heartbeatMs",
            connected_first
        ),
        case!(
            "1.2",
            true,
            "No token: the upgrade is refused with 401",
            no_token
        ),
        case!(
            "1.3",
            false,
            "A token signed with another secret: 401",
            forged_token
        ),
        case!("1.4", false, "An expired token: 401", expired_token),
        case!(
            "1.5",
            false,
            "A userId parameter other than the token's sub: 401",
            other_user_id
        ),
        case!(
            "1.6",
            false,
            "CONNECTED echoes the sessionId the client chose",
            session_echoed
        ),
    ]
}

async fn connected_first(cx: &mut Ctx) -> Outcome {
    let query = format!("token={}&sessionId=a", cx.token("alice"));
    let mut ws = match cx.upgrade(&query, "ws alice/a").await {
        Ok(ws) => ws,
        Err(Refused::Status(404)) => return Err(not_implemented("GET /ws answered 404")),
        Err(e) => return Err(fail("a WebSocket upgrade", e.to_string())),
    };
    let first = ws
        .until(
            "a first frame",
            crate::conformance::probe::REPLY_WAIT,
            |v| Some(v.clone()),
        )
        .await?;
    expect(
        kind(&first) == "CONNECTED",
        "CONNECTED as the first frame",
        first.to_string(),
    )?;
    // Live mode's tabs read frames with the protocol's own types: a CONNECTED they
    // cannot decode is no connection to them, whatever its fields say.
    let decoded = rtsync_protocol::ServerMsg::decode(&first.to_string());
    expect(
        matches!(decoded, Ok(rtsync_protocol::ServerMsg::Connected(_))),
        "a CONNECTED the protocol's types read (every field of docs/protocol.md)",
        format!("{decoded:?}"),
    )?;
    let p = &first["payload"];
    let want = [
        ("userId", p["userId"].as_str() == Some("alice")),
        (
            "workspaceId",
            p["workspaceId"].as_str() == Some(cx.ws.as_str()),
        ),
        ("epoch", p["epoch"].is_u64()),
        ("seq", p["seq"].is_u64()),
        (
            "heartbeatMs",
            p["heartbeatMs"].as_u64().is_some_and(|h| h > 0),
        ),
    ];
    for (field, ok) in want {
        expect(
            ok,
            format!(
                "CONNECTED.{field} (userId alice, workspaceId {}, numbers)",
                cx.ws
            ),
            p.to_string(),
        )?;
    }
    ws.close().await;
    Ok(())
}

/// The upgrade with `query` must be refused with 401.
async fn refused_401(cx: &Ctx, query: &str, what: &str) -> Outcome {
    match cx.upgrade(query, "ws").await {
        Err(Refused::Status(401)) => Ok(()),
        Err(Refused::Status(404)) => Err(not_implemented("GET /ws answered 404")),
        Err(e) => Err(fail(format!("401 for {what}"), e.to_string())),
        Ok(mut ws) => {
            let first = ws.read(crate::conformance::probe::REPLY_WAIT).await;
            Err(fail(
                format!("401 for {what}"),
                format!("the upgrade was accepted; then {first:?}"),
            ))
        }
    }
}

async fn no_token(cx: &mut Ctx) -> Outcome {
    refused_401(cx, "sessionId=a", "no token").await
}

async fn forged_token(cx: &mut Ctx) -> Outcome {
    let forged = rtsync_protocol::auth::mint(
        &rtsync_protocol::auth::Claims {
            sub: "mallory".into(),
            ws: cx.ws.clone(),
            exp: now_s() + 3600,
        },
        b"not-the-server-secret",
    );
    refused_401(cx, &format!("token={forged}"), "a forged token").await
}

async fn expired_token(cx: &mut Ctx) -> Outcome {
    let old = cx.token_in("alice", &cx.ws, now_s() - 600);
    refused_401(
        cx,
        &format!("token={old}"),
        "a token expired 10 minutes ago",
    )
    .await
}

async fn other_user_id(cx: &mut Ctx) -> Outcome {
    let query = format!("token={}&userId=bob", cx.token("alice"));
    refused_401(cx, &query, "userId=bob with alice's token").await
}

async fn session_echoed(cx: &mut Ctx) -> Outcome {
    let (ws, connected) = cx.join("alice", "tab-7").await?;
    expect(
        connected["sessionId"].as_str() == Some("tab-7"),
        "CONNECTED.sessionId = tab-7",
        connected.to_string(),
    )?;
    ws.close().await;
    Ok(())
}
