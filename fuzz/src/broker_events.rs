//! Target `broker_events`: the sans-io broker driven like the runtime
//! (src/net) drives it, over up to four connections at once.
//!
//! Input: three configuration bytes (all zero = `Config::default()`), then
//! events. Each event is one op byte: low nibble = kind, bits 4-5 = the
//! connection slot (0..4), bits 6-7 = a variant; most kinds read more
//! bytes. Past the end of the input every byte reads as 0.
//!
//! | op & 15      | event                                                        |
//! |--------------|--------------------------------------------------------------|
//! | 0            | open a connection in the slot (new ConnId)                   |
//! | 1            | the socket closes: `closed()`                                |
//! | 2, 12, 13    | raw bytes: len byte + bytes, read like the runtime reads     |
//! | 3            | time passes (byte: amount), then `tick()`                    |
//! | 4            | CONNECT built from the input, encoded, read                  |
//! | 5, 14        | PUBLISH                                                      |
//! | 6            | SUBSCRIBE                                                    |
//! | 7            | UNSUBSCRIBE                                                  |
//! | 8            | PUBACK / PUBREC / PUBREL / PUBCOMP with a chosen packet id   |
//! | 9            | PINGREQ or DISCONNECT                                        |
//! | 10           | `written()`: all or half of the connection's output written  |
//! | 11, 15       | send the acks a well-behaved client owes (PUBACK for QoS 1,  |
//! |              | PUBREC/PUBREL/PUBCOMP for QoS 2), up to n of them            |
//!
//! Built packets are encoded for the connection's version and go through
//! the real decoder, like raw bytes: the broker only ever sees what
//! `decode` returns (or `decode_error`). A decode error stops reading the
//! connection, as the runtime does. Connection ids are never reused.
//!
//! After every event the actions are drained and checked:
//! * every `Action::Send` encodes (`encoded_len` = bytes written) and
//!   decodes back, for the version the runtime would encode it with, to
//!   the same packet (less what 3.1/3.1.1 cannot carry);
//! * a Send goes to a connection that is open, and never after an
//!   `Action::Close` for it ("flush, then close": later bytes would race
//!   the close);
//! * to a v5 client: no PUBLISH over its Maximum Packet Size, no Topic
//!   Alias above its Topic Alias Maximum; no PUBLISH above max_qos;
//! * as the client sees it: a Topic Alias is set before a PUBLISH uses it
//!   alone; every PUBLISH matches a filter the client id subscribed to
//!   (some time; `topic::matches` against the broker's topic tree); a new
//!   QoS 1/2 PUBLISH never reuses a packet id still in flight, and no more
//!   are in flight than the client's Receive Maximum / the broker's window;
//! * `connections()` = connections opened and not closed;
//! * durable state accounting: `stored_bytes` < 1 GiB and exactly the
//!   sum it stands for (queued + in-flight + retained message costs, the
//!   formula `State::restore` recomputes), each session's `queued_bytes`
//!   is its queue's cost, queues within their limits, the topic tree holds
//!   as many entries as the sessions have subscriptions, no more sessions
//!   online than connections, no in-flight packet id 0.
//!
//! At the end every connection is closed, time jumps ahead, and then no
//! session may be online; the state must survive `snapshot` + `restore`
//! unchanged.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use midge::auth::acl::AclFile;
use midge::broker::state::{Outbound, State};
use midge::broker::{Action, Broker, ConnId, Settings};
use midge::config::Config;
use midge::mqtt::codec::{decode, encode, encoded_len};
use midge::mqtt::{
    Connect, Disconnect, Packet, Properties, PropertyValues, PubResp, Publish, QoS, RetainHandling, SubOptions, Subscribe, Unsubscribe,
    Version, Will,
};

use crate::packet_reader::expected_after_roundtrip;
use crate::Input;

pub const SLOTS: usize = 4;
/// Events per input (bounds the time one input takes).
pub const MAX_EVENTS: usize = 400;
const START_MS: u64 = 1_700_000_000_000;

pub const CLIENT_IDS: [&str; 8] = ["c0", "c1", "c2", "c0", "c1", "", "client-id-longer-than-23-chars", "c/+#"];
pub const TOPICS: [&str; 8] = ["a", "a/b", "a/b/c", "b", "$SYS/x", "c/c0/x", "a/secret", "x/y/z/w"];
pub const FILTERS: [&str; 16] = [
    "#",
    "+",
    "a/#",
    "a/+",
    "a/b",
    "$SYS/#",
    "$share/g/a/#",
    "$share/g/#",
    "+/+/+",
    "a/b/c",
    "a//b",
    "a/#/b",
    "$share/g",
    "c/+/x",
    "$SYS/broker/+",
    "b",
];

