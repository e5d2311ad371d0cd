//! Node-to-node transport for raft messages over TCP.
//!
//! Wire format version 4 (docs/FORMATS.md). With `cluster_cafile`,
//! `cluster_certfile` and `cluster_keyfile` set, a connection is first a
//! mutual TLS 1.3 handshake (both certificates signed by the cluster CA;
//! the dialing side checks that the accepting node's certificate names the
//! host of its `cluster_peer` line); nothing of the peer is decoded before
//! it completes. Then (inside TLS, or on plain TCP without those keys) a
//! hello — magic `MDGR`, u16 LE format version, u64 LE sender node id,
//! then the sender's `cluster_mode` (one byte), its cluster id (u128 LE, 0
//! while it knows none) and where it serves
//! (`Advertised`: each client listener's `host:port` and whether it is TLS,
//! and its admin listener; for proxy, redirect and `midge ctl`) — then
//! carries frames
//! `[u8 flags][u32 LE length][bytes]`. A raft message
//! (protobuf, as raft-rs encodes `eraftpb::Message`) is cut into chunks of
//! at most `CHUNK_BYTES`; flag bit 0 set means "more chunks follow". Each
//! direction uses its own connection: a node dials every peer to send and
//! accepts connections to receive.
//!
//! Bounds: a peer's send queue holds at most `QUEUE_BYTES_MAX` bytes
//! (messages are dropped beyond it; raft retransmits), and an incoming
//! message may not exceed the receiver's `message_bytes_max`. An incoming
//! connection has `HELLO_DEADLINE` for its handshake and hello; one source
//! address holds at most `CONNECTIONS_PER_ADDRESS_MAX` connections, all of
//! them at most `CONNECTIONS_MAX`; an address whose connections keep
//! failing before their hello is refused at once for a growing while; a
//! newer link from the same node replaces the older (a peer that lost
//! power leaves a half-open one behind).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::net::rt::{TcpListener, TcpStream};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use log::{debug, info, warn};
use raft::eraftpb::Message;
use smol::channel::{bounded, Receiver, Sender};

use rustls::pki_types::ServerName;

use crate::config::tls::ClusterTls;
use crate::config::ClusterMode;

pub const MAGIC: &[u8; 4] = b"MDGR";
pub const TRANSPORT_FORMAT_VERSION: u16 = 4;
pub const CHUNK_BYTES: usize = 256 * 1024;
pub const QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest address in a hello (one length byte).
pub const ADVERTISED_ADDR_BYTES_MAX: usize = 255;
/// Most addresses a hello may carry.
pub const ADVERTISED_ENTRIES_MAX: usize = 32;
/// An incoming peer connection must complete its hello within this.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// Incoming peer connections from one address, at most (a node needs one,
/// two while it reconnects; nodes on one host share an address).
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 8;
/// Incoming peer connections, at most.
pub const CONNECTIONS_MAX: usize = 64;
/// Addresses whose failures are remembered, at most.
const FAILING_ADDRESSES_MAX: usize = 256;
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;
/// A link that ends sooner than this after it opened counts as a failure
/// (the peer refused this node after its hello): the redial backs off.
const SHORT_LINK: Duration = Duration::from_secs(1);

/// Where a node serves, as it tells its peers in its hello: a follower
/// proxies a client to the leader's listener of the same kind, redirect
/// names the leader's first listener, and `midge ctl` is sent on to the
/// leader's admin listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advertised {
    /// One per client listener, in config order.
    pub listeners: Vec<ClientListener>,
    pub admin: Option<String>,
    /// The sender's `cluster_mode`: a peer with another is refused.
    pub mode: ClusterMode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientListener {
    /// `host:port` (IPv6 hosts in brackets).
    pub addr: String,
    pub tls: bool,
}

impl Advertised {
    /// The listener a client that came in on this node's listener `index`
    /// (TLS or not) should reach on the advertising node: the same index
    /// if it is of the same kind, else the first of that kind.
    pub fn listener_for(&self, index: usize, tls: bool) -> Option<&str> {
        match self.listeners.get(index) {
            Some(l) if l.tls == tls => Some(&l.addr),
            _ => self.listeners.iter().find(|l| l.tls == tls).map(|l| l.addr.as_str()),
        }
    }
}

