//! loadgen: a small MQTT 3.1.1 load generator (blocking std sockets and
//! threads) for comparing midge with Mosquitto. Talks to loopback only.
//!
//!   loadgen throughput --port P [--qos 0|1] [--publishers N] [--subscribers M]
//!                      [--messages K] [--payload 16] [--window 64] [--timeout-secs 60]
//!                      [--duration-secs D] [--max-lead L] [--nodelay 1] [--username U --password W]
//!   loadgen latency    --port P [--qos 1] [--count K] [--warmup 200] [--payload 16] [--interval-us 0] [--dump FILE]
//!                      [--username U --password W] [--sub-username U --sub-password W]
//!   loadgen idle       --port P --connections N [--hold-secs S] [--source-ips X] [--username U --password W]
//!   loadgen retain     --port P --count N [--payload 100] [--window 20] [--prefix T]
//!                      [--verify-only 0|1]
//!   loadgen connect    --port P --count N [--concurrency 1] [--username U --password W] [--users K]
//!   loadgen fsync      --dir D [--writers 1] [--count 2000] [--bytes 1600]
//!
//! `fsync` measures the disk, not a broker: the floor under a broker that
//! makes each write durable before it answers. Each writer thread
//! overwrites its own zero-filled 4 MiB file in `--bytes` steps, one
//! `fdatasync` each, all writers at once (as a raft leader and its
//! followers do on one machine); it reports the latency of write +
//! fdatasync over all writers.
//!
//! `throughput`, `latency`, `idle` and `connect` log in with
//! --username/--password if given (every connection; `latency
//! --sub-username/--sub-password` for its subscriber). `throughput` reports
//! its own CPU time (`cpu_user_s`, `cpu_sys_s`: getrusage, the whole process).
//!
//! Throughput clients set TCP_NODELAY by default (--nodelay 1): loadgen
//! batches its own writes (64 KiB for QoS 0, up to a window for QoS 1), so
//! Nagle only adds 40 ms delayed-ACK stalls on the client side (seen: one
//! QoS 1 1->1 run dropping from ~50k to ~4k msg/s).
//!
//! --duration-secs D stops publishers after D seconds (--messages is then an
//! upper bound); --max-lead L keeps each publisher at most L messages ahead of
//! the slowest subscriber (end-to-end flow control, so the broker is never
//! overrun and the rate measured is sustainable).
//!
//! Every mode prints one machine-readable `RESULT key=value ...` line on
//! stdout (diagnostics go to stderr, prefixed `loadgen:`).

mod mqtt;
mod net;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mqtt::FrameReader;

const USAGE: &str = "\
usage: loadgen throughput --port P [--host 127.0.0.1] [--qos 0|1] [--publishers N]
                          [--subscribers M] [--messages K per publisher] [--payload BYTES]
                          [--window 64] [--resume-at 63] [--timeout-secs 60] [--grace-ms 2000]
                          [--nodelay 0|1] [--max-lead L] [--duration-secs D] [--username U --password W]
       loadgen latency    --port P [--qos 0|1] [--count K] [--warmup 200] [--payload 16] [--interval-us 0] [--dump FILE]
                          [--timeout-secs 60] [--username U --password W] [--sub-username U --sub-password W]
       loadgen idle       --port P --connections N [--hold-secs 3] [--source-ips auto|X]
                          [--batch 64] [--timeout-secs 120] [--username U --password W]
       loadgen retain     --port P --count N [--payload 100] [--window 20]
                          [--prefix loadgen/retain] [--verify-only 0|1] [--grace-ms 2000]
                          [--timeout-secs 120]
       loadgen connect    --port P --count N [--concurrency 1] [--username U --password W]
                          [--users K (username U0..U<K-1>)] [--timeout-secs 60]
       loadgen fsync      --dir D [--writers 1] [--count 2000] [--bytes 1600]
Output: one `RESULT key=value ...` line on stdout. Targets must be 127.0.0.0/8.";

const READ_POLL: Duration = Duration::from_millis(100);
const BATCH_BYTES: usize = 64 * 1024;

