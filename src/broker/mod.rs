//! The broker state machine. It owns the volatile per-connection state
//! (protocol version, keep alive, topic aliases, flow control) and the
//! durable `State`, which it changes only by proposing `Command`s.
//!
//! Events go in (`open`, `packet`, `closed`, `tick`) with the current time;
//! `Action`s come out (send a packet, close a connection). It never touches
//! a socket or a clock, so tests, the fuzzer and the cluster simulation run
//! it as is.

pub mod admin;
pub mod command;
mod connect;
pub mod dynsec;
pub mod lazy;
pub mod message;
mod peer;
pub mod settings;
pub mod state;
mod sys;
pub mod tree;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use log::{debug, info, warn};

use crate::auth::acl::Access;
use crate::mqtt::codec::{encoded_len, DecodeError};
use crate::mqtt::{reason, topic, Disconnect, Packet, PubResp, Publish, QoS, SubAck, SubOptions, UnsubAck, Version};
use lazy::Lazy;
pub use message::{Message, MessageProps};
pub use peer::PeerAddr;
pub use settings::Settings;
use state::{AckKind, Command, Delivery, Effect, Entry, State, SubscribeReq};
use tree::{SubEntry, SubOptionsRepr};

pub type ConnId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(ConnId, Packet),
    /// Flush what is queued for the connection, then close it.
    Close(ConnId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP accepted, no CONNECT yet.
    New,
    /// CONNECT accepted, waiting for the Connect command to apply.
    Connecting,
    Connected,
    /// Closed by the broker; nothing more is read from it.
    Closing,
}

/// Whether a connection came in on the admin listener (see `admin.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Admin { subscribed: bool },
}

/// What a client connection holds between its CONNECT and the apply of its
/// Connect command.
struct PendingConnect {
    connack: crate::mqtt::ConnAck,
    /// The CONNECT's user name; once connected, the session holds it.
    username: Option<Rc<str>>,
}

/// One connection's volatile state. There is one per connection, idle or
/// not: keep it at most 88 bytes (a 96-byte heap block; see the test).
struct Conn {
    phase: Phase,
    peer: PeerAddr,
    version: Version,
    client: Option<Rc<str>>,
    /// At most 65,535 s.
    keep_alive_ms: u32,
    /// When the last packet came in; before the first, when the connection
    /// opened (in `Phase::New` no packet has come in yet: the first one
    /// ends that phase).
    last_rx_ms: u64,
    /// Client's Maximum Packet Size.
    packet_bytes_out_max: u32,
    /// Client's Topic Alias Maximum and the aliases we assigned.
    alias_out_max: u16,
    alias_out: Lazy<BTreeMap<Rc<str>, u16>>,
    alias_in: Lazy<BTreeMap<u16, Rc<str>>>,
    /// QoS 1/2 PUBLISHes received and not yet completed (Receive Maximum).
    inbound_unacked: u32,
    /// CONNECT had Session Expiry 0 (a DISCONNECT may not raise it).
    session_expiry_secs: u32,
    /// Set while `Phase::Connecting`.
    pending: Option<Box<PendingConnect>>,
    /// Whether the durable session knows this connection ended.
    session_closed: bool,
    kind: Kind,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub dropped_qos0: u64,
    pub dropped_queue_full: u64,
    pub clients_maximum: u64,
}

