//! Presence keyed by user with one meta per session. A user joins when the first
//! session connects and leaves when the last one has been gone for the grace period,
//! so a quick reconnect causes no leave/join flicker. Diffs are computed at each
//! tick as the difference between who is online and who was last announced, which
//! batches them and makes a join-then-leave inside one batch disappear.

use super::ConnId;
use rtsync_protocol::{PresenceChange, PresenceDiff, PresenceStatus, Timestamp, UserPresence};
use std::collections::BTreeMap;

#[derive(Debug)]
struct UserState {
    sessions: BTreeMap<ConnId, UserPresence>,
    /// The user's last meta, kept while in the grace period.
    last: UserPresence,
    /// When the last session went; `None` while any session is live.
    gone_since_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Presence {
    users: BTreeMap<String, UserState>,
    announced: BTreeMap<String, UserPresence>,
    /// Membership may differ from `announced`: someone joined, or someone's last session
    /// went and their grace period is running. Without it a tick has nothing to do (it
    /// runs every `tick_ms` for every workspace).
    changed: bool,
}

impl Presence {
    pub fn add(&mut self, conn: ConnId, meta: UserPresence) {
        let user = self
            .users
            .entry(meta.user_id.clone())
            .or_insert_with(|| UserState {
                sessions: BTreeMap::new(),
                last: meta.clone(),
                gone_since_ms: None,
            });
        user.gone_since_ms = None;
        user.last = meta.clone();
        user.sessions.insert(conn, meta);
        self.changed = true;
    }

    pub fn remove(&mut self, user_id: &str, conn: ConnId, now_ms: u64) {
        if let Some(u) = self.users.get_mut(user_id) {
            u.sessions.remove(&conn);
            if u.sessions.is_empty() {
                u.gone_since_ms = Some(now_ms);
                self.changed = true;
            }
        }
    }

    /// Applies a session's `USER_PRESENCE_CHANGED`; returns the updated meta.
    pub fn update(
        &mut self,
        user_id: &str,
        conn: ConnId,
        change: &PresenceChange,
        now: Timestamp,
    ) -> Option<UserPresence> {
        let u = self.users.get_mut(user_id)?;
        let meta = u.sessions.get_mut(&conn)?;
        meta.status = change.status;
        meta.last_seen = now;
        meta.current_page.clone_from(&change.current_page);
        meta.current_task.clone_from(&change.current_task);
        meta.current_project.clone_from(&change.current_project);
        if let Some(d) = &change.device {
            meta.device = d.clone();
        }
        u.last = meta.clone();
        Some(meta.clone())
    }

    /// Touches a session's `lastSeen` (any inbound frame counts as activity).
    pub fn touch(&mut self, user_id: &str, conn: ConnId, now: Timestamp) {
        if let Some(meta) = self
            .users
            .get_mut(user_id)
            .and_then(|u| u.sessions.get_mut(&conn))
        {
            meta.last_seen = now;
        }
    }

