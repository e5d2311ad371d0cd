//! What a peer can make the broker hold, measured on a real process: the
//! broker's resident memory (VmRSS) must stay within a bound derived from
//! the configured limits, whatever the peer sends (bounds, not timings).
//! Run against Mosquitto too (`MIDGE_TEST_BROKER=mosquitto`), with its
//! nearest limit (`max_queued_messages`: it drops QoS 0 to a client whose
//! outgoing packet queue holds that many).

mod common;

use std::time::Duration;

use common::{is_mosquitto, publish_v311, subscribe_v311, Broker, Raw, ReadOutcome};

const T: Duration = Duration::from_secs(5);

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value");
    kib * 1024
}

/// Waits until the broker has read everything `r` sent before: the broker
/// answers a connection's packets in order.
fn ping(r: &mut Raw) {
    r.send(&[0xC0, 0x00]);
    loop {
        let p = r.expect_packet(T);
        if p.header == 0xD0 {
            return;
        }
    }
}

/// Retained replay on SUBSCRIBE goes through the output bound: a client
/// that subscribes to `#` ten times in one write and never reads gets at
/// most `client_out_buffer_bytes` held for it; the QoS 0 replay waits
/// there and goes on as it reads, so it gets every replay in the end,
/// nothing dropped. (Before, every replay went into the output buffer at
/// once: ten times 2 MB here; then the part past the bound was dropped.)
#[test]
fn retained_replay_to_a_stalled_qos0_subscriber_stays_within_the_output_bound() {
    const MESSAGES: usize = 2_000;
    const PAYLOAD: usize = 1024;
    const OUT_BYTES: u64 = 65_536;
    let config = if is_mosquitto() {
        // 64 packets of about 1 KiB: the same bound, counted in messages.
        "max_queued_messages 64\n".to_string()
    } else {
        format!("persistence false\nclient_out_buffer_bytes {OUT_BYTES}\n")
    };
    let b = Broker::start(&config);
    let mut publisher = Raw::connect_v311(b.port, "retainer", true, 60);
    let mut burst = Vec::new();
    for i in 0..MESSAGES {
        burst.extend(publish_v311(&format!("r/{i:04}"), 0, true, 0, &[b'x'; PAYLOAD]));
    }
    publisher.send(&burst);
    ping(&mut publisher);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_bytes(b.pid());

    let mut stalled = Raw::connect_v311(b.port, "stalled", true, 60);
    let subscribes: Vec<u8> = (1..=10).flat_map(|pid| subscribe_v311(pid, "#", 0)).collect();
    stalled.send(&subscribes);
    // Done when the broker has served the ten SUBSCRIBEs: RSS stops moving.
    let mut after = rss_bytes(b.pid());
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_bytes(b.pid());
        if now == after {
            break;
        }
        after = now;
    }
    ping(&mut publisher);
    let grown = after.saturating_sub(before);
    // The bound plus allocator slack; the replays themselves are 20 MB.
    assert!(grown < 8 << 20, "RSS grew by {grown} bytes ({before} -> {after})");

    // Now it reads: what was held for it arrives, then nothing more.
    let mut publishes = 0usize;
    loop {
        match stalled.read(Duration::from_secs(1)) {
            ReadOutcome::Packet(p) if p.kind() == 3 => publishes += 1,
            ReadOutcome::Packet(_) => {}
            ReadOutcome::Timeout => break,
            ReadOutcome::Closed => panic!("the broker closed the stalled subscriber"),
        }
    }
    eprintln!("RSS {before} -> {after} (+{grown}); {publishes} retained PUBLISHes received");
    assert!(publishes > 0, "nothing was delivered");
    if is_mosquitto() {
        // MOSQUITTO: writes to the socket as it replays, so the kernel's
        // socket buffers (megabytes on loopback) take more before its
        // queue fills; still far fewer than the ten replays.
        assert!(publishes < 10 * MESSAGES / 2, "{publishes} PUBLISHes");
        let log = b.log();
        assert!(log.contains("Outgoing messages are being dropped for client stalled"), "{log}");
    } else {
        // midge paces the replays by the client's reading: all of them.
        assert_eq!(publishes, 10 * MESSAGES, "ten replays of {MESSAGES}");
        assert!(!b.log().contains("Outgoing messages are being dropped"), "{}", b.log());
    }
    drop(publisher);
}

