//! 12 — Snapshots (docs/protocol.md, "Transports", "Snapshots in pages").

use super::case;
use super::sse::absent;
use crate::conformance::probe::{expect, fail};
use crate::conformance::{Case, Ctx, Outcome, Verdict};
use serde_json::Value;

/// 12.3 gives up on a walk longer than this (five tasks in pages of two take three): a
/// `next` that never ends would otherwise loop until the case's bound.
const PAGES_MAX: usize = 10;

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "12.1",
            true,
            "GET /api/entities/tasks lists the workspace's tasks with epoch and seq",
            listed
        ),
        case!(
            "12.2",
            false,
            "GET /api/entities/tasks/{id} returns one task; an unknown id is 404",
            one_task
        ),
        case!(
            "12.3",
            false,
            "Pages: limit=2 and after=next walk every task once, in id order",
            pages
        ),
        case!("12.4", false, "Without a token: 401", no_token),
    ]
}

/// Alice creates t1..t`n` over a WebSocket, each ACKed before the next: the last ACK's
/// seq (0 if it names none; 3.1 checks that).
async fn create_tasks(cx: &Ctx, n: u32) -> Result<u64, Verdict> {
    let (mut ws, _) = cx.join("alice", "a").await?;
    let mut seq = 0;
    for i in 1..=u64::from(n) {
        seq = ws.create_acked("a", i).await?.1;
    }
    ws.close().await;
    Ok(seq)
}

/// The ids of a page's entities, in the order given.
fn ids_of(page: &Value) -> Vec<&str> {
    page["entities"]
        .as_array()
        .map(|es| es.iter().filter_map(|e| e["id"].as_str()).collect())
        .unwrap_or_default()
}

/// `s` for a query string: a `next` is the server's to choose.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn listed(cx: &mut Ctx) -> Outcome {
    let last = create_tasks(cx, 2).await?;
    let token = cx.token("alice");
    let a = cx
        .http("GET", "/api/entities/tasks", Some(&token), None)
        .await?;
    absent(&a, "GET /api/entities/tasks")?;
    expect(a.status == 200, "200", format!("{} {}", a.status, a.body))?;
    let v = a.json();
    expect(
        v["workspaceId"] == cx.ws.as_str()
            && v["epoch"].is_u64()
            && v["seq"].as_u64().is_some_and(|s| s >= last),
        format!(
            "{{workspaceId: {}, epoch, seq >= {last} (the last ACK's)}}",
            cx.ws
        ),
        format!(
            "workspaceId {}, epoch {}, seq {}",
            v["workspaceId"], v["epoch"], v["seq"]
        ),
    )?;
    let ids = ids_of(&v);
    expect(
        ids.contains(&"t1") && ids.contains(&"t2"),
        "entities t1 and t2",
        format!("{ids:?}"),
    )
}

async fn one_task(cx: &mut Ctx) -> Outcome {
    create_tasks(cx, 1).await?;
    let token = cx.token("alice");
    let a = cx
        .http("GET", "/api/entities/tasks/t1", Some(&token), None)
        .await?;
    // t1 exists: a 404 here is the endpoint missing, not the task.
    absent(&a, "GET /api/entities/tasks/t1")?;
    let v = a.json();
    expect(
        a.status == 200
            && v["workspaceId"] == cx.ws.as_str()
            && v["epoch"].is_u64()
            && v["seq"].is_u64()
            && v["entity"]["id"] == "t1"
            && v["entity"]["title"] == "task t1",
        "200 {workspaceId, epoch, seq, entity: {id: t1, title: task t1}}",
        format!("{} {}", a.status, a.body),
    )?;
    let missing = cx
        .http(
            "GET",
            "/api/entities/tasks/no-such-task",
            Some(&token),
            None,
        )
        .await?;
    expect(
        missing.status == 404,
        "404 for an unknown id",
        format!("{} {}", missing.status, missing.body),
    )
}

async fn pages(cx: &mut Ctx) -> Outcome {
    create_tasks(cx, 5).await?;
    let token = cx.token("alice");
    let (mut ids, mut sizes): (Vec<String>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut path = "/api/entities/tasks?limit=2".to_owned();
    loop {
        if sizes.len() == PAGES_MAX {
            return Err(fail(
                format!("the last page (no next) within {PAGES_MAX} pages"),
                format!("{ids:?} so far, and a next still"),
            ));
        }
        let a = cx.http("GET", &path, Some(&token), None).await?;
        absent(&a, "GET /api/entities/tasks")?;
        expect(
            a.status == 200,
            format!("200 for {path}"),
            format!("{} {}", a.status, a.body),
        )?;
        let page = a.json();
        let got = ids_of(&page);
        sizes.push(got.len());
        ids.extend(got.into_iter().map(str::to_owned));
        let Some(next) = page["next"].as_str() else {
            break;
        };
        path = format!("/api/entities/tasks?limit=2&after={}", encode(next));
    }
    // A server without paging answers everything at once with no next: that walks every
    // task too, so it passes if the one page is complete and ordered.
    let ignored = sizes.len() == 1 && sizes[0] > 2;
    let note = if ignored {
        format!(" (limit=2 was ignored: one page of {})", sizes[0])
    } else {
        String::new()
    };
    let want: Vec<String> = (1..=5).map(|i| format!("t{i}")).collect();
    expect(
        ids == want,
        "t1, t2, t3, t4, t5, each once, in id order",
        format!("{ids:?} in pages of {sizes:?}{note}"),
    )?;
    expect(
        ignored || sizes.iter().all(|&n| n <= 2),
        "pages of at most 2 entities (limit=2)",
        format!("pages of {sizes:?}"),
    )
}

async fn no_token(cx: &mut Ctx) -> Outcome {
    let a = cx.http("GET", "/api/entities/tasks", None, None).await?;
    absent(&a, "GET /api/entities/tasks")?;
    expect(a.status == 401, "401", format!("{} {}", a.status, a.body))
}