struct Args {
    mode: String,
    kv: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut it = std::env::args().skip(1);
        let mode = it.next().ok_or("missing mode")?;
        if mode == "-h" || mode == "--help" {
            return Err(String::new());
        }
        let mut kv = HashMap::new();
        while let Some(k) = it.next() {
            let key = k.strip_prefix("--").ok_or_else(|| format!("unexpected argument {k}"))?;
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            kv.insert(key.to_string(), v);
        }
        Ok(Args { mode, kv })
    }

    fn take<T: std::str::FromStr>(&mut self, key: &str, default: Option<T>) -> Result<T, String> {
        match self.kv.remove(key) {
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad value {v:?}")),
            None => default.ok_or_else(|| format!("--{key} is required")),
        }
    }

    fn finish(&self) -> Result<(), String> {
        if let Some(k) = self.kv.keys().next() {
            return Err(format!("unknown option --{k} for mode {}", self.mode));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let mut args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match args.mode.clone().as_str() {
        "throughput" => throughput(&mut args),
        "latency" => latency(&mut args),
        "idle" => idle(&mut args),
        "retain" => retain(&mut args),
        "connect" => connect(&mut args),
        "fsync" => fsync(&mut args),
        m => Err(format!("unknown mode {m}\n{USAGE}")),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

/// (username, password) for CONNECT; none if the username is empty.
fn login<'a>(user: &'a str, pass: &'a str) -> Option<(&'a str, &'a str)> {
    (!user.is_empty()).then_some((user, pass))
}

fn target(args: &mut Args) -> Result<SocketAddrV4, String> {
    let host: String = args.take("host", Some("127.0.0.1".to_string()))?;
    let port: u16 = args.take("port", None)?;
    net::check_loopback(&host, port)
}

/// One MQTT client connection: a frame reader owning the socket; writes go
/// straight to the socket (`&TcpStream` is Write), batched by the callers
/// into their own Vec. One fd per connection.
struct Conn {
    rd: FrameReader<TcpStream>,
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    fn open(
        dst: SocketAddrV4,
        src: Option<Ipv4Addr>,
        id: &str,
        keepalive: u16,
        nodelay: bool,
        rbuf: usize,
        login: Option<(&str, &str)>,
        deadline: Instant,
    ) -> io::Result<Conn> {
        let s = net::connect_from(src, dst)?;
        let c = Conn::start_login(s, id, keepalive, nodelay, rbuf, login)?;
        c.finish_connect(deadline)
    }

    /// A connection from 127.0.0.1 with TCP_NODELAY, logged in as `login`
    /// (username, password) if given.
    fn open_login(dst: SocketAddrV4, id: &str, login: Option<(&str, &str)>, deadline: Instant) -> io::Result<Conn> {
        let s = net::connect_from(None, dst)?;
        let c = Conn::start_login(s, id, 60, true, 16 * 1024, login)?;
        c.finish_connect(deadline)
    }

    /// Connected socket -> CONNECT written (CONNACK not read yet), with
    /// `login` (username, password) if given.
    fn start_login(
        s: TcpStream,
        id: &str,
        keepalive: u16,
        nodelay: bool,
        rbuf: usize,
        login: Option<(&str, &str)>,
    ) -> io::Result<Conn> {
        s.set_nodelay(nodelay)?;
        s.set_read_timeout(Some(READ_POLL))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let c = Conn { rd: FrameReader::new(s, rbuf) };
        let mut p = Vec::with_capacity(64);
        mqtt::connect(&mut p, id, keepalive, login);
        c.w().write_all(&p)?;
        Ok(c)
    }

    fn w(&self) -> &TcpStream {
        self.rd.get_ref()
    }

    fn finish_connect(mut self, deadline: Instant) -> io::Result<Conn> {
        let b = self.rd.expect(mqtt::CONNACK, deadline, "CONNACK")?;
        if b.len() != 2 {
            return Err(mqtt::bad(format!("CONNACK with {} bytes", b.len())));
        }
        if b[1] != 0 {
            return Err(mqtt::bad(format!("CONNACK refused, return code {}", b[1])));
        }
        Ok(self)
    }

    fn subscribe(&mut self, topic: &str, qos: u8, deadline: Instant) -> io::Result<u8> {
        let mut p = Vec::new();
        mqtt::subscribe(&mut p, 1, topic, qos);
        self.w().write_all(&p)?;
        let b = self.rd.expect(mqtt::SUBACK, deadline, "SUBACK")?;
        if b.len() != 3 || mqtt::packet_id(&b)? != 1 {
            return Err(mqtt::bad("malformed SUBACK"));
        }
        if b[2] == 0x80 {
            return Err(mqtt::bad("SUBACK: subscription refused (0x80)"));
        }
        Ok(b[2])
    }

    fn disconnect(&mut self) {
        let mut p = Vec::new();
        mqtt::disconnect(&mut p);
        let _ = self.w().write_all(&p);
    }
}

// ---------------------------------------------------------------- throughput

#[derive(Default)]
struct SubStats {
    received: u64,
    unique: u64,
    dups: u64,
    bogus: u64,
    last_recv: Option<Instant>,
    first_recv: Option<Instant>,
    error: Option<String>,
    timed_out: bool,
    max_gap: Duration,
    gaps_5ms: u64,
    /// Most QoS 1 PUBLISHes received before this subscriber had sent any
    /// PUBACK for them: a lower bound of the broker's in-flight count, to
    /// compare with its max_inflight_messages.
    max_unacked: u64,
}

struct PubStats {
    sent: u64,
    done: Option<Instant>,
    acked: u64,
    error: Option<String>,
    timed_out: bool,
    conn: Option<Conn>,
}

/// End-to-end flow control (`--max-lead L`): publisher p may not publish
/// sequence number `seq` before every subscriber has seen a message of p's
/// with sequence >= seq - L. Progress is "highest sequence seen", so QoS 0
/// messages a broker drops do not stall the publisher.
struct Lead {
    lead: u64,
    npub: usize,
    nsub: usize,
    progress: Vec<AtomicU64>,
    /// Messages published by all publishers together; u64::MAX until they
    /// have all finished (then subscribers know when they have everything).
    total_sent: AtomicU64,
}

impl Lead {
    fn on(&self) -> bool {
        self.lead > 0
    }

    fn min_progress(&self, pubid: usize) -> u64 {
        (0..self.nsub).map(|s| self.progress[s * self.npub + pubid].load(Ordering::Acquire)).min().unwrap_or(0)
    }

    /// Wait until `seq` may be published. False if time is up (stop time
    /// or deadline).
    fn wait(&self, pubid: usize, seq: u64, cached: &mut u64, lim: &PubLimits) -> bool {
        loop {
            *cached = self.min_progress(pubid);
            if seq < *cached + self.lead {
                return true;
            }
            if lim.time_up(Instant::now()) {
                return false;
            }
            thread::sleep(Duration::from_micros(100));
        }
    }
}

fn throughput(args: &mut Args) -> Result<u8, String> {
    let dst = target(args)?;
    let qos: u8 = args.take("qos", Some(0))?;
    let npub: usize = args.take("publishers", Some(1))?;
    let nsub: usize = args.take("subscribers", Some(1))?;
    let k_arg: Option<u64> = match args.kv.remove("messages") {
        Some(v) => Some(v.parse().map_err(|_| format!("--messages: bad value {v:?}"))?),
        None => None,
    };
    let psize: usize = args.take("payload", Some(16))?;
    let window: u64 = args.take("window", Some(64))?;
    let timeout: f64 = args.take("timeout-secs", Some(60.0))?;
    let grace_ms: u64 = args.take("grace-ms", Some(2000))?;
    let nodelay = args.take::<u8>("nodelay", Some(1))? != 0;
    let resume_at: u64 = args.take("resume-at", Some(window.saturating_sub(1)))?;
    let max_lead: u64 = args.take("max-lead", Some(0))?;
    let duration: f64 = args.take("duration-secs", Some(0.0))?;
    let user: String = args.take("username", Some(String::new()))?;
    let pass: String = args.take("password", Some(String::new()))?;
    args.finish()?;
    if qos > 1 {
        return Err("--qos must be 0 or 1".into());
    }
    // With --duration-secs, --messages is only the upper bound per publisher.
    let k: u64 = k_arg.unwrap_or(if duration > 0.0 { 10_000_000 / npub.max(1) as u64 } else { 100_000 });
    if duration > 0.0 && (npub as u64 * k).div_ceil(8) * nsub as u64 > (2u64 << 30) {
        return Err(
            "--messages upper bound too large for the loss bitmaps (npub*messages*subscribers/8 > 2 GiB)".into()
        );
    }
    if psize < 8 {
        return Err("--payload must be at least 8 bytes (publisher id + sequence)".into());
    }
    if npub == 0 || nsub == 0 || k == 0 || window == 0 || window > 60_000 {
        return Err("publishers, subscribers, messages must be > 0; window in 1..60000".into());
    }
    if resume_at >= window {
        return Err("--resume-at must be below --window".into());
    }
    if k > u32::MAX as u64 {
        return Err("--messages too large".into());
    }
    net::raise_nofile((npub * 2 + nsub * 2 + 64) as u64);
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let run = std::process::id();
    let topic = format!("loadgen/{run}/tp");
    let expected = npub as u64 * k;
    let pubs_done = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let lead = Arc::new(Lead {
        lead: max_lead,
        npub,
        nsub,
        progress: (0..npub * nsub).map(|_| AtomicU64::new(0)).collect(),
        total_sent: AtomicU64::new(u64::MAX),
    });

    // Subscribers first; each reports ready after its SUBACK.
    let mut subs = Vec::new();
    for i in 0..nsub {
        let topic = topic.clone();
        let ready = ready_tx.clone();
        let pubs_done = pubs_done.clone();
        let abort = abort.clone();
        let lead = lead.clone();
        let (user, pass) = (user.clone(), pass.clone());
        let h = thread::Builder::new()
            .name(format!("sub{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut st = SubStats::default();
                let id = format!("lg{run}-s{i}");
                let conn = Conn::open(dst, None, &id, 60, nodelay, 256 * 1024, login(&user, &pass), deadline)
                    .and_then(|mut c| c.subscribe(&topic, qos, deadline).map(|_| c));
                let mut conn = match conn {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("subscriber {i}: {e}")));
                        return st;
                    }
                };
                drop(ready);
                if let Err(e) =
                    sub_loop(&mut conn, &mut st, (k, expected), deadline, &pubs_done, &abort, grace_ms, (&lead, i))
                {
                    st.error = Some(format!("subscriber {i}: {e}"));
                }
                conn.disconnect();
                st
            })
            .map_err(|e| e.to_string())?;
        subs.push(h);
    }

    let barrier = Arc::new(Barrier::new(npub + 1));
    let mut pubs = Vec::new();
    for i in 0..npub {
        let topic = topic.clone();
        let ready = ready_tx.clone();
        let barrier = barrier.clone();
        let abort = abort.clone();
        let lead = lead.clone();
        let (user, pass) = (user.clone(), pass.clone());
        let h = thread::Builder::new()
            .name(format!("pub{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut st = PubStats { sent: 0, done: None, acked: 0, error: None, timed_out: false, conn: None };
                let id = format!("lg{run}-p{i}");
                let conn = Conn::open(dst, None, &id, 60, nodelay, 64 * 1024, login(&user, &pass), deadline);
                let conn = match conn {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("publisher {i}: {e}")));
                        barrier.wait();
                        return st;
                    }
                };
                drop(ready);
                barrier.wait();
                if abort.load(Ordering::Relaxed) {
                    st.conn = Some(conn);
                    return st;
                }
                let now = Instant::now();
                let lim = PubLimits {
                    k,
                    stop_at: (duration > 0.0).then(|| now + Duration::from_secs_f64(duration)),
                    deadline,
                };
                let r = if qos == 0 {
                    pub_qos0(conn, i as u32, lim, psize, &topic, &mut st, &lead)
                } else {
                    pub_qos1(conn, i as u32, lim, psize, (window, resume_at), &topic, &mut st, &lead)
                };
                if let Err(e) = r {
                    st.error = Some(format!("publisher {i}: {e}"));
                }
                st
            })
            .map_err(|e| e.to_string())?;
        pubs.push(h);
    }
    drop(ready_tx);

    let mut setup_errors = Vec::new();
    for _ in 0..(npub + nsub) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => setup_errors.push(e),
            Err(_) => {
                setup_errors.push("timed out during connection setup".into());
                break;
            }
        }
    }
    if !setup_errors.is_empty() {
        abort.store(true, Ordering::Relaxed);
    }
    let start = Instant::now();
    barrier.wait();

    let mut pub_done = start;
    let mut errors = setup_errors;
    let mut timed_out = false;
    let mut acked = 0;
    let mut sent_total = 0u64;
    let mut keep = Vec::new(); // publisher connections stay open until subscribers finish
    for h in pubs {
        let mut st = h.join().map_err(|_| "publisher thread panicked".to_string())?;
        if let Some(d) = st.done {
            pub_done = pub_done.max(d);
        }
        acked += st.acked;
        sent_total += st.sent;
        timed_out |= st.timed_out;
        errors.extend(st.error.take());
        keep.extend(st.conn.take());
    }
    lead.total_sent.store(sent_total, Ordering::SeqCst);
    pubs_done.store(true, Ordering::SeqCst);
    if !errors.is_empty() {
        abort.store(true, Ordering::Relaxed);
    }

    let (mut received, mut unique, mut dups, mut bogus) = (0u64, 0u64, 0u64, 0u64);
    let mut last = None::<Instant>;
    let mut first = None::<Instant>;
    let mut min_unique = u64::MAX;
    let mut max_gap = Duration::ZERO;
    let mut gaps_5ms = 0;
    let mut max_unacked = 0;
    for h in subs {
        let st = h.join().map_err(|_| "subscriber thread panicked".to_string())?;
        received += st.received;
        unique += st.unique;
        dups += st.dups;
        bogus += st.bogus;
        min_unique = min_unique.min(st.unique);
        max_gap = max_gap.max(st.max_gap);
        gaps_5ms += st.gaps_5ms;
        max_unacked = max_unacked.max(st.max_unacked);
        timed_out |= st.timed_out;
        errors.extend(st.error);
        if let Some(t) = st.last_recv {
            last = Some(last.map_or(t, |l: Instant| l.max(t)));
        }
        if let Some(t) = st.first_recv {
            first = Some(first.map_or(t, |l: Instant| l.min(t)));
        }
    }
    for mut c in keep {
        c.disconnect();
    }
    // This process's CPU from its start (connections, publishing, receiving),
    // every thread has been joined: to set beside the broker's CPU.
    let (cpu_user, cpu_sys) = net::cpu_time();
    let total_expected = sent_total * nsub as u64;
    let lost = total_expected.saturating_sub(unique);
    let elapsed = last.map_or(0.0, |l| l.duration_since(start).as_secs_f64());
    let pub_elapsed = pub_done.duration_since(start).as_secs_f64();
    let rate = |n: u64, t: f64| if t > 0.0 { n as f64 / t } else { 0.0 };
    let status = if !errors.is_empty() {
        "error"
    } else if timed_out {
        "timeout"
    } else if lost > 0 {
        "loss"
    } else {
        "ok"
    };
    for e in &errors {
        eprintln!("loadgen: {e}");
    }
    if qos == 1 && lost > 0 {
        eprintln!(
            "loadgen: QoS 1: {lost} of {total_expected} deliveries missing (worst subscriber got {min_unique} of {sent_total} unique; \
             publishers got PUBACKs for {acked} of {sent_total})"
        );
    }
    println!(
        "RESULT mode=throughput status={status} qos={qos} publishers={npub} subscribers={nsub} messages={k} \
         payload={psize} window={window} resume_at={resume_at} max_lead={max_lead} duration_s={duration} published={sent_total} expected={total_expected} delivered={received} unique={unique} lost={lost} \
         dups={dups} bogus={bogus} acked={acked} elapsed_s={elapsed:.4} deliver_rate={:.0} \
         first_delivery_ms={:.3} publish_elapsed_s={pub_elapsed:.4} publish_rate={:.0} max_gap_ms={:.1} gaps_over_5ms={gaps_5ms} sub_max_unacked={max_unacked} errors={} \
         cpu_user_s={:.4} cpu_sys_s={:.4}",
        rate(unique, elapsed),
        first.map_or(-1.0, |f| f.duration_since(start).as_secs_f64() * 1e3),
        rate(sent_total, pub_elapsed),
        max_gap.as_secs_f64() * 1e3,
        errors.len(),
        cpu_user.as_secs_f64(),
        cpu_sys.as_secs_f64()
    );
    Ok(if status == "ok" || (status == "loss" && qos == 0) { 0 } else { 1 })
}

