//! Writes the seed corpus: `cargo run --manifest-path fuzz/Cargo.toml
//! --example gen_corpus [FUZZ_DIR]` (default: the fuzz/ directory of this
//! crate). Replaces the `seed-*` files of fuzz/corpus/<target>/ and keeps
//! everything else (reproducers of crashes found are named `crash-*`).
//!
//! * packet_reader: every packet type, encoded by midge's own `encode`, for
//!   3.1, 3.1.1 and 5.0 (v5 ones with properties), one file each, plus
//!   whole client sessions starting at CONNECT and a few edge cases.
//! * broker_events: scripted sessions (see src/broker_events.rs for the
//!   format): pub/sub at every QoS, retained, wills, takeover, persistent
//!   sessions, shared subscriptions, keep alive, $SYS, topic aliases, raw
//!   bytes, under the default and small-limit configurations.
//! * state_snapshot: snapshots of the broker states those sessions reach.
//!
//! Every seed is run through its target's checks before it is written.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use midge::mqtt::codec::encode;
use midge::mqtt::*;
use midge_fuzz::broker_events::{self, op, Harness};
use midge_fuzz::dynsec_request;
use midge_fuzz::packet_reader::{self, selector};
use midge_fuzz::{state_snapshot, Input};

fn props_full_connect() -> Properties {
    PropertyValues {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(10),
        maximum_packet_size: Some(4096),
        topic_alias_maximum: Some(5),
        request_response_information: Some(1),
        request_problem_information: Some(0),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    }.into()
}

fn ack(id: u16, code: u8, v5: bool) -> PubResp {
    let properties = if v5 && code != 0 {
        PropertyValues { reason_string: Some("why".into()), ..Default::default() }.into()
    } else {
        Default::default()
    };
    PubResp { packet_id: id, code: if v5 { code } else { 0 }, properties }
}

fn publish(topic: &str, qos: QoS, retain: bool, dup: bool, v5: bool) -> Publish {
    let properties = if v5 {
        PropertyValues {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(vec![1, 2, 3]),
            subscription_identifiers: vec![1, 300],
            topic_alias: Some(2),
            user_properties: vec![("a".into(), "b".into()), ("a".into(), "c".into())],
            ..Default::default()
        }.into()
    } else {
        Default::default()
    };
    Publish {
        dup,
        qos,
        retain,
        topic: Rc::from(topic),
        packet_id: (qos != QoS::AtMostOnce).then_some(7),
        payload: Rc::from(&b"payload"[..]),
        properties,
    }
}

fn connect(v: Version, will: bool) -> Connect {
    let v5 = v.is_v5();
    Connect {
        version: v,
        client_id: "client-1".into(),
        clean_start: true,
        keep_alive: 30,
        username: Some("user".into()),
        password: Some(b"pass".to_vec()),
        will: will.then(|| Will {
            topic: "will/topic".into(),
            payload: b"gone".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: if v5 {
                PropertyValues { will_delay_interval: Some(5), content_type: Some("t".into()), ..Default::default() }.into()
            } else {
                Default::default()
            },
        }),
        properties: if v5 { props_full_connect() } else { Default::default() },
    }
}