/// Largest hello after its fixed 16 bytes.
const HELLO_REST_BYTES_MAX: usize = 2 + 16 + ADVERTISED_ENTRIES_MAX * (2 + ADVERTISED_ADDR_BYTES_MAX);
const KIND_PLAIN: u8 = 0;
const KIND_TLS: u8 = 1;
const KIND_ADMIN: u8 = 2;

/// The hello a dialing node sends first (format version 4). `cluster_id`:
/// the sender's, 0 while it knows none.
pub fn encode_hello(my_id: u64, cluster_id: u128, a: &Advertised) -> Vec<u8> {
    let mut entries: Vec<(u8, &str)> =
        a.listeners.iter().map(|l| (if l.tls { KIND_TLS } else { KIND_PLAIN }, l.addr.as_str())).collect();
    entries.extend(a.admin.as_deref().map(|x| (KIND_ADMIN, x)));
    entries.retain(|(_, addr)| addr.len() <= ADVERTISED_ADDR_BYTES_MAX);
    entries.truncate(ADVERTISED_ENTRIES_MAX);
    let mut rest = vec![a.mode.wire()];
    rest.extend_from_slice(&cluster_id.to_le_bytes());
    rest.push(entries.len() as u8);
    for (kind, addr) in entries {
        rest.push(kind);
        rest.push(addr.len() as u8);
        rest.extend_from_slice(addr.as_bytes());
    }
    let mut hello = Vec::with_capacity(16 + rest.len());
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&TRANSPORT_FORMAT_VERSION.to_le_bytes());
    hello.extend_from_slice(&my_id.to_le_bytes());
    hello.extend_from_slice(&(rest.len() as u16).to_le_bytes());
    hello.extend_from_slice(&rest);
    hello
}

/// The part of a hello after its fixed 16 bytes: the sender's cluster id
/// and what it advertises.
pub fn decode_hello_rest(b: &[u8]) -> Result<(u128, Advertised), &'static str> {
    let (&mode, b) = b.split_first().ok_or("hello without a cluster mode")?;
    let mode = ClusterMode::from_wire(mode).ok_or("unknown cluster mode in hello")?;
    let (id, b) = b.split_first_chunk::<16>().ok_or("hello without a cluster id")?;
    let cluster_id = u128::from_le_bytes(*id);
    let (&count, mut b) = b.split_first().ok_or("hello without addresses")?;
    if count as usize > ADVERTISED_ENTRIES_MAX {
        return Err("too many addresses in hello");
    }
    let mut a = Advertised { mode, ..Advertised::default() };
    for _ in 0..count {
        let [kind, len, tail @ ..] = b else { return Err("truncated hello") };
        let len = *len as usize;
        if tail.len() < len {
            return Err("truncated hello");
        }
        let addr = std::str::from_utf8(&tail[..len]).map_err(|_| "address in hello is not UTF-8")?.to_string();
        match *kind {
            KIND_PLAIN | KIND_TLS => a.listeners.push(ClientListener { addr, tls: *kind == KIND_TLS }),
            KIND_ADMIN => a.admin = Some(addr),
            _ => return Err("unknown address kind in hello"),
        }
        b = &tail[len..];
    }
    if !b.is_empty() {
        return Err("trailing bytes in hello");
    }
    Ok((cluster_id, a))
}

/// A cluster id as logs, `/health` and `$SYS` show it: 32 hex digits.
pub fn cluster_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

struct PeerOut {
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued_bytes: Cell<usize>,
    bell: Sender<()>,
    dropped: Cell<u64>,
    connected: Cell<bool>,
    /// This node's cluster id changed since the link's hello: say hello
    /// again (a node restarted on its data learns its id only when it has
    /// applied its log).
    rehello: Cell<bool>,
}

/// Both directions of the peer link: one queue and one dialing task per
/// peer out, and the bookkeeping of incoming connections.
pub struct Peers {
    my_id: u64,
    advertised: Rc<Advertised>,
    tls: Option<ClusterTls>,
    /// This node's cluster id, 0 until the replicated state holds one.
    cluster_id: Cell<u128>,
    out: RefCell<HashMap<u64, Rc<PeerOut>>>,
    inbound: RefCell<Inbound>,
}