/// The ACL used when configuration byte 2 has bit 0 set.
pub const ACL: &str = "\
topic readwrite a/#
topic deny a/secret
topic read $SYS/#
topic write b
pattern readwrite c/%c/#
user u1
topic readwrite #
";

/// Op kinds (low nibble of the op byte), for building inputs.
pub mod op {
    pub const OPEN: u8 = 0;
    pub const CLOSE: u8 = 1;
    pub const RAW: u8 = 2;
    pub const TICK: u8 = 3;
    pub const CONNECT: u8 = 4;
    pub const PUBLISH: u8 = 5;
    pub const SUBSCRIBE: u8 = 6;
    pub const UNSUBSCRIBE: u8 = 7;
    pub const ACK: u8 = 8;
    pub const PING_OR_DISCONNECT: u8 = 9;
    pub const WRITTEN: u8 = 10;
    pub const AUTO_ACK: u8 = 11;

    /// The op byte for `kind` on `slot` with `variant` (0..4).
    pub fn byte(kind: u8, slot: u8, variant: u8) -> u8 {
        kind | ((slot & 3) << 4) | ((variant & 3) << 6)
    }
}

pub fn settings(c0: u8, c1: u8, c2: u8) -> Settings {
    let mut cfg = Config::default();
    let lim = &mut cfg.limits;
    if c0 & 1 != 0 {
        lim.inflight_messages_max = 2;
    }
    if c0 & 2 != 0 {
        lim.queued_messages_max = 3;
        lim.queued_bytes_max = 400;
    }
    if c0 & 4 != 0 {
        lim.memory_bytes_max = 1000;
    }
    if c0 & 8 != 0 {
        cfg.retain_available = false;
    }
    match (c0 >> 4) & 3 {
        1 => cfg.max_qos = 1,
        2 => cfg.max_qos = 0,
        _ => {}
    }
    if c0 & 64 != 0 {
        cfg.queue_qos0_messages = true;
    }
    if c0 & 128 != 0 {
        cfg.persistent_client_expiration_secs = Some(60);
        cfg.limits.keepalive_secs_max = 30;
    }
    let lim = &mut cfg.limits;
    if c1 & 1 != 0 {
        lim.message_bytes_max = 16;
    }
    if c1 & 2 != 0 {
        lim.topic_alias_max = 0;
    } else if c1 & 4 != 0 {
        lim.topic_alias_max = 2;
    }
    if c1 & 8 != 0 {
        lim.retained_messages_max = 2;
    }
    if c1 & 16 != 0 {
        lim.subscriptions_per_client_max = 2;
    }
    if c1 & 32 != 0 {
        lim.packet_bytes_max = 128;
    }
    if c1 & 64 != 0 {
        lim.topic_levels_max = 3;
    }
    if c1 & 128 != 0 {
        cfg.sys_interval_secs = 0;
    }
    if c2 & 2 != 0 {
        cfg.connection_messages = false;
    }
    let acl = if c2 & 1 != 0 { Some(AclFile::parse_str(ACL, "fuzz.acl").expect("fuzz ACL parses")) } else { None };
    cfg.broker_settings(None, acl)
}

#[derive(Default)]
struct Slot {
    id: ConnId,
    /// Bytes read and not yet decoded.
    buf: Vec<u8>,
    /// A decode error ended reading (the runtime then only flushes).
    read_stopped: bool,
    /// Version for building packets: of the last CONNECT built here.
    built_version: Option<Version>,
    /// Acks this client owes the broker, oldest first.
    owed: VecDeque<Packet>,
}

/// What the checks know about a connection id.
#[derive(Default)]
struct Track {
    open: bool,
    /// Event in which `closed()` was called for it.
    closed_at: Option<u64>,
    close_action: bool,
    /// Last version the broker reported for it.
    version: Option<Version>,
    /// From the CONNECT the broker took (v5 limits on what it may send).
    max_packet: Option<u32>,
    alias_max: u16,
    /// Client's Receive Maximum (65535 when it sets none, and for 3.x).
    receive_max: u16,
    /// Client id the connection's session has (None: assigned and unknown).
    client_id: Option<String>,
    /// Topic aliases the broker set on this connection (client's view).
    aliases_in: HashMap<u16, String>,
    /// QoS 1/2 PUBLISHes sent to the client and not yet completed by it
    /// (PUBACK, PUBCOMP, or PUBREC >= 0x80), by packet id.
    outstanding: HashMap<u16, QoS>,
}

