//! `RedbLog` alone: what open refuses (foreign, damaged, old or another
//! node's files), a real crash of a writing process, and the golden file
//! of store format version 1.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType};
use raft::Storage;
use redb::{ReadableDatabase, TableDefinition};

use super::{conf_state, ctx, entries, entry, hard_state, is_compacted, size, XorShift, ID, LOG, META, SNAPSHOT};
use crate::store::redb_log::STORE_FILE_NAME;
use crate::store::segments::{self, SEGMENT_DIR};
use crate::store::{RaftLog, RedbLog, StoreError, StoreIdentity};

fn corrupt_reason(result: Result<RedbLog, StoreError>) -> String {
    match result {
        Err(StoreError::Corrupt { reason, .. }) => reason,
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the store opened"),
    }
}

fn store_with_some_content(dir: &Path) {
    let log = RedbLog::open(dir, ID, true).unwrap();
    log.set_conf_state(&conf_state(&[1, 2, 3], &[])).unwrap();
    for i in 1..=40u64 {
        let mut e = entry(i, 1 + i / 10);
        e.data = vec![i as u8; 2000].into();
        log.persist(&[e], Some(&hard_state(1 + i / 10, 1, i - 1))).unwrap();
    }
    log.save_snapshot(30, &conf_state(&[1, 2, 3], &[]), vec![7u8; 50_000], 5).unwrap();
}

fn with_raw_db(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join(STORE_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

#[test]
fn another_nodes_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbLog::open(dir.path(), ID, true).unwrap());
    let other_node = StoreIdentity { cluster_id: 7, node_id: 2 };
    let reason = corrupt_reason(RedbLog::open(dir.path(), other_node, true));
    assert!(reason.contains("belongs to cluster 7 node 1"), "{reason}");
    assert!(reason.contains("this node is cluster 7 node 2"), "{reason}");
    let other_cluster = StoreIdentity { cluster_id: 8, node_id: 1 };
    let reason = corrupt_reason(RedbLog::open(dir.path(), other_cluster, true));
    assert!(reason.contains("cluster 7 node 1") && reason.contains("cluster 8 node 1"), "{reason}");
    // The rightful owner still opens it.
    RedbLog::open(dir.path(), ID, true).unwrap();
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbLog::open(dir.path(), ID, true).unwrap());
    with_raw_db(dir.path(), |txn| {
        txn.open_table(META).unwrap().insert("format_version", 3u32.to_le_bytes().as_slice()).unwrap();
    });
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("format version 3") && reason.contains("format versions 1 and 2"), "{reason}");
}

#[test]
fn truncated_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    let file = dir.path().join(STORE_FILE_NAME);
    let len = std::fs::metadata(&file).unwrap().len();
    for cut in [len / 2, len / 4, len - 1, 4096, 100] {
        let damaged = tempfile::tempdir().unwrap();
        std::fs::copy(&file, damaged.path().join(STORE_FILE_NAME)).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(damaged.path().join(STORE_FILE_NAME)).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let reason = corrupt_reason(RedbLog::open(damaged.path(), ID, true));
        assert!(!reason.is_empty(), "cut at {cut} of {len}");
    }
}

#[test]
fn garbage_file_is_corrupt() {
    for garbage in [b"this is not a database".to_vec(), {
        let mut rng = XorShift(99);
        (0..200_000).map(|_| rng.next() as u8).collect()
    }] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE_NAME), &garbage).unwrap();
        corrupt_reason(RedbLog::open(dir.path(), ID, true));
    }
}

#[test]
fn damaged_pages_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    let file = dir.path().join(STORE_FILE_NAME);
    let clean = std::fs::read(&file).unwrap();
    // Flip a byte in every 4 KiB page, the header's included, one page at a time.
    let mut rng = XorShift(5);
    for page in 0..clean.len() / 4096 {
        let mut bytes = clean.clone();
        let at = page * 4096 + rng.below(4096) as usize;
        bytes[at] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        // Either redb or our checks notice, or the byte was in free space;
        // what must never happen is a panic or wrong content.
        if let Ok(log) = RedbLog::open(dir.path(), ID, true) {
            assert_eq!(log.last_index().unwrap(), 40, "page {page}");
            assert_eq!(log.entries(26, 41, None, ctx()).unwrap().len(), 15, "page {page}");
        }
    }
}

