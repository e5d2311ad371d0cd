//! The event loop's reactor: one epoll set (mio) owned by the thread that
//! runs the executor, socket readiness, and timers on one kernel timerfd.
//!
//! Why not async-io (smol's reactor): async-io's helper thread ("async-io")
//! checks every 10 ms whether the thread in `block_on` turned the reactor,
//! and takes the reactor over when it has not. From then on every event
//! woke that thread first, and it woke ours. Keeping it off cost a reactor
//! turn every 8 ms; measured at 100 QoS 1 messages a second, midge made
//! 2,425 context switches in 6 s against Mosquitto's 1,017, and used twice
//! its CPU. Here the executor's thread is the only one that waits for I/O:
//! it sleeps in `epoll_wait` until a socket, a timer or a wake from
//! another thread (the writer thread, a channel) needs it.
//!
//! What stays on async-io runs on its helper thread, which then simply
//! waits in its own epoll set (nothing else turns that reactor): signals
//! (`async-signal`), outgoing bridge connections (they resolve host
//! names), and the follower's proxy connection to the leader.
//!
//! Readiness is edge-triggered (no `epoll_ctl` per wait): a source is
//! readable (writable) from an event until a read (write) through this
//! module finds it would block. Reads and writes must therefore go through
//! `Async::try_read` / `try_write` or the `AsyncRead`/`AsyncWrite` impls,
//! never around them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use mio::unix::SourceFd;
use mio::{Interest, Token};

/// Token of the cross-thread wake (an eventfd, `mio::Waker`).
const WAKE: Token = Token(usize::MAX);
/// Token of the timerfd.
const TIMER: Token = Token(usize::MAX - 1);
/// Events taken from the kernel per wait.
const EVENTS_MAX: usize = 256;

struct Source {
    fd: RawFd,
    token: usize,
    readable: Cell<bool>,
    writable: Cell<bool>,
    readers: RefCell<Vec<Waker>>,
    writers: RefCell<Vec<Waker>>,
}

fn add_waker(list: &RefCell<Vec<Waker>>, w: &Waker) {
    let mut l = list.borrow_mut();
    if !l.iter().any(|x| x.will_wake(w)) {
        l.push(w.clone());
    }
}

/// The wake of `block_on`: a flag, and the eventfd when the wake comes
/// from another thread (a wake from the loop's own thread happens while it
/// runs, and the flag is enough).
struct Notify {
    woken: AtomicBool,
    waker: mio::Waker,
}

thread_local! {
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::SeqCst) && !ON_LOOP.with(Cell::get) {
            let _ = self.waker.wake();
        }
    }
}

/// The waker of `run`'s own future: marks it for a poll (it is polled
/// only when woken, not on every turn of the loop) and wakes the loop.
struct MainWake {
    woken: AtomicBool,
    notify: Arc<Notify>,
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Flag first: the loop clears `notify.woken` before it looks at
        // this flag, so a wake from another thread is either seen here or
        // ends the wait through the eventfd.
        self.woken.store(true, Ordering::SeqCst);
        self.notify.wake_by_ref();
    }
}

struct Reactor {
    poll: RefCell<mio::Poll>,
    events: RefCell<mio::Events>,
    /// Sources by token; freed slots are reused.
    sources: RefCell<Vec<Option<Rc<Source>>>>,
    free: RefCell<Vec<usize>>,
    timers: RefCell<BTreeMap<(Instant, u64), Waker>>,
    timer_ids: Cell<u64>,
    timerfd: OwnedFd,
    /// The deadline the timerfd is set for.
    armed: Cell<Option<Instant>>,
    /// Wakers to wake after a turn (kept for its capacity).
    wake: Cell<Vec<Waker>>,
    notify: Arc<Notify>,
}

thread_local! {
    static REACTOR: Reactor = Reactor::new().unwrap_or_else(|e| {
        log::error!("Stopping: cannot create the event loop (epoll, eventfd, timerfd): {e}.");
        std::process::exit(71)
    });
}

