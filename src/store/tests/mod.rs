//! Tests of the raft stores. Here: behaviour tests that run against
//! `MemLog`, a durable `RedbLog` and a non-durable one through one generic
//! function each, and a seeded differential test that drives `MemLog` and
//! `RedbLog` with the same random calls and compares everything they show.
//! `redb_file` tests `RedbLog` alone (foreign, damaged and old files, a
//! real crash, the golden file of format version 1); `with_raft` runs the
//! stores under real raft-rs nodes.

mod redb_file;
mod with_raft;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError as RaftStorageError, NO_LIMIT};
use redb::TableDefinition;

use super::{MemLog, RaftLog, RedbLog, StoreError, StoreIdentity};

const ID: StoreIdentity = StoreIdentity { cluster_id: 7, node_id: 1 };

// The tables as docs/FORMATS.md describes them, written out again here so
// a change to the module's definitions shows up as a failing test.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");

fn entry(index: u64, term: u64) -> Entry {
    let data = format!("payload of entry {index} in term {term}").into_bytes().into();
    Entry { index, term, data, ..Default::default() }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..Default::default() }
}

fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..Default::default() }
}

fn snapshot(index: u64, term: u64, cs: ConfState, data: &[u8]) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(cs);
    s.data = data.to_vec().into();
    s
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn size(e: &Entry) -> u64 {
    u64::from(e.compute_size())
}

fn store_error(result: raft::Result<impl std::fmt::Debug>) -> RaftStorageError {
    match result {
        Err(raft::Error::Store(e)) => e,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

fn is_compacted<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(store_error(r), RaftStorageError::Compacted)
}

fn is_unavailable<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(store_error(r), RaftStorageError::Unavailable)
}

fn snapshot_unavailable<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(store_error(r), RaftStorageError::SnapshotTemporarilyUnavailable)
}

/// Everything a store shows through its traits.
#[derive(Debug, PartialEq)]
struct Observed {
    first: u64,
    last: u64,
    /// term() of every index from 0 to last + 1, errors by name.
    terms: Vec<Result<u64, String>>,
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    latest_snapshot: Option<(u64, u64, ConfState, Vec<u8>)>,
    raft_snapshot: Result<(u64, u64, Vec<u8>), String>,
    log_bytes: u64,
}

fn observe(log: &impl RaftLog) -> Observed {
    let first = log.first_index().expect("first_index");
    let last = log.last_index().expect("last_index");
    let terms = (0..=last + 1).map(|i| log.term(i).map_err(|e| format!("{e:?}"))).collect();
    let state = log.initial_state().expect("initial_state");
    let raft_snapshot = log
        .snapshot(0, 2)
        .map(|s| (s.get_metadata().index, s.get_metadata().term, s.data.to_vec()))
        .map_err(|e| format!("{e:?}"));
    Observed {
        first,
        last,
        terms,
        entries: log.entries(first, last + 1, None, ctx()).expect("entries"),
        hard_state: state.hard_state,
        conf_state: state.conf_state,
        latest_snapshot: log.latest_snapshot().expect("latest_snapshot"),
        raft_snapshot,
        log_bytes: log.log_bytes(),
    }
}

/// Where a test keeps one node's store across "restarts": the node (and
/// the handle it owns) is dropped, then `reopen` gives it back its data.
trait Harness {
    type Log: RaftLog;
    /// The store of a new node.
    fn open(&mut self) -> Self::Log;
    /// The same store again, after every handle from `open` was dropped.
    fn reopen(&mut self) -> Self::Log;
    fn restart(&mut self, log: Self::Log) -> Self::Log {
        drop(log);
        self.reopen()
    }
}

/// As the simulation does it: it keeps a clone of the `MemLog` as the disk.
#[derive(Default)]
struct Mem {
    disk: Option<MemLog>,
}

impl Harness for Mem {
    type Log = MemLog;
    fn open(&mut self) -> MemLog {
        let log = MemLog::new();
        self.disk = Some(log.clone());
        log
    }
    fn reopen(&mut self) -> MemLog {
        self.disk.clone().expect("open before reopen")
    }
}