/// One of every packet type for `v` (AUTH only for v5).
fn all_packets(v: Version) -> Vec<(&'static str, Packet)> {
    let v5 = v.is_v5();
    let mut ps: Vec<(&'static str, Packet)> = vec![
        ("connect", Packet::Connect(Box::new(connect(v, false)))),
        ("connect-will", Packet::Connect(Box::new(connect(v, true)))),
        (
            "connack",
            Packet::ConnAck(ConnAck {
                session_present: v != Version::V31,
                code: 0,
                properties: if v5 {
                    PropertyValues {
                        assigned_client_identifier: Some("x".into()),
                        server_keep_alive: Some(10),
                        maximum_qos: Some(1),
                        retain_available: Some(0),
                        maximum_packet_size: Some(1000),
                        topic_alias_maximum: Some(3),
                        wildcard_subscription_available: Some(1),
                        subscription_identifier_available: Some(1),
                        shared_subscription_available: Some(0),
                        ..Default::default()
                    }.into()
                } else {
                    Default::default()
                },
            }),
        ),
        ("publish-qos0", Packet::Publish(publish("a/b", QoS::AtMostOnce, false, false, v5))),
        ("publish-qos1", Packet::Publish(publish("a/b", QoS::AtLeastOnce, true, false, v5))),
        ("publish-qos2", Packet::Publish(publish("a/b/c", QoS::ExactlyOnce, false, true, v5))),
        ("puback", Packet::PubAck(ack(7, 0x10, v5))),
        ("pubrec", Packet::PubRec(ack(7, 0x80, v5))),
        ("pubrel", Packet::PubRel(ack(7, if v5 { 0x92 } else { 0 }, v5))),
        ("pubcomp", Packet::PubComp(ack(7, 0, v5))),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: 3,
                filters: vec![
                    ("a/#".into(), SubOptions { qos: QoS::AtLeastOnce, ..Default::default() }),
                    (
                        "+/b".into(),
                        SubOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: v5,
                            retain_as_published: v5,
                            retain_handling: if v5 {
                                RetainHandling::SendIfNew
                            } else {
                                RetainHandling::SendAtSubscribe
                            },
                        },
                    ),
                    ("$share/g/x".into(), SubOptions::default()),
                ],
                properties: if v5 {
                    PropertyValues { subscription_identifiers: vec![5], ..Default::default() }.into()
                } else {
                    Default::default()
                },
            }),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: 3,
                codes: if v5 { vec![0, 1, 2, 0x80, 0x97] } else { vec![0, 1, 2, 0x80] },
                properties: Default::default(),
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 4,
                filters: vec!["a/#".into(), "b".into()],
                properties: Default::default(),
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: 4,
                codes: if v5 { vec![0, 0x11] } else { vec![] },
                properties: Default::default(),
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        ("disconnect", Packet::Disconnect(Disconnect { code: 0, properties: Default::default() })),
    ];
    if v5 {
        ps.push((
            "disconnect-props",
            Packet::Disconnect(Disconnect {
                code: 0x04,
                properties: PropertyValues {
                    session_expiry_interval: Some(0),
                    reason_string: Some("bye".into()),
                    server_reference: Some("other".into()),
                    ..Default::default()
                }.into(),
            }),
        ));
        ps.push(("auth-empty", Packet::Auth(Auth { code: 0, properties: Default::default() })));
        ps.push((
            "auth",
            Packet::Auth(Auth {
                code: 0x18,
                properties: PropertyValues {
                    authentication_method: Some("SCRAM-SHA-1".into()),
                    authentication_data: Some(vec![9, 9]),
                    ..Default::default()
                }.into(),
            }),
        ));
    }
    ps
}

fn bytes_of(ps: &[Packet], v: Version) -> Vec<u8> {
    let mut out = Vec::new();
    for p in ps {
        encode(p, v, &mut out);
    }
    out
}

fn vname(v: Version) -> &'static str {
    match v {
        Version::V31 => "v31",
        Version::V311 => "v311",
        Version::V5 => "v5",
    }
}

/// A client session from CONNECT on.
fn session(v: Version) -> Vec<Packet> {
    let pick = |n: &str| all_packets(v).into_iter().find(|(k, _)| *k == n).map(|(_, p)| p).expect("known packet");
    vec![
        pick("connect-will"),
        pick("subscribe"),
        pick("publish-qos0"),
        pick("publish-qos1"),
        pick("publish-qos2"),
        pick("pubrel"),
        pick("puback"),
        pick("pubrec"),
        pick("pubcomp"),
        pick("unsubscribe"),
        pick("pingreq"),
        pick("disconnect"),
    ]
}

// ----------------------------------------------------------- broker_events

/// Builds a broker_events input.
struct Script(Vec<u8>);

const V311: u8 = 0;
const V5: u8 = 1;
const V31: u8 = 2;

