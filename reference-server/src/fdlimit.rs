//! The open-file limit against the connection limits. Every connection is a file
//! descriptor: with the common soft limit of 1 024 and `connections_max` 20 000, the
//! process runs out long before its own limit answers 503, and then `accept` fails for
//! everyone, `/healthz` included. At start the soft limit is raised as far as the
//! limits need (never past the hard limit) and, if it is still below, a warning says
//! which knob to lower.

/// Descriptors kept free beyond the connection limits: the listener, the runtime's
/// epoll and eventfds, logs, and kept-alive HTTP connections between requests.
pub const RESERVE: u64 = 64;

/// What `ensure` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before this process raised it.
    pub was: u64,
}

/// Raises the soft open-file limit towards `need` (at most the hard limit); returns
/// the limits, or `None` where they cannot be read.
pub fn raise(need: u64) -> Option<FdLimit> {
    let (was, hard) = rlimit::Resource::NOFILE.get().ok()?;
    let soft = rlimit::increase_nofile_limit(need).unwrap_or(was);
    Some(FdLimit { soft, hard, was })
}

/// The descriptors the limits allow in use at once.
pub fn needed(connections_max: usize, handshakes_max: usize) -> u64 {
    connections_max as u64 + handshakes_max as u64 + RESERVE
}

/// A warning when `limit` cannot hold what the connection limits allow.
pub fn check(limit: FdLimit, connections_max: usize, handshakes_max: usize) -> Option<String> {
    let need = needed(connections_max, handshakes_max);
    (limit.soft < need).then(|| {
        format!(
            "open-file limit {} (hard {}) is below connections_max {connections_max} + \
             handshakes_max {handshakes_max} + {RESERVE}: past {} descriptors accept fails \
             for every client, /healthz included; lower --connections-max to {} or raise \
             `ulimit -n`",
            limit.soft,
            limit.hard,
            limit.soft,
            limit.soft.saturating_sub(handshakes_max as u64 + RESERVE),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_the_limits_exceed_the_descriptors() {
        let l = FdLimit {
            soft: 1024,
            hard: 4096,
            was: 1024,
        };
        let w = check(l, 20_000, 512).expect("20 000 connections cannot fit in 1 024");
        assert!(w.contains("--connections-max to 448"), "{w}");
        assert_eq!(check(l, 448, 512), None);
        assert!(check(l, 449, 512).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn raising_never_lowers_the_soft_limit() {
        let l = raise(16).expect("unix has rlimits");
        assert!(l.soft >= l.was && l.soft <= l.hard, "{l:?}");
    }
}
