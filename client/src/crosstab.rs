//! Cross-tab sync for the tabs of one device: a bus with BroadcastChannel semantics.
//!
//! [`Bus`] (BroadcastChannel): a message reaches every *other* tab that is on the
//! channel when it is posted (never the sender, never a tab that joins later), in order
//! per sender. The delay of each delivery is the caller's model (measured in Chromium:
//! p50 0.4 ms, p99 2.1–3.3 ms — docs/performance.md, "Simulator fidelity"); the bus
//! keeps FIFO per sender whatever the draws. The simulator gives each device one bus: a
//! tab posts a `STATE_UPDATE` for each change it applies and the receivers record the
//! delay (`cross_tab_ms`). Every tab still holds its own connection to the server and
//! takes the change from it; the bus carries no state a tab depends on.
//!
//! A leader-tab mode (one connection per device, the other tabs on the bus) is future work.

use rtsync_protocol::CrossTabMessage;
use std::collections::{BTreeMap, BTreeSet};

/// Counters for reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BusStats {
    /// Messages posted (each counted once, whatever the number of receivers).
    pub posted: u64,
    /// Deliveries handed out by `poll` (one per receiver).
    pub delivered: u64,
    /// Deliveries cancelled because the receiving tab closed first (the channel's semantics).
    pub dropped_closed: u64,
    /// Posts refused because the bus held its most in-flight messages.
    pub refused_full: u64,
}

/// A post did not fit: `inflight_max` messages are already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cross-tab bus full ({0} messages in flight)")]
pub struct BusFull(pub usize);

/// One device's BroadcastChannel: members, and deliveries in flight ordered by due time.
#[derive(Debug)]
pub struct Bus {
    members: BTreeSet<String>,
    /// (due_ms, posting order) → (receiver, message)
    inflight: BTreeMap<(u64, u64), (String, CrossTabMessage)>,
    /// Last due time per (sender, receiver): later posts are never delivered earlier.
    last_due: BTreeMap<(String, String), u64>,
    order: u64,
    inflight_max: usize,
    /// Counters for reports.
    pub stats: BusStats,
}

impl Bus {
    /// An empty bus holding at most `inflight_max` deliveries in flight (at least 1).
    pub fn new(inflight_max: usize) -> Self {
        Bus {
            members: BTreeSet::new(),
            inflight: BTreeMap::new(),
            last_due: BTreeMap::new(),
            order: 0,
            inflight_max: inflight_max.max(1),
            stats: BusStats::default(),
        }
    }

    /// `tab` opens the channel: it receives what is posted from now on.
    pub fn join(&mut self, tab: &str) {
        self.members.insert(tab.to_owned());
    }

    /// `tab` closes: deliveries still in flight to it are cancelled (`dropped_closed`).
    pub fn leave(&mut self, tab: &str) {
        self.members.remove(tab);
        let before = self.inflight.len();
        self.inflight.retain(|_, (to, _)| to != tab);
        self.stats.dropped_closed += (before - self.inflight.len()) as u64;
        self.last_due
            .retain(|(from, to), _| from != tab && to != tab);
    }

    /// The tabs on the channel, by id.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(String::as_str)
    }

    /// Posts `msg` from `from` to every other member; `delay_ms(to)` draws each delay.
    /// Returns the number of receivers.
    pub fn post(
        &mut self,
        from: &str,
        msg: CrossTabMessage,
        now_ms: u64,
        mut delay_ms: impl FnMut(&str) -> u64,
    ) -> Result<usize, BusFull> {
        let receivers: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.as_str() != from)
            .cloned()
            .collect();
        if self.inflight.len() + receivers.len() > self.inflight_max {
            self.stats.refused_full += 1;
            return Err(BusFull(self.inflight_max));
        }
        self.stats.posted += 1;
        for to in &receivers {
            let pair = (from.to_owned(), to.clone());
            let due = (now_ms + delay_ms(to)).max(self.last_due.get(&pair).copied().unwrap_or(0));
            self.last_due.insert(pair, due);
            self.order += 1;
            self.inflight
                .insert((due, self.order), (to.clone(), msg.clone()));
        }
        Ok(receivers.len())
    }

    /// The next delivery due at `now_ms`: (receiving tab, message).
    pub fn poll(&mut self, now_ms: u64) -> Option<(String, CrossTabMessage)> {
        let (&key, _) = self.inflight.first_key_value()?;
        if key.0 > now_ms {
            return None;
        }
        let (to, msg) = self.inflight.remove(&key)?;
        self.stats.delivered += 1;
        Some((to, msg))
    }

    /// When (ms) the next delivery is due; `None`: nothing in flight.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.inflight.first_key_value().map(|((due, _), _)| *due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtsync_protocol::Timestamp;
    use rtsync_protocol::sync::CrossTabType;

    fn msg(n: i32) -> CrossTabMessage {
        CrossTabMessage {
            kind: CrossTabType::StateUpdate,
            payload: serde_json::json!(n),
            source: "a".into(),
            timestamp: Timestamp(0),
        }
    }

    fn drain(b: &mut Bus, now: u64) -> Vec<(String, i64)> {
        std::iter::from_fn(|| b.poll(now))
            .map(|(to, m)| (to, m.payload.as_i64().unwrap()))
            .collect()
    }

    #[test]
    fn delivers_to_other_members_only_in_order_per_sender() {
        let mut b = Bus::new(100);
        for t in ["a", "b", "c"] {
            b.join(t);
        }
        let mut delays = [5u64, 1, 0, 0].into_iter().cycle();
        b.post("a", msg(1), 0, |_| delays.next().unwrap()).unwrap(); // b: 5, c: 1
        b.post("a", msg(2), 0, |_| delays.next().unwrap()).unwrap(); // b: 0 → held to 5, c: 0 → 1
        let got = drain(&mut b, 10);
        let to_b: Vec<_> = got
            .iter()
            .filter(|(t, _)| t == "b")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(to_b, vec![1, 2], "FIFO per sender despite the delay draws");
        assert!(
            got.iter().all(|(t, _)| t != "a"),
            "never back to the sender"
        );
    }

    #[test]
    fn late_joiners_get_nothing_earlier_and_leavers_get_nothing_more() {
        let mut b = Bus::new(100);
        b.join("a");
        b.join("b");
        b.post("a", msg(1), 0, |_| 10).unwrap();
        b.join("c");
        b.leave("b");
        assert_eq!(drain(&mut b, 100), vec![]);
        assert_eq!(b.stats.dropped_closed, 1);
        b.post("a", msg(2), 100, |_| 0).unwrap();
        assert_eq!(drain(&mut b, 100), vec![("c".into(), 2)]);
    }

    #[test]
    fn the_bus_is_bounded() {
        let mut b = Bus::new(1);
        b.join("a");
        b.join("b");
        b.join("c");
        assert_eq!(b.post("a", msg(1), 0, |_| 0), Err(BusFull(1)));
        assert_eq!(b.stats.refused_full, 1);
    }
}
