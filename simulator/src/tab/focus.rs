//! The seed's focus timer across tabs and devices (`syncFocusTimerAcrossTabs`,
//! `broadcastFocusSessionStarted/Completed`). A user's focus session is one record,
//! `<workspace>-focus-<user>` in the notes store (last-write-wins: it has one writer at a
//! time): which session, running / paused / done, the time left at the instant `at`,
//! a change counter, and how many sessions the user completed.
//!
//! The user works in one tab: the lowest open tab of their first device drives the
//! timer (starts, pauses, resumes, completes). Every change goes to the server (the
//! user's other devices) and on the device's bus as the seed's `FOCUS_CHANGE` (its other
//! tabs, at once). Tabs show the time left computed from the record, so they never
//! drift; what differs between them is how late a change reached them
//! (`focus_skew_ms`). When the driving tab closes, the next one drives from what the
//! bus told it, and a completion is written once, by the driver.
//!
//! The canary (`focus = "count_everywhere"`) is the seed's `syncFocusMetrics` called by
//! every tab: each tab that learns a session completed counts it again.

use super::*;
use crate::scenario::FocusMode;

/// What a tab knows of its user's focus session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FocusState {
    pub session: u64,
    /// `running`, `paused` or `done`.
    pub state: String,
    /// Time left at `at` (simulated ms).
    pub left_ms: u64,
    pub at: u64,
    /// +1 per change: the newest wins.
    pub change: u64,
    pub completions: u64,
}

impl FocusState {
    pub fn of(fields: &Map<String, Value>) -> Option<FocusState> {
        let n = |k: &str| fields.get(k).and_then(Value::as_u64);
        Some(FocusState {
            session: n("session")?,
            state: fields.get("state")?.as_str()?.to_owned(),
            left_ms: n("leftMs")?,
            at: n("at")?,
            change: n("change")?,
            completions: n("completions").unwrap_or(0),
        })
    }

    fn fields(&self) -> Map<String, Value> {
        let v = json!({"session": self.session, "state": self.state, "leftMs": self.left_ms,
            "at": self.at, "change": self.change, "completions": self.completions});
        v.as_object().cloned().unwrap_or_default()
    }

    /// Time left at `now`.
    pub fn remaining(&self, now: u64) -> u64 {
        if self.state == RUNNING {
            self.left_ms.saturating_sub(now.saturating_sub(self.at))
        } else {
            self.left_ms
        }
    }
}

const RUNNING: &str = "running";
const PAUSED: &str = "paused";
const DONE: &str = "done";

/// How many recent sessions a tab remembers having counted (the set's bound).
const COUNTED_KEPT: u64 = 8;

/// The tab's focus timer: what it knows, and (when it drives) its next action.
#[derive(Debug, Default)]
pub(super) struct Focus {
    pub(super) view: Option<FocusState>,
    next_ms: Option<u64>,
    /// Sessions this tab counted (the canary counts each one it learns of).
    counted: BTreeSet<u64>,
    /// A change this tab made has not reached the server yet.
    dirty: bool,
    /// When the driver's next move falls due (a wake-up time).
    pub(super) due: Option<u64>,
    /// This tab drove at its last tick (a tab that starts driving with a session
    /// already known takes over).
    drove: bool,
}

impl Tab {
    fn focus_on(&self) -> bool {
        self.spec.workload.focus != FocusMode::Off
    }

    pub(super) fn focus_id(&self) -> String {
        format!("{}-focus-{}", self.spec.workspace, self.spec.user)
    }

    /// The user drives the timer from the lowest open tab of their first device.
    fn drives(&self) -> bool {
        let first_device = self
            .spec
            .id
            .strip_prefix(&self.spec.user)
            .is_some_and(|rest| rest.starts_with("-d0-"));
        let lowest = self
            .device
            .as_ref()
            .is_none_or(|d| d.borrow().bus.members().min() == Some(self.spec.id.as_str()));
        first_device && lowest && !self.closed
    }

