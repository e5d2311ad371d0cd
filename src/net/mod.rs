//! The runtime: smol listeners and connection tasks on one thread. Bytes
//! come in (plain TCP: non-blocking reads in `conn.rs`; TLS: through
//! `embedded-io-async` reads), are decoded and handed to the broker; the
//! broker's actions are encoded into per-connection outgoing buffers that
//! the connection drains. Idle plain TCP connections are parked without a
//! task (`park.rs`). No borrow of the broker lives across an `.await`.

pub mod bridge;
mod conn;
mod health;
mod steer;
pub use health::health;
mod io;
mod listen;
pub use listen::bind;
mod park;
pub mod proxy_header;
pub mod rt;
mod ws;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use embedded_io_async::{Read, Write};
use log::debug;
use smol::LocalExecutor;

use crate::auth::acl::AclFile;
use crate::auth::password::PasswordFile;
use crate::broker::{Action, Broker, ConnId};
use crate::cluster::driver::Driver;
use crate::cluster::transport::{Advertised, Peers};
use crate::cluster::{MembershipEvent, PeerMessage};
use crate::config::FollowerMode;
use crate::mqtt::codec::{decode_with, encode};
use crate::mqtt::Version;
use crate::store::{FlushJob, FlushResult, RaftLog};
use conn::ReadBuf;
use park::Parking;

/// Read buffer of a connection that reads (see `ReadBuf`).
const READ_BUFFER_BYTES_MIN: usize = 256;
const READ_BUFFER_BYTES_BUSY: usize = 64 * 1024;
/// A TLS client that has not finished its handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In a cluster, how long a new connection may take to send its first
/// bytes (which tell a forwarded connection from a client's own).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Wakes one task (the raft driver, the parker). A channel
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
    /// The commit pipeline (raft node and broker); this runtime performs
    /// what it asks for.
    driver: RefCell<Driver<L>>,
    peers: Rc<Peers>,
    /// Wakes the raft driver: proposals or peer messages are waiting.
    driver_bell: Doorbell,
    /// `cluster_mode dynsec_sync`: the cluster's raft group, which carries
    /// dynamic security and membership (`driver` is then this node's own
    /// single-voter group, for its sessions and messages).
    group: Option<Group<L>>,
    /// (FxHash: SipHash was 3% of the work per message here.)
    conns: RefCell<fxhash::FxHashMap<ConnId, Rc<ConnIo>>>,
    /// Idle plain TCP connections without a task (None: cannot park).
    parking: Option<Parking>,
    /// TLS handshakes in progress (they count against max_connections).
    handshakes: Cell<usize>,
    /// Plain TCP connections of listeners with their own max_connections
    /// (freed when the connection closes: a parked one has no task).
    slots: RefCell<fxhash::FxHashMap<ConnId, listen::ListenerSlot>>,
    next_id: Cell<ConnId>,
    last_now: Cell<u64>,
    /// Start of the monotonic clock handed to the driver (for timers), and
    /// the same in microseconds of CLOCK_MONOTONIC (see `now_us`).
    epoch: Instant,
    epoch_us: u64,
    out_buffer_bytes_max: usize,
    packet_bytes_max: u32,
    connections_max: usize,
    nodelay: bool,
    connection_messages: bool,
    /// More than one voter: followers steer clients per `mode`.
    clustered: bool,
    mode: FollowerMode,
    executor: RefCell<Option<Rc<LocalExecutor<'static>>>>,
    /// `busy_poll_us` (zero: off); see `busy_polling`.
    busy_poll: Duration,
    /// When a client's input last arrived (kept only with busy polling).
    last_input: Cell<Option<Instant>>,
    /// Empty vectors that `dispatch` keeps for its next call, so that it
    /// does not allocate them again for every message (`SPARE_KEPT`).
    spare_actions: Cell<Vec<Action>>,
    spare_fresh: Cell<Vec<(ConnId, Rc<ConnIo>)>>,
    /// `plugin_opt_config_file`: rewritten after each dynamic-security
    /// change (dynamic security on).
    dynsec_file: RefCell<Option<std::path::PathBuf>>,
    /// The bridges (`connection` blocks), each with its task.
    bridges: RefCell<Vec<Rc<bridge::BridgeIo>>>,
    /// `persistence_min_free`: the data store's directory and the bytes
    /// its file system keeps free (see `check_free_space`).
    min_free: RefCell<Option<(std::ffi::CString, u64)>>,
}