pub struct Harness {
    pub broker: Broker,
    settings: Rc<Settings>,
    now: u64,
    next_id: ConnId,
    slots: [Option<Slot>; SLOTS],
    tracks: HashMap<ConnId, Track>,
    /// Every filter each client id ever sent in a SUBSCRIBE ($share/ prefix
    /// stripped): a PUBLISH to a client must match one of them.
    ever_subscribed: HashMap<String, Vec<String>>,
    open: usize,
    /// Events run so far.
    event: u64,
}

impl Harness {
    pub fn new(c0: u8, c1: u8, c2: u8) -> Harness {
        let settings = Rc::new(settings(c0, c1, c2));
        Harness {
            broker: Broker::new(settings.clone(), START_MS),
            settings,
            now: START_MS,
            next_id: 1,
            slots: Default::default(),
            tracks: HashMap::new(),
            ever_subscribed: HashMap::new(),
            open: 0,
            event: 0,
        }
    }

    fn ensure_open(&mut self, s: usize) -> ConnId {
        if let Some(slot) = &self.slots[s] {
            return slot.id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.broker.open(id, std::net::SocketAddr::from(([127, 0, 0, 1], (40000 + id % 20000) as u16)), self.now);
        self.slots[s] = Some(Slot { id, ..Default::default() });
        self.tracks.insert(id, Track { open: true, ..Default::default() });
        self.open += 1;
        id
    }

    fn close(&mut self, s: usize) {
        let Some(slot) = self.slots[s].take() else { return };
        self.broker.closed(slot.id, self.now);
        if let Some(t) = self.tracks.get_mut(&slot.id) {
            t.open = false;
            t.closed_at = Some(self.event);
        }
        self.open -= 1;
    }

    /// Bytes arrive on slot `s`: decode and hand over packets like
    /// `read_loop` in src/net does.
    fn read(&mut self, s: usize, bytes: &[u8]) {
        let id = self.ensure_open(s);
        let max = self.settings.limits.packet_bytes_max;
        let slot = self.slots[s].as_mut().expect("slot just opened");
        if slot.read_stopped {
            return;
        }
        slot.buf.extend_from_slice(bytes);
        let buf = std::mem::take(&mut slot.buf);
        let mut pos = 0;
        let mut stopped = false;
        while pos < buf.len() {
            let version = self.broker.version(id);
            match decode(&buf[pos..], version, max) {
                Ok(Some((p, used))) => {
                    pos += used;
                    self.client_view(id, version, &p);
                    self.broker.packet(id, p, self.now);
                }
                Ok(None) => break,
                Err(e) => {
                    self.broker.decode_error(id, &e, self.now);
                    stopped = true;
                    break;
                }
            }
        }
        let slot = self.slots[s].as_mut().expect("slot stays open while reading");
        if stopped {
            slot.read_stopped = true;
        } else {
            slot.buf = buf[pos..].to_vec();
        }
    }

    /// What the client side knows once the broker gets `p` from it.
    fn client_view(&mut self, id: ConnId, version: Option<Version>, p: &Packet) {
        let t = self.tracks.get_mut(&id).expect("tracked");
        match p {
            // The CONNECT the broker takes for this connection.
            Packet::Connect(c) if version.is_none() => {
                t.receive_max = u16::MAX;
                if c.version.is_v5() {
                    t.max_packet = c.properties.maximum_packet_size;
                    t.alias_max = c.properties.topic_alias_maximum.unwrap_or(0);
                    t.receive_max = c.properties.receive_maximum.unwrap_or(u16::MAX);
                }
                t.client_id = (!c.client_id.is_empty()).then(|| c.client_id.clone());
            }
            Packet::Subscribe(sub) => {
                if let Some(c) = &t.client_id {
                    let ever = self.ever_subscribed.entry(c.clone()).or_default();
                    for (f, _) in &sub.filters {
                        let f = match midge::mqtt::topic::parse_shared(f) {
                            Ok(Some((_, inner))) => inner,
                            _ => f.as_str(),
                        };
                        if !ever.iter().any(|e| e == f) {
                            ever.push(f.to_string());
                        }
                    }
                }
            }
            Packet::PubAck(r) if t.outstanding.get(&r.packet_id) == Some(&QoS::AtLeastOnce) => {
                t.outstanding.remove(&r.packet_id);
            }
            // An error PUBREC ends the flow; midge takes it for a QoS 1
            // message too (AckKind::Discard).
            Packet::PubRec(r) if r.code >= 0x80 => {
                t.outstanding.remove(&r.packet_id);
            }
            Packet::PubComp(r) if t.outstanding.get(&r.packet_id) == Some(&QoS::ExactlyOnce) => {
                t.outstanding.remove(&r.packet_id);
            }
            _ => {}
        }
    }

    /// Encode a packet the client builds, for the version its connection
    /// uses, and read it.
    fn send_built(&mut self, s: usize, p: Packet) {
        let id = self.ensure_open(s);
        let slot = self.slots[s].as_ref().expect("open");
        let v = self.broker.version(id).or(slot.built_version).unwrap_or(Version::V311);
        let mut out = Vec::new();
        encode(&p, v, &mut out);
        self.read(s, &out);
    }

    fn built_version(&self, s: usize) -> Version {
        let Some(slot) = &self.slots[s] else { return Version::V311 };
        self.broker.version(slot.id).or(slot.built_version).unwrap_or(Version::V311)
    }

    pub fn tick(&mut self, advance_ms: u64) {
        self.now += advance_ms;
        self.broker.tick(self.now);
    }

    /// Run one event; false at the end of the input.
    pub fn step(&mut self, input: &mut Input<'_>) -> bool {
        if input.is_empty() {
            return false;
        }
        self.event += 1;
        let opb = input.u8();
        let s = usize::from((opb >> 4) & 3);
        let variant = opb >> 6;
        match opb & 15 {
            op::OPEN => {
                self.ensure_open(s);
            }
            op::CLOSE => self.close(s),
            2 | 12 | 13 => {
                let n = usize::from(input.u8());
                let bytes = input.bytes(n);
                self.read(s, bytes);
            }
            op::TICK => {
                let b = input.u8();
                let unit: u64 = match variant {
                    0 => 20,
                    1 => 1000,
                    2 => 60_000,
                    _ => 3_600_000,
                };
                self.tick(u64::from(b) * unit);
            }
            op::CONNECT => {
                let c = build_connect(input, variant);
                self.ensure_open(s);
                self.slots[s].as_mut().expect("open").built_version = Some(c.version);
                self.send_built(s, Packet::Connect(Box::new(c)));
            }
            5 | 14 => {
                let v5 = self.built_version(s).is_v5();
                let p = build_publish(input, variant, v5);
                self.send_built(s, Packet::Publish(p));
            }
            op::SUBSCRIBE => {
                let v5 = self.built_version(s).is_v5();
                let p = build_subscribe(input, variant, v5);
                self.send_built(s, Packet::Subscribe(p));
            }
            op::UNSUBSCRIBE => {
                let b = input.u8();
                let n = 1 + usize::from(b % 3);
                let filters = (0..n).map(|_| FILTERS[usize::from(input.u8() % 16)].to_string()).collect();
                let p = Unsubscribe { packet_id: 1 + u16::from(b >> 4), filters, properties: Properties::default() };
                self.send_built(s, Packet::Unsubscribe(p));
            }
            op::ACK => {
                let b = input.u8();
                let packet_id = 1 + u16::from(b >> 2) % 8;
                let code = if variant == 1 { 0x80 } else { 0 };
                let r = PubResp { packet_id, code, properties: Properties::default() };
                let p = match b & 3 {
                    0 => Packet::PubAck(r),
                    1 => Packet::PubRec(r),
                    2 => Packet::PubRel(PubResp { code: 0, ..r }),
                    _ => Packet::PubComp(PubResp { code: 0, ..r }),
                };
                self.send_built(s, p);
            }
            op::PING_OR_DISCONNECT => {
                let p = match variant {
                    0 => Packet::PingReq,
                    1 => Packet::Disconnect(Disconnect { code: 0, properties: Properties::default() }),
                    2 => Packet::Disconnect(Disconnect { code: 0x04, properties: Properties::default() }),
                    _ => {
                        let e = [0u32, 5, 3600, u32::MAX][usize::from(input.u8() & 3)];
                        let properties = PropertyValues { session_expiry_interval: Some(e), ..Default::default() }.into();
                        Packet::Disconnect(Disconnect { code: 0, properties })
                    }
                };
                self.send_built(s, p);
            }
            op::WRITTEN => {
                let id = self.ensure_open(s);
                let held = self.broker.out_buffered(id);
                self.broker.written(id, if variant & 1 != 0 { held } else { held / 2 }, self.now);
            }
            _ => {
                // 11, 15: owed acks, in order.
                let n = 1 + usize::from(input.u8() % 8);
                for _ in 0..n {
                    let Some(p) = self.slots[s].as_mut().and_then(|slot| slot.owed.pop_front()) else { break };
                    self.send_built(s, p);
                }
            }
        }
        true
    }

    /// Drain the broker's actions and check them and the state.
    pub fn drain_and_check(&mut self) {
        let actions: Vec<Action> = self.broker.take_actions().collect();
        for a in actions {
            if trace() {
                eprintln!("  event {} t+{}ms: {a:?}", self.event, self.now - START_MS);
            }
            match a {
                Action::Send(id, p) => self.check_send(id, p),
                Action::Close(id) => {
                    let t = self.tracks.get_mut(&id).unwrap_or_else(|| panic!("Close for unknown connection {id}"));
                    t.close_action = true;
                }
            }
        }
        for (id, t) in self.tracks.iter_mut() {
            if t.open {
                if let Some(v) = self.broker.version(*id) {
                    t.version = Some(v);
                }
            }
        }
        self.check_state();
    }

    fn check_send(&mut self, id: ConnId, p: Packet) {
        let Some(t) = self.tracks.get(&id) else { panic!("Send of {} to connection {id}, never opened", p.name()) };
        // A Send produced by the very event that closed the connection is
        // dropped by the runtime; one to a connection closed earlier means
        // the broker kept a stale connection id.
        if let Some(e) = t.closed_at {
            assert_eq!(e, self.event, "Send of {} to connection {id}, closed in an earlier event", p.name());
        }
        assert!(!t.close_action, "Send of {} to connection {id} after Action::Close for it: {p:?}", p.name());
        // The runtime encodes with the connection's version, 3.1.1 before CONNECT.
        let v = self.broker.version(id).or(t.version).unwrap_or(Version::V311);
        let mut out = Vec::new();
        encode(&p, v, &mut out);
        assert_eq!(out.len(), encoded_len(&p, v), "encoded_len differs from encode for {}", p.name());
        let back = match decode(&out, Some(v), u32::MAX) {
            Ok(Some((q, n))) if n == out.len() => q,
            other => panic!(
                "broker sent {} that does not decode back for {v:?}: {other:?}\npacket {p:?}\nbytes {out:02x?}",
                p.name()
            ),
        };
        assert_eq!(
            back,
            expected_after_roundtrip(&p, v),
            "broker sent {} that changes through encode/decode",
            p.name()
        );
        if let Packet::ConnAck(a) = &p {
            if let Some(c) = &a.properties.assigned_client_identifier {
                self.tracks.get_mut(&id).expect("tracked").client_id = Some(c.clone());
            }
        }
        if let Packet::Publish(x) = &back {
            self.check_publish_to_client(id, x);
        }
        let t = self.tracks.get(&id).expect("tracked");
        if let Packet::Publish(x) = &p {
            assert!(x.qos as u8 <= self.settings.max_qos, "PUBLISH at QoS {:?} above max_qos", x.qos);
            if v.is_v5() {
                if let Some(m) = t.max_packet {
                    assert!(
                        out.len() as u64 <= u64::from(m),
                        "PUBLISH of {} bytes over the client's max {m}",
                        out.len()
                    );
                }
                if let Some(a) = x.properties.topic_alias {
                    assert!(a >= 1 && a <= t.alias_max, "Topic Alias {a} above the client's maximum {}", t.alias_max);
                }
            }
        }
        // What a well-behaved client answers (from the packet as it arrives).
        let owe = match &back {
            Packet::Publish(x) => match (x.qos, x.packet_id) {
                (QoS::AtLeastOnce, Some(pid)) => Some(Packet::PubAck(ack(pid))),
                (QoS::ExactlyOnce, Some(pid)) => Some(Packet::PubRec(ack(pid))),
                _ => None,
            },
            Packet::PubRec(r) if r.code < 0x80 => Some(Packet::PubRel(ack(r.packet_id))),
            Packet::PubRel(r) => Some(Packet::PubComp(ack(r.packet_id))),
            _ => None,
        };
        if let Some(o) = owe {
            if let Some(slot) = self.slots.iter_mut().flatten().find(|s| s.id == id) {
                if slot.owed.len() < 64 {
                    slot.owed.push_back(o);
                }
            }
        }
    }

    /// A PUBLISH as the client receives it: its topic (alias resolved)
    /// matches a filter the client subscribed to; a new QoS 1/2 message does
    /// not reuse a packet id in flight, nor exceed the Receive Maximum.
    fn check_publish_to_client(&mut self, id: ConnId, x: &Publish) {
        let window = self.settings.limits.inflight_messages_max;
        let state = self.broker.state();
        let t = self.tracks.get_mut(&id).expect("tracked");
        let topic = match (x.topic.is_empty(), x.properties.topic_alias) {
            (true, Some(a)) => match t.aliases_in.get(&a) {
                Some(topic) => topic.clone(),
                None if allowed("topic-alias-of-dropped-publish") => return,
                None => panic!("PUBLISH with Topic Alias {a} that was never set on connection {id}"),
            },
            (true, None) => panic!("PUBLISH with an empty topic and no alias"),
            (false, alias) => {
                if let Some(a) = alias {
                    t.aliases_in.insert(a, x.topic.to_string());
                }
                x.topic.to_string()
            }
        };
        if let Some(c) = &t.client_id {
            let ever = self.ever_subscribed.get(c);
            assert!(
                ever.is_some_and(|fs| fs.iter().any(|f| midge::mqtt::topic::matches(f, &topic))),
                "PUBLISH on {topic:?} to client {c:?}, which never subscribed to a matching filter (it did to {ever:?})"
            );
        }
        if let Some(pid) = x.packet_id {
            if !x.dup {
                assert!(
                    !t.outstanding.contains_key(&pid),
                    "new PUBLISH to connection {id} reuses packet id {pid}, still in flight"
                );
            }
            t.outstanding.insert(pid, x.qos);
            let max = usize::from(t.receive_max.min(window).max(1));
            assert!(
                t.outstanding.len() <= max || (x.dup && allowed("resend-over-receive-maximum")),
                "{} QoS>0 PUBLISHes in flight to connection {id}, over its Receive Maximum / window {max}: \
                 client sees {:?}, session has {:?}",
                t.outstanding.len(),
                {
                    let mut v: Vec<_> = t.outstanding.iter().collect();
                    v.sort();
                    v
                },
                t.client_id.as_deref().and_then(|c| state.sessions().get(c)).map(|s| {
                    s.inflight.iter().map(|(k, o)| (*k, matches!(o, Outbound::Released))).collect::<Vec<_>>()
                })
            );
        }
    }

    pub fn check_state(&self) {
        assert_eq!(self.broker.connections(), self.open, "connections() differs from connections open");
        let st = self.broker.state();
        let lim = &self.settings.limits;
        assert!(st.stored_bytes() < 1 << 30, "stored_bytes is absurd: {}", st.stored_bytes());
        let mut expected = 0u64;
        let mut subs = 0usize;
        let mut online = 0usize;
        for (c, s) in st.sessions() {
            let q: u64 = s.queue.iter().map(|d| d.msg.cost_bytes()).sum();
            assert_eq!(s.queue.bytes, q, "queued_bytes of session {c} is not the cost of its queue");
            assert!(s.queue.len() <= lim.queued_messages_max as usize, "queue of {c} over max_queued_messages");
            assert!(s.queue.bytes <= lim.queued_bytes_max, "queue of {c} over max_queued_bytes");
            assert!(!s.inflight.contains_key(&0), "packet id 0 in flight for {c}");
            expected += q;
            for o in s.inflight.values() {
                if let Outbound::Publish(d) = o {
                    expected += d.msg.cost_bytes();
                }
            }
            subs += s.subs.len();
            online += usize::from(s.online);
        }
        expected += st.retained().values().map(|m| m.cost_bytes()).sum::<u64>();
        assert_eq!(st.stored_bytes(), expected, "stored_bytes drifted from the messages it counts");
        assert!(st.retained().len() <= lim.retained_messages_max as usize, "more retained messages than the max");
        assert_eq!(st.tree().len(), subs, "topic tree size differs from the sessions' subscriptions");
        assert!(online <= self.broker.connections(), "{online} sessions online with {} connections", self.open);
    }

    /// End of input: every socket closes, time runs on, then no session
    /// is online and the state survives a snapshot.
    pub fn finish(&mut self) {
        for s in 0..SLOTS {
            self.close(s);
            self.drain_and_check();
        }
        self.tick(3_600_000);
        self.drain_and_check();
        let online = self.broker.state().sessions().values().filter(|s| s.online).count();
        assert_eq!(online, 0, "sessions still online with every connection closed");
        check_snapshot_roundtrip(self.broker.state());
    }

    /// The durable state as a snapshot (for seeds of `state_snapshot`).
    pub fn snapshot(&self) -> Vec<u8> {
        self.broker.state().snapshot()
    }
}

/// Findings not fixed yet that MIDGE_FUZZ_ALLOW (comma-separated names)
/// can tell the checks to let pass, to keep fuzzing past them. Nothing is
/// allowed by default. Each has a reproducer fuzz/corpus/*/crash-NAME
/// (fixed ones stay as fuzz/corpus/*/regression-NAME*).
///
/// * `topic-alias-of-dropped-publish`: `Broker::deliver` records a new
///   outgoing Topic Alias before it drops the PUBLISH as larger than the
///   client's Maximum Packet Size; the next message on that topic goes out
///   with the alias alone, which the client never saw.
/// * `resend-over-receive-maximum`: on a reconnect to a session with
///   messages in flight, `State::resend` sends all of them again, even when
///   the new connection's Receive Maximum is smaller (MQTT 5 [MQTT-4.9.0-2];
///   the quota starts anew with each connection, §4.9).
pub fn allowed(finding: &str) -> bool {
    static ALLOW: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ALLOW
        .get_or_init(|| {
            std::env::var("MIDGE_FUZZ_ALLOW").unwrap_or_default().split(',').map(|s| s.trim().to_string()).collect()
        })
        .iter()
        .any(|a| a == finding)
}

/// MIDGE_FUZZ_TRACE=1: print every action (for reading a reproducer with
/// examples/replay.rs).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MIDGE_FUZZ_TRACE").is_some())
}