impl Script {
    fn new(c0: u8, c1: u8, c2: u8) -> Script {
        Script(vec![c0, c1, c2])
    }
    fn op(mut self, kind: u8, slot: u8, variant: u8, args: &[u8]) -> Script {
        self.0.push(op::byte(kind, slot, variant));
        self.0.extend_from_slice(args);
        self
    }
    /// CONNECT: `client` indexes CLIENT_IDS; keep alive 60 s; v5 with the
    /// properties byte `p` (bits 6-7 session expiry: none/0/10 s/never;
    /// 0x10 Receive Maximum 1).
    fn connect(self, slot: u8, version: u8, client: u8, clean: bool, p: u8) -> Script {
        let b = version | (client << 2) | (u8::from(!clean) << 5);
        if version == V5 {
            self.op(op::CONNECT, slot, 1, &[b, 0, p & !0x20])
        } else {
            self.op(op::CONNECT, slot, 0, &[b, 0])
        }
    }
    /// CONNECT with a will (topic index, QoS) and the user `u1`.
    fn connect_will(self, slot: u8, version: u8, client: u8, topic: u8, qos: u8, delay: u8) -> Script {
        let b = version | (client << 2);
        let f = 1 | (1 << 1);
        let w = topic | (1 << 3) | (qos << 5);
        if version == V5 {
            self.op(op::CONNECT, slot, 0, &[b, f, w, delay])
        } else {
            self.op(op::CONNECT, slot, 0, &[b, f, w])
        }
    }
    /// v5 CONNECT with Topic Alias Maximum `alias_max` and Maximum Packet Size 30 + `mps`.
    fn connect_limits(self, slot: u8, client: u8, alias_max: u8, mps: u8) -> Script {
        let b = V5 | (client << 2);
        self.op(op::CONNECT, slot, 1, &[b, 0x10, 0x20, mps, alias_max])
    }
    /// PUBLISH: topic indexes TOPICS; payload "hello".
    fn publish(self, slot: u8, topic: u8, qos: u8, retain: bool, pid: u8) -> Script {
        let b = qos | (u8::from(retain) << 2) | (topic << 5);
        if qos == 0 {
            self.op(op::PUBLISH, slot, 0, &[b, 1])
        } else {
            self.op(op::PUBLISH, slot, 0, &[b, pid, 1])
        }
    }
    /// v5 PUBLISH with the properties byte `p` (0-1 topic alias, 0x04 empty
    /// topic, 3-4 message expiry, 0x20 UTF-8 payload, 0x40 content props).
    fn publish5(self, slot: u8, topic: u8, qos: u8, pid: u8, p: u8) -> Script {
        let b = qos | (topic << 5);
        if qos == 0 {
            self.op(op::PUBLISH, slot, 1, &[b, 1, p])
        } else {
            self.op(op::PUBLISH, slot, 1, &[b, pid, 1, p])
        }
    }
    /// SUBSCRIBE to one filter (FILTERS index) with options byte `o`.
    fn subscribe(self, slot: u8, filter: u8, o: u8) -> Script {
        self.op(op::SUBSCRIBE, slot, 0, &[0, filter, o])
    }
    fn subscribe2(self, slot: u8, f1: u8, f2: u8, o: u8) -> Script {
        self.op(op::SUBSCRIBE, slot, 1, &[1 | (2 << 2), f1, o, f2, o, 1])
    }
    fn acks(self, slot: u8) -> Script {
        self.op(op::AUTO_ACK, slot, 0, &[7])
    }
    fn tick(self, variant: u8, amount: u8) -> Script {
        self.op(op::TICK, 0, variant, &[amount])
    }
    fn raw(mut self, slot: u8, bytes: &[u8]) -> Script {
        for chunk in bytes.chunks(255) {
            self.0.push(op::byte(op::RAW, slot, 0));
            self.0.push(chunk.len() as u8);
            self.0.extend_from_slice(chunk);
        }
        self
    }
}

