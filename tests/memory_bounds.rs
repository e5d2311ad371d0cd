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
/// most `client_out_buffer_bytes` held for it; the QoS 0 retained messages
/// past the bound are dropped, and the drop is logged. (Before, every
/// replay went into the output buffer: ten times 2 MB here.)
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
    } else {
        // midge serves the ten SUBSCRIBEs of one read before writing: the
        // bound's worth of replay, nothing from the other nine.
        assert!(publishes as u64 <= OUT_BYTES / PAYLOAD as u64, "{publishes} PUBLISHes: more than the bound");
    }
    let log = b.log();
    assert!(log.contains("Outgoing messages are being dropped for client stalled"), "{log}");
    drop(publisher);
}
