//! Idempotent, ordered mutations: per (user, clientId), the last applied n and a
//! bounded window of recent answers (docs/protocol.md, Mutations).

use super::Frame;
use std::collections::{BTreeMap, VecDeque};

/// What to do with an incoming op.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// The next op (or the first the server has seen from that client): apply it.
    New,
    /// Already applied: send this answer again, change nothing.
    Duplicate(Frame),
    /// Already applied long ago; its answer is no longer kept.
    Stale { last_n: u64 },
    /// A gap: the client must replay from `expected`.
    Gap { expected: u64 },
}

#[derive(Debug)]
struct ClientOps {
    last_n: u64,
    answers: VecDeque<(u64, Frame)>,
    touched: u64,
    /// What this client costs the table: its key and its kept answers.
    bytes: usize,
}

/// What one client's entry costs besides its answers (map nodes, counters), roughly.
const CLIENT_OVERHEAD_BYTES: usize = 96;

type Key = (String, String);

#[derive(Debug)]
pub struct OpTable {
    clients: BTreeMap<Key, ClientOps>,
    /// touched → client, to evict the least recently used client past the bound.
    by_touch: BTreeMap<u64, Key>,
    clock: u64,
    answers_per_client: usize,
    clients_max: usize,
    /// The bytes every kept answer and client key may take together: without it, one
    /// user minting client ids over `POST /api/events` grows the table by ~1 KB each up
    /// to `clients_max` × `answers_per_client` answers.
    bytes_max: usize,
    bytes: usize,
    /// Clients forgotten because of a bound (reported in /metrics, never silent).
    pub evicted: u64,
}

impl OpTable {
    pub fn new(answers_per_client: usize, clients_max: usize, bytes_max: usize) -> Self {
        OpTable {
            clients: BTreeMap::new(),
            by_touch: BTreeMap::new(),
            clock: 0,
            answers_per_client: answers_per_client.max(1),
            clients_max: clients_max.max(1),
            bytes_max,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Bytes the kept answers and client keys take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Every kept answer — user, client, n, answer — least recently used client first,
    /// each client's in order: recorded again in this order, they rebuild this table.
    pub fn kept(&self) -> impl Iterator<Item = (&str, &str, u64, &Frame)> {
        self.by_touch.values().flat_map(|key| {
            self.clients[key]
                .answers
                .iter()
                .map(|(n, f)| (key.0.as_str(), key.1.as_str(), *n, f))
        })
    }

    pub fn check(&self, user: &str, client: &str, n: u64) -> Verdict {
        let Some(c) = self.clients.get(&(user.to_owned(), client.to_owned())) else {
            // Unknown client (new, evicted, or the server restarted): its first op
            // sets the baseline, so a client that outlives a server bounce goes on.
            return Verdict::New;
        };
        if n == c.last_n + 1 {
            Verdict::New
        } else if n > c.last_n {
            Verdict::Gap {
                expected: c.last_n + 1,
            }
        } else {
            match c.answers.iter().find(|(k, _)| *k == n) {
                Some((_, f)) => Verdict::Duplicate(f.clone()),
                None => Verdict::Stale { last_n: c.last_n },
            }
        }
    }

    /// Records the answer to op n (after `check` said `New`).
    pub fn record(&mut self, user: &str, client: &str, n: u64, answer: Frame) {
        self.clock += 1;
        let key = (user.to_owned(), client.to_owned());
        let key_bytes = key.0.len() + key.1.len() + CLIENT_OVERHEAD_BYTES;
        let c = self.clients.entry(key.clone()).or_insert_with(|| {
            self.bytes += key_bytes;
            ClientOps {
                last_n: 0,
                answers: VecDeque::new(),
                touched: 0,
                bytes: key_bytes,
            }
        });
        self.by_touch.remove(&c.touched);
        c.touched = self.clock;
        self.by_touch.insert(self.clock, key);
        c.last_n = n;
        c.bytes += answer.len();
        self.bytes += answer.len();
        c.answers.push_back((n, answer));
        while c.answers.len() > self.answers_per_client {
            if let Some((_, old)) = c.answers.pop_front() {
                c.bytes -= old.len();
                self.bytes -= old.len();
            }
        }
        // The least recently used clients go first; the one just answered stays.
        while self.clients.len() > self.clients_max
            || (self.bytes > self.bytes_max && self.clients.len() > 1)
        {
            let Some((_, oldest)) = self.by_touch.pop_first() else {
                break;
            };
            if let Some(gone) = self.clients.remove(&oldest) {
                self.bytes -= gone.bytes;
            }
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Frame {
        Frame::new(s.to_owned(), None)
    }

    #[test]
    fn orders_dedups_and_detects_gaps() {
        let mut t = OpTable::new(2, 10, usize::MAX);
        assert_eq!(t.check("u", "c", 5), Verdict::New); // first op sets the baseline
        t.record("u", "c", 5, f("a5"));
        assert_eq!(t.check("u", "c", 6), Verdict::New);
        t.record("u", "c", 6, f("a6"));
        t.record("u", "c", 7, f("a7"));
        assert_eq!(t.check("u", "c", 7), Verdict::Duplicate(f("a7")));
        assert_eq!(t.check("u", "c", 6), Verdict::Duplicate(f("a6")));
        assert_eq!(t.check("u", "c", 5), Verdict::Stale { last_n: 7 });
        assert_eq!(t.check("u", "c", 9), Verdict::Gap { expected: 8 });
        // The same clientId under another user is another client.
        assert_eq!(t.check("v", "c", 9), Verdict::New);
    }

    #[test]
    fn the_byte_bound_evicts_the_least_recently_used_clients() {
        // Each answer is 100 bytes; a key ("u", "cN") costs CLIENT_OVERHEAD_BYTES + 3.
        let per_client = 100 + CLIENT_OVERHEAD_BYTES + 3;
        let mut t = OpTable::new(4, 1000, 3 * per_client);
        let a = Frame::new("x".repeat(100), None);
        for c in ["c1", "c2", "c3", "c4", "c5"] {
            t.record("u", c, 1, a.clone());
            assert!(t.bytes() <= 3 * per_client, "{}", t.bytes());
        }
        assert_eq!((t.len(), t.evicted), (3, 2));
        assert_eq!(t.check("u", "c1", 2), Verdict::New, "c1 was forgotten");
        assert_eq!(t.check("u", "c5", 1), Verdict::Duplicate(a.clone()));
        // Trimming a client's own window gives its bytes back.
        for n in 2..=10 {
            t.record("u", "c5", n, a.clone());
        }
        assert!(t.bytes() <= 3 * per_client);
        assert_eq!(t.check("u", "c5", 10), Verdict::Duplicate(a));
    }

    #[test]
    fn evicts_the_least_recently_used_client_and_counts_it() {
        let mut t = OpTable::new(2, 2, usize::MAX);
        t.record("u", "a", 1, f("a"));
        t.record("u", "b", 1, f("b"));
        t.record("u", "a", 2, f("a2"));
        t.record("u", "c", 1, f("c"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.evicted, 1);
        assert_eq!(t.check("u", "a", 3), Verdict::New);
        assert_eq!(t.check("u", "a", 4), Verdict::Gap { expected: 3 });
        assert_eq!(t.check("u", "b", 3), Verdict::New); // forgotten: baseline again
    }
}