/// `restore(snapshot(st))` is `st`: compared as snapshot bytes (every
/// serialised field, whatever the format grows) plus what restore derives.
pub fn check_snapshot_roundtrip(st: &State) {
    let snap = st.snapshot();
    let r = State::restore(&snap).unwrap_or_else(|e| panic!("restoring a fresh snapshot fails: {e}"));
    assert!(r.snapshot() == snap, "snapshot -> restore -> snapshot changes the bytes");
    assert!(r.sessions() == st.sessions(), "snapshot changes the sessions");
    assert_eq!(r.stored_bytes(), st.stored_bytes(), "snapshot changes stored_bytes");
    assert_eq!(r.tree().len(), st.tree().len(), "snapshot changes the topic tree size");
}

fn ack(packet_id: u16) -> PubResp {
    PubResp { packet_id, code: 0, properties: Properties::default() }
}

fn small_payload(input: &mut Input<'_>, b: u8) -> Vec<u8> {
    match b & 3 {
        0 => Vec::new(),
        1 => b"hello".to_vec(),
        2 => vec![0xFF, 0xFE, 0x00], // not UTF-8
        _ => {
            let n = usize::from(input.u8() % 40);
            input.bytes(n).to_vec()
        }
    }
}

pub fn build_connect(input: &mut Input<'_>, variant: u8) -> Connect {
    let b = input.u8();
    let version = [Version::V311, Version::V5, Version::V31, Version::V5][usize::from(b & 3)];
    let client_id = CLIENT_IDS[usize::from((b >> 2) & 7)].to_string();
    let clean_start = b & 0x20 == 0;
    let keep_alive = [60u16, 0, 1, 65535][usize::from(b >> 6)];
    let f = input.u8();
    let will = if f & 1 != 0 {
        // topic: bits 0-2, payload: 3-4, QoS: 5-6, retain: 7
        let w = input.u8();
        let mut properties = Properties::default();
        if version.is_v5() {
            let wp = input.u8();
            properties.will_delay_interval = [None, Some(0), Some(2), Some(120)][usize::from(wp & 3)];
            if wp & 4 != 0 {
                properties.message_expiry_interval = Some(1);
            }
        }
        Some(Will {
            topic: TOPICS[usize::from(w & 7)].to_string(),
            payload: small_payload(input, w >> 3),
            qos: QoS::from_u8(((w >> 5) & 3) % 3).unwrap_or_default(),
            retain: w & 0x80 != 0,
            properties,
        })
    } else {
        None
    };
    let username = match (f >> 1) & 3 {
        1 => Some("u1".to_string()),
        2 => Some("u2".to_string()),
        _ => None,
    };
    let password = (f & 8 != 0 && username.is_some()).then(|| b"secret".to_vec());
    let mut properties = Properties::default();
    if version.is_v5() {
        let p = if variant & 1 != 0 { input.u8() } else { f };
        properties.session_expiry_interval = [None, Some(0), Some(10), Some(u32::MAX)][usize::from(p >> 6)];
        if p & 0x10 != 0 {
            properties.receive_maximum = Some(1);
        }
        if p & 0x20 != 0 {
            properties.maximum_packet_size = Some(30 + u32::from(input.u8()));
        }
        if f & 0x10 != 0 {
            properties.topic_alias_maximum = Some(u16::from(input.u8() % 4));
        }
        if f & 0x20 != 0 {
            properties.user_properties.push(("k".into(), "v".into()));
        }
        if variant & 2 != 0 {
            properties.authentication_method = Some("SCRAM".into());
        }
        if f & 0x40 != 0 {
            properties.request_problem_information = Some(0);
        }
    }
    Connect { version, client_id, clean_start, keep_alive, username, password, will, properties }
}