fn scripts() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let configs: [(&str, [u8; 3]); 4] = [
        ("default", [0, 0, 0]),
        ("small", [0x47, 0x5D, 0x00]),
        ("acl", [0x00, 0x00, 0x01]),
        ("strict", [0xB8, 0x22, 0x02]),
    ];
    for (cname, [c0, c1, c2]) in configs {
        for (vn, v) in [("v311", V311), ("v5", V5), ("v31", V31)] {
            let s = Script::new(c0, c1, c2);
            // pub/sub at QoS 1 and 2 with acks, then ping and disconnect
            let s = s
                .connect(0, v, 0, true, 0)
                .connect(1, v, 1, true, 0)
                .subscribe(0, 2, 2)
                .publish(1, 1, 1, false, 1)
                .acks(0)
                .acks(1)
                .publish(1, 2, 2, false, 2)
                .acks(0)
                .acks(1)
                .acks(0)
                .acks(1)
                .publish(1, 0, 0, false, 0)
                .op(op::PING_OR_DISCONNECT, 0, 0, &[])
                .op(op::PING_OR_DISCONNECT, 1, 1, &[])
                .tick(1, 2);
            out.push((format!("pubsub-{vn}-{cname}"), s.0));
            let all = cname == "default" || cname == "small";

            // retained then a late subscriber; clear the retained message
            let s = Script::new(c0, c1, c2)
                .connect(0, v, 0, true, 0)
                .publish(0, 1, 1, true, 3)
                .publish(0, 3, 0, true, 0)
                .connect(1, v, 1, true, 0)
                .subscribe2(1, 0, 2, 1)
                .acks(1)
                .acks(0)
                .op(op::PUBLISH, 0, 0, &[0x04 | (1 << 5), 0]) // empty retained clears
                .tick(2, 5);
            if all {
                out.push((format!("retained-{vn}-{cname}"), s.0));
            }

            // persistent session: offline queue, reconnect, resend
            let s = Script::new(c0, c1, c2)
                .connect(0, v, 1, false, 0xC0)
                .subscribe(0, 3, 1)
                .op(op::PING_OR_DISCONNECT, 0, 1, &[])
                .op(op::CLOSE, 0, 0, &[])
                .connect(1, v, 0, true, 0)
                .publish(1, 1, 1, false, 1)
                .publish(1, 1, 2, false, 2)
                .publish(1, 1, 0, false, 0)
                .acks(1)
                .acks(1)
                .connect(0, v, 1, false, 0xC0)
                .acks(0)
                .acks(0)
                .tick(1, 30)
                .tick(3, 1);
            out.push((format!("persistent-{vn}-{cname}"), s.0));

            // will on an ungraceful close; takeover of a client id
            let s = Script::new(c0, c1, c2)
                .connect(1, v, 1, true, 0)
                .subscribe(1, 0, 1)
                .connect_will(0, v, 0, 1, 1, 0)
                .op(op::CLOSE, 0, 0, &[])
                .acks(1)
                .connect_will(2, v, 2, 2, 0, 2)
                .connect(3, v, 2, true, 0) // takes over client c2
                .tick(1, 3)
                .acks(1);
            out.push((format!("will-takeover-{vn}-{cname}"), s.0));

            // shared subscriptions, keep alive timeout, $SYS
            let s = Script::new(c0, c1, c2)
                .connect(0, v, 0, true, 0)
                .connect(1, v, 1, true, 0)
                .subscribe(0, 6, 1)
                .subscribe(1, 6, 1)
                .subscribe(1, 5, 0)
                .connect(2, v, 2, true, 0)
                .publish(2, 1, 1, false, 1)
                .publish(2, 2, 1, false, 2)
                .publish(2, 1, 1, false, 3)
                .acks(0)
                .acks(1)
                .acks(2)
                .tick(1, 11)
                .op(op::CONNECT, 3, 0, &[v | (4 << 2) | (2 << 6), 0]) // keep alive 1 s
                .tick(1, 2)
                .op(op::WRITTEN, 0, 1, &[])
                .publish(2, 1, 0, false, 0);
            if all {
                out.push((format!("shared-keepalive-sys-{vn}-{cname}"), s.0));
            }

            // raw bytes of a whole session, split at odd places
            let ver = [Version::V311, Version::V5, Version::V31][usize::from(v)];
            let raw = bytes_of(&session(ver), ver);
            let mid = raw.len() / 3;
            let s = Script::new(c0, c1, c2).raw(0, &raw[..mid]).raw(0, &raw[mid..]).op(op::AUTO_ACK, 0, 0, &[7]);
            if all {
                out.push((format!("raw-session-{vn}-{cname}"), s.0));
            }
        }
        // v5 only: topic aliases both ways, Maximum Packet Size, message expiry
        let s = Script::new(c0, c1, c2)
            .connect_limits(0, 0, 2, 40)
            .subscribe(0, 0, 1)
            .connect(1, V5, 1, true, 0x80)
            .publish5(1, 1, 1, 1, 0x01)
            .publish5(1, 0, 1, 2, 0x05)
            .publish5(1, 2, 0, 0, 0x02 | 0x08)
            .publish5(1, 7, 1, 3, 0x40 | 0x20)
            .publish5(1, 3, 2, 4, 0x80 | 0x10)
            .acks(0)
            .acks(1)
            .acks(0)
            .acks(1)
            .tick(1, 2)
            .op(op::PING_OR_DISCONNECT, 1, 3, &[2]);
        out.push((format!("alias-v5-{cname}"), s.0));
        // decode errors and refusals
        let s = Script::new(c0, c1, c2)
            .raw(0, &[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x00])
            .raw(1, &[0x30, 0x02, 0x00, 0x00])
            .connect(2, V5, 0, true, 0)
            .raw(2, &[0xF0, 0x00])
            .op(op::CONNECT, 3, 2, &[V5, 0, 0])
            .raw(3, &[0xC0, 0x00]);
        out.push((format!("errors-{cname}"), s.0));
    }
    out
}