    /// The replica's copy of the record changed (an event, an ACK, a snapshot).
    pub(super) fn focus_from_replica(&mut self, id: &str, now: u64) {
        if !self.focus_on() || id != self.focus_id() {
            return;
        }
        let st = self
            .s
            .replica()
            .get(EntityKind::Note, id)
            .and_then(|e| FocusState::of(&e.fields));
        if let Some(st) = st {
            self.focus_learn(st, now);
        }
    }

    /// A `FOCUS_CHANGE` from another tab of the device.
    pub(super) fn focus_from_bus(&mut self, msg: &CrossTabMessage, now: u64) {
        if let (true, Some(st)) = (
            self.focus_on(),
            msg.payload.as_object().and_then(FocusState::of),
        ) {
            self.focus_learn(st, now);
            // The sender may have left the device's tabs: this one may drive now.
            self.focus.due = self.focus_tick(now);
        }
    }

    fn focus_learn(&mut self, st: FocusState, now: u64) {
        if self
            .focus
            .view
            .as_ref()
            .is_some_and(|v| v.change >= st.change)
        {
            return; // already known (or older)
        }
        self.rec.borrow_mut().sample(
            "focus_skew_ms",
            &self.spec.group,
            now,
            now.saturating_sub(st.at),
        );
        let first_done = st.state == DONE && self.focus.counted.insert(st.session);
        // Sessions only move forward: the last few are all a tab needs to remember.
        let recent = st.session.saturating_sub(COUNTED_KEPT);
        self.focus.counted.retain(|s| *s >= recent);
        self.focus.view = Some(st.clone());
        self.focus.next_ms = None;
        if first_done && self.spec.workload.focus == FocusMode::CountEverywhere {
            // The canary: this tab records the completion it was told about. Several
            // tabs writing one record also break its convergence (`focus_divergence`,
            // which the canary tolerates).
            let counted = FocusState {
                change: st.change + 1,
                completions: st.completions + 1,
                ..st
            };
            self.focus_write(counted, now);
        }
    }

    /// Acts if the driver's next move is due; returns when the next one is.
    pub(super) fn focus_tick(&mut self, now: u64) -> Option<u64> {
        if !self.focus_on() || !self.drives() || self.user.next_op_ms.is_none() {
            self.focus.drove = false;
            return None;
        }
        if !self.focus.drove && self.focus.view.is_some() {
            self.rec
                .borrow_mut()
                .count("focus_takeovers", &self.spec.group, 1);
        }
        self.focus.drove = true;
        let view = self.focus.view.clone().unwrap_or_default();
        let drawn = match self.focus.next_ms {
            Some(t) => t,
            None => {
                let t = self.focus_draw(&view, now);
                self.focus.next_ms = Some(t);
                t
            }
        };
        let due = drawn.min(self.focus_end(&view));
        if due > now {
            return Some(due);
        }
        self.focus_act(view, now);
        self.focus.next_ms = None;
        self.focus.due = None;
        self.focus_tick(now) // every move draws a later one: this ends
    }

    /// The user's move: complete a session that ran out, pause or resume one, or start
    /// the next.
    fn focus_act(&mut self, view: FocusState, now: u64) {
        let mut st = FocusState {
            change: view.change + 1,
            at: now,
            ..view.clone()
        };
        match view.state.as_str() {
            RUNNING if view.remaining(now) == 0 => {
                st.state = DONE.into();
                st.left_ms = 0;
                st.completions += 1;
                self.focus.counted.insert(st.session);
                let (ws, user) = (self.spec.workspace.clone(), self.spec.user.clone());
                let mut rec = self.rec.borrow_mut();
                rec.focus_completed.insert((ws, user, st.session));
                rec.count("focus_sessions_completed", &self.spec.group, 1);
            }
            RUNNING => {
                st.state = PAUSED.into();
                st.left_ms = view.remaining(now);
            }
            PAUSED => st.state = RUNNING.into(),
            _ => {
                st.session += 1;
                st.state = RUNNING.into();
                st.left_ms = self.spec.workload.focus_ms;
            }
        }
        self.focus_write(st, now);
    }

