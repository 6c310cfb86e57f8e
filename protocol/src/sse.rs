//! Server-Sent Events framing (WHATWG HTML, "Parsing an event stream"): an event
//! writer (tests; the server writes through axum's `Sse`) and an incremental parser
//! for clients that are not browsers (tests, the simulator, live mode).
//!
//! The parser stays hand-written for a missing feature, checked in the crates'
//! sources on 2026-12-04: `eventsource-stream` 0.2.3 and `sse-stream` 0.3.0 buffer an
//! unterminated line without any bound (a server that never sends a newline grows the
//! client until it runs out of memory; this one refuses the stream past
//! `line_bytes_max`), and both are async `Stream` adapters over a body, where the
//! simulator feeds bytes to a sans-IO parser and counts `:` comment lines as liveness.

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `id:` — the protocol writes `E:N` (epoch:seq) on every logged event.
    pub id: Option<String>,
    /// `event:` — absent for the protocol's frames, so `EventSource.onmessage` fires.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `retry:` in milliseconds.
    pub retry_ms: Option<u64>,
}

/// The `Last-Event-ID` / `id:` form of a position in a workspace log.
pub fn event_id(epoch: u64, seq: u64) -> String {
    format!("{epoch}:{seq}")
}

/// Parses `E:N`.
pub fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (e, n) = s.trim().split_once(':')?;
    Some((e.parse().ok()?, n.parse().ok()?))
}

/// Incremental parser: feed bytes as they arrive, take whole events out.
/// Buffers at most `line_bytes_max` of an unterminated line; past that the
/// stream is refused (a server that never sends a newline cannot grow us).
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
    line_bytes_max: usize,
    /// Comment lines seen (`: keep-alive`): a liveness signal for heartbeats.
    pub comments: u64,
}

/// Why an SSE stream was refused: the reader gives up on it (and reconnects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An unterminated line passed `line_bytes_max` (holds the bound).
    #[error("SSE line longer than {0} bytes")]
    LineTooLong(usize),
    /// A line is not UTF-8, which the SSE format requires.
    #[error("SSE stream is not UTF-8")]
    NotUtf8,
}

impl SseParser {
    /// A parser that buffers at most `line_bytes_max` bytes of an unterminated line.
    pub fn new(line_bytes_max: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            current: SseEvent::default(),
            has_data: false,
            line_bytes_max,
            comments: 0,
        }
    }

    /// Consumes `bytes` and returns every event they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = self.buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buf[start..end]);
            let line = std::str::from_utf8(line)
                .map_err(|_| SseError::NotUtf8)?
                .to_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        if self.buf.len() > self.line_bytes_max {
            return Err(SseError::LineTooLong(self.line_bytes_max));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.current);
            if self.has_data {
                out.push(ev);
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            "event" => self.current.event = Some(value.to_owned()),
            "retry" => self.current.retry_ms = value.parse().ok(),
            _ => {}
        }
    }
}

/// Writes one event in wire form.
pub fn write_event(ev: &SseEvent) -> String {
    let mut s = String::new();
    if let Some(r) = ev.retry_ms {
        s.push_str(&format!("retry: {r}\n"));
    }
    if let Some(id) = &ev.id {
        s.push_str(&format!("id: {id}\n"));
    }
    if let Some(e) = &ev.event {
        s.push_str(&format!("event: {e}\n"));
    }
    for line in ev.data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_events_comments_and_ids() {
        let mut p = SseParser::new(1024);
        let wire = "retry: 3000\n: hello\n\nid: 7:3\ndata: {\"a\":\ndata: 1}\n\ndata: x\r\n\r\n";
        let mut events = Vec::new();
        for chunk in wire.as_bytes().chunks(5) {
            events.extend(p.feed(chunk).unwrap());
        }
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("7:3"));
        assert_eq!(events[0].data, "{\"a\":\n1}");
        assert_eq!(events[1].data, "x");
        assert_eq!(p.comments, 1);
        assert_eq!(parse_event_id("7:3"), Some((7, 3)));
        assert_eq!(parse_event_id("7"), None);
    }

    #[test]
    fn write_then_parse_round_trips() {
        let ev = SseEvent {
            id: Some(event_id(1, 2)),
            event: None,
            data: "line1\nline2".into(),
            retry_ms: Some(5),
        };
        let mut p = SseParser::new(1024);
        assert_eq!(p.feed(write_event(&ev).as_bytes()).unwrap(), vec![ev]);
    }

    #[test]
    fn refuses_an_endless_line() {
        let mut p = SseParser::new(16);
        assert_eq!(p.feed(&[b'a'; 17]), Err(SseError::LineTooLong(16)));
    }
}
