//! The broker state machine. It owns the volatile per-connection state
//! (protocol version, keep alive, topic aliases, flow control) and the
//! durable `State`, which it changes only by proposing `Command`s.
//!
//! Events go in (`open`, `packet`, `closed`, `tick`) with the current time;
//! `Action`s come out (send a packet, close a connection). It never touches
//! a socket or a clock, so tests, the fuzzer and the cluster simulation run
//! it as is.
//!
//! This file holds the `Broker`, its `Action`s and the packet dispatch;
//! connection lifecycle is in `conn.rs`, PUBLISH in and out in
//! `publish.rs`, the commit pipeline (propose, apply, effects) in
//! `proposals.rs`, CONNECT in `connect.rs`.

pub mod admin;
pub mod bridge;
pub mod command;
mod conn;
mod connect;
pub use connect::{made_up_client_id, ClientIdSource};
pub mod dynsec;
pub mod lazy;
pub mod message;
mod peer;
mod proposals;
mod publish;
mod replay;
pub mod settings;
pub mod state;
mod sys;
pub mod tree;

use std::collections::BTreeMap;
use std::rc::Rc;

use log::{debug, info, warn};

use crate::auth::acl::Access;
use crate::mqtt::{reason, topic, Disconnect, Packet, QoS, SubOptions, Version};
use command::{AckKind, Command, Effect, Entry, SubscribeReq};
use lazy::Lazy;
pub use message::{Message, MessageProps};
pub use peer::PeerAddr;
pub use settings::{AuthScope, ListenerReload, ListenerRules, Settings};
use state::{Delivery, State};
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
    keep_alive_secs: u16,
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
    inbound_unacked: u16,
    /// CONNECT had Session Expiry 0 (a DISCONNECT may not raise it).
    session_expiry_secs: u32,
    /// Set while `Phase::Connecting`.
    pending: Option<Box<PendingConnect>>,
    /// Whether the durable session knows this connection ended.
    session_closed: bool,
    kind: Kind,
    /// Bytes of packets handed to the runtime for this connection and
    /// not yet reported written (`push_send`, `written`): exactly what
    /// the connection makes midge hold in output. QoS 0 deliveries stop
    /// above `out_buffer_bytes_max`; the runtime reads no more input from
    /// a connection above it.
    out_bytes: u32,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub messages_received: u64,
    pub messages_sent: u64,
    /// PUBLISH packets by QoS (index 0, 1, 2).
    pub publish_received: [u64; 3],
    pub publish_sent: [u64; 3],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub dropped_qos0: u64,
    pub dropped_queue_full: u64,
    pub clients_maximum: u64,
}

pub struct Broker {
    settings: Rc<Settings>,
    state: State,
    conns: BTreeMap<ConnId, Box<Conn>>,
    by_client: BTreeMap<Rc<str>, ConnId>,
    /// The sum of every connection's `out_bytes` (for `memory_limit`).
    out_bytes_total: u64,
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
    client_id_source: Option<connect::ClientIdSource>,
    stats: Stats,
    started_ms: u64,
    last_sys_ms: u64,
    sys_retained: std::collections::BTreeMap<Rc<str>, Message>,
    last_tick_cmd_ms: u64,
    /// Whether this node accepts clients (the raft leader with its state
    /// caught up). Always true when not replicated.
    serving: bool,
    /// The last LeaderStart applied: (node, term).
    leader_ready: Option<(u64, u64)>,
    /// `cluster_follower_mode redirect`: the leader's client address, sent
    /// to v5 clients as a Server Reference with CONNACK 0x9C.
    redirect: Option<String>,
    /// `$SYS/broker/cluster/<name>` values, set by the cluster runtime.
    cluster_sys: Vec<(&'static str, String)>,
    /// Bytes the process wrote to disk so far (`$SYS/broker/store/
    /// disk_written_bytes`); None in tests and the simulation.
    disk_written_source: Option<fn() -> Option<u64>>,
    /// Draws the cluster's id when this node is its first leader; None
    /// (tests, the simulation, dynsec_sync's per-node group): no id.
    cluster_id_source: Option<Box<dyn FnMut() -> u128>>,
    control_requests: Vec<(ConnId, Vec<u8>)>,
    last_drop_log_ms: u64,
    dynsec: dynsec::Side,
    /// UNSUBSCRIBE filters the ACL denied, by (client, packet id): their
    /// positions get 0x87 in the UNSUBACK of the command for the others.
    unsub_denied: BTreeMap<(Rc<str>, u16), Vec<usize>>,
    /// A bridge's queue grew since the runtime last looked.
    bridge_wake: bool,
    /// Committed inbound messages of bridges, to acknowledge upstream.
    bridge_acks: Vec<bridge::BridgeAck>,
    /// The data store's disk is full (`set_store_full`).
    store_full: bool,
    /// Retained replays at QoS 0 in progress, per connection (`replay.rs`).
    replays: BTreeMap<ConnId, std::collections::VecDeque<replay::Replay>>,
    /// Connections of listeners with `use_identity_as_username` or
    /// `use_subject_as_username`: the name from the client certificate, or
    /// why there is none (see `set_certificate_name`).
    cert_names: BTreeMap<ConnId, Result<Rc<str>, String>>,
    /// Connections of listeners with a `mount_point`: the prefix of every
    /// topic they publish, subscribe to or leave as a will, taken off the
    /// topics delivered to them.
    /// Connections of listeners that set options of their own.
    conn_options: BTreeMap<ConnId, ConnOptions>,
    /// `per_listener_settings true`: whose rules each client's deliveries
    /// are checked by, the listener it last connected on (in memory only;
    /// see `AuthScope::Unknown`). Shared with the ACL closures of routing.
    client_scopes: Rc<settings::ClientScopes>,
}

/// What a connection's listener sets for it (Mosquitto's per-listener
/// options); `None`: the broker-wide setting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnOptions {
    /// `mount_point`: the prefix of its topics (see `Broker::mounted_filter`).
    pub mount_point: Option<Rc<str>>,
    pub use_username_as_clientid: Option<bool>,
    pub max_qos: Option<u8>,
    pub topic_alias_max: Option<u16>,
    /// The listener's index in the configuration, when it has security
    /// options of its own (`per_listener_settings true`).
    pub listener: Option<usize>,
}