pub struct Broker {
    pub settings: Rc<Settings>,
    pub state: State,
    conns: BTreeMap<ConnId, Box<Conn>>,
    by_client: BTreeMap<Rc<str>, ConnId>,
    congested: fxhash::FxHashSet<ConnId>,
    actions: Vec<Action>,
    effects: Vec<Effect>,
    /// Commands proposed and not yet applied.
    proposals: Vec<Entry>,
    /// Single-node, in-memory mode: proposals apply at once.
    auto_commit: bool,
    /// Apply at propose (see `set_apply_at_propose`): proposals apply as
    /// they are made and stay queued for the log.
    apply_at_propose: bool,
    /// How many of `proposals` (a prefix) are applied already.
    proposals_applied: usize,
    next_assigned_id: u64,
    pub stats: Stats,
    started_ms: u64,
    last_sys_ms: u64,
    sys_retained: std::collections::BTreeMap<Rc<str>, Message>,
    last_tick_cmd_ms: u64,
    /// Whether this node accepts clients (the raft leader with its state
    /// caught up). Always true when not replicated.
    serving: bool,
    /// The last LeaderStart applied: (node, term).
    pub leader_ready: Option<(u64, u64)>,
    /// `cluster_follower_mode redirect`: the leader's client address, sent
    /// to v5 clients as a Server Reference with CONNACK 0x9C.
    pub redirect: Option<String>,
    /// `$SYS/broker/cluster/<name>` values, set by the cluster runtime.
    pub cluster_sys: Vec<(&'static str, String)>,
    control_requests: Vec<(ConnId, Vec<u8>)>,
    last_drop_log_ms: u64,
}

impl Broker {
    pub fn new(settings: Rc<Settings>, now_ms: u64) -> Broker {
        Broker {
            settings,
            state: State::default(),
            conns: BTreeMap::new(),
            by_client: BTreeMap::new(),
            congested: Default::default(),
            actions: Vec::new(),
            effects: Vec::new(),
            proposals: Vec::new(),
            auto_commit: true,
            apply_at_propose: false,
            proposals_applied: 0,
            next_assigned_id: 0,
            stats: Stats::default(),
            started_ms: now_ms,
            last_sys_ms: 0,
            sys_retained: Default::default(),
            last_tick_cmd_ms: now_ms,
            serving: true,
            leader_ready: None,
            redirect: None,
            cluster_sys: Vec::new(),
            control_requests: Vec::new(),
            last_drop_log_ms: 0,
        }
    }

    /// Replicated mode: proposals wait for `take_proposals` and come back
    /// through `apply_committed`; clients are refused until `set_serving`.
    pub fn set_replicated(&mut self) {
        self.auto_commit = false;
        self.serving = false;
    }

    pub fn serving(&self) -> bool {
        self.serving
    }

    /// Start or stop serving clients. Stopping closes every client
    /// connection at once (v5 clients get DISCONNECT 0x9C, Use another
    /// server): a node that is not the leader never serves a session.
    pub fn set_serving(&mut self, serving: bool, now: u64) {
        if self.serving == serving {
            return;
        }
        self.serving = serving;
        if !serving {
            // Admin connections stay: management works on every node.
            let ids: Vec<ConnId> =
                self.conns.iter().filter(|(_, c)| c.kind == Kind::Client).map(|(id, _)| *id).collect();
            for id in ids {
                if let Some(c) = self.conns.get_mut(&id) {
                    // The next leader ends these sessions in its state.
                    c.session_closed = true;
                }
                self.close(id, Some(reason::USE_ANOTHER_SERVER), now);
            }
            self.proposals.clear();
            self.proposals_applied = 0;
        }
    }

    /// The actions not yet taken.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Actions produced so far; the runtime takes them after every call.
    /// Taken whole, not drained: a burst (one read of
    /// publishes fanned out to many subscribers) must not leave a grown
    /// vector behind (it held ~100 MB after a benchmark).
    pub fn take_actions(&mut self) -> std::vec::IntoIter<Action> {
        std::mem::take(&mut self.actions).into_iter()
    }

    /// `take_actions` for a runtime that keeps an empty vector between
    /// calls: the actions change places with `spare` (which must be
    /// empty), and the broker goes on with its capacity.
    pub fn swap_actions(&mut self, spare: &mut Vec<Action>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.actions, spare);
    }

