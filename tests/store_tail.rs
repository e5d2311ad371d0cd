//! The raft log's segment files with real processes: what mosquitto_pub
//! had acknowledged survives kill -9 and a torn write at the end of the
//! log (a power loss during an append: a record cut short, or one whose
//! bytes did not all reach the disk), which midge cuts off at start and
//! says so. midge's own store format: nothing to compare with Mosquitto.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::mosquitto_sub::{self, Sub};
use common::{is_mosquitto, tempdir, Broker};

const MESSAGES: usize = 40;

fn newest_segment(data: &Path) -> PathBuf {
    let mut all: Vec<PathBuf> = std::fs::read_dir(data.join("raft-log")).unwrap().map(|e| e.unwrap().path()).collect();
    all.sort();
    all.pop().expect("a log segment")
}

/// Where a segment's records end (zeros follow in a preallocated one).
fn records_end(segment: &[u8]) -> usize {
    let scanned = midge::store::segments::scan(segment);
    assert_eq!(scanned.torn, None, "an intact segment");
    scanned.end as usize
}

/// Starts midge on `data`, publishes `MESSAGES` retained QoS 1 messages
/// with mosquitto_pub (each acknowledged before the next), kills it with
/// SIGKILL; returns the broker (dead) for its log.
fn publish_then_kill(data: &Path) -> Broker {
    let b = Broker::start(&format!("persistence true\npersistence_location {}\n", data.display()));
    for i in 0..MESSAGES {
        mosquitto_sub::publish_ok(
            b.port,
            "mqttv311",
            &["-t", &format!("t/{i}"), "-q", "1", "-r", "-m", &format!("m{i}")],
        );
    }
    let st = Command::new("kill").args(["-KILL", &b.pid().to_string()]).status().unwrap();
    assert!(st.success());
    b
}

fn retained_after_restart(data: &Path) -> (Vec<String>, String) {
    let b = Broker::start(&format!("persistence true\npersistence_location {}\n", data.display()));
    let sub = Sub::start(b.port, "mqttv311", &["-t", "t/#", "-q", "1", "-v", "-C", &MESSAGES.to_string(), "-W", "10"]);
    let out = sub.finish();
    let mut got = out.messages;
    got.sort();
    (got, b.log())
}

fn expected() -> Vec<String> {
    let mut all: Vec<String> = (0..MESSAGES).map(|i| format!("t/{i} m{i}")).collect();
    all.sort();
    all
}

#[test]
fn a_torn_append_is_cut_off_at_start_and_nothing_acknowledged_is_lost() {
    if is_mosquitto() {
        eprintln!("skipped: midge's own log segments");
        return;
    }
    // Two damages of the last append: cut short, and whole but with a
    // byte that did not reach the disk.
    for damage in ["cut short", "bit flipped"] {
        let data = tempdir();
        drop(publish_then_kill(data.path()));
        let seg = newest_segment(data.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        // The damage goes where the records end (a segment is
        // preallocated: zeros follow them).
        let clean_len = records_end(&bytes);
        bytes.truncate(clean_len);
        // A record header claiming 600 bytes, and 100 of them; or a whole
        // record of 100 bytes with its CRC off by one bit.
        let payload = vec![0x42u8; 100];
        let crc = crc32fast::hash(&[[1u8].as_slice(), &payload].concat());
        match damage {
            "cut short" => bytes.extend(600u32.to_le_bytes()),
            _ => bytes.extend(100u32.to_le_bytes()),
        }
        bytes.extend((crc ^ u32::from(damage != "cut short")).to_le_bytes());
        bytes.push(1);
        bytes.extend(&payload);
        std::fs::write(&seg, &bytes).unwrap();

        let (got, log) = retained_after_restart(data.path());
        assert_eq!(got, expected(), "{damage}: every acknowledged retained message is back\n{log}");
        assert!(
            log.contains("ends in a write that did not finish") && log.contains("cutting off its last 109 bytes"),
            "{damage}: the cut is logged with its size:\n{log}"
        );
        // The restarted node appended after the cut: the damaged bytes are
        // gone from the file, its first write starts where they began.
        let now = std::fs::read(&seg).unwrap();
        assert!(records_end(&now) > clean_len, "{damage}: the node wrote after the cut");
        assert_ne!(&now[clean_len..clean_len + 4], &bytes[clean_len..clean_len + 4], "{damage}: overwritten");
    }
}

#[test]
fn damage_inside_the_log_refuses_to_start_and_names_the_file() {
    if is_mosquitto() {
        eprintln!("skipped: midge's own log segments");
        return;
    }
    let data = tempdir();
    drop(publish_then_kill(data.path()));
    // A second, newer segment after the damaged one: the damage is then
    // not the end of the log, and starting would drop acknowledged data.
    let seg = newest_segment(data.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = records_end(&bytes) - 5;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap();
    let seq: u64 = name.trim_end_matches(".seg").parse().unwrap();
    let mut newer = b"MIDGELOG".to_vec();
    newer.extend(1u32.to_le_bytes());
    newer.extend(0u32.to_le_bytes());
    newer.extend((seq + 1).to_le_bytes());
    std::fs::write(data.path().join("raft-log").join(format!("{:020}.seg", seq + 1)), &newer).unwrap();

    let conf = data.path().join("midge.conf");
    std::fs::write(
        &conf,
        format!("listener {} 127.0.0.1\npersistence_location {}\n", common::free_port(), data.path().display()),
    )
    .unwrap();
    let out = Command::new(common::midge_bin()).arg("-c").arg(&conf).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(name) && err.contains("is damaged at byte") && err.contains("only the newest segment"),
        "{err}"
    );
}

/// After a burst the store shrinks back by itself: a node whose log holds
/// megabytes and that has been idle for 10 s takes a snapshot, and the
/// segments it covers are deleted.
#[test]
fn the_log_shrinks_back_after_a_burst() {
    if is_mosquitto() {
        eprintln!("skipped: midge's own log segments");
        return;
    }
    let data = tempdir();
    let b = Broker::start(&format!("persistence true\npersistence_location {}\n", data.path().display()));
    // 6,000 lines of 1 KiB, each a QoS 1 PUBLISH (6 MiB of log).
    let lines: String = (0..6000).map(|i| format!("{i:04}{}\n", "x".repeat(1020))).collect();
    let input = data.path().join("lines");
    std::fs::write(&input, lines).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("mosquitto_pub -h 127.0.0.1 -p {} -q 1 -t burst -l < {}", b.port, input.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let size = || -> u64 {
        std::fs::read_dir(data.path().join("raft-log")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    };
    let after_burst = size();
    assert!(after_burst > 6_000_000, "the burst is in the log: {after_burst} bytes");
    // Idle: within 10 s and a tick the snapshot frees the segments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size() > after_burst / 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let now = size();
    assert!(now <= after_burst / 2, "still {now} of {after_burst} bytes after 20 s idle\n{}", b.log());
    assert!(b.log().contains("older log segment(s): snapshot at index"), "{}", b.log());
}