impl Reactor {
    fn new() -> io::Result<Reactor> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        // SAFETY: timerfd_create has no preconditions; the result is checked.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new, valid descriptor that nothing else owns.
        let timerfd = unsafe { OwnedFd::from_raw_fd(fd) };
        poll.registry().register(&mut SourceFd(&fd), TIMER, Interest::READABLE)?;
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(EVENTS_MAX)),
            sources: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            timers: RefCell::new(BTreeMap::new()),
            timer_ids: Cell::new(0),
            timerfd,
            armed: Cell::new(None),
            wake: Cell::new(Vec::new()),
            notify: Arc::new(Notify { woken: AtomicBool::new(false), waker }),
        })
    }

    fn register(&self, fd: RawFd) -> io::Result<Rc<Source>> {
        let token = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut s = self.sources.borrow_mut();
            s.push(None);
            s.len() - 1
        });
        let src = Rc::new(Source {
            fd,
            token,
            readable: Cell::new(true),
            writable: Cell::new(true),
            readers: RefCell::new(Vec::new()),
            writers: RefCell::new(Vec::new()),
        });
        let r = self.poll.borrow().registry().register(
            &mut SourceFd(&fd),
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = r {
            self.free.borrow_mut().push(token);
            return Err(e);
        }
        self.sources.borrow_mut()[token] = Some(src.clone());
        Ok(src)
    }

    fn deregister(&self, src: &Source) {
        let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&src.fd));
        if let Some(slot) = self.sources.borrow_mut().get_mut(src.token) {
            *slot = None;
        }
        self.free.borrow_mut().push(src.token);
    }

    /// Wakes the timers that are due.
    fn fire_timers(&self, now: Instant) {
        let mut due = self.wake.take();
        {
            let mut t = self.timers.borrow_mut();
            while let Some(e) = t.first_entry() {
                if e.key().0 > now {
                    break;
                }
                due.push(e.remove());
            }
        }
        // (Woken with no borrow held: a waker dropped here may drop a task
        // and its sources and timers.)
        for w in due.drain(..) {
            w.wake();
        }
        self.wake.set(due);
    }

    /// Sets the timerfd for the earliest timer, if that changed.
    fn arm(&self, now: Instant) {
        let Some(&(at, _)) = self.timers.borrow().keys().next() else { return };
        if self.armed.get() == Some(at) {
            return;
        }
        let d = at.saturating_duration_since(now).max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ },
        };
        // SAFETY: a valid timerfd and a valid itimerspec.
        if unsafe { libc::timerfd_settime(self.timerfd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } == 0 {
            self.armed.set(Some(at));
        }
    }

    /// One turn: wait for events (without sleeping unless `block`), wake
    /// what they concern, and wake the timers that are due.
    fn react(&self, block: bool) {
        // A timer already due makes the wait a look; it fires after it,
        // with those that come due meanwhile.
        let timeout = match block {
            true => {
                let now = Instant::now();
                if self.timers.borrow().keys().next().is_some_and(|&(at, _)| at <= now) {
                    Some(Duration::ZERO)
                } else {
                    self.arm(now);
                    None
                }
            }
            false => Some(Duration::ZERO),
        };
        let mut events = self.events.borrow_mut();
        if let Err(e) = self.poll.borrow_mut().poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::warn!("Event loop wait failed: {e}.");
            }
            return;
        }
        let mut wake = self.wake.take();
        for ev in events.iter() {
            match ev.token() {
                WAKE => {}
                TIMER => {
                    let mut b = [0u8; 8];
                    // SAFETY: reads 8 bytes into an 8-byte buffer.
                    let _ = unsafe { libc::read(self.timerfd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
                    self.armed.set(None);
                }
                Token(t) => {
                    let Some(src) = self.sources.borrow().get(t).cloned().flatten() else { continue };
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        src.readable.set(true);
                        wake.append(&mut src.readers.borrow_mut());
                    }
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        src.writable.set(true);
                        wake.append(&mut src.writers.borrow_mut());
                    }
                }
            }
        }
        drop(events);
        for w in wake.drain(..) {
            w.wake();
        }
        self.wake.set(wake);
        self.fire_timers(Instant::now());
    }
}