#[allow(clippy::too_many_arguments)]
fn sub_loop(
    conn: &mut Conn,
    st: &mut SubStats,
    (k, expected): (u64, u64),
    deadline: Instant,
    pubs_done: &AtomicBool,
    abort: &AtomicBool,
    grace_ms: u64,
    (lead, sub_idx): (&Lead, usize),
) -> io::Result<()> {
    let mut seen = vec![0u64; expected.div_ceil(64) as usize];
    let mut out = Vec::with_capacity(16 * 1024);
    let mut last_activity = Instant::now();
    let grace = Duration::from_millis(grace_ms);
    let r = sub_loop_inner(
        conn,
        st,
        k,
        expected,
        deadline,
        pubs_done,
        abort,
        grace,
        &mut seen,
        &mut out,
        &mut last_activity,
        (lead, sub_idx),
    );
    if st.unique < expected.min(lead.total_sent.load(Ordering::SeqCst)) && std::env::var_os("LOADGEN_DEBUG").is_some() {
        let npub = expected / k;
        let mut per = Vec::new();
        for p in 0..npub {
            let mut c = 0;
            let mut first_missing = None;
            for s in 0..k {
                let idx = p * k + s;
                if seen[(idx / 64) as usize] & (1 << (idx % 64)) != 0 {
                    c += 1
                } else if first_missing.is_none() {
                    first_missing = Some(s)
                }
            }
            per.push(format!("pub{p}:{c} first_missing={first_missing:?}"));
        }
        eprintln!("loadgen: debug subscriber missing: {}", per.join(" "));
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn sub_loop_inner(
    conn: &mut Conn,
    st: &mut SubStats,
    k: u64,
    expected: u64,
    deadline: Instant,
    pubs_done: &AtomicBool,
    abort: &AtomicBool,
    grace: Duration,
    seen: &mut [u64],
    out: &mut Vec<u8>,
    last_activity: &mut Instant,
    (lead, sub_idx): (&Lead, usize),
) -> io::Result<()> {
    let mut maxseq = vec![0u64; lead.npub];
    let mut unacked = 0u64;
    loop {
        let mut got = false;
        while let Some((hdr, body)) = conn.rd.next_buffered()? {
            match hdr >> 4 {
                mqtt::PUBLISH => {
                    let p = mqtt::parse_publish(hdr, body)?;
                    if p.qos == 1 {
                        mqtt::puback(out, p.pid);
                        unacked += 1;
                        st.max_unacked = st.max_unacked.max(unacked);
                    }
                    got = true;
                    st.received += 1;
                    if p.payload.len() < 8 {
                        st.bogus += 1;
                        continue;
                    }
                    let pubid = u32::from_be_bytes(p.payload[0..4].try_into().unwrap()) as u64;
                    let seq = u32::from_be_bytes(p.payload[4..8].try_into().unwrap()) as u64;
                    let idx = pubid * k + seq;
                    if seq >= k || idx >= expected {
                        st.bogus += 1;
                        continue;
                    }
                    let m = &mut maxseq[pubid as usize];
                    *m = (*m).max(seq + 1);
                    let (w, b) = ((idx / 64) as usize, idx % 64);
                    if seen[w] & (1 << b) != 0 {
                        st.dups += 1;
                        let _ = p.dup;
                    } else {
                        seen[w] |= 1 << b;
                        st.unique += 1;
                    }
                }
                mqtt::PINGRESP => {}
                t => return Err(mqtt::bad(format!("subscriber got unexpected packet type {t}"))),
            }
        }
        let now = Instant::now();
        if got {
            if let Some(l) = st.last_recv {
                let gap = now.duration_since(l);
                if gap > st.max_gap {
                    st.max_gap = gap;
                }
                if gap > Duration::from_millis(5) {
                    st.gaps_5ms += 1;
                }
            }
            st.last_recv = Some(now);
            st.first_recv.get_or_insert(now);
            if lead.on() {
                for (p, &m) in maxseq.iter().enumerate() {
                    lead.progress[sub_idx * lead.npub + p].store(m, Ordering::Release);
                }
            }
            *last_activity = now;
        }
        if !out.is_empty() {
            conn.w().write_all(out)?;
            out.clear();
            unacked = 0;
        }
        if st.unique >= expected {
            return Ok(());
        }
        let target = lead.total_sent.load(Ordering::SeqCst);
        if target != u64::MAX && st.unique >= target {
            return Ok(());
        }
        if now >= deadline {
            st.timed_out = true;
            return Ok(());
        }
        if abort.load(Ordering::Relaxed) {
            return Ok(());
        }
        if pubs_done.load(Ordering::Relaxed) && now.duration_since(*last_activity) > grace {
            return Ok(()); // nothing more is coming: count the rest as lost
        }
        conn.rd.fill()?;
    }
}

fn fill_payload(payload: &mut [u8], pubid: u32, seq: u32) {
    payload[0..4].copy_from_slice(&pubid.to_be_bytes());
    payload[4..8].copy_from_slice(&seq.to_be_bytes());
}

/// When a publisher stops: after `k` messages, at `stop_at` (duration mode)
/// or at the deadline.
#[derive(Clone, Copy)]
struct PubLimits {
    k: u64,
    stop_at: Option<Instant>,
    deadline: Instant,
}

impl PubLimits {
    fn time_up(&self, now: Instant) -> bool {
        self.stop_at.is_some_and(|s| now >= s) || now >= self.deadline
    }
}

#[allow(clippy::too_many_arguments)]
fn pub_qos0(
    conn: Conn,
    pubid: u32,
    lim: PubLimits,
    psize: usize,
    topic: &str,
    st: &mut PubStats,
    lead: &Lead,
) -> io::Result<()> {
    let mut payload = vec![0u8; psize];
    let mut buf = Vec::with_capacity(BATCH_BYTES + psize + 256);
    let t = topic.as_bytes();
    let mut cached = 0u64;
    let batch_msgs = if lead.on() { (lead.lead / 4).max(1) } else { u64::MAX };
    let mut in_buf = 0u64;
    let mut seq = 0u64;
    while seq < lim.k {
        if seq.is_multiple_of(256) && seq > 0 && lim.stop_at.is_some() && lim.time_up(Instant::now()) {
            break;
        }
        if lead.on() && seq >= cached + lead.lead {
            conn.w().write_all(&buf)?;
            buf.clear();
            in_buf = 0;
            if !lead.wait(pubid as usize, seq, &mut cached, &lim) {
                st.timed_out = Instant::now() >= lim.deadline;
                break;
            }
        }
        fill_payload(&mut payload, pubid, seq as u32);
        mqtt::publish(&mut buf, t, 0, 0, &payload);
        seq += 1;
        in_buf += 1;
        if buf.len() >= BATCH_BYTES || in_buf >= batch_msgs {
            in_buf = 0;
            conn.w().write_all(&buf)?;
            buf.clear();
            let now = Instant::now();
            if lim.time_up(now) {
                st.timed_out = now >= lim.deadline;
                break;
            }
        }
    }
    conn.w().write_all(&buf)?;
    st.sent = seq;
    st.done = Some(Instant::now());
    st.conn = Some(conn);
    Ok(())
}

/// Counts the PUBACKs already read into `rd`'s buffer into `acked`.
fn count_pubacks(rd: &mut FrameReader<TcpStream>, acked: &mut u64) -> io::Result<()> {
    while let Some((hdr, body)) = rd.next_buffered()? {
        match hdr >> 4 {
            mqtt::PUBACK => {
                if mqtt::packet_id(body)? == 0 {
                    return Err(mqtt::bad("PUBACK with packet id 0"));
                }
                *acked += 1;
            }
            mqtt::PINGRESP => {}
            t => return Err(mqtt::bad(format!("publisher got unexpected packet type {t}"))),
        }
    }
    Ok(())
}

/// Reads PUBACKs until `acked` reaches `target`; false at the deadline.
fn await_pubacks(rd: &mut FrameReader<TcpStream>, acked: &mut u64, target: u64, deadline: Instant) -> io::Result<bool> {
    loop {
        count_pubacks(rd, acked)?;
        if *acked >= target {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        rd.fill()?;
    }
}

/// A windowed QoS 1 publisher on one thread: it writes while the window
/// has room and reads PUBACKs only when it is full (every read then
/// takes all that arrived), as a client that publishes from its network
/// loop does. (A reader thread of its own cost a thread hand-off per
/// PUBACK: with Mosquitto, whose PUBACKs come one at a time, loadgen used
/// as much CPU per message as the broker it measured.)
#[allow(clippy::too_many_arguments)]
fn pub_qos1(
    conn: Conn,
    pubid: u32,
    lim: PubLimits,
    psize: usize,
    (window, resume_at): (u64, u64),
    topic: &str,
    st: &mut PubStats,
    lead: &Lead,
) -> io::Result<()> {
    let deadline = lim.deadline;
    let Conn { mut rd } = conn;
    let mut wr = rd.get_ref().try_clone()?;
    let mut acked = 0u64;
    let mut payload = vec![0u8; psize];
    let mut buf = Vec::with_capacity(BATCH_BYTES + psize + 256);
    let t = topic.as_bytes();
    let mut sent = 0u64;
    let mut lead_cached = 0u64;
    let mut gave_up = false;
    while sent < lim.k {
        if sent - acked >= window {
            // Window full: flush, then read until it has drained to
            // --resume-at outstanding. The default (window - 1) publishes
            // again on the first PUBACK, like a real client; a lower mark
            // batches writes but, with the broker's Nagle, invites 40 ms
            // delayed-ACK stalls (the publisher sends nothing to carry ACKs).
            if !buf.is_empty() {
                wr.write_all(&buf)?;
                buf.clear();
            }
            if lim.time_up(Instant::now()) {
                break;
            }
            if !await_pubacks(&mut rd, &mut acked, sent - resume_at, deadline)? {
                gave_up = true;
                break;
            }
            continue;
        }
        if lead.on() && sent >= lead_cached + lead.lead {
            if !buf.is_empty() {
                wr.write_all(&buf)?;
                buf.clear();
            }
            if !lead.wait(pubid as usize, sent, &mut lead_cached, &lim) {
                gave_up = Instant::now() >= deadline;
                break;
            }
        }
        fill_payload(&mut payload, pubid, sent as u32);
        let pid = (sent % 65535) as u16 + 1;
        mqtt::publish(&mut buf, t, 1, pid, &payload);
        sent += 1;
        if buf.len() >= BATCH_BYTES {
            wr.write_all(&buf)?;
            buf.clear();
        }
        if sent.is_multiple_of(64) && lim.stop_at.is_some() && lim.time_up(Instant::now()) {
            break;
        }
    }
    if !buf.is_empty() {
        wr.write_all(&buf)?;
    }
    st.sent = sent;
    // The rest of the PUBACKs, until the deadline.
    let all = await_pubacks(&mut rd, &mut acked, sent, deadline)?;
    st.acked = acked;
    st.timed_out = !all || gave_up || acked < sent;
    st.done = Some(Instant::now());
    drop(wr);
    st.conn = Some(Conn { rd });
    Ok(())
}

// ------------------------------------------------------------------ latency

fn latency(args: &mut Args) -> Result<u8, String> {
    let dst = target(args)?;
    let qos: u8 = args.take("qos", Some(1))?;
    let count: usize = args.take("count", Some(10_000))?;
    let warmup: usize = args.take("warmup", Some(200))?;
    let psize: usize = args.take("payload", Some(16))?;
    let timeout: f64 = args.take("timeout-secs", Some(60.0))?;
    let dump: String = args.take("dump", Some(String::new()))?;
    let interval_us: u64 = args.take("interval-us", Some(0))?;
    let user: String = args.take("username", Some(String::new()))?;
    let pass: String = args.take("password", Some(String::new()))?;
    let sub_user: String = args.take("sub-username", Some(user.clone()))?;
    let sub_pass: String = args.take("sub-password", Some(pass.clone()))?;
    args.finish()?;
    if qos > 1 || psize < 16 || count == 0 {
        return Err("--qos 0|1, --payload >= 16, --count > 0".into());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let run = std::process::id();
    let topic = format!("loadgen/{run}/lat");
    let e = |w: &str, e: io::Error| format!("{w}: {e}");
    let mut sub = Conn::open_login(dst, &format!("lg{run}-ls"), login(&sub_user, &sub_pass), deadline)
        .map_err(|x| e("subscriber connect", x))?;
    sub.subscribe(&topic, qos, deadline).map_err(|x| e("subscribe", x))?;
    let mut pubc = Conn::open_login(dst, &format!("lg{run}-lp"), login(&user, &pass), deadline)
        .map_err(|x| e("publisher connect", x))?;
    // Sanity: PINGREQ/PINGRESP round trip.
    let mut p = Vec::new();
    mqtt::pingreq(&mut p);
    pubc.w().write_all(&p).map_err(|x| e("pingreq", x))?;
    pubc.rd.expect(mqtt::PINGRESP, deadline, "PINGRESP").map_err(|x| e("pingreq", x))?;

    let base = Instant::now();
    let mut lats: Vec<u64> = Vec::with_capacity(count);
    let mut payload = vec![0u8; psize];
    let mut out = Vec::with_capacity(256);
    let mut ack = Vec::with_capacity(8);
    let mut status = "ok";
    let mut err = None;
    let mut stale = 0u64;
    let t = topic.as_bytes();
    'outer: for i in 0..(warmup + count) as u64 {
        if Instant::now() >= deadline {
            status = "timeout";
            break;
        }
        if interval_us > 0 {
            std::thread::sleep(Duration::from_micros(interval_us));
        }
        let step_deadline = (Instant::now() + Duration::from_secs(5)).min(deadline);
        let pid = (i % 65535) as u16 + 1;
        let ts = base.elapsed().as_nanos() as u64;
        payload[0..8].copy_from_slice(&i.to_be_bytes());
        payload[8..16].copy_from_slice(&ts.to_be_bytes());
        out.clear();
        mqtt::publish(&mut out, t, qos, pid, &payload);
        if let Err(x) = pubc.w().write_all(&out) {
            err = Some(e("publish", x));
            break;
        }
        // Wait for the subscriber to receive message i.
        loop {
            match sub.rd.wait_frame(step_deadline) {
                Ok(true) => {}
                Ok(false) => {
                    err = Some(format!("message {i} not delivered within 5 s"));
                    break 'outer;
                }
                Err(x) => {
                    err = Some(e("subscriber read", x));
                    break 'outer;
                }
            }
            let (hdr, body) = match sub.rd.next_buffered() {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(x) => {
                    err = Some(e("subscriber parse", x));
                    break 'outer;
                }
            };
            let now = base.elapsed().as_nanos() as u64;
            if hdr >> 4 != mqtt::PUBLISH {
                continue;
            }
            let m = match mqtt::parse_publish(hdr, body) {
                Ok(m) => m,
                Err(x) => {
                    err = Some(e("subscriber parse", x));
                    break 'outer;
                }
            };
            let seq = u64::from_be_bytes(m.payload[0..8].try_into().unwrap_or([0xff; 8]));
            let sent_ts = u64::from_be_bytes(m.payload.get(8..16).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]));
            let mpid = m.pid;
            let mqos = m.qos;
            if mqos == 1 {
                ack.clear();
                mqtt::puback(&mut ack, mpid);
                if let Err(x) = sub.w().write_all(&ack) {
                    err = Some(e("subscriber puback", x));
                    break 'outer;
                }
            }
            if seq == i {
                if i >= warmup as u64 {
                    lats.push(now.saturating_sub(sent_ts) / 1000);
                }
                break;
            }
            stale += 1;
        }
        if qos == 1 {
            match pubc.rd.expect(mqtt::PUBACK, step_deadline, "PUBACK") {
                Ok(b) if mqtt::packet_id(&b).ok() == Some(pid) => {}
                Ok(_) => {
                    err = Some(format!("PUBACK for message {i} has the wrong packet id"));
                    break;
                }
                Err(x) => {
                    err = Some(e("publisher PUBACK", x));
                    break;
                }
            }
        }
    }
    if let Some(x) = &err {
        eprintln!("loadgen: {x}");
        status = "error";
    }
    sub.disconnect();
    pubc.disconnect();
    if !dump.is_empty() {
        let text: String = lats.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&dump, text).map_err(|x| format!("--dump {dump}: {x}"))?;
    }
    lats.sort_unstable();
    let pct = |q: f64| -> u64 {
        if lats.is_empty() {
            return 0;
        }
        lats[((lats.len() as f64 * q).ceil() as usize).clamp(1, lats.len()) - 1]
    };
    let mean = if lats.is_empty() { 0.0 } else { lats.iter().sum::<u64>() as f64 / lats.len() as f64 };
    println!(
        "RESULT mode=latency status={status} qos={qos} count={} warmup={warmup} payload={psize} stale={stale} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={mean:.1} min_us={}",
        lats.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        lats.last().copied().unwrap_or(0),
        lats.first().copied().unwrap_or(0),
    );
    Ok(if status == "ok" { 0 } else { 1 })
}

