//! Node-to-node transport for raft messages over TCP.
//!
//! Wire format version 3 (docs/FORMATS.md): a connection starts with a
//! hello — magic `MDGR`, u16 LE format version, u64 LE sender node id,
//! then the sender's `cluster_mode` (one byte) and where it serves
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
//! message may not exceed the receiver's `message_bytes_max`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::{debug, info, warn};
use raft::eraftpb::Message;
use smol::channel::{bounded, Receiver, Sender};
use smol::net::{TcpListener, TcpStream};

use crate::config::ClusterMode;

pub const MAGIC: &[u8; 4] = b"MDGR";
pub const TRANSPORT_FORMAT_VERSION: u16 = 3;
pub const CHUNK_BYTES: usize = 256 * 1024;
pub const QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest address in a hello (one length byte).
pub const ADVERTISED_ADDR_BYTES_MAX: usize = 255;
/// Most addresses a hello may carry.
pub const ADVERTISED_ENTRIES_MAX: usize = 32;
/// An incoming peer connection must complete its hello within this.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;

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
const HELLO_REST_BYTES_MAX: usize = 2 + ADVERTISED_ENTRIES_MAX * (2 + ADVERTISED_ADDR_BYTES_MAX);
const KIND_PLAIN: u8 = 0;
const KIND_TLS: u8 = 1;
const KIND_ADMIN: u8 = 2;

/// The hello a dialing node sends first (format version 3).
pub fn encode_hello(my_id: u64, a: &Advertised) -> Vec<u8> {
    let mut entries: Vec<(u8, &str)> =
        a.listeners.iter().map(|l| (if l.tls { KIND_TLS } else { KIND_PLAIN }, l.addr.as_str())).collect();
    entries.extend(a.admin.as_deref().map(|x| (KIND_ADMIN, x)));
    entries.retain(|(_, addr)| addr.len() <= ADVERTISED_ADDR_BYTES_MAX);
    entries.truncate(ADVERTISED_ENTRIES_MAX);
    let mut rest = vec![a.mode.wire(), entries.len() as u8];
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

/// The addresses part of a hello (after its fixed 16 bytes).
pub fn decode_advertised(b: &[u8]) -> Result<Advertised, &'static str> {
    let (&mode, b) = b.split_first().ok_or("hello without a cluster mode")?;
    let mode = ClusterMode::from_wire(mode).ok_or("unknown cluster mode in hello")?;
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
    Ok(a)
}

struct PeerOut {
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued_bytes: Cell<usize>,
    bell: Sender<()>,
    dropped: Cell<u64>,
    connected: Cell<bool>,
}

/// Outgoing side: one queue and one dialing task per peer.
pub struct Peers {
    my_id: u64,
    advertised: Rc<Advertised>,
    out: RefCell<HashMap<u64, Rc<PeerOut>>>,
}

impl Peers {
    pub fn new(my_id: u64, advertised: Advertised) -> Rc<Peers> {
        Rc::new(Peers { my_id, advertised: Rc::new(advertised), out: RefCell::new(HashMap::new()) })
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
        });
        self.out.borrow_mut().insert(id, p.clone());
        ex.spawn(sender(self.my_id, self.advertised.clone(), id, addr, p, rx)).detach();
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
}

async fn sender(my_id: u64, advertised: Rc<Advertised>, id: u64, addr: String, p: Rc<PeerOut>, bell: Receiver<()>) {
    let mut backoff = BACKOFF_MIN_MS;
    let mut logged_down = false;
    loop {
        if bell.is_closed() && bell.is_empty() && Rc::strong_count(&p) == 1 {
            return;
        }
        match TcpStream::connect(addr.as_str()).await {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                backoff = BACKOFF_MIN_MS;
                logged_down = false;
                p.connected.set(true);
                info!("Connected to peer node {id} at {addr}.");
                let r = send_loop(my_id, &advertised, &mut s, &p, &bell).await;
                p.connected.set(false);
                if let Err(e) = r {
                    warn!("Connection to peer node {id} at {addr} lost: {e}.");
                }
                if Rc::strong_count(&p) == 1 {
                    return;
                }
            }
            Err(e) => {
                if !logged_down {
                    warn!("Cannot reach peer node {id} at {addr}: {e}; retrying.");
                    logged_down = true;
                }
                // Messages queued while the peer is down are stale by the
                // time it is back; raft resends what matters.
                p.queue.borrow_mut().clear();
                p.queued_bytes.set(0);
                smol::Timer::after(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX_MS);
            }
        }
    }
}