/// Snapshots of the states the broker_events seeds reach (mid-session and
/// at the end).
fn snapshots(scripts: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("empty".to_string(), Vec::new()),
        ("version-only".to_string(), vec![1]),
        ("version-2".to_string(), vec![2, 0]),
    ];
    for (name, data) in scripts.iter().filter(|(n, _)| n.contains("default") || n.contains("small")) {
        let mut input = Input::new(data);
        let (c0, c1, c2) = (input.u8(), input.u8(), input.u8());
        let mut h = Harness::new(c0, c1, c2);
        let mut best = h.snapshot();
        while h.step(&mut input) {
            h.drain_and_check();
            let s = h.snapshot();
            if s.len() > best.len() {
                best = s;
            }
        }
        out.push((format!("{name}-max"), best));
    }
    out.sort();
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

/// Reproducers of known findings that are built from midge's types (so
/// they follow format changes). Written as `crash-*`, not checked.
fn known_crashes() -> Vec<(PathBuf, Vec<u8>)> {
    use midge::broker::state::{Queue, Session, STATE_FORMAT_VERSION};
    use midge::broker::Message;
    use std::collections::BTreeMap;
    // restore-stored-bytes-overflow: two sessions whose queued_bytes add
    // up past u64::MAX. No command leads to such a `State` (it changes only
    // through `apply`), so the snapshot is written here field by field, in
    // the order `State::snapshot` writes them (postcard writes a tuple as
    // it writes a struct): format version, applied commands, sessions,
    // retained messages, peer addresses.
    let mut sessions: BTreeMap<Rc<str>, Box<Session>> = BTreeMap::new();
    for c in ["a", "b"] {
        let queue = Queue { bytes: u64::MAX / 2 + 1, ..Default::default() }.into();
        sessions.insert(Rc::from(c), Box::new(Session { queue, ..Default::default() }));
    }
    let retained: BTreeMap<Rc<str>, Message> = BTreeMap::new();
    let peer_addrs: BTreeMap<u64, String> = BTreeMap::new();
    let snapshot =
        postcard::to_allocvec(&(STATE_FORMAT_VERSION, 0u64, sessions, retained, peer_addrs)).expect("encode snapshot");
    vec![(PathBuf::from("state_snapshot/crash-restore-stored-bytes-overflow"), snapshot)]
}

fn write_seeds(dir: &Path, seeds: &[(String, Vec<u8>)], run: fn(&[u8])) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    for e in std::fs::read_dir(dir).expect("read corpus dir") {
        let p = e.expect("entry").path();
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")) {
            std::fs::remove_file(&p).expect("remove old seed");
        }
    }
    for (name, data) in seeds {
        run(data);
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    }
    let total: usize = seeds.iter().map(|(_, d)| d.len()).sum();
    println!("{}: {} seeds, {} bytes", dir.display(), seeds.len(), total);
}