// ------------------------------------------------------------------ fsync

/// Size of each writer's file; its writes wrap around within it.
const FSYNC_FILE_BYTES: u64 = 4 << 20;

fn fsync(args: &mut Args) -> Result<u8, String> {
    use std::os::unix::fs::FileExt;
    let dir: String = args.take("dir", None)?;
    let writers: usize = args.take("writers", Some(1))?;
    let count: usize = args.take("count", Some(2000))?;
    let bytes: u64 = args.take("bytes", Some(1600))?;
    args.finish()?;
    if writers == 0 || writers > 16 || count == 0 || count > 100_000 || bytes == 0 || bytes > 1 << 20 {
        return Err("--writers 1..16, --count 1..100000, --bytes 1..1048576".into());
    }
    // Zero-filled and synced first: the measured writes overwrite
    // allocated blocks (no file size or extent to commit), the cheapest
    // durable write the file system offers.
    let mut files = Vec::new();
    for w in 0..writers {
        let path = std::path::Path::new(&dir).join(format!("loadgen-fsync-{}-{w}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..FSYNC_FILE_BYTES / zeros.len() as u64 {
            f.write_all_at(&zeros, i * zeros.len() as u64).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        f.sync_all().map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((path, f));
    }
    let barrier = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = files
        .iter()
        .map(|(_, f)| {
            let f = f.try_clone().map_err(|e| e.to_string());
            let barrier = barrier.clone();
            thread::spawn(move || -> Result<(Vec<u64>, f64), String> {
                let f = f?;
                let buf = vec![0x5au8; bytes as usize];
                let mut lats = Vec::with_capacity(count);
                let mut off = 0u64;
                barrier.wait();
                let t0 = Instant::now();
                for _ in 0..count {
                    if off + bytes > FSYNC_FILE_BYTES {
                        off = 0;
                    }
                    let t = Instant::now();
                    f.write_all_at(&buf, off).map_err(|e| e.to_string())?;
                    f.sync_data().map_err(|e| e.to_string())?;
                    lats.push(t.elapsed().as_micros() as u64);
                    off += bytes;
                }
                Ok((lats, t0.elapsed().as_secs_f64()))
            })
        })
        .collect();
    let mut lats = Vec::with_capacity(count * writers);
    let mut secs = 0f64;
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((l, s))) => {
                lats.extend(l);
                secs = secs.max(s);
            }
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some("a writer thread panicked".into()),
        }
    }
    for (path, _) in &files {
        let _ = std::fs::remove_file(path);
    }
    if let Some(e) = err {
        return Err(format!("fsync: {e}"));
    }
    lats.sort_unstable();
    let pct = |q: f64| lats[((lats.len() as f64 * q).ceil() as usize).clamp(1, lats.len()) - 1];
    println!(
        "RESULT mode=fsync status=ok writers={writers} count={count} bytes={bytes} p50_us={} p99_us={} max_us={} \
         syncs_per_s_per_writer={:.0}",
        pct(0.50),
        pct(0.99),
        lats.last().copied().unwrap_or(0),
        if secs > 0.0 { count as f64 / secs } else { 0.0 },
    );
    Ok(0)
}