/// Incoming connections: how many each address holds, which addresses
/// keep failing, and the live link of each node.
#[derive(Default)]
struct Inbound {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    failing: HashMap<IpAddr, Failing>,
    /// Node id -> (link number, a sender whose drop ends that link).
    links: HashMap<u64, (u64, Sender<()>)>,
    next_link: u64,
    /// Peers refused for another cluster id, logged once each.
    refused_ids: Vec<(u64, u128)>,
    /// The addresses of `cluster_peer` lines (IP literals): never refused
    /// for failures, so that noise from elsewhere on one host cannot keep
    /// a node from its peers.
    peer_ips: Vec<IpAddr>,
}

struct Failing {
    count: u32,
    until: Instant,
    logged: bool,
}

/// A link from node `id` held in `Inbound`: released when the task ends.
struct Slot {
    peers: Rc<Peers>,
    addr: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut i = self.peers.inbound.borrow_mut();
        i.total = i.total.saturating_sub(1);
        if let Some(n) = i.per_address.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                i.per_address.remove(&self.addr);
            }
        }
    }
}

impl Peers {
    pub fn new(my_id: u64, advertised: Advertised, tls: Option<ClusterTls>) -> Rc<Peers> {
        Rc::new(Peers {
            my_id,
            advertised: Rc::new(advertised),
            tls,
            cluster_id: Cell::new(0),
            out: RefCell::new(HashMap::new()),
            inbound: RefCell::new(Inbound::default()),
        })
    }

    /// The cluster id this node now knows (from its applied state).
    pub fn set_cluster_id(&self, id: u128) {
        if self.cluster_id.replace(id) != id {
            for p in self.out.borrow().values() {
                p.rehello.set(true);
                let _ = p.bell.try_send(());
            }
        }
    }

    pub fn cluster_id(&self) -> u128 {
        self.cluster_id.get()
    }

