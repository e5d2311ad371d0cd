//! The durable broker state and the only code that changes it.
//!
//! Everything that must survive a crash or a failover lives in `State`:
//! sessions with their subscriptions, queued and in-flight messages,
//! inbound QoS 2 packet ids and wills, and the retained messages. It changes
//! only through `State::apply(Command)`, which is deterministic: the same
//! commands in the same order give the same state on every node. Commands
//! carry the leader's clock (`now_ms`); nothing here reads a clock, does
//! I/O or draws a random number.
//!
//! `apply` returns `Effect`s: what the node that serves clients must send
//! (acknowledgements, deliveries). Followers apply the same commands and
//! ignore the effects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::lazy::{Empty, Lazy};
use super::message::Message;
use super::tree::{SubEntry, TopicTree};
use crate::mqtt::{topic, QoS};

/// Format version of `Command` and of the state snapshot. Bump on any
/// change to their serialised shape.
pub const STATE_FORMAT_VERSION: u16 = 1;

/// Session Expiry Interval meaning "never expires" (MQTT 5 §3.1.2.11.2).
pub const EXPIRY_NEVER: u32 = u32::MAX;

/// A message as it waits for, or sits in, a delivery slot of one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub msg: Message,
    /// Granted QoS: min(published, subscribed).
    pub qos: QoS,
    /// Retain flag as sent to this subscriber.
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outbound {
    /// PUBLISH sent (or to be sent), awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Delivery),
    /// PUBREL sent, awaiting PUBCOMP.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillMsg {
    pub msg: Message,
    pub delay_secs: u32,
}

/// One per client session, online or not: keep it at most 88 bytes (a
/// 96-byte heap block; see the test). Serialised field by field as
/// `SessionRepr` (the snapshot format).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: Option<Rc<str>>,
    pub expiry_secs: u32,
    pub online: bool,
    pub disconnected_at_ms: u64,
    /// Outbound window: the client's Receive Maximum capped by ours.
    pub window: u16,
    /// filter as subscribed (with any `$share/group/` prefix) -> entry.
    /// (The collections are `Lazy`: one pointer while empty, as they are
    /// in most sessions.)
    pub subs: Lazy<BTreeMap<String, SubEntry>>,
    pub queue: Lazy<Queue>,
    pub inflight: Lazy<BTreeMap<u16, Outbound>>,
    pub last_pid: u16,
    /// Inbound QoS 2 packet ids: PUBREC sent, PUBREL not yet received.
    pub inbound_qos2: Lazy<BTreeSet<u16>>,
    /// In-flight packet ids not yet resent on the current connection: after
    /// a reconnect they go out again (DUP) only as the client's Receive
    /// Maximum allows [MQTT-4.9.0-2].
    pub unsent: Lazy<BTreeSet<u16>>,
    /// Will of the current (or last) connection (boxed: most sessions have
    /// none, and every session pays for the `None`'s size).
    pub will: Option<Box<SessionWill>>,
}

/// Messages waiting for a delivery slot, oldest first, and what they cost
/// (`Message::cost_bytes`) together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Queue {
    pub items: VecDeque<Delivery>,
    pub bytes: u64,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> std::collections::vec_deque::Iter<'_, Delivery> {
        self.items.iter()
    }
}

impl Empty for Queue {
    const EMPTY: &'static Self = &Queue { items: VecDeque::new(), bytes: 0 };
    fn is_empty_collection(&self) -> bool {
        self.items.is_empty() && self.bytes == 0
    }
}

impl Lazy<Queue> {
    /// Append `d`, which costs `cost` bytes.
    fn push_back(&mut self, d: Delivery, cost: u64) {
        self.change(|q| {
            q.bytes += cost;
            q.items.push_back(d);
        })
    }

    /// Take the oldest message out, and its cost off.
    fn pop_front(&mut self) -> Option<Delivery> {
        self.shrink(None, |q| {
            let d = q.items.pop_front()?;
            q.bytes = q.bytes.saturating_sub(d.msg.cost_bytes());
            Some(d)
        })
    }