pub fn build_publish(input: &mut Input<'_>, variant: u8, v5: bool) -> Publish {
    let b = input.u8();
    let qos = QoS::from_u8(b & 3).unwrap_or(QoS::AtMostOnce);
    let retain = b & 4 != 0;
    let dup = b & 8 != 0 && qos != QoS::AtMostOnce;
    let mut topic = TOPICS[usize::from(b >> 5)].to_string();
    if b & 0x10 != 0 && variant == 3 {
        let n = usize::from(input.u8() % 13);
        topic = String::from_utf8_lossy(input.bytes(n)).replace(['\0', '+', '#'], "");
        if topic.is_empty() {
            topic.push('t');
        }
    }
    let packet_id = (qos != QoS::AtMostOnce).then(|| 1 + u16::from(input.u8() % 8));
    let m = input.u8();
    let payload = small_payload(input, m);
    let mut properties = Properties::default();
    if v5 && variant & 1 != 0 {
        let p = input.u8();
        if p & 3 != 0 {
            properties.topic_alias = Some(u16::from(p & 3) + if variant & 2 != 0 { 9 } else { 0 });
            if p & 4 != 0 {
                topic.clear(); // use the alias
            }
        }
        properties.message_expiry_interval = [None, Some(0), Some(1), Some(100)][usize::from((p >> 3) & 3)];
        if p & 0x20 != 0 {
            properties.payload_format_indicator = Some(1);
        }
        if p & 0x40 != 0 {
            properties.content_type = Some("text/plain".into());
            properties.response_topic = Some("r/t".into());
            properties.correlation_data = Some(vec![1, 2, 3]);
        }
        if p & 0x80 != 0 {
            properties.user_properties.push(("k".into(), "v".into()));
        }
    }
    Publish { dup, qos, retain, topic: Rc::from(topic.as_str()), packet_id, payload: Rc::from(payload), properties }
}