#[test]
fn empty_file_is_refused() {
    // A store truncated to 0 bytes used to start as a fresh, empty store:
    // every session and retained message gone, logged at INFO only.
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    std::fs::write(dir.path().join(STORE_FILE_NAME), b"").unwrap();
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("the file is empty (0 bytes)") && reason.contains("(or delete them)"), "{reason}");
    // Nothing was written: still empty, still refused.
    assert_eq!(std::fs::metadata(dir.path().join(STORE_FILE_NAME)).unwrap().len(), 0);
    corrupt_reason(RedbLog::open(dir.path(), ID, true));
    // The file alone deleted: the log's segments without it are refused.
    std::fs::remove_file(dir.path().join(STORE_FILE_NAME)).unwrap();
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("holds log segments but the store file is new"), "{reason}");
    // Both deleted, as the message says: a fresh store.
    std::fs::remove_dir_all(dir.path().join(SEGMENT_DIR)).unwrap();
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    assert_eq!(log.last_index().unwrap(), 0);
}

#[test]
fn redb_file_without_tables_is_a_fresh_store() {
    // What a crash between redb creating the file and our first commit leaves.
    let dir = tempfile::tempdir().unwrap();
    drop(redb::Database::create(dir.path().join(STORE_FILE_NAME)).unwrap());
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    assert_eq!(log.last_index().unwrap(), 0);
    drop(log);
    RedbLog::open(dir.path(), ID, true).unwrap();
}

#[test]
fn missing_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    drop(RedbLog::open(&nested, ID, true).unwrap());
    assert!(nested.join(STORE_FILE_NAME).exists());
}

#[test]
fn unusable_directory_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    match RedbLog::open(&file, ID, true) {
        Err(StoreError::Open { .. }) => {}
        Err(other) => panic!("expected Open, got {other}"),
        Ok(_) => panic!("opened a store inside a file"),
    }
}

#[test]
fn foreign_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(STORE_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(TableDefinition::<&str, u64>::new("someone else's")).unwrap().insert("k", 1).unwrap();
    txn.commit().unwrap();
    drop(db);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("not a midge raft store"), "{reason}");

    // A table named like ours but of another type.
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join(STORE_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(TableDefinition::<&str, u64>::new("meta")).unwrap().insert("format_version", 1).unwrap();
    txn.commit().unwrap();
    drop(db);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("meta"), "{reason}");
}

/// Appends records to the newest segment, as a write of midge would.
/// Appends records where the newest segment's records end (over the
/// zeros of its preallocated rest).
fn append_raw(dir: &Path, records: &[(u8, Vec<u8>)]) {
    let newest = newest_segment(dir);
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes.truncate(segments::scan(&bytes).end as usize);
    for (kind, payload) in records {
        segments::encode_record(*kind, payload, &mut bytes);
    }
    std::fs::write(&newest, bytes).unwrap();
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir.join(SEGMENT_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    all.sort();
    all
}

fn newest_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().expect("a segment")
}

fn entry_bytes(index: u64, term: u64) -> Vec<u8> {
    let mut e = entry(index, term);
    e.index = index;
    e.write_to_bytes().unwrap()
}

#[test]
fn a_hole_in_the_log_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    append_raw(dir.path(), &[(segments::KIND_ENTRY, entry_bytes(42, 5))]);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("log entry 41 is missing"), "{reason}");
}