    /// Set the cost to that of the messages.
    fn recount(&mut self) {
        let bytes = self.iter().fold(0u64, |a, d| a.saturating_add(d.msg.cost_bytes()));
        if bytes != self.bytes {
            self.change(|q| q.bytes = bytes);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWill {
    pub msg: WillMsg,
    /// When it is due, once the connection ended.
    pub due_ms: Option<u64>,
}

/// The serialised form of a `Session`, unchanged since format version 1:
/// there the queue's cost and the will's due time are fields of their own.
/// (A due time without a will is dropped: `apply` no longer leaves one
/// behind, and one did nothing but wait for the next Tick to clear it.)
#[derive(Serialize, Deserialize)]
#[serde(rename = "Session")]
struct SessionRepr<U, S, Q, I, P, W> {
    username: U,
    expiry_secs: u32,
    online: bool,
    disconnected_at_ms: u64,
    window: u16,
    subs: S,
    queue: Q,
    queued_bytes: u64,
    inflight: I,
    last_pid: u16,
    inbound_qos2: P,
    unsent: P,
    will: W,
    will_due_ms: Option<u64>,
}

impl Serialize for Session {
    fn serialize<Ser: serde::Serializer>(&self, ser: Ser) -> Result<Ser::Ok, Ser::Error> {
        SessionRepr {
            username: &self.username,
            expiry_secs: self.expiry_secs,
            online: self.online,
            disconnected_at_ms: self.disconnected_at_ms,
            window: self.window,
            subs: &self.subs,
            queue: &self.queue.items,
            queued_bytes: self.queue.bytes,
            inflight: &self.inflight,
            last_pid: self.last_pid,
            inbound_qos2: &self.inbound_qos2,
            unsent: &self.unsent,
            will: self.will.as_ref().map(|w| &w.msg),
            will_due_ms: self.will.as_ref().and_then(|w| w.due_ms),
        }
        .serialize(ser)
    }
}

type SessionIn = SessionRepr<
    Option<Rc<str>>,
    Lazy<BTreeMap<String, SubEntry>>,
    VecDeque<Delivery>,
    Lazy<BTreeMap<u16, Outbound>>,
    Lazy<BTreeSet<u16>>,
    Option<WillMsg>,
>;

impl<'de> Deserialize<'de> for Session {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Session, D::Error> {
        let r = SessionIn::deserialize(de)?;
        Ok(Session {
            username: r.username,
            expiry_secs: r.expiry_secs,
            online: r.online,
            disconnected_at_ms: r.disconnected_at_ms,
            window: r.window,
            subs: r.subs,
            queue: Lazy::from(Queue { items: r.queue, bytes: r.queued_bytes }),
            inflight: r.inflight,
            last_pid: r.last_pid,
            inbound_qos2: r.inbound_qos2,
            unsent: r.unsent,
            will: r.will.map(|msg| Box::new(SessionWill { msg, due_ms: r.will_due_ms })),
        })
    }
}

/// Limits that `apply` enforces. They come from the config and must be the
/// same on every node of a cluster.
#[derive(Debug, Clone)]
pub struct ApplyLimits {
    pub queued_messages_max: u32,
    pub queued_bytes_max: u64,
    pub retained_messages_max: u32,
    pub queue_qos0_messages: bool,
    /// upgrade_outgoing_qos: deliver at the subscription's QoS.
    pub upgrade_outgoing_qos: bool,
}

pub type AclCheck<'a> = &'a dyn Fn(&str, Option<&str>, &str) -> bool;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeReq {
    pub filter: String,
    pub entry: SubEntry,
}

/// A change to the durable state. Versioned by `STATE_FORMAT_VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A client connected (or took over its session).
    Connect {
        client: Rc<str>,
        username: Option<Rc<str>>,
        clean_start: bool,
        expiry_secs: u32,
        window: u16,
        will: Option<WillMsg>,
    },
    /// The connection of `client` ended. `will` is false after a normal
    /// DISCONNECT (reason 0x00), which discards the will [MQTT-3.1.2-10].
    Disconnect {
        client: Rc<str>,
        will: bool,
        expiry_secs: u32,
    },
    Subscribe {
        client: Rc<str>,
        packet_id: u16,
        reqs: Vec<SubscribeReq>,
        codes: Vec<u8>,
    },
    Unsubscribe {
        client: Rc<str>,
        packet_id: u16,
        filters: Vec<String>,
    },
    /// An accepted PUBLISH. `from` names the publisher and its packet id
    /// when the publisher awaits an acknowledgement (QoS 1 and 2).
    /// `offline_only`: a QoS 0 message already delivered to online
    /// sessions, recorded only for offline ones (queue_qos0_messages).
    Publish {
        msg: Message,
        from: Option<(Rc<str>, u16)>,
        offline_only: bool,
    },
    /// PUBREL from a publisher for an inbound QoS 2 message.
    Release {
        client: Rc<str>,
        packet_id: u16,
    },
    /// Acknowledgements from a subscriber: PUBACK, PUBREC or PUBCOMP.
    Acked {
        client: Rc<str>,
        acks: Vec<(u16, AckKind)>,
    },
    /// Periodic: due wills, expired sessions.
    Tick,
    /// A new leader starts serving: every session still marked online lost
    /// its connection with the old leader (an ungraceful end: wills are
    /// published as for a dropped connection).
    LeaderStart {
        node: u64,
        term: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubComp,
    /// The broker dropped a QoS 1/2 delivery itself (too large for the
    /// client's Maximum Packet Size, or denied by the ACL).
    Discard,
}

/// A command with the leader's clock, as it is logged and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub now_ms: u64,
    pub cmd: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// CONNACK may go out.
    Connected {
        client: Rc<str>,
        session_present: bool,
    },
    /// Send a PUBLISH (packet id present for QoS 1/2).
    Deliver {
        client: Rc<str>,
        packet_id: Option<u16>,
        delivery: Delivery,
        dup: bool,
    },
    /// Send PUBREL (resend after reconnect).
    SendPubRel {
        client: Rc<str>,
        packet_id: u16,
    },
    PubAck {
        client: Rc<str>,
        packet_id: u16,
        code: u8,
    },
    PubRec {
        client: Rc<str>,
        packet_id: u16,
        code: u8,
    },
    PubRel {
        client: Rc<str>,
        packet_id: u16,
    },
    PubComp {
        client: Rc<str>,
        packet_id: u16,
        code: u8,
    },
    SubAck {
        client: Rc<str>,
        packet_id: u16,
        codes: Vec<u8>,
    },
    UnsubAck {
        client: Rc<str>,
        packet_id: u16,
        codes: Vec<u8>,
    },
    /// A message was dropped because a session's queue was full.
    QueueFull {
        client: Rc<str>,
    },
    SessionExpired {
        client: Rc<str>,
    },
    WillPublished {
        client: Rc<str>,
    },
    /// The LeaderStart command of `node` in `term` was applied.
    LeaderReady {
        node: u64,
        term: u64,
    },
}

#[derive(Debug, Default)]
pub struct State {
    pub sessions: BTreeMap<Rc<str>, Box<Session>>,
    pub retained: BTreeMap<Rc<str>, Message>,
    pub tree: TopicTree,
    /// Bytes of retained and queued messages, for memory_limit.
    pub stored_bytes: u64,
    pub applied_commands: u64,
    /// Raft transport addresses of nodes added at run time (from their
    /// conf change), so a restart can reach them. Written by the cluster
    /// driver when it applies a membership change, in log order.
    pub peer_addrs: BTreeMap<u64, String>,
}

/// The serialised form of `State` in a snapshot (postcard), led by
/// `STATE_FORMAT_VERSION`.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u16,
    applied_commands: u64,
    sessions: &'a BTreeMap<Rc<str>, Box<Session>>,
    retained: &'a BTreeMap<Rc<str>, Message>,
    peer_addrs: &'a BTreeMap<u64, String>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    #[allow(dead_code)] // checked before decoding the rest
    version: u16,
    applied_commands: u64,
    sessions: BTreeMap<Rc<str>, Box<Session>>,
    retained: BTreeMap<Rc<str>, Message>,
    peer_addrs: BTreeMap<u64, String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotError {
    Version(u16),
    Decode(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Version(v) => {
                write!(f, "state snapshot has format version {v}, this midge reads {STATE_FORMAT_VERSION}")
            }
            SnapshotError::Decode(e) => write!(f, "state snapshot does not decode: {e}"),
        }
    }
}

/// Split a subscribed filter into (share group, topic filter).
pub fn split_share(filter: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(filter) {
        Ok(Some((g, f))) => (Some(g), f),
        _ => (None, filter),
    }
}

impl State {
    /// Serialise the whole durable state (postcard, versioned).
    pub fn snapshot(&self) -> Vec<u8> {
        let out = SnapshotOut {
            version: STATE_FORMAT_VERSION,
            applied_commands: self.applied_commands,
            sessions: &self.sessions,
            retained: &self.retained,
            peer_addrs: &self.peer_addrs,
        };
        postcard::to_allocvec(&out).unwrap_or_default()
    }