    /// Start the sender for peer `id` at `addr` (no-op if present).
    pub fn add(self: &Rc<Self>, ex: &smol::LocalExecutor<'static>, id: u64, addr: String) {
        if id == self.my_id || self.out.borrow().contains_key(&id) {
            return;
        }
        let (tx, rx) = bounded(1);
        let p = Rc::new(PeerOut {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            bell: tx,
            dropped: Cell::new(0),
            connected: Cell::new(false),
            rehello: Cell::new(false),
        });
        self.out.borrow_mut().insert(id, p.clone());
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            let mut i = self.inbound.borrow_mut();
            if !i.peer_ips.contains(&ip.to_canonical()) {
                i.peer_ips.push(ip.to_canonical());
            }
        }
        ex.spawn(sender(self.clone(), id, addr, p, rx)).detach();
    }

    pub fn remove(&self, id: u64) {
        // Dropping the queue closes the doorbell; the sender task ends.
        self.out.borrow_mut().remove(&id);
    }

    /// Queue a raft message for its peer; dropped when the queue is full.
    pub fn send(&self, m: &Message) {
        let out = self.out.borrow();
        let Some(p) = out.get(&m.to) else { return };
        let bytes = match protobuf::Message::write_to_bytes(m) {
            Ok(b) => b,
            Err(e) => {
                warn!("Cannot encode raft message to node {}: {e}.", m.to);
                return;
            }
        };
        let q = p.queued_bytes.get();
        if q > 0 && q + bytes.len() > QUEUE_BYTES_MAX {
            p.dropped.set(p.dropped.get() + 1);
            return;
        }
        p.queued_bytes.set(q + bytes.len());
        let was_empty = p.queue.borrow().is_empty();
        p.queue.borrow_mut().push_back(bytes);
        if was_empty {
            let _ = p.bell.try_send(());
        }
    }

    pub fn connected(&self, id: u64) -> bool {
        self.out.borrow().get(&id).is_some_and(|p| p.connected.get())
    }

    /// Take a new incoming connection from `addr`, or say why not.
    fn admit(self: &Rc<Self>, addr: IpAddr, now: Instant) -> Result<Slot, String> {
        let mut i = self.inbound.borrow_mut();
        if let Some(f) = i.failing.get_mut(&addr) {
            if now < f.until {
                let first = !std::mem::replace(&mut f.logged, true);
                let why = format!(
                    "its last {} connections failed before their hello; refused for {} ms more",
                    f.count,
                    (f.until - now).as_millis()
                );
                return Err(if first { why } else { String::new() });
            }
        }
        if i.total >= CONNECTIONS_MAX {
            return Err(format!("{CONNECTIONS_MAX} peer connections are open"));
        }
        let n = i.per_address.entry(addr).or_insert(0);
        if *n >= CONNECTIONS_PER_ADDRESS_MAX {
            return Err(format!("{CONNECTIONS_PER_ADDRESS_MAX} peer connections from this address are open"));
        }
        *n += 1;
        i.total += 1;
        Ok(Slot { peers: self.clone(), addr })
    }

    /// A connection from `addr` failed before its hello: refuse that
    /// address for a while, longer each time (up to 10 s).
    fn failed(&self, addr: IpAddr, now: Instant) {
        let mut i = self.inbound.borrow_mut();
        if i.peer_ips.contains(&addr) {
            return;
        }
        if i.failing.len() >= FAILING_ADDRESSES_MAX && !i.failing.contains_key(&addr) {
            i.failing.retain(|_, f| f.until > now);
            if i.failing.len() >= FAILING_ADDRESSES_MAX {
                return;
            }
        }
        let f = i.failing.entry(addr).or_insert(Failing { count: 0, until: now, logged: false });
        f.count = f.count.saturating_add(1);
        // The first two failures are free: a peer restarting mid-handshake.
        if f.count > 2 {
            let ms = (100u64 << (f.count - 3).min(7)).min(10_000);
            f.until = now + Duration::from_millis(ms);
            f.logged = false;
        }
    }

    /// Node `from` completed its hello from `addr`: its link replaces an
    /// older one. Returns the link's number and what ends it.
    fn hello_done(&self, from: u64, addr: IpAddr) -> (u64, Receiver<()>) {
        let mut i = self.inbound.borrow_mut();
        i.failing.remove(&addr);
        let (tx, rx) = bounded(1);
        i.next_link += 1;
        let n = i.next_link;
        // Dropping the older link's sender ends that link.
        i.links.insert(from, (n, tx));
        (n, rx)
    }

    /// Link `n` from node `from` ended; true if it was that node's live
    /// link (not one a newer link replaced).
    fn link_ended(&self, from: u64, n: u64) -> bool {
        let mut i = self.inbound.borrow_mut();
        let live = i.links.get(&from).is_some_and(|(m, _)| *m == n);
        if live {
            i.links.remove(&from);
        }
        live
    }

    /// Whether a peer of cluster `theirs` may talk to this node. Both ids
    /// are logged, once per peer and id.
    fn same_cluster(&self, from: u64, theirs: u128) -> bool {
        let mine = self.cluster_id.get();
        if mine == 0 || theirs == 0 || mine == theirs {
            return true;
        }
        let mut i = self.inbound.borrow_mut();
        if !i.refused_ids.contains(&(from, theirs)) {
            if i.refused_ids.len() >= 64 {
                i.refused_ids.remove(0);
            }
            i.refused_ids.push((from, theirs));
            warn!(
                "Refusing peer node {from}: it belongs to cluster {}, this node to cluster {}. Its data directory is from another cluster: wipe it (it rejoins by snapshot) or point it at this cluster's peers.",
                cluster_id_hex(theirs),
                cluster_id_hex(mine)
            );
        }
        false
    }
}

/// The host of a `cluster_peer` address (`host:port`, `[v6]:port`), as
/// the certificate of that node must name it.
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_string()).map_err(|e| format!("\"{host}\" is not a DNS name or an IP address: {e}"))
}

