//! The outbound queue of one connection: bounded in messages and in bytes. Fan-out
//! never waits on a slow reader: a push that does not fit marks the connection a slow
//! consumer, and its writer closes it (1013) at once. The client resumes from its
//! lastSeq, so nothing is lost — and nobody else slows down.

use crate::core::Frame;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

/// Why and how a connection is to be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
    /// Send what is already queued first (the errors that explain a policy close);
    /// false for a slow consumer, which is not fed further.
    pub flush: bool,
}

/// Shared between the connection's sender side (the hub) and its writer.
#[derive(Debug, Default)]
struct Control {
    close: Mutex<Option<CloseReason>>,
    notify: Notify,
    /// A close was asked for (sticky, unlike `close`, which the writer takes), and
    /// the wake-up of whoever waits in `Outbound::closed`.
    closing: std::sync::atomic::AtomicBool,
    closing_notify: Notify,
    queued_bytes: AtomicUsize,
    /// The core has more replay batches for this connection: the writer pulls them
    /// through its `Refill` whenever its queue is empty.
    replaying: std::sync::atomic::AtomicBool,
}

/// Pulls a connection's next replay batch (frames, and whether more will follow).
pub type Refill = Box<dyn FnMut() -> (Vec<Frame>, bool) + Send + Sync>;

/// The hub's handle: push frames, ask for a close.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<(Frame, Instant)>,
    ctl: Arc<Control>,
    bytes_max: usize,
}

/// The queue was full: the connection is being closed as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Outbound {
    /// Queues a frame unless the backlog is already at the byte bound or the message
    /// bound. The bound is on what waits, so one frame larger than it (a large presence
    /// list, a large entity) still goes to a reader that keeps up.
    pub fn push(&self, frame: Frame) -> Result<(), Overflow> {
        let len = frame.len();
        let before = self.ctl.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if (before > 0 && before + len > self.bytes_max)
            || self.tx.try_send((frame, Instant::now())).is_err()
        {
            self.ctl.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Overflow);
        }
        Ok(())
    }

    /// Asks the writer to close with `reason`; the first reason asked for wins.
    pub fn close(&self, reason: CloseReason) {
        let mut c = self.ctl.close.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(reason);
        }
        drop(c);
        self.ctl.closing.store(true, Ordering::Relaxed);
        self.ctl.notify.notify_one();
        self.ctl.closing_notify.notify_waiters();
    }

    /// Resolves once a close was asked for: for a watcher beside the writer (hyper
    /// stops polling an SSE body while its socket is blocked, so the body itself never
    /// learns of a slow-consumer close).
    pub async fn closed(&self) {
        loop {
            let n = self.ctl.closing_notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.ctl.closing.load(Ordering::Relaxed) {
                return;
            }
            n.await;
        }
    }

    /// More replay batches are waiting in the core (see `Refill`).
    pub fn set_replaying(&self) {
        self.ctl.replaying.store(true, Ordering::Relaxed);
        self.ctl.notify.notify_one();
    }

    /// The code of the close asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        let c = self.ctl.close.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref().map(|r| r.code)
    }

    pub fn queued_bytes(&self) -> usize {
        self.ctl.queued_bytes.load(Ordering::Relaxed)
    }
}

/// The writer's end.
pub struct OutboundRx {
    rx: mpsc::Receiver<(Frame, Instant)>,
    ctl: Arc<Control>,
    shutdown: watch::Receiver<bool>,
    refill: Option<Refill>,
    /// A pulled replay batch not yet handed out.
    refilled: std::collections::VecDeque<Frame>,
    /// Group commit: the workspace's synced watermark, and a frame taken that must
    /// wait for it (`Frame::durable_at`).
    durable: Option<std::sync::Arc<super::durable::Watermark>>,
    waiting: Option<(Frame, std::time::Duration)>,
}

impl std::fmt::Debug for OutboundRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRx")
            .field("ctl", &self.ctl)
            .field("refilled", &self.refilled.len())
            .finish_non_exhaustive()
    }
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Next {
    /// Send this frame; it waited `queued` in the queue.
    Frame(Frame, std::time::Duration),
    Close(CloseReason),
}

fn going_away(reason: &'static str) -> CloseReason {
    CloseReason {
        code: rtsync_protocol::close::GOING_AWAY,
        reason,
        flush: false,
    }
}