    /// Rebuild a state from `snapshot()` bytes; derived indexes (the
    /// subscription tree, byte counts) are recomputed. Empty bytes give an
    /// empty state.
    pub fn restore(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.is_empty() {
            return Ok(State::default());
        }
        // The version is the first field; check it before the rest.
        let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if version != STATE_FORMAT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let s: SnapshotIn = postcard::from_bytes(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let mut st = State { applied_commands: s.applied_commands, ..State::default() };
        let mut sessions = s.sessions;
        for (client, sess) in sessions.iter_mut() {
            for (f, e) in &sess.subs {
                let (share, tf) = split_share(f);
                st.tree.insert(tf, share, client, *e);
            }
            // Recomputed, not trusted from the bytes.
            sess.queue.recount();
            st.stored_bytes = st.stored_bytes.saturating_add(sess.queue.bytes);
            for o in sess.inflight.values() {
                if let Outbound::Publish(d) = o {
                    st.stored_bytes = st.stored_bytes.saturating_add(d.msg.cost_bytes());
                }
            }
        }
        st.stored_bytes = s.retained.values().fold(st.stored_bytes, |a, m| a.saturating_add(m.cost_bytes()));
        st.sessions = sessions;
        st.retained = s.retained;
        st.peer_addrs = s.peer_addrs;
        Ok(st)
    }

    pub fn apply(&mut self, e: &Entry, lim: &ApplyLimits, acl: AclCheck, out: &mut Vec<Effect>) {
        self.applied_commands += 1;
        let now = e.now_ms;
        match &e.cmd {
            Command::Connect { client, username, clean_start, expiry_secs, window, will } => {
                let existed = self.sessions.contains_key(client);
                if existed {
                    let was_online = self.sessions[client].online;
                    if was_online {
                        // Takeover: the old connection ends without DISCONNECT.
                        self.end_connection(client, true, now, lim, acl, out);
                    }
                    if *clean_start {
                        self.end_session(client, now, lim, acl, out);
                    }
                }
                let present = self.sessions.contains_key(client);
                let s = self.sessions.entry(client.clone()).or_default();
                s.username.clone_from(username);
                s.expiry_secs = *expiry_secs;
                s.online = true;
                s.window = (*window).max(1);
                // A new connection before the will delay passed: no will
                // [MQTT-3.1.3-9].
                s.will = will.clone().map(|msg| Box::new(SessionWill { msg, due_ms: None }));
                out.push(Effect::Connected { client: client.clone(), session_present: present });
                if present {
                    self.resend(client, now, out);
                }
            }
            Command::Disconnect { client, will, expiry_secs } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.expiry_secs = *expiry_secs;
                }
                self.end_connection(client, *will, now, lim, acl, out);
            }
            Command::Subscribe { client, packet_id, reqs, codes } => {
                out.push(Effect::SubAck { client: client.clone(), packet_id: *packet_id, codes: codes.clone() });
                for r in reqs {
                    self.subscribe(client, r, now, lim, acl, out);
                }
            }
            Command::Unsubscribe { client, packet_id, filters } => {
                let mut codes = Vec::with_capacity(filters.len());
                for f in filters {
                    let existed = match self.sessions.get_mut(client) {
                        Some(s) => s.subs.remove(f.as_str()).is_some(),
                        None => false,
                    };
                    if existed {
                        let (share, tf) = split_share(f);
                        self.tree.remove(tf, share, client);
                    }
                    codes.push(if existed { 0x00 } else { 0x11 });
                }
                out.push(Effect::UnsubAck { client: client.clone(), packet_id: *packet_id, codes });
            }
            Command::Publish { msg, from, offline_only } => {
                if let Some((c, pid)) = from {
                    if msg.qos == QoS::ExactlyOnce {
                        let dup = match self.sessions.get_mut(c) {
                            Some(s) => !s.inbound_qos2.insert(*pid),
                            None => false,
                        };
                        out.push(Effect::PubRec { client: c.clone(), packet_id: *pid, code: 0 });
                        if dup {
                            return; // resent PUBLISH: delivered already [MQTT-4.3.3-10].
                        }
                    }
                }
                let matched = self.publish(msg, *offline_only, now, lim, acl, out);
                if let Some((c, pid)) = from {
                    if msg.qos == QoS::AtLeastOnce {
                        let code = if matched { 0x00 } else { 0x10 };
                        out.push(Effect::PubAck { client: c.clone(), packet_id: *pid, code });
                    }
                }
            }
            Command::Release { client, packet_id } => {
                let known = self.sessions.get_mut(client).is_some_and(|s| s.inbound_qos2.remove(packet_id));
                out.push(Effect::PubComp {
                    client: client.clone(),
                    packet_id: *packet_id,
                    code: if known { 0 } else { 0x92 },
                });
            }
            Command::Acked { client, acks } => {
                let Some(s) = self.sessions.get_mut(client) else { return };
                for (pid, kind) in acks {
                    s.unsent.remove(pid);
                    match (kind, s.inflight.get(pid)) {
                        (AckKind::PubRec, Some(Outbound::Publish(d))) if d.qos == QoS::ExactlyOnce => {
                            let cost = d.msg.cost_bytes();
                            self.stored_bytes = self.stored_bytes.saturating_sub(cost);
                            s.inflight.insert(*pid, Outbound::Released);
                            out.push(Effect::PubRel { client: client.clone(), packet_id: *pid });
                        }
                        (AckKind::PubAck, Some(Outbound::Publish(d))) if d.qos == QoS::AtLeastOnce => {
                            self.stored_bytes = self.stored_bytes.saturating_sub(d.msg.cost_bytes());
                            s.inflight.remove_keep(pid);
                        }
                        (AckKind::PubComp, Some(Outbound::Released)) => {
                            s.inflight.remove_keep(pid);
                        }
                        (AckKind::Discard, Some(o)) => {
                            if let Outbound::Publish(d) = o {
                                self.stored_bytes = self.stored_bytes.saturating_sub(d.msg.cost_bytes());
                            }
                            s.inflight.remove_keep(pid);
                        }
                        // An ack for an unknown id or in the wrong state is
                        // ignored (the broker logs it at the connection).
                        _ => {}
                    }
                }
                self.fill_window(client, now, out);
            }
            Command::Tick => self.tick(now, lim, acl, out),
            Command::LeaderStart { node, term } => {
                let online: Vec<Rc<str>> =
                    self.sessions.iter().filter(|(_, s)| s.online).map(|(c, _)| c.clone()).collect();
                for c in online {
                    self.end_connection(&c, true, now, lim, acl, out);
                }
                out.push(Effect::LeaderReady { node: *node, term: *term });
            }
        }
    }

