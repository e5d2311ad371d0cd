//! Issue 23: a full disk degrades midge, it never stops it. On a small
//! tmpfs (mounted here; the test needs root, as the harness runs), a
//! single node is filled with retained QoS 1 messages until it answers
//! 0x97 Quota exceeded; QoS 0 publish/subscribe and PINGs still work, new
//! durable changes are refused (CONNECT, SUBSCRIBE, QoS 1 PUBLISH), the
//! state shows on $SYS and /health; once a file in the tmpfs is deleted,
//! QoS 1 publishes succeed again without a restart. Before, the node
//! stopped with exit code 70 ("data store I/O error") at the first write
//! that found the disk full.
//!
//! midge only: Mosquitto writes its persistence file at autosave time
//! (and at exit) and keeps serving from memory when that fails, so it has
//! no durable write to refuse.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{free_port, is_mosquitto, packet, publish_v311, subscribe_v311, tempdir, Broker, Raw};
use common::{mqtt_str, ReadOutcome};

const T: Duration = Duration::from_secs(5);

/// A tmpfs mounted for the test, unmounted on drop (after the broker,
/// declared later, has been killed).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed: {st} (the test needs root)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: detached at once even while a broker still has it open
        // (a panicking test drops this before the brokers).
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// v5 PUBLISH, retained, QoS 1, without properties.
fn publish_retained_v5(topic: &str, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    body.extend(pid.to_be_bytes());
    body.push(0);
    body.extend(payload);
    packet(0x33, &body)
}

/// The reason code of the PUBACK for `pid` (0 when the body has none), if
/// it comes within `within`. PUBACKs for other ids go to `others`.
fn puback_reason(r: &mut Raw, pid: u16, within: Duration, others: &mut Vec<(u16, u8)>) -> Option<u8> {
    let end = Instant::now() + within;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match r.read(left) {
            ReadOutcome::Packet(p) if p.kind() == 4 => {
                let (id, code) = (u16::from_be_bytes([p.body[0], p.body[1]]), p.body.get(2).copied().unwrap_or(0));
                if id == pid {
                    return Some(code);
                }
                others.push((id, code));
            }
            ReadOutcome::Packet(_) => {}
            ReadOutcome::Timeout => return None,
            ReadOutcome::Closed => panic!("the broker closed the publisher (stopped?)"),
        }
    }
    None
}

/// The next PUBLISH to `topic` that `r` receives: its payload.
fn next_on(r: &mut Raw, topic: &str, within: Duration) -> Option<String> {
    let end = Instant::now() + within;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match r.read(left) {
            ReadOutcome::Packet(p) if p.kind() == 3 => {
                let tlen = u16::from_be_bytes([p.body[0], p.body[1]]) as usize;
                if &p.body[2..2 + tlen] == topic.as_bytes() {
                    return Some(String::from_utf8_lossy(&p.body[2 + tlen..]).into_owned());
                }
            }
            ReadOutcome::Packet(_) => {}
            ReadOutcome::Timeout => return None,
            ReadOutcome::Closed => panic!("the broker closed the watcher"),
        }
    }
    None
}

/// Waits until `$SYS/broker/store/full` says `want`.
fn store_full_becomes(watcher: &mut Raw, want: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if next_on(watcher, "$SYS/broker/store/full", Duration::from_secs(3)).as_deref() == Some(want) {
            return;
        }
    }
    panic!("$SYS/broker/store/full never said {want}");
}