struct Redb {
    dir: tempfile::TempDir,
    durable: bool,
}

impl Redb {
    fn new(durable: bool) -> Redb {
        Redb { dir: tempfile::tempdir().expect("tempdir"), durable }
    }
}

impl Harness for Redb {
    type Log = RedbLog;
    fn open(&mut self) -> RedbLog {
        RedbLog::open(self.dir.path(), ID, self.durable).expect("open")
    }
    fn reopen(&mut self) -> RedbLog {
        self.open()
    }
}

// ---------------------------------------------------------------------------
// Behaviour, for every store.

fn fresh_store_is_empty(h: &mut impl Harness) {
    let log = h.open();
    assert_eq!(log.first_index().unwrap(), 1);
    assert_eq!(log.last_index().unwrap(), 0);
    assert_eq!(log.term(0).unwrap(), 0);
    assert!(is_unavailable(log.term(1)));
    assert_eq!(log.entries(1, 1, None, ctx()).unwrap(), Vec::<Entry>::new());
    let state = log.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(state.conf_state, ConfState::default());
    assert!(!state.initialized());
    assert_eq!(log.latest_snapshot().unwrap(), None);
    assert!(snapshot_unavailable(log.snapshot(0, 2)));
    assert_eq!(log.log_bytes(), 0);
    let log = h.restart(log);
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (1, 0));
}

fn append_then_read_back(h: &mut impl Harness) {
    let log = h.open();
    let first = entries(1..=3, 1);
    log.persist(&first, Some(&hard_state(1, 1, 0))).unwrap();
    let second = entries(4..=5, 2);
    log.persist(&second, Some(&hard_state(2, 1, 3))).unwrap();
    let all: Vec<Entry> = first.iter().chain(&second).cloned().collect();
    assert_eq!(log.entries(1, 6, None, ctx()).unwrap(), all);
    assert_eq!(log.entries(2, 4, None, ctx()).unwrap(), all[1..3].to_vec());
    assert_eq!(log.entries(3, 3, None, ctx()).unwrap(), Vec::<Entry>::new());
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (1, 5));
    assert_eq!((1..=5).map(|i| log.term(i).unwrap()).collect::<Vec<_>>(), vec![1, 1, 1, 2, 2]);
    assert!(is_unavailable(log.term(6)));
    // Out-of-range reads are errors, never panics.
    assert!(is_unavailable(log.entries(4, 7, None, ctx())));
    assert!(is_unavailable(log.entries(4, 3, None, ctx())));
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(2, 1, 3));
    assert_eq!(log.log_bytes(), all.iter().map(size).sum::<u64>());
}

fn conflicting_suffix_is_replaced(h: &mut impl Harness) {
    let log = h.open();
    log.persist(&entries(1..=6, 1), Some(&hard_state(1, 1, 2))).unwrap();
    // A new leader in term 2 overwrites from index 4 with a shorter log.
    let replacement = entries(4..=5, 2);
    log.persist(&replacement, Some(&hard_state(2, 2, 2))).unwrap();
    assert_eq!(log.last_index().unwrap(), 5);
    assert!(is_unavailable(log.term(6)));
    let mut expected = entries(1..=3, 1);
    expected.extend(replacement.iter().cloned());
    assert_eq!(log.entries(1, 6, None, ctx()).unwrap(), expected);
    assert_eq!(log.log_bytes(), expected.iter().map(size).sum::<u64>());
    // Overwriting with a longer suffix, and appending right after it.
    log.persist(&entries(5..=8, 3), None).unwrap();
    log.persist(&entries(9..=9, 3), None).unwrap();
    assert_eq!((5..=9).map(|i| log.term(i).unwrap()).collect::<Vec<_>>(), vec![3; 5]);
    let log = h.restart(log);
    assert_eq!(log.last_index().unwrap(), 9);
    assert_eq!(log.term(4).unwrap(), 2);
    assert_eq!(log.entries(5, 10, None, ctx()).unwrap(), entries(5..=9, 3));
}