// ------------------------------------------------------------------ connect

/// What one `connect` worker saw.
#[derive(Default)]
struct ConnectStats {
    ok: u64,
    refused: u64,
    errors: u64,
    /// Logins the broker had not closed within 2 s of the DISCONNECT.
    unclosed: u64,
    first_err: Option<String>,
    /// Microseconds from the TCP connect to the CONNACK, per accepted login.
    lats: Vec<u64>,
}

/// `connect`: `--count` logins, `--concurrency` at a time. Each is a new TCP
/// connection: CONNECT (clean session, a client id of its own, with
/// `--username`/`--password` if given; with `--users K` the username is
/// `USERNAME<i mod K>`), CONNACK, DISCONNECT, and then waiting until the
/// broker closes the connection, so that its work for the login is done when
/// the run ends. Stops after 10 failed logins. Reports this process's CPU
/// time per login beside the rate, to compare with the broker's.
fn connect(args: &mut Args) -> Result<u8, String> {
    let dst = target(args)?;
    let count: u64 = args.take("count", None)?;
    let conc: u64 = args.take("concurrency", Some(1))?;
    let user: String = args.take("username", Some(String::new()))?;
    let pass: String = args.take("password", Some(String::new()))?;
    let users: u64 = args.take("users", Some(0))?;
    let timeout: f64 = args.take("timeout-secs", Some(60.0))?;
    args.finish()?;
    if count == 0 || count > 1_000_000 || conc == 0 || conc > 256 {
        return Err("--count must be 1..1000000, --concurrency 1..256".into());
    }
    if users > 0 && user.is_empty() {
        return Err("--users needs --username (the prefix)".into());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let run = std::process::id();
    let failures = AtomicU64::new(0);
    let cpu0 = net::cpu_time();
    let t0 = Instant::now();
    let stats: Vec<ConnectStats> = thread::scope(|s| {
        let workers: Vec<_> = (0..conc)
            .map(|w| {
                let (user, pass, failures) = (&user, &pass, &failures);
                s.spawn(move || {
                    let mut st = ConnectStats::default();
                    let mut i = w;
                    while i < count && Instant::now() < deadline && failures.load(Ordering::Relaxed) < 10 {
                        let name = if users > 0 { format!("{user}{}", i % users) } else { user.clone() };
                        match connect_once(dst, &format!("lg{run}-c{i}"), login(&name, pass), deadline) {
                            Ok((lat, closed)) => {
                                st.ok += 1;
                                st.lats.push(lat);
                                st.unclosed += u64::from(!closed);
                            }
                            Err((refused, e)) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                if refused {
                                    st.refused += 1;
                                } else {
                                    st.errors += 1;
                                }
                                st.first_err.get_or_insert(format!("login {i} ({name}): {e}"));
                            }
                        }
                        i += conc;
                    }
                    st
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = net::cpu_time();
    let user = (cpu1.0 - cpu0.0).as_secs_f64();
    let cpu = user + (cpu1.1 - cpu0.1).as_secs_f64();
    let (mut ok, mut refused, mut errors, mut unclosed) = (0u64, 0u64, 0u64, 0u64);
    let mut lats = Vec::with_capacity(count as usize);
    for st in stats {
        ok += st.ok;
        refused += st.refused;
        errors += st.errors;
        unclosed += st.unclosed;
        lats.extend(st.lats);
        if let Some(e) = st.first_err {
            eprintln!("loadgen: {e}");
        }
    }
    lats.sort_unstable();
    let pct = |q: f64| {
        if lats.is_empty() {
            0
        } else {
            lats[((lats.len() as f64 * q).ceil() as usize).clamp(1, lats.len()) - 1]
        }
    };
    let status = if errors > 0 {
        "error"
    } else if refused > 0 {
        "refused"
    } else if ok < count {
        "timeout"
    } else {
        "ok"
    };
    println!(
        "RESULT mode=connect status={status} count={count} concurrency={conc} users={users} connected={ok} \
         refused={refused} errors={errors} unclosed={unclosed} elapsed_s={elapsed:.4} rate={:.0} cpu_s={cpu:.4} \
         cpu_user_s={user:.4} cpu_us_per_connect={:.1} cpu_user_us_per_connect={:.1} p50_us={} p99_us={} max_us={}",
        if elapsed > 0.0 { ok as f64 / elapsed } else { 0.0 },
        if ok > 0 { cpu * 1e6 / ok as f64 } else { 0.0 },
        if ok > 0 { user * 1e6 / ok as f64 } else { 0.0 },
        pct(0.50),
        pct(0.99),
        lats.last().copied().unwrap_or(0),
    );
    Ok(if status == "ok" { 0 } else { 1 })
}

/// One login: Ok((µs from the TCP connect to the CONNACK, whether the broker
/// closed the connection within 2 s of the DISCONNECT)), or Err((refused by
/// CONNACK, what went wrong)).
fn connect_once(
    dst: SocketAddrV4,
    id: &str,
    login: Option<(&str, &str)>,
    deadline: Instant,
) -> Result<(u64, bool), (bool, String)> {
    let t = Instant::now();
    let s = net::connect_from(None, dst).map_err(|e| (false, format!("connect: {e}")))?;
    let mut c = Conn::start_login(s, id, 60, true, 256, login).map_err(|e| (false, format!("CONNECT: {e}")))?;
    let b = c.rd.expect(mqtt::CONNACK, deadline, "CONNACK").map_err(|e| (false, e.to_string()))?;
    let lat = t.elapsed().as_micros() as u64;
    if b.len() != 2 {
        return Err((false, format!("CONNACK with {} bytes", b.len())));
    }
    if b[1] != 0 {
        return Err((true, format!("CONNACK refused, return code {}", b[1])));
    }
    c.disconnect();
    let end = (Instant::now() + Duration::from_secs(2)).min(deadline);
    while Instant::now() < end {
        if c.rd.fill().is_err() {
            return Ok((lat, true)); // EOF (or reset): the broker closed it
        }
    }
    Ok((lat, false))
}

// --------------------------------------------------------------------- idle

fn idle(args: &mut Args) -> Result<u8, String> {
    let dst = target(args)?;
    let n: usize = args.take("connections", None)?;
    let hold: f64 = args.take("hold-secs", Some(3.0))?;
    let ips: String = args.take("source-ips", Some("auto".to_string()))?;
    let batch: usize = args.take("batch", Some(64))?;
    let timeout: f64 = args.take("timeout-secs", Some(120.0))?;
    let user: String = args.take("username", Some(String::new()))?;
    let pass: String = args.take("password", Some(String::new()))?;
    args.finish()?;
    if !(0.0..=500.0).contains(&hold) {
        return Err("--hold-secs must be 0..500 (keepalive is 600)".into());
    }
    let nips: usize = if ips == "auto" {
        n.div_ceil(5000).max(1)
    } else {
        ips.parse().map_err(|_| "--source-ips: number or auto")?
    };
    let nips = nips.clamp(1, 250);
    let limit = net::raise_nofile(n as u64 + 256);
    if (limit as usize) < n + 16 {
        return Err(format!("RLIMIT_NOFILE is {limit}, need {}: raise `ulimit -n`", n + 16));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let run = std::process::id();
    let t0 = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut pending: Vec<Conn> = Vec::with_capacity(batch);
    let mut ip_idx = 0usize;
    let mut used_ips = nips;
    let mut errors = 0u64;
    let mut first_err = None::<String>;
    let src_ip = |i: usize| Ipv4Addr::new(127, 0, 0, 1 + i as u8);
    let mut i = 0usize;
    // `i` counts connection attempts (successful or not); at most 100
    // errors, and the deadline is checked before every connect.
    'outer: while i < n {
        // Connect a batch, sending CONNECT on each, then collect the CONNACKs.
        while pending.len() < batch && i < n {
            if Instant::now() >= deadline {
                first_err.get_or_insert("timed out while connecting".into());
                break 'outer;
            }
            let id = format!("lg{run}-i{i}");
            let src = src_ip(ip_idx % used_ips);
            ip_idx += 1;
            match net::connect_from(Some(src), dst) {
                Ok(s) => {
                    i += 1;
                    net::set_linger_zero(&s);
                    match Conn::start_login(s, &id, 600, false, 128, login(&user, &pass)) {
                        Ok(c) => pending.push(c),
                        Err(e) => {
                            errors += 1;
                            first_err.get_or_insert(format!("CONNECT write: {e}"));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && used_ips < 250 => {
                    // Ephemeral ports exhausted for this source IP: add another.
                    used_ips += 1;
                    eprintln!("loadgen: source {src} out of ports, now using {used_ips} source IPs");
                }
                Err(e) => {
                    i += 1;
                    errors += 1;
                    first_err.get_or_insert(format!("connect: {e}"));
                }
            }
            if errors > 100 {
                break 'outer;
            }
        }
        for c in pending.drain(..) {
            match c.finish_connect(deadline) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    errors += 1;
                    first_err.get_or_insert(format!("CONNACK: {e}"));
                }
            }
        }
        if errors > 100 {
            break;
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    println!("READY connections={} elapsed_s={connect_s:.3}", conns.len());
    let _ = io::stdout().flush();
    if let Some(e) = &first_err {
        eprintln!("loadgen: {errors} connection errors, first: {e}");
    }

    // Hold (bounded), then check every connection still answers PINGREQ.
    let hold_end = Instant::now() + Duration::from_secs_f64(hold);
    while Instant::now() < hold_end {
        thread::sleep(hold_end.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)));
    }
    let mut ping = Vec::new();
    mqtt::pingreq(&mut ping);
    let mut alive = 0usize;
    let ping_deadline = Instant::now() + Duration::from_secs(20);
    let mut write_failed = vec![false; conns.len()];
    for (j, c) in conns.iter_mut().enumerate() {
        if c.w().write_all(&ping).is_err() {
            write_failed[j] = true;
        }
    }
    for (j, c) in conns.iter_mut().enumerate() {
        if write_failed[j] {
            continue;
        }
        if c.rd.expect(mqtt::PINGRESP, ping_deadline, "PINGRESP").is_ok() {
            alive += 1;
        }
    }
    let held = conns.len();
    for c in conns.iter_mut() {
        c.disconnect();
    }
    drop(conns);
    let status = if held == n && alive == n { "ok" } else { "error" };
    println!(
        "RESULT mode=idle status={status} connections={n} connected={held} alive={alive} errors={errors} \
         source_ips={used_ips} connect_s={connect_s:.3} connect_rate={:.0}",
        if connect_s > 0.0 { held as f64 / connect_s } else { 0.0 }
    );
    Ok(if status == "ok" { 0 } else { 1 })
}

// ------------------------------------------------------------------- retain

/// Retained messages per topic level below the prefix: topic `i` is
/// `PREFIX/<i / RETAIN_BUCKET>/<i>`, so `--verify-only` can fetch them in
/// small groups (a single `PREFIX/#` would have the broker send all N at once
/// and meet its per-client queue limits, which is not what is checked here).
const RETAIN_BUCKET: u64 = 100;

/// `retain`: publish `--count` retained QoS 1 messages, one per distinct
/// topic, keeping `--window` PUBLISHes unacknowledged, and wait for every
/// PUBACK (in order, as MQTT requires). `--verify-only 1` publishes nothing:
/// it subscribes to the topics group by group (QoS 0) and counts the distinct
/// retained messages of the given payload size the broker holds.
fn retain(args: &mut Args) -> Result<u8, String> {
    let dst = target(args)?;
    let count: u64 = args.take("count", None)?;
    let psize: usize = args.take("payload", Some(100))?;
    let window: u64 = args.take("window", Some(20))?;
    let prefix: String = args.take("prefix", Some("loadgen/retain".to_string()))?;
    let verify = args.take::<u8>("verify-only", Some(0))? != 0;
    let grace_ms: u64 = args.take("grace-ms", Some(2000))?;
    let timeout: f64 = args.take("timeout-secs", Some(120.0))?;
    args.finish()?;
    if count == 0 || count > 10_000_000 {
        return Err("--count must be 1..10000000".into());
    }
    if psize < 8 {
        return Err("--payload must be at least 8 bytes (message index)".into());
    }
    if window == 0 || window > 65_535 {
        return Err("--window must be 1..65535".into());
    }
    if prefix.is_empty() || prefix.contains(['#', '+']) {
        return Err("--prefix must be a non-empty topic without wildcards".into());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let t0 = Instant::now();
    let id = format!("lg{}-r", std::process::id());
    let mut conn =
        Conn::open(dst, None, &id, 600, true, 64 * 1024, None, deadline).map_err(|e| format!("connect: {e}"))?;
    let (status, done, err) = if verify {
        retain_verify(&mut conn, count, psize, &prefix, deadline, Duration::from_millis(grace_ms))
    } else {
        retain_publish(&mut conn, count, psize, window, &prefix, deadline)
    };
    conn.disconnect();
    if let Some(e) = &err {
        eprintln!("loadgen: {e}");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "RESULT mode=retain status={status} phase={} count={count} payload={psize} {}={done} elapsed_s={elapsed:.3}",
        if verify { "verify" } else { "publish" },
        if verify { "found" } else { "acked" },
    );
    Ok(if status == "ok" { 0 } else { 1 })
}

fn retain_topic(prefix: &str, i: u64) -> String {
    format!("{prefix}/{}/{i}", i / RETAIN_BUCKET)
}

/// Returns (status, messages acknowledged, error).
fn retain_publish(
    conn: &mut Conn,
    count: u64,
    psize: usize,
    window: u64,
    prefix: &str,
    deadline: Instant,
) -> (&'static str, u64, Option<String>) {
    let mut payload = vec![0x5a_u8; psize];
    let mut buf = Vec::with_capacity(64 * 1024);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        buf.clear();
        while sent < count && sent - acked < window {
            payload[0..8].copy_from_slice(&sent.to_be_bytes());
            let pid = (sent % 65535) as u16 + 1;
            mqtt::publish_with(&mut buf, retain_topic(prefix, sent).as_bytes(), 1, true, pid, &payload);
            sent += 1;
        }
        if !buf.is_empty() {
            if let Err(e) = conn.w().write_all(&buf) {
                return ("error", acked, Some(format!("publish: {e}")));
            }
        }
        match conn.rd.wait_frame(deadline) {
            Ok(true) => {}
            Ok(false) => return ("timeout", acked, Some(format!("{acked} of {count} PUBACKs before the timeout"))),
            Err(e) => return ("error", acked, Some(format!("read: {e}"))),
        }
        loop {
            let (hdr, body) = match conn.rd.next_buffered() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return ("error", acked, Some(format!("read: {e}"))),
            };
            match hdr >> 4 {
                mqtt::PUBACK => {
                    let want = (acked % 65535) as u16 + 1;
                    match mqtt::packet_id(body) {
                        Ok(p) if p == want && acked < sent => acked += 1,
                        Ok(p) => {
                            return (
                                "error",
                                acked,
                                Some(format!("PUBACK for packet id {p}, expected {want} (in order)")),
                            )
                        }
                        Err(e) => return ("error", acked, Some(format!("PUBACK: {e}"))),
                    }
                }
                mqtt::PINGRESP => {}
                t => return ("error", acked, Some(format!("unexpected packet type {t} while publishing"))),
            }
        }
    }
    ("ok", acked, None)
}

/// Returns (status, distinct retained messages found, error).
fn retain_verify(
    conn: &mut Conn,
    count: u64,
    psize: usize,
    prefix: &str,
    deadline: Instant,
    grace: Duration,
) -> (&'static str, u64, Option<String>) {
    let mut seen = vec![false; count as usize];
    let mut found = 0u64;
    let (mut bogus, mut not_retained) = (0u64, 0u64);
    let buckets = count.div_ceil(RETAIN_BUCKET);
    for b in 0..buckets {
        let want = RETAIN_BUCKET.min(count - b * RETAIN_BUCKET);
        let pid = (b % 65535) as u16 + 1;
        let mut p = Vec::new();
        mqtt::subscribe(&mut p, pid, &format!("{prefix}/{b}/+"), 0);
        if let Err(e) = conn.w().write_all(&p) {
            return ("error", found, Some(format!("subscribe: {e}")));
        }
        // The SUBACK and this group's retained messages, in whatever order;
        // done when all are in, or after `grace` without any.
        let (mut got, mut subacked) = (0u64, false);
        let mut quiet_until = (Instant::now() + grace).min(deadline);
        while !(subacked && got >= want) {
            match conn.rd.wait_frame(quiet_until) {
                Ok(true) => {}
                Ok(false) if Instant::now() >= deadline => {
                    return ("timeout", found, Some(format!("timed out in group {b}")))
                }
                Ok(false) => break,
                Err(e) => return ("error", found, Some(format!("read: {e}"))),
            }
            while let Ok(Some((hdr, body))) = conn.rd.next_buffered() {
                match hdr >> 4 {
                    mqtt::SUBACK => {
                        if body.len() != 3 || body[2] == 0x80 || mqtt::packet_id(body).ok() != Some(pid) {
                            return ("error", found, Some(format!("bad SUBACK {body:02x?} for group {b}")));
                        }
                        subacked = true;
                    }
                    mqtt::PUBLISH => {
                        let Ok(m) = mqtt::parse_publish(hdr, body) else {
                            return ("error", found, Some("malformed PUBLISH".into()));
                        };
                        if hdr & 1 == 0 {
                            not_retained += 1;
                            continue;
                        }
                        let i = u64::from_be_bytes(
                            m.payload.get(0..8).and_then(|s| s.try_into().ok()).unwrap_or([0xff; 8]),
                        );
                        if m.payload.len() != psize || i >= count || i / RETAIN_BUCKET != b {
                            bogus += 1;
                            continue;
                        }
                        if !seen[i as usize] {
                            seen[i as usize] = true;
                            found += 1;
                            got += 1;
                        }
                    }
                    mqtt::PINGRESP => {}
                    t => return ("error", found, Some(format!("unexpected packet type {t} while verifying"))),
                }
            }
            quiet_until = (Instant::now() + grace).min(deadline);
        }
    }
    if found == count && bogus == 0 && not_retained == 0 {
        ("ok", found, None)
    } else {
        let missing: Vec<u64> = (0..count).filter(|&i| !seen[i as usize]).take(10).collect();
        (
            "missing",
            found,
            Some(format!(
                "found {found} of {count} retained messages (bogus {bogus}, without RETAIN flag {not_retained}); first missing: {missing:?}"
            )),
        )
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Conn>();
}
