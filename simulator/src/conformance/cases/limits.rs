//! 10 — Limits (docs/protocol.md, "Limits").

use super::case;
use crate::conformance::probe::{Got, REPLY_WAIT, error_code, expect, fail, kind};
use crate::conformance::{Case, Ctx, Outcome, Verdict, mutation, not_implemented};
use serde_json::{Value, json};

/// What "over the bound" means here: 1 MiB, sixteen times the reference server's default
/// (64 KiB), so a server with a larger but still sane bound is caught too.
const OVER_BOUND: usize = 1 << 20;
/// Frames in the flood: four times the reference server's burst (100).
const FLOOD: usize = 400;
const HEARTBEAT: &str = r#"{"type":"HEARTBEAT","payload":{"timestamp":1}}"#;

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "10.1",
            false,
            "A WebSocket message over the frame bound (1 MiB here): close 1009",
            oversize_frame
        ),
        case!(
            "10.2",
            false,
            "A flood of frames is answered ERROR RATE_LIMITED with retryAfterMs, or closed 1008",
            flood
        ),
        case!(
            "10.3",
            false,
            "An HTTP body over the bound (1 MiB): 413",
            oversize_body
        ),
    ]
}

async fn oversize_frame(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("mallory", "m").await?;
    let pad = "x".repeat(OVER_BOUND);
    let big = json!({"type": "HEARTBEAT", "payload": {"timestamp": 1, "pad": pad}});
    // A server that stops reading mid-message can leave the write hanging; the close
    // is what counts.
    let _ = tokio::time::timeout(REPLY_WAIT, ws.send(&big)).await;
    let code = ws.closed_within(REPLY_WAIT).await?;
    expect(
        code == Some(1009),
        "close 1009 (message too big)",
        format!("close {code:?}"),
    )
}

async fn flood(cx: &mut Ctx) -> Outcome {
    let (mut ws, _) = cx.join("mallory", "m").await?;
    let send_all = async {
        for _ in 0..FLOOD {
            ws.send_text(HEARTBEAT).await;
        }
    };
    let _ = tokio::time::timeout(REPLY_WAIT, send_all).await;
    let expected = "a limit: ERROR RATE_LIMITED with a numeric retryAfterMs, or close 1008";
    let deadline = tokio::time::Instant::now() + REPLY_WAIT;
    let mut acks = 0;
    // A RATE_LIMITED without retryAfterMs is not yet a pass, but a 1008 close after it
    // is; kept to name it if neither comes.
    let mut bare_limit: Option<Value> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.read(left).await {
            Got::Frame(v) if error_code(&v) == Some("RATE_LIMITED") => {
                if v["payload"]["retryAfterMs"].is_number() {
                    ws.close().await;
                    return Ok(());
                }
                bare_limit = Some(v);
            }
            Got::Frame(v) if kind(&v) == "HEARTBEAT_ACK" => acks += 1,
            Got::Frame(_) => {}
            Got::Closed(Some(1008)) => return Ok(()),
            Got::Closed(code) => {
                return Err(fail(
                    expected,
                    format!("close {code:?} after {acks} HEARTBEAT_ACKs"),
                ));
            }
            Got::Nothing => {
                let limit = bare_limit
                    .map(|v| format!(", and a RATE_LIMITED without retryAfterMs: {v}"))
                    .unwrap_or_default();
                ws.close().await;
                return Err(fail(
                    expected,
                    format!("{acks} HEARTBEAT_ACKs to {FLOOD} HEARTBEATs{limit}"),
                ));
            }
        }
    }
}

async fn oversize_body(cx: &mut Ctx) -> Outcome {
    let pad = "x".repeat(OVER_BOUND);
    let body = mutation("TASK_CREATED", "h:1", "t1", 0, json!({"pad": pad})).to_string();
    let token = cx.token("mallory");
    let (status, answer) = post_raw(cx, "/api/events?sessionId=s1", &token, &body).await?;
    if matches!(status, 404 | 405) {
        return Err(not_implemented(format!(
            "POST /api/events answered {status}"
        )));
    }
    expect(
        status == 413,
        format!("413 for a body of {} bytes", body.len()),
        answer,
    )
}

/// `POST path` on a socket of its own, reading while it writes: a server may answer 413
/// as soon as it sees the length and never read the body, and a client that reads only
/// once it has written everything then meets a reset instead of the answer. Returns the
/// status and the answer as it came.
async fn post_raw(cx: &Ctx, path: &str, token: &str, body: &str) -> Result<(u16, String), Verdict> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let what = format!("an answer to POST {path} ({} bytes)", body.len());
    cx.log.add(
        ">",
        "http",
        &format!("POST {path} ({} bytes of body)", body.len()),
    );
    let tcp = tokio::time::timeout(REPLY_WAIT, tokio::net::TcpStream::connect(cx.addr.as_str()))
        .await
        .map_err(|_| fail(&what, "connect timed out"))?
        .map_err(|e| fail(&what, e.to_string()))?;
    let (mut rd, mut wr) = tcp.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        cx.addr,
        body.len()
    );
    let write = async {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(body.as_bytes()).await;
        std::future::pending::<()>().await
    };
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = rd.read(&mut chunk).await {
            got.extend_from_slice(&chunk[..n]);
        }
    };
    // A megabyte may take a while to a remote target.
    let _ = tokio::time::timeout(REPLY_WAIT * 2, async move {
        tokio::select! {
            () = read => {}
            () = write => {}
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    cx.log.add("<", "http", text.trim_end());
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    match status {
        Some(s) => Ok((s, text)),
        None if text.is_empty() => Err(fail(what, "nothing (or a reset)")),
        None => Err(fail(what, text)),
    }
}