async fn sender(peers: Rc<Peers>, id: u64, addr: String, p: Rc<PeerOut>, bell: Receiver<()>) {
    let mut backoff = BACKOFF_MIN_MS;
    // What was last logged about a failed dial: a new reason is logged
    // again (refused, then a certificate problem), the same one not.
    let mut logged_down: Option<String> = None;
    let mut logged_refused = false;
    // The link a new hello (the cluster id changed) replaces: kept open
    // until the new link has carried traffic for `SHORT_LINK`, so that the
    // peer sees the new link before the old one ends and does not take the
    // end for this node's death (`Inbox::lost`).
    let mut retiring: Option<Link> = None;
    loop {
        if bell.is_closed() && bell.is_empty() && Rc::strong_count(&p) == 1 {
            return;
        }
        match connect(&peers, &addr).await {
            Ok(link) => {
                logged_down = None;
                p.connected.set(true);
                let opened = Instant::now();
                if !logged_refused {
                    info!("Connected to peer node {id} at {addr}{}.", if peers.tls.is_some() { " (TLS)" } else { "" });
                }
                p.rehello.set(false);
                let hello = encode_hello(peers.my_id, peers.cluster_id.get(), &peers.advertised);
                let (r, link) = match link {
                    Link::Plain(mut s) => (send_loop(&hello, &mut s, &p, &bell, &mut retiring).await, Link::Plain(s)),
                    Link::Tls(mut s) => (send_loop(&hello, &mut *s, &p, &bell, &mut retiring).await, Link::Tls(s)),
                };
                p.connected.set(false);
                if Rc::strong_count(&p) == 1 {
                    return;
                }
                if p.rehello.get() && r.is_ok() {
                    debug!("Saying hello again to peer node {id}: this node's cluster id changed.");
                    retiring = Some(link);
                    continue;
                }
                drop(link);
                retiring = None;
                if opened.elapsed() < SHORT_LINK {
                    // Refused after the hello (another cluster, mode or
                    // version: the peer's log says which): back off.
                    if !logged_refused {
                        warn!("Peer node {id} at {addr} closed the link at once; its log says why. Retrying with backoff.");
                        logged_refused = true;
                    }
                    crate::net::rt::Timer::after(Duration::from_millis(backoff)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX_MS);
                    continue;
                }
                backoff = BACKOFF_MIN_MS;
                logged_refused = false;
                if let Err(e) = r {
                    warn!("Connection to peer node {id} at {addr} lost: {e}.");
                }
            }
            Err(e) => {
                p.connected.set(false);
                let why = e.to_string();
                if logged_down.as_deref() != Some(why.as_str()) {
                    warn!("Cannot reach peer node {id} at {addr}: {why}; retrying.");
                    logged_down = Some(why);
                }
                // Messages queued while the peer is down are stale by the
                // time it is back; raft resends what matters.
                p.queue.borrow_mut().clear();
                p.queued_bytes.set(0);
                crate::net::rt::Timer::after(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX_MS);
            }
        }
    }
}