    /// When the running session runs out (never, if it is not running).
    fn focus_end(&self, v: &FocusState) -> u64 {
        if v.state == RUNNING {
            v.at + v.left_ms
        } else {
            u64::MAX
        }
    }

    /// The user's next move: start a session after a break, pause one half of the
    /// time somewhere in what is left (else let it run out), resume after a while.
    fn focus_draw(&mut self, v: &FocusState, now: u64) -> u64 {
        let focus_ms = self.spec.workload.focus_ms;
        let rng = &mut self.user.rng;
        match v.state.as_str() {
            RUNNING if rng.chance(0.5) => now + rng.below(v.remaining(now).max(1)),
            RUNNING => self.focus_end(v),
            _ => now + 1 + rng.below(focus_ms / 2),
        }
    }

    /// The driver's (or the canary's) change: to the device's tabs at once, and to the
    /// server when connected. The record is state, not an op log: a change made while
    /// disconnected is not queued (a queued one could land after newer ones and turn
    /// the record back); the newest state is pushed once the stream is back
    /// ([`Tab::focus_synced`]).
    fn focus_write(&mut self, st: FocusState, now: u64) {
        self.focus.view = Some(st.clone());
        self.focus.dirty = true;
        self.focus_push(now);
        self.focus_announce(st, now);
    }

    /// The tab is closing: it tells the device's other tabs (as a page's `pagehide`
    /// handler would), so the next one takes over now rather than at its next wake.
    pub(super) fn focus_leave(&mut self, now: u64) {
        self.focus.drove = false;
        if let (true, Some(st)) = (self.focus_on(), self.focus.view.clone()) {
            self.focus_announce(st, now);
        }
    }

    /// A `FOCUS_CHANGE` with `st` to the device's other tabs.
    fn focus_announce(&mut self, st: FocusState, now: u64) {
        let msg = CrossTabMessage {
            kind: CrossTabType::FocusChange,
            payload: Value::Object(st.fields()),
            source: self.spec.id.clone(),
            timestamp: Timestamp(now),
        };
        self.post_cross_tab(msg, now);
    }

    fn focus_push(&mut self, now: u64) {
        let Some(st) = self.focus.view.clone().filter(|_| self.focus.dirty) else {
            return;
        };
        if self.s.connection().is_open() && !self.closed {
            self.focus.dirty = false;
            let id = self.focus_id();
            self.enqueue(EventType::NoteUpdated, &id, st.fields(), now, 0);
        }
    }

    /// The stream is back and caught up: a change this tab made meanwhile goes out now,
    /// unless the server already has a newer one.
    pub(super) fn focus_synced(&mut self, now: u64) {
        if !self.focus_on() {
            return;
        }
        let id = self.focus_id();
        self.focus_from_replica(&id, now);
        let server = self
            .s
            .replica()
            .get(EntityKind::Note, &id)
            .and_then(|e| FocusState::of(&e.fields));
        if server.as_ref().map(|s| s.change) >= self.focus.view.as_ref().map(|v| v.change) {
            self.focus.dirty = false;
        }
        self.focus_push(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_timer_counts_down_from_its_instant_and_a_paused_one_stands() {
        let mut st = FocusState {
            session: 1,
            state: RUNNING.into(),
            left_ms: 8_000,
            at: 1_000,
            change: 3,
            completions: 0,
        };
        assert_eq!(st.remaining(4_000), 5_000);
        assert_eq!(st.remaining(20_000), 0, "ran out: never below zero");
        assert_eq!(FocusState::of(&st.fields()), Some(st.clone()), "round trip");
        st.state = PAUSED.into();
        assert_eq!(st.remaining(20_000), 8_000);
    }
}