/// The cluster group of `cluster_mode dynsec_sync`, with its own bell and
/// driver task.
struct Group<L: RaftLog> {
    driver: RefCell<Driver<L>>,
    bell: Doorbell,
}

/// Which of the server's drivers (see `Server::group`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The one whose broker serves clients.
    Main,
    /// dynsec_sync's cluster group.
    Group,
}

/// Packets of one connection's input handed to the broker in one call
/// (see `Server::take_input`).
const PACKETS_PER_CALL: usize = 256;

/// What became of a connection's input (`Server::take_input`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Intake {
    /// Every whole packet was handed to the broker.
    Done,
    /// Whole packets wait in the read buffer: the connection's unwritten
    /// output is over the bound.
    Held,
    /// A decode error: the broker closes the connection; read no more.
    Refused,
}

/// Rounds of one `dispatch` (see there); far more than a burst needs.
const DISPATCH_ROUNDS_MAX: usize = 1_000;

/// `dispatch` keeps a vector for the next call only up to this capacity:
/// a burst's (one read fanned out to many subscribers) is freed.
const SPARE_KEPT: usize = 64;

/// A driver's own thread for its writes and their fsyncs, one at a time,
/// off the event loop. It waits for the next job without a timeout, so an
/// idle broker's writer never wakes (a `smol::unblock` pool thread woke
/// twice a second while idle: four context switches a second with two of
/// them, a third of an idle node's).
struct Writer {
    jobs: std::sync::mpsc::Sender<(FlushJob, smol::channel::Sender<FlushResult>)>,
}

impl Writer {
    fn start(which: Which) -> Writer {
        let (jobs, queue) = std::sync::mpsc::channel::<(FlushJob, smol::channel::Sender<FlushResult>)>();
        let name = match which {
            Which::Main => "writer",
            Which::Group => "group-writer",
        };
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            for (job, done) in queue {
                // The driver gone (the process ends): nobody to tell.
                let _ = done.send_blocking(job.run());
            }
        });
        if let Err(e) = spawned {
            log::error!("Stopping: cannot start the data store's writer thread: {e}.");
            std::process::exit(70);
        }
        Writer { jobs }
    }

    /// Hands `job` to the thread; its result arrives on the receiver.
    fn run(&self, job: FlushJob) -> smol::channel::Receiver<FlushResult> {
        let (done, result) = smol::channel::bounded(1);
        if self.jobs.send((job, done)).is_err() {
            log::error!("Stopping: the data store's writer thread ended.");
            std::process::exit(70);
        }
        result
    }
}

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

/// Replaces the file at `path` by `bytes` so that a reader sees the old or
/// the new content, never a mix, also after a crash: a temporary file in
/// the same directory (the old file's permissions, else 0600), written and
/// synced, renamed over it, the directory synced.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Wall-clock milliseconds, never going backwards within this process.
/// Commands carry this time so that every node of a cluster sees the same.
pub fn wall_ms() -> u64 {
    clock_us(libc::CLOCK_REALTIME) / 1000
}