fn writes_that_break_the_log_are_refused(h: &mut impl Harness) {
    let log = h.open();
    log.persist(&entries(1..=5, 2), Some(&hard_state(2, 1, 3))).unwrap();
    log.save_snapshot(2, &conf_state(&[1], &[]), b"s".to_vec(), 0).unwrap();
    let before = observe(&log);
    let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Io(ref m)) if m.starts_with("write refused"));
    // A gap after the last entry.
    assert!(refused(log.persist(&entries(7..=7, 2), None)));
    // Entries that are not consecutive, or whose term goes back.
    assert!(refused(log.persist(&[entry(6, 2), entry(8, 2)], None)));
    assert!(refused(log.persist(&[entry(6, 3), entry(7, 2)], None)));
    assert!(refused(log.persist(&entries(6..=6, 1), None)));
    // Overwriting compacted or committed entries.
    assert!(refused(log.persist(&entries(2..=6, 3), None)));
    assert!(refused(log.persist(&entries(3..=6, 3), None)));
    // A commit past the log, or below the snapshot.
    assert!(refused(log.persist(&[], Some(&hard_state(2, 1, 6)))));
    assert!(refused(log.persist(&entries(6..=6, 2), Some(&hard_state(2, 1, 7)))));
    assert!(refused(set_commit(&log, 6)));
    assert!(refused(set_commit(&log, 1)));
    // Snapshots at 0, older than the stored one, or past the log.
    assert!(refused(log.save_snapshot(0, &ConfState::default(), Vec::new(), 0)));
    assert!(refused(log.save_snapshot(1, &ConfState::default(), Vec::new(), 0)));
    assert!(refused(log.save_snapshot(6, &ConfState::default(), Vec::new(), 0)));
    // A leader's snapshot older than what we have committed.
    assert!(refused(log.install_snapshot(&snapshot(2, 2, conf_state(&[1], &[]), b"old"))));
    assert!(refused(log.install_snapshot(&snapshot(0, 0, ConfState::default(), b""))));
    assert_eq!(observe(&log), before, "a refused write must change nothing");
    // The store still works after refusing.
    log.persist(&entries(6..=6, 2), Some(&hard_state(2, 1, 6))).unwrap();
    assert_eq!(log.last_index().unwrap(), 6);
}

/// A new commit index alone (what `Staged` writes along with the next
/// entries or vote).
pub(super) fn set_commit(log: &impl RaftLog, commit: u64) -> Result<(), StoreError> {
    let mut hs = log.initial_state().expect("initial state").hard_state;
    hs.commit = commit;
    log.persist(&[], Some(&hs))
}

fn hard_state_round_trip(h: &mut impl Harness) {
    let log = h.open();
    log.persist(&entries(1..=4, 3), None).unwrap();
    log.persist(&[], Some(&hard_state(3, 2, 1))).unwrap();
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(3, 2, 1));
    set_commit(&log, 4).unwrap();
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(3, 2, 4));
    let log = h.restart(log);
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(3, 2, 4));
    log.persist(&[], Some(&hard_state(5, 3, 4))).unwrap();
    let log = h.restart(log);
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(5, 3, 4));
}

fn conf_state_round_trip(h: &mut impl Harness) {
    let log = h.open();
    let mut cs = conf_state(&[1, 2, 3], &[4]);
    cs.voters_outgoing = vec![1, 2];
    cs.learners_next = vec![5];
    cs.auto_leave = true;
    log.set_conf_state(&cs).unwrap();
    assert_eq!(log.initial_state().unwrap().conf_state, cs);
    let log = h.restart(log);
    assert_eq!(log.initial_state().unwrap().conf_state, cs);
    assert!(log.initial_state().unwrap().initialized());
}