/// Runs `fut` to completion on this thread, turning the reactor whenever
/// it waits (`run` with no tasks of its own).
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    run(&smol::LocalExecutor::new(), fut)
}

/// Most tasks `run` runs before it turns the reactor again without
/// blocking (so that a busy executor does not starve I/O).
const TASKS_PER_TURN: usize = 64;

/// Runs `fut` and the tasks of `ex` on this thread's reactor until `fut`
/// ends; `fut` is polled when its waker was woken, not on every turn. The
/// tasks run through `LocalExecutor::try_tick`, which pops the executor's
/// queue directly: `LocalExecutor::run` goes through the
/// multi-threaded executor's runner (a local queue per runner that it
/// fills from the global one, stealing, a ticker woken per task), which
/// cost about 1.2k instructions more per QoS 1 round trip than this loop
/// (benches/results/instructions.md). While no task
/// is runnable, one `LocalExecutor::tick` future stays registered as the
/// executor's sleeper with this loop's waker, so that a task scheduled
/// from another thread (the writer thread, the blocking pool) ends the
/// wait; its check for a task after registering (async-executor's
/// `Ticker`) closes the race with such a schedule.
pub fn run<T>(ex: &smol::LocalExecutor<'_>, fut: impl Future<Output = T>) -> T {
    let was = ON_LOOP.with(|l| l.replace(true));
    let notify = REACTOR.with(|r| r.notify.clone());
    let waker = Waker::from(notify.clone());
    let mut cx = Context::from_waker(&waker);
    let main = Arc::new(MainWake { woken: AtomicBool::new(true), notify: notify.clone() });
    let main_waker = Waker::from(main.clone());
    let mut main_cx = Context::from_waker(&main_waker);
    let mut fut = std::pin::pin!(fut);
    let mut sleeper: Pin<Box<dyn Future<Output = ()> + '_>> = Box::pin(ex.tick());
    let out = loop {
        notify.woken.store(false, Ordering::SeqCst);
        if main.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(t) = fut.as_mut().poll(&mut main_cx) {
                break t;
            }
        }
        let mut ran = 0;
        while ran < TASKS_PER_TURN && ex.try_tick() {
            ran += 1;
        }
        let mut block = ran < TASKS_PER_TURN && !notify.woken.load(Ordering::SeqCst);
        if block && sleeper.as_mut().poll(&mut cx).is_ready() {
            // It found a task scheduled meanwhile and ran it.
            sleeper = Box::pin(ex.tick());
            block = false;
        }
        REACTOR.with(|r| r.react(block));
    };
    ON_LOOP.with(|l| l.set(was));
    out
}

/// An I/O object (non-blocking) registered with this thread's reactor.
pub struct Async<T: AsRawFd> {
    io: Option<T>,
    src: Rc<Source>,
}

impl<T: AsRawFd> Async<T> {
    pub fn new(io: T) -> io::Result<Async<T>> {
        set_nonblocking(io.as_raw_fd())?;
        let src = REACTOR.with(|r| r.register(io.as_raw_fd()))?;
        Ok(Async { io: Some(io), src })
    }

    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("Async holds its I/O object until into_inner")
    }

    /// Deregisters and hands the object back (still non-blocking).
    pub fn into_inner(mut self) -> io::Result<T> {
        REACTOR.with(|r| r.deregister(&self.src));
        Ok(self.io.take().expect("Async holds its I/O object until into_inner"))
    }

    /// Ready once the source was reported readable since a read last
    /// found it empty; otherwise wakes `cx` at the next readiness.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.src.readable.get() {
            return Poll::Ready(Ok(()));
        }
        add_waker(&self.src.readers, cx.waker());
        Poll::Pending
    }

    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.src.writable.get() {
            return Poll::Ready(Ok(()));
        }
        add_waker(&self.src.writers, cx.waker());
        Poll::Pending
    }

    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Says that the source has nothing more to read for now (for sources
    /// read other than through `try_read`, like an epoll set).
    pub fn clear_readable(&self) {
        self.src.readable.set(false);
    }

    /// One read without waiting. Would-block clears the readiness, and so
    /// does a read that did not fill `buf`: the socket was empty then, and
    /// data that comes later is a new edge (as tokio does; it saves the
    /// would-block read after each packet).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>
    where
        for<'a> &'a T: Read,
    {
        let r = (&mut self.get_ref()).read(buf);
        match &r {
            Ok(n) if *n > 0 && *n < buf.len() => self.src.readable.set(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.src.readable.set(false),
            _ => {}
        }
        r
    }

    /// Whether the source counts as readable (see `poll_readable`).
    pub fn is_readable(&self) -> bool {
        self.src.readable.get()
    }

    /// One write without waiting; would-block clears the readiness.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize>
    where
        for<'a> &'a T: Write,
    {
        let r = (&mut self.get_ref()).write(buf);
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.src.writable.set(false);
        }
        r
    }
}

