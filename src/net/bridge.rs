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

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use log::{debug, info, warn};
use smol::net::TcpStream;

use super::{Doorbell, Server};
use crate::bridge::{map_in, origin_id, BridgeConfig};
use crate::broker::bridge::{BridgeAck, BridgeRefusal};
use crate::mqtt::codec::{decode, encode};
use crate::mqtt::{
    Connect, Packet, Properties, PubResp, Publish, QoS, RetainHandling, SubOptions, Subscribe, Version, Will,
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
        smol::Timer::after(Duration::from_secs(cfg.restart_delay_secs(attempt).into())).await;
        attempt = attempt.saturating_add(1);
    }
}

async fn sleep(d: Duration) {
    smol::Timer::after(d).await;
}

async fn open(io: &BridgeIo, host: &str, port: u16) -> Result<Box<dyn Stream>, String> {
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
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
        smol::Timer::after(CONNECT_TIMEOUT).await;
        Err("timed out".to_string())
    })
    .await
}

/// One packet id space per connection, for the bridge's own PUBLISHes.
struct Outgoing {
    next_pid: u16,
    /// packet id -> (queue sequence number, None for the notification;
    /// QoS; PUBREC received).
    inflight: BTreeMap<u16, (Option<u64>, QoS, bool)>,
    /// The last queued message sent on this connection.
    last_sent: Option<u64>,
    window: usize,
}

