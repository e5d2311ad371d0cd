//! The bridges' connections to their upstream brokers: one task per
//! `connection` block, an MQTT client over TCP or TLS (rustls) that uses
//! midge's own codec. It runs only while this node's broker serves (the
//! leader in full sync): it sends what the replicated queue holds, and
//! proposes `BridgeAcked` for what the upstream acknowledged; it takes the
//! upstream's messages into the broker like a client's PUBLISH and
//! acknowledges them upstream once committed. Every protocol decision
//! about what is queued and what leaves the queue is the broker's; this
//! file only moves bytes and keeps the connection's packet ids.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::net::rt::TcpStream;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use log::{debug, info, warn};

use super::{Doorbell, Server};
use crate::bridge::{map_in, origin_id, BridgeConfig};
use crate::broker::bridge::{BridgeAck, BridgeRefusal};
use crate::broker::state::BridgeMsg;
use crate::mqtt::codec::{decode, encode};
use crate::mqtt::{
    ConnAck, Connect, Packet, Properties, PubResp, Publish, QoS, RetainHandling, SubOptions, Subscribe, Version, Will,
};
use crate::store::RaftLog;

/// Sent and unacknowledged messages per connection when the upstream
/// announces no Receive Maximum (MQTT 3.1.1).
const INFLIGHT_MAX: usize = 100;
/// A TCP connect, TLS handshake or CONNACK that takes longer fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle bridge looks whether this node serves, and a
/// connected one whether it still does.
const POLL: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 16 * 1024;

/// A bridge as the runtime keeps it: its configuration, the bell that the
/// broker's events ring, and what the other tasks see of it.
pub struct BridgeIo {
    pub cfg: BridgeConfig,
    pub origin: Rc<str>,
    bell: Doorbell,
    /// Committed inbound messages to acknowledge upstream.
    acks: RefCell<Vec<BridgeAck>>,
    connected: Cell<bool>,
}

impl BridgeIo {
    pub fn new(cfg: BridgeConfig) -> Rc<BridgeIo> {
        let origin = Rc::from(origin_id(&cfg.name));
        Rc::new(BridgeIo {
            cfg,
            origin,
            bell: Doorbell::default(),
            acks: RefCell::default(),
            connected: Cell::new(false),
        })
    }

    pub fn connected(&self) -> bool {
        self.connected.get()
    }

    pub(super) fn ring(&self) {
        self.bell.ring();
    }