#[test]
fn a_commit_past_the_log_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    // In the snapshot's record, and in a hard state appended to the log.
    with_raw_db(dir.path(), |txn| {
        let hs = hard_state(5, 1, 41).write_to_bytes().unwrap();
        txn.open_table(META).unwrap().insert("hard_state", hs.as_slice()).unwrap();
    });
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("commit 41 is past the last log index 40"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    append_raw(dir.path(), &[(segments::KIND_HARD_STATE, hard_state(5, 1, 45).write_to_bytes().unwrap())]);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("commit 45 is past the last log index 40"), "{reason}");
}

#[test]
fn a_snapshot_that_does_not_meet_the_log_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    // Truncated at 25, snapshot at 30; claim the log was truncated at 31.
    with_raw_db(dir.path(), |txn| {
        let mut truncated = 31u64.to_le_bytes().to_vec();
        truncated.extend(4u64.to_le_bytes());
        txn.open_table(META).unwrap().insert("log_truncated", truncated.as_slice()).unwrap();
    });
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("truncated at 31 but the latest snapshot is only at 30"), "{reason}");
}

#[test]
fn absurd_indexes_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    append_raw(dir.path(), &[(segments::KIND_ENTRY, entry_bytes(u64::MAX, 9))]);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("out of range"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    with_raw_db(dir.path(), |txn| {
        let mut truncated = u64::MAX.to_le_bytes().to_vec();
        truncated.extend(1u64.to_le_bytes());
        txn.open_table(META).unwrap().insert("log_truncated", truncated.as_slice()).unwrap();
    });
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("out of range"), "{reason}");
}

#[test]
fn undecodable_records_are_corrupt() {
    // Whole records (their checksums match) that do not decode: not a torn
    // write but a bad store.
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    append_raw(dir.path(), &[(segments::KIND_ENTRY, vec![0xff, 0xff, 0xff])]);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("does not decode"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    append_raw(dir.path(), &[(segments::KIND_HARD_STATE, vec![0xff, 0xff, 0xff])]);
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("hard state") && reason.contains("does not decode"), "{reason}");
}

#[test]
fn a_torn_write_at_the_end_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    let seg = newest_segment(dir.path());
    // Preallocated: the records, then zeros up to the segment's size.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), segments::SEGMENT_BYTES);
    let mut clean = std::fs::read(&seg).unwrap();
    let whole = segments::scan(&clean).end;
    clean.truncate(whole as usize);
    // A write of entry 41 that did not finish: cut anywhere inside it, or
    // complete but with a damaged byte, or followed by zeros.
    let mut e41 = entry(41, 5);
    e41.data = vec![41u8; 500].into();
    let mut record = Vec::new();
    segments::encode_record(segments::KIND_ENTRY, &e41.write_to_bytes().unwrap(), &mut record);
    let mut cases: Vec<Vec<u8>> = vec![record[..1].to_vec(), record[..9].to_vec(), record[..300].to_vec()];
    cases.push(record[..record.len() - 1].to_vec());
    let mut flipped = record.clone();
    flipped[200] ^= 0x01;
    cases.push(flipped);
    let mut zeros = vec![0u8; 4096];
    zeros[..10].copy_from_slice(&[0; 10]);
    cases.push(zeros.clone());
    // The record whole, but a later page of it never written (zeros),
    // and the first page of a write never written while a later one was.
    let mut hole = record.clone();
    hole[100..300].fill(0);
    cases.push(hole);
    zeros[3000] = 0x42;
    cases.push(zeros);
    for (n, tail) in cases.iter().enumerate() {
        let mut bytes = clean.clone();
        bytes.extend_from_slice(tail);
        std::fs::write(&seg, &bytes).unwrap();
        let log = RedbLog::open(dir.path(), ID, true).unwrap_or_else(|e| panic!("case {n}: {e}"));
        assert_eq!(log.last_index().unwrap(), 40, "case {n}");
        let now = std::fs::read(&seg).unwrap();
        let scanned = segments::scan(&now);
        assert_eq!((scanned.end, scanned.torn), (whole, None), "case {n}: the torn tail is cut off");
        assert_eq!(now.len() as u64, segments::SEGMENT_BYTES, "case {n}: allocated again");
        assert!(now[whole as usize..].iter().all(|&b| b == 0), "case {n}: zeros after the records");
        assert_eq!(log.entries(26, 41, None, ctx()).unwrap().len(), 15, "case {n}");
    }
    // After the cut, appends go on where it was, and survive a reopen.
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    log.persist(&[e41.clone()], Some(&hard_state(5, 1, 40))).unwrap();
    drop(log);
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    assert_eq!(log.last_index().unwrap(), 41);
    assert_eq!(log.entries(41, 42, None, ctx()).unwrap(), vec![e41]);
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(5, 1, 40));
}