/// Publishes `n` retained QoS 1 messages of `payload` bytes to `r/NNNNN`
/// and waits for every PUBACK.
fn fill_retained(port: u16, n: usize, payload: usize) {
    let mut publisher = Raw::connect_v311(port, "retainer", true, 60);
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(publish_v311(&format!("r/{i:05}"), 1, true, (i % 65_535 + 1) as u16, &vec![b'x'; payload]));
        // The broker's Receive Maximum does not bind 3.1.1; still, keep
        // what is unacknowledged modest.
        if burst.len() > 256 << 10 || i + 1 == n {
            publisher.send(&burst);
            burst.clear();
        }
    }
    let mut acked = 0;
    while acked < n {
        let p = publisher.expect_packet(Duration::from_secs(30));
        if p.kind() == 4 {
            acked += 1;
        }
    }
}

/// Writes up to `bytes` of PINGREQs without blocking, for at most `for_`:
/// as much as the broker takes in. Returns the bytes written.
fn flood_pings(r: &mut Raw, bytes: usize, for_: Duration) -> usize {
    use std::io::Write;
    let chunk = [0xC0u8, 0x00].repeat(32 << 10);
    r.s.set_nonblocking(true).unwrap();
    let end = std::time::Instant::now() + for_;
    let mut sent = 0;
    while sent < bytes && std::time::Instant::now() < end {
        match r.s.write(&chunk[..chunk.len().min(bytes - sent)]) {
            Ok(n) => sent += n - n % 2,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("write: {e}"),
        }
    }
    r.s.set_nonblocking(false).unwrap();
    sent
}

/// Reads until nothing comes for `quiet`: (PUBLISHes, PINGRESPs) seen.
/// Reads in large chunks: a stalled client has many PINGRESPs coming.
fn drain(r: &mut Raw, quiet: Duration) -> (usize, usize) {
    use std::io::Read;
    r.s.set_read_timeout(Some(quiet)).unwrap();
    let (mut publishes, mut pings) = (0, 0);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match r.s.read(&mut chunk) {
            Ok(0) => panic!("the broker closed a subscriber"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                assert!(buf.is_empty(), "{} bytes of a partial packet", buf.len());
                return (publishes, pings);
            }
            Err(e) => panic!("read: {e}"),
        }
        let mut pos = 0;
        while let Some((header, used)) = whole_packet(&buf[pos..]) {
            match header >> 4 {
                3 => publishes += 1,
                13 => pings += 1,
                _ => {}
            }
            pos += used;
        }
        buf.drain(..pos);
    }
}

/// The first byte and whole length of the packet at the start of `b`, if
/// all of it is there.
fn whole_packet(b: &[u8]) -> Option<(u8, usize)> {
    let (mut len, mut mult) = (0usize, 1usize);
    for i in 1..5 {
        let byte = *b.get(i)?;
        len += (byte & 0x7f) as usize * mult;
        mult *= 128;
        if byte & 0x80 == 0 {
            let total = 1 + i + len;
            return (b.len() >= total).then_some((b[0], total));
        }
    }
    panic!("bad remaining length")
}