    pub(super) fn push_ack(&self, a: BridgeAck) {
        self.acks.borrow_mut().push(a);
        self.bell.ring();
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// How a connection ended.
enum End {
    /// This node stopped serving: another runs the bridge now.
    NotServing,
    /// Could not connect, or refused: the reason, and whether the
    /// CONNACK refused the bridge's private protocol level.
    Failed(String, bool),
    /// Connected, then lost.
    Lost(String),
}

/// The bridge's task: connect while this node serves, again after
/// `restart_timeout` when the connection fails or ends.
pub async fn run<L: RaftLog + 'static>(server: Rc<Server<L>>, io: Rc<BridgeIo>) {
    let cfg = &io.cfg;
    let mut address = 0usize;
    let mut attempt = 0u32;
    let mut private = cfg.try_private && cfg.version == Version::V311;
    // What was last logged of each address: a state is logged once, not
    // per attempt; and whether the local state says "0" already.
    let mut logged = vec![String::new(); cfg.addresses.len()];
    let mut down_announced = false;
    loop {
        while !server.serving_clients() {
            io.connected.set(false);
            futures_lite::future::or(io.bell.wait(), sleep(POLL * 2)).await;
        }
        let at = address % cfg.addresses.len();
        let (host, port) = cfg.addresses[at].clone();
        let end = session(&server, &io, &host, port, private).await;
        io.connected.set(false);
        // One log line per address and change of state, not per attempt;
        // one local "0" per time the bridge goes down.
        let (key, state) = match &end {
            End::NotServing => {
                info!("Bridge {}: this node no longer serves; the new leader runs the bridge.", cfg.name);
                logged.iter_mut().for_each(String::clear);
                down_announced = false;
                continue;
            }
            End::Failed(why, refused_private) => {
                if *refused_private {
                    private = false;
                    info!(
                        "Bridge {}: {host}:{port} refused the bridge protocol level; trying plain MQTT 3.1.1.",
                        cfg.name
                    );
                    continue;
                }
                address += 1;
                (format!("failed: {why}"), format!("cannot connect to {host}:{port}: {why}"))
            }
            End::Lost(why) => {
                attempt = 0;
                address = if cfg.round_robin { address + 1 } else { 0 };
                logged.iter_mut().for_each(String::clear);
                down_announced = false;
                (format!("lost: {why}"), format!("connection to {host}:{port} lost: {why}"))
            }
        };
        if key != logged[at] {
            warn!("Bridge {}: {state}; retrying (restart_timeout {} s).", cfg.name, cfg.restart_delay_secs(attempt));
            logged[at] = key;
        }
        if !down_announced {
            down_announced = true;
            server.with_broker(|b, now| b.bridge_notify(&io.origin, &cfg.notification_topic(), b"0", now));
        }
        crate::net::rt::Timer::after(Duration::from_secs(cfg.restart_delay_secs(attempt).into())).await;
        attempt = attempt.saturating_add(1);
    }
}

async fn sleep(d: Duration) {
    crate::net::rt::Timer::after(d).await;
}

async fn open(io: &BridgeIo, host: &str, port: u16) -> Result<Box<dyn Stream>, String> {
    let tcp = TcpStream::connect(&host_port(host, port)).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &io.cfg.tls else { return Ok(Box::new(tcp)) };
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("TLS: {e}"))?;
    let s = futures_rustls::TlsConnector::from(tls.client.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(s))
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    futures_lite::future::or(f, async {
        crate::net::rt::Timer::after(CONNECT_TIMEOUT).await;
        Err("timed out".to_string())
    })
    .await
}

