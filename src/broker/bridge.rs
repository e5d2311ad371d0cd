//! The broker's side of the bridges (`connection` blocks): what the
//! bridge runtime (`net::bridge`) asks of the broker, and what applied
//! commands tell it. Inbound messages are proposed like a client's
//! PUBLISH; the upstream broker's acknowledgements of queued messages are
//! proposed as `Command::BridgeAcked`. No I/O.

use std::rc::Rc;

use log::{info, warn};

use super::{Broker, Command, Message};
use crate::bridge::map_out;
use crate::mqtt::{topic, Publish, QoS};

/// An inbound message of a bridge committed: the upstream broker may have
/// its PUBACK (QoS 1) or PUBREC (QoS 2) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAck {
    /// The bridge's origin id (`bridge::origin_id`).
    pub origin: Rc<str>,
    pub packet_id: u16,
    pub qos: QoS,
}

/// Why an inbound message of a bridge was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeRefusal {
    NotServing,
    TopicInvalid,
    TooLarge,
}

impl Broker {
    /// Whether a local message on `topic` goes out over some bridge (it is
    /// then proposed even at QoS 0: the bridge's queue is replicated).
    pub(super) fn bridged(&self, topic_name: &str) -> bool {
        self.settings.apply.bridges.iter().any(|r| map_out(&r.lines, topic_name, QoS::AtMostOnce, false).is_some())
    }

    /// Whether `client` is a bridge's origin id.
    pub(super) fn is_bridge_origin(&self, client: &str) -> bool {
        self.settings.apply.bridges.iter().any(|r| &*r.origin == client)
    }

    /// A PUBLISH from the upstream broker of a bridge, its topic already
    /// mapped to the local one: proposed as a client's would be. A QoS 1/2
    /// message's acknowledgement comes back through `take_bridge_acks`
    /// once committed.
    pub fn bridge_publish(&mut self, origin: &Rc<str>, p: &Publish, now: u64) -> Result<(), BridgeRefusal> {
        if !self.serving {
            return Err(BridgeRefusal::NotServing);
        }
        if p.topic.is_empty()
            || !topic::valid_topic_name(&p.topic)
            || topic::level_count(&p.topic) > self.settings.limits.topic_levels_max as usize
        {
            return Err(BridgeRefusal::TopicInvalid);
        }
        if p.payload.len() > self.settings.limits.message_bytes_max as usize {
            return Err(BridgeRefusal::TooLarge);
        }
        let msg = self.message_from(origin, p, now);
        let from = p.packet_id.filter(|_| p.qos != QoS::AtMostOnce).map(|pid| (origin.clone(), pid));
        self.propose(now, Command::Publish { msg, from, offline_only: false });
        self.commit(now);
        Ok(())
    }

    /// The upstream broker acknowledged these queued messages of bridge
    /// `name`. Ignored when this node does not serve (the next leader
    /// sends them again).
    pub fn bridge_acked(&mut self, name: &str, seqs: Vec<u64>, now: u64) {
        if !self.serving || seqs.is_empty() {
            return;
        }
        self.propose(now, Command::BridgeAcked { bridge: Rc::from(name), seqs });
        self.commit(now);
    }

    /// Bridge `name` connected upstream: its retained messages are queued
    /// for it (`Command::BridgeConnected`).
    pub fn bridge_connected(&mut self, name: &str, now: u64) {
        if self.serving {
            self.propose(now, Command::BridgeConnected { bridge: Rc::from(name) });
            self.commit(now);
        }
    }

    /// A bridge's local notification: `payload` ("1" up, "0" down),
    /// retained, at QoS 1, published as the bridge (so it does not go back
    /// out over it).
    pub fn bridge_notify(&mut self, origin: &Rc<str>, topic_name: &str, payload: &[u8], now: u64) {
        if !self.serving {
            return;
        }
        let msg = Message {
            topic: Rc::from(topic_name),
            payload: Rc::from(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            props: None,
            expires_at_ms: None,
            origin: Some(origin.clone()),
        };
        self.propose(now, Command::Publish { msg, from: None, offline_only: false });
        self.commit(now);
    }

    /// Acknowledgements for the upstream brokers, and whether any bridge's
    /// queue grew, since the last call.
    pub fn take_bridge_events(&mut self) -> (bool, Vec<BridgeAck>) {
        (std::mem::take(&mut self.bridge_wake), std::mem::take(&mut self.bridge_acks))
    }

    pub(super) fn bridge_ack_effect(&mut self, origin: Rc<str>, packet_id: u16, qos: QoS) {
        if self.serving {
            self.bridge_acks.push(BridgeAck { origin, packet_id, qos });
        }
    }

    pub(super) fn bridge_queue_full(&mut self, bridge: &str, dropped: u64, now: u64) {
        self.stats.dropped_queue_full += 1;
        if now >= self.last_drop_log_ms + 1000 {
            self.last_drop_log_ms = now;
            warn!(
                "Outgoing messages are being dropped for bridge {bridge} (queue full: bridge_max_queued_messages); {dropped} dropped so far."
            );
        } else if dropped == 1 {
            info!("Bridge {bridge}: queue full, dropping messages (bridge_max_queued_messages).");
        }
    }
}