/// Issue 23: retained replay to subscribers of `#` that never read, who
/// also flood PINGREQs, is bounded by the configured limits. Every byte a
/// connection holds unwritten counts (`client_out_buffer_bytes`): QoS 0
/// replay stops at it and goes on as the client reads, and a connection
/// over it is not read until it drains, so its PINGRESPs (or PUBACKs)
/// cannot pile up either. Before, the broker counted only PUBLISH bytes (and those only
/// roughly) and read on, whatever a read brought: each 64 KiB read of
/// PINGREQs became 32,768 actions at once. A
/// subscriber that reads gets every retained message at QoS 1; the stalled
/// ones get every QoS 0 replay once they read (`$SYS/broker/publish/
/// messages/dropped` stays 0).
#[test]
fn retained_replay_and_answers_to_stalled_subscribers_stay_within_the_configured_bounds() {
    const MESSAGES: usize = 4_000;
    const PAYLOAD: usize = 1024;
    const OUT_BYTES: u64 = 65_536;
    const STALLED: usize = 8;
    const SUBSCRIBES: usize = 3;
    const PINGS_BYTES: usize = 256 << 10;
    // What the runtime reads at once (net::READ_BUFFER_BYTES_BUSY): the
    // answers to one read may come on top of the bound.
    const READ_BYTES: u64 = 64 << 10;
    if is_mosquitto() {
        // MOSQUITTO: no output byte bound to configure (client_out_buffer_bytes
        // is midge's) and no $SYS drop count for one client; by hand, a
        // PINGREQ flood from a client that never reads left Mosquitto
        // 2.0.11's RSS unchanged (it stops reading such a client too).
        eprintln!("midge only: uses client_out_buffer_bytes");
        return;
    }
    let config = format!(
        "memory_limit 67108864\nclient_out_buffer_bytes {OUT_BYTES}\nmax_queued_messages {}\nsys_interval 1\n",
        MESSAGES * 2
    );
    let b = Broker::start(&config);
    fill_retained(b.port, MESSAGES, PAYLOAD);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(b.pid());

    let mut stalled: Vec<Raw> =
        (0..STALLED).map(|i| Raw::connect_v311(b.port, &format!("stalled{i}"), true, 600)).collect();
    let subscribes: Vec<u8> = (1..=SUBSCRIBES as u16).flat_map(|pid| subscribe_v311(pid, "#", 0)).collect();
    let mut flooded = 0;
    for r in &mut stalled {
        r.send(&subscribes);
        flooded += flood_pings(r, PINGS_BYTES, Duration::from_secs(2));
    }
    // Done when the broker has served them: RSS stops moving.
    let mut after = rss_bytes(b.pid());
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_bytes(b.pid());
        if now == after {
            break;
        }
        after = now;
    }
    let grown = after.saturating_sub(before);
    // Per stalled client: the output bound, the answers to one read, its
    // read buffer; plus allocator slack. (The replays alone are 4 MB per
    // SUBSCRIBE; the kernel's socket buffers, outside RSS, take some.)
    let bound = STALLED as u64 * (OUT_BYTES + READ_BYTES + READ_BYTES) + (4 << 20);
    eprintln!(
        "RSS {before} -> {after} (+{grown}, bound {bound}); {flooded} bytes of PINGREQ taken from {STALLED} clients"
    );
    assert!(grown < bound, "RSS grew by {grown} bytes, over {bound} ({before} -> {after})");

    // A subscriber that reads gets every retained message, at QoS 1.
    let mut reader = Raw::connect_v311(b.port, "reader", true, 60);
    reader.send(&subscribe_v311(1, "#", 1));
    let mut got = std::collections::BTreeSet::new();
    loop {
        match reader.read(Duration::from_secs(5)) {
            ReadOutcome::Packet(p) if p.kind() == 3 => {
                assert_eq!(p.header & 0x06, 0x02, "QoS 1 expected: {:02x}", p.header);
                let tlen = u16::from_be_bytes([p.body[0], p.body[1]]) as usize;
                let topic = String::from_utf8(p.body[2..2 + tlen].to_vec()).unwrap();
                let pid = [p.body[2 + tlen], p.body[3 + tlen]];
                reader.send(&[0x40, 0x02, pid[0], pid[1]]);
                if topic.starts_with("r/") {
                    got.insert(topic);
                }
            }
            ReadOutcome::Packet(_) => {}
            ReadOutcome::Timeout => break,
            ReadOutcome::Closed => panic!("the broker closed the reader"),
        }
    }
    assert_eq!(got.len(), MESSAGES, "the reading QoS 1 subscriber got {} of {MESSAGES}", got.len());

    // The stalled clients read now: what was held for them arrives; with
    // what the broker dropped, that is every replay.
    let mut received = 0;
    for r in &mut stalled {
        let (publishes, pings) = drain(r, Duration::from_secs(2));
        eprintln!("stalled: {publishes} PUBLISHes, {pings} PINGRESPs");
        received += publishes;
    }
    std::thread::sleep(Duration::from_millis(2500));
    let mut sys = Raw::connect_v311(b.port, "sys", true, 60);
    sys.send(&subscribe_v311(1, "$SYS/broker/publish/messages/dropped", 0));
    let dropped: usize = loop {
        let p = sys.expect_packet(T);
        if p.kind() == 3 {
            let tlen = u16::from_be_bytes([p.body[0], p.body[1]]) as usize;
            break String::from_utf8(p.body[2 + tlen..].to_vec()).unwrap().parse().unwrap();
        }
    };
    eprintln!("stalled clients received {received} retained PUBLISHes; {dropped} dropped");
    assert!(received > 0, "nothing was delivered to the stalled clients");
    assert_eq!((received, dropped), (STALLED * SUBSCRIBES * MESSAGES, 0), "every replay, nothing dropped");
}