/// The CONNECT of a bridge. `private`: Mosquitto's bridge convention, the
/// protocol level's top bit set (0x84 for 3.1.1).
fn connect_packet(cfg: &BridgeConfig, private: bool) -> Vec<u8> {
    let v = cfg.version;
    let mut properties = Properties::default();
    if v.is_v5() && !cfg.clean_session {
        properties.session_expiry_interval = Some(u32::MAX);
    }
    let will = cfg.notifications.then(|| Will {
        topic: cfg.notification_topic(),
        payload: b"0".to_vec(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    let connect = Connect {
        version: v,
        client_id: cfg.remote_clientid.clone(),
        clean_start: cfg.clean_session,
        keep_alive: cfg.keepalive_secs,
        username: cfg.remote_username.clone(),
        password: cfg.remote_password.as_ref().map(|p| p.as_bytes().to_vec()),
        will,
        properties,
    };
    let mut out = Vec::new();
    encode(&Packet::Connect(Box::new(connect)), v, &mut out);
    if private {
        // The level follows the fixed header (its first byte and the
        // remaining length, 1 to 3 bytes for a CONNECT of at most a few
        // 64 KiB strings) and the protocol name ("MQTT", 6 bytes).
        let length_bytes = out[1..].iter().take_while(|b| **b & 0x80 != 0).count() + 1;
        out[1 + length_bytes + 6] |= 0x80;
    }
    out
}

/// One connection's state besides its socket: the bridge's own packet ids,
/// what the upstream acknowledged, and the bytes to write.
struct Link {
    v: Version,
    next_pid: u16,
    /// packet id -> queue sequence number (None for the notification).
    inflight: BTreeMap<u16, Option<u64>>,
    /// The last queued message sent on this connection.
    last_sent: Option<u64>,
    window: usize,
    /// An MQTT 5 upstream may take less than QoS 2, or no retained messages.
    qos_max: QoS,
    retain_ok: bool,
    /// Queue sequence numbers the upstream acknowledged, to propose.
    acked: Vec<u64>,
    out: Vec<u8>,
}

impl Link {
    fn new(v: Version, ack: &ConnAck) -> Link {
        let p = &ack.properties;
        Link {
            v,
            next_pid: 0,
            inflight: BTreeMap::new(),
            last_sent: None,
            window: p.receive_maximum.map_or(INFLIGHT_MAX, |m| (m as usize).min(INFLIGHT_MAX)),
            qos_max: p.maximum_qos.and_then(QoS::from_u8).unwrap_or(QoS::ExactlyOnce),
            retain_ok: p.retain_available != Some(0),
            acked: Vec::new(),
            out: Vec::new(),
        }
    }

    fn pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pid) {
                return self.next_pid;
            }
        }
    }

    fn send(&mut self, p: Packet) {
        encode(&p, self.v, &mut self.out);
    }

    /// The notification "1" (as Mosquitto: QoS 1 unless the upstream
    /// takes only QoS 0; retained if it can) and the SUBSCRIBE of the
    /// `in`/`both` lines (MQTT 5: No Local, Retain As Published).
    fn greet(&mut self, cfg: &BridgeConfig) {
        if cfg.notifications {
            let qos = QoS::AtLeastOnce.min(self.qos_max);
            let packet_id = (qos != QoS::AtMostOnce).then(|| self.pid());
            if let Some(pid) = packet_id {
                self.inflight.insert(pid, None);
            }
            self.send(Packet::Publish(Publish {
                dup: false,
                qos,
                retain: self.retain_ok,
                topic: Rc::from(cfg.notification_topic()),
                packet_id,
                payload: Rc::from(&b"1"[..]),
                properties: Properties::default(),
            }));
        }
        let v5 = self.v.is_v5();
        let filters: Vec<(String, SubOptions)> = cfg
            .topics
            .iter()
            .filter(|l| l.direction.inward())
            .map(|l| {
                let opts = SubOptions {
                    qos: l.qos,
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: RetainHandling::SendAtSubscribe,
                };
                (l.remote_topic.clone(), opts)
            })
            .collect();
        if !filters.is_empty() {
            let packet_id = self.pid();
            self.send(Packet::Subscribe(Subscribe { packet_id, filters, properties: Properties::default() }));
        }
    }

    /// Queued messages into the free window (QoS 0 and expired ones count
    /// as acknowledged once written or skipped).
    fn send_queued(&mut self, batch: Vec<BridgeMsg>, now: u64) {
        for m in batch {
            self.last_sent = Some(m.seq);
            if m.msg.expired(now) {
                self.acked.push(m.seq);
                continue;
            }
            let qos = m.msg.qos.min(self.qos_max);
            let packet_id = if qos == QoS::AtMostOnce {
                self.acked.push(m.seq);
                None
            } else {
                let pid = self.pid();
                self.inflight.insert(pid, Some(m.seq));
                Some(pid)
            };
            let mut properties = Properties::default();
            if self.v.is_v5() {
                if let Some(props) = &m.msg.props {
                    props.write_into(&mut properties);
                }
                properties.message_expiry_interval = m.msg.remaining_expiry_secs(now);
            }
            self.send(Packet::Publish(Publish {
                dup: false,
                qos,
                retain: m.msg.retain && self.retain_ok,
                topic: m.msg.topic.clone(),
                packet_id,
                payload: m.msg.payload.clone(),
                properties,
            }));
        }
    }

    /// A packet from the upstream broker; Some when the connection ends.
    fn on_packet<L: RaftLog + 'static>(&mut self, p: Packet, server: &Server<L>, io: &BridgeIo) -> Option<End> {
        let name = &io.cfg.name;
        match p {
            Packet::PubAck(r) | Packet::PubComp(r) => {
                if let Some(seq) = self.inflight.remove(&r.packet_id) {
                    self.acked.extend(seq);
                }
            }
            Packet::PubRec(r) if r.code >= 0x80 => {
                // Refused upstream: it will not take it later either.
                if let Some(seq) = self.inflight.remove(&r.packet_id) {
                    warn!("Bridge {name}: the upstream refused a message (PUBREC 0x{:02x}).", r.code);
                    self.acked.extend(seq);
                }
            }
            Packet::PubRec(r) => {
                if self.inflight.contains_key(&r.packet_id) {
                    self.send(Packet::PubRel(PubResp {
                        packet_id: r.packet_id,
                        code: 0,
                        properties: Properties::default(),
                    }));
                }
            }
            Packet::Publish(mut p) => {
                p.topic = Rc::from(map_in(&io.cfg.topics, &p.topic));
                match server.with_broker(|b, now| b.bridge_publish(&io.origin, &p, now)) {
                    Ok(()) => {}
                    Err(BridgeRefusal::NotServing) => return Some(End::NotServing),
                    Err(why) => {
                        warn!("Bridge {name}: dropping a message on {} from upstream ({why:?}).", p.topic);
                        if let Some(packet_id) = p.packet_id {
                            io.acks.borrow_mut().push(BridgeAck { origin: io.origin.clone(), packet_id, qos: p.qos });
                        }
                    }
                }
            }
            Packet::PubRel(r) => {
                // PUBREC went out after the commit: the message is the cluster's.
                self.send(Packet::PubComp(PubResp {
                    packet_id: r.packet_id,
                    code: 0,
                    properties: Properties::default(),
                }));
            }
            Packet::SubAck(a) if a.codes.iter().any(|c| *c >= 0x80) => {
                warn!("Bridge {name}: the upstream refused a subscription (SUBACK {:02x?}).", a.codes);
            }
            Packet::SubAck(a) => debug!("Bridge {name}: subscribed upstream ({:?}).", a.codes),
            Packet::PingResp | Packet::UnsubAck(_) => {}
            Packet::Disconnect(d) => return Some(End::Lost(format!("DISCONNECT 0x{:02x}", d.code))),
            other => return Some(End::Lost(format!("unexpected {}", other.name()))),
        }
        None
    }
}