#[test]
fn damage_before_the_newest_segment_is_corrupt() {
    // Enough entries for a second segment.
    let dir = tempfile::tempdir().unwrap();
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    let big = segments::SEGMENT_BYTES / 4;
    for i in 1..=6u64 {
        let mut e = entry(i, 1);
        e.data = vec![i as u8; big as usize].into();
        log.persist(&[e], Some(&hard_state(1, 1, i - 1))).unwrap();
    }
    drop(log);
    let files = segment_files(dir.path());
    assert!(files.len() >= 2, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    std::fs::write(&files[0], &bytes).unwrap();
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("is damaged at byte") && reason.contains("only the newest segment"), "{reason}");
}

#[test]
fn snapshots_delete_the_segments_they_cover() {
    let dir = tempfile::tempdir().unwrap();
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    let payload = (segments::SEGMENT_BYTES / 8) as usize;
    let mut most = 0;
    for i in 1..=200u64 {
        let mut e = entry(i, 1);
        e.data = vec![i as u8; payload].into();
        log.persist(&[e], Some(&hard_state(1, 1, i - 1))).unwrap();
        if i % 20 == 0 {
            log.save_snapshot(i - 1, &conf_state(&[1], &[]), vec![1; 100], 2).unwrap();
        }
        most = most.max(segment_files(dir.path()).len());
    }
    // 200 entries of half a MiB: 25 segments written, never more than a
    // few on disk at once (20 entries between snapshots, 2 kept).
    assert!(most <= 5, "{most} segments at once");
    drop(log);
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    assert_eq!(log.last_index().unwrap(), 200);
    assert_eq!(log.first_index().unwrap(), 198);
    assert_eq!(log.entries(198, 201, None, ctx()).unwrap().len(), 3);
    // An installed snapshot replaces them all.
    let mut snap = raft::eraftpb::Snapshot::default();
    snap.mut_metadata().index = 500;
    snap.mut_metadata().term = 3;
    snap.mut_metadata().set_conf_state(conf_state(&[1], &[]));
    snap.data = vec![5; 10].into();
    log.install_snapshot(&snap).unwrap();
    assert!(segment_files(dir.path()).is_empty());
    log.persist(&[entry(501, 3)], Some(&hard_state(3, 1, 500))).unwrap();
    drop(log);
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (501, 501));
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn snapshot_data_must_match_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    store_with_some_content(dir.path());
    with_raw_db(dir.path(), |txn| {
        txn.open_table(SNAPSHOT).unwrap().insert(12, b"stray".as_slice()).unwrap();
    });
    let reason = corrupt_reason(RedbLog::open(dir.path(), ID, true));
    assert!(reason.contains("snapshot table holds data for indexes [12, 30]"), "{reason}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RedbLog::open(dir.path(), ID, true).unwrap();
    match RedbLog::open(dir.path(), ID, true) {
        Err(StoreError::Open { reason, .. }) => assert!(reason.contains("in use"), "{reason}"),
        Err(other) => panic!("expected Open, got {other}"),
        Ok(_) => panic!("opened the same file twice"),
    }
}

// ---------------------------------------------------------------------------
// RedbLog: a real crash. The test binary runs itself as a child that
// persists entries one by one, reporting each on stdout, and then aborts
// without closing the database; the parent reopens the directory.