/// An outgoing peer link: TCP, or TLS over it.
enum Link {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

/// Dial `addr`; with cluster TLS, complete the handshake (bounded by
/// `HELLO_DEADLINE`), checking the peer's certificate against the cluster
/// CA and the host of `addr`.
async fn connect(peers: &Peers, addr: &str) -> std::io::Result<Link> {
    use std::io::{Error, ErrorKind};
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    let Some(tls) = &peers.tls else { return Ok(Link::Plain(s)) };
    let name = server_name(addr).map_err(|e| Error::new(ErrorKind::InvalidInput, e))?;
    let handshake = futures_rustls::TlsConnector::from(tls.client()).connect(name, s);
    futures_lite::future::or(handshake, async {
        crate::net::rt::Timer::after(HELLO_DEADLINE).await;
        Err(Error::new(ErrorKind::TimedOut, "no TLS handshake within the hello deadline"))
    })
    .await
    .map(|t| Link::Tls(Box::new(t)))
    .map_err(|e| Error::new(e.kind(), format!("TLS: {e}")))
}

async fn send_loop<S: AsyncRead + AsyncWrite + Unpin>(
    hello: &[u8],
    s: &mut S,
    p: &PeerOut,
    bell: &Receiver<()>,
    retiring: &mut Option<Link>,
) -> std::io::Result<()> {
    s.write_all(hello).await?;
    s.flush().await?;
    let opened = Instant::now();
    let mut buf = Vec::new();
    loop {
        if retiring.is_some() && opened.elapsed() >= SHORT_LINK {
            *retiring = None;
        }
        if p.rehello.get() {
            return Ok(());
        }
        let batch: Vec<Vec<u8>> = p.queue.borrow_mut().drain(..).collect();
        p.queued_bytes.set(0);
        if batch.is_empty() {
            // The peer never writes on this connection, so a readable
            // socket means it closed (or restarted): reconnect at once
            // instead of losing the next messages to a dead link.
            let mut probe = [0u8; 1];
            let closed = futures_lite::future::or(
                async {
                    let _ = bell.recv().await;
                    false
                },
                async {
                    let _ = s.read(&mut probe).await;
                    true
                },
            )
            .await;
            if closed {
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer closed the link"));
            }
            if bell.is_closed() {
                return Ok(());
            }
            continue;
        }
        buf.clear();
        for m in &batch {
            frame_into(m, &mut buf);
        }
        s.write_all(&buf).await?;
        s.flush().await?;
    }
}

/// Append the frames of one message.
pub fn frame_into(m: &[u8], out: &mut Vec<u8>) {
    let mut chunks = m.chunks(CHUNK_BYTES).peekable();
    if m.is_empty() {
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        return;
    }
    while let Some(c) = chunks.next() {
        out.push(if chunks.peek().is_some() { 1 } else { 0 });
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
}

/// What the receiving side checks and whom it tells.
pub struct Inbox {
    /// Whether a node id is a member (or a node being added).
    pub known: Rc<dyn Fn(u64) -> bool>,
    /// A peer's hello: where it serves.
    pub hello: Rc<dyn Fn(u64, Advertised)>,
    pub deliver: Rc<dyn Fn(Message)>,
    /// The live link from a node ended (not replaced by a newer one): the
    /// node died, restarted or is cut off.
    pub lost: Rc<dyn Fn(u64)>,
    pub message_bytes_max: usize,
}

/// Accept peer connections and hand every valid message to `deliver`.
pub async fn accept_loop(ex: Rc<smol::LocalExecutor<'static>>, listener: TcpListener, peers: Rc<Peers>, inbox: Inbox) {
    let inbox = Rc::new(inbox);
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("Peer accept failed: {e}.");
                crate::net::rt::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let slot = match peers.admit(ip, Instant::now()) {
            Ok(slot) => slot,
            Err(why) => {
                if !why.is_empty() {
                    info!("Refusing a peer connection from {peer}: {why}.");
                }
                continue;
            }
        };
        let (peers, inbox) = (peers.clone(), inbox.clone());
        ex.spawn(async move {
            if let Err(e) = receive(s, ip, &peers, &inbox).await {
                debug!("Peer connection from {peer} ended: {e}.");
            }
            drop(slot);
        })
        .detach();
    }
}

/// The hello of an incoming peer connection: its node id, cluster id and
/// what it advertises, checked (magic, version, a known node, the same
/// mode).
async fn read_hello<S: AsyncRead + Unpin>(
    s: &mut S,
    peers: &Peers,
    known: &dyn Fn(u64) -> bool,
) -> std::io::Result<(u64, u128, Advertised)> {
    use std::io::{Error, ErrorKind};
    let my_mode = peers.advertised.mode;
    let mut hello = [0u8; 16];
    s.read_exact(&mut hello).await?;
    if &hello[0..4] != MAGIC {
        return Err(Error::new(ErrorKind::InvalidData, "not a midge peer (bad magic)"));
    }
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    if version != TRANSPORT_FORMAT_VERSION {
        warn!(
            "Refusing a peer connection that speaks transport version {version} (this node: {}): run the same midge release on every node.",
            TRANSPORT_FORMAT_VERSION
        );
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("peer transport version {version}, expected {TRANSPORT_FORMAT_VERSION}"),
        ));
    }
    let from = u64::from_le_bytes(hello[6..14].try_into().unwrap_or([0; 8]));
    if !known(from) {
        warn!("Refusing peer connection claiming to be unknown node {from}.");
        return Err(Error::new(ErrorKind::PermissionDenied, "unknown node id"));
    }
    let rest_len = u16::from_le_bytes([hello[14], hello[15]]) as usize;
    if rest_len > HELLO_REST_BYTES_MAX {
        return Err(Error::new(ErrorKind::InvalidData, "hello too long"));
    }
    let mut rest = vec![0u8; rest_len];
    s.read_exact(&mut rest).await?;
    let (cluster_id, advertised) = decode_hello_rest(&rest).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    if advertised.mode != my_mode {
        // Logged on both sides: each node receives the other's hello.
        warn!(
            "Refusing peer node {from}: it runs cluster_mode {}, this node cluster_mode {}; every node of a cluster needs the same cluster_mode.",
            advertised.mode.name(),
            my_mode.name()
        );
        return Err(Error::new(ErrorKind::InvalidData, "cluster_mode differs"));
    }
    Ok((from, cluster_id, advertised))
}

