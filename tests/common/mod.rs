//! Shared harness for the integration tests: starts the broker under test
//! (midge or Mosquitto) on a free loopback port with a given configuration,
//! and offers small raw-TCP helpers for byte-level conversations.
//!
//! Which broker: env `MIDGE_TEST_BROKER` = `midge` (default) or `mosquitto`.
//! The midge binary is `MIDGE_BIN` if set, else Cargo's `CARGO_BIN_EXE_midge`.
//!
//! Every wait in here is bounded; a broker is killed by PID when its
//! `Broker` value is dropped, so a panicking test never leaves one behind.
#![allow(dead_code)]

pub mod cluster;
pub mod cluster_tls;
pub mod dynsec;
pub mod mosquitto_sub;
pub mod upstream;
pub mod v4;
pub mod v5;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in the suite.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Midge,
    Mosquitto,
}

/// The broker selected by `MIDGE_TEST_BROKER`.
pub fn kind() -> Kind {
    match std::env::var("MIDGE_TEST_BROKER").as_deref() {
        Ok("mosquitto") => Kind::Mosquitto,
        Ok("midge") | Ok("") | Err(_) => Kind::Midge,
        Ok(other) => panic!("MIDGE_TEST_BROKER must be `midge` or `mosquitto`, not `{other}`"),
    }
}

pub fn is_mosquitto() -> bool {
    kind() == Kind::Mosquitto
}

pub fn midge_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MIDGE_BIN") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    match option_env!("CARGO_BIN_EXE_midge") {
        Some(p) => PathBuf::from(p),
        None => panic!("no midge binary: set MIDGE_BIN (or MIDGE_TEST_BROKER=mosquitto)"),
    }
}

/// A temporary directory every user can read: Mosquitto started as root drops
/// to the `mosquitto` user before it reads password and ACL files.
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("midge-itest-").tempdir().expect("tempdir");
    set_mode(d.path(), 0o755);
    d
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// Writes `contents` to `dir/name` (world-readable) and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    set_mode(&p, 0o644);
    p
}

/// Creates a Mosquitto password file with `mosquitto_passwd -c -b` for the
/// first user and `-b` for the others.
pub fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let p = dir.join("passwd");
    for (i, (u, pw)) in users.iter().enumerate() {
        let mut c = Command::new("mosquitto_passwd");
        if i == 0 {
            c.arg("-c");
        }
        let st = c.arg("-b").arg(&p).arg(u).arg(pw).stdout(Stdio::null()).status().expect("run mosquitto_passwd");
        assert!(st.success(), "mosquitto_passwd failed: {st}");
    }
    set_mode(&p, 0o644);
    p
}

/// A free TCP port on 127.0.0.1 (the OS picks one; the listener is closed
/// again, so a rare race with another process is retried by
/// `Broker::start`). Never one this test process was given before: the OS
/// hands a just-closed port out again now and then, and a cluster's three
/// nodes must not get the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `true` if process `pid` owns a socket listening on 127.0.0.1:`port`
/// (Linux /proc; on other systems the check is skipped).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else { return true };
    let suffix = format!(":{port:04X}");
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&suffix) && f[3] == "0A").then(|| f[9].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|t| inodes.iter().any(|i| t.to_string_lossy() == format!("socket:[{i}]")))
            .unwrap_or(false)
    })
}

/// One CONNECT/CONNACK exchange; returns the CONNACK return code.
fn probe_connack(port: u16) -> Option<u8> {
    let mut r = Raw::connect(port);
    r.send(&connect_v311("itest-ready-probe", true, 10));
    let code = match r.read(Duration::from_secs(2)) {
        ReadOutcome::Packet(p) if p.header == 0x20 && p.body.len() == 2 => Some(p.body[1]),
        _ => None,
    };
    if code == Some(0) {
        r.send_lossy(&[0xE0, 0x00]);
    }
    code
}