const CRASH_DIR_VAR: &str = "MIDGE_STORE_CRASH_DIR";
const CRASH_DURABLE_VAR: &str = "MIDGE_STORE_CRASH_DURABLE";
const CRASH_ENTRIES: u64 = 30;

#[test]
#[ignore = "runs only as the child of crash_loses_nothing_acknowledged"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else { return };
    let durable = std::env::var(CRASH_DURABLE_VAR).as_deref() == Ok("1");
    let log = RedbLog::open(Path::new(&dir), ID, durable).unwrap();
    for i in 1..=CRASH_ENTRIES {
        log.persist(&[entry(i, 1)], Some(&hard_state(1, 1, i - 1))).unwrap();
        println!("acknowledged {i}");
    }
    std::process::abort();
}

fn crash_and_reopen(durable: bool) -> (tempfile::TempDir, RedbLog, u64) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "store::tests::redb_file::crash_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_VAR, dir.path())
        .env(CRASH_DURABLE_VAR, if durable { "1" } else { "0" })
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child should have aborted");
    let acknowledged = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("acknowledged ").and_then(|n| n.trim().parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    assert_eq!(acknowledged, CRASH_ENTRIES, "child output: {}", String::from_utf8_lossy(&out.stdout));
    let log = RedbLog::open(dir.path(), ID, durable).expect("a crashed store reopens");
    (dir, log, acknowledged)
}

#[test]
fn crash_loses_nothing_acknowledged() {
    let (_dir, log, acknowledged) = crash_and_reopen(true);
    assert_eq!(log.last_index().unwrap(), acknowledged);
    assert_eq!(log.entries(1, acknowledged + 1, None, ctx()).unwrap(), entries(1..=acknowledged, 1));
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(1, 1, acknowledged - 1));
}

#[test]
fn non_durable_crash_reopens_to_an_older_consistent_state() {
    let (_dir, log, acknowledged) = crash_and_reopen(false);
    let last = log.last_index().unwrap();
    assert!(last <= acknowledged);
    assert_eq!(log.entries(1, last + 1, None, ctx()).unwrap(), entries(1..=last, 1));
}

// ---------------------------------------------------------------------------
// Golden file of format version 1, written by redb 4.6.0 (file format v3).

const GOLDEN_ID: StoreIdentity = StoreIdentity { cluster_id: 0x6d69_6467_6501, node_id: 3 };

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store-v1")
}

fn golden_entries() -> Vec<Entry> {
    let mut all = Vec::new();
    for (index, term) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 3)] {
        let mut e = entry(index, term);
        if index == 1 {
            e.set_entry_type(EntryType::EntryConfChangeV2);
            e.context = b"bootstrap".to_vec().into();
        }
        all.push(e);
    }
    all
}

/// What the golden stores of every format hold, read through `RedbLog`;
/// then it keeps working as a store.
fn check_golden_store(dir: &Path, snapshot_data: &[u8]) {
    let log = RedbLog::open(dir, GOLDEN_ID, true).expect("the golden store still opens");
    let all = golden_entries();
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (3, 6));
    assert_eq!(log.entries(3, 7, None, ctx()).unwrap(), all[2..].to_vec());
    assert_eq!((2..=6).map(|i| log.term(i).unwrap()).collect::<Vec<_>>(), vec![1, 2, 2, 2, 3]);
    assert!(is_compacted(log.term(1)));
    let state = log.initial_state().unwrap();
    assert_eq!(state.hard_state, hard_state(3, 2, 5));
    assert_eq!(state.conf_state, conf_state(&[1, 2, 3], &[4]));
    assert_eq!(log.latest_snapshot().unwrap(), Some((4, 2, conf_state(&[1, 2, 3], &[]), snapshot_data.to_vec())));
    assert_eq!(log.log_bytes(), all[4..].iter().map(size).sum::<u64>());
    log.persist(&entries(7..=7, 3), Some(&hard_state(3, 2, 6))).unwrap();
}