/// Reads until one whole packet is decoded (the CONNACK).
async fn read_packet(s: &mut Box<dyn Stream>, rbuf: &mut Vec<u8>, v: Version, max: u32) -> Result<Packet, String> {
    let mut chunk = [0u8; 512];
    loop {
        match decode(rbuf, Some(v), max) {
            Ok(Some((p, n))) => {
                rbuf.drain(..n);
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("bad packet: {e:?}")),
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed by the upstream broker".into());
        }
        rbuf.extend_from_slice(&chunk[..n]);
    }
}

async fn session<L: RaftLog + 'static>(
    server: &Rc<Server<L>>,
    io: &Rc<BridgeIo>,
    host: &str,
    port: u16,
    private: bool,
) -> End {
    let cfg = &io.cfg;
    let v = cfg.version;
    let mut s = match timed(open(io, host, port)).await {
        Ok(s) => s,
        Err(e) => return End::Failed(e, false),
    };
    let packet_bytes_max = server.packet_bytes_max;
    let mut rbuf: Vec<u8> = Vec::new();
    let connack = timed(async {
        s.write_all(&connect_packet(cfg, private)).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        read_packet(&mut s, &mut rbuf, v, packet_bytes_max).await
    })
    .await;
    let ack = match connack {
        Ok(Packet::ConnAck(a)) => a,
        Ok(other) => return End::Failed(format!("sent {} instead of CONNACK", other.name()), false),
        Err(e) => return End::Failed(e, false),
    };
    if ack.code != 0 {
        // 3.1.1 return code 1: unacceptable protocol level.
        return End::Failed(format!("refused (CONNACK code 0x{:02x})", ack.code), private && ack.code == 1);
    }
    if !server.serving_clients() {
        return End::NotServing;
    }
    info!(
        "Bridge {} connected to {host}:{port}{} as {} (MQTT {}).",
        cfg.name,
        if cfg.tls.is_some() { " (TLS)" } else { "" },
        cfg.remote_clientid,
        if v.is_v5() { "5.0" } else { "3.1.1" }
    );
    io.connected.set(true);
    io.acks.borrow_mut().clear();
    let mut link = Link::new(v, &ack);
    link.greet(cfg);
    server.with_broker(|b, now| {
        b.bridge_notify(&io.origin, &cfg.notification_topic(), b"1", now);
        b.bridge_connected(&cfg.name, now);
    });
    let keepalive = Duration::from_secs(cfg.keepalive_secs.into());
    let mut last_in = Instant::now();
    let mut last_out = Instant::now();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if !server.serving_clients() {
            return End::NotServing;
        }
        let free = link.window.saturating_sub(link.inflight.len());
        if free > 0 {
            let batch: Vec<BridgeMsg> = server.broker_read(|b| {
                b.state()
                    .bridge_queue(&cfg.name)
                    .map_or_else(Vec::new, |q| q.after(link.last_sent, free).cloned().collect())
            });
            link.send_queued(batch, server.now());
        }
        // Inbound messages the cluster committed.
        for a in io.acks.borrow_mut().drain(..) {
            let r = PubResp { packet_id: a.packet_id, code: 0, properties: Properties::default() };
            link.send(if a.qos == QoS::ExactlyOnce { Packet::PubRec(r) } else { Packet::PubAck(r) });
        }
        if last_out.elapsed() >= keepalive && link.out.is_empty() {
            link.send(Packet::PingReq);
        }
        if !link.out.is_empty() {
            let w = async {
                s.write_all(&link.out).await?;
                s.flush().await
            };
            if let Err(e) = w.await {
                return End::Lost(e.to_string());
            }
            link.out.clear();
            last_out = Instant::now();
        }
        if !link.acked.is_empty() {
            let seqs = std::mem::take(&mut link.acked);
            server.with_broker(|b, now| b.bridge_acked(&cfg.name, seqs, now));
        }
        if last_in.elapsed() > keepalive + keepalive / 2 {
            return End::Lost("no answer within the keep alive".into());
        }
        // Wait for the upstream, the broker, or the next look around.
        let read = async { Some(s.read(&mut chunk).await) };
        let wake = async {
            futures_lite::future::or(io.bell.wait(), sleep(POLL)).await;
            None
        };
        let Some(r) = futures_lite::future::or(read, wake).await else { continue };
        let n = match r {
            Ok(0) => return End::Lost("closed by the upstream broker".into()),
            Ok(n) => n,
            Err(e) => return End::Lost(e.to_string()),
        };
        last_in = Instant::now();
        rbuf.extend_from_slice(&chunk[..n]);
        loop {
            let (p, used) = match decode(&rbuf, Some(v), packet_bytes_max) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => return End::Lost(format!("bad packet: {e:?}")),
            };
            rbuf.drain(..used);
            if let Some(end) = link.on_packet(p, server, io) {
                return end;
            }
        }
    }
}

/// `host:port`, an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_private_sets_the_bridge_bit_of_the_protocol_level() {
        let mut cfg = BridgeConfig::new("b", 10);
        let plain = connect_packet(&cfg, false);
        assert_eq!(&plain[2..9], b"\x00\x04MQTT\x04");
        assert_eq!(&connect_packet(&cfg, true)[2..9], b"\x00\x04MQTT\x84");
        // A CONNECT over 127 bytes: two length bytes.
        cfg.remote_clientid = "c".repeat(200);
        let long = connect_packet(&cfg, true);
        assert!(long[1] & 0x80 != 0 && long[2] & 0x80 == 0);
        assert_eq!(&long[3..10], b"\x00\x04MQTT\x84");
        // The rest is the plain CONNECT: it decodes, with the will "0".
        let Ok(Some((Packet::Connect(c), _))) = decode(&connect_packet(&cfg, false), None, 1 << 20) else {
            panic!("CONNECT decodes")
        };
        let will = c.will.expect("notification will");
        assert_eq!(will.topic, format!("$SYS/broker/connection/{}/state", cfg.remote_clientid));
        assert_eq!((&will.payload[..], will.retain, will.qos), (&b"0"[..], true, QoS::AtLeastOnce));
    }
}