    fn subscribe(
        &mut self,
        client: &Rc<str>,
        r: &SubscribeReq,
        now: u64,
        lim: &ApplyLimits,
        acl: AclCheck,
        out: &mut Vec<Effect>,
    ) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        let existed = s.subs.insert(r.filter.clone(), r.entry).is_some();
        let (share, tf) = split_share(&r.filter);
        self.tree.insert(tf, share, client, r.entry);
        // Retained messages are not sent for shared subscriptions
        // [MQTT-3.8.4-4 v5: "Retain Handling ... shared"]; per Retain Handling otherwise.
        let rh = r.entry.opts.retain_handling();
        if share.is_some() || rh == 2 || (rh == 1 && existed) {
            return;
        }
        let mut matches: Vec<Message> = Vec::new();
        if tf.contains(['+', '#']) {
            for (t, m) in &self.retained {
                if topic::matches(tf, t) && !m.expired(now) {
                    matches.push(m.clone());
                }
            }
        } else if let Some(m) = self.retained.get(tf) {
            if !m.expired(now) {
                matches.push(m.clone());
            }
        }
        let username = s.username.clone();
        for m in matches {
            if !acl(client, username.as_deref(), &m.topic) {
                continue;
            }
            // Retained messages sent on subscribe carry retain = 1
            // [MQTT-3.3.1-8].
            let qos = m.qos.min(r.entry.opts.qos());
            let d = Delivery { qos, retain: true, sub_ids: r.entry.sub_id.into_iter().collect(), msg: m };
            self.enqueue(client, d, now, lim, out);
        }
    }

    /// Frees the in-flight maps that acknowledgements emptied (they keep
    /// their allocation until then: see `Lazy::remove_keep`). Called
    /// every second; changes no state, only where it is held.
    pub fn trim(&mut self) {
        for s in self.sessions.values_mut() {
            s.inflight.trim();
        }
    }

    /// Route a message to every matching session and the retained store.
    /// Returns whether any subscription matched.
    fn publish(
        &mut self,
        msg: &Message,
        offline_only: bool,
        now: u64,
        lim: &ApplyLimits,
        acl: AclCheck,
        out: &mut Vec<Effect>,
    ) -> bool {
        if msg.retain && !offline_only {
            self.set_retained(msg, lim);
        }
        let targets = self.route(msg, lim.upgrade_outgoing_qos, acl);
        let matched = !targets.is_empty();
        for (client, d) in targets {
            let online = self.sessions.get(&client).is_some_and(|s| s.online);
            if offline_only && online {
                continue;
            }
            self.enqueue(&client, d, now, lim, out);
        }
        matched
    }

    fn set_retained(&mut self, msg: &Message, lim: &ApplyLimits) {
        if msg.payload.is_empty() {
            // An empty retained payload clears the topic [MQTT-3.3.1-10].
            if let Some(old) = self.retained.remove(&msg.topic) {
                self.stored_bytes = self.stored_bytes.saturating_sub(old.cost_bytes());
            }
            return;
        }
        if !self.retained.contains_key(&msg.topic) && self.retained.len() >= lim.retained_messages_max as usize {
            return;
        }
        let mut m = msg.clone();
        m.origin = None;
        self.stored_bytes += m.cost_bytes();
        if let Some(old) = self.retained.insert(m.topic.clone(), m) {
            self.stored_bytes = self.stored_bytes.saturating_sub(old.cost_bytes());
        }
    }

    /// The sessions a message goes to, one delivery per session: the highest
    /// QoS of its matching subscriptions and all their identifiers
    /// [MQTT-3.3.4-2..5]; one member of each matching shared group.
    pub fn route(&self, msg: &Message, upgrade_qos: bool, acl: AclCheck) -> Vec<(Rc<str>, Delivery)> {
        let mut hits: Vec<(Rc<str>, SubEntry)> = Vec::new();
        let mut shared_hits: Vec<(Rc<str>, SubEntry)> = Vec::new();
        let origin = msg.origin.as_deref();
        self.tree.for_each_match(
            &msg.topic,
            &mut |c, e| {
                // No Local: not to the publisher's own session [MQTT-3.8.3-3].
                if !(e.opts.no_local() && Some(&**c) == origin) {
                    hits.push((c.clone(), *e));
                }
            },
            &mut |g| {
                if g.members.is_empty() {
                    return;
                }
                // Prefer an online member, round robin.
                let n = g.members.len() as u64;
                let start = g.cursor.get();
                let mut pick = None;
                for i in 0..n {
                    let idx = ((start + i) % n) as usize;
                    let (c, e) =
                        g.members.iter().nth(idx).map(|(c, e)| (c.clone(), *e)).unwrap_or_else(|| unreachable!());
                    if pick.is_none() {
                        pick = Some((idx, c.clone(), e));
                    }
                    if self.sessions.get(&c).is_some_and(|s| s.online) {
                        pick = Some((idx, c, e));
                        break;
                    }
                }
                if let Some((idx, c, e)) = pick {
                    g.cursor.set(idx as u64 + 1);
                    shared_hits.push((c, e));
                }
            },
        );
        hits.append(&mut shared_hits);
        if hits.len() > 1 {
            hits.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let mut out: Vec<(Rc<str>, Delivery)> = Vec::with_capacity(hits.len());
        for (c, e) in hits {
            let qos = if upgrade_qos { e.opts.qos() } else { msg.qos.min(e.opts.qos()) };
            let retain = msg.retain && e.opts.retain_as_published();
            if let Some((last, d)) = out.last_mut() {
                if *last == c {
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    d.sub_ids.extend(e.sub_id);
                    continue;
                }
            }
            let Some(s) = self.sessions.get(&c) else { continue };
            if !acl(&c, s.username.as_deref(), &msg.topic) {
                continue;
            }
            out.push((c, Delivery { msg: msg.clone(), qos, retain, sub_ids: e.sub_id.into_iter().collect() }));
        }
        out
    }

    /// Give a delivery to a session: straight into a free window slot when
    /// online, else into its queue (bounded).
    fn enqueue(&mut self, client: &Rc<str>, d: Delivery, now: u64, lim: &ApplyLimits, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        if d.qos == QoS::AtMostOnce {
            if s.online {
                out.push(Effect::Deliver { client: client.clone(), packet_id: None, delivery: d, dup: false });
                return;
            }
            if !lim.queue_qos0_messages {
                return;
            }
        }
        let cost = d.msg.cost_bytes();
        if s.online
            && s.queue.is_empty()
            && s.unsent.is_empty()
            && d.qos != QoS::AtMostOnce
            && s.inflight.len() < s.window as usize
        {
            let pid = next_pid(s);
            s.inflight.insert(pid, Outbound::Publish(d.clone()));
            self.stored_bytes += cost;
            out.push(Effect::Deliver { client: client.clone(), packet_id: Some(pid), delivery: d, dup: false });
            return;
        }
        if s.queue.len() >= lim.queued_messages_max as usize || s.queue.bytes + cost > lim.queued_bytes_max {
            out.push(Effect::QueueFull { client: client.clone() });
            return;
        }
        self.stored_bytes += cost;
        s.queue.push_back(d, cost);
        if s.online {
            self.fill_window(client, now, out);
        }
    }

    /// Move queued messages into free window slots of an online session.
    fn fill_window(&mut self, client: &Rc<str>, now: u64, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        if !s.online {
            return;
        }
        // First what was in flight before the reconnect, in packet-id order.
        while !s.unsent.is_empty() && s.inflight.len() - s.unsent.len() < s.window as usize {
            let Some(pid) = s.unsent.pop_first() else { break };
            match s.inflight.get(&pid) {
                Some(Outbound::Publish(d)) => out.push(Effect::Deliver {
                    client: client.clone(),
                    packet_id: Some(pid),
                    delivery: d.clone(),
                    dup: true,
                }),
                Some(Outbound::Released) => out.push(Effect::SendPubRel { client: client.clone(), packet_id: pid }),
                None => {}
            }
        }
        if !s.unsent.is_empty() {
            return;
        }
        while s.inflight.len() < s.window as usize {
            let Some(d) = s.queue.pop_front() else { break };
            let cost = d.msg.cost_bytes();
            if d.msg.expired(now) {
                self.stored_bytes = self.stored_bytes.saturating_sub(cost);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                self.stored_bytes = self.stored_bytes.saturating_sub(cost);
                out.push(Effect::Deliver { client: client.clone(), packet_id: None, delivery: d, dup: false });
                continue;
            }
            let pid = next_pid(s);
            s.inflight.insert(pid, Outbound::Publish(d.clone()));
            out.push(Effect::Deliver { client: client.clone(), packet_id: Some(pid), delivery: d, dup: false });
        }
    }

    /// After a reconnect: resend unacknowledged PUBLISH (DUP) and PUBREL,
    /// in packet-id order [MQTT-4.4.0-1], then fill the window.
    fn resend(&mut self, client: &Rc<str>, now: u64, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        s.unsent = s.inflight.keys().copied().collect();
        self.fill_window(client, now, out);
    }

    /// A network connection ended. Registers or publishes the will and ends
    /// a session whose expiry is zero.
    fn end_connection(
        &mut self,
        client: &Rc<str>,
        will: bool,
        now: u64,
        lim: &ApplyLimits,
        acl: AclCheck,
        out: &mut Vec<Effect>,
    ) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        s.online = false;
        s.disconnected_at_ms = now;
        if !will {
            s.will = None;
        }
        let publish_now = match &mut s.will {
            Some(w) if w.msg.delay_secs == 0 => true,
            Some(w) => {
                w.due_ms = Some(now + w.msg.delay_secs as u64 * 1000);
                false
            }
            None => false,
        };
        let expiry = s.expiry_secs;
        if publish_now {
            self.publish_will(client, now, lim, acl, out);
        }
        if expiry == 0 {
            self.end_session(client, now, lim, acl, out);
        }
    }

    fn publish_will(&mut self, client: &Rc<str>, now: u64, lim: &ApplyLimits, acl: AclCheck, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.get_mut(client) else { return };
        if let Some(w) = s.will.take() {
            out.push(Effect::WillPublished { client: client.clone() });
            self.publish(&w.msg.msg, false, now, lim, acl, out);
        }
    }

    /// The session ends: a pending will goes out first [MQTT-3.1.2-8 v5].
    fn end_session(&mut self, client: &Rc<str>, now: u64, lim: &ApplyLimits, acl: AclCheck, out: &mut Vec<Effect>) {
        self.publish_will(client, now, lim, acl, out);
        let Some(s) = self.sessions.remove(client) else { return };
        for f in s.subs.keys() {
            let (share, tf) = split_share(f);
            self.tree.remove(tf, share, client);
        }
        let mut freed = s.queue.bytes;
        for o in s.inflight.values() {
            if let Outbound::Publish(d) = o {
                freed += d.msg.cost_bytes();
            }
        }
        self.stored_bytes = self.stored_bytes.saturating_sub(freed);
    }

    fn tick(&mut self, now: u64, lim: &ApplyLimits, acl: AclCheck, out: &mut Vec<Effect>) {
        let due: Vec<Rc<str>> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.online && s.will.as_ref().and_then(|w| w.due_ms).is_some_and(|t| t <= now))
            .map(|(c, _)| c.clone())
            .collect();
        for c in due {
            self.publish_will(&c, now, lim, acl, out);
        }
        let expired: Vec<Rc<str>> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.online && s.expiry_secs != EXPIRY_NEVER && s.disconnected_at_ms + s.expiry_secs as u64 * 1000 <= now
            })
            .map(|(c, _)| c.clone())
            .collect();
        for c in expired {
            out.push(Effect::SessionExpired { client: c.clone() });
            self.end_session(&c, now, lim, acl, out);
        }
        // Expired retained messages are dropped [MQTT-3.3.2-5].
        let stale: Vec<Rc<str>> =
            self.retained.iter().filter(|(_, m)| m.expired(now)).map(|(t, _)| t.clone()).collect();
        for t in stale {
            if let Some(m) = self.retained.remove(&t) {
                self.stored_bytes = self.stored_bytes.saturating_sub(m.cost_bytes());
            }
        }
    }
}