fn health_json(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("health connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_full_disk_refuses_durable_changes_serves_the_rest_and_resumes_by_itself() {
    if is_mosquitto() {
        return; // see the top of the file
    }
    let tmp = tempdir();
    let disk = tmp.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "8m");
    // Room to give back later.
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();
    let health = free_port();
    let mut b = Broker::start(&format!(
        "persistence_location {}\nsys_interval 1\nhealth_listener {health} 127.0.0.1\n",
        disk.display()
    ));

    // Subscribed before the disk fills: a SUBSCRIBE is a durable change.
    let mut watcher = Raw::connect_v311(b.port, "watcher", true, 60);
    watcher.send(&subscribe_v311(1, "live/#", 0));
    watcher.send(&subscribe_v311(2, "$SYS/broker/store/full", 0));
    let mut subacks = 0;
    while subacks < 2 {
        subacks += usize::from(watcher.expect_packet(T).kind() == 9);
    }
    let mut old311 = Raw::connect_v311(b.port, "old311", true, 60);

    // Fill the disk with retained QoS 1 messages until midge says 0x97.
    // The message whose write found the disk full is not acknowledged
    // yet (nor lost): its write waits for room; the next is refused.
    let (mut publisher, _) = Raw::connect_v5(b.port, "publisher", true, 60, &[]);
    let payload = vec![b'x'; 16 << 10];
    let mut late_acks = Vec::new();
    let mut waiting = None;
    let mut refused_at = None;
    for i in 1..=2_000u16 {
        publisher.send(&publish_retained_v5(&format!("fill/{i}"), i, &payload));
        match puback_reason(&mut publisher, i, Duration::from_secs(2), &mut late_acks) {
            Some(0x97) => {
                refused_at = Some(i);
                break;
            }
            Some(code) => assert!(code == 0 || code == 0x10, "PUBACK {i}: reason {code:#04x}"),
            None => {
                assert!(waiting.is_none(), "two PUBACKs missing");
                waiting = Some(i);
            }
        }
    }
    let refused_at = refused_at.expect("an 8 MiB disk took 2,000 messages of 16 KiB");
    eprintln!("the disk was full after {} retained messages of 16 KiB; waiting: {waiting:?}", refused_at - 1);
    assert!(b.alive(), "midge stopped:\n{}", b.log());

    // The state shows on $SYS (published once, when it changes).
    store_full_becomes(&mut watcher, "1");

    // What needs no durable write still works: QoS 0 both ways, PINGs.
    publisher.send(&common::publish_v5("live/a", 0, 0, b"still here"));
    assert_eq!(next_on(&mut watcher, "live/a", T).as_deref(), Some("still here"));
    publisher.send(&[0xC0, 0x00]);
    assert_eq!(publisher.expect_packet(T).header, 0xD0, "PINGRESP");
    // The state shows on /health.
    let h = health_json(health);
    assert!(h.contains("\"store_full\":true"), "{h}");
    // New durable changes are refused, and the connections stay.
    let mut late = Raw::connect(b.port);
    late.send(&common::connect_v5("late", true, 60, &[]));
    let ack = late.expect_packet(T);
    assert_eq!((ack.header, ack.body[1]), (0x20, 0x97), "CONNACK of a new session: {ack:02x?}");
    let mut late311 = Raw::connect(b.port);
    late311.send(&common::connect_v311("late311", true, 60));
    let ack = late311.expect_packet(T);
    assert_eq!((ack.header, ack.body[1]), (0x20, 0x03), "3.1.1 CONNACK: {ack:02x?}");
    watcher.send(&subscribe_v311(3, "more/#", 0));
    let suback = loop {
        let p = watcher.expect_packet(T);
        if p.kind() == 9 {
            break p;
        }
    };
    assert_eq!(suback.body, vec![0x00, 0x03, 0x80], "SUBACK while full");
    // A 3.1.1 client's QoS 1 publish is not acknowledged: it is
    // disconnected and keeps the message to send again.
    old311.send(&publish_v311("fill/old", 1, true, 9, b"later"));
    old311.expect_closed(T);
    assert!(b.alive(), "midge stopped:\n{}", b.log());

    // Room again: QoS 1 publishes succeed, without a restart.
    free_up(&filler);
    let end = Instant::now() + Duration::from_secs(15);
    let mut pid = 3000u16;
    loop {
        pid += 1;
        publisher.send(&publish_retained_v5("fill/after", pid, b"room again"));
        let code = puback_reason(&mut publisher, pid, T, &mut late_acks).expect("a PUBACK");
        if code < 0x80 {
            break;
        }
        assert!(Instant::now() < end, "QoS 1 still refused ({code:#04x}) 15 s after space returned");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The message whose write waited is acknowledged now.
    if let Some(w) = waiting {
        assert!(late_acks.iter().any(|&(id, code)| id == w && code < 0x80), "no PUBACK for {w}: {late_acks:?}");
    }
    store_full_becomes(&mut watcher, "0");
    assert!(health_json(health).contains("\"store_full\":false"));
    // A new session again, and the retained message it stored.
    let mut reader = Raw::connect_v311(b.port, "reader", true, 60);
    reader.send(&subscribe_v311(1, "fill/after", 0));
    assert_eq!(next_on(&mut reader, "fill/after", T).as_deref(), Some("room again"));
    assert!(b.alive(), "midge stopped");
    let log = b.log();
    assert_eq!(log.matches("The data store is full").count(), 1, "logged once per change:\n{log}");
    assert_eq!(log.matches("The data store has room again").count(), 1, "{log}");
}

/// Stretch of issue 23, in a cluster: the leader whose disk fills hands
/// the lead to a caught-up follower (the others go on committing), stays
/// up as a follower, and takes writes again once there is room.
#[test]
fn a_leader_whose_disk_fills_hands_the_lead_to_a_follower() {
    if is_mosquitto() {
        return; // a midge cluster
    }
    let mut c = Cluster::prepare("redirect", "cluster_preferred_leader 1\n");
    let disk = c.dir.path().join("node1");
    let _tmpfs = Tmpfs::mount(&disk, "8m");
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();
    for i in 0..3 {
        c.spawn(i);
    }
    let end = Instant::now() + Duration::from_secs(20);
    while c.leader(Duration::from_secs(1)) != Some(0) {
        assert!(Instant::now() < end, "node 1 never led\n{}", c.logs());
    }
    let (mut publisher, _) = Raw::connect_v5(c.mqtt[0], "publisher", true, 60, &[]);
    let payload = vec![b'x'; 16 << 10];
    let mut others = Vec::new();
    let mut ended = false;
    for i in 1..=2_000u16 {
        publisher.send(&publish_retained_v5(&format!("fill/{i}"), i, &payload));
        match publisher.read(Duration::from_secs(3)) {
            ReadOutcome::Packet(p) if p.kind() == 4 => {
                let code = p.body.get(2).copied().unwrap_or(0);
                others.push(code);
                if code == 0x97 {
                    ended = true;
                    break;
                }
            }
            // DISCONNECT 0x9C (use another server) or the close: the lead moved.
            ReadOutcome::Packet(p) if p.kind() == 14 => {
                ended = true;
                break;
            }
            ReadOutcome::Packet(_) => {}
            ReadOutcome::Closed | ReadOutcome::Timeout => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "node 1's 8 MiB disk took 2,000 messages of 16 KiB");
    eprintln!("{} PUBACKs from node 1, the last {:#04x?}", others.len(), others.last());
    let end = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        match c.leader(Duration::from_secs(1)) {
            Some(l) if l != 0 => break l,
            _ => assert!(Instant::now() < end, "node 1 kept the lead with a full disk\n{}", c.logs()),
        }
    };
    eprintln!("node {} leads now", leader + 1);
    let alive = |c: &Cluster| c.pid(0).is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
    assert!(alive(&c), "node 1 stopped\n{}", c.log(0));
    assert!(c.log(0).contains("The data store is full: handing leadership to node"), "{}", c.logs());
    // The new leader commits without node 1.
    let (mut p2, _) = Raw::connect_v5(c.mqtt[leader], "publisher2", true, 60, &[]);
    p2.send(&publish_retained_v5("after/lead", 1, b"moved"));
    let mut none = Vec::new();
    let code = puback_reason(&mut p2, 1, T, &mut none).expect("a PUBACK from the new leader");
    assert!(code < 0x80, "new leader refused: {code:#04x}");
    // Room again on node 1: it writes again (and catches up).
    free_up(&filler);
    let end = Instant::now() + Duration::from_secs(15);
    while !health_json(c.health[0]).contains("\"store_full\":false") {
        assert!(Instant::now() < end, "node 1 still full\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(alive(&c), "node 1 stopped\n{}", c.log(0));
    assert!(c.log(0).contains("The data store has room again"), "{}", c.logs());
}

/// `persistence_min_free`: a reserve. Below it midge refuses durable
/// changes as on a full disk, from the start too, while the disk still has
/// room; above it again, it takes them without a restart.
#[test]
fn persistence_min_free_keeps_a_reserve_from_the_start() {
    if is_mosquitto() {
        return; // a midge key
    }
    let tmp = tempdir();
    let disk = tmp.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "16m");
    // 10 MiB taken: about 6 MiB free, below the 8 MiB reserve.
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; 10 << 20]).unwrap();
    let health = free_port();
    // Not waiting for a CONNECT to be accepted: none is, at first.
    let mut b = Broker::start_opts(
        tempdir(),
        &format!(
            "persistence_location {}\npersistence_min_free 8388608\nsys_interval 1\nhealth_listener {health} 127.0.0.1\n",
            disk.display()
        ),
        false,
    );
    // Started below the reserve: clients are told why at once.
    let mut early = Raw::connect(b.port);
    early.send(&common::connect_v5("early", true, 60, &[]));
    let ack = early.expect_packet(T);
    assert_eq!((ack.header, ack.body[1]), (0x20, 0x97), "CONNACK below the reserve: {ack:02x?}");
    assert!(health_json(health).contains("\"store_full\":true"));
    assert!(b.log().contains("below persistence_min_free (8388608)"), "{}", b.log());

    // Room again: new sessions within a few seconds (checked once a second).
    free_up(&filler);
    let end = Instant::now() + Duration::from_secs(10);
    let (mut publisher, mut watcher) = loop {
        let mut r = Raw::connect(b.port);
        r.send(&common::connect_v5("publisher", true, 60, &[]));
        let ack = r.expect_packet(T);
        if ack.body[1] == 0 {
            break (r, Raw::connect_v311(b.port, "watcher", true, 60));
        }
        assert!(Instant::now() < end, "still refused ({:#04x}) 10 s after space returned", ack.body[1]);
        std::thread::sleep(Duration::from_millis(200));
    };
    watcher.send(&subscribe_v311(1, "live/#", 0));
    watcher.send(&subscribe_v311(2, "$SYS/broker/store/full", 0));
    store_full_becomes(&mut watcher, "0");

    // Below the reserve again while clients are connected: QoS 1 refused
    // (0x97), QoS 0 still delivered.
    std::fs::write(&filler, vec![0u8; 10 << 20]).unwrap();
    store_full_becomes(&mut watcher, "1");
    let mut others = Vec::new();
    publisher.send(&publish_retained_v5("kept/a", 1, b"refused"));
    assert_eq!(puback_reason(&mut publisher, 1, T, &mut others), Some(0x97));
    publisher.send(&common::publish_v5("live/a", 0, 0, b"qos 0 goes on"));
    assert_eq!(next_on(&mut watcher, "live/a", T).as_deref(), Some("qos 0 goes on"));

    free_up(&filler);
    store_full_becomes(&mut watcher, "0");
    publisher.send(&publish_retained_v5("kept/a", 2, b"accepted"));
    // 0x10: accepted, no subscriber matched.
    assert_eq!(puback_reason(&mut publisher, 2, T, &mut others), Some(0x10));
    assert!(b.alive(), "midge stopped:\n{}", b.log());
    let log = b.log();
    assert_eq!(log.matches("below persistence_min_free").count(), 2, "logged once per change:\n{log}");
    assert_eq!(log.matches("free again (persistence_min_free").count(), 2, "{log}");
}

