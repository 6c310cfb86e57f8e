//! The tab's sockets: the stream (WebSocket, or SSE with POSTs on kept-alive HTTP
//! connections) it has or is opening, read frame by frame.

use super::*;

/// The tab's sockets: the stream it has or is opening, its idle HTTP connections.
pub(super) struct Wire {
    /// The open stream; the transport deliveries are labelled by.
    pub(super) link: Option<Link>,
    /// Idle HTTP connections for this tab's POSTs (SSE mode), reused like a browser's.
    pub(super) keep_alive: Rc<RefCell<net::KeepAlive>>,
    /// The stream being opened, for the attempt in `attempt`.
    pub(super) connecting: Option<LocalBoxFuture<'static, Result<Link, ConnectFail>>>,
    /// The connect attempt `connecting` or `link` belongs to.
    pub(super) attempt: u64,
    /// The resume point sent with the current connect attempt.
    pub(super) sent_resume: Option<rtsync_protocol::Resume>,
}

/// The stream a tab is connected by.
pub(super) enum Link {
    Ws(Box<Ws>),
    Sse(Box<Sse>),
}

/// What a read from the stream gave.
pub(super) enum Incoming {
    Frame(ServerMsg),
    Activity,
    Closed(Option<u16>),
}

impl Link {
    pub(super) async fn next(&mut self) -> Incoming {
        match self {
            Link::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match ServerMsg::decode(t.as_str()) {
                        Ok(m) => return Incoming::Frame(m),
                        Err(_) => return Incoming::Activity,
                    },
                    Some(Ok(Message::Close(c))) => {
                        return Incoming::Closed(c.map(|c| u16::from(c.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Incoming::Closed(None),
                }
            },
            Link::Sse(s) => match s.next().await {
                SseRead::Frame(m) => Incoming::Frame(m),
                SseRead::Activity => Incoming::Activity,
                SseRead::Ended => Incoming::Closed(None),
            },
        }
    }
}
