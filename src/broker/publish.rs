//! PUBLISH in and out: an inbound PUBLISH is checked (topic alias, ACL,
//! Receive Maximum, limits) and proposed as a `Command::Publish`; a
//! delivery effect becomes a PUBLISH on the subscriber's connection
//! (topic alias, packet size, congestion).

use std::rc::Rc;

use log::{debug, info, warn};

use super::{dynsec, AckKind, Broker, Command, ConnId, Delivery, Message, MessageProps, Phase};
use crate::auth::acl::Access;
use crate::mqtt::codec::encoded_len;
use crate::mqtt::{reason, topic, Packet, PubResp, Publish, QoS};

/// Why a QoS 0 delivery was dropped.
#[derive(Clone, Copy)]
enum Dropped {
    /// The connection holds `client_out_buffer_bytes` unwritten.
    OutBuffer,
    /// Stored messages and unwritten output reach `memory_limit`.
    Memory,
}

impl Broker {
    pub(super) fn inbound_done(&mut self, client: &str) {
        if let Some(id) = self.conn_of(client) {
            self.inbound_done_on(id);
        }
    }

    /// `inbound_done` on the client's connection `id`.
    pub(super) fn inbound_done_on(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.inbound_unacked = c.inbound_unacked.saturating_sub(1);
        }
    }

    pub(super) fn send_to_client(&mut self, client: &str, p: Packet) {
        if let Some(id) = self.conn_of(client) {
            self.send_to_conn(id, p);
        }
    }

    /// `send_to_client` to the client's connection `id`.
    pub(super) fn send_to_conn(&mut self, id: ConnId, p: Packet) {
        if self.conns.get(&id).is_some_and(|c| c.phase == Phase::Connected) {
            self.stats.messages_sent += 1;
            self.push_send(id, p);
        }
    }

    /// Turn a delivery into a PUBLISH for the client's connection.
    pub(super) fn deliver(&mut self, client: &Rc<str>, packet_id: Option<u16>, d: &Delivery, dup: bool, now: u64) {
        self.try_deliver(client, packet_id, d, dup, now, true);
    }

    /// `deliver`; with `drop_when_full` false, a QoS 0 message that does
    /// not fit the output bound (or memory_limit) is neither sent nor
    /// counted as dropped, and the result is false (a paced replay tries
    /// it again later). True when the delivery is dealt with.
    pub(super) fn try_deliver(
        &mut self,
        client: &Rc<str>,
        packet_id: Option<u16>,
        d: &Delivery,
        dup: bool,
        now: u64,
        drop_when_full: bool,
    ) -> bool {
        let Some(id) = self.conn_of(client) else { return true };
        let Some(c) = self.conns.get_mut(&id) else { return true };
        if c.phase != Phase::Connected {
            return true;
        }
        // QoS 0 beyond the output bound, or beyond memory_limit, is
        // dropped (QoS 1/2 wait in the session's queue instead: their
        // in-flight window bounds them). Checked here too so that a flood
        // to a stalled client costs little.
        let out_max = self.settings.limits.out_buffer_bytes_max;
        if packet_id.is_none() && c.out_bytes >= out_max {
            return self.drop_qos0(client, Dropped::OutBuffer, drop_when_full, now);
        }
        let mut new_alias = None;
        // A mounted client sees its topics without the mount point.
        let mount = self.conn_options.get(&id).and_then(|o| o.mount_point.as_ref());
        let topic = match mount.and_then(|m| d.msg.topic.strip_prefix(&**m)) {
            Some(t) => Rc::from(t),
            None => d.msg.topic.clone(),
        };
        let mut p = Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id,
            payload: d.msg.payload.clone(),
            properties: Default::default(),
        };
        if c.version.is_v5() {
            if let Some(props) = &d.msg.props {
                props.write_into(&mut p.properties);
            }
            // (Written only when there is something: writing makes the
            // properties' box.)
            if let Some(secs) = d.msg.remaining_expiry_secs(now) {
                p.properties.message_expiry_interval = Some(secs);
            }
            if !d.sub_ids.is_empty() {
                p.properties.subscription_identifiers.clone_from(&d.sub_ids);
            }
            if c.alias_out_max > 0 {
                if let Some(a) = c.alias_out.get(&d.msg.topic) {
                    p.properties.topic_alias = Some(*a);
                    p.topic = Rc::from("");
                } else if c.alias_out.len() < c.alias_out_max as usize {
                    // Recorded below, only once the PUBLISH really goes out.
                    new_alias = Some(c.alias_out.len() as u16 + 1);
                    p.properties.topic_alias = new_alias;
                }
            }
        }
        let packet = Packet::Publish(p);
        let len = encoded_len(&packet, c.version);
        if len > c.packet_bytes_out_max as usize {
            // Too large for the client: discarded as if sent [MQTT-3.1.2-25].
            debug!("Dropping message on {} for client {}: larger than its Maximum Packet Size.", d.msg.topic, client);
            if let Some(pid) = packet_id {
                self.propose(now, Command::Acked { client: client.clone(), acks: vec![(pid, AckKind::Discard)] });
            }
            return true;
        }
        // One message always fits an empty buffer, however large.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if packet_id.is_none() {
            if c.out_bytes > 0 && c.out_bytes.saturating_add(len) > out_max {
                return self.drop_qos0(client, Dropped::OutBuffer, drop_when_full, now);
            }
            if self.memory_used() + u64::from(len) > self.settings.limits.memory_bytes_max {
                return self.drop_qos0(client, Dropped::Memory, drop_when_full, now);
            }
        }
        let Some(c) = self.conns.get_mut(&id) else { return true };
        if let Some(a) = new_alias {
            c.alias_out.insert(d.msg.topic.clone(), a);
        }
        self.stats.messages_sent += 1;
        self.stats.publish_sent[d.qos as usize] += 1;
        self.push_sized(id, packet, len as usize);
        true
    }

    /// Bytes that `memory_limit` bounds: stored messages (retained,
    /// queued, in flight) and every connection's unwritten output.
    pub(super) fn memory_used(&self) -> u64 {
        self.state.stored_bytes() + self.out_bytes_total
    }

    /// A QoS 0 message to `client` does not fit, and why: dropped and
    /// counted if `drop`, else left to the caller. Returns `drop`.
    fn drop_qos0(&mut self, client: &str, why: Dropped, drop: bool, now: u64) -> bool {
        if !drop {
            return false;
        }
        self.stats.dropped_qos0 += 1;
        // As Mosquitto does, but at most once a second per broker.
        if now >= self.last_drop_log_ms + 1000 {
            self.last_drop_log_ms = now;
            let why = match why {
                Dropped::OutBuffer => "QoS 0 over client_out_buffer_bytes: it reads too slowly",
                Dropped::Memory => "QoS 0 over memory_limit: the broker holds too much",
            };
            warn!(
                "Outgoing messages are being dropped for client {} ({}); {} dropped so far.",
                client, why, self.stats.dropped_qos0
            );
        }
        true
    }

    pub(super) fn on_publish(&mut self, conn: ConnId, client: Rc<str>, mut p: Publish, now: u64) {
        self.stats.publish_received[p.qos as usize] += 1;
        let (alias_max, max_qos) = (self.topic_alias_max_for(conn), self.max_qos_for(conn));
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let v5 = c.version.is_v5();
        if !p.properties.subscription_identifiers.is_empty() {
            // Only the server sends Subscription Identifiers [MQTT-3.3.4-6].
            // (Mosquitto 2.0.11 accepts them and passes them on.)
            warn!("Client {} sent a PUBLISH with a Subscription Identifier; disconnecting.", client);
            self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            return;
        }
        // Topic Alias (v5 §3.3.2.3.4).
        if let Some(a) = p.properties.topic_alias {
            if a == 0 || a > alias_max {
                warn!("Client {} used topic alias {} outside 1..={}; disconnecting.", client, a, alias_max);
                self.close(conn, Some(reason::TOPIC_ALIAS_INVALID), now);
                return;
            }
            if p.topic.is_empty() {
                match c.alias_in.get(&a) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        warn!("Client {} used unknown topic alias {}; disconnecting.", client, a);
                        self.close(conn, Some(reason::PROTOCOL_ERROR), now);
                        return;
                    }
                }
            } else {
                c.alias_in.insert(a, p.topic.clone());
            }
        }
        if p.topic.is_empty() || !topic::valid_topic_name(&p.topic) {
            warn!("Client {} published to an invalid topic; disconnecting.", client);
            self.close(conn, Some(reason::TOPIC_NAME_INVALID), now);
            return;
        }
        if let Some(m) = self.conn_options.get(&conn).and_then(|o| o.mount_point.as_ref()) {
            p.topic = Rc::from(format!("{m}{}", p.topic));
        }
        if topic::level_count(&p.topic) > self.settings.limits.topic_levels_max as usize {
            warn!(
                "Client {} published to a topic with more than {} levels; disconnecting.",
                client, self.settings.limits.topic_levels_max
            );
            self.close(conn, Some(reason::TOPIC_NAME_INVALID), now);
            return;
        }
        if p.qos as u8 > max_qos {
            warn!("Client {} published at QoS {} above max_qos {}; disconnecting.", client, p.qos as u8, max_qos);
            self.close(conn, Some(reason::QOS_NOT_SUPPORTED), now);
            return;
        }
        if p.retain && !self.settings.retain_available {
            warn!("Client {} published a retained message but retain_available is false; disconnecting.", client);
            self.close(conn, Some(reason::RETAIN_NOT_SUPPORTED), now);
            return;
        }
        let pid = p.packet_id.unwrap_or(0);
        if p.qos != QoS::AtMostOnce {
            let known_qos2 = p.qos == QoS::ExactlyOnce
                && self.state.sessions().get(&client).is_some_and(|s| s.inbound_qos2.contains(&pid));
            if !known_qos2 {
                // Receive Maximum is a v5 promise [MQTT-3.3.4-7]; 3.1.1 has
                // none, so only the 16-bit packet-id space bounds it.
                let max = if v5 { self.settings.limits.inflight_messages_max } else { u16::MAX };
                match c.inbound_unacked.checked_add(1) {
                    Some(n) if n <= max => c.inbound_unacked = n,
                    _ => {
                        warn!("Client {} exceeded the Receive Maximum of {}; disconnecting.", client, max);
                        self.close(conn, Some(reason::RECEIVE_MAXIMUM_EXCEEDED), now);
                        return;
                    }
                }
            }
        }
        // Checks that refuse this one message but keep the connection.
        let refusal = if p.payload.len() > self.settings.limits.message_bytes_max as usize {
            // 0x97: PUBACK/PUBREC may not carry 0x95 (v5 §3.4.2.1).
            Some((reason::QUOTA_EXCEEDED, "payload over message_size_limit", false))
        } else if v5 && p.properties.payload_format_indicator == Some(1) && std::str::from_utf8(&p.payload).is_err() {
            Some((reason::PAYLOAD_FORMAT_INVALID, "payload is not the UTF-8 its format indicator claims", false))
        } else if !self.conn_allowed(conn, &client, &p.topic, Access::Write) {
            Some((reason::NOT_AUTHORIZED, "not authorised by the ACL", false))
        } else if p.topic.starts_with(dynsec::TOPIC_PREFIX) {
            if &*p.topic == dynsec::REQUEST_TOPIC {
                // Consumed like a request to Mosquitto's plugin: acknowledged
                // as accepted, answered, never routed.
                self.ack_unrouted(conn, &client, p.qos, pid, 0);
                self.on_dynsec_request(conn, &client, &p, now);
                return;
            }
            // 0x90: a well-formed topic name this server does not accept.
            Some((reason::TOPIC_NAME_INVALID, "reserved for dynamic security", false))
        } else if (p.qos != QoS::AtMostOnce || p.retain) && self.store_full {
            Some((reason::QUOTA_EXCEEDED, "the data store is full", true))
        } else if p.qos != QoS::AtMostOnce || p.retain {
            let cost = p.payload.len() as u64 + p.topic.len() as u64 + 64;
            (self.memory_used() + cost > self.settings.limits.memory_bytes_max).then_some((
                reason::QUOTA_EXCEEDED,
                "memory_limit reached",
                true,
            ))
        } else {
            None
        };
        if let Some((code, why, retry_later)) = refusal {
            info!("Denied PUBLISH from {} to {} ({}).", client, p.topic, why);
            if retry_later && !v5 && p.qos != QoS::AtMostOnce {
                // 3.1.1 has no negative acknowledgement; not acknowledging
                // keeps the message with the client, which resends it.
                self.close(conn, None, now);
                return;
            }
            // v5 gets the reason in its PUBACK/PUBREC; 3.1.1 is acknowledged
            // and the message discarded, as Mosquitto does.
            let code = if v5 { code } else { 0 };
            self.ack_unrouted(conn, &client, p.qos, pid, code);
            return;
        }
        let msg = self.message_from(&client, &p, now);
        match p.qos {
            QoS::AtMostOnce if !p.retain && !self.settings.apply.upgrade_outgoing_qos && !self.bridged(&msg.topic) => {
                // QoS 0 to online subscribers does not wait for a commit.
                let acl = self.read_acl();
                let targets = self.state.route(&msg, self.settings.apply.upgrade_outgoing_qos, acl.check());
                let mut offline = false;
                for (target, d) in targets {
                    if self.state.sessions().get(&target).is_some_and(|s| s.online) {
                        self.deliver(&target, None, &d, false, now);
                    } else {
                        offline = true;
                    }
                }
                if offline && self.settings.apply.queue_qos0_messages {
                    self.propose(now, Command::Publish { msg, from: None, offline_only: true });
                }
            }
            QoS::AtMostOnce => self.propose(now, Command::Publish { msg, from: None, offline_only: false }),
            _ => self.propose(now, Command::Publish { msg, from: Some((client, pid)), offline_only: false }),
        }
    }

    /// Acknowledges a PUBLISH that is not routed, with `code`.
    pub(super) fn ack_unrouted(&mut self, conn: ConnId, client: &str, qos: QoS, pid: u16, code: u8) {
        let ack = PubResp { packet_id: pid, code, properties: Default::default() };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.inbound_done(client);
                self.push_send(conn, Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                // Completes the flow normally, without routing; a later
                // PUBREL gets its PUBCOMP.
                self.inbound_done(client);
                self.push_send(conn, Packet::PubRec(ack));
            }
        }
    }

    /// The stored form of a PUBLISH.
    pub(super) fn message_from(&self, client: &Rc<str>, p: &Publish, now: u64) -> Message {
        Message {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            props: MessageProps::from_properties(&p.properties),
            expires_at_ms: p.properties.message_expiry_interval.map(|s| now + s as u64 * 1000),
            origin: Some(client.clone()),
        }
    }
}
