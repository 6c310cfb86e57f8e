//! What `simulate conformance` hands back: a console summary (one line per area, then
//! every case that did not pass, then the totals), `conformance.json` (every
//! [`CaseResult`] as it serializes, plus whether this run required it) and
//! `conformance.html`, one self-contained page in the look of the simulation reports
//! (`html.rs`): inline CSS, no script, each case a row that opens onto its expected/got
//! and its transcript.
//!
//! "Required" is the caller's to decide (the selection, `--minimum`): `required[i]`
//! says whether `results[i]` is; a missing entry counts as not required.
//!
//! Everything a server sent is hostile text here: frames, error messages and whatever
//! a case quoted from them reach the page only through [`esc`].

use crate::conformance::cases::area_name;
use crate::conformance::probe::Line;
use crate::conformance::{CaseResult, Verdict};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Titles longer than this are cut in the console (the page and the JSON keep them).
const TITLE_MAX: usize = 70;
/// The area names in the console are padded with dots to this column.
const NAME_COL: usize = 34;
/// Transcript lines shown per case on the page; the JSON keeps them all.
const TRANSCRIPT_MAX_LINES: usize = 200;

/// The console summary: the areas, the cases that did not pass, the totals. Ends with
/// a newline.
pub fn console(results: &[CaseResult], required: &[bool]) -> String {
    let mut out = String::new();
    for area in by_area(results) {
        let c = Counts::of(results, required, area.cases.iter().copied());
        // At least two dots, so the longest names still read as a leader line.
        let dots = ".".repeat(
            NAME_COL
                .saturating_sub(area.name.chars().count() + 1)
                .max(2),
        );
        let _ = writeln!(
            out,
            "{:>3} {} {dots} {}",
            area.number,
            area.name,
            c.summary()
        );
    }
    let problems: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| problem_lines(r, is_required(required, i)))
        .collect();
    if !problems.is_empty() {
        out.push('\n');
        for p in problems {
            out.push_str(&p);
            out.push('\n');
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{}", Counts::all(results, required).summary());
    out
}

/// `conformance.json`: the target, every case with `required` added, and the totals.
pub fn json(target: &str, results: &[CaseResult], required: &[bool]) -> Value {
    let cases: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| case_json(r, is_required(required, i)))
        .collect();
    let t = Counts::all(results, required);
    serde_json::json!({
        "target": target,
        "cases": cases,
        "totals": {
            "pass": t.pass,
            "fail": t.fail,
            "not_implemented": t.not_implemented,
            "skipped": t.skipped,
            "required_failed": t.required_failed
        }
    })
}

/// `conformance.html`: one self-contained page.
pub fn html(target: &str, results: &[CaseResult], required: &[bool]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rtsync conformance: {t}</title><style>{STYLE}</style></head><body><h1>rtsync conformance: {t}</h1>",
        t = esc(target)
    );
    totals_strip(&mut h, &Counts::all(results, required));
    if results.is_empty() {
        h.push_str("<p class=\"note\">No cases ran.</p>");
    }
    for area in by_area(results) {
        area_section(&mut h, results, required, &area);
    }
    h.push_str("</body></html>\n");
    h
}

/// Creates `dir` and writes `conformance.json` (pretty) and `conformance.html` into it.
pub fn write(
    dir: &Path,
    target: &str,
    results: &[CaseResult],
    required: &[bool],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pretty = serde_json::to_string_pretty(&json(target, results, required))
        .map_err(std::io::Error::other)?;
    std::fs::write(dir.join("conformance.json"), pretty + "\n")?;
    std::fs::write(
        dir.join("conformance.html"),
        html(target, results, required),
    )
}

// ---------------------------------------------------------------------------------
// Counting and grouping, shared by the three outputs so they cannot disagree.

/// How many cases ended which way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    cases: usize,
    pass: usize,
    fail: usize,
    not_implemented: usize,
    skipped: usize,
    /// Failures among the required cases: what decides whether the run failed.
    required_failed: usize,
}

impl Counts {
    fn of(results: &[CaseResult], required: &[bool], which: impl Iterator<Item = usize>) -> Self {
        let mut c = Counts::default();
        for i in which {
            c.add(&results[i].verdict, is_required(required, i));
        }
        c
    }

