//! The bridges' outbound queues, part of the durable state: a local
//! message that matches a bridge's `out`/`both` topic is queued for it when
//! its `Publish` command applies (on every node, so a publisher's PUBACK
//! means a majority holds it), and leaves the queue when a
//! `BridgeAcked` command says the upstream broker acknowledged it. The
//! connection to the upstream broker is runtime (`net::bridge`); it reads
//! this queue and proposes the `BridgeAcked` commands.

use std::collections::VecDeque;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::{ApplyLimits, Effect, State};
use crate::bridge::{map_out, OutRoute};
use crate::broker::message::Message;

/// One message for the upstream broker: its topic there (remapped) and
/// the QoS it goes with are already those of the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeMsg {
    /// Numbers the bridge's messages in queue order (never reused).
    pub seq: u64,
    pub msg: Message,
}

/// A bridge's queue, oldest first: messages not yet sent and those sent
/// but not yet acknowledged upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeQueue {
    pub next_seq: u64,
    pub items: VecDeque<BridgeMsg>,
    /// Messages dropped because the queue was full
    /// (`bridge_max_queued_messages`), since the bridge's first message.
    pub dropped: u64,
}

impl BridgeQueue {
    pub fn bytes(&self) -> u64 {
        self.items.iter().fold(0, |a, m| a.saturating_add(m.msg.cost_bytes()))
    }

    /// The queued messages after `seq`, at most `n`, oldest first.
    pub fn after(&self, seq: Option<u64>, n: usize) -> impl Iterator<Item = &BridgeMsg> {
        let start = match seq {
            None => 0,
            Some(s) => self.items.partition_point(|m| m.seq <= s),
        };
        self.items.range(start..).take(n)
    }
}

impl State {
    /// The queue of bridge `name` (None: nothing was ever queued for it).
    pub fn bridge_queue(&self, name: &str) -> Option<&BridgeQueue> {
        self.bridges.get(name)
    }

    /// Queue a local message for each bridge it goes out over. Returns
    /// whether any bridge took it (it counts as matched for PUBACK).
    pub(super) fn bridge_out(&mut self, msg: &Message, lim: &ApplyLimits, out: &mut Vec<Effect>) -> bool {
        let mut any = false;
        for r in lim.bridges.iter() {
            if msg.origin.as_deref() == Some(&*r.origin) {
                continue; // it came in over this bridge
            }
            any |= self.bridge_enqueue(r, msg, lim, out);
        }
        any
    }

    /// `msg` into the queue of bridge `r` if it goes out over it (bounded).
    fn bridge_enqueue(&mut self, r: &OutRoute, msg: &Message, lim: &ApplyLimits, out: &mut Vec<Effect>) -> bool {
        let Some((topic, qos)) = map_out(&r.lines, &msg.topic, msg.qos, lim.upgrade_outgoing_qos) else {
            return false;
        };
        let q = self.bridges.entry(r.name.clone()).or_default();
        if q.items.len() >= r.queued_messages_max as usize {
            q.dropped += 1;
            out.push(Effect::BridgeQueueFull { bridge: r.name.clone(), dropped: q.dropped });
            return true;
        }
        let m = Message { topic: Rc::from(topic), qos, ..msg.clone() };
        self.stored_bytes = self.stored_bytes.saturating_add(m.cost_bytes());
        q.items.push_back(BridgeMsg { seq: q.next_seq, msg: m });
        q.next_seq += 1;
        out.push(Effect::BridgeQueued { bridge: r.name.clone() });
        true
    }

    /// Bridge `name` connected: the retained messages that go out over it
    /// join its queue, in topic order (Mosquitto sends them on connect).
    pub(super) fn bridge_retained(&mut self, name: &str, now: u64, lim: &ApplyLimits, out: &mut Vec<Effect>) {
        let Some(r) = lim.bridges.iter().find(|r| &*r.name == name) else { return };
        let retained: Vec<Message> = self.retained.values().filter(|m| !m.expired(now)).cloned().collect();
        for m in retained {
            self.bridge_enqueue(r, &m, lim, out);
        }
    }