impl Broker {
    pub fn new(settings: Rc<Settings>, now_ms: u64) -> Broker {
        Broker {
            settings,
            state: State::default(),
            conns: BTreeMap::new(),
            by_client: BTreeMap::new(),
            out_bytes_total: 0,
            actions: Vec::new(),
            effects: Vec::new(),
            proposals: Vec::new(),
            auto_commit: true,
            apply_at_propose: false,
            proposals_applied: 0,
            next_assigned_id: 0,
            client_id_source: None,
            stats: Stats::default(),
            started_ms: now_ms,
            last_sys_ms: 0,
            sys_retained: Default::default(),
            last_tick_cmd_ms: now_ms,
            serving: true,
            leader_ready: None,
            redirect: None,
            cluster_sys: Vec::new(),
            disk_written_source: None,
            cluster_id_source: None,
            control_requests: Vec::new(),
            last_drop_log_ms: 0,
            dynsec: dynsec::Side::default(),
            unsub_denied: BTreeMap::new(),
            store_full: false,
            replays: BTreeMap::new(),
            cert_names: BTreeMap::new(),
            conn_options: BTreeMap::new(),
            client_scopes: Rc::default(),
            bridge_wake: false,
            bridge_acks: Vec::new(),
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

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The durable state, to read: it changes only as commands apply
    /// (`apply_committed`), by a snapshot (`install_state`) or a membership
    /// change (`peer_added`, `peer_removed`).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Replace the durable state by one restored from a snapshot (at start,
    /// or when the raft log sends one).
    pub fn install_state(&mut self, state: State) {
        self.state = state;
        self.dynsec_state_installed();
    }

    /// A raft membership change added node `id` at `addr`, applied in log
    /// order (see `State::peer_added`).
    pub fn peer_added(&mut self, id: u64, addr: String) {
        self.state.peer_added(id, addr);
    }

    /// A raft membership change removed node `id`.
    pub fn peer_removed(&mut self, id: u64) {
        self.state.peer_removed(id);
    }

    /// The last LeaderStart command applied: (node, term).
    pub fn leader_ready(&self) -> Option<(u64, u64)> {
        self.leader_ready
    }

    /// `cluster_follower_mode redirect`: the leader's client address, sent
    /// to v5 clients as a Server Reference with CONNACK 0x9C.
    pub fn set_redirect(&mut self, redirect: Option<String>) {
        self.redirect = redirect;
    }

    /// `$SYS/broker/cluster/<name>` values, set by the cluster runtime.
    /// Where `$SYS/broker/store/disk_written_bytes` comes from (the
    /// runtime reads it from the OS).
    pub fn set_disk_written_source(&mut self, f: fn() -> Option<u64>) {
        self.disk_written_source = Some(f);
    }

    pub fn set_cluster_sys(&mut self, sys: Vec<(&'static str, String)>) {
        self.cluster_sys = sys;
    }

    /// Where the cluster's id comes from (a random source), for the first
    /// leader to propose it.
    pub fn set_cluster_id_source(&mut self, source: Box<dyn FnMut() -> u128>) {
        self.cluster_id_source = Some(source);
    }

    /// Start or stop serving clients. Stopping closes every client
    /// connection at once (v5 clients get DISCONNECT 0x9C, Use another
    /// server): a node that is not the leader never serves a session.
    pub fn set_serving(&mut self, serving: bool, now: u64) {
        if self.serving == serving {
            return;
        }
        self.serving = serving;
        if serving {
            if self.state.cluster_id() == 0 {
                if let Some(id) = self.cluster_id_source.as_mut().map(|f| f()) {
                    self.propose(now, Command::ClusterId { id });
                }
            }
            self.dynsec_serving(now);
        } else {
            self.dynsec_clear_pending();
            self.unsub_denied.clear();
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
            self.bridge_acks.clear();
        }
    }

    /// The data store found its disk full (true) or has written again
    /// (false). While it is full, what needs a new durable write is
    /// refused: a CONNECT (MQTT 5: CONNACK 0x97 Quota exceeded; 3.1.1:
    /// 0x03 Server unavailable), a QoS 1/2 or retained PUBLISH (MQTT 5:
    /// PUBACK/PUBREC 0x97; 3.1.1: disconnected without acknowledgement,
    /// so the client sends it again later) and a SUBSCRIBE (0x97, 3.1.1:
    /// 0x80). QoS 0 messages, PINGs and deliveries already under way go on.
    /// What cannot be refused (acknowledgements, disconnects, wills) waits
    /// in memory for the disk.
    pub fn set_store_full(&mut self, full: bool) {
        self.store_full = full;
    }

    pub fn store_full(&self) -> bool {
        self.store_full
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

    pub fn count_received(&mut self, received: u64) {
        self.stats.bytes_received += received;
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

    /// Whether the ACL lets connection `conn` of `client` do `access` on
    /// `topic`. The user name is its CONNECT's: held by the connection
    /// until the Connect command applies, then by the session.
    fn conn_allowed(&self, conn: ConnId, client: &str, topic: &str, access: Access) -> bool {
        let scope = self.conn_scope(conn);
        if !self.settings.has_acl(scope) {
            return true;
        }
        let pending = self.conns.get(&conn).and_then(|c| c.pending.as_ref());
        let username = match pending {
            Some(p) => p.username.as_deref(),
            None => self.state.sessions().get(client).and_then(|s| s.username.as_deref()),
        };
        self.settings.allowed(scope, self.dynsec_data().map(|d| &**d), client, username, topic, access)
    }

    /// Whose security rules apply to connection `conn`: its listener's.
    fn conn_scope(&self, conn: ConnId) -> AuthScope {
        self.settings.listener_scope(self.conn_options.get(&conn).and_then(|o| o.listener))
    }

    /// `client` connected on connection `conn`: its deliveries are checked
    /// by that listener's rules from now on (`per_listener_settings true`).
    fn remember_scope(&mut self, client: &Rc<str>, conn: ConnId) {
        if !self.settings.per_listener() {
            return;
        }
        let scope = self.conn_scope(conn);
        let sessions = self.state.sessions();
        let scopes = Rc::make_mut(&mut self.client_scopes);
        // Entries of sessions that ended go, at most as many again as there
        // are sessions: the map stays bounded by the session limits.
        if scopes.len() > 2 * sessions.len() + 64 {
            scopes.retain(|c, _| sessions.contains_key(c));
        }
        scopes.insert(client.clone(), scope);
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
                self.on_unsubscribe(conn, client, u.packet_id, u.filters, now);
            }
            Packet::PingReq => {
                self.stats.messages_sent += 1;
                self.push_send(conn, Packet::PingResp);
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

    /// UNSUBSCRIBE: filters the ACL denies (dynamic security's
    /// unsubscribe ACLs) stay subscribed and get 0x87 in the UNSUBACK, as
    /// in Mosquitto 2.0; the others go through the log.
    fn on_unsubscribe(&mut self, conn: ConnId, client: Rc<str>, packet_id: u16, filters: Vec<String>, now: u64) {
        // (Mosquitto 2.0.11 forgets the mount point here, so its clients
        // cannot unsubscribe.)
        let filters: Vec<String> = filters.into_iter().map(|f| self.mounted_filter(conn, f)).collect();
        let mut denied = Vec::new();
        let mut allowed = Vec::with_capacity(filters.len());
        for (i, f) in filters.into_iter().enumerate() {
            if self.conn_allowed(conn, &client, &f, Access::Unsubscribe) {
                allowed.push(f);
            } else {
                info!("Denied UNSUBSCRIBE from {} to {} (not authorised by the ACL).", client, f);
                denied.push(i);
            }
        }
        if denied.is_empty() {
            self.propose(now, Command::Unsubscribe { client, packet_id, filters: allowed });
        } else if allowed.is_empty() {
            let codes = vec![reason::NOT_AUTHORIZED; denied.len()];
            self.push_send(
                conn,
                Packet::UnsubAck(crate::mqtt::UnsubAck { packet_id, codes, properties: Default::default() }),
            );
        } else {
            self.unsub_denied.insert((client.clone(), packet_id), denied);
            self.propose(now, Command::Unsubscribe { client, packet_id, filters: allowed });
        }
    }

    /// The UNSUBACK codes of a command, with the denied filters put back.
    fn unsuback_codes(&mut self, client: &Rc<str>, packet_id: u16, codes: Vec<u8>) -> Vec<u8> {
        let Some(denied) = self.unsub_denied.remove(&(client.clone(), packet_id)) else { return codes };
        let total = codes.len() + denied.len();
        let mut out = Vec::with_capacity(total);
        let mut codes = codes.into_iter();
        for i in 0..total {
            if denied.contains(&i) {
                out.push(reason::NOT_AUTHORIZED);
            } else if let Some(c) = codes.next() {
                out.push(c);
            }
        }
        out
    }

    /// A connection of a listener that sets options of its own (before
    /// its CONNECT).
    pub fn set_conn_options(&mut self, conn: ConnId, o: ConnOptions) {
        self.conn_options.insert(conn, o);
    }

    /// The connection's mount point, if its listener has one.
    fn mount_of(&self, conn: ConnId) -> Option<&Rc<str>> {
        self.conn_options.get(&conn).and_then(|o| o.mount_point.as_ref())
    }

    /// `max_qos` for the connection: its listener's, else the broker's.
    fn max_qos_for(&self, conn: ConnId) -> u8 {
        self.conn_options.get(&conn).and_then(|o| o.max_qos).unwrap_or(self.settings.max_qos)
    }

    /// `max_topic_alias` for the connection: its listener's, else the broker's.
    fn topic_alias_max_for(&self, conn: ConnId) -> u16 {
        self.conn_options.get(&conn).and_then(|o| o.topic_alias_max).unwrap_or(self.settings.limits.topic_alias_max)
    }

    /// `filter` under the connection's mount point, if it has one (a shared
    /// subscription's filter after its group).
    fn mounted_filter(&self, conn: ConnId, filter: String) -> String {
        let Some(m) = self.mount_of(conn) else { return filter };
        match filter.strip_prefix("$share/").and_then(|r| r.split_once('/')) {
            Some((group, f)) => format!("$share/{group}/{m}{f}"),
            None if filter.starts_with("$share/") => filter,
            None => format!("{m}{filter}"),
        }
    }

    fn on_subscribe(&mut self, conn: ConnId, client: Rc<str>, mut s: crate::mqtt::Subscribe, now: u64) {
        if self.mount_of(conn).is_some() {
            let filters = std::mem::take(&mut s.filters);
            s.filters = filters.into_iter().map(|(f, o)| (self.mounted_filter(conn, f), o)).collect();
        }
        let Some(c) = self.conns.get(&conn) else { return };
        let v5 = c.version.is_v5();
        if self.store_full {
            // Subscriptions are durable: refused, the connection kept.
            info!("Denied SUBSCRIBE from {} (the data store is full).", client);
            let code = if v5 { reason::QUOTA_EXCEEDED } else { reason::V3_SUBACK_FAILURE };
            let codes = vec![code; s.filters.len()];
            let ack = crate::mqtt::SubAck { packet_id: s.packet_id, codes, properties: Default::default() };
            self.push_send(conn, Packet::SubAck(ack));
            return;
        }
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let existing = self.state.sessions().get(&client).map_or(0, |s| s.subs.len());
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
                let granted = QoS::from_u8((opts.qos as u8).min(self.max_qos_for(conn))).unwrap_or_default();
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
        self.expire_dynsec_requests(now);
        let mut late = Vec::new();
        for (id, c) in &self.conns {
            match c.phase {
                Phase::Connected
                    if c.keep_alive_secs > 0
                        && now.saturating_sub(c.last_rx_ms) > u64::from(c.keep_alive_secs) * 1500 =>
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
            if self.state.sessions().values().any(|s| !s.online) || !self.state.retained().is_empty() {
                self.propose(now, Command::Tick);
            }
        }
        self.commit(now);
        self.sys_tick(now);
    }
}

#[cfg(test)]
mod tests;
