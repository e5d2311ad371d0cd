//! The runtime: smol listeners and connection tasks on one thread. Bytes
//! come in (plain TCP: non-blocking reads in `conn.rs`; TLS: through
//! `embedded-io-async` reads), are decoded and handed to the broker; the
//! broker's actions are encoded into per-connection outgoing buffers that
//! the connection drains. Idle plain TCP connections are parked without a
//! task (`park.rs`). No borrow of the broker lives across an `.await`.

mod cluster_io;
mod conn;
mod control;
pub use cluster_io::health;
mod io;
mod park;
pub mod proxy_header;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use embedded_io_async::{Read, Write};
use log::{debug, info, warn};
use smol::net::{TcpListener, TcpStream};
use smol::LocalExecutor;

use crate::broker::{Action, Broker, ConnId};
use crate::cluster::transport::{Advertised, Peers};
use crate::cluster::Node;
use crate::config::{FollowerMode, Listener};
use crate::mqtt::codec::{decode, encode};
use crate::mqtt::{Packet, QoS, Version};
use crate::store::{FlushResult, RaftLog};
use conn::{ReadBuf, TcpConn};
use io::{SmolIo, Tcp};
use park::Parking;
use smol::Async;

/// Read buffer of a connection that reads (see `ReadBuf`).
const READ_BUFFER_BYTES_MIN: usize = 256;
const READ_BUFFER_BYTES_BUSY: usize = 64 * 1024;
/// How long a leader keeps the lead before handing it to the preferred one.
const PREFERRED_LEADER_GRACE_MS: u64 = 5_000;
/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In a cluster, how long a new connection may take to send its first
/// bytes (which tell a forwarded connection from a client's own).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a commit a leader holds its next entry, for the clients
/// that commit answered to send more (see `Node::is_held`); a hold that
/// begins later than this after the last commit ends at once. Measured
/// with a windowed 1->1 QoS 1 load on three nodes (holds of 50 to 300 us);
/// see docs/CONFIG.md `persistence_fsync`.
const COMMIT_HOLD: Duration = Duration::from_micros(200);
/// Connections a commit's hold waits to hear from, at most.
const AWAITED_MAX: usize = 64;

/// Per-connection output side, shared by the reader (which fills it through
/// the broker) and the writer (which drains it to the socket). Every
/// connection, idle or not, holds one: keep it at most 56 bytes (with the
/// `Rc` counts, an 80-byte heap block; see the test).
struct ConnIo {
    /// Output not yet taken by the writer. A `Cell`, not a `RefCell` (a
    /// word less): only `with_out` reaches it.
    out: Cell<Vec<u8>>,
    flags: Flags,
    /// Woken by `ring` (with the RUNG flag; a `Doorbell` here would take
    /// 8 bytes more with its padding).
    waker: Cell<Option<std::task::Waker>>,
    /// A plain TCP connection, which may be parked (see `park.rs`).
    parkable: bool,
    /// The socket of a parked connection (which then has no task).
    parked: Cell<Option<std::net::TcpStream>>,
    /// The socket's descriptor while its task has written all it had
    /// (see `write_direct`); -1 otherwise. Cleared before the task lets
    /// the socket go.
    direct: Cell<i32>,
}

impl ConnIo {
    fn is_parked(&self) -> bool {
        let s = self.parked.take();
        let parked = s.is_some();
        self.parked.set(s);
        parked
    }

    /// Run `f` on the connection's pending output. `f` must not reach this
    /// connection's output again (it would see it empty).
    fn with_out<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut out = self.out.take();
        let r = f(&mut out);
        self.out.set(out);
        r
    }

    fn out_len(&self) -> usize {
        self.with_out(|o| o.len())
    }

    /// Wake the connection's task (as `Doorbell::ring`).
    fn ring(&self) {
        self.flags.set(RUNG, true);
        wake_bell(&self.waker);
    }

    /// Ready if rung since the last poll; otherwise the next ring wakes `cx`.
    fn poll_rung(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        poll_bell(self.flags.replace(RUNG, false), &self.waker, cx)
    }

    async fn wait_rung(&self) {
        std::future::poll_fn(|cx| self.poll_rung(cx)).await
    }
}

/// A connection's state bits, one byte for all (a `Cell<bool>` each would
/// take a byte each).
#[derive(Default)]
struct Flags(Cell<u8>);

/// Closed by the broker: write what is pending, then end.
const CLOSING: u8 = 1;
/// Its output is over `out_buffer_bytes_max` (the broker drops QoS 0
/// messages to it until half of that is written).
const CONGESTED: u8 = 2;
/// Read or written since the last parking sweep.
const ACTIVE: u8 = 4;
/// Park at the next wait: the sweep found it idle, or it has just written
/// its first output (the CONNACK).
const PARK_REQUESTED: u8 = 8;
/// Has written output before.
const ANSWERED: u8 = 16;
/// Rung (see `ConnIo::ring`) since its task last looked.
const RUNG: u8 = 32;
/// Got output in this dispatch with none pending before (see `dispatch`).
const FRESH: u8 = 64;

impl Flags {
    fn get(&self, flag: u8) -> bool {
        self.0.get() & flag != 0
    }

    fn set(&self, flag: u8, on: bool) {
        let v = self.0.get();
        self.0.set(if on { v | flag } else { v & !flag });
    }

    /// Set `flag` to `on`; returns what it was.
    fn replace(&self, flag: u8, on: bool) -> bool {
        let was = self.get(flag);
        self.set(flag, on);
        was
    }
}