    /// The upstream broker acknowledged these messages of bridge `name`
    /// (or they were sent at QoS 0): they leave the queue.
    pub(super) fn bridge_acked(&mut self, name: &str, seqs: &[u64]) {
        let Some(q) = self.bridges.get_mut(name) else { return };
        let mut seqs = seqs.to_vec();
        seqs.sort_unstable();
        let mut freed = 0u64;
        // Acknowledgements come mostly in queue order: take the front
        // without looking at the rest of a long queue.
        while let Some(front) = q.items.front() {
            if seqs.binary_search(&front.seq).is_err() {
                break;
            }
            freed = freed.saturating_add(front.msg.cost_bytes());
            q.items.pop_front();
        }
        let rest_first = q.items.front().map_or(u64::MAX, |m| m.seq);
        if seqs.last().is_none_or(|&s| s < rest_first) {
            self.stored_bytes = self.stored_bytes.saturating_sub(freed);
            return;
        }
        q.items.retain(|m| {
            let gone = seqs.binary_search(&m.seq).is_ok();
            if gone {
                freed = freed.saturating_add(m.msg.cost_bytes());
            }
            !gone
        });
        self.stored_bytes = self.stored_bytes.saturating_sub(freed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::{Direction, OutRoute, TopicLine};
    use crate::broker::state::{Command, Entry};
    use crate::mqtt::QoS;

    fn lim(max: u32) -> ApplyLimits {
        let line = TopicLine::new("#", Direction::Both, QoS::AtLeastOnce, Some("plant/"), Some("site/")).unwrap();
        ApplyLimits {
            queued_messages_max: 100,
            queued_bytes_max: 1 << 20,
            retained_messages_max: 100,
            queue_qos0_messages: false,
            upgrade_outgoing_qos: false,
            bridges: Rc::from(vec![OutRoute {
                name: Rc::from("up"),
                origin: Rc::from("$bridge/up"),
                lines: vec![line],
                queued_messages_max: max,
            }]),
        }
    }

    fn publish(topic: &str, qos: QoS, origin: &str) -> Entry {
        let msg = Message {
            topic: Rc::from(topic),
            payload: Rc::from(&b"x"[..]),
            qos,
            retain: false,
            props: None,
            expires_at_ms: None,
            origin: Some(Rc::from(origin)),
        };
        Entry { now_ms: 1, cmd: Command::Publish { msg, from: Some((Rc::from(origin), 7)), offline_only: false } }
    }

    #[test]
    fn queued_remapped_bounded_and_acked() {
        let lim = lim(2);
        let mut st = State::default();
        let mut out = Vec::new();
        st.apply(&publish("plant/a", QoS::ExactlyOnce, "c"), &lim, None, &mut out);
        // Matched by the bridge alone: PUBREC 0, and PUBACK would be 0 too.
        assert!(out.contains(&Effect::BridgeQueued { bridge: Rc::from("up") }), "{out:?}");
        st.apply(&publish("other", QoS::AtLeastOnce, "c"), &lim, None, &mut out);
        out.clear();
        st.apply(&publish("plant/b", QoS::AtLeastOnce, "c"), &lim, None, &mut out);
        assert!(out.contains(&Effect::PubAck { client: Rc::from("c"), packet_id: 7, code: 0 }), "{out:?}");
        st.apply(&publish("plant/c", QoS::AtLeastOnce, "c"), &lim, None, &mut out);
        // From the bridge itself: not sent back.
        st.apply(&publish("plant/d", QoS::AtLeastOnce, "$bridge/up"), &lim, None, &mut out);
        let q = st.bridge_queue("up").unwrap();
        let topics: Vec<(&str, QoS, u64)> = q.items.iter().map(|m| (&*m.msg.topic, m.msg.qos, m.seq)).collect();
        assert_eq!(topics, [("site/a", QoS::AtLeastOnce, 0), ("site/b", QoS::AtLeastOnce, 1)]);
        assert_eq!(q.dropped, 1);
        assert_eq!(q.after(Some(0), 10).map(|m| m.seq).collect::<Vec<_>>(), [1]);
        let before = st.stored_bytes();
        assert!(before > 0);
        let acked = Entry { now_ms: 2, cmd: Command::BridgeAcked { bridge: Rc::from("up"), seqs: vec![1, 0, 9] } };
        st.apply(&acked, &lim, None, &mut out);
        assert!(st.bridge_queue("up").unwrap().items.is_empty());
        assert_eq!(st.stored_bytes(), 0);
        // The snapshot keeps the queue and its numbering.
        st.apply(&publish("plant/e", QoS::AtLeastOnce, "c"), &lim, None, &mut out);
        let back = State::restore(&st.snapshot()).unwrap();
        assert_eq!(back.bridge_queue("up"), st.bridge_queue("up"));
        assert_eq!(back.bridge_queue("up").unwrap().items[0].seq, 2);
        assert_eq!(back.stored_bytes(), st.stored_bytes());
        // An acknowledgement out of queue order (QoS 2 behind QoS 1).
        st.apply(&publish("plant/f", QoS::AtLeastOnce, "c"), &lim, None, &mut out);
        let acked = Entry { now_ms: 3, cmd: Command::BridgeAcked { bridge: Rc::from("up"), seqs: vec![3] } };
        st.apply(&acked, &lim, None, &mut out);
        let left: Vec<u64> = st.bridge_queue("up").unwrap().items.iter().map(|m| m.seq).collect();
        assert_eq!(left, [2]);
        assert_eq!(st.stored_bytes(), back.stored_bytes());
        // On connect, the retained messages of its out topics join the queue.
        let mut kept = match publish("plant/kept", QoS::AtLeastOnce, "c").cmd {
            Command::Publish { msg, .. } => msg,
            _ => unreachable!(),
        };
        kept.retain = true;
        let retain = Entry { now_ms: 4, cmd: Command::Publish { msg: kept, from: None, offline_only: false } };
        st.apply(&retain, &lim, None, &mut out);
        let acked = Entry { now_ms: 5, cmd: Command::BridgeAcked { bridge: Rc::from("up"), seqs: vec![2, 4] } };
        st.apply(&acked, &lim, None, &mut out);
        assert!(st.bridge_queue("up").unwrap().items.is_empty());
        let connected = Entry { now_ms: 6, cmd: Command::BridgeConnected { bridge: Rc::from("up") } };
        st.apply(&connected, &lim, None, &mut out);
        let q = st.bridge_queue("up").unwrap();
        let topics: Vec<(&str, bool)> = q.items.iter().map(|m| (&*m.msg.topic, m.msg.retain)).collect();
        assert_eq!(topics, [("site/kept", true)]);
    }
}