    /// Protocol version of a connection once CONNECT was decoded (the
    /// codec needs it for everything after CONNECT).
    pub fn version(&self, conn: ConnId) -> Option<Version> {
        self.conns.get(&conn).and_then(|c| (c.phase != Phase::New).then_some(c.version))
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The runtime's outgoing buffer for `conn` is over its bound (QoS 0
    /// messages to it are dropped) or drained again.
    pub fn set_congested(&mut self, conn: ConnId, congested: bool) {
        if congested {
            self.congested.insert(conn);
        } else {
            self.congested.remove(&conn);
        }
    }

    pub fn count_bytes(&mut self, received: u64, sent: u64) {
        self.stats.bytes_received += received;
        self.stats.bytes_sent += sent;
    }

    pub fn open(&mut self, conn: ConnId, peer: SocketAddr, now: u64) {
        self.conns.insert(
            conn,
            Box::new(Conn {
                phase: Phase::New,
                peer: PeerAddr::from(peer),
                version: Version::V311,
                client: None,
                keep_alive_ms: 0,
                last_rx_ms: now,
                packet_bytes_out_max: u32::MAX,
                alias_out_max: 0,
                alias_out: Lazy::default(),
                alias_in: Lazy::default(),
                inbound_unacked: 0,
                session_expiry_secs: 0,
                pending: None,
                session_closed: true,
                kind: Kind::Client,
            }),
        );
    }

    /// The socket closed or failed: an ungraceful end (will published).
    pub fn closed(&mut self, conn: ConnId, now: u64) {
        if let Some(c) = self.conns.get(&conn) {
            if c.phase == Phase::Connected && self.settings.connection_messages {
                info!("Client {} closed its connection.", c.client.as_deref().unwrap_or("<unknown>"));
            }
        }
        self.end_session_link(conn, true, None, now);
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(id) = c.client {
                if self.by_client.get(&id) == Some(&conn) {
                    self.by_client.remove(&id);
                }
            }
        }
        self.congested.remove(&conn);
        self.commit(now);
    }

    /// Record in the durable session that its connection ended.
    fn end_session_link(&mut self, conn: ConnId, will: bool, expiry: Option<u32>, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.session_closed {
            return;
        }
        c.session_closed = true;
        let Some(client) = c.client.clone() else { return };
        let expiry_secs = expiry.unwrap_or(c.session_expiry_secs);
        self.propose(now, Command::Disconnect { client, will, expiry_secs });
    }