impl Outgoing {
    fn pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pid) {
                return self.next_pid;
            }
        }
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
        // Mosquitto's bridge convention: the protocol level's top bit
        // says "bridge". The level follows the fixed header (1 byte and
        // a one-byte remaining length: a CONNECT under 128 bytes) or two
        // length bytes, then the protocol name "MQTT" with its length.
        let header = if out[1] & 0x80 == 0 {
            2
        } else if out[2] & 0x80 == 0 {
            3
        } else {
            4
        };
        out[header + 6] |= 0x80;
    }
    let packet_bytes_max = server.packet_bytes_max;
    let mut rbuf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let connack = timed(async {
        s.write_all(&out).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        loop {
            match decode(&rbuf, Some(v), packet_bytes_max) {
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
    let window = ack.properties.receive_maximum.map_or(INFLIGHT_MAX, |m| (m as usize).min(INFLIGHT_MAX));
    // An MQTT 5 upstream may take less than QoS 2 or no retained messages.
    let qos_max = ack.properties.maximum_qos.and_then(QoS::from_u8).unwrap_or(QoS::ExactlyOnce);
    let retain_ok = ack.properties.retain_available != Some(0);
    let mut og = Outgoing { next_pid: 0, inflight: BTreeMap::new(), last_sent: None, window };
    out.clear();
    if cfg.notifications {
        // As Mosquitto: QoS 1 unless the upstream takes only QoS 0.
        let qos = QoS::AtLeastOnce.min(qos_max);
        let packet_id = (qos != QoS::AtMostOnce).then(|| og.pid());
        if let Some(pid) = packet_id {
            og.inflight.insert(pid, (None, qos, false));
        }
        let p = Publish {
            dup: false,
            qos,
            retain: retain_ok,
            topic: Rc::from(cfg.notification_topic()),
            packet_id,
            payload: Rc::from(&b"1"[..]),
            properties: Properties::default(),
        };
        encode(&Packet::Publish(p), v, &mut out);
    }
    server.with_broker(|b, now| b.bridge_notify(&io.origin, &cfg.notification_topic(), b"1", now));
    let filters: Vec<(String, SubOptions)> = cfg
        .topics
        .iter()
        .filter(|l| l.direction.inward())
        .map(|l| {
            let opts = SubOptions {
                qos: l.qos,
                no_local: v.is_v5(),
                retain_as_published: v.is_v5(),
                retain_handling: RetainHandling::SendAtSubscribe,
            };
            (l.remote_topic.clone(), opts)
        })
        .collect();
    if !filters.is_empty() {
        let sub = Subscribe { packet_id: og.pid(), filters, properties: Properties::default() };
        encode(&Packet::Subscribe(sub), v, &mut out);
    }
    let keepalive = Duration::from_secs(cfg.keepalive_secs.into());
    let mut last_in = Instant::now();
    let mut last_out = Instant::now();
    let mut acked: Vec<u64> = Vec::new();
    loop {
        if !server.serving_clients() {
            return End::NotServing;
        }
        // Queued messages into the free window.
        let free = og.window.saturating_sub(og.inflight.len());
        if free > 0 {
            let now = server.now();
            let batch: Vec<crate::broker::state::BridgeMsg> = server.broker_read(|b| {
                b.state()
                    .bridge_queue(&cfg.name)
                    .map_or_else(Vec::new, |q| q.after(og.last_sent, free).cloned().collect())
            });
            for m in batch {
                og.last_sent = Some(m.seq);
                if m.msg.expired(now) {
                    acked.push(m.seq);
                    continue;
                }
                let qos = m.msg.qos.min(qos_max);
                let packet_id = match qos {
                    QoS::AtMostOnce => {
                        acked.push(m.seq);
                        None
                    }
                    q => {
                        let pid = og.pid();
                        og.inflight.insert(pid, (Some(m.seq), q, false));
                        Some(pid)
                    }
                };
                let mut properties = Properties::default();
                if v.is_v5() {
                    if let Some(props) = &m.msg.props {
                        props.write_into(&mut properties);
                    }
                    properties.message_expiry_interval = m.msg.remaining_expiry_secs(now);
                }
                let p = Publish {
                    dup: false,
                    qos,
                    retain: m.msg.retain && retain_ok,
                    topic: m.msg.topic.clone(),
                    packet_id,
                    payload: m.msg.payload.clone(),
                    properties,
                };
                encode(&Packet::Publish(p), v, &mut out);
            }
        }
        // Inbound messages the cluster committed.
        for a in io.acks.borrow_mut().drain(..) {
            let r = PubResp { packet_id: a.packet_id, code: 0, properties: Properties::default() };
            let p = if a.qos == QoS::ExactlyOnce { Packet::PubRec(r) } else { Packet::PubAck(r) };
            encode(&p, v, &mut out);
        }
        if last_out.elapsed() >= keepalive && out.is_empty() {
            encode(&Packet::PingReq, v, &mut out);
        }
        if !out.is_empty() {
            let w = async {
                s.write_all(&out).await?;
                s.flush().await
            };
            if let Err(e) = w.await {
                return End::Lost(e.to_string());
            }
            out.clear();
            last_out = Instant::now();
        }
        if !acked.is_empty() {
            let seqs = std::mem::take(&mut acked);
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
            match p {
                Packet::PubAck(r) => {
                    if let Some((seq, _, _)) = og.inflight.remove(&r.packet_id) {
                        acked.extend(seq);
                    }
                }
                Packet::PubRec(r) => {
                    if let Some(e) = og.inflight.get_mut(&r.packet_id) {
                        if r.code >= 0x80 {
                            // Refused upstream: it will not take it later either.
                            warn!("Bridge {}: the upstream refused a message (PUBREC 0x{:02x}).", cfg.name, r.code);
                            acked.extend(e.0);
                            og.inflight.remove(&r.packet_id);
                        } else {
                            e.2 = true;
                            let rel = PubResp { packet_id: r.packet_id, code: 0, properties: Properties::default() };
                            encode(&Packet::PubRel(rel), v, &mut out);
                        }
                    }
                }
                Packet::PubComp(r) => {
                    if let Some((seq, _, _)) = og.inflight.remove(&r.packet_id) {
                        acked.extend(seq);
                    }
                }
                Packet::Publish(mut p) => {
                    let local = map_in(&cfg.topics, &p.topic);
                    p.topic = Rc::from(local);
                    let r = server.with_broker(|b, now| b.bridge_publish(&io.origin, &p, now));
                    match r {
                        Ok(()) => {}
                        Err(BridgeRefusal::NotServing) => return End::NotServing,
                        Err(why) => {
                            warn!("Bridge {}: dropping a message on {} from upstream ({why:?}).", cfg.name, p.topic);
                            if let Some(pid) = p.packet_id {
                                let qos = p.qos;
                                io.acks.borrow_mut().push(BridgeAck { origin: io.origin.clone(), packet_id: pid, qos });
                            }
                        }
                    }
                }
                Packet::PubRel(r) => {
                    // PUBREC went out after the commit: the message is the cluster's.
                    let comp = PubResp { packet_id: r.packet_id, code: 0, properties: Properties::default() };
                    encode(&Packet::PubComp(comp), v, &mut out);
                }
                Packet::SubAck(a) => {
                    if a.codes.iter().any(|c| *c >= 0x80) {
                        warn!("Bridge {}: the upstream refused a subscription (SUBACK {:02x?}).", cfg.name, a.codes);
                    } else {
                        debug!("Bridge {}: subscribed upstream ({:?}).", cfg.name, a.codes);
                    }
                }
                Packet::PingResp | Packet::UnsubAck(_) => {}
                Packet::Disconnect(d) => return End::Lost(format!("DISCONNECT 0x{:02x}", d.code)),
                other => return End::Lost(format!("unexpected {}", other.name())),
            }
        }
    }
}
