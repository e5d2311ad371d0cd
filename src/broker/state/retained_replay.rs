//! Retained messages replayed at QoS 1/2 on SUBSCRIBE, resumable: a
//! cursor per subscription over the retained store hands messages to the
//! session's free window slots, and goes on as the client's
//! acknowledgements free more. So a client that subscribes at QoS 1 to `#`
//! over 100,000 retained messages gets all of them, as fast as it
//! acknowledges, and midge holds at most its window for it meanwhile. (The
//! QoS 0 part of a replay is the serving broker's, paced by output bytes:
//! `broker/replay.rs`.)
//!
//! The replay never takes room in the session's queue: there, bounded by
//! max_queued_*, live messages wait, and they go first (a replay that kept
//! the queue full would have them dropped for as long as it lasts).
//!
//! The cursors are durable state, applied on every node and carried by the
//! snapshot (since format 4), as the window they feed is: a replay
//! survives a failover and a reconnect of a persistent session. Nothing
//! here reads a clock or does I/O; retained topics are visited in their
//! (BTreeMap) order, so every node hands out the same messages.
//!
//! A retained message that changes during the replay is sent as it is
//! when the cursor reaches it. The ACL is checked as each message is
//! handed out, with the rules in force then.

use std::ops::Bound;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::{read_allowed, AclCheck, ApplyLimits, Delivery, Effect, Session, State};
use crate::broker::message::Message;
use crate::mqtt::{topic, QoS};

/// Retained topics looked at per pull while the session has messages in
/// flight (their acknowledgements pull again): a filter that matches few
/// of many retained messages does not hold one apply long. With nothing
/// in flight no acknowledgement would come to resume a pause, so the scan
/// goes on to the next message that fits or to the end (as a SUBSCRIBE
/// before this cursor did).
const SCAN_MAX: usize = 256;

/// One subscription's replay of the retained messages that go at QoS 1/2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedCursor {
    /// The topic filter as subscribed (never a shared one: shared
    /// subscriptions get no retained messages).
    pub filter: String,
    pub sub_qos: QoS,
    pub sub_ids: Vec<u32>,
    /// The last retained topic handed out or passed over: the replay goes
    /// on after it.
    pub after: Option<Rc<str>>,
}

/// The part of a filter before its first wildcard: every topic it matches
/// starts with it (`a/b/#` -> `a/b/`, `#` -> ``).
fn literal_prefix(filter: &str) -> &str {
    filter.find(['+', '#']).map_or(filter, |i| &filter[..i])
}

/// Whether a QoS 1/2 delivery goes straight into a free window slot of an
/// online session (nothing queued before it, nothing to resend).
pub(super) fn window_free(s: &Session) -> bool {
    s.online && s.queue.is_empty() && s.unsent.is_empty() && s.inflight.len() < s.window as usize
}

impl State {
    /// The retained replays at QoS 1/2 in progress, by client id.
    pub fn retained_replays(&self) -> &std::collections::BTreeMap<Rc<str>, Vec<RetainedCursor>> {
        &self.retained_replays
    }

    /// Begin replaying to `client` the retained messages that `c.filter`
    /// matches and go at QoS 1/2, after its other replays.
    pub(super) fn start_retained_replay(
        &mut self,
        client: &Rc<str>,
        c: RetainedCursor,
        now: u64,
        lim: &ApplyLimits,
        acl: AclCheck,
        out: &mut Vec<Effect>,
    ) {
        self.retained_replays.entry(client.clone()).or_default().push(c);
        self.pull_retained(client, now, lim, acl, out);
    }

    /// A SUBSCRIBE or UNSUBSCRIBE of `filter` ends its replay.
    pub(super) fn stop_retained_replay(&mut self, client: &str, filter: &str) {
        let Some(list) = self.retained_replays.get_mut(client) else { return };
        list.retain(|c| c.filter != filter);
        if list.is_empty() {
            self.retained_replays.remove(client);
        }
    }

    /// Hand `client`'s replays on to its free window slots (`window_free`:
    /// nothing queued, nothing to resend). Call after the window was
    /// filled from the queue. Only for an online session: an offline one
    /// goes on when it reconnects.
    pub(super) fn pull_retained(
        &mut self,
        client: &Rc<str>,
        now: u64,
        lim: &ApplyLimits,
        acl: AclCheck,
        out: &mut Vec<Effect>,
    ) {
        if self.retained_replays.is_empty() {
            // Nearly always: no session lookup per acknowledgement.
            return;
        }
        let Some(s) = self.sessions.get(client) else {
            self.retained_replays.remove(client);
            return;
        };
        if !window_free(s) || !self.retained_replays.contains_key(client) {
            return;
        }
        let username = s.username.clone();
        let Some(mut list) = self.retained_replays.remove(client) else { return };
        let mut scanned = 0usize;
        while let Some(c) = list.first_mut() {
            let Some(s) = self.sessions.get(client) else { break };
            if !window_free(s) {
                break; // no room: an acknowledgement resumes it
            }
            let bounded = !s.inflight.is_empty();
            let prefix = literal_prefix(&c.filter);
            let exact = prefix.len() == c.filter.len();
            // Look for the next message to hand out.
            let mut next: Option<Message> = None;
            let mut done = true;
            let start = match &c.after {
                Some(t) => Bound::Excluded(&**t),
                None => Bound::Included(prefix),
            };
            for (t, m) in self.retained.range::<str, _>((start, Bound::Unbounded)) {
                if !t.starts_with(prefix) || (exact && **t != *c.filter) {
                    break;
                }
                if bounded && scanned >= SCAN_MAX {
                    done = false;
                    break;
                }
                scanned += 1;
                // What goes at QoS 0 is the serving broker's replay.
                let wanted = !m.expired(now) && m.qos.min(c.sub_qos) != QoS::AtMostOnce;
                if wanted && topic::matches(&c.filter, t) && read_allowed(acl, client, username.as_deref(), t) {
                    next = Some(m.clone());
                    done = false;
                    break;
                }
                c.after = Some(t.clone());
            }
            let Some(m) = next else {
                if done {
                    list.remove(0);
                    continue;
                }
                break; // the scan bound: an acknowledgement resumes it
            };
            c.after = Some(m.topic.clone());
            // Retained messages sent on subscribe carry retain = 1
            // [MQTT-3.3.1-8].
            let d = Delivery { qos: m.qos.min(c.sub_qos), retain: true, sub_ids: c.sub_ids.clone(), msg: m };
            self.enqueue(client, d, now, lim, out);
        }
        if !list.is_empty() {
            self.retained_replays.insert(client.clone(), list);
        }
    }
}

#[cfg(test)]
mod tests;