impl<T: AsRawFd> Drop for Async<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            // (At thread exit the reactor may be gone: nothing to undo.)
            let _ = REACTOR.try_with(|r| r.deregister(&self.src));
        }
    }
}

impl<T: AsRawFd> AsRawFd for Async<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.src.fd
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One read or write (`op`) once the source is `ready`: a source not
/// ready since it was drained waits without a system call.
fn poll_io(
    cx: &mut Context<'_>,
    ready: impl Fn(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut op: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        if ready(cx).is_pending() {
            return Poll::Pending;
        }
        match op() {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            r => return Poll::Ready(r),
        }
    }
}

fn poll_read_with(a: &Async<std::net::TcpStream>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    poll_io(cx, |cx| a.poll_readable(cx), || a.try_read(buf))
}

fn poll_write_with(a: &Async<std::net::TcpStream>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    poll_io(cx, |cx| a.poll_writable(cx), || a.try_write(buf))
}

impl AsyncRead for &Async<std::net::TcpStream> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        poll_read_with(*self, cx, buf)
    }
}

impl AsyncWrite for &Async<std::net::TcpStream> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        poll_write_with(*self, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// A timer of this thread's reactor: a future that completes at its
/// deadline, once; then it stays pending until set again.
pub struct Timer {
    when: Option<Instant>,
    id: u64,
    /// The key it is registered under.
    key: Option<(Instant, u64)>,
}

impl Timer {
    pub fn at(when: Instant) -> Timer {
        let id = REACTOR.with(|r| {
            let id = r.timer_ids.get() + 1;
            r.timer_ids.set(id);
            id
        });
        Timer { when: Some(when), id, key: None }
    }

    pub fn after(d: Duration) -> Timer {
        Timer::at(Instant::now() + d)
    }

    pub fn set_at(&mut self, when: Instant) {
        self.unregister();
        self.when = Some(when);
    }

    fn unregister(&mut self) {
        if let Some(k) = self.key.take() {
            let _ = REACTOR.try_with(|r| r.timers.borrow_mut().remove(&k));
        }
    }

    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let Some(when) = self.when else { return Poll::Pending };
        let now = Instant::now();
        if now >= when {
            self.unregister();
            self.when = None;
            return Poll::Ready(when);
        }
        let key = (when, self.id);
        REACTOR.with(|r| {
            let mut t = r.timers.borrow_mut();
            match t.get_mut(&key) {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(w) => *w = cx.waker().clone(),
                None => {
                    t.insert(key, cx.waker().clone());
                }
            }
        });
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        self.get_mut().poll_due(cx)
    }
}

/// A TCP listener on this thread's reactor.
pub struct TcpListener(Async<std::net::TcpListener>);