fn restart_recovers_everything(h: &mut impl Harness) {
    let log = h.open();
    log.set_conf_state(&conf_state(&[1, 2, 3], &[])).unwrap();
    log.persist(&entries(1..=8, 1), Some(&hard_state(1, 1, 0))).unwrap();
    log.persist(&entries(6..=12, 2), Some(&hard_state(2, 3, 5))).unwrap();
    set_commit(&log, 9).unwrap();
    log.save_snapshot(7, &conf_state(&[1, 2, 3], &[]), b"state at 7".to_vec(), 3).unwrap();
    log.set_conf_state(&conf_state(&[1, 2, 3], &[4])).unwrap();
    log.persist(&entries(13..=13, 2), None).unwrap();
    let before = observe(&log);
    assert_eq!((before.first, before.last), (5, 13));
    let log = h.restart(log);
    assert_eq!(observe(&log), before);
    let log = h.restart(log);
    assert_eq!(observe(&log), before);
}

fn save_snapshot_compacts_and_keeps_a_tail(h: &mut impl Harness) {
    let log = h.open();
    log.persist(&entries(1..=6, 1), None).unwrap();
    log.persist(&entries(7..=10, 2), Some(&hard_state(2, 1, 10))).unwrap();
    let cs = conf_state(&[1, 2, 3], &[]);
    log.save_snapshot(8, &cs, b"applied state at 8".to_vec(), 3).unwrap();
    // Entries up to 8 - 3 = 5 are gone; 5's term stays for raft's matching.
    assert_eq!(log.first_index().unwrap(), 6);
    assert_eq!(log.last_index().unwrap(), 10);
    assert_eq!(log.term(5).unwrap(), 1);
    assert!(is_compacted(log.term(4)));
    assert!(is_compacted(log.term(1)));
    assert_eq!(log.term(8).unwrap(), 2);
    assert!(is_compacted(log.entries(5, 11, None, ctx())));
    assert_eq!(log.entries(6, 11, None, ctx()).unwrap(), [entries(6..=6, 1), entries(7..=10, 2)].concat());
    assert_eq!(log.latest_snapshot().unwrap(), Some((8, 2, cs.clone(), b"applied state at 8".to_vec())));
    // Only entries after the snapshot count towards the next one.
    assert_eq!(log.log_bytes(), entries(9..=10, 2).iter().map(size).sum::<u64>());
    let snap = log.snapshot(0, 2).unwrap();
    assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (8, 2));
    assert_eq!(snap.get_metadata().get_conf_state(), &cs);
    assert_eq!(&snap.data[..], b"applied state at 8");
    assert!(snapshot_unavailable(log.snapshot(9, 2)));
    // save_snapshot does not touch the current membership.
    assert_eq!(log.initial_state().unwrap().conf_state, ConfState::default());

    let log = h.restart(log);
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (6, 10));
    assert!(is_compacted(log.term(4)));
    assert_eq!(log.term(5).unwrap(), 1);

    // A tail longer than the log drops nothing; keep 0 drops everything up to the snapshot.
    log.save_snapshot(9, &cs, b"at 9".to_vec(), 100).unwrap();
    assert_eq!(log.first_index().unwrap(), 6);
    log.save_snapshot(10, &cs, b"at 10".to_vec(), 0).unwrap();
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (11, 10));
    assert_eq!(log.term(10).unwrap(), 2);
    assert!(is_compacted(log.term(9)));
    assert_eq!(log.log_bytes(), 0);
    // The log goes on after the snapshot.
    log.persist(&entries(11..=11, 2), None).unwrap();
    let log = h.restart(log);
    assert_eq!(log.entries(11, 12, None, ctx()).unwrap(), entries(11..=11, 2));
    assert_eq!(log.latest_snapshot().unwrap(), Some((10, 2, cs, b"at 10".to_vec())));
}

fn save_snapshot_raises_commit(h: &mut impl Harness) {
    // Entries applied before the Ready's hard state was persisted: the
    // snapshot covers them, so the stored commit follows, or raft would
    // refuse to start (commit below the truncation point).
    let log = h.open();
    log.persist(&entries(1..=5, 1), Some(&hard_state(1, 1, 2))).unwrap();
    log.save_snapshot(4, &conf_state(&[1], &[]), b"x".to_vec(), 0).unwrap();
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(1, 1, 4));
    let log = h.restart(log);
    assert_eq!(log.initial_state().unwrap().hard_state.commit, 4);
}