async fn receive(s: TcpStream, ip: IpAddr, peers: &Peers, inbox: &Inbox) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let _ = s.set_nodelay(true);
    // The handshake and the hello have `HELLO_DEADLINE` together: a
    // connection that does not complete them holds a task and a descriptor.
    let deadline = async {
        crate::net::rt::Timer::after(HELLO_DEADLINE).await;
        Err(Error::new(ErrorKind::TimedOut, format!("no hello within {} s", HELLO_DEADLINE.as_secs())))
    };
    let opened = futures_lite::future::or(
        async {
            match &peers.tls {
                None => {
                    let mut s = s;
                    let h = read_hello(&mut s, peers, &*inbox.known).await?;
                    Ok((h, InLink::Plain(s)))
                }
                Some(tls) => {
                    let mut t = futures_rustls::TlsAcceptor::from(tls.server())
                        .accept(s)
                        .await
                        .map_err(|e| Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
                    let h = read_hello(&mut t, peers, &*inbox.known).await?;
                    Ok((h, InLink::Tls(Box::new(t))))
                }
            }
        },
        deadline,
    )
    .await;
    let ((from, cluster_id, advertised), link) = match opened {
        Ok(x) => x,
        Err(e) => {
            peers.failed(ip, Instant::now());
            if e.kind() != ErrorKind::UnexpectedEof {
                info!("Closing a peer connection from {ip}: {e}.");
            }
            return Err(e);
        }
    };
    if !peers.same_cluster(from, cluster_id) {
        return Err(Error::new(ErrorKind::PermissionDenied, "another cluster"));
    }
    (inbox.hello)(from, advertised);
    let (n, replaced) = peers.hello_done(from, ip);
    let r = futures_lite::future::or(
        async {
            match link {
                InLink::Plain(s) => read_messages(s, from, cluster_id, peers, inbox).await,
                InLink::Tls(t) => read_messages(*t, from, cluster_id, peers, inbox).await,
            }
        },
        async {
            let _ = replaced.recv().await;
            Err(Error::new(ErrorKind::ConnectionAborted, "a newer link from the same node replaced it"))
        },
    )
    .await;
    if peers.link_ended(from, n) {
        (inbox.lost)(from);
    }
    r
}

/// An incoming peer link after its handshake.
enum InLink {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
}

