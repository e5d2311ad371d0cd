//! A plain TCP client connection: one small hand-written future for both
//! directions, its read buffer and its pending output. Owns nothing the
//! broker decides; never blocks.

use std::future::Future;
use std::os::fd::AsRawFd as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::rt::Async;

use super::{
    ConnIo, Intake, Server, ACTIVE, ANSWERED, CLOSING, PARK_REQUESTED, READ_BUFFER_BYTES_BUSY, READ_BUFFER_BYTES_MIN,
};
use crate::broker::ConnId;
use crate::mqtt::codec::TopicCache;
use crate::store::RaftLog;

/// A connection's read buffer. An idle connection holds none; reading
/// starts with `READ_BUFFER_BYTES_MIN`, which doubles while reads fill it
/// (up to `READ_BUFFER_BYTES_BUSY`) or while one packet needs more (up to
/// the maximum packet size), and shrinks back when traffic calms down, so
/// busy connections read in large batches.
#[derive(Default)]
pub(super) struct ReadBuf {
    pub(super) buf: Vec<u8>,
    /// Bytes read and not yet decoded, at the start of `buf`.
    pub(super) filled: usize,
    /// The topic of the last PUBLISH read (kept while the connection has
    /// a task; see `TopicCache`).
    pub(super) topics: TopicCache,
}

impl ReadBuf {
    /// Where the next read goes. None when a packet cannot fit: decode has
    /// already checked its length against the maximum, so a full buffer at
    /// the maximum size cannot happen.
    pub(super) fn space(&mut self, packet_bytes_max: u32) -> Option<&mut [u8]> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; READ_BUFFER_BYTES_MIN];
        }
        if self.filled == self.buf.len() {
            // A packet larger than the buffer is incomplete.
            let cap = (self.buf.len() * 2).min(packet_bytes_max as usize + 5);
            if cap <= self.buf.len() {
                return None;
            }
            self.buf.resize(cap, 0);
        }
        Some(&mut self.buf[self.filled..])
    }

    /// The first `consumed` bytes are decoded; the last read brought `n`
    /// bytes into `room` bytes of space.
    pub(super) fn consumed(&mut self, consumed: usize, n: usize, room: usize) {
        if consumed < self.filled {
            self.buf.copy_within(consumed..self.filled, 0);
        }
        self.filled -= consumed;
        if n == room && self.buf.len() < READ_BUFFER_BYTES_BUSY {
            self.buf.resize(self.buf.len() * 2, 0);
        } else if self.filled == 0 && n < READ_BUFFER_BYTES_MIN && self.buf.len() > READ_BUFFER_BYTES_MIN {
            self.buf = vec![0u8; READ_BUFFER_BYTES_MIN];
        }
    }

    /// Nothing half-read and no burst going on: drop the buffer.
    fn release_if_idle(&mut self) {
        if self.filled == 0 && self.buf.len() <= READ_BUFFER_BYTES_MIN {
            self.buf = Vec::new();
        }
    }
}

/// Output taken from `ConnIo::out` and not yet all written.
#[derive(Default)]
struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    done: usize,
}

impl OutBuf {
    fn is_empty(&self) -> bool {
        self.done == self.buf.len()
    }

    fn unwritten(&self) -> usize {
        self.buf.len() - self.done
    }