fn install_snapshot_replaces_everything(h: &mut impl Harness) {
    let log = h.open();
    log.set_conf_state(&conf_state(&[1], &[])).unwrap();
    log.persist(&entries(1..=5, 1), Some(&hard_state(1, 1, 3))).unwrap();
    let cs = conf_state(&[1, 2, 3], &[4]);
    log.install_snapshot(&snapshot(20, 4, cs.clone(), b"leader state at 20")).unwrap();
    let check = |log: &dyn Fn() -> Observed| {
        let o = log();
        assert_eq!((o.first, o.last), (21, 20));
        assert_eq!(o.terms[20], Ok(4));
        assert!(o.terms[19].as_ref().is_err_and(|e| e.contains("Compacted")));
        assert!(o.terms[1].as_ref().is_err_and(|e| e.contains("Compacted")));
        assert!(o.entries.is_empty());
        assert_eq!(o.hard_state, hard_state(4, 1, 20));
        assert_eq!(o.conf_state, cs);
        assert_eq!(o.latest_snapshot, Some((20, 4, cs.clone(), b"leader state at 20".to_vec())));
        assert_eq!(o.raft_snapshot, Ok((20, 4, b"leader state at 20".to_vec())));
        assert_eq!(o.log_bytes, 0);
    };
    check(&|| observe(&log));
    assert!(is_compacted(log.entries(5, 6, None, ctx())));
    let log = h.restart(log);
    check(&|| observe(&log));
    // The log continues from the snapshot.
    log.persist(&entries(21..=22, 4), Some(&hard_state(4, 1, 21))).unwrap();
    assert_eq!(log.entries(21, 23, None, ctx()).unwrap(), entries(21..=22, 4));
    // A later snapshot can land inside the log too.
    log.install_snapshot(&snapshot(22, 5, cs.clone(), b"at 22")).unwrap();
    assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (23, 22));
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(5, 1, 22));
}

fn entries_honour_max_size(h: &mut impl Harness) {
    let log = h.open();
    let all = entries(1..=5, 1);
    log.persist(&all, None).unwrap();
    let s: Vec<u64> = all.iter().map(size).collect();
    let got = |max: Option<u64>| log.entries(1, 6, max, ctx()).unwrap();
    // Always at least one entry, even when it alone is too big.
    assert_eq!(got(Some(0)), all[..1].to_vec());
    assert_eq!(got(Some(s[0] - 1)), all[..1].to_vec());
    assert_eq!(got(Some(s[0] + s[1] - 1)), all[..1].to_vec());
    assert_eq!(got(Some(s[0] + s[1])), all[..2].to_vec());
    assert_eq!(got(Some(s[0] + s[1] + s[2])), all[..3].to_vec());
    assert_eq!(got(Some(NO_LIMIT)), all);
    assert_eq!(got(None), all);
    // The same rule as raft's MemStorage.
    for max in 0..s.iter().sum::<u64>() + 2 {
        let mut expected = all.clone();
        raft::util::limit_size(&mut expected, Some(max));
        assert_eq!(got(Some(max)), expected, "max_size {max}");
    }
    assert_eq!(log.entries(3, 6, Some(0), ctx()).unwrap(), all[2..3].to_vec());
}

fn drop_without_close_keeps_what_was_persisted(h: &mut impl Harness) {
    let log = h.open();
    let mut e = entry(1, 1);
    e.set_entry_type(EntryType::EntryConfChange);
    log.persist(&[e.clone()], Some(&hard_state(1, 1, 1))).unwrap();
    let log = h.restart(log);
    assert_eq!(log.entries(1, 2, None, ctx()).unwrap(), vec![e]);
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(1, 1, 1));
}