pub fn channel(
    messages_max: usize,
    bytes_max: usize,
    shutdown: watch::Receiver<bool>,
) -> (Outbound, OutboundRx) {
    let (tx, rx) = mpsc::channel(messages_max.max(1));
    let ctl = Arc::new(Control::default());
    (
        Outbound {
            tx,
            ctl: ctl.clone(),
            bytes_max,
        },
        OutboundRx {
            rx,
            ctl,
            shutdown,
            refill: None,
            refilled: std::collections::VecDeque::new(),
            durable: None,
            waiting: None,
        },
    )
}

impl OutboundRx {
    /// Where replay batches come from when the core has more (`Outbound::set_replaying`).
    pub fn set_refill(&mut self, refill: Refill) {
        self.refill = Some(refill);
    }

    /// A replay frame: one pulled earlier, or the next batch when the queue is empty and
    /// the core has more. Pulled only on an empty queue, so a replay is paced by the
    /// reader and never counts against the outbound bound.
    fn take_replay(&mut self) -> Option<Frame> {
        if self.refilled.is_empty() && self.ctl.replaying.load(Ordering::Relaxed) {
            let refill = self.refill.as_mut()?;
            let (frames, more) = refill();
            self.ctl.replaying.store(more, Ordering::Relaxed);
            self.refilled.extend(frames);
        }
        self.refilled.pop_front()
    }

    fn take_close(&self) -> Option<CloseReason> {
        self.ctl
            .close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Group commit: frames carrying `durable_at` wait for the workspace's log to be
    /// synced that far.
    pub fn set_durable(&mut self, synced: std::sync::Arc<super::durable::Watermark>) {
        self.durable = Some(synced);
    }

    /// Whether `frame` may leave now (group commit).
    fn is_durable(&self, frame: &Frame) -> bool {
        frame.durable_at == 0
            || self
                .durable
                .as_ref()
                .is_none_or(|d| d.get() >= frame.durable_at)
    }

    /// A frame already queued, without waiting; `None` when nothing is queued, a close
    /// is pending, or the next frame waits for a sync. Lets the writer put a burst into
    /// one socket write.
    pub fn try_next(&mut self) -> Option<(Frame, std::time::Duration)> {
        if self.take_close().is_some() || *self.shutdown.borrow() {
            return None;
        }
        let (frame, waited) = self.take_queued()?;
        if self.is_durable(&frame) {
            return Some((frame, waited));
        }
        self.waiting = Some((frame, waited));
        None
    }

    fn take_queued(&mut self) -> Option<(Frame, std::time::Duration)> {
        if let Some(w) = self.waiting.take() {
            return Some(w);
        }
        let (frame, at) = self.rx.try_recv().ok()?;
        self.ctl
            .queued_bytes
            .fetch_sub(frame.len(), Ordering::Relaxed);
        Some((frame, at.elapsed()))
    }

    /// Resolves once a close has been asked for (or the server shuts down).
    pub async fn close_requested(&self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.take_close().is_some() || *shutdown.borrow() {
                return;
            }
            tokio::select! {
                biased; // deterministic under simulation
                _ = self.ctl.notify.notified() => {}
                r = shutdown.changed() => if r.is_err() { return },
            }
        }
    }