/// The frames of a link whose hello was taken, until it ends.
async fn read_messages<S: AsyncRead + Unpin>(
    s: S,
    from: u64,
    cluster_id: u128,
    peers: &Peers,
    inbox: &Inbox,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let mut r = futures_lite::io::BufReader::with_capacity(64 * 1024, s);
    let mut msg = Vec::new();
    loop {
        let mut h = [0u8; 5];
        r.read_exact(&mut h).await?;
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > CHUNK_BYTES || msg.len() + len > inbox.message_bytes_max {
            warn!("Peer node {from} sent an oversized frame ({len} bytes); closing the link.");
            return Err(Error::new(ErrorKind::InvalidData, "oversized frame"));
        }
        let start = msg.len();
        msg.resize(start + len, 0);
        r.read_exact(&mut msg[start..]).await?;
        if h[0] & 1 == 1 {
            continue;
        }
        // This node may have learnt its cluster id since the hello.
        if !peers.same_cluster(from, cluster_id) {
            return Err(Error::new(ErrorKind::PermissionDenied, "another cluster"));
        }
        match <Message as protobuf::Message>::parse_from_bytes(&msg) {
            Ok(m) if m.from == from && m.to == peers.my_id => (inbox.deliver)(m),
            Ok(m) => {
                warn!("Dropping raft message from node {} to {} received on the link of node {from}.", m.from, m.to)
            }
            Err(e) => {
                warn!("Peer node {from} sent an undecodable raft message: {e}; closing the link.");
                return Err(Error::new(ErrorKind::InvalidData, "bad message"));
            }
        }
        msg.clear();
        if msg.capacity() > CHUNK_BYTES * 4 {
            msg = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Advertised {
        Advertised {
            listeners: vec![
                ClientListener { addr: "10.0.0.11:1883".into(), tls: false },
                ClientListener { addr: "10.0.0.11:8883".into(), tls: true },
            ],
            admin: Some("10.0.0.11:1880".into()),
            mode: ClusterMode::DynsecSync,
        }
    }

    #[test]
    fn hello_round_trip() {
        let id = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let h = encode_hello(7, id, &sample());
        assert_eq!(&h[0..4], MAGIC);
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), TRANSPORT_FORMAT_VERSION);
        assert_eq!(u64::from_le_bytes(h[6..14].try_into().unwrap()), 7);
        assert_eq!(u16::from_le_bytes([h[14], h[15]]) as usize, h.len() - 16);
        assert_eq!(decode_hello_rest(&h[16..]), Ok((id, sample())));
        let empty = encode_hello(1, 0, &Advertised::default());
        assert_eq!(decode_hello_rest(&empty[16..]), Ok((0, Advertised::default())));
        assert_eq!(cluster_id_hex(id), "0123456789abcdeffedcba9876543210");
    }

    #[test]
    fn hello_refuses_bad_input() {
        let h = encode_hello(7, 9, &sample());
        let rest = &h[16..];
        for cut in 0..rest.len() {
            assert!(decode_hello_rest(&rest[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = rest.to_vec();
        extra.push(0);
        assert_eq!(decode_hello_rest(&extra), Err("trailing bytes in hello"));
        let with = |tail: &[u8]| [&[0u8][..], &[0; 16], tail].concat();
        assert_eq!(decode_hello_rest(&with(&[1, 9, 1, b'x'])), Err("unknown address kind in hello"));
        assert_eq!(decode_hello_rest(&with(&[1, 0, 1, 0xff])), Err("address in hello is not UTF-8"));
        assert_eq!(decode_hello_rest(&with(&[33])), Err("too many addresses in hello"));
        assert_eq!(decode_hello_rest(&[2, 0]), Err("unknown cluster mode in hello"));
        assert_eq!(decode_hello_rest(&[0, 1, 2]), Err("hello without a cluster id"));
    }

    #[test]
    fn listener_for_matches_kind() {
        let a = sample();
        assert_eq!(a.listener_for(0, false), Some("10.0.0.11:1883"));
        assert_eq!(a.listener_for(1, true), Some("10.0.0.11:8883"));
        // Index 0 is plain: a TLS client goes to the first TLS listener.
        assert_eq!(a.listener_for(0, true), Some("10.0.0.11:8883"));
        assert_eq!(a.listener_for(5, false), Some("10.0.0.11:1883"));
        assert_eq!(Advertised::default().listener_for(0, false), None);
    }

    /// A connection to the peer port that never sends its hello is closed
    /// after `HELLO_DEADLINE`, before anything of it is decoded.
    #[test]
    fn a_silent_peer_connection_is_dropped_at_the_hello_deadline() {
        let ex = Rc::new(smol::LocalExecutor::new());
        crate::net::rt::run(&ex, async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let inbox = Inbox {
                known: Rc::new(|_| true),
                hello: Rc::new(|_, _| panic!("no hello was sent")),
                deliver: Rc::new(|_| panic!("no message was sent")),
                lost: Rc::new(|_| {}),
                message_bytes_max: 1 << 20,
            };
            ex.spawn(accept_loop(ex.clone(), l, Peers::new(1, Advertised::default(), None), inbox)).detach();
            let mut c = TcpStream::connect(&format!("127.0.0.1:{port}")).await.unwrap();
            let start = std::time::Instant::now();
            let mut buf = [0u8; 1];
            let n = futures_lite::future::or(async { c.read(&mut buf).await.unwrap_or(0) }, async {
                crate::net::rt::Timer::after(HELLO_DEADLINE * 3).await;
                99
            })
            .await;
            assert_eq!(n, 0, "closed by the node, not timed out by the test");
            let took = start.elapsed();
            assert!(took >= HELLO_DEADLINE - Duration::from_millis(100), "closed after {took:?}");
        });
    }
}