impl TcpListener {
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        TcpListener::try_from(std::net::TcpListener::bind(addr)?)
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            match self.0.get_ref().accept() {
                Ok((s, peer)) => return Ok((TcpStream::try_from(s)?, peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.0.clear_readable();
                    self.0.readable().await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}

impl TryFrom<std::net::TcpListener> for TcpListener {
    type Error = io::Error;

    fn try_from(l: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener(Async::new(l)?))
    }
}

/// A TCP stream on this thread's reactor; clones share the socket.
#[derive(Clone)]
pub struct TcpStream(Rc<Async<std::net::TcpStream>>);

impl TcpStream {
    /// Connects to the first address of `host:port` that answers. A host
    /// name is resolved on a blocking thread (the event loop goes on).
    pub async fn connect(host_port: &str) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = match host_port.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => {
                let name = host_port.to_owned();
                smol::unblock(move || name.to_socket_addrs().map(Iterator::collect)).await?
            }
        };
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{host_port}: no address"));
        for a in addrs {
            match TcpStream::connect_one(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reads without taking, waiting for data.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.get_ref().peek(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.0.clear_readable();
                    self.0.readable().await?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    async fn connect_one(a: SocketAddr) -> io::Result<TcpStream> {
        // mio starts the connection without waiting for it.
        let s = mio::net::TcpStream::connect(a)?;
        let s = std::net::TcpStream::from(OwnedFd::from(s));
        let s = TcpStream::try_from(s)?;
        // A new source counts as writable; this one is once the connection
        // is made (or has failed). A connection made before the
        // registration is reported by the first wait all the same.
        s.0.src.writable.set(false);
        loop {
            s.0.writable().await?;
            if let Some(e) = s.0.get_ref().take_error()? {
                return Err(e);
            }
            match s.0.get_ref().peer_addr() {
                Ok(_) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => s.0.src.writable.set(false),
                Err(e) => return Err(e),
            }
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.get_ref().set_nodelay(on)
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.0.get_ref().shutdown(how)
    }
}

impl TryFrom<std::net::TcpStream> for TcpStream {
    type Error = io::Error;

    fn try_from(s: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream(Rc::new(Async::new(s)?)))
    }
}

impl From<TcpStream> for Rc<Async<std::net::TcpStream>> {
    fn from(s: TcpStream) -> Self {
        s.0
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        poll_read_with(&self.0, cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        poll_write_with(&self.0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn timers_fire_in_order_and_not_early() {
        block_on(async {
            let start = Instant::now();
            let order = Rc::new(RefCell::new(Vec::new()));
            let ex = smol::LocalExecutor::new();
            for (i, ms) in [(1, 30u64), (0, 10), (2, 50)] {
                let order = order.clone();
                ex.spawn(async move {
                    let at = Timer::after(Duration::from_millis(ms)).await;
                    assert!(at.duration_since(start) >= Duration::from_millis(ms));
                    assert!(start.elapsed() >= Duration::from_millis(ms));
                    order.borrow_mut().push(i);
                })
                .detach();
            }
            ex.run(Timer::after(Duration::from_millis(80))).await;
            assert_eq!(*order.borrow(), vec![0, 1, 2]);
        });
    }

    #[test]
    fn a_fired_timer_stays_silent_until_set_again() {
        block_on(async {
            let mut t = Timer::after(Duration::from_millis(5));
            (&mut t).await;
            let quiet = futures_lite::future::or(
                async {
                    (&mut t).await;
                    true
                },
                async {
                    Timer::after(Duration::from_millis(30)).await;
                    false
                },
            );
            assert!(!quiet.await, "a fired one-shot timer fired again");
            let again = Instant::now() + Duration::from_millis(5);
            t.set_at(again);
            assert_eq!((&mut t).await, again);
            assert!(Instant::now() >= again);
        });
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_wait() {
        let (tx, rx) = smol::channel::bounded::<u32>(1);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send_blocking(7).unwrap();
        });
        // Only the eventfd can end the wait early: the one timer is at 5 s.
        let start = Instant::now();
        let got = block_on(futures_lite::future::or(async { rx.recv().await.ok() }, async {
            Timer::after(Duration::from_secs(5)).await;
            None
        }));
        assert_eq!(got, Some(7));
        assert!(start.elapsed() < Duration::from_secs(4), "woken by the timer, not the other thread");
        t.join().unwrap();
    }

    /// `run`: a task of the executor woken from another thread while the
    /// loop sleeps runs (the executor's sleeper ends the wait), however
    /// many times; without the sleeper the schedule would only push it
    /// onto the queue, and the loop would sleep until the 5-s timer.
    #[test]
    fn run_wakes_for_a_task_scheduled_from_another_thread() {
        let ex = smol::LocalExecutor::new();
        let (tx, rx) = smol::channel::bounded::<u32>(1);
        let (back_tx, back_rx) = smol::channel::bounded::<u32>(1);
        let task = ex.spawn(async move {
            let mut sum = 0;
            while let Ok(n) = rx.recv().await {
                sum += n;
                back_tx.send(n).await.unwrap();
            }
            sum
        });
        let t = std::thread::spawn(move || {
            for n in 1..=20 {
                std::thread::sleep(Duration::from_millis(5));
                tx.send_blocking(n).unwrap();
                // The loop has run the task (it answered) and sleeps again.
                assert_eq!(back_rx.recv_blocking().unwrap(), n);
            }
        });
        let start = Instant::now();
        let got = run(
            &ex,
            futures_lite::future::or(async { Some(task.await) }, async {
                Timer::after(Duration::from_secs(5)).await;
                None
            }),
        );
        assert_eq!(got, Some(210));
        assert!(start.elapsed() < Duration::from_secs(4), "woken by the timer, not the other thread");
        t.join().unwrap();
    }

    /// Edge-triggered readiness: a read that did not fill the buffer
    /// clears it, and data that comes later wakes the reader again.
    #[test]
    fn a_short_read_clears_readiness_and_new_data_wakes_the_reader() {
        block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let (client, accepted) = futures_lite::future::zip(TcpStream::connect(&addr), l.accept()).await;
            let mut client = client.unwrap();
            let (server, _) = accepted.unwrap();
            let server: Rc<Async<std::net::TcpStream>> = server.into();
            client.write_all(b"abc").await.unwrap();
            server.readable().await.unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(server.try_read(&mut buf).unwrap(), 3);
            assert!(!server.is_readable(), "a short read left the socket readable");
            let ex = smol::LocalExecutor::new();
            let s2 = server.clone();
            let reader = ex.spawn(async move {
                s2.readable().await.unwrap();
                let mut buf = [0u8; 16];
                s2.try_read(&mut buf).unwrap()
            });
            let n = ex
                .run(futures_lite::future::or(
                    async {
                        Timer::after(Duration::from_millis(20)).await;
                        client.write_all(b"defg").await.unwrap();
                        reader.await
                    },
                    async {
                        Timer::after(Duration::from_secs(5)).await;
                        panic!("new data did not wake the reader")
                    },
                ))
                .await;
            assert_eq!(n, 4);
            // End of input is readable too, and stays so.
            client.close().await.unwrap();
            let mut rest = Vec::new();
            let mut s3 = TcpStream(server.clone());
            assert_eq!(s3.read_to_end(&mut rest).await.unwrap(), 0);
        });
    }

    /// A connection still being made is waited for, not reported as
    /// failed (`peer_addr` says "not connected" until it is made). With a
    /// listen backlog of 0 the kernel leaves all but the first connection
    /// unanswered until the listener accepts (the SYN is sent again after
    /// a second).
    #[test]
    fn connects_wait_until_the_connection_is_made() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen on a socket this test owns (it only shrinks the backlog).
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
        let addr: &'static str = Box::leak(l.local_addr().unwrap().to_string().into_boxed_str());
        block_on(async {
            let l = TcpListener::try_from(l).unwrap();
            let ex = smol::LocalExecutor::new();
            let dials: Vec<_> = (0..4).map(|_| ex.spawn(TcpStream::connect(addr))).collect();
            let mut accepted = Vec::new();
            ex.run(async {
                Timer::after(Duration::from_millis(200)).await;
                let dialed = async {
                    let mut out = Vec::new();
                    for d in dials {
                        out.push(d.await.expect("a connection still being made was reported failed"));
                    }
                    out
                };
                let accept = async {
                    loop {
                        accepted.push(l.accept().await.unwrap());
                    }
                };
                let streams = futures_lite::future::or(dialed, accept).await;
                for s in &streams {
                    s.peer_addr().expect("connected");
                }
            })
            .await;
        });
    }

    #[test]
    fn connecting_to_a_closed_port_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = block_on(TcpStream::connect(&addr)).err().expect("connected to a closed port");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }
}
