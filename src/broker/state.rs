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
//!
//! The commands and effects are in `broker/command.rs` (re-exported here,
//! with the state they change), the snapshot format in `state/snapshot.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::lazy::{Empty, Lazy};
use super::message::Message;
use super::tree::{SubEntry, TopicTree};
use crate::mqtt::{topic, QoS};

mod bridge;
mod retained_replay;
mod snapshot;

pub use bridge::{BridgeMsg, BridgeQueue};
use retained_replay::window_free;
pub use retained_replay::RetainedCursor;

pub use super::command::{
    AckKind, Command, DynsecStep, DynsecTag, Effect, Entry, StepResult, SubscribeReq, WillMsg, STATE_FORMAT_VERSION,
    STATE_FORMAT_VERSION_MIN,
};
use crate::dynsec::{self, DynsecState};
pub use snapshot::SnapshotError;

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
    /// The bridges' `out`/`both` topics and queue bounds (`connection`
    /// blocks), in file order.
    pub bridges: Rc<[crate::bridge::OutRoute]>,
}

/// A delivery's read check: may `client` (logged in as `user`) receive a
/// message on `topic`? The broker's is `settings::ReadAcl`; any closure of
/// that shape is one too (the state's tests use closures).
pub trait ReadCheck {
    fn allows(&self, client: &str, user: Option<&str>, topic: &str) -> bool;
}

impl<F: Fn(&str, Option<&str>, &str) -> bool> ReadCheck for F {
    fn allows(&self, client: &str, user: Option<&str>, topic: &str) -> bool {
        self(client, user, topic)
    }
}

/// The read ACL of an apply's deliveries, or None when no ACL source
/// applies and every read is allowed (then no delivery looks its session
/// up for the check).
pub type AclCheck<'a> = Option<&'a dyn ReadCheck>;

/// Whether `acl` lets `client` (`user`) receive on `topic`.
pub fn read_allowed(acl: AclCheck, client: &str, user: Option<&str>, topic: &str) -> bool {
    acl.is_none_or(|f| f.allows(client, user, topic))
}

#[derive(Debug, Default)]
pub struct State {
    sessions: BTreeMap<Rc<str>, Box<Session>>,
    retained: BTreeMap<Rc<str>, Message>,
    tree: TopicTree,
    /// Bytes of retained and queued messages, for memory_limit.
    stored_bytes: u64,
    applied_commands: u64,
    /// Raft transport addresses of nodes added at run time (from their
    /// conf change), so a restart can reach them. Written by the cluster
    /// driver when it applies a membership change, in log order.
    peer_addrs: BTreeMap<u64, String>,
    /// Dynamic security's clients, groups and roles; None until the first
    /// leader imported the file (or dynamic security is off). Shared with
    /// the ACL checks of an apply; changed copy-on-write.
    dynsec: Option<Rc<DynsecState>>,
    /// The cluster's random id, drawn by its first leader (0 until then):
    /// every peer hello carries it, and a node of another cluster is
    /// refused. Since format 3.
    cluster_id: u128,
    /// Each bridge's messages for its upstream broker, by connection name.
    /// Since format 3.
    bridges: BTreeMap<Rc<str>, BridgeQueue>,
    /// Retained replays at QoS 1/2 in progress, by client id, in
    /// SUBSCRIBE order: at most one per subscription of the session
    /// (`state/retained_replay.rs`). Since format 4.
    retained_replays: BTreeMap<Rc<str>, Vec<RetainedCursor>>,
    /// An empty vector kept for `publish`'s routing (not state: always
    /// empty between calls).
    route_scratch: Vec<(Rc<str>, Delivery)>,
}

/// `State::route_scratch` is kept only up to this capacity (a message that
/// fanned out to many sessions frees its vector).
const ROUTE_SCRATCH_KEPT: usize = 64;

/// Split a subscribed filter into (share group, topic filter).
pub fn split_share(filter: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(filter) {
        Ok(Some((g, f))) => (Some(g), f),
        _ => (None, filter),
    }
}

impl State {
    /// Every session, online or not, by client id.
    pub fn sessions(&self) -> &BTreeMap<Rc<str>, Box<Session>> {
        &self.sessions
    }

    /// The retained messages by topic.
    pub fn retained(&self) -> &BTreeMap<Rc<str>, Message> {
        &self.retained
    }

    /// Every session's subscriptions, by topic filter.
    pub fn tree(&self) -> &TopicTree {
        &self.tree
    }

