//! Carrying out the session's actions over the simulated (or live) sockets: connect,
//! send, POST, close, fetch snapshots, persist the queue — and the notes it leaves.

use super::*;

/// A browser's `WebSocket.send` never blocks (it queues; `bufferedAmount` grows). A
/// socket write here can: turmoil's flow control parks the writer until the peer has
/// read, and never wakes it if the peer closed or reset meanwhile (e.g. the server's
/// 1008 after rate-limit strikes). A write not through by then counts as a lost
/// connection, so the tab gets back to its inbox (faults, `Finish`).
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes one message; false when the socket failed or did not take it in time.
pub(super) async fn write(ws: &mut Ws, m: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, ws.send(m)).await,
        Ok(Ok(()))
    )
}

impl Tab {
    /// Carries out the session's actions and records its notes.
    pub(super) async fn drive(&mut self) {
        loop {
            let mut acted = false;
            while let Some(a) = self.s.poll_action() {
                acted = true;
                self.act(a).await;
            }
            while let Some(n) = self.s.poll_note() {
                acted = true;
                self.note(n);
            }
            if !acted {
                break;
            }
        }
        if let Some(from) = self.marks.drain_from
            && self.s.outbox().is_empty()
            && self.s.connection().is_open()
        {
            let now = self.net.now_ms();
            self.rec
                .borrow_mut()
                .sample("offline_drain_ms", &self.spec.group, now, now - from);
            self.marks.drain_from = None;
        }
    }

    fn mark_sent(&self, m: &ClientMsg) {
        if let ClientMsg::RealtimeEvent(ev) = m
            && let Some(op) = ev.payload.get("opId").and_then(Value::as_str)
            && let Some(r) = self.rec.borrow_mut().ops.get_mut(op)
        {
            r.first_sent_ms.get_or_insert(self.net.now_ms());
        }
    }

    async fn act(&mut self, a: Action) {
        let now = self.net.now_ms();
        match a {
            Action::Connect {
                transport,
                resume,
                attempt,
            } => self.open(transport, resume, attempt, now),
            Action::Send(m) => {
                self.mark_sent(&m);
                if let Some(Link::Ws(ws)) = &mut self.wire.link
                    && !write(ws, Message::text(m.encode())).await
                {
                    self.set_link(None);
                    self.s
                        .handle_closed(self.wire.attempt, None, self.net.now_ms());
                }
            }
            Action::Post(m) => self.post(m),
            Action::Close { code, attempt } => {
                // Only the current socket is still there to close.
                if attempt == self.wire.attempt {
                    if let Some(Link::Ws(ws)) = &mut self.wire.link {
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
                    }
                    self.set_link(None);
                    self.wire.connecting = None;
                }
                self.s.handle_closed(attempt, Some(code), now);
            }
            Action::FetchSnapshot => {
                let (tx, token, route) = (
                    self.io_tx.clone(),
                    self.spec.token.clone(),
                    self.spec.group.clone(),
                );
                let net = self.net.clone();
                tokio::task::spawn_local(async move {
                    let _ = tx.send(Input::Io(Io::Snapshot(
                        fetch_snapshots(&net, &route, &token).await,
                    )));
                });
            }
            Action::PersistQueue => {
                self.app.stored_queue = serde_json::to_string(&self.s.sync_state()).ok()
            }
        }
    }

    /// Starts opening the stream of `attempt` (the previous one, if any, is dropped).
    fn open(
        &mut self,
        transport: Transport,
        resume: Option<rtsync_protocol::Resume>,
        attempt: u64,
        now: u64,
    ) {
        self.rec.borrow_mut().timeline_add(
            &format!("connect_attempts_per_s.{}", self.spec.group),
            now,
            1,
        );
        self.set_link(None);
        self.wire.attempt = attempt;
        self.wire.sent_resume = resume;
        let (route, net) = (self.spec.group.clone(), self.net.clone());
        let (token, tab, sse) = (
            self.spec.token.clone(),
            self.spec.id.clone(),
            transport == Transport::Sse,
        );
        let query = match resume {
            Some(r) if !sse => format!(
                "token={token}&sessionId={tab}&epoch={}&lastSeq={}",
                r.epoch, r.last_seq
            ),
            _ => format!("token={token}&sessionId={tab}"),
        };
        let last_event_id = resume.map(|r| rtsync_protocol::sse::event_id(r.epoch, r.last_seq));
        self.wire.connecting = Some(
            async move {
                if sse {
                    net.sse_connect(
                        &route,
                        &format!("/api/events/subscribe?{query}"),
                        last_event_id,
                    )
                    .await
                    .map(|s| Link::Sse(Box::new(s)))
                } else {
                    net.ws_connect(&route, &query)
                        .await
                        .map(|w| Link::Ws(Box::new(w)))
                }
            }
            .boxed_local(),
        );
    }

    /// POSTs `m` on one of the tab's kept-alive connections; the answer comes back
    /// through the inbox.
    fn post(&mut self, m: ClientMsg) {
        self.mark_sent(&m);
        let (route, net) = (self.spec.group.clone(), self.net.clone());
        let (tx, token, tab, pool) = (
            self.io_tx.clone(),
            self.spec.token.clone(),
            self.spec.id.clone(),
            self.wire.keep_alive.clone(),
        );
        tokio::task::spawn_local(async move {
            let path = format!("/api/events?sessionId={tab}");
            let headers = [
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".to_owned()),
            ];
            let answer = net
                .post(&pool, &route, &path, &headers, m.encode())
                .await
                .and_then(|(_, body)| ServerMsg::decode(std::str::from_utf8(&body).ok()?).ok());
            let _ = tx.send(Input::Io(Io::Post(answer)));
        });
    }

    /// Replaces the socket, keeping the open-connections timeline exact (opens and
    /// closes counted where the socket itself comes and goes).
    pub(super) fn set_link(&mut self, link: Option<Link>) {
        let delta = i64::from(link.is_some()) - i64::from(self.wire.link.is_some());
        if delta != 0 {
            self.rec
                .borrow_mut()
                .timeline_add("connections_open", self.net.now_ms(), delta);
        }
        if link.is_none() {
            // The stream is gone, perhaps with the server: its idle connections too.
            self.wire.keep_alive.borrow_mut().clear();
        }
        self.wire.link = link;
    }
}