/// Wakes one task (the raft driver, the parker, `keep_reactor`). A channel
/// would do, but costs an allocation per wait; on one thread two `Cell`s
/// are enough.
#[derive(Default)]
struct Doorbell {
    rung: Cell<bool>,
    waker: Cell<Option<std::task::Waker>>,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.set(true);
        wake_bell(&self.waker);
    }

    /// Ready if rung since the last poll; otherwise the next ring wakes `cx`.
    fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        poll_bell(self.rung.replace(false), &self.waker, cx)
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }
}

/// A bell's ringing half, after its "rung" bit is set: wake the waiting
/// task, if any (a `Doorbell`'s bit is its own; a connection's, a flag).
fn wake_bell(waker: &Cell<Option<std::task::Waker>>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

/// A bell's waiting half: ready if `was_rung` (its bit, just cleared);
/// otherwise the next ring wakes `cx`.
fn poll_bell(
    was_rung: bool,
    waker: &Cell<Option<std::task::Waker>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<()> {
    if was_rung {
        std::task::Poll::Ready(())
    } else {
        waker.set(Some(cx.waker().clone()));
        std::task::Poll::Pending
    }
}

pub struct Server<L: RaftLog> {
    node: RefCell<Node<L>>,
    peers: Rc<Peers>,
    /// Wakes the raft driver: proposals or peer messages are waiting.
    driver_bell: Doorbell,
    tick_ms: u64,
    /// (FxHash: SipHash was 3% of the work per message here.)
    conns: RefCell<fxhash::FxHashMap<ConnId, Rc<ConnIo>>>,
    /// Idle plain TCP connections without a task (None: cannot park).
    parking: Option<Parking>,
    /// One voter and an in-memory log: run the Ready loop right after the
    /// broker proposes (see with_broker).
    inline_ready: bool,
    /// The log is on disk: Ready passes stage their writes and the driver
    /// flushes them together (group commit).
    defer_flush: bool,
    /// TLS handshakes in progress (they count against max_connections).
    handshakes: Cell<usize>,
    next_id: Cell<ConnId>,
    last_now: Cell<u64>,
    out_buffer_bytes_max: usize,
    packet_bytes_max: u32,
    connections_max: usize,
    nodelay: bool,
    connection_messages: bool,
    /// More than one voter: followers steer clients per `mode`.
    clustered: bool,
    mode: FollowerMode,
    preferred_leader: Option<u64>,
    last_transfer_ms: Cell<u64>,
    /// (term, time) this node last became leader.
    leader_since: Cell<(u64, u64)>,
    /// Where peers serve (client and admin listeners), from their
    /// transport hello.
    advertised: RefCell<HashMap<u64, Advertised>>,
    known_peers: RefCell<std::collections::BTreeSet<u64>>,
    executor: RefCell<Option<Rc<LocalExecutor<'static>>>>,
    /// `busy_poll_us` (zero: off); see `busy_polling`.
    busy_poll: Duration,
    /// When the last Ready pass applied entries (see `Node::is_held`).
    last_applied: Cell<Instant>,
    /// Connections the last commit sent packets that call for an answer
    /// (see `expects_answer`), each with how many packets it has yet to
    /// send back (at most `AWAITED_MAX` connections).
    awaited: RefCell<Vec<(ConnId, u32)>>,
    /// When a client's input last arrived (kept only with busy polling).
    last_input: Cell<Option<Instant>>,
    /// Client inputs taken, and whether `keep_reactor` rests until the
    /// next one (it does after `REACTOR_KEEP_IDLE` without any).
    inputs: Cell<u64>,
    keeper_resting: Cell<bool>,
    keeper_bell: Doorbell,
    /// Empty vectors that `dispatch` keeps for its next call, so that it
    /// does not allocate them again for every message (`SPARE_KEPT`).
    spare_actions: Cell<Vec<Action>>,
    spare_ids: Cell<Vec<ConnId>>,
}

/// `dispatch` keeps a vector for the next call only up to this capacity:
/// a burst's (one read fanned out to many subscribers) is freed.
const SPARE_KEPT: usize = 64;

/// A raft or store failure stops the process (exit status 70): nothing
/// may be acknowledged that is not safely stored.
fn or_exit<T>(r: Result<T, crate::cluster::NodeError>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => {
            log::error!("Stopping: {e}.");
            std::process::exit(70);
        }
    }
}

/// Whether a client usually answers `p` with a packet: a PUBLISH with QoS
/// 1 or 2 with its acknowledgement, a PUBACK (and the rest of QoS 2) with
/// the next PUBLISH of a streaming publisher.
fn expects_answer(p: &Packet) -> bool {
    match p {
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => true,
        Packet::Publish(p) => p.qos != QoS::AtMostOnce,
        _ => false,
    }
}

/// Wall-clock milliseconds, never going backwards within this process.
/// Commands carry this time so that every node of a cluster sees the same.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl<L: RaftLog + 'static> Server<L> {
    pub fn new(
        mut node: Node<L>,
        peers: Rc<Peers>,
        tick_ms: u64,
        nodelay: bool,
        mode: FollowerMode,
        preferred_leader: Option<u64>,
        busy_poll: Duration,
    ) -> Rc<Server<L>> {
        let clustered = node.conf_state().voters.len() > 1;
        let defer_flush = node.raw.store().on_disk();
        let inline_ready = !clustered && !defer_flush;
        node.hold_after_commit = !inline_ready;
        let connection_messages = node.broker.settings().connection_messages;
        let lim = node.broker.settings().limits.clone();
        Rc::new(Server {
            node: RefCell::new(node),
            peers,
            driver_bell: Doorbell::default(),
            tick_ms,
            conns: RefCell::new(fxhash::FxHashMap::default()),
            parking: Parking::new(),
            inline_ready,
            defer_flush,
            handshakes: Cell::new(0),
            next_id: Cell::new(1),
            last_now: Cell::new(0),
            out_buffer_bytes_max: lim.out_buffer_bytes_max as usize,
            packet_bytes_max: lim.packet_bytes_max,
            connections_max: lim.connections_max as usize,
            nodelay,
            connection_messages,
            clustered,
            mode,
            preferred_leader,
            last_transfer_ms: Cell::new(0),
            leader_since: Cell::new((0, 0)),
            advertised: RefCell::new(HashMap::new()),
            known_peers: RefCell::new(Default::default()),
            executor: RefCell::new(None),
            busy_poll,
            last_input: Cell::new(None),
            inputs: Cell::new(0),
            keeper_resting: Cell::new(false),
            keeper_bell: Doorbell::default(),
            spare_actions: Cell::default(),
            spare_ids: Cell::default(),
            last_applied: Cell::new(Instant::now()),
            awaited: RefCell::new(Vec::new()),
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
        for (conn, req) in node.broker.take_control_requests() {
            let leader = node.leader_id();
            let admin = self.advertised.borrow().get(&leader).and_then(|a| a.admin.clone());
            let reply = control::handle(&mut node, admin.as_deref(), &req);
            node.broker.admin_reply(conn, reply);
            self.driver_bell.ring();
        }
        self.dispatch(&mut node.broker);
        if node.broker.has_proposals() {
            // Subscribers' acknowledgements alone wait for the driver's
            // pass: a PUBLISH that arrived with them is then read first
            // and both go into one entry (in a QoS 1 ping-pong the next
            // PUBLISH no longer waits for a raft round of the last PUBACK).
            if self.inline_ready && !node.broker.proposals_lazy() {
                // One node, log in memory: commit at once instead of a hop
                // through the driver task (no fsync to batch for).
                drop(node);
                if self.ready_pass() {
                    self.driver_bell.ring();
                }
            } else {
                self.driver_bell.ring();
            }
        }
        r
    }

    /// Run `fut` (the executor) with busy polling (`busy_poll_us`): for
    /// that long after a client's input arrived, the event loop polls the
    /// sockets without sleeping, so that the next packet is taken at once
    /// instead of after the thread is woken from sleep (on the machines
    /// measured, a woken thread starts 5-15 us later; see docs/CONFIG.md).
    /// Works with async-io's `block_on`: a future that wakes itself makes
    /// `block_on` poll the reactor without blocking and poll it again.
    /// Costs CPU while it polls; zero when the broker is idle.
    pub async fn busy_polling<T>(self: Rc<Self>, fut: impl std::future::Future<Output = T>) -> T {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let r = fut.as_mut().poll(cx);
            if r.is_pending() && self.last_input.get().is_some_and(|t| t.elapsed() < self.busy_poll) {
                cx.waker().wake_by_ref();
            }
            r
        })
        .await
    }

    /// `packets` came in from `id`: count them against what the last
    /// commit awaits from it.
    fn heard_from(&self, id: ConnId, packets: u32) {
        let mut w = self.awaited.borrow_mut();
        if let Some(i) = w.iter().position(|(c, _)| *c == id) {
            w[i].1 = w[i].1.saturating_sub(packets);
            if w[i].1 == 0 {
                w.swap_remove(i);
            }
        }
    }

    /// Encode the broker's actions into the connections' buffers.
    fn dispatch(&self, b: &mut Broker) {
        // The broker's actions change places with the spare empty vector.
        let mut actions = self.spare_actions.take();
        b.swap_actions(&mut actions);
        let mut congested = Vec::new();
        // Connections that had no output pending, in the order they got
        // some (deliveries before acknowledgements, as the broker ordered
        // them): all this dispatch gave each goes out in one send.
        let mut fresh = self.spare_ids.take();
        {
            let conns = self.conns.borrow();
            for a in actions.drain(..) {
                match a {
                    Action::Send(id, p) => {
                        let Some(io) = conns.get(&id) else { continue };
                        let v = b.version(id).unwrap_or(Version::V311);
                        let (was_empty, len) = io.with_out(|out| {
                            let was_empty = out.is_empty();
                            encode(&p, v, out);
                            (was_empty, out.len())
                        });
                        if was_empty {
                            io.flags.set(FRESH, true);
                            fresh.push(id);
                        } else if !io.flags.get(FRESH)
                            && len > self.out_buffer_bytes_max
                            && !io.flags.replace(CONGESTED, true)
                        {
                            congested.push(id);
                        }
                    }
                    Action::Close(id) => {
                        if let Some(io) = conns.get(&id) {
                            io.direct.set(-1);
                            io.flags.set(CLOSING, true);
                            self.ring(id, io);
                        }
                    }
                }
            }
            for id in fresh.drain(..) {
                let Some(io) = conns.get(&id) else { continue };
                io.flags.set(FRESH, false);
                let (n, len) = io.with_out(|out| (write_direct(io, out), out.len()));
                if n > 0 {
                    b.count_bytes(0, n as u64);
                }
                if len == 0 {
                    continue;
                }
                if len > self.out_buffer_bytes_max && !io.flags.replace(CONGESTED, true) {
                    congested.push(id);
                }
                self.ring(id, io);
            }
        }
        for id in congested {
            b.set_congested(id, true);
        }
        if actions.capacity() <= SPARE_KEPT {
            self.spare_actions.set(actions);
        }
        if fresh.capacity() <= SPARE_KEPT {
            self.spare_ids.set(fresh);
        }
    }

    /// A raft message from a peer.
    pub fn deliver_peer_message(&self, m: raft::eraftpb::Message) {
        self.node.borrow_mut().step(m);
        self.driver_bell.ring();
    }

    /// The raft driver: ticks, proposals, the Ready loop, and the disk
    /// writes (one at a time, each on a blocking thread; the Ready loop
    /// goes on meanwhile and stages what comes for the next write).
    pub async fn driver(self: Rc<Self>) {
        let tick = Duration::from_millis(self.tick_ms);
        let mut next_tick = Instant::now() + tick;
        let mut write: Option<smol::Task<FlushResult>> = None;
        // When held proposals go (see `Node::is_held`).
        let mut hold_until: Option<Instant> = None;
        // One timer, moved only when the wake-up time changes: a new timer
        // on every pass cost a reactor notification (an eventfd write and
        // an extra epoll round) per message.
        let mut timer = smol::Timer::at(next_tick);
        let mut timer_at = next_tick;
        loop {
            let wake = hold_until.map_or(next_tick, |t| t.min(next_tick));
            // (A timer that fired stays silent until it is set again.)
            if wake != timer_at || timer_at <= Instant::now() {
                timer.set_at(wake);
                timer_at = wake;
            }
            let written = futures_lite::future::or(
                async {
                    match write.as_mut() {
                        Some(job) => Some(job.await),
                        None => std::future::pending().await,
                    }
                },
                futures_lite::future::or(
                    async {
                        self.driver_bell.wait().await;
                        None
                    },
                    async {
                        (&mut timer).await;
                        None
                    },
                ),
            )
            .await;
            let mut again = false;
            if let Some(result) = written {
                write = None;
                self.end_flush(Some(result));
                // The write may have committed entries (the leader counts
                // itself once its own write is done).
                again = true;
            }
            if Instant::now() >= next_tick {
                self.node.borrow_mut().tick();
                self.upkeep(self.now());
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
            }
            // The hold ends at its time, or once every client the commit
            // answered has sent as many packets as it got.
            if hold_until.is_some_and(|t| Instant::now() >= t || self.awaited.borrow().is_empty()) {
                hold_until = None;
                self.node.borrow_mut().release_hold();
            }
            again |= self.ready_passes();
            if write.is_none() && self.node.borrow().needs_flush() {
                // Group commit: let the connections run before the write,
                // so that what is already committed (PUBACKs, deliveries)
                // goes out now rather than after the fsync; then stage
                // what arrived meanwhile and write it all at once.
                futures_lite::future::yield_now().await;
                self.ready_passes();
                // The write and its fsync run on a blocking thread; the
                // event loop serves clients and peers meanwhile.
                let job = or_exit(self.node.borrow_mut().begin_flush());
                match job {
                    Some(job) => write = Some(smol::unblock(move || job.run())),
                    None => {
                        self.end_flush(None);
                        again = true;
                    }
                }
            }
            if hold_until.is_none() && self.node.borrow().is_held() {
                let until = self.last_applied.get() + COMMIT_HOLD;
                if until <= Instant::now() {
                    // The commit is long past: nobody it answered is
                    // still about to send.
                    self.node.borrow_mut().release_hold();
                    again = true;
                } else {
                    hold_until = Some(until);
                }
            }
            if again {
                self.driver_bell.ring();
            }
        }
    }

    /// Ends a flush: raft learns what is on disk, and the messages that
    /// waited for it leave.
    fn end_flush(&self, result: Option<FlushResult>) {
        let msgs = or_exit(self.node.borrow_mut().end_flush(result));
        for m in &msgs {
            self.peers.send(m);
        }
    }

    /// Ready passes until none is left, bounded; true when more work is
    /// ready.
    fn ready_passes(&self) -> bool {
        for _ in 0..8 {
            if !self.ready_pass() {
                return false;
            }
        }
        true
    }

    /// One pass of the raft Ready loop and what follows from it; true when
    /// more work is ready. With the log on disk the pass only stages its
    /// writes (the driver flushes them); in memory there is nothing to
    /// batch for, so it writes at once and runs the pass that follows.
    fn ready_pass(&self) -> bool {
        let now = self.now();
        let mut node = self.node.borrow_mut();
        let peers = self.peers.clone();
        let mut send = |msgs: Vec<raft::eraftpb::Message>| {
            for m in &msgs {
                peers.send(m);
            }
        };
        let mut out = or_exit(node.ready(now, &mut send));
        let applied = out.applied_entries > 0;
        if applied {
            self.last_applied.set(Instant::now());
        }
        if !self.defer_flush {
            out.messages.extend(or_exit(node.flush()));
            out.messages.extend(or_exit(node.ready(now, &mut send)).messages);
        }
        if applied && !self.inline_ready {
            // Whom this commit answers: the hold after it ends once each
            // has spoken (see the driver).
            let mut w = self.awaited.borrow_mut();
            w.clear();
            for a in node.broker.actions() {
                if let Action::Send(id, p) = a {
                    if !expects_answer(p) {
                        continue;
                    }
                    match w.iter().position(|(c, _)| c == id) {
                        Some(i) => w[i].1 += 1,
                        None if w.len() < AWAITED_MAX => w.push((*id, 1)),
                        None => {}
                    }
                }
            }
        }
        self.dispatch(&mut node.broker);
        let events = std::mem::take(&mut node.membership_events);
        let again = node.has_work();
        drop(node);
        for ev in events {
            self.on_membership(ev);
        }
        for m in &out.messages {
            self.peers.send(m);
        }
        again
    }

    /// Accept MQTT clients on one listener. A follower steers them per
    /// `cluster_follower_mode`: proxy to the leader, serve (the broker then
    /// redirects or refuses), or, in closed mode, does not listen at all.
    pub async fn listen(self: Rc<Self>, ex: Rc<LocalExecutor<'static>>, index: usize, l: Listener, first: TcpListener) {
        let l = Rc::new(l);
        let mut sock = Some(first);
        let closed_mode = self.clustered && self.mode == FollowerMode::Closed;
        // A single node accepts clients once it serves (a few ms after
        // start), so the first CONNECT is never refused.
        if !self.clustered {
            while !self.node.borrow().broker.serving() {
                smol::Timer::after(Duration::from_millis(5)).await;
            }
        }
        if let Some(first) = sock.as_ref().and_then(|s| s.local_addr().ok()) {
            let family = if first.is_ipv6() { "ipv6" } else { "ipv4" };
            let tls = if l.tls.is_some() { " (TLS)" } else { "" };
            info!("Opening {family} listen socket on port {}{tls}.", first.port());
        }
        loop {
            if closed_mode {
                if !self.is_leader() {
                    if let Some(old) = sock.take() {
                        info!(
                            "Closing client listener on port {}: not the leader (cluster_follower_mode closed).",
                            l.port
                        );
                        drop(old);
                    }
                    smol::Timer::after(Duration::from_millis(20)).await;
                    continue;
                }
                if sock.is_none() {
                    match bind(&l).await {
                        Ok(x) => {
                            info!("Opening client listener on port {}: this node leads.", l.port);
                            sock = Some(x);
                        }
                        Err(e) => {
                            warn!("Cannot reopen client listener on port {}: {e}.", l.port);
                            smol::Timer::after(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
            }
            let Some(listener) = sock.as_ref() else { continue };
            let accepted = if closed_mode {
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    smol::Timer::after(Duration::from_millis(100)).await;
                    None
                })
                .await
            } else {
                Some(listener.accept().await)
            };
            let Some(accepted) = accepted else { continue };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!("Accept on port {} failed: {}.", l.port, e);
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            if self.conns.borrow().len() + self.handshakes.get() >= self.connections_max {
                warn!("Refusing connection from {}: max_connections ({}) reached.", peer, self.connections_max);
                continue;
            }
            let _ = stream.set_nodelay(self.nodelay);
            if self.clustered {
                let (server, ex2, l2) = (self.clone(), ex.clone(), l.clone());
                ex.spawn(async move { server.steer(ex2, index, l2, stream, peer).await }).detach();
                continue;
            }
            self.clone().serve(&ex, &l, stream, peer, None);
        }
    }

    /// A new client connection in a cluster. A connection that a follower
    /// forwarded starts with a PROXY header naming the client: it is
    /// served here whatever this node's role (a leader that has just lost
    /// its lead refuses it with a reason code), never forwarded again. A
    /// client's own connection to a follower in proxy mode goes on to the
    /// leader's listener of the same kind (plain or TLS; TLS ends at the
    /// leader).
    async fn steer(
        self: Rc<Self>,
        ex: Rc<LocalExecutor<'static>>,
        index: usize,
        l: Rc<Listener>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) {
        self.handshakes.set(self.handshakes.get() + 1);
        let first = futures_lite::future::or(read_proxy_header(&mut stream), async {
            smol::Timer::after(FIRST_BYTES_TIMEOUT).await;
            Err(format!("nothing received within {} s", FIRST_BYTES_TIMEOUT.as_secs()))
        })
        .await;
        self.handshakes.set(self.handshakes.get() - 1);
        match first {
            Ok(Some(client)) => return self.serve(&ex, &l, stream, client, Some(peer)),
            Ok(None) => {}
            Err(e) => return info!("Closing connection from {peer} on port {}: {e}.", l.port),
        }
        if self.mode == FollowerMode::Proxy && !self.is_leader() {
            let leader = self.node.borrow().leader_id();
            let target = self
                .advertised
                .borrow()
                .get(&leader)
                .and_then(|a| a.listener_for(index, l.tls.is_some()))
                .map(String::from);
            match target {
                Some(addr) if leader != 0 => {
                    debug!("Proxying connection from {peer} to the leader (node {leader}) at {addr}.");
                    return ex.spawn(cluster_io::proxy(stream, peer, addr)).detach();
                }
                _ => {
                    // Served here, so that the client gets a reason code
                    // (Server unavailable) instead of a closed socket.
                    let tls = if l.tls.is_some() { "TLS" } else { "plain" };
                    match leader {
                        0 => info!("No cluster leader known: connection from {peer} on port {} is refused.", l.port),
                        _ => info!(
                            "No {tls} client listener of the leader (node {leader}) is known: connection from {peer} on port {} is refused.",
                            l.port
                        ),
                    }
                }
            }
        }
        self.serve(&ex, &l, stream, peer, None)
    }

    /// Serve a client here (plain or TLS). `via`: the follower that
    /// forwarded the connection of `peer`.
    fn serve(
        self: Rc<Self>,
        ex: &LocalExecutor<'static>,
        l: &Listener,
        stream: TcpStream,
        peer: SocketAddr,
        via: Option<SocketAddr>,
    ) {
        if self.connection_messages {
            match via {
                None => info!("New connection from {} on port {}.", peer, l.port),
                Some(v) => info!("New connection from {} (forwarded by {}) on port {}.", peer, v, l.port),
            }
        }
        let server = self.clone();
        match &l.tls {
            None => self.spawn_tcp(ex, stream, peer, false),
            Some(t) => {
                let cfg = t.server.clone();
                ex.spawn(async move { server.serve_tls(stream, peer, cfg).await }).detach()
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.node.borrow().is_leader()
    }

    /// The current leader's first client listener, if it is another node
    /// (the Server Reference of `cluster_follower_mode redirect`).
    pub fn leader_client_addr(&self) -> Option<String> {
        let node = self.node.borrow();
        let leader = node.leader_id();
        if leader == 0 || leader == node.id() {
            return None;
        }
        self.advertised.borrow().get(&leader).and_then(|a| a.listeners.first()).map(|l| l.addr.clone())
    }

    /// A peer's hello: where it serves.
    pub fn set_advertised(&self, id: u64, a: Advertised) {
        self.advertised.borrow_mut().insert(id, a);
    }

    /// Per tick: redirect target, $SYS cluster values, preferred leader.
    fn upkeep(&self, now: u64) {
        let redirect = if self.mode == FollowerMode::Redirect { self.leader_client_addr() } else { None };
        let mut node = self.node.borrow_mut();
        node.broker.set_redirect(redirect);
        let st = node.status();
        let online = st.voters.iter().filter(|id| **id == st.node_id || self.peers.connected(**id)).count();
        let mut sys = vec![
            ("role", st.role.to_string()),
            ("node_id", st.node_id.to_string()),
            ("leader_id", st.leader_id.to_string()),
            ("term", st.term.to_string()),
            ("voting_nodes/total", st.voters.len().to_string()),
            ("voting_nodes/online", online.to_string()),
            ("commit_index", st.commit_index.to_string()),
            ("applied_index", st.applied_index.to_string()),
            ("batch/proposals", node.stats.proposals.to_string()),
            ("batch/commands", node.stats.commands.to_string()),
            ("batch/persists", node.stats.persists.to_string()),
            ("batch/persisted_entries", node.stats.persisted_entries.to_string()),
        ];
        for (id, lag) in &st.peer_lag {
            let name: &'static str = match id {
                1 => "peers/1/lag",
                2 => "peers/2/lag",
                3 => "peers/3/lag",
                4 => "peers/4/lag",
                5 => "peers/5/lag",
                _ => "peers/other/lag",
            };
            sys.push((name, lag.to_string()));
        }
        node.broker.set_cluster_sys(sys);
        if node.is_leader() && self.leader_since.get().0 != node.term() {
            self.leader_since.set((node.term(), now));
        }
        if let Some(p) = self.preferred_leader {
            let me = node.id();
            // A leader keeps the lead for a while first, so that a manual
            // transfer (midge ctl) is not undone at once.
            if node.is_leader()
                && now.saturating_sub(self.leader_since.get().1) > PREFERRED_LEADER_GRACE_MS
                && p != me
                && node.caught_up(p)
                && now.saturating_sub(self.last_transfer_ms.get()) > 3_000
            {
                info!("Handing leadership to preferred leader node {p} (caught up).");
                self.last_transfer_ms.set(now);
                node.transfer_leader(p);
            }
        }
    }

    pub fn status_json(&self) -> (bool, String) {
        let node = self.node.borrow();
        let st = node.status();
        let lag = st.commit_index.saturating_sub(st.applied_index);
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("lag".into(), lag.into());
            o.insert("batching".into(), serde_json::to_value(node.stats).unwrap_or_default());
        }
        (st.serving, v.to_string())
    }

    /// Accept management clients on the admin listener (every node).
    pub async fn listen_admin(self: Rc<Self>, ex: Rc<LocalExecutor<'static>>, listener: TcpListener) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            info!("New admin connection from {}.", peer);
            self.clone().spawn_tcp(&ex, stream, peer, true);
        }
    }

    /// Serve a client of a plain TCP listener (or of the admin listener)
    /// in a task of its own.
    fn spawn_tcp(self: Rc<Self>, ex: &LocalExecutor<'static>, stream: TcpStream, peer: SocketAddr, admin: bool) {
        // A freshly accepted stream has no other handle: own the socket
        // outright (no reference count, no cached readiness futures).
        let Ok(sock) = Arc::try_unwrap(Arc::<Async<std::net::TcpStream>>::from(stream)) else {
            warn!("Closing connection from {peer}: its socket is shared.");
            return;
        };
        // Opened before the task starts, so that the task holds only what
        // the connection needs while it runs.
        let (id, io) = self.open_conn(peer, admin, true);
        ex.spawn(TcpConn::new(self, id, io, sock, false)).detach();
    }

    /// A client on a TLS listener: handshake (bounded in time), then the
    /// same MQTT connection over the TLS stream.
    async fn serve_tls(self: Rc<Self>, stream: TcpStream, peer: SocketAddr, cfg: Arc<rustls::ServerConfig>) {
        self.handshakes.set(self.handshakes.get() + 1);
        let tcp = Tcp::from(stream);
        let accept = futures_rustls::TlsAcceptor::from(cfg).accept(tcp.clone());
        let done = futures_lite::future::or(async { Some(accept.await) }, async {
            smol::Timer::after(TLS_HANDSHAKE_TIMEOUT).await;
            None
        })
        .await;
        self.handshakes.set(self.handshakes.get() - 1);
        match done {
            Some(Ok(tls)) => {
                // rustls holds records in its own buffers: a readable socket
                // is not a readable stream, so TLS keeps a reader and a
                // writer future, each with its buffer.
                let (r, w) = futures_lite::io::split(tls);
                let (id, io) = self.open_conn(peer, false, false);
                let reader = self.read_loop(id, SmolIo(r));
                let writer = self.write_loop(id, io.clone(), SmolIo(w));
                futures_lite::future::or(reader, writer).await;
                self.close_conn(id);
            }
            Some(Err(e)) => info!("Client <unknown> from {peer} disconnected: TLS handshake failed: {e}."),
            None => info!(
                "Client <unknown> from {peer} disconnected: no TLS handshake within {} s.",
                TLS_HANDSHAKE_TIMEOUT.as_secs()
            ),
        }
        tcp.shutdown();
    }

    /// Give a new connection its id and output side, and tell the broker.
    fn open_conn(&self, peer: SocketAddr, admin: bool, parkable: bool) -> (ConnId, Rc<ConnIo>) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let io = Rc::new(ConnIo {
            out: Cell::new(Vec::new()),
            flags: Flags::default(),
            waker: Cell::new(None),
            parkable,
            parked: Cell::new(None),
            direct: Cell::new(-1),
        });
        io.flags.set(ACTIVE, true);
        self.conns.borrow_mut().insert(id, io.clone());
        self.with_broker(|b, now| if admin { b.open_admin(id, peer, now) } else { b.open(id, peer, now) });
        (id, io)
    }

    fn close_conn(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
        self.with_broker(|b, now| b.closed(id, now));
        debug!("Connection {id} finished.");
    }

    /// `n` new bytes are in `rb`: hand every whole packet to the broker.
    /// False after a decode error (the broker then closes the connection).
    fn take_input(&self, id: ConnId, rb: &mut ReadBuf, n: usize, room: usize) -> bool {
        if !self.busy_poll.is_zero() {
            self.last_input.set(Some(Instant::now()));
        }
        self.inputs.set(self.inputs.get() + 1);
        if self.keeper_resting.replace(false) {
            self.keeper_bell.ring();
        }
        rb.filled += n;
        let (buf, filled) = (&rb.buf, rb.filled);
        let consumed = self.with_broker(|b, now| {
            b.count_bytes(n as u64, 0);
            let mut pos = 0;
            let mut packets = 0;
            while pos < filled {
                match decode(&buf[pos..filled], b.version(id), self.packet_bytes_max) {
                    Ok(Some((p, used))) => {
                        pos += used;
                        packets += 1;
                        b.packet(id, p, now);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        b.decode_error(id, &e, now);
                        return None;
                    }
                }
            }
            self.heard_from(id, packets);
            Some(pos)
        });
        let Some(consumed) = consumed else { return false };
        rb.consumed(consumed, n, room);
        true
    }

    /// `sent` bytes of the connection's output went out.
    fn sent(&self, id: ConnId, io: &ConnIo, sent: usize) {
        let uncongest = io.flags.get(CONGESTED) && io.out_len() <= self.out_buffer_bytes_max / 2;
        if uncongest {
            io.flags.set(CONGESTED, false);
        }
        self.with_broker(|b, _| {
            b.count_bytes(0, sent as u64);
            if uncongest {
                b.set_congested(id, false);
            }
        });
    }

    /// The reading side of a TLS connection.
    async fn read_loop<R: Read>(&self, id: ConnId, mut sock: R) {
        let mut rb = ReadBuf::default();
        loop {
            let Some(space) = rb.space(self.packet_bytes_max) else { return };
            let room = space.len();
            let n = match sock.read(space).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !self.take_input(id, &mut rb, n, room) {
                // Wait for the writer to flush the refusal, then it ends us.
                std::future::pending::<()>().await;
                return;
            }
            // Writers first (see TcpConn::poll_turns).
            futures_lite::future::yield_now().await;
        }
    }

    /// The writing side of a TLS connection.
    async fn write_loop<W: Write>(&self, id: ConnId, io: Rc<ConnIo>, mut sock: W) {
        let mut pending: Vec<u8> = Vec::new();
        loop {
            if io.out_len() == 0 {
                if io.flags.get(CLOSING) {
                    let _ = sock.flush().await;
                    return;
                }
                io.wait_rung().await;
                continue;
            }
            io.with_out(|out| std::mem::swap(&mut pending, out));
            // flush: a TLS stream may hold encrypted records back.
            if sock.write_all(&pending).await.is_err() || sock.flush().await.is_err() {
                return;
            }
            let sent = pending.len();
            pending.clear();
            if pending.capacity() > self.out_buffer_bytes_max {
                pending = Vec::new();
            }
            self.sent(id, &io, sent);
        }
    }

    fn on_membership(&self, ev: crate::cluster::MembershipEvent) {
        use crate::cluster::MembershipEvent;
        match ev {
            MembershipEvent::Added { id, addr } => {
                self.known_peers.borrow_mut().insert(id);
                if !addr.is_empty() {
                    if let Some(ex) = self.executor.borrow().as_ref() {
                        self.peers.add(ex, id, addr);
                    }
                }
            }
            MembershipEvent::Removed { id } => {
                self.known_peers.borrow_mut().remove(&id);
                self.peers.remove(id);
            }
        }
    }

    /// Nodes allowed to talk raft to this one.
    pub fn is_known_peer(&self, id: u64) -> bool {
        self.known_peers.borrow().contains(&id)
    }

    /// Start the peer senders for `addrs` (config lines and addresses
    /// learnt from membership changes) on `ex`.
    pub fn start_peers(&self, ex: &Rc<LocalExecutor<'static>>, addrs: &[(u64, String)]) {
        *self.executor.borrow_mut() = Some(ex.clone());
        let mut all: std::collections::BTreeMap<u64, String> = addrs.iter().cloned().collect();
        {
            let node = self.node.borrow();
            for (id, a) in node.broker.state().peer_addrs() {
                all.entry(*id).or_insert_with(|| a.clone());
            }
            let mut known = self.known_peers.borrow_mut();
            known.extend(node.conf_state().voters.iter().copied());
            known.extend(node.conf_state().learners.iter().copied());
        }
        for (id, a) in all {
            self.known_peers.borrow_mut().insert(id);
            self.peers.add(ex, id, a);
        }
    }

    /// Periodic broker work, once a second.
    pub async fn ticker(self: Rc<Self>) {
        let mut ticks = 0u64;
        loop {
            smol::Timer::after(Duration::from_millis(1000)).await;
            self.with_broker(|b, now| b.tick(now));
            // A connection parks after one to two seconds without I/O.
            self.park_sweep();
            ticks += 1;
            if ticks.is_multiple_of(RETURN_MEMORY_EVERY_SECS) {
                return_free_memory();
            }
        }
    }
}