    /// The codec rejected the bytes of `conn`.
    pub fn decode_error(&mut self, conn: ConnId, err: &DecodeError, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.phase == Phase::Closing {
            return; // already refused or closed; nothing more is sent
        }
        let first_packet = c.phase == Phase::New;
        let who = self.who(conn);
        match err {
            DecodeError::UnsupportedVersion(_) if !first_packet => {
                warn!("Client {} sent a second CONNECT (with an unknown protocol version); disconnecting.", who);
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
            DecodeError::UnsupportedVersion(level) => {
                info!("Client {} refused: unsupported protocol version {}.", who, level);
                // Answered in the 3.1.1 form, as a client of any level can read it.
                self.actions.push(Action::Send(
                    conn,
                    Packet::ConnAck(crate::mqtt::ConnAck {
                        session_present: false,
                        code: reason::V3_UNACCEPTABLE_PROTOCOL_VERSION,
                        properties: Default::default(),
                    }),
                ));
                self.close(conn, None, now);
            }
            DecodeError::TooLarge { size, max } => {
                warn!("Client {} sent a packet of {} bytes, over the maximum of {}; disconnecting.", who, size, max);
                self.close(conn, Some(reason::PACKET_TOO_LARGE), now);
            }
            DecodeError::Malformed(what) => {
                warn!("Client {} sent a malformed packet ({}); disconnecting.", who, what);
                self.close(conn, Some(reason::MALFORMED_PACKET), now);
            }
            DecodeError::Protocol(what) => {
                warn!("Client {} violated the protocol ({}); disconnecting.", who, what);
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
        }
        self.commit(now);
    }

    /// Close a connection from the broker side: a v5 client first gets a
    /// DISCONNECT with `reason` [MQTT-4.13.1-1]. The will is published.
    fn close(&mut self, conn: ConnId, reason_code: Option<u8>, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.phase == Phase::Closing {
            return;
        }
        let was_connected = c.phase == Phase::Connected;
        c.phase = Phase::Closing;
        if let (Some(code), Version::V5, true) = (reason_code, c.version, was_connected) {
            self.actions
                .push(Action::Send(conn, Packet::Disconnect(Disconnect { code, properties: Default::default() })));
        }
        self.actions.push(Action::Close(conn));
        self.end_session_link(conn, true, None, now);
    }

    /// Same as `close` before CONNACK: v5 errors go in the CONNACK instead.
    fn refuse(&mut self, conn: ConnId, v5_code: u8, v3_code: u8, why: &str, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let code = if c.version.is_v5() { v5_code } else { v3_code };
        if self.settings.connection_messages {
            info!("Client {} from {} refused: {}.", c.client.as_deref().unwrap_or("<unknown>"), c.peer, why);
        }
        self.actions.push(Action::Send(
            conn,
            Packet::ConnAck(crate::mqtt::ConnAck { session_present: false, code, properties: Default::default() }),
        ));
        self.close(conn, None, now);
    }

    pub fn has_proposals(&self) -> bool {
        !self.proposals.is_empty()
    }

    /// Whether the pending commands are only subscribers' acknowledgements
    /// (`Command::Acked`), which may be replicated lazily: nobody waits
    /// for their commit but the subscriber's window.
    pub fn proposals_lazy(&self) -> bool {
        self.proposals.iter().all(|e| matches!(e.cmd, Command::Acked { .. }))
    }

    fn propose(&mut self, now_ms: u64, cmd: Command) {
        // An applied entry is final: acknowledgements join only one that
        // is not applied yet.
        let last_applied = self.proposals_applied == self.proposals.len();
        if let (Command::Acked { client, acks }, false) = (&cmd, last_applied) {
            if let Some(Entry { cmd: Command::Acked { client: c2, acks: a2 }, .. }) = self.proposals.last_mut() {
                if c2 == client {
                    a2.extend_from_slice(acks);
                    return;
                }
            }
        }
        self.proposals.push(Entry { now_ms, cmd });
    }

    /// Commands proposed since the last call, for a replicating runtime,
    /// and how many of them (a prefix) are applied already (see
    /// `set_apply_at_propose`).
    pub fn take_proposals(&mut self) -> (Vec<Entry>, usize) {
        (std::mem::take(&mut self.proposals), std::mem::replace(&mut self.proposals_applied, 0))
    }

    /// Apply at propose: for a replicating runtime whose next log entries
    /// are certain to commit, in the order proposed, with nothing before
    /// them left to apply (a one-voter raft leader whose log is in
    /// memory: its own append is the quorum, and it cannot fail). Each
    /// command then applies as it is proposed, and its effects (a
    /// delivery, an acknowledgement) go out before the log round instead
    /// of after it; the commands stay queued for the log all the same,
    /// and the runtime skips them when they come back committed. Off
    /// again before the certainty ends.
    pub fn set_apply_at_propose(&mut self, on: bool, now: u64) {
        self.apply_at_propose = on;
        if on {
            self.apply_proposals(now);
        }
    }

    pub fn applies_at_propose(&self) -> bool {
        self.apply_at_propose
    }

    /// Proposals applied but not yet taken for the log.
    pub fn proposals_applied(&self) -> usize {
        self.proposals_applied
    }

    /// Apply at propose: apply the proposals not applied yet, and those
    /// that applying them proposes, in order.
    pub fn apply_proposals(&mut self, now: u64) {
        if !self.apply_at_propose || self.proposals_applied == self.proposals.len() {
            return;
        }
        let mut queued = std::mem::take(&mut self.proposals);
        while self.proposals_applied < queued.len() {
            self.apply_committed(&queued[self.proposals_applied], now);
            self.proposals_applied += 1;
            queued.append(&mut self.proposals);
        }
        self.proposals = queued;
    }

    /// Apply a committed entry and act on its effects.
    pub fn apply_committed(&mut self, e: &Entry, now: u64) {
        let settings = self.settings.clone();
        let acl = |c: &str, u: Option<&str>, t: &str| settings.allowed(c, u, t, Access::Read);
        let mut effects = std::mem::take(&mut self.effects);
        self.state.apply(e, &settings.apply, &acl, &mut effects);
        for eff in effects.drain(..) {
            self.on_effect(eff, now);
        }
        self.effects = effects;
    }

    fn commit(&mut self, now: u64) {
        if self.apply_at_propose {
            self.apply_proposals(now);
            return;
        }
        if !self.auto_commit {
            return;
        }
        while !self.proposals.is_empty() {
            let batch = std::mem::take(&mut self.proposals);
            for e in &batch {
                self.apply_committed(e, now);
            }
        }
    }

    fn conn_of(&self, client: &str) -> Option<ConnId> {
        self.by_client.get(client).copied()
    }

    fn on_effect(&mut self, eff: Effect, now: u64) {
        match eff {
            Effect::Connected { client, session_present } => {
                let Some(id) = self.conn_of(&client) else { return };
                let Some(c) = self.conns.get_mut(&id) else { return };
                if c.phase != Phase::Connecting {
                    return;
                }
                c.phase = Phase::Connected;
                c.session_closed = false;
                // Hold the session's copy of the client id, not a second one.
                if let Some((key, _)) = self.state.sessions.get_key_value(&*client) {
                    c.client = Some(key.clone());
                    self.by_client.remove(&*client);
                    self.by_client.insert(key.clone(), id);
                }
                if let Some(p) = c.pending.take() {
                    let mut ack = p.connack;
                    ack.session_present = session_present;
                    self.actions.push(Action::Send(id, Packet::ConnAck(ack)));
                }
            }
            Effect::Deliver { client, packet_id, delivery, dup } => {
                self.deliver(&client, packet_id, &delivery, dup, now)
            }
            Effect::SendPubRel { client, packet_id } | Effect::PubRel { client, packet_id } => {
                self.send_to_client(
                    &client,
                    Packet::PubRel(PubResp { packet_id, code: 0, properties: Default::default() }),
                );
            }
            Effect::PubAck { client, packet_id, code } => {
                self.inbound_done(&client);
                self.send_to_client(
                    &client,
                    Packet::PubAck(PubResp { packet_id, code, properties: Default::default() }),
                );
            }
            Effect::PubRec { client, packet_id, code } => {
                self.send_to_client(
                    &client,
                    Packet::PubRec(PubResp { packet_id, code, properties: Default::default() }),
                );
            }
            Effect::PubComp { client, packet_id, code } => {
                self.inbound_done(&client);
                self.send_to_client(
                    &client,
                    Packet::PubComp(PubResp { packet_id, code, properties: Default::default() }),
                );
            }
            Effect::SubAck { client, packet_id, codes } => {
                self.send_to_client(
                    &client,
                    Packet::SubAck(SubAck { packet_id, codes, properties: Default::default() }),
                );
            }
            Effect::UnsubAck { client, packet_id, codes } => {
                self.send_to_client(
                    &client,
                    Packet::UnsubAck(UnsubAck { packet_id, codes, properties: Default::default() }),
                );
            }
            Effect::QueueFull { client } => {
                self.stats.dropped_queue_full += 1;
                // As Mosquitto does, but at most once a second per broker.
                if now >= self.last_drop_log_ms + 1000 {
                    self.last_drop_log_ms = now;
                    warn!(
                        "Outgoing messages are being dropped for client {} (queue full: max_queued_messages / max_queued_bytes); {} dropped so far.",
                        client, self.stats.dropped_queue_full
                    );
                }
            }
            Effect::SessionExpired { client } => {
                info!("Expiring client {} due to timeout.", client);
            }
            Effect::WillPublished { client } => {
                debug!("Will message of client {} published.", client);
            }
            Effect::LeaderReady { node, term } => self.leader_ready = Some((node, term)),
        }
    }

    fn inbound_done(&mut self, client: &str) {
        if let Some(id) = self.conn_of(client) {
            if let Some(c) = self.conns.get_mut(&id) {
                c.inbound_unacked = c.inbound_unacked.saturating_sub(1);
            }
        }
    }

    fn send_to_client(&mut self, client: &str, p: Packet) {
        if let Some(id) = self.conn_of(client) {
            if self.conns.get(&id).is_some_and(|c| c.phase == Phase::Connected) {
                self.stats.messages_sent += 1;
                self.actions.push(Action::Send(id, p));
            }
        }
    }

    /// Turn a delivery into a PUBLISH for the client's connection.
    fn deliver(&mut self, client: &Rc<str>, packet_id: Option<u16>, d: &Delivery, dup: bool, now: u64) {
        let Some(id) = self.conn_of(client) else { return };
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.phase != Phase::Connected {
            return;
        }
        if packet_id.is_none() && self.congested.contains(&id) {
            self.stats.dropped_qos0 += 1;
            return;
        }
        let mut new_alias = None;
        let mut p = Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            packet_id,
            payload: d.msg.payload.clone(),
            properties: Default::default(),
        };
        if c.version.is_v5() {
            if let Some(props) = &d.msg.props {
                props.write_into(&mut p.properties);
            }
            p.properties.message_expiry_interval = d.msg.remaining_expiry_secs(now);
            p.properties.subscription_identifiers.clone_from(&d.sub_ids);
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
        let too_large = encoded_len(&packet, c.version) > c.packet_bytes_out_max as usize;
        if let (Some(a), false) = (new_alias, too_large) {
            c.alias_out.insert(d.msg.topic.clone(), a);
        }
        if too_large {
            // Too large for the client: discarded as if sent [MQTT-3.1.2-25].
            debug!("Dropping message on {} for client {}: larger than its Maximum Packet Size.", d.msg.topic, client);
            if let Some(pid) = packet_id {
                self.propose(now, Command::Acked { client: client.clone(), acks: vec![(pid, AckKind::Discard)] });
            }
            return;
        }
        self.stats.messages_sent += 1;
        self.stats.publish_sent += 1;
        self.actions.push(Action::Send(id, packet));
    }

    /// A packet decoded from `conn`.
    pub fn packet(&mut self, conn: ConnId, p: Packet, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.last_rx_ms = now;
        let phase = c.phase;
        self.stats.messages_received += 1;
        match (phase, p) {
            (Phase::Closing, _) => {}
            (Phase::New, Packet::Connect(cp)) if c.kind != Kind::Client => self.on_admin_connect(conn, *cp, now),
            (Phase::New, Packet::Connect(cp)) => self.on_connect(conn, *cp, now),
            (Phase::New, other) => {
                warn!("Client {} sent {} before CONNECT; disconnecting.", self.who(conn), other.name());
                self.close(conn, None, now);
            }
            (_, Packet::Connect(_)) => {
                // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
                warn!("Client {} sent a second CONNECT; disconnecting.", self.who(conn));
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
            (Phase::Connecting, other) => {
                // Only reachable while a Connect command awaits commit.
                self.packet_connected(conn, other, now);
            }
            (Phase::Connected, other) if c.kind != Kind::Client => self.admin_packet(conn, other, now),
            (Phase::Connected, other) => self.packet_connected(conn, other, now),
        }
        self.commit(now);
    }

    /// The client id, or the address before CONNECT, for log lines.
    fn who(&self, conn: ConnId) -> String {
        match self.conns.get(&conn) {
            Some(c) => c.client.as_deref().map_or_else(|| c.peer.to_string(), str::to_string),
            None => "<unknown>".to_string(),
        }
    }

    /// Whether the ACL lets connection `conn` of `client` do `access` on
    /// `topic`. The user name is its CONNECT's: held by the connection
    /// until the Connect command applies, then by the session.
    fn conn_allowed(&self, conn: ConnId, client: &str, topic: &str, access: Access) -> bool {
        if self.settings.acl.is_none() {
            return true;
        }
        let pending = self.conns.get(&conn).and_then(|c| c.pending.as_ref());
        let username = match pending {
            Some(p) => p.username.as_deref(),
            None => self.state.sessions.get(client).and_then(|s| s.username.as_deref()),
        };
        self.settings.allowed(client, username, topic, access)
    }

    fn packet_connected(&mut self, conn: ConnId, p: Packet, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let Some(client) = c.client.clone() else { return };
        match p {
            Packet::Publish(p) => self.on_publish(conn, client, p, now),
            Packet::PubAck(r) => {
                self.propose(now, Command::Acked { client, acks: vec![(r.packet_id, AckKind::PubAck)] })
            }
            Packet::PubRec(r) => {
                // A PUBREC with an error code ends the QoS 2 flow (v5 §4.3.3).
                let kind = if r.code >= 0x80 { AckKind::Discard } else { AckKind::PubRec };
                self.propose(now, Command::Acked { client, acks: vec![(r.packet_id, kind)] })
            }
            Packet::PubComp(r) => {
                self.propose(now, Command::Acked { client, acks: vec![(r.packet_id, AckKind::PubComp)] })
            }
            Packet::PubRel(r) => self.propose(now, Command::Release { client, packet_id: r.packet_id }),
            Packet::Subscribe(s) => self.on_subscribe(conn, client, s, now),
            Packet::Unsubscribe(u) => {
                if self.settings.connection_messages {
                    for f in &u.filters {
                        debug!("{} 0 {}", client, f);
                    }
                }
                self.propose(now, Command::Unsubscribe { client, packet_id: u.packet_id, filters: u.filters });
            }
            Packet::PingReq => {
                self.stats.messages_sent += 1;
                self.actions.push(Action::Send(conn, Packet::PingResp));
            }
            Packet::Disconnect(d) => self.on_disconnect(conn, client, d, now),
            Packet::Auth(_) => {
                // No enhanced authentication method is offered, so an AUTH
                // packet is a protocol error [MQTT-4.12.0-1].
                warn!("Client {} sent AUTH without an authentication method; disconnecting.", client);
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
            other => {
                warn!("Client {} sent {}, which only a server may send; disconnecting.", client, other.name());
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
        }
    }

    fn on_disconnect(&mut self, conn: ConnId, client: Rc<str>, d: Disconnect, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let mut expiry = None;
        if let Some(e) = d.properties.session_expiry_interval {
            if c.session_expiry_secs == 0 && e != 0 {
                // [MQTT-3.14.2-2]
                warn!(
                    "Client {} tried to set a session expiry at DISCONNECT after connecting with 0; disconnecting.",
                    client
                );
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
                return;
            }
            expiry = Some(self.cap_expiry(e));
        }
        if self.settings.connection_messages {
            info!("Client {} disconnected.", client);
        }
        // Reason 0x04 keeps the will; any other DISCONNECT discards it.
        let will = d.code == reason::DISCONNECT_WITH_WILL;
        self.end_session_link(conn, will, expiry, now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Closing;
        }
        self.actions.push(Action::Close(conn));
    }

    fn cap_expiry(&self, secs: u32) -> u32 {
        match self.settings.persistent_expiry_secs_max {
            Some(m) if secs > m => m,
            _ => secs,
        }
    }

    fn on_publish(&mut self, conn: ConnId, client: Rc<str>, mut p: Publish, now: u64) {
        self.stats.publish_received += 1;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let v5 = c.version.is_v5();
        // Topic Alias (v5 §3.3.2.3.4).
        if let Some(a) = p.properties.topic_alias {
            if a == 0 || a > self.settings.limits.topic_alias_max {
                warn!(
                    "Client {} used topic alias {} outside 1..={}; disconnecting.",
                    client, a, self.settings.limits.topic_alias_max
                );
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
        if topic::level_count(&p.topic) > self.settings.limits.topic_levels_max as usize {
            warn!(
                "Client {} published to a topic with more than {} levels; disconnecting.",
                client, self.settings.limits.topic_levels_max
            );
            self.close(conn, Some(reason::TOPIC_NAME_INVALID), now);
            return;
        }
        if p.qos as u8 > self.settings.max_qos {
            warn!(
                "Client {} published at QoS {} above max_qos {}; disconnecting.",
                client, p.qos as u8, self.settings.max_qos
            );
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
                && self.state.sessions.get(&client).is_some_and(|s| s.inbound_qos2.contains(&pid));
            if !known_qos2 {
                c.inbound_unacked += 1;
                // Receive Maximum is a v5 promise [MQTT-3.3.4-7]; 3.1.1 has
                // none, so only the 16-bit packet-id space bounds it.
                let max = if v5 { self.settings.limits.inflight_messages_max as u32 } else { u16::MAX as u32 };
                if c.inbound_unacked > max {
                    warn!("Client {} exceeded the Receive Maximum of {}; disconnecting.", client, max);
                    self.close(conn, Some(reason::RECEIVE_MAXIMUM_EXCEEDED), now);
                    return;
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
            Some((reason::TOPIC_NAME_INVALID, "reserved for dynamic security, which midge does not have", false))
        } else if p.qos != QoS::AtMostOnce || p.retain {
            let cost = p.payload.len() as u64 + p.topic.len() as u64 + 64;
            (self.state.stored_bytes + cost > self.settings.limits.memory_bytes_max).then_some((
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
            QoS::AtMostOnce if !p.retain && !self.settings.apply.upgrade_outgoing_qos => {
                // QoS 0 to online subscribers does not wait for a commit.
                let settings = self.settings.clone();
                let acl = |c: &str, u: Option<&str>, t: &str| settings.allowed(c, u, t, Access::Read);
                let targets = self.state.route(&msg, settings.apply.upgrade_outgoing_qos, &acl);
                let mut offline = false;
                for (target, d) in targets {
                    if self.state.sessions.get(&target).is_some_and(|s| s.online) {
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
    fn ack_unrouted(&mut self, conn: ConnId, client: &str, qos: QoS, pid: u16, code: u8) {
        let ack = PubResp { packet_id: pid, code, properties: Default::default() };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.inbound_done(client);
                self.actions.push(Action::Send(conn, Packet::PubAck(ack)));
            }
            QoS::ExactlyOnce => {
                // Completes the flow normally, without routing; a later
                // PUBREL gets its PUBCOMP.
                self.inbound_done(client);
                self.actions.push(Action::Send(conn, Packet::PubRec(ack)));
            }
        }
    }

    /// The stored form of a PUBLISH.
    fn message_from(&self, client: &Rc<str>, p: &Publish, now: u64) -> Message {
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

    fn on_subscribe(&mut self, conn: ConnId, client: Rc<str>, s: crate::mqtt::Subscribe, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let v5 = c.version.is_v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let existing = self.state.sessions.get(&client).map_or(0, |s| s.subs.len());
        let mut reqs = Vec::new();
        let mut codes = Vec::with_capacity(s.filters.len());
        for (filter, opts) in s.filters {
            let (share, tf) = match topic::parse_shared(&filter) {
                Ok(Some((g, f))) => (Some(g), f),
                Ok(None) => (None, filter.as_str()),
                Err(()) => {
                    codes.push(if v5 { reason::TOPIC_FILTER_INVALID } else { reason::V3_SUBACK_FAILURE });
                    continue;
                }
            };
            if share.is_some() && opts.no_local {
                // [MQTT-3.8.3-4]
                warn!("Client {} set No Local on shared subscription {}; disconnecting.", client, filter);
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
                return;
            }
            let code = if !topic::valid_topic_filter(tf)
                || topic::level_count(tf) > self.settings.limits.topic_levels_max as usize
            {
                if v5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::V3_SUBACK_FAILURE
                }
            } else if !self.conn_allowed(conn, &client, tf, Access::Subscribe) {
                if v5 {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::V3_SUBACK_FAILURE
                }
            } else if existing + reqs.len() >= self.settings.limits.subscriptions_per_client_max as usize {
                if v5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::V3_SUBACK_FAILURE
                }
            } else {
                let granted = QoS::from_u8((opts.qos as u8).min(self.settings.max_qos)).unwrap_or_default();
                let o = SubOptions { qos: granted, ..opts };
                reqs.push(SubscribeReq {
                    filter: filter.clone(),
                    entry: SubEntry { opts: SubOptionsRepr::from_opts(o), sub_id },
                });
                granted as u8
            };
            if self.settings.connection_messages {
                debug!("{} {} {}", client, code, filter);
            }
            codes.push(code);
        }
        let new_filters: Vec<String> = reqs.iter().map(|r| r.filter.clone()).collect();
        self.propose(now, Command::Subscribe { client: client.clone(), packet_id: s.packet_id, reqs, codes });
        // $SYS values are not durable state; they go out as retained QoS 0.
        self.commit(now);
        for f in new_filters {
            self.send_sys_retained(&client, &f, now);
        }
    }

    /// Periodic work: keep-alive and connect timeouts, the durable Tick
    /// (wills, session expiry), $SYS. Call about once a second.
    pub fn tick(&mut self, now: u64) {
        self.state.trim();
        let mut late = Vec::new();
        for (id, c) in &self.conns {
            match c.phase {
                Phase::Connected
                    if c.keep_alive_ms > 0 && now.saturating_sub(c.last_rx_ms) > u64::from(c.keep_alive_ms) * 3 / 2 =>
                {
                    late.push((*id, true));
                }
                Phase::New if now.saturating_sub(c.last_rx_ms) > self.settings.connect_timeout_ms => {
                    late.push((*id, false))
                }
                _ => {}
            }
        }
        for (id, connected) in late {
            if connected {
                info!("Client {} has exceeded timeout, disconnecting.", self.who(id));
                self.close(id, Some(reason::KEEP_ALIVE_TIMEOUT), now);
            } else {
                info!(
                    "Client {} sent no CONNECT within {} ms, disconnecting.",
                    self.who(id),
                    self.settings.connect_timeout_ms
                );
                self.close(id, None, now);
            }
        }
        if now.saturating_sub(self.last_tick_cmd_ms) >= 1000 {
            self.last_tick_cmd_ms = now;
            if self.state.sessions.values().any(|s| !s.online) || !self.state.retained.is_empty() {
                self.propose(now, Command::Tick);
            }
        }
        self.commit(now);
        self.sys_tick(now);
    }
}

#[cfg(test)]
mod tests;