    /// Bytes of retained, queued and in-flight messages (their
    /// `Message::cost_bytes`), for memory_limit.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    pub fn applied_commands(&self) -> u64 {
        self.applied_commands
    }

    /// The dynamic-security data, once imported.
    pub fn dynsec(&self) -> Option<&Rc<DynsecState>> {
        self.dynsec.as_ref()
    }

    /// The cluster's id; 0 until its first leader set one.
    pub fn cluster_id(&self) -> u128 {
        self.cluster_id
    }

    /// Raft transport addresses of nodes added at run time.
    pub fn peer_addrs(&self) -> &BTreeMap<u64, String> {
        &self.peer_addrs
    }

    /// A raft membership change added node `id` at `addr`. The one change
    /// to the state that is not a `Command`: conf change entries are raft's
    /// own, and the cluster driver applies them here in log order, so every
    /// node records the same addresses (and the snapshot carries them).
    pub fn peer_added(&mut self, id: u64, addr: String) {
        self.peer_addrs.insert(id, addr);
    }

    /// A raft membership change removed node `id` (see `peer_added`).
    pub fn peer_removed(&mut self, id: u64) {
        self.peer_addrs.remove(&id);
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
                    self.pull_retained(client, now, lim, acl, out);
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
                        self.stop_retained_replay(client, f);
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
                if !s.unsent.is_empty() || !s.queue.is_empty() {
                    // Otherwise nothing waits for the room (one session
                    // lookup less per acknowledgement).
                    self.fill_window(client, now, out);
                }
                self.pull_retained(client, now, lim, acl, out);
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
            Command::Dynsec { tag, steps } => self.apply_dynsec(tag, steps, out),
            Command::DynsecImport { state } => {
                if self.dynsec.is_none() {
                    self.dynsec = Some(Rc::new((**state).clone()));
                    out.push(Effect::DynsecChanged);
                }
            }
            // The first one wins: two leaders of one term cannot both
            // have proposed, but a new leader may before applying.
            Command::ClusterId { id } => {
                if self.cluster_id == 0 {
                    self.cluster_id = *id;
                }
            }
            Command::BridgeAcked { bridge, seqs } => self.bridge_acked(bridge, seqs),
            Command::BridgeConnected { bridge } => self.bridge_retained(bridge, now, lim, out),
        }
    }

    /// The steps of one request, in order: each read sees the changes
    /// before it. A refused change leaves the data as it was.
    fn apply_dynsec(&mut self, tag: &DynsecTag, steps: &[DynsecStep], out: &mut Vec<Effect>) {
        let Some(data) = self.dynsec.as_mut() else {
            // Before the file's import (a forwarded request can reach a new
            // leader before its import commits): refused, so that the import
            // still applies and no change starts from empty data.
            let results = steps.iter().map(|_| Err(dynsec::CommandError::NOT_LOADED)).collect();
            out.push(Effect::DynsecAnswered { tag: tag.clone(), results });
            return;
        };
        let data = Rc::make_mut(data);
        let mut results = Vec::with_capacity(steps.len());
        let mut kick = Vec::new();
        let mut changed = false;
        for step in steps {
            results.push(match step {
                DynsecStep::Change(c) => dynsec::apply(data, c).map(|a| {
                    changed = true;
                    kick.extend(a.kick);
                    None
                }),
                DynsecStep::Read(r) => dynsec::answer_read(data, r).map(Some),
            });
        }
        if changed {
            data.reindex();
        }
        out.push(Effect::DynsecAnswered { tag: tag.clone(), results });
        if !kick.is_empty() {
            kick.sort();
            kick.dedup();
            out.push(Effect::DynsecKick { kick });
        }
        if changed {
            out.push(Effect::DynsecChanged);
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
        // A replay of the subscription this one replaces ends with it.
        if existed {
            self.stop_retained_replay(client, &r.filter);
        }
        // Retained messages are not sent for shared subscriptions
        // [MQTT-3.8.4-4 v5: "Retain Handling ... shared"]; per Retain Handling otherwise.
        let rh = r.entry.opts.retain_handling();
        if share.is_some() || rh == 2 || (rh == 1 && existed) {
            return;
        }
        let sub_qos = r.entry.opts.qos();
        let sub_ids: Vec<u32> = r.entry.sub_id.into_iter().collect();
        // To an online session, the messages that go at QoS 0 are a replay
        // the serving broker paces by the client's reading (nothing durable
        // changes); those at QoS 1/2 a replay into the session's free
        // window slots that goes on as the client acknowledges
        // (`state/retained_replay.rs`).
        if self.sessions.get(client).is_some_and(|s| s.online) {
            out.push(Effect::RetainedReplay {
                client: client.clone(),
                filter: tf.to_string(),
                sub_qos,
                sub_ids: sub_ids.clone(),
            });
            if sub_qos != QoS::AtMostOnce {
                let c = RetainedCursor { filter: r.filter.clone(), sub_qos, sub_ids, after: None };
                self.start_retained_replay(client, c, now, lim, acl, out);
            }
            return;
        }
        // An offline session (a SUBSCRIBE applied after its connection
        // ended): queued now, bounded by max_queued_*.
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
        let username = self.sessions.get(client).and_then(|s| s.username.clone());
        for m in matches {
            if !read_allowed(acl, client, username.as_deref(), &m.topic) {
                continue;
            }
            // Retained messages sent on subscribe carry retain = 1
            // [MQTT-3.3.1-8].
            let qos = m.qos.min(sub_qos);
            let d = Delivery { qos, retain: true, sub_ids: sub_ids.clone(), msg: m };
            self.enqueue(client, d, now, lim, out);
        }
    }

    /// Frees the in-flight maps that acknowledgements emptied (they keep
    /// their allocation until then: see `Lazy::remove_keep`). Called
    /// every second; changes no state, only where it is held.
    pub(super) fn trim(&mut self) {
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
        // (Into the kept vector: no allocation per message.)
        let mut targets = std::mem::take(&mut self.route_scratch);
        self.route_into(msg, lim.upgrade_outgoing_qos, acl, &mut targets);
        let mut matched = !targets.is_empty();
        if !offline_only && !lim.bridges.is_empty() {
            matched |= self.bridge_out(msg, lim, out);
        }
        for (client, d) in targets.drain(..) {
            if offline_only && self.sessions.get(&client).is_some_and(|s| s.online) {
                continue;
            }
            self.enqueue(&client, d, now, lim, out);
        }
        if targets.capacity() <= ROUTE_SCRATCH_KEPT {
            self.route_scratch = targets;
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
        let mut out = Vec::new();
        self.route_into(msg, upgrade_qos, acl, &mut out);
        out
    }

    /// `route` into `out`, which must be empty.
    fn route_into(&self, msg: &Message, upgrade_qos: bool, acl: AclCheck, out: &mut Vec<(Rc<str>, Delivery)>) {
        debug_assert!(out.is_empty());
        // Each match becomes a delivery at once, in one vector (a message
        // usually matches once per session; a second vector of matches
        // cost an allocation per message). Shared groups' picks follow the
        // plain matches, as the merge below keeps their order.
        let delivery = |e: &SubEntry| Delivery {
            msg: msg.clone(),
            qos: if upgrade_qos { e.opts.qos() } else { msg.qos.min(e.opts.qos()) },
            retain: msg.retain && e.opts.retain_as_published(),
            sub_ids: e.sub_id.into_iter().collect(),
        };
        let mut shared_hits: Vec<(Rc<str>, Delivery)> = Vec::new();
        let origin = msg.origin.as_deref();
        self.tree.for_each_match(
            &msg.topic,
            &mut |c, e| {
                // No Local: not to the publisher's own session [MQTT-3.8.3-3].
                if !(e.opts.no_local() && Some(&**c) == origin) {
                    out.push((c.clone(), delivery(e)));
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
                    shared_hits.push((c, delivery(&e)));
                }
            },
        );
        out.append(&mut shared_hits);
        if out.len() > 1 {
            // Stable: one session's matches keep their order (and so do
            // its Subscription Identifiers).
            out.sort_by(|a, b| a.0.cmp(&b.0));
            // One delivery per session: the highest QoS, all identifiers.
            out.dedup_by(|(c, d), (first_c, first)| {
                if c != first_c {
                    return false;
                }
                first.qos = first.qos.max(d.qos);
                first.retain |= d.retain;
                first.sub_ids.append(&mut d.sub_ids);
                true
            });
        }
        if let Some(acl) = acl {
            out.retain(|(c, _)| self.sessions.get(c).is_some_and(|s| acl.allows(c, s.username.as_deref(), &msg.topic)));
        }
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
        if d.qos != QoS::AtMostOnce && window_free(s) {
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
        self.retained_replays.remove(client);
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
