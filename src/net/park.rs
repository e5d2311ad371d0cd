//! Parked connections: a plain TCP connection that stays idle gives up its
//! task and its event-loop source (a few hundred bytes together) and leaves only
//! its socket, registered in one epoll set of its own that the parker task
//! watches. Input on the socket, output for it, or closing it brings the
//! connection back as a new task (`TcpConn`), with its broker state
//! untouched. Never closes a parked socket: only a connection's task does.

use std::cell::{Cell, RefCell};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use super::rt::Async;
use log::{debug, warn};
use smol::LocalExecutor;

use super::conn::TcpConn;
use super::{ConnIo, Doorbell, Server, ACTIVE, PARK_REQUESTED};
use crate::broker::ConnId;
use crate::store::RaftLog;

/// Poller events taken in one pass of the parker; more wait for the next.
const PARKER_EVENTS_MAX: NonZeroUsize = NonZeroUsize::new(64).unwrap();

pub(super) struct Parking {
    /// The parked sockets, each registered for readability (oneshot) with
    /// its file descriptor as key.
    poller: Async<polling::Poller>,
    /// The connection of each parked socket, by file descriptor (0: none).
    by_fd: RefCell<Vec<ConnId>>,
    /// Parked connections with output, or closing, to carry out.
    wake: RefCell<Vec<ConnId>>,
    /// Rung when `wake` gets an entry.
    bell: Doorbell,
    /// The parker task runs: connections may park.
    running: Cell<bool>,
}

impl Parking {
    pub(super) fn new() -> Option<Parking> {
        let poller = match polling::Poller::new().and_then(Async::new) {
            Ok(p) => p,
            Err(e) => {
                warn!("Idle connections cannot be parked: {e}.");
                return None;
            }
        };
        Some(Parking {
            poller,
            by_fd: RefCell::new(Vec::new()),
            wake: RefCell::new(Vec::new()),
            bell: Doorbell::default(),
            running: Cell::new(false),
        })
    }
}

impl<L: RaftLog + 'static> Server<L> {
    /// Wake a connection for new output or closing: its task, or the parker
    /// if it is parked.
    pub(super) fn ring(&self, id: ConnId, io: &ConnIo) {
        io.ring();
        if let Some(p) = &self.parking {
            if io.is_parked() {
                p.wake.borrow_mut().push(id);
                p.bell.ring();
            }
        }
    }

    /// Once per sweep period: ask the plain TCP connections that did no
    /// I/O since the last sweep to park (each decides at its next wait).
    pub(super) fn park_sweep(&self) {
        if !self.parking.as_ref().is_some_and(|p| p.running.get()) {
            return;
        }
        for io in self.conns.borrow().values() {
            if !io.parkable || io.is_parked() || io.flags.replace(ACTIVE, false) {
                continue;
            }
            io.flags.set(PARK_REQUESTED, true);
            io.ring();
        }
    }

    /// Park connection `id`, whose task ends: its socket waits in the
    /// parker's poller. Gives the socket back if it cannot be parked.
    pub(super) fn park(&self, id: ConnId, io: &ConnIo, sock: std::net::TcpStream) -> Result<(), std::net::TcpStream> {
        // Only while the parker task runs: nothing else would bring the
        // connection back.
        let Some(p) = self.parking.as_ref().filter(|p| p.running.get()) else { return Err(sock) };
        let Ok(fd) = usize::try_from(sock.as_raw_fd()) else { return Err(sock) };
        // SAFETY: `add` requires the socket to leave the poller before it is
        // closed. A parked socket is only taken out by `unpark`, which
        // deletes it from the poller first. (If the process ends with
        // sockets parked, the kernel drops them from the epoll set itself.)
        if unsafe { p.poller.get_ref().add(&sock, polling::Event::readable(fd)) }.is_err() {
            return Err(sock);
        }
        let mut by_fd = p.by_fd.borrow_mut();
        if by_fd.len() <= fd {
            by_fd.resize(fd + 1, 0);
        }
        by_fd[fd] = id;
        // The waker of the ending task would keep its memory alive.
        io.waker.take();
        io.parked.set(Some(sock));
        debug!("Connection {id} parked.");
        Ok(())
    }

    /// Bring a parked connection back as a task; `input`: its socket was
    /// reported readable.
    fn unpark(self: &Rc<Self>, ex: &LocalExecutor<'static>, id: ConnId, input: bool) {
        let Some(p) = &self.parking else { return };
        let Some(io) = self.conns.borrow().get(&id).cloned() else { return };
        // Already back (woken twice in one pass).
        let Some(sock) = io.parked.take() else { return };
        let _ = p.poller.get_ref().delete(&sock);
        if let Ok(fd) = usize::try_from(sock.as_raw_fd()) {
            if let Some(slot) = p.by_fd.borrow_mut().get_mut(fd) {
                *slot = 0;
            }
        }
        io.flags.set(ACTIVE, true);
        debug!("Connection {id} unparked ({}).", if input { "input" } else { "output" });
        match Async::new(sock) {
            Ok(sock) => {
                let mut conn = TcpConn::new(self.clone(), id, io, sock, input);
                if input {
                    // Read now, in the order the poller reported the
                    // sockets, rather than when the new task first runs:
                    // by then a busy connection's task may have read
                    // packets that arrived after this one's (a PUBLISH
                    // routed before an earlier SUBSCRIBE). The task reads
                    // again when it runs; an end of input shows there.
                    let _ = conn.read_input();
                }
                ex.spawn(conn).detach()
            }
            Err(e) => {
                warn!("Closing parked connection {id}: {e}.");
                self.close_conn(id);
            }
        }
    }

    /// The parker task: brings parked connections back on input, output or
    /// closing.
    pub async fn parker(self: Rc<Self>, ex: Rc<LocalExecutor<'static>>) {
        let Some(p) = &self.parking else { return };
        p.running.set(true);
        let mut events = polling::Events::with_capacity(PARKER_EVENTS_MAX);
        loop {
            std::future::poll_fn(|cx| {
                let rung = p.bell.poll(cx).is_ready();
                let ready = p.poller.poll_readable(cx).is_ready();
                if rung || ready {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            })
            .await;
            events.clear();
            // Edge-triggered (`rt`): the set is readable again only with a
            // new event, so a full batch means more may wait: look again.
            p.poller.clear_readable();
            let _ = p.poller.get_ref().wait(&mut events, Some(Duration::ZERO));
            if events.len() == PARKER_EVENTS_MAX.get() {
                p.bell.ring();
            }
            let ready: Vec<ConnId> = {
                let by_fd = p.by_fd.borrow();
                events.iter().filter_map(|ev| by_fd.get(ev.key).copied()).filter(|id| *id != 0).collect()
            };
            for id in ready {
                self.unpark(&ex, id, true);
            }
            let woken = std::mem::take(&mut *p.wake.borrow_mut());
            for id in woken {
                self.unpark(&ex, id, false);
            }
        }
    }
}
