//! Retained messages replayed on SUBSCRIBE at QoS 0, paced by the client's
//! reading: a cursor per subscription over the retained store hands out
//! messages while the connection's unwritten output is under
//! `out_buffer_bytes_max`, and resumes as the runtime reports bytes written
//! (`Broker::written`). So a client that subscribes to `#` over 100,000
//! retained messages gets all of them, as fast as it reads, and midge
//! holds at most the output bound for it meanwhile. Nothing durable
//! changes here: the replay at QoS 1/2 is a durable cursor that feeds the
//! session's window as the client acknowledges
//! (`state/retained_replay.rs`).
//!
//! A retained message that changes during the replay is sent as it is
//! when the cursor reaches it (a client may then see a new value live and
//! again as retained; never an older one after a newer).

use std::ops::Bound;
use std::rc::Rc;

use super::state::Delivery;
use super::{Broker, ConnId, Phase};
use crate::auth::acl::Access;
use crate::mqtt::{topic, QoS};

/// Retained topics looked at per scan: a filter that matches few of many
/// retained messages does not hold the event loop long.
const SCAN_MAX: usize = 256;

/// One subscription's replay in progress.
pub(super) struct Replay {
    filter: String,
    sub_qos: QoS,
    sub_ids: Vec<u32>,
    /// The last topic handed out or passed over: the next scan starts
    /// after it.
    after: Option<Rc<str>>,
}

/// The part of a filter before its first wildcard: every topic it matches
/// starts with it (`a/b/#` -> `a/b/`, `#` -> ``).
fn literal_prefix(filter: &str) -> &str {
    filter.find(['+', '#']).map_or(filter, |i| &filter[..i])
}

impl Broker {
    /// Begin replaying the retained messages that `filter` matches and go
    /// at QoS 0 (`Effect::RetainedReplay`) to `client`'s connection.
    pub(super) fn start_replay(&mut self, client: &Rc<str>, filter: String, sub_qos: QoS, sub_ids: Vec<u32>, now: u64) {
        let Some(conn) = self.conn_of(client) else { return };
        self.replays.entry(conn).or_default().push_back(Replay { filter, sub_qos, sub_ids, after: None });
        self.pump_replays(conn, now);
    }

    /// Hand out replayed messages to `conn` until its output is at the
    /// bound or its replays are done.
    pub(super) fn pump_replays(&mut self, conn: ConnId, now: u64) {
        let out_max = self.settings.limits.out_buffer_bytes_max;
        loop {
            let client = match self.conns.get(&conn) {
                Some(c) if c.phase == Phase::Connected => match &c.client {
                    Some(client) => client.clone(),
                    None => return,
                },
                _ => {
                    self.replays.remove(&conn);
                    return;
                }
            };
            if self.out_buffered(conn) >= out_max as usize {
                return;
            }
            let Some(r) = self.replays.get(&conn).and_then(|q| q.front()) else {
                self.replays.remove(&conn);
                return;
            };
            let prefix = literal_prefix(&r.filter);
            let start = match &r.after {
                Some(t) => Bound::Excluded(&**t),
                None => Bound::Included(prefix),
            };
            let mut batch = Vec::new();
            let mut scanned: Option<Rc<str>> = None;
            let mut done = true;
            for (i, (t, m)) in self.state.retained().range::<str, _>((start, Bound::Unbounded)).enumerate() {
                if !t.starts_with(prefix) {
                    break;
                }
                if i == SCAN_MAX {
                    done = false;
                    break;
                }
                scanned = Some(t.clone());
                if m.qos.min(r.sub_qos) == QoS::AtMostOnce && !m.expired(now) && topic::matches(&r.filter, t) {
                    batch.push(m.clone());
                }
            }
            let sub_ids = r.sub_ids.clone();
            let mut last = None;
            let mut paused = false;
            for m in batch {
                let t = m.topic.clone();
                if self.conn_allowed(conn, &client, &t, Access::Read) {
                    // Retained messages sent on subscribe carry retain = 1
                    // [MQTT-3.3.1-8].
                    let d = Delivery { msg: m, qos: QoS::AtMostOnce, retain: true, sub_ids: sub_ids.clone() };
                    if !self.try_deliver(&client, None, &d, false, now, false) {
                        paused = true;
                        break;
                    }
                }
                last = Some(t);
            }
            let Some(q) = self.replays.get_mut(&conn) else { return };
            let Some(r) = q.front_mut() else { return };
            if paused {
                if last.is_some() {
                    r.after = last;
                }
                return;
            }
            if done {
                q.pop_front();
            } else {
                r.after = scanned;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(super::literal_prefix("a/b/#"), "a/b/");
        assert_eq!(super::literal_prefix("#"), "");
        assert_eq!(super::literal_prefix("+/x"), "");
        assert_eq!(super::literal_prefix("a/+/c"), "a/");
        assert_eq!(super::literal_prefix("a/b"), "a/b");
    }
}