#[test]
#[ignore = "writes tests/golden/store-v1/midge.redb; run once per format version and commit the file"]
fn write_golden_store_v1() {
    let dir = golden_dir();
    let _ = std::fs::remove_file(dir.join(STORE_FILE_NAME));
    let log = RedbLog::open(&dir, GOLDEN_ID, true).unwrap();
    let all = golden_entries();
    log.persist(&all[..2], Some(&hard_state(1, 3, 1))).unwrap();
    log.persist(&all[2..], Some(&hard_state(3, 2, 5))).unwrap();
    log.set_conf_state(&conf_state(&[1, 2, 3], &[4])).unwrap();
    log.save_snapshot(4, &conf_state(&[1, 2, 3], &[]), b"golden snapshot v1".to_vec(), 2).unwrap();
    drop(log);
}

#[test]
fn golden_store_v1_still_reads() {
    let golden = golden_dir().join(STORE_FILE_NAME);
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&golden, copy.path().join(STORE_FILE_NAME)).expect("tests/golden/store-v1/midge.redb exists");

    // The records we encode ourselves, byte for byte.
    {
        let db = redb::Database::open(copy.path().join(STORE_FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let raw = |k: &str| meta.get(k).unwrap().map(|v| v.value().to_vec());
        assert_eq!(raw("format_version"), Some(vec![1, 0, 0, 0]));
        let mut identity = GOLDEN_ID.cluster_id.to_le_bytes().to_vec();
        identity.extend(GOLDEN_ID.node_id.to_le_bytes());
        assert_eq!(raw("identity"), Some(identity));
        let mut truncated = 2u64.to_le_bytes().to_vec();
        truncated.extend(1u64.to_le_bytes());
        assert_eq!(raw("log_truncated"), Some(truncated));
        let log = txn.open_table(LOG).unwrap();
        let keys: Vec<u64> = redb::ReadableTable::iter(&log).unwrap().map(|r| r.unwrap().0.value()).collect();
        assert_eq!(keys, vec![3, 4, 5, 6]);
    }

    check_golden_store(copy.path(), b"golden snapshot v1");
}

// ---------------------------------------------------------------------------
// Golden directory of format version 2 (midge.redb and raft-log/).

fn golden_dir_v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/store-v2")
}

#[test]
#[ignore = "writes tests/golden/store-v2/; run once per format version and commit the files"]
fn write_golden_store_v2() {
    let dir = golden_dir_v2();
    let _ = std::fs::remove_file(dir.join(STORE_FILE_NAME));
    let _ = std::fs::remove_dir_all(dir.join(SEGMENT_DIR));
    let log = RedbLog::open(&dir, GOLDEN_ID, true).unwrap();
    let all = golden_entries();
    log.persist(&all[..2], Some(&hard_state(1, 3, 1))).unwrap();
    log.persist(&all[2..], Some(&hard_state(3, 2, 5))).unwrap();
    log.set_conf_state(&conf_state(&[1, 2, 3], &[4])).unwrap();
    log.save_snapshot(4, &conf_state(&[1, 2, 3], &[]), b"golden snapshot v2".to_vec(), 2).unwrap();
    drop(log);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &to.join(item.file_name()));
        } else {
            std::fs::copy(item.path(), to.join(item.file_name())).unwrap();
        }
    }
}