macro_rules! for_every_store {
    ($($name:ident),* $(,)?) => {
        mod on_mem {
            $( #[test] fn $name() { super::$name(&mut super::Mem::default()) } )*
        }
        mod on_redb {
            $( #[test] fn $name() { super::$name(&mut super::Redb::new(true)) } )*
        }
        mod on_redb_non_durable {
            $( #[test] fn $name() { super::$name(&mut super::Redb::new(false)) } )*
        }
    };
}

for_every_store!(
    fresh_store_is_empty,
    append_then_read_back,
    conflicting_suffix_is_replaced,
    writes_that_break_the_log_are_refused,
    hard_state_round_trip,
    conf_state_round_trip,
    restart_recovers_everything,
    save_snapshot_compacts_and_keeps_a_tail,
    save_snapshot_raises_commit,
    install_snapshot_replaces_everything,
    entries_honour_max_size,
    drop_without_close_keeps_what_was_persisted,
);

// ---------------------------------------------------------------------------
// MemLog and RedbLog agree on random calls.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn mem_and_redb_agree_on_random_calls() {
    for seed in [1u64, 2, 3, 0x006d_6964_6765] {
        agree_on_random_calls(seed, 150);
    }
}

fn agree_on_random_calls(seed: u64, steps: usize) {
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mem = MemLog::new();
    let mut redb = Redb::new(false);
    let mut disk = redb.open();
    for step in 0..steps {
        let o = observe(&mem);
        let commit = o.hard_state.commit;
        let term = o.hard_state.term.max(o.terms[o.last as usize].clone().unwrap_or(0));
        let op = rng.below(100);
        let what;
        let (a, b) = match op {
            0..=49 => {
                // Mostly valid appends and overwrites, sometimes not.
                let first = (o.first + rng.below(o.last + 3 - o.first)).saturating_sub(1);
                let count = rng.below(4);
                let t = term + rng.below(2);
                let batch: Vec<Entry> = (first..first + count).map(|i| entry(i, t)).collect();
                let last = if count > 0 { first + count - 1 } else { o.last };
                let hs = (rng.below(2) == 0)
                    .then(|| hard_state(t, rng.below(3), commit + rng.below((last + 2).saturating_sub(commit))));
                what = format!("persist {first}+{count} t{t} hs {hs:?}");
                (mem.persist(&batch, hs.as_ref()), disk.persist(&batch, hs.as_ref()))
            }
            50..=64 => {
                let c = commit + rng.below(o.last + 2 - commit);
                what = format!("set_commit {c}");
                (set_commit(&mem, c), set_commit(&disk, c))
            }
            65..=79 => {
                // Mostly at or after the stored snapshot, sometimes before it.
                let snap = o.latest_snapshot.as_ref().map_or(0, |s| s.0);
                let index = (snap + rng.below(o.last + 2 - snap)).saturating_sub(rng.below(4) / 3);
                let keep = rng.below(5);
                let data = format!("snap {step}").into_bytes();
                let cs = conf_state(&[1, 2, rng.below(5) + 3], &[]);
                what = format!("save_snapshot {index} keep {keep}");
                (mem.save_snapshot(index, &cs, data.clone(), keep), disk.save_snapshot(index, &cs, data, keep))
            }
            80..=86 => {
                let index = (commit + rng.below(8)).saturating_sub(2);
                let snap = snapshot(index, term + rng.below(2), conf_state(&[1, 2, 3], &[4]), b"installed");
                what = format!("install_snapshot {index}");
                (mem.install_snapshot(&snap), disk.install_snapshot(&snap))
            }
            87..=91 => {
                let cs = conf_state(&[1, rng.below(9) + 2], &[rng.below(9) + 11]);
                what = "set_conf_state".to_string();
                (mem.set_conf_state(&cs), disk.set_conf_state(&cs))
            }
            _ => {
                what = "restart".to_string();
                disk = redb.restart(disk);
                (Ok(()), Ok(()))
            }
        };
        assert_eq!(a.is_ok(), b.is_ok(), "seed {seed} step {step} {what}: mem {a:?} redb {b:?}");
        assert_eq!(observe(&mem), observe(&disk), "seed {seed} step {step} {what}");
    }
}
