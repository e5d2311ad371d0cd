//! The runtime: smol listeners and connection tasks on one thread. Bytes
//! come in through `embedded-io-async` reads, are decoded and handed to the
//! broker; the broker's actions are encoded into per-connection outgoing
//! buffers that a writer future drains. No borrow of the broker lives
//! across an `.await`.

mod io;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use embedded_io_async::{Read, Write};
use log::{debug, info, warn};
use smol::channel::{bounded, Receiver, Sender};
use smol::net::{TcpListener, TcpStream};
use smol::LocalExecutor;

use crate::broker::{Action, Broker, ConnId};
use crate::cluster::transport::Peers;
use crate::cluster::Node;
use crate::config::Listener;
use crate::mqtt::codec::{decode, encode};
use crate::mqtt::Version;
use crate::store::RaftLog;
use io::SmolIo;

/// Smallest read buffer a connection starts with; it grows (up to the
/// maximum packet size) only for a packet that needs it.
const READ_BUFFER_BYTES_MIN: usize = 4096;

/// Per-connection output side, shared by the reader (which fills it through
/// the broker) and the writer (which drains it to the socket).
struct ConnIo {
    out: RefCell<Vec<u8>>,
    closing: Cell<bool>,
    congested: Cell<bool>,
    doorbell: Sender<()>,
}

pub struct Server<L: RaftLog> {
    node: RefCell<Node<L>>,
    peers: Rc<Peers>,
    /// Wakes the raft driver: proposals or peer messages are waiting.
    driver_bell: Sender<()>,
    driver_rx: Receiver<()>,
    tick_ms: u64,
    conns: RefCell<HashMap<ConnId, Rc<ConnIo>>>,
    next_id: Cell<ConnId>,
    last_now: Cell<u64>,
    out_buffer_bytes_max: usize,
    packet_bytes_max: u32,
    connections_max: usize,
    nodelay: bool,
}