/// Write `out` (a connection's fresh output: none of it was pending before
/// this dispatch) straight to the socket, without waiting, if the
/// connection's task has nothing unwritten either (`ConnIo::direct`).
/// Takes what was written off the front of `out`; the rest is the task's
/// as usual. Saves waking the
/// task and a pass through the executor between a message's commit and
/// its delivery: about a fifth of the delivery latency after a quiet spell
/// (measured with `loadgen latency --interval-us 10000`).
fn write_direct(io: &ConnIo, out: &mut Vec<u8>) -> usize {
    let fd = io.direct.get();
    if fd < 0 || out.is_empty() || io.flags.get(CLOSING) || !io.flags.get(ANSWERED) {
        return 0;
    }
    // SAFETY: `fd` is the task's open socket: the task clears `direct`
    // before it gives the socket up or drops it, and this runs on the same
    // thread. `out` is valid for `out.len()` bytes. MSG_DONTWAIT: never
    // blocks; MSG_NOSIGNAL: a closed peer is an error, not a signal.
    let n = unsafe { libc::send(fd, out.as_ptr().cast(), out.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n <= 0 {
        // Full, interrupted or broken: the task writes (and finds out).
        return 0;
    }
    let n = n as usize;
    out.drain(..n);
    io.flags.set(ACTIVE, true);
    n
}

impl<L: RaftLog + 'static> Server<L> {
    /// Keeps the event loop's thread the one that waits for I/O. async-io's
    /// helper thread ("async-io") takes the reactor over when it sees no
    /// reactor turn for 10 ms; from then on every event woke that thread
    /// first, and it woke ours: a second thread wake-up on every packet
    /// after a quiet spell (a QoS 1 round trip every 30 ms took 117 us at
    /// the median instead of 77 us on the machines measured). A turn every
    /// `REACTOR_TURN_MS` keeps it from ever seeing such a gap. The turns
    /// cost CPU (about 0.5% of a core on that machine), so they rest once
    /// no client has sent anything for `REACTOR_KEEP_IDLE`, until the next
    /// input: an idle broker sleeps, and only the first packet after the
    /// rest pays the second wake-up.
    pub async fn keep_reactor(self: Rc<Self>) {
        let turn = Duration::from_millis(REACTOR_TURN_MS);
        let mut t = smol::Timer::interval(turn);
        let mut seen = self.inputs.get();
        let mut quiet = Duration::ZERO;
        loop {
            futures_lite::StreamExt::next(&mut t).await;
            let now = self.inputs.get();
            if now != seen {
                seen = now;
                quiet = Duration::ZERO;
                continue;
            }
            quiet += turn;
            if quiet >= REACTOR_KEEP_IDLE {
                self.keeper_resting.set(true);
                self.keeper_bell.wait().await;
                seen = self.inputs.get();
                quiet = Duration::ZERO;
                t.set_interval(turn);
            }
        }
    }
}

/// Below the helper thread's 10 ms check (see `Server::keep_reactor`).
const REACTOR_TURN_MS: u64 = 8;
/// How long without client input before the reactor turns rest.
const REACTOR_KEEP_IDLE: Duration = Duration::from_secs(5);

/// How often freed heap memory is handed back to the operating system.
const RETURN_MEMORY_EVERY_SECS: u64 = 10;

/// glibc keeps freed memory inside the heap (a burst of traffic left RSS at
/// 117 MiB after the load was gone); `malloc_trim` returns the free pages.
/// It walks the heap: cheap at this period. musl's allocator returns
/// memory by itself.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `host:port` with the port replaced (IPv6 hosts stay bracketed).
/// The PROXY header a forwarding follower sends first, if the connection
/// starts with one: the client's address. Reads nothing else.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    use futures_lite::AsyncReadExt;
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Err("closed before sending anything".into()),
        Ok(_) if !proxy_header::starts_header(first[0]) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(e.to_string()),
    }
    let mut fixed = [0u8; proxy_header::FIXED_BYTES];
    stream.read_exact(&mut fixed).await.map_err(|e| e.to_string())?;
    let len = proxy_header::parse_fixed(&fixed)?;
    let mut block = [0u8; proxy_header::ADDRESS_BYTES_MAX];
    stream.read_exact(&mut block[..len]).await.map_err(|e| e.to_string())?;
    match proxy_header::parse_source(&fixed, &block[..len])? {
        Some(client) => Ok(Some(client)),
        None => Err("PROXY header without a TCP source address".into()),
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

#[cfg(test)]
mod tests {
    /// Every connection holds a `ConnIo` in an `Rc` (two counts more): at
    /// most 56 bytes keeps that in an 80-byte heap block.
    #[test]
    fn conn_io_fits_an_80_byte_block() {
        assert!(std::mem::size_of::<super::ConnIo>() <= 56, "{}", std::mem::size_of::<super::ConnIo>());
    }
}