fn main() {
    let fuzz_dir: PathBuf =
        std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let corpus = fuzz_dir.join("corpus");

    let mut pr: Vec<(String, Vec<u8>)> = Vec::new();
    for v in [Version::V31, Version::V311, Version::V5] {
        for (name, p) in all_packets(v) {
            let mut data = vec![selector(Some(v), 3, false)];
            encode(&p, v, &mut data);
            pr.push((format!("{}-{name}", vname(v)), data));
        }
        let mut data = vec![selector(None, 2, false)];
        data.extend(bytes_of(&session(v), v));
        pr.push((format!("{}-session", vname(v)), data));
    }
    // Edge cases: over the maximum, incomplete, non-minimal lengths, a
    // second CONNECT of another level in a v5 session.
    let big = Packet::Publish(Publish {
        payload: Rc::from(vec![b'x'; 100]),
        ..publish("t", QoS::AtMostOnce, false, false, false)
    });
    let mut data = vec![selector(Some(Version::V311), 1, false)];
    encode(&big, Version::V311, &mut data);
    pr.push(("v311-too-large".into(), data));
    pr.push(("v5-incomplete".into(), vec![selector(Some(Version::V5), 2, false), 0x30, 0x80, 0x01, 0x00]));
    pr.push(("v311-nonminimal-length".into(), vec![selector(Some(Version::V311), 3, false), 0xC0, 0x80, 0x00]));
    let mut data = vec![selector(Some(Version::V5), 3, false)];
    encode(&Packet::Connect(Box::new(connect(Version::V31, true))), Version::V5, &mut data);
    pr.push(("v5-second-connect-v31".into(), data));
    write_seeds(&corpus.join("packet_reader"), &pr, packet_reader::run);

    let be = scripts();
    write_seeds(&corpus.join("broker_events"), &be, broker_events::run);

    let ss = snapshots(&be);
    write_seeds(&corpus.join("state_snapshot"), &ss, state_snapshot::run);

    write_seeds(&corpus.join("dynsec_request"), &dynsec_requests(), dynsec_request::run);

    for (path, data) in known_crashes() {
        std::fs::write(corpus.join(&path), data).expect("write reproducer");
        println!("{}: known finding reproducer", corpus.join(&path).display());
    }
}

/// dynsec_request seeds: one request per command kind, against the init
/// file (selector 1), plus the malformed shapes.
fn dynsec_requests() -> Vec<(String, Vec<u8>)> {
    let requests: &[(&str, &str)] = &[
        ("clients", r#"{"commands":[{"command":"createClient","username":"u","password":"p","clientid":"c","roles":[{"rolename":"admin","priority":1}]},{"command":"modifyClient","username":"u","textname":"t","groups":[]},{"command":"setClientPassword","username":"u","password":"q"},{"command":"setClientId","username":"u"},{"command":"disableClient","username":"u"},{"command":"enableClient","username":"u"},{"command":"addClientRole","username":"u","rolename":"admin"},{"command":"removeClientRole","username":"u","rolename":"admin"},{"command":"getClient","username":"u"},{"command":"listClients","verbose":true,"count":1,"offset":0},{"command":"deleteClient","username":"u"}]}"#),
        ("groups", r#"{"commands":[{"command":"createClient","username":"u"},{"command":"createGroup","groupname":"g","roles":[{"rolename":"admin"}]},{"command":"addGroupClient","username":"u","groupname":"g","priority":2},{"command":"addGroupRole","groupname":"g","rolename":"admin"},{"command":"removeGroupRole","groupname":"g","rolename":"admin"},{"command":"modifyGroup","groupname":"g","clients":[{"username":"u"}]},{"command":"setAnonymousGroup","groupname":"g"},{"command":"getAnonymousGroup"},{"command":"getGroup","groupname":"g"},{"command":"listGroups","verbose":true},{"command":"removeGroupClient","username":"u","groupname":"g"},{"command":"deleteGroup","groupname":"g"}]}"#),
        ("roles", r#"{"commands":[{"command":"createRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"a/#","allow":true}]},{"command":"addRoleACL","rolename":"r","acltype":"subscribePattern","topic":"b/+","priority":3,"allow":true},{"command":"removeRoleACL","rolename":"r","acltype":"subscribePattern","topic":"b/+"},{"command":"modifyRole","rolename":"r","acls":[]},{"command":"getRole","rolename":"r"},{"command":"listRoles","verbose":true},{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true}]},{"command":"getDefaultACLAccess"},{"command":"deleteRole","rolename":"r"}]}"#),
        ("errors", r#"{"commands":[5,{"x":1},{"command":"nope"},{"command":"addRoleACL","rolename":"admin","acltype":"x"},{"command":"createClient","username":"admin"},{"command":"listRoles","correlationData":1}]}"#),
        ("not-json", "{"),
        ("no-commands", r#"{"commandz":[]}"#),
    ];
    let mut seeds = Vec::new();
    for (name, req) in requests {
        for sel in [1u8, 3] {
            let mut data = vec![sel];
            data.extend_from_slice(req.as_bytes());
            seeds.push((format!("{name}-{sel}"), data));
        }
    }
    seeds
}