fn wait_ready(child: &mut Child, port: u16, mqtt_ready: bool) -> Result<(), String> {
    let deadline = Instant::now() + MAX_WAIT;
    let mut port_ok = false;
    loop {
        if port_ok {
            match probe_connack(port) {
                Some(3) | None => {}
                Some(_) => return Ok(()),
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("broker exited early: {st}"));
            }
            if Instant::now() > deadline {
                return Err("port accepts but CONNECT never succeeded (CONNACK 3 or nothing)".into());
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("broker exited early: {st}"));
        }
        // The listening socket must be our child's: with tests in parallel,
        // another test's broker could hold a port we picked a moment ago.
        if listens(child.id(), port) {
            if let Ok(s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) {
                drop(s);
                if !mqtt_ready {
                    return Ok(());
                }
                port_ok = true;
                continue;
            }
        }
        if Instant::now() > deadline {
            return Err("port never accepted connections".into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A running broker. Killed (SIGKILL, by PID) and reaped on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub kind: Kind,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl Broker {
    /// Starts the broker with `config` (Mosquitto syntax). The harness puts a
    /// `listener PORT 127.0.0.1` line first and `allow_anonymous true` unless
    /// the text sets allow_anonymous itself. `{dir}` in the text is replaced by
    /// the broker's temporary directory.
    pub fn start(config: &str) -> Broker {
        Broker::start_in(tempdir(), config)
    }

    /// Like `start`, in a directory the caller prepared (password files...).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Broker {
        Broker::start_opts(dir, config, true)
    }

    /// `mqtt_ready`: besides the port accepting, wait until an MQTT CONNECT
    /// is answered with anything but CONNACK 3 (server unavailable). midge
    /// (with its cluster layer) listens before it serves; `false` returns as
    /// soon as the port accepts, as a client would see it.
    pub fn start_opts(dir: tempfile::TempDir, config: &str, mqtt_ready: bool) -> Broker {
        let kind = kind();
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut text = format!("listener {port} 127.0.0.1\n");
            if !config.contains("allow_anonymous") {
                text.push_str("allow_anonymous true\n");
            }
            text.push_str(&config.replace("{dir}", &dir.path().display().to_string()));
            text.push('\n');
            let config_path = write_file(dir.path(), "broker.conf", &text);
            let log_path = dir.path().join("broker.log");
            let log = std::fs::File::create(&log_path).expect("log file");
            set_mode(&log_path, 0o666);
            let mut cmd = match kind {
                Kind::Midge => Command::new(midge_bin()),
                Kind::Mosquitto => Command::new("mosquitto"),
            };
            // Run inside the temporary directory: midge keeps its data store
            // (./midge.redb by default) in the working directory, and
            // parallel brokers must not share one.
            cmd.arg("-c")
                .arg(&config_path)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {kind:?}: {e}"));
            match wait_ready(&mut child, port, mqtt_ready) {
                Ok(()) => return Broker { child, port, kind, dir, config_path, log_path },
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_err = format!("{e}\n--- config ---\n{text}--- log ---\n{log}");
                }
            }
        }
        panic!("broker did not start: {last_err}");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `true` while the broker process is alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {:?} broker log (port {}) ---\n{}", self.kind, self.port, self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// Raw TCP: hand-written bytes.

/// A raw TCP connection with read timeouts.
pub struct Raw {
    pub s: TcpStream,
}

/// One MQTT packet as read from the wire: first byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub header: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }
    /// Whole packet bytes (header, remaining length, body).
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = vec![self.header];
        v.extend(encode_len(self.body.len()));
        v.extend(&self.body);
        v
    }
}

/// What a read ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Packet(RawPacket),
    /// The broker closed (EOF or reset).
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)).expect("tcp connect");
        s.set_nodelay(true).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw { s }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to broker");
    }

    /// Writes, ignoring errors (the broker may already have closed).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    fn read_exact_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), ReadOutcome> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadOutcome::Timeout);
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            match self.s.read(&mut buf[got..]) {
                Ok(0) => return Err(ReadOutcome::Closed),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return Err(ReadOutcome::Timeout)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadOutcome::Closed),
            }
        }
        Ok(())
    }

    /// Reads one packet, or reports close/timeout.
    pub fn read(&mut self, timeout: Duration) -> ReadOutcome {
        let deadline = Instant::now() + timeout;
        let mut h = [0u8; 1];
        if let Err(o) = self.read_exact_until(&mut h, deadline) {
            return o;
        }
        let mut len = 0usize;
        let mut mult = 1usize;
        for _ in 0..4 {
            let mut b = [0u8; 1];
            if let Err(o) = self.read_exact_until(&mut b, deadline) {
                return o;
            }
            len += (b[0] & 0x7f) as usize * mult;
            mult *= 128;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if let Err(o) = self.read_exact_until(&mut body, deadline) {
            return o;
        }
        ReadOutcome::Packet(RawPacket { header: h[0], body })
    }

    /// Reads one packet; panics on close or timeout.
    pub fn expect_packet(&mut self, timeout: Duration) -> RawPacket {
        match self.read(timeout) {
            ReadOutcome::Packet(p) => p,
            other => panic!("expected a packet from the broker, got {other:?}"),
        }
    }

    /// Waits until the broker closes the connection; returns how long that
    /// took, or panics with whatever came instead (packets are collected in
    /// the message) after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut seen = Vec::new();
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                ReadOutcome::Closed => return start.elapsed(),
                ReadOutcome::Packet(p) => seen.push(p),
                ReadOutcome::Timeout => {
                    panic!("broker did not close the connection within {timeout:?}; packets seen: {seen:02x?}")
                }
            }
        }
    }

    /// Describes how the broker answers next, for table-style assertions:
    /// `"DISCONNECT 0x81"`, `"closed"` (no packet before the close),
    /// `"open"` (nothing within `d`), or `"packet 90 03 00 01 80"`.
    /// A DISCONNECT must be followed by the close, or `" (not closed)"` is added.
    pub fn outcome(&mut self, d: Duration) -> String {
        match self.read(d) {
            ReadOutcome::Closed => "closed".into(),
            ReadOutcome::Timeout => "open".into(),
            ReadOutcome::Packet(p) if p.header == 0xE0 => {
                let code = p.body.first().copied().unwrap_or(0);
                let closed = matches!(self.read(d), ReadOutcome::Closed);
                format!("DISCONNECT {code:#04x}{}", if closed { "" } else { " (not closed)" })
            }
            ReadOutcome::Packet(p) => {
                let hex: Vec<String> = p.bytes().iter().map(|b| format!("{b:02x}")).collect();
                format!("packet {}", hex.join(" "))
            }
        }
    }

    /// Asserts the connection stays open and silent for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.read(d) {
            ReadOutcome::Timeout => {}
            other => panic!("expected silence for {d:?}, got {other:?}"),
        }
    }

    pub fn shutdown(&self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }

    /// Sends a v3.1.1 CONNECT and checks for a successful CONNACK.
    pub fn connect_v311(port: u16, client_id: &str, clean: bool, keepalive: u16) -> Raw {
        let mut r = Raw::connect(port);
        r.send(&connect_v311(client_id, clean, keepalive));
        let p = r.expect_packet(MAX_WAIT);
        assert_eq!(p.header, 0x20, "CONNACK expected, got {p:02x?}");
        assert_eq!(p.body[1], 0, "CONNACK return code: {p:02x?}");
        r
    }

    /// Sends a v5 CONNECT (with `props` already encoded) and checks for a
    /// successful CONNACK; returns it.
    pub fn connect_v5(port: u16, client_id: &str, clean: bool, keepalive: u16, props: &[u8]) -> (Raw, RawPacket) {
        let mut r = Raw::connect(port);
        r.send(&connect_v5(client_id, clean, keepalive, props));
        let p = r.expect_packet(MAX_WAIT);
        assert_eq!(p.header, 0x20, "CONNACK expected, got {p:02x?}");
        assert_eq!(p.body[1], 0, "CONNACK reason code: {p:02x?}");
        (r, p)
    }
}