/// Microseconds on `clock` (0 before its zero). Read directly rather than
/// through `SystemTime`/`Instant`, whose subtraction and conversion cost
/// more than the reading itself (checked `timespec` arithmetic, `u128`):
/// the clocks are read a few times per message.
fn clock_us(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid `timespec` for the call to fill.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 || ts.tv_sec < 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

impl<L: RaftLog + 'static> Server<L> {
    pub fn new(
        driver: Driver<L>,
        group: Option<Driver<L>>,
        peers: Rc<Peers>,
        nodelay: bool,
        mode: FollowerMode,
        busy_poll: Duration,
    ) -> Rc<Server<L>> {
        let clustered = driver.node().conf_state().voters.len() > 1;
        let settings = driver.broker().settings();
        let lim = settings.limits.clone();
        let connection_messages = settings.connection_messages;
        // The peers' driver (see `perform`) knows its cluster id before the
        // first hello goes out.
        peers.set_cluster_id(group.as_ref().unwrap_or(&driver).cluster_id());
        Rc::new(Server {
            driver: RefCell::new(driver),
            peers,
            driver_bell: Doorbell::default(),
            group: group.map(|d| Group { driver: RefCell::new(d), bell: Doorbell::default() }),
            conns: RefCell::new(fxhash::FxHashMap::default()),
            parking: Parking::new(),
            handshakes: Cell::new(0),
            slots: RefCell::new(fxhash::FxHashMap::default()),
            next_id: Cell::new(1),
            last_now: Cell::new(0),
            epoch: Instant::now(),
            epoch_us: clock_us(libc::CLOCK_MONOTONIC),
            out_buffer_bytes_max: lim.out_buffer_bytes_max as usize,
            packet_bytes_max: lim.packet_bytes_max,
            connections_max: lim.connections_max as usize,
            nodelay,
            connection_messages,
            clustered,
            mode,
            executor: RefCell::new(None),
            busy_poll,
            last_input: Cell::new(None),
            spare_actions: Cell::default(),
            spare_fresh: Cell::default(),
            dynsec_file: RefCell::new(None),
            bridges: RefCell::new(Vec::new()),
            min_free: RefCell::new(None),
        })
    }

    /// The dynamic security file to keep in step with the replicated data.
    pub fn set_dynsec_file(&self, path: std::path::PathBuf) {
        *self.dynsec_file.borrow_mut() = Some(path);
    }

    /// `persistence_min_free`: from now on, and once a second, the free
    /// space of `dir`'s file system is compared with `bytes`
    /// (`Driver::set_free_space`).
    pub fn set_min_free(&self, dir: &std::path::Path, bytes: u64) {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return };
        *self.min_free.borrow_mut() = Some((path, bytes));
        self.check_free_space();
    }

    fn check_free_space(&self) {
        let guard = self.min_free.borrow();
        let Some((path, min_free)) = guard.as_ref() else { return };
        // SAFETY: `path` is a NUL-terminated string; `st` is written by
        // the call before it is read.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            // Not measurable now (the directory moved?): no change.
            return;
        }
        let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
        self.driver.borrow_mut().set_free_space(free, *min_free);
        if let Some(g) = &self.group {
            g.driver.borrow_mut().set_free_space(free, *min_free);
        }
    }

    /// Start a task for each bridge; each connects while this node serves.
    pub fn start_bridges(self: &Rc<Self>, ex: &Rc<LocalExecutor<'static>>, configs: &[crate::bridge::BridgeConfig]) {
        for c in configs {
            let io = bridge::BridgeIo::new(c.clone());
            self.bridges.borrow_mut().push(io.clone());
            ex.spawn(bridge::run(self.clone(), io)).detach();
        }
    }

    /// Whether this node's broker serves clients (and runs the bridges).
    fn serving_clients(&self) -> bool {
        self.driver.borrow().broker().serving()
    }

    /// Read the broker's state (nothing to carry out afterwards).
    fn broker_read<R>(&self, f: impl FnOnce(&Broker) -> R) -> R {
        f(self.driver.borrow().broker())
    }

    /// What the broker's applied commands ask of the bridges: wake them
    /// (a queue grew), and the acknowledgements of their inbound messages.
    fn to_bridges(&self, b: &mut Broker) {
        let bridges = self.bridges.borrow();
        if bridges.is_empty() {
            return;
        }
        let (wake, acks) = b.take_bridge_events();
        for a in acks {
            if let Some(io) = bridges.iter().find(|io| io.origin == a.origin) {
                io.push_ack(a);
            }
        }
        if wake {
            for io in bridges.iter() {
                io.ring();
            }
        }
    }

    /// The driver's monotonic clock, in microseconds.
    fn now_us(&self) -> u64 {
        // `Instant` is CLOCK_MONOTONIC on Linux: the same clock as `epoch`.
        clock_us(libc::CLOCK_MONOTONIC).saturating_sub(self.epoch_us)
    }

    pub fn now(&self) -> u64 {
        let n = wall_ms().max(self.last_now.get());
        self.last_now.set(n);
        n
    }

    /// SIGHUP: the serving broker takes new password and ACL files (see
    /// `Broker::reload_auth`; in dynsec_sync the cluster group's broker
    /// serves no clients and is left alone). Returns how many clients were
    /// disconnected.
    pub fn reload_auth(
        &self,
        passwords: Option<PasswordFile>,
        acl: Option<AclFile>,
        listeners: Vec<crate::broker::ListenerReload>,
    ) -> usize {
        self.with_broker(|b, now| b.reload_auth(passwords, acl, listeners, now))
    }

    /// Run `f` on the broker, then carry out the actions it produced.
    fn with_broker<R>(&self, f: impl FnOnce(&mut Broker, u64) -> R) -> R {
        let now = self.now();
        let mut d = self.driver.borrow_mut();
        let (r, wake) = or_exit(d.with_broker(now, f));
        self.perform(Which::Main, &mut d);
        drop(d);
        if wake {
            self.driver_bell.ring();
        }
        r
    }

    /// The driver that talks to peers: the cluster group's in dynsec_sync.
    fn peer_driver(&self) -> &RefCell<Driver<L>> {
        self.group.as_ref().map_or(&self.driver, |g| &g.driver)
    }

    fn peer_bell(&self) -> &Doorbell {
        self.group.as_ref().map_or(&self.driver_bell, |g| &g.bell)
    }

    fn cell(&self, which: Which) -> (&RefCell<Driver<L>>, &Doorbell) {
        match (which, &self.group) {
            (Which::Group, Some(g)) => (&g.driver, &g.bell),
            _ => (&self.driver, &self.driver_bell),
        }
    }

    /// dynsec_sync: requests taken by the serving broker go to the group;
    /// management requests (`midge ctl`) are the group's too.
    fn to_group(&self, main: &mut Driver<L>) {
        let Some(g) = &self.group else { return };
        let requests = main.broker_mut().take_dynsec_outbox();
        let control = main.broker_mut().take_control_requests();
        if requests.is_empty() && control.is_empty() {
            return;
        }
        let now = self.now();
        let mut gd = g.driver.borrow_mut();
        for (tag, steps) in requests {
            gd.broker_mut().propose_dynsec(tag, steps, now);
        }
        for (conn, req) in control {
            let reply = gd.admin(&req);
            main.broker_mut().admin_reply(conn, reply);
        }
        drop(gd);
        self.dispatch(main.broker_mut());
        g.bell.ring();
    }

    /// dynsec_sync: what applying the group's entries asks of the serving
    /// broker (answers, kicks, the data).
    fn take_from_group(&self, gd: &mut Driver<L>) {
        self.driver.borrow_mut().set_group_sys(gd.cluster_sys());
        let events = gd.broker_mut().take_dynsec_events();
        if events.is_empty() {
            return;
        }
        // (The first call carries the data replayed at start.)
        let now = self.now();
        let mut main = self.driver.borrow_mut();
        for ev in events {
            main.broker_mut().dynsec_group_event(ev, now);
        }
        self.dispatch(main.broker_mut());
        let wake = main.broker().has_proposals();
        drop(main);
        if wake {
            self.driver_bell.ring();
        }
    }

    fn write_dynsec_file(&self, b: &mut Broker) {
        if let Some(text) = b.take_dynsec_file() {
            if let Some(path) = self.dynsec_file.borrow().as_deref() {
                // Small and rare (an operator's change): written here, on
                // the event loop, before anything else happens.
                match write_atomic(path, text.as_bytes()) {
                    Ok(()) => log::debug!("Wrote the dynamic security file {}.", path.display()),
                    Err(e) => log::error!("Cannot write the dynamic security file {}: {e}.", path.display()),
                }
            }
        }
    }

    /// Carry out what the driver asks for: the broker's actions into the
    /// connections, raft messages to peers, peers to start or stop.
    fn perform(&self, which: Which, d: &mut Driver<L>) {
        if which == Which::Main {
            self.dispatch(d.broker_mut());
            if self.group.is_some() {
                self.to_group(d);
            }
        } else {
            self.take_from_group(d);
        }
        self.write_dynsec_file(d.broker_mut());
        if (which == Which::Group) == self.group.is_some() {
            self.peers.set_cluster_id(d.cluster_id());
        }
        let out = d.take_out();
        for ev in out.membership {
            match ev {
                MembershipEvent::Added { id, addr } => {
                    if !addr.is_empty() {
                        if let Some(ex) = self.executor.borrow().as_ref() {
                            self.peers.add(ex, id, addr);
                        }
                    }
                }
                MembershipEvent::Removed { id } => self.peers.remove(id),
            }
        }
        for m in &out.messages {
            self.peers.send(m);
        }
    }

    /// Run `fut` (the executor) with busy polling (`busy_poll_us`): for
    /// that long after a client's input arrived, the event loop polls the
    /// sockets without sleeping, so that the next packet is taken at once
    /// instead of after the thread is woken from sleep (on the machines
    /// measured, a woken thread starts 5-15 us later; see docs/CONFIG.md).
    /// Works with `rt::block_on`: a future that wakes itself makes
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

    /// Encode the broker's actions into the connections' buffers. Bytes
    /// written straight to a socket here may let the broker hand out more
    /// (a paced retained replay goes on): those actions are taken in the
    /// next round, until none are left (the sockets' room bounds it).
    fn dispatch(&self, b: &mut Broker) {
        self.to_bridges(b);
        let now = self.last_now.get();
        for _ in 0..DISPATCH_ROUNDS_MAX {
            if b.actions().is_empty() {
                return;
            }
            self.dispatch_round(b, now);
        }
        // Left for the next call (any event: a write, a tick).
        let conns = self.conns.borrow();
        for a in b.actions() {
            let (Action::Send(id, _) | Action::Close(id)) = a;
            if let Some(io) = conns.get(id) {
                self.ring(*id, io);
            }
        }
    }

    fn dispatch_round(&self, b: &mut Broker, now: u64) {
        // The broker's actions change places with the spare empty vector.
        let mut actions = self.spare_actions.take();
        b.swap_actions(&mut actions);
        // Connections that had no output pending, in the order they got
        // some (deliveries before acknowledgements, as the broker ordered
        // them): all this dispatch gave each goes out in one send. (With
        // their `ConnIo`: one map lookup less each.)
        let mut fresh = self.spare_fresh.take();
        {
            let conns = self.conns.borrow();
            for a in actions.drain(..) {
                match a {
                    Action::Send(id, p) => {
                        let Some(io) = conns.get(&id) else { continue };
                        let v = b.version(id).unwrap_or(Version::V311);
                        let was_empty = io.with_out(|out| {
                            let was_empty = out.is_empty();
                            encode(&p, v, out);
                            was_empty
                        });
                        if was_empty && !io.flags.replace(FRESH, true) {
                            fresh.push((id, io.clone()));
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
            for (id, io) in fresh.drain(..) {
                io.flags.set(FRESH, false);
                let (n, len) = io.with_out(|out| (write_direct(&io, out), out.len()));
                if n > 0 {
                    b.written(id, n, now);
                }
                if len > 0 {
                    self.ring(id, &io);
                }
            }
        }
        if actions.capacity() <= SPARE_KEPT {
            self.spare_actions.set(actions);
        }
        if fresh.capacity() <= SPARE_KEPT {
            self.spare_fresh.set(fresh);
        }
    }

    /// The link from peer `id` ended (`Driver::peer_link_lost`).
    pub fn peer_link_lost(&self, id: u64) {
        if self.peer_driver().borrow_mut().peer_link_lost(id) {
            self.peer_bell().ring();
        }
    }

    /// A raft message from a peer.
    pub fn deliver_peer_message(&self, m: PeerMessage) {
        self.peer_driver().borrow_mut().peer_message(m);
        self.peer_bell().ring();
    }

    /// Runs the driver: wakes it at its time, on its bell and when a write
    /// ends; performs what it asks for, and runs its writes (one at a
    /// time, each on a blocking thread; the driver goes on meanwhile and
    /// stages what comes for the next write).
    pub async fn driver(self: Rc<Self>) {
        self.run_driver(Which::Main).await
    }

    /// dynsec_sync: the cluster group's driver task (returns at once
    /// without one).
    pub async fn group_driver(self: Rc<Self>) {
        if self.group.is_some() {
            self.run_driver(Which::Group).await
        }
    }

    async fn run_driver(self: Rc<Self>, which: Which) {
        let (cell, bell) = self.cell(which);
        let writer = Writer::start(which);
        let mut write: Option<smol::channel::Receiver<FlushResult>> = None;
        // One timer, moved only when the wake-up time changes: a new timer
        // on every pass cost a reactor notification (an eventfd write and
        // an extra epoll round) per message.
        let mut timer_at = cell.borrow().next_wake_us();
        let mut timer = crate::net::rt::Timer::at(self.epoch + Duration::from_micros(timer_at));
        loop {
            let wake = cell.borrow().next_wake_us();
            // (A timer that fired stays silent until it is set again.)
            if wake != timer_at || timer_at <= self.now_us() {
                timer.set_at(self.epoch + Duration::from_micros(wake));
                timer_at = wake;
            }
            let written = futures_lite::future::or(
                async {
                    match write.as_ref() {
                        Some(job) => match job.recv().await {
                            Ok(result) => Some(result),
                            Err(_) => {
                                log::error!("Stopping: the data store's writer thread ended.");
                                std::process::exit(70);
                            }
                        },
                        None => std::future::pending().await,
                    }
                },
                futures_lite::future::or(
                    async {
                        bell.wait().await;
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
            // One reading of the clocks per pass (each costs a system
            // clock read); the yield below takes a new one.
            let (mut now, mut now_us) = (self.now(), self.now_us());
            // (The borrow ends before the yield below: one borrow per
            // stretch without an `.await`.)
            let wants_write = {
                let mut d = cell.borrow_mut();
                if let Some(result) = written {
                    write = None;
                    or_exit(d.end_write(Some(result)));
                    // The write may have committed entries (the leader
                    // counts itself once its own write is done).
                    again = true;
                }
                again |= or_exit(d.step(now, now_us, &|id| self.peers.connected(id)));
                self.perform(which, &mut d);
                write.is_none() && d.wants_write()
            };
            let mut d = if wants_write {
                // Group commit: let the connections run before the write,
                // so that what is already committed (PUBACKs, deliveries)
                // goes out now rather than after the fsync; then stage
                // what arrived meanwhile and write it all at once.
                futures_lite::future::yield_now().await;
                let mut d = cell.borrow_mut();
                (now, now_us) = (self.now(), self.now_us());
                // The write and its fsync run on a blocking thread; the
                // event loop serves clients and peers meanwhile.
                match or_exit(d.begin_write(now, now_us)) {
                    Some(job) => write = Some(writer.run(job)),
                    None => again = true,
                }
                self.perform(which, &mut d);
                d
            } else {
                cell.borrow_mut()
            };
            again |= d.settle(now_us);
            drop(d);
            if again {
                bell.ring();
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.driver.borrow().node().is_leader()
    }

    /// A peer's hello: where it serves.
    pub fn set_advertised(&self, id: u64, a: Advertised) {
        self.peer_driver().borrow_mut().peer_hello(id, a);
    }

    /// The `/health` answer. In dynsec_sync every node that serves its
    /// clients answers 200; the JSON is the cluster group's status, with
    /// the mode and whether this node serves.
    pub fn status_json(&self) -> (bool, String) {
        let serving = self.driver.borrow().broker().serving();
        let (ok, body) = self.peer_driver().borrow().status_json();
        let (ok, mode) = match self.group {
            Some(_) => (serving, "dynsec_sync"),
            None => (ok, "full_sync"),
        };
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("mode".into(), mode.into());
            o.insert("serving".into(), serving.into());
            let bridges = self.bridges.borrow();
            if !bridges.is_empty() {
                let d = self.driver.borrow();
                let list: Vec<serde_json::Value> = bridges
                    .iter()
                    .map(|io| {
                        let q = d.broker().state().bridge_queue(&io.cfg.name);
                        serde_json::json!({
                            "name": io.cfg.name,
                            "connected": io.connected(),
                            "queued": q.map_or(0, |q| q.items.len()),
                            "dropped": q.map_or(0, |q| q.dropped),
                        })
                    })
                    .collect();
                o.insert("bridges".into(), list.into());
            }
        }
        (ok, v.to_string())
    }

    /// The `/metrics` answer (Prometheus text format): the serving
    /// broker's counters, the raft status of the group that talks to
    /// peers (as `/health`), and each raft log's writes.
    pub fn metrics_text(&self) -> String {
        use crate::cluster::status::write_store_metrics;
        let mut e = crate::metrics::Exposition::new();
        let main = self.driver.borrow();
        let serving = main.broker().serving();
        e.gauge(
            "midge_serving",
            "1 while this node serves clients (the leader in full_sync; /health answers 200).",
            u64::from(serving),
        );
        main.broker().write_metrics(&mut e);
        e.counter(
            "midge_log_topic_lines_dropped_total",
            "log_dest topic: log lines dropped because 1,000 were waiting for $SYS/broker/log/...",
            crate::logging::topic_lines_dropped(),
        );
        self.peer_driver().borrow().node().write_raft_metrics(&mut e);
        if let Some(written) = crate::metrics::process_disk_written_bytes() {
            e.counter(
                "midge_process_disk_written_bytes_total",
                "Bytes this process wrote to storage, in whole pages (write_bytes of /proc/self/io; \
                 $SYS/broker/store/disk_written_bytes): what wears an SD card.",
                written,
            );
        }
        match &self.group {
            None => write_store_metrics(&mut e, &[("main", main.node().store_metrics())]),
            Some(g) => {
                let cluster = g.driver.borrow().node().store_metrics();
                write_store_metrics(&mut e, &[("local", main.node().store_metrics()), ("cluster", cluster)]);
            }
        }
        e.into_text()
    }

    /// `log_dest topic`: every 100 ms, the log lines kept since go to the
    /// subscribers of `$SYS/broker/log/...`.
    pub async fn publish_log(self: Rc<Self>) {
        loop {
            crate::net::rt::Timer::after(Duration::from_millis(100)).await;
            let lines = crate::logging::take_topic_lines();
            if !lines.is_empty() {
                self.with_broker(|b, now| b.publish_log(lines, now));
            }
        }
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
        self.slots.borrow_mut().remove(&id);
        self.with_broker(|b, now| b.closed(id, now));
        debug!("Connection {id} finished.");
    }

    /// `n` new bytes are in `rb` (0: only what is left from before): hand
    /// the whole packets to the broker, a few hundred per call so that
    /// the actions of one call stay small however many tiny packets
    /// (PINGREQs) one read brings. Stops while the connection's unwritten
    /// output is over `out_buffer_bytes_max` (`Intake::Held`): the rest
    /// waits in `rb` until it drains.
    fn take_input(&self, id: ConnId, rb: &mut ReadBuf, n: usize, room: usize) -> Intake {
        if !self.busy_poll.is_zero() {
            self.last_input.set(Some(Instant::now()));
        }
        rb.filled += n;
        let (buf, filled, topics) = (&rb.buf, rb.filled, &mut rb.topics);
        let mut pos = 0;
        let mut packets = 0;
        let mut counted = false;
        let intake = loop {
            let step = self.with_broker(|b, now| {
                if !counted {
                    b.count_received(n as u64);
                    counted = true;
                }
                for _ in 0..PACKETS_PER_CALL {
                    if pos == filled {
                        return Some(Intake::Done);
                    }
                    if b.out_buffered(id) > self.out_buffer_bytes_max {
                        return Some(Intake::Held);
                    }
                    match decode_with(&buf[pos..filled], b.version(id), self.packet_bytes_max, topics) {
                        Ok(Some((p, used))) => {
                            pos += used;
                            packets += 1;
                            b.packet(id, p, now);
                        }
                        Ok(None) => return Some(Intake::Done),
                        Err(e) => {
                            b.decode_error(id, &e, now);
                            return Some(Intake::Refused);
                        }
                    }
                }
                None
            });
            if let Some(i) = step {
                break i;
            }
        };
        if intake == Intake::Refused {
            return intake;
        }
        self.driver.borrow_mut().heard_from(id, packets);
        rb.consumed(pos, n, room);
        intake
    }

    /// `sent` bytes of the connection's output went out.
    fn sent(&self, id: ConnId, sent: usize) {
        self.with_broker(|b, now| b.written(id, sent, now));
    }

    /// The reading side of a TLS connection.
    async fn read_loop<R: Read>(&self, id: ConnId, mut sock: R) {
        let mut rb = ReadBuf::default();
        loop {
            // As a plain connection (see TcpConn::poll_turns): not read
            // while its unwritten output is over the bound. TLS connections
            // are few; a short sleep is simpler than a second waker.
            while self.driver.borrow().broker().out_buffered(id) > self.out_buffer_bytes_max {
                crate::net::rt::Timer::after(Duration::from_millis(10)).await;
            }
            let Some(space) = rb.space(self.packet_bytes_max) else { return };
            let room = space.len();
            let n = match sock.read(space).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut intake = self.take_input(id, &mut rb, n, room);
            while intake == Intake::Held {
                while self.driver.borrow().broker().out_buffered(id) > self.out_buffer_bytes_max {
                    crate::net::rt::Timer::after(Duration::from_millis(10)).await;
                }
                intake = self.take_input(id, &mut rb, 0, usize::MAX);
            }
            if intake == Intake::Refused {
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
            self.sent(id, sent);
        }
    }

    /// Nodes allowed to talk raft to this one.
    pub fn is_known_peer(&self, id: u64) -> bool {
        self.peer_driver().borrow().is_known_peer(id)
    }

    /// Start the peer senders for the `cluster_peer` lines and the
    /// addresses learnt from membership changes, on `ex`.
    pub fn start_peers(&self, ex: &Rc<LocalExecutor<'static>>, configured: &[(u64, String)]) {
        *self.executor.borrow_mut() = Some(ex.clone());
        let all = self.peer_driver().borrow_mut().peer_addrs(configured);
        for (id, a) in all {
            self.peers.add(ex, id, a);
        }
    }

    /// Periodic broker work, once a second.
    pub async fn ticker(self: Rc<Self>) {
        let mut ticks = 0u64;
        loop {
            crate::net::rt::Timer::after(Duration::from_millis(1000)).await;
            self.check_free_space();
            self.with_broker(|b, now| b.tick(now));
            // A lone node's raft tick rides on this wake-up (see
            // `Driver::next_wake_us`): no timer of its own.
            self.driver_bell.ring();
            if let Some(g) = &self.group {
                g.bell.ring();
            }
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
#[cfg(test)]
mod tests {
    /// Every connection holds a `ConnIo` in an `Rc` (two counts more): at
    /// most 56 bytes keeps that in an 80-byte heap block.
    #[test]
    fn conn_io_fits_an_80_byte_block() {
        assert!(std::mem::size_of::<super::ConnIo>() <= 56, "{}", std::mem::size_of::<super::ConnIo>());
    }
}
