//! Node-to-node transport for raft messages over TCP.
//!
//! Wire format version 1 (docs/FORMATS.md): a connection starts with a
//! hello — magic `MDGR`, u16 LE format version, u64 LE sender node id,
//! u16 LE length and the UTF-8 `host:port` where the sender serves MQTT
//! clients (for proxy and redirect; at most 255 bytes) — then carries frames `[u8 flags][u32 LE length][bytes]`. A raft message
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

pub const MAGIC: &[u8; 4] = b"MDGR";
pub const TRANSPORT_FORMAT_VERSION: u16 = 1;
pub const CHUNK_BYTES: usize = 256 * 1024;
pub const QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
pub const CLIENT_ADDR_BYTES_MAX: usize = 255;
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;

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
    my_client_addr: String,
    out: RefCell<HashMap<u64, Rc<PeerOut>>>,
}

impl Peers {
    pub fn new(my_id: u64, my_client_addr: String) -> Rc<Peers> {
        Rc::new(Peers { my_id, my_client_addr, out: RefCell::new(HashMap::new()) })
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
        ex.spawn(sender(self.my_id, self.my_client_addr.clone(), id, addr, p, rx)).detach();
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

async fn sender(my_id: u64, client_addr: String, id: u64, addr: String, p: Rc<PeerOut>, bell: Receiver<()>) {
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
                let r = send_loop(my_id, &client_addr, &mut s, &p, &bell).await;
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
    client_addr: &str,
    s: &mut TcpStream,
    p: &PeerOut,
    bell: &Receiver<()>,
) -> std::io::Result<()> {
    let addr = &client_addr.as_bytes()[..client_addr.len().min(CLIENT_ADDR_BYTES_MAX)];
    let mut hello = Vec::with_capacity(16 + addr.len());
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&TRANSPORT_FORMAT_VERSION.to_le_bytes());
    hello.extend_from_slice(&my_id.to_le_bytes());
    hello.extend_from_slice(&(addr.len() as u16).to_le_bytes());
    hello.extend_from_slice(addr);
    s.write_all(&hello).await?;
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
    known: Rc<dyn Fn(u64) -> bool>,
    hello: Rc<dyn Fn(u64, String)>,
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
            if let Err(e) = receive(s, my_id, &*known, &*hello, &*deliver, message_bytes_max).await {
                debug!("Peer connection from {peer} ended: {e}.");
            }
        })
        .detach();
    }
}

async fn receive(
    mut s: TcpStream,
    my_id: u64,
    known: &dyn Fn(u64) -> bool,
    on_hello: &dyn Fn(u64, String),
    deliver: &dyn Fn(Message),
    message_bytes_max: usize,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let mut hello = [0u8; 16];
    s.read_exact(&mut hello).await?;
    if &hello[0..4] != MAGIC {
        return Err(Error::new(ErrorKind::InvalidData, "not a midge peer (bad magic)"));
    }
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    if version != TRANSPORT_FORMAT_VERSION {
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
    let addr_len = u16::from_le_bytes([hello[14], hello[15]]) as usize;
    if addr_len > CLIENT_ADDR_BYTES_MAX {
        return Err(Error::new(ErrorKind::InvalidData, "client address too long"));
    }
    let mut addr = vec![0u8; addr_len];
    s.read_exact(&mut addr).await?;
    let addr = String::from_utf8(addr).map_err(|_| Error::new(ErrorKind::InvalidData, "client address not UTF-8"))?;
    on_hello(from, addr);
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