/// Wall-clock milliseconds, never going backwards within this process.
/// Commands carry this time so that every node of a cluster sees the same.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl<L: RaftLog + 'static> Server<L> {
    pub fn new(node: Node<L>, peers: Rc<Peers>, tick_ms: u64, nodelay: bool) -> Rc<Server<L>> {
        let lim = node.broker.settings.limits.clone();
        let (driver_bell, driver_rx) = bounded(1);
        Rc::new(Server {
            node: RefCell::new(node),
            peers,
            driver_bell,
            driver_rx,
            tick_ms,
            conns: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            last_now: Cell::new(0),
            out_buffer_bytes_max: lim.out_buffer_bytes_max as usize,
            packet_bytes_max: lim.packet_bytes_max,
            connections_max: lim.connections_max as usize,
            nodelay,
        })
    }

    pub fn now(&self) -> u64 {
        let n = wall_ms().max(self.last_now.get());
        self.last_now.set(n);
        n
    }

    /// Run `f` on the broker, then carry out the actions it produced.
    fn with_broker<R>(&self, f: impl FnOnce(&mut Broker, u64) -> R) -> R {
        let now = self.now();
        let mut node = self.node.borrow_mut();
        let r = f(&mut node.broker, now);
        self.dispatch(&mut node.broker);
        if node.broker.has_proposals() {
            let _ = self.driver_bell.try_send(());
        }
        r
    }

    /// Encode the broker's actions into the connections' buffers.
    fn dispatch(&self, b: &mut Broker) {
        let actions: Vec<Action> = b.take_actions().collect();
        let mut congested = Vec::new();
        {
            let conns = self.conns.borrow();
            for a in actions {
                match a {
                    Action::Send(id, p) => {
                        let Some(io) = conns.get(&id) else { continue };
                        let v = b.version(id).unwrap_or(Version::V311);
                        let mut out = io.out.borrow_mut();
                        let was_empty = out.is_empty();
                        encode(&p, v, &mut out);
                        if out.len() > self.out_buffer_bytes_max && !io.congested.get() {
                            io.congested.set(true);
                            congested.push(id);
                        }
                        if was_empty {
                            let _ = io.doorbell.try_send(());
                        }
                    }
                    Action::Close(id) => {
                        if let Some(io) = conns.get(&id) {
                            io.closing.set(true);
                            let _ = io.doorbell.try_send(());
                        }
                    }
                }
            }
        }
        for id in congested {
            b.set_congested(id, true);
        }
    }

    /// A raft message from a peer.
    pub fn deliver_peer_message(&self, m: raft::eraftpb::Message) {
        self.node.borrow_mut().step(m);
        let _ = self.driver_bell.try_send(());
    }

    /// The raft driver: ticks, proposals, the Ready loop.
    pub async fn driver(self: Rc<Self>) {
        let tick = Duration::from_millis(self.tick_ms);
        let mut next_tick = std::time::Instant::now() + tick;
        loop {
            let rx = self.driver_rx.clone();
            futures_lite::future::or(
                async move {
                    let _ = rx.recv().await;
                },
                async {
                    smol::Timer::at(next_tick).await;
                },
            )
            .await;
            if std::time::Instant::now() >= next_tick {
                self.node.borrow_mut().tick();
                next_tick += tick;
                if next_tick < std::time::Instant::now() {
                    next_tick = std::time::Instant::now() + tick;
                }
            }
            // Bounded: a pass that leaves more ready work rings again.
            let mut again = false;
            for _ in 0..8 {
                let now = self.now();
                let mut node = self.node.borrow_mut();
                let out = match node.ready(now) {
                    Ok(o) => o,
                    Err(e) => {
                        log::error!("Stopping: {e}.");
                        std::process::exit(70);
                    }
                };
                self.dispatch(&mut node.broker);
                again = node.raw.has_ready() || node.broker.has_proposals();
                drop(node);
                for m in &out.messages {
                    self.peers.send(m);
                }
                if !again {
                    break;
                }
            }
            if again {
                let _ = self.driver_bell.try_send(());
            }
        }
    }

    pub async fn listen(self: Rc<Self>, ex: Rc<LocalExecutor<'static>>, listener: TcpListener) {
        let Ok(local) = listener.local_addr() else { return };
        info!("Opening {} listen socket on port {}.", if local.is_ipv6() { "ipv6" } else { "ipv4" }, local.port());
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!("Accept on port {} failed: {}.", local.port(), e);
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            if self.conns.borrow().len() >= self.connections_max {
                warn!("Refusing connection from {}: max_connections ({}) reached.", peer, self.connections_max);
                continue;
            }
            let _ = stream.set_nodelay(self.nodelay);
            info!("New connection from {} on port {}.", peer, local.port());
            let server = self.clone();
            ex.spawn(async move { server.serve(stream, peer).await }).detach();
        }
    }

    async fn serve(self: Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = bounded(1);
        let io = Rc::new(ConnIo {
            out: RefCell::new(Vec::new()),
            closing: Cell::new(false),
            congested: Cell::new(false),
            doorbell: tx,
        });
        self.conns.borrow_mut().insert(id, io.clone());
        self.with_broker(|b, now| b.open(id, &peer.to_string(), now));
        let reader = self.read_loop(id, SmolIo(stream.clone()));
        let writer = self.write_loop(id, io.clone(), SmolIo(stream.clone()), rx);
        futures_lite::future::or(reader, writer).await;
        let _ = stream.shutdown(std::net::Shutdown::Both);
        self.conns.borrow_mut().remove(&id);
        self.with_broker(|b, now| b.closed(id, now));
        debug!("Connection {} from {} finished.", id, peer);
    }

    async fn read_loop(&self, id: ConnId, mut sock: SmolIo) {
        let mut buf = vec![0u8; READ_BUFFER_BYTES_MIN];
        let mut filled = 0usize;
        loop {
            if filled == buf.len() {
                // Only reached while a packet larger than the buffer is
                // incomplete; decode has already checked it against the max.
                let cap = (buf.len() * 2).min(self.packet_bytes_max as usize + 5);
                if cap <= buf.len() {
                    return;
                }
                buf.resize(cap, 0);
            }
            let n = match sock.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            filled += n;
            let consumed = self.with_broker(|b, now| {
                b.count_bytes(n as u64, 0);
                let mut pos = 0;
                while pos < filled {
                    match decode(&buf[pos..filled], b.version(id), self.packet_bytes_max) {
                        Ok(Some((p, used))) => {
                            pos += used;
                            b.packet(id, p, now);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            b.decode_error(id, &e, now);
                            return None;
                        }
                    }
                }
                Some(pos)
            });
            let Some(consumed) = consumed else {
                // Wait for the writer to flush the refusal, then it ends us.
                std::future::pending::<()>().await;
                return;
            };
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if filled == 0 && buf.len() > READ_BUFFER_BYTES_MIN {
                buf.truncate(READ_BUFFER_BYTES_MIN);
                buf.shrink_to_fit();
            }
        }
    }

    async fn write_loop(&self, id: ConnId, io: Rc<ConnIo>, mut sock: SmolIo, rx: Receiver<()>) {
        let mut pending: Vec<u8> = Vec::new();
        loop {
            if io.out.borrow().is_empty() {
                if io.closing.get() {
                    let _ = sock.flush().await;
                    return;
                }
                if rx.recv().await.is_err() {
                    return;
                }
                continue;
            }
            std::mem::swap(&mut pending, &mut *io.out.borrow_mut());
            if sock.write_all(&pending).await.is_err() {
                return;
            }
            let sent = pending.len() as u64;
            pending.clear();
            if pending.capacity() > self.out_buffer_bytes_max {
                pending = Vec::new();
            }
            let uncongest = io.congested.get() && io.out.borrow().len() <= self.out_buffer_bytes_max / 2;
            if uncongest {
                io.congested.set(false);
            }
            self.with_broker(|b, _| {
                b.count_bytes(0, sent);
                if uncongest {
                    b.set_congested(id, false);
                }
            });
        }
    }

    pub fn peers(&self) -> &Rc<Peers> {
        &self.peers
    }

    /// Periodic broker work, once a second.
    pub async fn ticker(self: Rc<Self>) {
        loop {
            smol::Timer::after(Duration::from_millis(1000)).await;
            self.with_broker(|b, now| b.tick(now));
        }
    }
}

/// Bind a configured listener; an error names the address.
pub async fn bind(l: &Listener) -> std::io::Result<TcpListener> {
    match &l.address {
        Some(a) => {
            let host = if a.contains(':') && !a.starts_with('[') { format!("[{a}]") } else { a.clone() };
            TcpListener::bind(format!("{}:{}", host, l.port)).await
        }
        // Dual stack where IPv6 exists, IPv4 otherwise.
        None => match TcpListener::bind(("::", l.port)).await {
            Ok(x) => Ok(x),
            Err(_) => TcpListener::bind(("0.0.0.0", l.port)).await,
        },
    }
}