/// Next free packet id, 1..=65535, skipping those in flight.
fn next_pid(s: &mut Session) -> u16 {
    loop {
        s.last_pid = if s.last_pid == u16::MAX { 1 } else { s.last_pid + 1 };
        if !s.inflight.contains_key(&s.last_pid) {
            return s.last_pid;
        }
    }
}

#[cfg(test)]
mod session_format {
    use super::*;
    use crate::broker::tree::SubOptionsRepr;

    /// `Session` as serde derived it before its will and its queue were
    /// boxed with what goes with them: the snapshot bytes must not change.
    #[derive(Serialize, Deserialize)]
    struct DerivedSession {
        username: Option<Rc<str>>,
        expiry_secs: u32,
        online: bool,
        disconnected_at_ms: u64,
        window: u16,
        subs: BTreeMap<String, SubEntry>,
        queue: VecDeque<Delivery>,
        queued_bytes: u64,
        inflight: BTreeMap<u16, Outbound>,
        last_pid: u16,
        inbound_qos2: BTreeSet<u16>,
        unsent: BTreeSet<u16>,
        will: Option<Box<WillMsg>>,
        will_due_ms: Option<u64>,
    }

    fn delivery(topic: &str, payload: &[u8]) -> Delivery {
        let msg = Message {
            topic: Rc::from(topic),
            payload: Rc::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: None,
            expires_at_ms: Some(9_000),
            origin: Some(Rc::from("pub")),
        };
        Delivery { msg, qos: QoS::AtLeastOnce, retain: false, sub_ids: vec![3] }
    }