pub fn build_subscribe(input: &mut Input<'_>, variant: u8, v5: bool) -> Subscribe {
    let b = input.u8();
    let n = 1 + usize::from(b % 3);
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        let f = input.u8();
        let o = input.u8();
        let opts = SubOptions {
            qos: QoS::from_u8(o & 3).unwrap_or(QoS::AtLeastOnce),
            no_local: v5 && o & 4 != 0,
            retain_as_published: v5 && o & 8 != 0,
            retain_handling: if v5 {
                [RetainHandling::SendAtSubscribe, RetainHandling::SendIfNew, RetainHandling::DoNotSend]
                    [usize::from(o >> 4) % 3]
            } else {
                RetainHandling::SendAtSubscribe
            },
        };
        let filter = FILTERS[usize::from(f % 16)];
        // No Local on a shared subscription does not even decode; keep it rare.
        let opts =
            if filter.starts_with("$share/") && o & 0x80 == 0 { SubOptions { no_local: false, ..opts } } else { opts };
        filters.push((filter.to_string(), opts));
    }
    let mut properties = Properties::default();
    if v5 && variant & 1 != 0 {
        properties.subscription_identifiers.push(1 + u32::from(input.u8() % 3));
    }
    Subscribe { packet_id: 1 + u16::from(b >> 2) % 8, filters, properties }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (c0, c1, c2) = (input.u8(), input.u8(), input.u8());
    let mut h = Harness::new(c0, c1, c2);
    for _ in 0..MAX_EVENTS {
        if !h.step(&mut input) {
            break;
        }
        h.drain_and_check();
    }
    h.finish();
}