    fn all(results: &[CaseResult], required: &[bool]) -> Self {
        Self::of(results, required, 0..results.len())
    }

    fn add(&mut self, v: &Verdict, required: bool) {
        self.cases += 1;
        match v {
            Verdict::Pass => self.pass += 1,
            Verdict::Fail { .. } => {
                self.fail += 1;
                if required {
                    self.required_failed += 1;
                }
            }
            Verdict::NotImplemented { .. } => self.not_implemented += 1,
            Verdict::Skipped { .. } => self.skipped += 1,
        }
    }

    /// `6 cases: 5 pass, 1 fail (1 required)`; counts that are zero are left out.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.pass > 0 {
            parts.push(format!("{} pass", self.pass));
        }
        if self.fail > 0 {
            parts.push(format!("{} fail{}", self.fail, self.required_note()));
        }
        if self.not_implemented > 0 {
            parts.push(format!("{} not implemented", self.not_implemented));
        }
        if self.skipped > 0 {
            parts.push(format!("{} skipped", self.skipped));
        }
        let head = plural(self.cases, "case");
        if parts.is_empty() {
            head
        } else {
            format!("{head}: {}", parts.join(", "))
        }
    }

    /// ` (N required)` when required cases failed, else nothing.
    fn required_note(&self) -> String {
        if self.required_failed > 0 {
            format!(" ({} required)", self.required_failed)
        } else {
            String::new()
        }
    }
}

/// One protocol area's cases, as indices into the results.
#[derive(Debug)]
struct Area {
    number: u32,
    name: String,
    cases: Vec<usize>,
}

/// The results grouped by area, areas in number order, cases in run order.
fn by_area(results: &[CaseResult]) -> Vec<Area> {
    let mut areas: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        areas.entry(area_of(&r.id)).or_default().push(i);
    }
    areas
        .into_iter()
        .map(|(number, cases)| {
            // An id outside the known areas still gets the name its result carries.
            let name = match area_name(number) {
                "?" => results[cases[0]].area.clone(),
                known => known.to_owned(),
            };
            Area {
                number,
                name,
                cases,
            }
        })
        .collect()
}