    fn pair(d: &DerivedSession) -> Session {
        Session {
            username: d.username.clone(),
            expiry_secs: d.expiry_secs,
            online: d.online,
            disconnected_at_ms: d.disconnected_at_ms,
            window: d.window,
            subs: d.subs.clone().into(),
            queue: Queue { items: d.queue.clone(), bytes: d.queued_bytes }.into(),
            inflight: d.inflight.clone().into(),
            last_pid: d.last_pid,
            inbound_qos2: d.inbound_qos2.clone().into(),
            unsent: d.unsent.clone().into(),
            will: d.will.clone().map(|w| Box::new(SessionWill { msg: *w, due_ms: d.will_due_ms })),
        }
    }

    fn empty() -> DerivedSession {
        DerivedSession {
            username: None,
            expiry_secs: 0,
            online: false,
            disconnected_at_ms: 0,
            window: 0,
            subs: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: BTreeMap::new(),
            last_pid: 0,
            inbound_qos2: BTreeSet::new(),
            unsent: BTreeSet::new(),
            will: None,
            will_due_ms: None,
        }
    }

    /// Offline, with a will due, queued and in-flight messages.
    fn full() -> DerivedSession {
        let q = [delivery("a/b", b"one"), delivery("a/c", b"two")];
        DerivedSession {
            username: Some(Rc::from("alice")),
            expiry_secs: EXPIRY_NEVER,
            online: false,
            disconnected_at_ms: 1_700_000_000_123,
            window: 20,
            subs: [("a/#".to_string(), SubEntry { opts: SubOptionsRepr(1), sub_id: Some(3) })].into(),
            queued_bytes: q.iter().map(|d| d.msg.cost_bytes()).sum(),
            queue: q.into(),
            inflight: [(7, Outbound::Publish(delivery("x", b"3"))), (8, Outbound::Released)].into(),
            last_pid: 8,
            inbound_qos2: [4, 5].into(),
            unsent: [7].into(),
            will: Some(Box::new(WillMsg { msg: delivery("will", b"gone").msg, delay_secs: 5 })),
            will_due_ms: Some(1_700_000_005_123),
        }
    }

    #[test]
    fn same_bytes_as_the_derived_session() {
        let odd = DerivedSession { queued_bytes: u64::MAX / 2 + 1, ..empty() };
        let online = DerivedSession { online: true, will_due_ms: None, ..full() };
        for d in [empty(), odd, full(), online] {
            let bytes = postcard::to_allocvec(&d).unwrap();
            assert_eq!(postcard::to_allocvec(&pair(&d)).unwrap(), bytes);
            let back: Session = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, pair(&d));
        }
    }

    #[test]
    fn session_fits_a_96_byte_block() {
        assert!(std::mem::size_of::<Session>() <= 88, "{}", std::mem::size_of::<Session>());
    }
}