/// Issue 23: `memory_limit` covers what connections hold unwritten. Two
/// subscribers that stop reading hold up to `client_out_buffer_bytes`
/// each (beyond what the kernel's socket buffers take); with both over
/// `memory_limit` together, an MQTT 5 QoS 1 PUBLISH is refused with 0x97
/// although no message is stored. Once they read, it is accepted again.
/// (Before, only stored messages counted: accepted.)
#[test]
fn memory_limit_counts_what_stalled_connections_hold() {
    if is_mosquitto() {
        return; // client_out_buffer_bytes is midge's
    }
    const OUT_BYTES: usize = 768 << 10;
    let b =
        Broker::start(&format!("persistence false\nmemory_limit {}\nclient_out_buffer_bytes {OUT_BYTES}\n", 1 << 20));
    let mut stalled: Vec<Raw> = (0..2)
        .map(|i| {
            let mut r = Raw::connect_v311(b.port, &format!("stalled{i}"), true, 600);
            r.send(&subscribe_v311(1, "t/#", 0));
            assert_eq!(r.expect_packet(T).kind(), 9, "SUBACK");
            r
        })
        .collect();
    let (mut publisher, _) = Raw::connect_v5(b.port, "publisher", true, 60, &[]);
    // 12 MiB to each: more than the kernel's buffers take, so both
    // connections fill their output bound.
    let burst: Vec<u8> = (0..1_024).flat_map(|_| common::publish_v5("t/x", 0, 0, &[b'x'; 1024])).collect();
    for _ in 0..12 {
        publisher.send(&burst);
        ping(&mut publisher);
    }
    let code = |publisher: &mut Raw, pid: u16| {
        // Larger than the room QoS 0 deliveries leave below the limit.
        publisher.send(&common::publish_v5("other", 1, pid, &[b'q'; 8192]));
        loop {
            let p = publisher.expect_packet(T);
            if p.kind() == 4 {
                assert_eq!(p.body[..2], pid.to_be_bytes());
                return p.body.get(2).copied().unwrap_or(0);
            }
        }
    };
    assert_eq!(code(&mut publisher, 1), 0x97, "QoS 1 PUBLISH over memory_limit");
    let log = b.log();
    assert!(log.contains("Denied PUBLISH from publisher to other (memory_limit reached)"), "{log}");
    for r in &mut stalled {
        drain(r, Duration::from_secs(1));
    }
    assert!(code(&mut publisher, 2) < 0x80, "refused after the subscribers read");
}