/// Deletes the filler and gives its room back at once. Truncating first
/// matters: a child process that another test thread forks holds a copy
/// of every open descriptor until its exec, and a deleted file keeps its
/// pages while any descriptor is open (CI once saw the room come back
/// only after `install_snapshot` had been retried on it).
fn free_up(path: &Path) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(0).unwrap();
    std::fs::remove_file(path).unwrap();
}

/// Fills `path` until the file system refuses (ENOSPC).
fn fill_up(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "filling {}: {e}", path.display());
            return;
        }
    }
}

/// The store's writes outside the log (a leader's snapshot installed by a
/// follower, a membership change's conf state) meet a full disk as the
/// log's appends do: `StoreError::Full`, nothing half written, and the
/// store takes the same write once there is room (before, the store
/// refused every later write and the node stopped with exit status 70).
#[test]
fn snapshot_and_membership_writes_wait_for_room() {
    use midge::store::{RaftLog, RedbLog, StoreError, StoreIdentity};
    use raft::eraftpb::{ConfState, Snapshot};
    use raft::Storage;
    if is_mosquitto() {
        return; // midge's store
    }
    let tmp = tempdir();
    let disk = tmp.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "4m");
    let id = StoreIdentity { cluster_id: 0, node_id: 1 };
    let cs = |voters: &[u64]| ConfState { voters: voters.to_vec(), ..Default::default() };
    let log = RedbLog::open(&disk, id, true).unwrap();
    log.set_conf_state(&cs(&[1])).unwrap();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 2;
    snap.mut_metadata().set_conf_state(cs(&[1, 2]));
    snap.data = vec![7u8; 1 << 20].into();

    let filler = disk.join("filler");
    fill_up(&filler);
    match log.install_snapshot(&snap) {
        Err(StoreError::Full(why)) => assert!(why.contains("No space left"), "{why}"),
        other => panic!("install_snapshot on a full disk: {other:?}"),
    }
    // A small write may fit in the file's free pages, or not: either way
    // the store is not broken by it.
    match log.set_conf_state(&cs(&[1, 2, 3])) {
        Ok(()) | Err(StoreError::Full(_)) => {}
        Err(e) => panic!("set_conf_state on a full disk: {e}"),
    }

    free_up(&filler);
    log.install_snapshot(&snap).unwrap();
    log.set_conf_state(&cs(&[1, 2, 3])).unwrap();
    drop(log);
    let log = RedbLog::open(&disk, id, true).unwrap();
    let st = log.initial_state().unwrap();
    assert_eq!(st.conf_state, cs(&[1, 2, 3]));
    assert_eq!(st.hard_state.commit, 20);
    let (index, term, _, data) = log.latest_snapshot().unwrap().expect("a snapshot");
    assert_eq!((index, term, data.len()), (20, 2, 1 << 20));
}