    /// Online users after `after` in id order, as many as fit in `bytes_max` encoded
    /// (at least one), and the id to continue after if any are left.
    pub fn page(
        &self,
        after: Option<&str>,
        bytes_max: usize,
    ) -> (Vec<UserPresence>, Option<String>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |a| Excluded(a.to_owned()));
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut last: Option<&String> = None;
        for (id, u) in self.users.range((from, Unbounded)) {
            let p = representative(u);
            let len = serde_json::to_vec(&p).map_or(0, |v| v.len());
            if bytes + len > bytes_max && !page.is_empty() {
                return (page, last.cloned());
            }
            bytes += len;
            last = Some(id);
            page.push(p);
        }
        (page, None)
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.users.contains_key(user_id)
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Expires users past the grace period and returns what changed since the last call.
    pub fn tick(&mut self, now_ms: u64, grace_ms: u64) -> Option<PresenceDiff> {
        if !self.changed {
            return None;
        }
        self.users.retain(|_, u| {
            u.gone_since_ms
                .is_none_or(|t| now_ms.saturating_sub(t) < grace_ms)
        });
        let mut diff = PresenceDiff::default();
        for (id, u) in &self.users {
            if !self.announced.contains_key(id) {
                diff.joins.push(representative(u));
            }
        }
        for (id, p) in &self.announced {
            if !self.users.contains_key(id) {
                let mut left = p.clone();
                left.status = PresenceStatus::Offline;
                diff.leaves.push(left);
            }
        }
        // Still changing while anyone's grace period runs.
        self.changed = self.users.values().any(|u| u.gone_since_ms.is_some());
        if diff.joins.is_empty() && diff.leaves.is_empty() {
            return None;
        }
        self.announced = self
            .users
            .iter()
            .map(|(id, u)| (id.clone(), representative(u)))
            .collect();
        Some(diff)
    }
}

/// A user's one entry in a list: its most recently seen session speaks for it.
fn representative(u: &UserState) -> UserPresence {
    u.sessions
        .values()
        .max_by_key(|m| m.last_seen)
        .unwrap_or(&u.last)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(user: &str, session: &str) -> UserPresence {
        UserPresence {
            user_id: user.into(),
            session_id: session.into(),
            last_seen: Timestamp(0),
            status: PresenceStatus::Online,
            current_page: None,
            current_task: None,
            current_project: None,
            device: Default::default(),
        }
    }

    fn ids(v: &[UserPresence]) -> Vec<&str> {
        v.iter().map(|p| p.user_id.as_str()).collect()
    }

    #[test]
    fn pages_cover_everyone_once_in_id_order_within_the_byte_bound() {
        let mut p = Presence::default();
        for i in 0..50 {
            p.add(i, meta(&format!("u{i:02}"), "s"));
        }
        let one = serde_json::to_vec(&meta("u00", "s")).unwrap().len();
        let (mut all, mut after) = p.page(None, one * 7);
        assert_eq!(all.len(), 7);
        let mut pages = 1;
        while let Some(a) = after {
            let (page, next) = p.page(Some(&a), one * 7);
            assert!(!page.is_empty() && page.len() <= 7);
            all.extend(page);
            after = next;
            pages += 1;
        }
        assert_eq!(pages, 8);
        let want: Vec<String> = (0..50).map(|i| format!("u{i:02}")).collect();
        assert_eq!(
            ids(&all),
            want.iter().map(String::as_str).collect::<Vec<_>>()
        );
        // A bound smaller than one entry still moves: one per page.
        assert_eq!(p.page(None, 1).0.len(), 1);
    }

    #[test]
    fn second_tab_is_not_a_second_join() {
        let mut p = Presence::default();
        p.add(1, meta("u1", "s1"));
        p.add(2, meta("u1", "s2"));
        let d = p.tick(0, 1000).unwrap();
        assert_eq!(ids(&d.joins), vec!["u1"]);
        p.remove("u1", 1, 10);
        assert_eq!(p.tick(5000, 1000), None);
    }

    #[test]
    fn leaves_after_grace_and_a_quick_reconnect_causes_no_leave() {
        let mut p = Presence::default();
        p.add(1, meta("u1", "s1"));
        p.tick(0, 1000);
        p.remove("u1", 1, 100);
        assert_eq!(p.tick(600, 1000), None); // in grace
        p.add(3, meta("u1", "s1"));
        assert_eq!(p.tick(2000, 1000), None); // reconnected: no leave, no join
        p.remove("u1", 3, 2000);
        assert_eq!(p.tick(2999, 1000), None);
        let d = p.tick(3000, 1000).unwrap();
        assert_eq!(ids(&d.leaves), vec!["u1"]);
        assert_eq!(d.leaves[0].status, PresenceStatus::Offline);
        assert_eq!(p.users(), 0);
    }
}