    /// Write this and then the connection's further output until it is
    /// all out or the socket is full, without waiting. Returns the bytes
    /// written; an error means the socket is broken. The two buffers take
    /// turns and keep their capacity up to `keep_bytes_max` (a parked
    /// connection holds neither).
    fn write_from(
        &mut self,
        io: &ConnIo,
        sock: &Async<std::net::TcpStream>,
        keep_bytes_max: usize,
    ) -> std::io::Result<usize> {
        let mut sent = 0usize;
        // Bounded: nothing refills `io.out` in here, so at most one swap
        // follows the bytes already pending.
        loop {
            if self.is_empty() {
                self.buf.clear();
                self.done = 0;
                if self.buf.capacity() > keep_bytes_max {
                    self.buf = Vec::new();
                }
                if io.out_len() == 0 {
                    return Ok(sent);
                }
                io.with_out(|o| std::mem::swap(&mut self.buf, o));
            }
            match sock.try_write(&self.buf[self.done..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.done += n;
                    sent += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(sent),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A plain TCP connection: both directions in one small future, so that
/// a waiting connection holds little (no read buffer, one waker; output
/// buffers only as large as its recent bursts). Output is written without
/// waiting, as the socket almost always takes it at once; only a full
/// socket makes the connection wait for writability, and meanwhile input is
/// still read. Hand-written rather than an `async fn`, whose state would
/// keep its arguments and every live local (several hundred bytes more per
/// connection). A connection that stays idle is parked (`park.rs`): the
/// future ends and hands its socket over, without closing it, and all its
/// buffers go.
pub(super) struct TcpConn<L: RaftLog> {
    server: Rc<Server<L>>,
    id: ConnId,
    io: Rc<ConnIo>,
    /// None once the connection has ended or is parked.
    sock: Option<Async<std::net::TcpStream>>,
    rb: ReadBuf,
    out: OutBuf,
    /// False after a decode error: the broker closes the connection once
    /// its refusal is written; nothing more is read.
    reading: bool,
    /// Input may be waiting: the socket was reported readable, or the last
    /// read found data.
    input: bool,
    /// Whole packets wait in `rb`, held while the output was over the
    /// bound (`Intake::Held`).
    held: bool,
}

/// Turns of one poll of a connection before it lets others run.
const CONN_TURNS_MAX: usize = 64;

/// What one read of a connection's socket found.
pub(super) enum Input {
    /// Bytes, handed to the broker.
    Taken,
    /// Nothing (would block).
    None,
    /// End of input or a socket error.
    End,
}

/// Why a connection's future stops.
enum Stop {
    /// End of input, a socket error, or a closing connection's output all
    /// written.
    End,
    /// Idle and asked to park.
    Park,
}

impl<L: RaftLog + 'static> TcpConn<L> {
    pub(super) fn new(
        server: Rc<Server<L>>,
        id: ConnId,
        io: Rc<ConnIo>,
        sock: Async<std::net::TcpStream>,
        input: bool,
    ) -> TcpConn<L> {
        TcpConn {
            server,
            id,
            io,
            sock: Some(sock),
            rb: ReadBuf::default(),
            out: OutBuf::default(),
            reading: true,
            input,
            held: false,
        }
    }

    fn poll_turns(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        // Input that arrived while this task waited (the reactor marked the
        // socket readable and woke it) is read in the first turn, not after
        // a turn that only finds it.
        if !self.input && self.reading {
            if let Some(s) = &self.sock {
                self.input = s.is_readable();
            }
        }
        for _ in 0..CONN_TURNS_MAX {
            // Writers first: what earlier input produced goes out before
            // more input is taken.
            if self.write_out().is_err() {
                return Poll::Ready(Stop::End);
            }
            let unsent = !self.out.is_empty();
            // All written: the broker may write the next output straight
            // to the socket (see `write_direct`).
            let fd = match &self.sock {
                Some(s) if !unsent && self.io.out_len() == 0 => s.as_raw_fd(),
                _ => -1,
            };
            self.io.direct.set(fd);
            if !unsent && self.io.flags.get(CLOSING) && self.io.out_len() == 0 {
                return Poll::Ready(Stop::End);
            }
            // A client that does not read its answers is not read either
            // until they drain below the bound: what it can make midge hold
            // is the bound plus the answers to one read (TCP pushes back
            // on it meanwhile).
            let held = self.out.unwritten() + self.io.out_len();
            let stalled = held > self.server.out_buffer_bytes_max;
            if self.held && self.reading && !stalled {
                // What was held back goes to the broker before more is read.
                self.held = false;
                self.intake(0, usize::MAX);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.input && self.reading && !stalled && !self.held {
                match self.read_input() {
                    Input::End => return Poll::Ready(Stop::End),
                    Input::Taken if !self.input && !self.held && self.out.is_empty() && self.io.out_len() == 0 => {
                        // The socket is drained and every answer was
                        // written straight to the socket (`write_direct`):
                        // nothing is left for a second poll to do before
                        // it would wait, so wait now (one task run per
                        // packet instead of two). The ordering below holds:
                        // nothing of this connection's is left to go out
                        // ahead of other connections' deliveries.
                    }
                    Input::Taken => {
                        // The writers of the connections this batch fed
                        // (woken already, so ahead in the queue) run
                        // first; this connection's own answers (PUBACK,
                        // ...) go out when it is polled again, before it
                        // reads more. Deliveries before acknowledgements,
                        // as Mosquitto orders them: a subscriber waits for
                        // no PUBACK's send. And a fast publisher cannot
                        // outrun its subscribers' sockets (their buffers
                        // would overflow and drop QoS 0).
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Input::None => {}
                }
            }
            // Idle (nothing to write, nothing half-read) and the parking
            // sweep found it idle before: park instead of waiting.
            if self.io.flags.replace(PARK_REQUESTED, false) && !unsent && self.reading && self.rb.filled == 0 {
                return Poll::Ready(Stop::Park);
            }
            // Wait for new output (or closing), room in a full socket, or
            // input; each registers this task's waker.
            let Some(sock) = &self.sock else { return Poll::Ready(Stop::End) };
            let rung = self.io.poll_rung(cx).is_ready();
            let writable = unsent && sock.poll_writable(cx).is_ready();
            if stalled {
                // Input waits (`input` keeps saying whether some may be
                // there); the writable socket wakes this task.
                if !(rung || writable) {
                    return Poll::Pending;
                }
                continue;
            }
            self.input = self.reading && sock.poll_readable(cx).is_ready();
            if !(rung || writable || self.input) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Read once what the socket holds and hand it to the broker.
    pub(super) fn read_input(&mut self) -> Input {
        let Some(space) = self.rb.space(self.server.packet_bytes_max) else { return Input::End };
        let room = space.len();
        let Some(sock) = &self.sock else { return Input::End };
        loop {
            return match sock.try_read(space) {
                Ok(0) => Input::End,
                Ok(n) => {
                    // A read that did not fill the space emptied the socket.
                    self.input = sock.is_readable();
                    self.io.flags.set(ACTIVE, true);
                    self.intake(n, room);
                    Input::Taken
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.input = false;
                    self.rb.release_if_idle();
                    Input::None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => Input::End,
            };
        }
    }

    /// Hand the input in `rb` to the broker (`n` new bytes read into
    /// `room`).
    fn intake(&mut self, n: usize, room: usize) {
        match self.server.take_input(self.id, &mut self.rb, n, room) {
            Intake::Done => {}
            Intake::Held => self.held = true,
            Intake::Refused => self.reading = false,
        }
    }

    /// Write what the socket takes of the connection's output, without
    /// waiting; an error means the socket is broken.
    fn write_out(&mut self) -> std::io::Result<()> {
        let Some(sock) = &self.sock else { return Err(std::io::ErrorKind::NotConnected.into()) };
        // Nothing to write (the broker wrote it straight to the socket)
        // and nothing to shrink: no call.
        if self.out.is_empty() && self.io.out_len() == 0 && self.out.buf.capacity() <= self.server.out_buffer_bytes_max
        {
            return Ok(());
        }
        let sent = self.out.write_from(&self.io, sock, self.server.out_buffer_bytes_max)?;
        if sent > 0 {
            self.io.flags.set(ACTIVE, true);
            if !self.io.flags.replace(ANSWERED, true) {
                // Most clients wait after their CONNACK, often for long:
                // park at once rather than after a sweep.
                self.io.flags.set(PARK_REQUESTED, true);
            }
            self.server.sent(self.id, sent);
        }
        Ok(())
    }
}

impl<L: RaftLog> Drop for TcpConn<L> {
    fn drop(&mut self) {
        self.io.direct.set(-1);
    }
}

impl<L: RaftLog + 'static> Future for TcpConn<L> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let c = self.get_mut();
        let turns = c.poll_turns(cx);
        if turns.is_ready() {
            // The socket is about to be parked or closed.
            c.io.direct.set(-1);
        }
        match turns {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Stop::Park) => {
                if let Some(Ok(s)) = c.sock.take().map(Async::into_inner) {
                    match c.server.park(c.id, &c.io, s) {
                        Ok(()) => return Poll::Ready(()),
                        // Could not park: go on as before, in a later poll.
                        Err(s) => {
                            if let Ok(sock) = Async::new(s) {
                                c.sock = Some(sock);
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                    }
                }
            }
            Poll::Ready(Stop::End) => {}
        }
        c.server.close_conn(c.id);
        if let Some(s) = c.sock.take() {
            let _ = s.get_ref().shutdown(std::net::Shutdown::Both);
        }
        Poll::Ready(())
    }
}
