//! The few socket calls std does not offer (bind-before-connect to pick a
//! source address, SO_LINGER, RLIMIT_NOFILE) and the process's CPU time
//! (getrusage), via libc which std links anyway. Linux only.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::raw::{c_int, c_long, c_void};
use std::time::{Duration, Instant};

const AF_INET: c_int = 2;
const SOCK_STREAM: c_int = 1;
const SOCK_CLOEXEC: c_int = 0o2000000;
const IPPROTO_IP: c_int = 0;
const IP_BIND_ADDRESS_NO_PORT: c_int = 24;
const SOL_SOCKET: c_int = 1;
const SO_LINGER: c_int = 13;
const RLIMIT_NOFILE: c_int = 7;
const RUSAGE_SELF: c_int = 0;
const SO_ERROR: c_int = 4;
const F_GETFL: c_int = 3;
const F_SETFL: c_int = 4;
const O_NONBLOCK: c_int = 0o4000;
const EINPROGRESS: i32 = 115;
const POLLOUT: i16 = 4;

/// Bound on one TCP connect (a broker whose accept queue is full makes a
/// blocking connect retry SYNs for minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct SockaddrIn {
    sin_family: u16,
    sin_port: u16,
    sin_addr: [u8; 4],
    sin_zero: [u8; 8],
}

#[repr(C)]
struct Linger {
    l_onoff: c_int,
    l_linger: c_int,
}

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

#[repr(C)]
#[derive(Default)]
struct Timeval {
    sec: c_long,
    usec: c_long,
}

#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    rest: [c_long; 14],
}

extern "C" {
    fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fn bind(fd: c_int, addr: *const SockaddrIn, len: u32) -> c_int;
    fn connect(fd: c_int, addr: *const SockaddrIn, len: u32) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: u32) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn poll(fds: *mut PollFd, n: u64, timeout_ms: c_int) -> c_int;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut u32) -> c_int;
    fn getrlimit(res: c_int, r: *mut Rlimit) -> c_int;
    fn setrlimit(res: c_int, r: *const Rlimit) -> c_int;
}

fn sockaddr(a: SocketAddrV4) -> SockaddrIn {
    SockaddrIn { sin_family: AF_INET as u16, sin_port: a.port().to_be(), sin_addr: a.ip().octets(), sin_zero: [0; 8] }
}

/// Only loopback targets are allowed (benchmark rule).
pub fn check_loopback(host: &str, port: u16) -> Result<SocketAddrV4, String> {
    let ip: IpAddr = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| format!("--host {host}: give an IPv4 loopback address"))?
    };
    match SocketAddr::new(ip, port) {
        SocketAddr::V4(a) if a.ip().is_loopback() => Ok(a),
        _ => Err(format!("--host {host}: only 127.0.0.0/8 targets are allowed")),
    }
}

/// Connect to `dst`, optionally from source address `src` (port chosen by
/// the kernel at connect time, so each source IP has its own ephemeral
/// port range per destination).
pub fn connect_from(src: Option<Ipv4Addr>, dst: SocketAddrV4) -> io::Result<TcpStream> {
    let Some(src) = src else {
        return TcpStream::connect_timeout(&SocketAddr::V4(dst), CONNECT_TIMEOUT);
    };
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: c_int = 1;
        // Best effort: without it bind() reserves the port for all dsts.
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one as *const c_int as *const c_void, 4);
        let s = sockaddr(SocketAddrV4::new(src, 0));
        if bind(fd, &s, std::mem::size_of::<SockaddrIn>() as u32) != 0 {
            let e = io::Error::last_os_error();
            close(fd);
            return Err(e);
        }
        // Non-blocking connect + poll, so that it is bounded in time.
        let fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        let d = sockaddr(dst);
        if connect(fd, &d, std::mem::size_of::<SockaddrIn>() as u32) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(EINPROGRESS) {
                close(fd);
                return Err(e);
            }
            let end = Instant::now() + CONNECT_TIMEOUT;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    close(fd);
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out (5 s)"));
                }
                let mut p = PollFd { fd, events: POLLOUT, revents: 0 };
                let r = poll(&mut p, 1, left.as_millis().max(1) as c_int);
                if r > 0 {
                    break;
                }
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        close(fd);
                        return Err(e);
                    }
                }
            }
            let mut err: c_int = 0;
            let mut len = 4u32;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &mut err as *mut c_int as *mut c_void, &mut len);
            if err != 0 {
                close(fd);
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        fcntl(fd, F_SETFL, fl);
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// SO_LINGER {on, 0}: close() sends RST and leaves no TIME_WAIT behind,
/// so repeated 10k-connection runs do not exhaust ephemeral ports.
pub fn set_linger_zero(s: &TcpStream) {
    let l = Linger { l_onoff: 1, l_linger: 0 };
    unsafe {
        setsockopt(
            s.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &l as *const Linger as *const c_void,
            std::mem::size_of::<Linger>() as u32,
        );
    }
}

/// Raise the soft RLIMIT_NOFILE towards `want` (capped by the hard limit).
/// Returns the resulting soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    unsafe {
        let mut r = Rlimit { cur: 0, max: 0 };
        if getrlimit(RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.cur < want {
            let n = Rlimit { cur: want.min(r.max), max: r.max };
            if setrlimit(RLIMIT_NOFILE, &n) == 0 {
                return n.cur;
            }
        }
        r.cur
    }
}

/// CPU time this process has used so far, all threads: (user, system).
pub fn cpu_time() -> (Duration, Duration) {
    let mut r = Rusage::default();
    if unsafe { getrusage(RUSAGE_SELF, &mut r) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let d = |t: &Timeval| Duration::from_micros(t.sec as u64 * 1_000_000 + t.usec as u64);
    (d(&r.utime), d(&r.stime))
}