async fn send_loop(
    my_id: u64,
    advertised: &Advertised,
    s: &mut TcpStream,
    p: &PeerOut,
    bell: &Receiver<()>,
) -> std::io::Result<()> {
    s.write_all(&encode_hello(my_id, advertised)).await?;
    let mut buf = Vec::new();
    loop {
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

/// Accept peer connections and hand every valid message to `deliver`.
pub async fn accept_loop(
    ex: Rc<smol::LocalExecutor<'static>>,
    listener: TcpListener,
    my_id: u64,
    my_mode: ClusterMode,
    known: Rc<dyn Fn(u64) -> bool>,
    hello: Rc<dyn Fn(u64, Advertised)>,
    deliver: Rc<dyn Fn(Message)>,
    message_bytes_max: usize,
) {
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("Peer accept failed: {e}.");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let known = known.clone();
        let hello = hello.clone();
        let deliver = deliver.clone();
        ex.spawn(async move {
            if let Err(e) = receive(s, my_id, my_mode, &*known, &*hello, &*deliver, message_bytes_max).await {
                debug!("Peer connection from {peer} ended: {e}.");
            }
        })
        .detach();
    }
}

/// The hello of an incoming peer connection: its node id and what it
/// advertises, checked (magic, version, a known node, the same mode).
async fn read_hello(
    s: &mut TcpStream,
    my_mode: ClusterMode,
    known: &dyn Fn(u64) -> bool,
) -> std::io::Result<(u64, Advertised)> {
    use std::io::{Error, ErrorKind};
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
    let advertised = decode_advertised(&rest).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    if advertised.mode != my_mode {
        // Logged on both sides: each node receives the other's hello.
        warn!(
            "Refusing peer node {from}: it runs cluster_mode {}, this node cluster_mode {}; every node of a cluster needs the same cluster_mode.",
            advertised.mode.name(),
            my_mode.name()
        );
        return Err(Error::new(ErrorKind::InvalidData, "cluster_mode differs"));
    }
    Ok((from, advertised))
}

async fn receive(
    mut s: TcpStream,
    my_id: u64,
    my_mode: ClusterMode,
    known: &dyn Fn(u64) -> bool,
    on_hello: &dyn Fn(u64, Advertised),
    deliver: &dyn Fn(Message),
    message_bytes_max: usize,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    // A connection that does not complete its hello in time is dropped: it
    // holds a task and a descriptor, and a peer sends it at once.
    let (from, advertised) = futures_lite::future::or(read_hello(&mut s, my_mode, known), async {
        smol::Timer::after(HELLO_DEADLINE).await;
        Err(Error::new(ErrorKind::TimedOut, format!("no hello within {} s", HELLO_DEADLINE.as_secs())))
    })
    .await?;
    on_hello(from, advertised);
    let mut r = futures_lite::io::BufReader::with_capacity(64 * 1024, s);
    let mut msg = Vec::new();
    loop {
        let mut h = [0u8; 5];
        r.read_exact(&mut h).await?;
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > CHUNK_BYTES || msg.len() + len > message_bytes_max {
            warn!("Peer node {from} sent an oversized frame ({len} bytes); closing the link.");
            return Err(Error::new(ErrorKind::InvalidData, "oversized frame"));
        }
        let start = msg.len();
        msg.resize(start + len, 0);
        r.read_exact(&mut msg[start..]).await?;
        if h[0] & 1 == 1 {
            continue;
        }
        match <Message as protobuf::Message>::parse_from_bytes(&msg) {
            Ok(m) if m.from == from && m.to == my_id => deliver(m),
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
        let h = encode_hello(7, &sample());
        assert_eq!(&h[0..4], MAGIC);
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), TRANSPORT_FORMAT_VERSION);
        assert_eq!(u64::from_le_bytes(h[6..14].try_into().unwrap()), 7);
        assert_eq!(u16::from_le_bytes([h[14], h[15]]) as usize, h.len() - 16);
        assert_eq!(decode_advertised(&h[16..]), Ok(sample()));
        let empty = encode_hello(1, &Advertised::default());
        assert_eq!(decode_advertised(&empty[16..]), Ok(Advertised::default()));
    }

    #[test]
    fn hello_refuses_bad_input() {
        let h = encode_hello(7, &sample());
        let rest = &h[16..];
        for cut in 0..rest.len() {
            assert!(decode_advertised(&rest[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = rest.to_vec();
        extra.push(0);
        assert_eq!(decode_advertised(&extra), Err("trailing bytes in hello"));
        assert_eq!(decode_advertised(&[0, 1, 9, 1, b'x']), Err("unknown address kind in hello"));
        assert_eq!(decode_advertised(&[0, 1, 0, 1, 0xff]), Err("address in hello is not UTF-8"));
        assert_eq!(decode_advertised(&[0, 33]), Err("too many addresses in hello"));
        assert_eq!(decode_advertised(&[2, 0]), Err("unknown cluster mode in hello"));
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
        smol::block_on(ex.run(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            ex.spawn(accept_loop(
                ex.clone(),
                l,
                1,
                ClusterMode::FullSync,
                Rc::new(|_| true),
                Rc::new(|_, _| panic!("no hello was sent")),
                Rc::new(|_| panic!("no message was sent")),
                1 << 20,
            ))
            .detach();
            let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let start = std::time::Instant::now();
            let mut buf = [0u8; 1];
            let n = futures_lite::future::or(async { c.read(&mut buf).await.unwrap_or(0) }, async {
                smol::Timer::after(HELLO_DEADLINE * 3).await;
                99
            })
            .await;
            assert_eq!(n, 0, "closed by the node, not timed out by the test");
            let took = start.elapsed();
            assert!(took >= HELLO_DEADLINE - Duration::from_millis(100), "closed after {took:?}");
        }));
    }
}