#[test]
fn golden_store_v2_still_reads() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir_v2(), copy.path());

    // The bytes we encode ourselves.
    {
        let db = redb::Database::open(copy.path().join(STORE_FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let raw = |k: &str| meta.get(k).unwrap().map(|v| v.value().to_vec());
        assert_eq!(raw("format_version"), Some(vec![2, 0, 0, 0]));
        assert_eq!(raw("log_base"), Some(1u64.to_le_bytes().to_vec()));
        let mut truncated = 2u64.to_le_bytes().to_vec();
        truncated.extend(1u64.to_le_bytes());
        assert_eq!(raw("log_truncated"), Some(truncated));
        let log = txn.open_table(LOG).unwrap();
        assert_eq!(redb::ReadableTable::iter(&log).unwrap().count(), 0, "format 2 keeps no entries in redb");
    }
    let seg = std::fs::read(copy.path().join(SEGMENT_DIR).join("00000000000000000001.seg")).unwrap();
    assert_eq!(&seg[..8], b"MIDGELOG");
    assert_eq!(&seg[8..12], &1u32.to_le_bytes());
    assert_eq!(&seg[16..24], &1u64.to_le_bytes());
    let segments::Scanned { records, torn, .. } = segments::scan(&seg);
    assert_eq!(torn, None);
    let kinds: Vec<u8> = records.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![1, 1, 2, 1, 1, 1, 1, 2], "entries 1-2, a hard state, entries 3-6, a hard state");

    check_golden_store(copy.path(), b"golden snapshot v2");
}

/// A new segment is allocated whole (zeros after its records); the next
/// one begins only once its records fill it, so only the newest segment
/// ends in zeros (an older midge reads every other one as it always did).
#[test]
fn only_the_newest_segment_is_allocated_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    let mut written = Vec::new();
    for i in 1..=50u64 {
        let mut e = entry(i, 1);
        e.data = vec![i as u8; 100_000].into();
        log.persist(std::slice::from_ref(&e), Some(&hard_state(1, 1, i - 1))).unwrap();
        written.push(e);
        let files = segment_files(dir.path());
        let newest = std::fs::read(files.last().unwrap()).unwrap();
        assert_eq!(newest.len() as u64, segments::SEGMENT_BYTES.max(segments::scan(&newest).end), "after entry {i}");
        for older in &files[..files.len() - 1] {
            let bytes = std::fs::read(older).unwrap();
            let scanned = segments::scan(&bytes);
            assert_eq!((scanned.end, scanned.torn), (bytes.len() as u64, None), "{}", older.display());
        }
    }
    assert_eq!(segment_files(dir.path()).len(), 2, "5 MB of entries in 4 MiB segments");
    drop(log);
    let log = RedbLog::open(dir.path(), ID, true).unwrap();
    assert_eq!(log.entries(1, 51, None, ctx()).unwrap(), written);
}

#[test]
fn a_format_1_store_moves_its_log_into_a_segment_once() {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(golden_dir().join(STORE_FILE_NAME), copy.path().join(STORE_FILE_NAME)).unwrap();
    drop(RedbLog::open(copy.path(), GOLDEN_ID, true).unwrap());
    assert_eq!(segment_files(copy.path()).len(), 1);
    // Opened again: format 2 now, nothing moved again.
    let log = RedbLog::open(copy.path(), GOLDEN_ID, true).unwrap();
    assert_eq!(segment_files(copy.path()).len(), 1);
    assert_eq!(log.entries(3, 7, None, ctx()).unwrap(), golden_entries()[2..].to_vec());
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(3, 2, 5));
}

// ---------------------------------------------------------------------------
// Measurement, not a test: `cargo test persist_latency -- --ignored --nocapture`.

#[test]
#[ignore = "measurement; prints the mean latency of persist()"]
fn persist_latency() {
    const ROUNDS: u64 = 200;
    // On the crate's own disk, not a tmpfs.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    for durable in [true, false] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let log = RedbLog::open(dir.path(), ID, durable).unwrap();
        let started = std::time::Instant::now();
        for i in 1..=ROUNDS {
            let mut e = entry(i, 1);
            e.data = vec![0x5a; 200].into();
            log.persist(&[e], Some(&hard_state(1, 1, i - 1))).unwrap();
        }
        let mean = started.elapsed() / ROUNDS as u32;
        let started = std::time::Instant::now();
        for i in 1..=ROUNDS {
            let _ = log.entries(i, i + 1, None, ctx()).unwrap();
        }
        let read = started.elapsed() / ROUNDS as u32;
        println!("persist of 1 entry (200 B payload) + hard state, durable={durable}: mean {mean:?}; entries() of 1: {read:?}");
    }
}