// ---------------------------------------------------------------------------
// Encoding helpers for hand-written packets.

pub fn encode_len(mut n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            return v;
        }
    }
}

pub fn mqtt_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

/// Header byte + remaining length + body.
pub fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![header];
    v.extend(encode_len(body.len()));
    v.extend(body);
    v
}

pub fn connect_v311(client_id: &str, clean: bool, keepalive: u16) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(4);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend(keepalive.to_be_bytes());
    body.extend(mqtt_str(client_id));
    packet(0x10, &body)
}

pub fn connect_v5(client_id: &str, clean: bool, keepalive: u16, props: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.push(5);
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend(keepalive.to_be_bytes());
    body.extend(encode_len(props.len()));
    body.extend(props);
    body.extend(mqtt_str(client_id));
    packet(0x10, &body)
}

/// v3.1.1 SUBSCRIBE with one filter.
pub fn subscribe_v311(pid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend(mqtt_str(filter));
    body.push(qos);
    packet(0x82, &body)
}

/// v3.1.1 PUBLISH.
pub fn publish_v311(topic: &str, qos: u8, retain: bool, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if qos > 0 {
        body.extend(pid.to_be_bytes());
    }
    body.extend(payload);
    packet(0x30 | (qos << 1) | retain as u8, &body)
}

/// v5 PUBLISH without properties.
pub fn publish_v5(topic: &str, qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if qos > 0 {
        body.extend(pid.to_be_bytes());
    }
    body.push(0);
    body.extend(payload);
    packet(0x30 | (qos << 1), &body)
}

/// Property list parsing (v5): returns (id, raw value bytes) pairs.
pub fn parse_props(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let id = b[i];
        i += 1;
        let n = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => {
                let mut n = 0;
                while b[i + n] & 0x80 != 0 {
                    n += 1;
                }
                n + 1
            }
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + u16::from_be_bytes([b[i], b[i + 1]]) as usize
            }
            0x26 => {
                let k = 2 + u16::from_be_bytes([b[i], b[i + 1]]) as usize;
                k + 2 + u16::from_be_bytes([b[i + k], b[i + k + 1]]) as usize
            }
            other => panic!("unknown property id {other:#x} in {b:02x?}"),
        };
        out.push((id, b[i..i + n].to_vec()));
        i += n;
    }
    out
}

/// Decodes a variable byte integer at the start of `b`: (value, bytes used).
pub fn decode_varint(b: &[u8]) -> (usize, usize) {
    let mut v = 0usize;
    let mut mult = 1usize;
    for (i, byte) in b.iter().enumerate().take(4) {
        v += (*byte & 0x7f) as usize * mult;
        mult *= 128;
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("bad varint {b:02x?}")
}

/// Properties of a v5 CONNACK body.
pub fn connack_props(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (n, used) = decode_varint(&body[2..]);
    parse_props(&body[2 + used..2 + used + n])
}

/// Runs a command with a hard timeout; returns (exit code or None if killed
/// on timeout, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    let out_dir = tempdir();
    let out = std::fs::File::create(out_dir.path().join("out")).unwrap();
    let err = std::fs::File::create(out_dir.path().join("err")).unwrap();
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let o = std::fs::read_to_string(out_dir.path().join("out")).unwrap_or_default();
    let e = std::fs::read_to_string(out_dir.path().join("err")).unwrap_or_default();
    (code, o, e)
}