    /// The next frame, or the close to perform. A close, once asked for, wins over
    /// queued frames unless it asked for a flush.
    pub async fn next(&mut self) -> Next {
        loop {
            let next = self.next_queued().await;
            let Next::Frame(frame, waited) = next else {
                return next;
            };
            if self.is_durable(&frame) {
                return Next::Frame(frame, waited);
            }
            let Some(synced) = self.durable.clone() else {
                return Next::Frame(frame, waited);
            };
            // Group commit: hold it until its sync. Kept in `waiting`, not in this
            // future, so a writer that drops `next()` for another branch of its select
            // loses nothing (cancel safety); a close or a shutdown meanwhile wins.
            let gate = frame.durable_at;
            self.waiting = Some((frame, waited));
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                biased;
                r = synced.wait(gate) => if r.is_err() {
                    self.waiting = None;
                    return Next::Close(CloseReason {
                        code: rtsync_protocol::close::INTERNAL,
                        reason: "workspace storage failed; reconnect",
                        flush: false,
                    });
                },
                // A close asked for meanwhile (next_queued sees it first).
                _ = self.ctl.notify.notified() => {}
                r = shutdown.changed() => if r.is_err() {
                    return Next::Close(going_away("server stopped"));
                },
            }
        }
    }

    async fn next_queued(&mut self) -> Next {
        loop {
            if let Some(c) = self.take_close() {
                if c.flush
                    && let Some((frame, waited)) = self.take_queued()
                {
                    return Next::Frame(frame, waited);
                }
                return Next::Close(c);
            }
            if *self.shutdown.borrow() {
                return Next::Close(going_away("server shutting down"));
            }
            // A frame already waiting needs no wake-up machinery (the common case
            // under load: a select per frame was a visible share of a large run).
            if let Some((frame, waited)) = self.take_queued() {
                return Next::Frame(frame, waited);
            }
            if let Some(frame) = self.take_replay() {
                return Next::Frame(frame, std::time::Duration::ZERO);
            }
            tokio::select! {
                biased;
                _ = self.ctl.notify.notified() => continue,
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        // The server is gone without a shutdown signal: close as going away.
                        return Next::Close(going_away("server stopped"));
                    }
                    continue;
                }
                item = self.rx.recv() => match item {
                    Some((frame, at)) => {
                        self.ctl.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
                        return Next::Frame(frame, at.elapsed());
                    }
                    None => return Next::Close(CloseReason { code: rtsync_protocol::close::NORMAL, reason: "closed", flush: false }),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::new("x".repeat(n), None)
    }

    #[tokio::test]
    async fn bounds_messages_and_bytes_and_frees_on_read() {
        let (_stx, srx) = watch::channel(false);
        let (out, mut rx) = channel(2, 10, srx);
        assert!(out.push(frame(4)).is_ok());
        assert!(out.push(frame(4)).is_ok());
        assert_eq!(out.push(frame(1)), Err(Overflow), "message bound");
        assert!(matches!(rx.next().await, Next::Frame(f, _) if f.len() == 4));
        assert_eq!(out.push(frame(7)), Err(Overflow), "byte bound: 4 + 7 > 10");
        assert!(out.push(frame(6)).is_ok());
        assert_eq!(out.queued_bytes(), 10);
        assert!(matches!(rx.next().await, Next::Frame(f, _) if f.len() == 4));
        assert!(matches!(rx.next().await, Next::Frame(f, _) if f.len() == 6));
        assert!(
            out.push(frame(25)).is_ok(),
            "one frame larger than the bound goes to a reader that keeps up"
        );
        assert_eq!(
            out.push(frame(1)),
            Err(Overflow),
            "but nothing waits behind it"
        );
    }

    #[tokio::test]
    async fn a_close_wins_over_queued_frames_and_shutdown_closes_1001() {
        let (stx, srx) = watch::channel(false);
        let (out, mut rx) = channel(8, 1000, srx.clone());
        out.push(frame(1)).unwrap();
        out.close(CloseReason {
            code: 1013,
            reason: "slow consumer",
            flush: false,
        });
        out.close(CloseReason {
            code: 1000,
            reason: "later reasons lose",
            flush: false,
        });
        assert!(matches!(
            rx.next().await,
            Next::Close(CloseReason { code: 1013, .. })
        ));
        let (out3, mut rx3) = channel(8, 1000, srx.clone());
        out3.push(frame(2)).unwrap();
        out3.close(CloseReason {
            code: 1008,
            reason: "policy",
            flush: true,
        });
        assert!(
            matches!(rx3.next().await, Next::Frame(f, _) if f.len() == 2),
            "flushed first"
        );
        assert!(matches!(
            rx3.next().await,
            Next::Close(CloseReason { code: 1008, .. })
        ));
        let (_out2, mut rx2) = channel(8, 1000, srx);
        stx.send(true).unwrap();
        assert!(matches!(
            rx2.next().await,
            Next::Close(CloseReason { code: 1001, .. })
        ));
    }

    #[tokio::test]
    async fn try_next_drains_what_is_queued_but_never_past_a_close() {
        let (_stx, srx) = watch::channel(false);
        let (out, mut rx) = channel(8, 1000, srx);
        assert!(rx.try_next().is_none(), "nothing queued: no wait, no frame");
        out.push(frame(1)).unwrap();
        out.push(frame(2)).unwrap();
        out.push(frame(3)).unwrap();
        assert!(matches!(rx.next().await, Next::Frame(f, _) if f.len() == 1));
        assert!(matches!(rx.try_next(), Some((f, _)) if f.len() == 2));
        assert_eq!(out.queued_bytes(), 3, "a drained frame frees its bytes");
        out.close(CloseReason {
            code: 1013,
            reason: "slow consumer",
            flush: false,
        });
        assert!(rx.try_next().is_none(), "a pending close stops the burst");
        assert!(matches!(
            rx.next().await,
            Next::Close(CloseReason { code: 1013, .. })
        ));
    }
}