/// The area of a case id (`3.2` → 3), as `Case::area` reads it.
fn area_of(id: &str) -> u32 {
    id.split('.')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn is_required(required: &[bool], i: usize) -> bool {
    required.get(i).copied().unwrap_or(false)
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

// ---------------------------------------------------------------------------------
// Console.

/// A case that did not pass, as console lines (no trailing newline); `None` for a pass.
fn problem_lines(r: &CaseResult, required: bool) -> Option<String> {
    let head = format!("{} {}", r.id, clip(&r.title, TITLE_MAX));
    match &r.verdict {
        Verdict::Pass => None,
        Verdict::Fail { expected, got } => Some(format!(
            "  ✗ {head}{}\n{}\n{}",
            if required { " (required)" } else { "" },
            labelled("expected", expected),
            labelled("got", got)
        )),
        Verdict::NotImplemented { why } => {
            Some(format!("  – {head}: not implemented: {}", one_line(why)))
        }
        Verdict::Skipped { why } => Some(format!("  ~ {head}: skipped: {}", one_line(why))),
    }
}

/// `      label: text`, a multi-line text's further lines aligned under its first, so a
/// quoted frame stays readable and does not break the list's indentation.
fn labelled(label: &str, text: &str) -> String {
    let prefix = format!("      {label}: ");
    if text.is_empty() {
        return format!("{prefix}(empty)");
    }
    let pad = " ".repeat(prefix.chars().count());
    let mut out = prefix;
    for (k, line) in text.lines().enumerate() {
        if k > 0 {
            out.push('\n');
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    out
}

/// A reason on one line: it follows the title on the same console line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, the last one `…` when cut (characters, not bytes: titles
/// may hold non-ASCII).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------
// JSON.

/// A case as it serializes, plus `required`, which depends on the run, not the case.
fn case_json(r: &CaseResult, required: bool) -> Value {
    let mut v = serde_json::to_value(r)
        .unwrap_or_else(|e| serde_json::json!({"id": r.id, "error": e.to_string()}));
    if let Value::Object(m) = &mut v {
        m.insert("required".to_owned(), Value::Bool(required));
    }
    v
}

// ---------------------------------------------------------------------------------
// HTML.

/// html.rs's look (font, widths, grey header cells, green pass / red fail), plus the
/// badges and the expandable rows. Rows are a CSS grid, not a `<table>`: a
/// `<details>` may not sit between `<tr>`s, and the whole row should open the case.
const STYLE: &str = "body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}\
h2{margin-top:1.6em;margin-bottom:.2em}\
code{background:#f3f3f3;padding:.1em .3em}\
table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}\
.note{color:#666;margin:.2em 0}\
.totals{display:flex;flex-wrap:wrap;gap:.6em;align-items:center;margin:1em 0;font-size:1.1em}\
.cases{border:1px solid #ccc;border-bottom:none;margin:.5em 0}\
.row{display:grid;grid-template-columns:1.2em 4em minmax(0,1fr) 11em 6em;gap:.6em;align-items:center;padding:.3em .6em;border-bottom:1px solid #ccc}\
.head{background:#f3f3f3;font-weight:bold}\
summary.row{cursor:pointer;list-style:none}\
summary.row::-webkit-details-marker{display:none}\
summary.row::before{content:\"\\25B8\";color:#888}\
details[open]>summary.row::before{content:\"\\25BE\"}\
details[open]>summary.row{background:#f8f8f8}\
.ms{text-align:right}\
.body{padding:.5em 1em 1em 2.4em;border-bottom:1px solid #ccc}\
.badge{display:inline-block;padding:.1em .5em;border-radius:3px;color:#fff;font-size:.85em;font-weight:bold;white-space:nowrap}\
.badge.pass{background:#080}.badge.fail{background:#b00}.badge.ni{background:#b70}.badge.skip{background:#888}\
.req{color:#b00;font-size:.8em;margin-left:.6em}\
.lbl{font-weight:bold;margin:.4em 0 .1em}\
pre{background:#f3f3f3;padding:.4em .6em;margin:0 0 .4em;white-space:pre-wrap;word-break:break-word}\
.transcript td,.transcript th{font-family:monospace;font-size:.85em}\
.transcript td.t{white-space:pre-wrap;word-break:break-all}";

/// Escapes text for element content and quoted attributes: html.rs's set plus `'`,
/// since a server's text may land anywhere on the page.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The run at a glance: every count, zeros included, so a reader sees there were none.
fn totals_strip(h: &mut String, t: &Counts) {
    let _ = write!(
        h,
        "<div class=\"totals\"><span>{}</span><span class=\"badge pass\">{} PASS</span><span class=\"badge fail\">{} FAIL{}</span><span class=\"badge ni\">{} NOT IMPLEMENTED</span><span class=\"badge skip\">{} SKIPPED</span></div>",
        plural(t.cases, "case"),
        t.pass,
        t.fail,
        t.required_note(),
        t.not_implemented,
        t.skipped
    );
    h.push_str("<p class=\"note\">Click a case for what was expected, what came back and the frames exchanged. <span class=\"req\">required</span> marks the cases this run requires to pass.</p>");
}

/// One area: its heading, its counts, its cases.
fn area_section(h: &mut String, results: &[CaseResult], required: &[bool], area: &Area) {
    let c = Counts::of(results, required, area.cases.iter().copied());
    let _ = write!(
        h,
        "<h2>{} {}</h2><p class=\"note\">{}</p><div class=\"cases\"><div class=\"row head\"><span></span><span>id</span><span>title</span><span>verdict</span><span class=\"ms\">time ms</span></div>",
        area.number,
        esc(&area.name),
        esc(&c.summary())
    );
    for &i in &area.cases {
        case_row(h, &results[i], is_required(required, i));
    }
    h.push_str("</div>");
}

/// A case's row, opening onto its verdict's detail and its transcript.
fn case_row(h: &mut String, r: &CaseResult, required: bool) {
    let tag = if required {
        "<span class=\"req\">required</span>"
    } else {
        ""
    };
    let _ = write!(
        h,
        "<details><summary class=\"row\"><span>{}</span><span>{}{tag}</span><span>{}</span><span class=\"ms\">{}</span></summary><div class=\"body\">",
        esc(&r.id),
        esc(&r.title),
        badge(&r.verdict),
        r.elapsed_ms
    );
    verdict_detail(h, &r.verdict);
    transcript(h, &r.transcript);
    h.push_str("</div></details>");
}

fn badge(v: &Verdict) -> String {
    let class = match v {
        Verdict::Pass => "pass",
        Verdict::Fail { .. } => "fail",
        Verdict::NotImplemented { .. } => "ni",
        Verdict::Skipped { .. } => "skip",
    };
    format!("<span class=\"badge {class}\">{}</span>", v.label())
}

/// Expected and got for a failure (as `<pre>`: they often quote frames), the reason
/// for the others.
fn verdict_detail(h: &mut String, v: &Verdict) {
    match v {
        Verdict::Pass => {}
        Verdict::Fail { expected, got } => {
            let _ = write!(
                h,
                "<p class=\"lbl\">expected</p><pre>{}</pre><p class=\"lbl\">got</p><pre>{}</pre>",
                esc(expected),
                esc(got)
            );
        }
        Verdict::NotImplemented { why } => {
            let _ = write!(h, "<p><b>not implemented:</b> {}</p>", esc(why));
        }
        Verdict::Skipped { why } => {
            let _ = write!(h, "<p><b>skipped:</b> {}</p>", esc(why));
        }
    }
}

/// The frames exchanged, capped so one chatty case cannot swell the page.
fn transcript(h: &mut String, lines: &[Line]) {
    if lines.is_empty() {
        h.push_str("<p class=\"note\">No frames recorded.</p>");
        return;
    }
    h.push_str(
        "<table class=\"transcript\"><tr><th>at ms</th><th>dir</th><th>on</th><th>text</th></tr>",
    );
    for l in lines.iter().take(TRANSCRIPT_MAX_LINES) {
        let _ = write!(
            h,
            "<tr><td class=\"ms\">{}</td><td>{}</td><td>{}</td><td class=\"t\">{}</td></tr>",
            l.at_ms,
            esc(l.dir),
            esc(&l.on),
            esc(&l.text)
        );
    }
    h.push_str("</table>");
    let more = lines.len().saturating_sub(TRANSCRIPT_MAX_LINES);
    if more > 0 {
        let _ = write!(
            h,
            "<p class=\"note\">… {more} more {} (the whole transcript is in conformance.json)</p>",
            if more == 1 { "line" } else { "lines" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, verdict: Verdict) -> CaseResult {
        CaseResult {
            id: id.to_owned(),
            area: area_name(area_of(id)).to_owned(),
            title: format!("case {id}"),
            minimum: false,
            verdict,
            elapsed_ms: 12,
            transcript: Vec::new(),
        }
    }

    fn fail(expected: &str, got: &str) -> Verdict {
        Verdict::Fail {
            expected: expected.to_owned(),
            got: got.to_owned(),
        }
    }

    /// Two areas: 1 with a required failure, 3 with one of every other non-pass.
    fn sample() -> (Vec<CaseResult>, Vec<bool>) {
        let results = vec![
            case("1.1", Verdict::Pass),
            case("1.2", fail("CONNECTED", "HTTP 500")),
            case("1.3", Verdict::Pass),
            case(
                "3.1",
                Verdict::NotImplemented {
                    why: "UNKNOWN_TYPE".to_owned(),
                },
            ),
            case(
                "3.2",
                Verdict::Skipped {
                    why: "heartbeat 60 s".to_owned(),
                },
            ),
            case("3.3", fail("ACK", "nothing within 3 s")),
        ];
        (results, vec![true, true, true, false, false, false])
    }

    #[test]
    fn console_counts_per_area_and_totals() {
        let (results, required) = sample();
        let out = console(&results, &required);
        let lines: Vec<&str> = out.lines().collect();
        let area1 = lines
            .iter()
            .find(|l| l.starts_with("  1 Connect and auth ."))
            .expect("a line for area 1");
        assert!(
            area1.ends_with(". 3 cases: 2 pass, 1 fail (1 required)"),
            "{area1}"
        );
        let area3 = lines
            .iter()
            .find(|l| l.starts_with("  3 Mutations, ACK and idempotency ."))
            .expect("a line for area 3");
        assert!(
            area3.ends_with(". 3 cases: 1 fail, 1 not implemented, 1 skipped"),
            "{area3}"
        );
        assert_eq!(
            lines.last(),
            Some(&"6 cases: 2 pass, 2 fail (1 required), 1 not implemented, 1 skipped")
        );
        assert!(out.contains(
            "  ✗ 1.2 case 1.2 (required)\n      expected: CONNECTED\n      got: HTTP 500\n"
        ));
        assert!(out.contains("  ✗ 3.3 case 3.3\n      expected: ACK\n"));
        assert!(out.contains("  – 3.1 case 3.1: not implemented: UNKNOWN_TYPE\n"));
        assert!(out.contains("  ~ 3.2 case 3.2: skipped: heartbeat 60 s\n"));
        // Passing cases are counted, not listed.
        assert!(!out.contains("1.1 case"));
    }

    #[test]
    fn console_cuts_long_titles_the_page_keeps_them() {
        let mut r = case(
            "2.1",
            Verdict::NotImplemented {
                why: "x".to_owned(),
            },
        );
        r.title = "a".repeat(120);
        let out = console(std::slice::from_ref(&r), &[false]);
        assert!(out.contains(&format!("2.1 {}…: not implemented: x", "a".repeat(69))));
        assert!(html("t", &[r], &[false]).contains(&"a".repeat(120)));
    }

    #[test]
    fn html_escapes_hostile_text() {
        let mut r = case(
            "2.1",
            fail("an ERROR frame", "<img src=x onerror=alert(1)>"),
        );
        r.title = "<b>title</b>".to_owned();
        r.transcript = vec![Line {
            at_ms: 5,
            dir: "<",
            on: "ws \"a\"/'b'".to_owned(),
            text: "<script>alert('x')</script> & more".to_owned(),
        }];
        let page = html("<script>evil</script>", &[r], &[true]);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>title"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
        assert!(page.contains("ws &quot;a&quot;/&#39;b&#39;"));
        assert!(
            page.contains("<title>rtsync conformance: &lt;script&gt;evil&lt;/script&gt;</title>")
        );
    }

    #[test]
    fn html_caps_long_transcripts() {
        let mut r = case("4.1", Verdict::Pass);
        r.transcript = (0..250)
            .map(|k| Line {
                at_ms: k,
                dir: ">",
                on: "http".to_owned(),
                text: format!("frame {k}"),
            })
            .collect();
        let page = html("t", &[r], &[false]);
        assert!(page.contains(">frame 199<"));
        assert!(!page.contains(">frame 200<"));
        assert!(page.contains("… 50 more lines"));
    }

    #[test]
    fn json_totals_and_required() {
        let (results, required) = sample();
        let v = json("127.0.0.1:8080", &results, &required);
        assert_eq!(v["target"], "127.0.0.1:8080");
        assert_eq!(
            v["totals"],
            serde_json::json!({
                "pass": 2,
                "fail": 2,
                "not_implemented": 1,
                "skipped": 1,
                "required_failed": 1
            })
        );
        assert_eq!(v["cases"].as_array().map(Vec::len), Some(6));
        assert_eq!(v["cases"][1]["required"], true);
        assert_eq!(v["cases"][1]["verdict"], "FAIL");
        assert_eq!(v["cases"][1]["got"], "HTTP 500");
        assert_eq!(v["cases"][3]["verdict"], "NOT_IMPLEMENTED");
        assert_eq!(v["cases"][5]["required"], false);
    }

    #[test]
    fn write_creates_both_files() {
        let dir =
            std::env::temp_dir().join(format!("rtsync-conformance-report-{}", std::process::id()));
        let (results, required) = sample();
        write(&dir, "t", &results, &required).expect("written");
        let text = std::fs::read_to_string(dir.join("conformance.json")).expect("json");
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["totals"]["required_failed"], 1);
        assert!(dir.join("conformance.html").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
