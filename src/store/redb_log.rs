//! `RedbLog`: the raft log, hard state, conf state and latest snapshot of
//! one node in one redb file, `<persistence_location>/midge.redb`. The
//! layout (format version 1) is documented in docs/FORMATS.md; change it
//! only together with `STORE_FORMAT_VERSION`, that document and a new
//! golden file.
//!
//! Every write is one redb transaction, durable when it returns (unless
//! the store was opened with `durable = false`). The shape of the log
//! (first and last index, terms, snapshot index) is cached in a `LogIndex`
//! so raft's frequent `term()` / `last_index()` calls never touch disk;
//! the cache changes only after a commit succeeded. This module must never
//! panic on what it reads from disk: a damaged or foreign file is a
//! `StoreError::Corrupt` at open.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};
use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction,
};

use super::log_index::{hard_state_covering, LogIndex, TermGap};
use super::{PersistJob, RaftLog, StoreError, StoreIdentity, WriteJobError, STORE_FORMAT_VERSION};

/// The store's file inside the data directory.
pub const STORE_FILE_NAME: &str = "midge.redb";

/// Log index -> one protobuf-encoded `eraftpb::Entry`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Small records, keyed by the `KEY_*` names below.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Snapshot index -> the snapshot's data (the applied broker state); one
/// row, present exactly when `KEY_SNAPSHOT_META` is.
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");

const KEY_FORMAT_VERSION: &str = "format_version";
const KEY_IDENTITY: &str = "identity";
const KEY_HARD_STATE: &str = "hard_state";
const KEY_CONF_STATE: &str = "conf_state";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_LOG_TRUNCATED: &str = "log_truncated";

/// Larger log indexes in a file are damage: raft never gets near them, and
/// refusing them keeps `index + 1` from overflowing.
const INDEX_MAX: u64 = u64::MAX / 2;

/// redb's page cache. Its default (1 GiB) does not suit a 512 MiB gateway;
/// the hot part of the file is the log's tail and the meta table.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

pub struct RedbLog {
    /// None only while the file is being reopened after a full disk.
    db: RefCell<Option<Arc<Database>>>,
    /// The file, to reopen it after a full disk.
    file: std::path::PathBuf,
    path: String,
    durability: Durability,
    cached: RefCell<Cached>,
    /// Why a write failed, once one has: the file may no longer match
    /// `cached`, so later writes are refused until the store is reopened.
    failed: RefCell<Option<String>>,
    /// A snapshot whose write job has not ended: (index, data), served
    /// from here until it is in the file.
    writing_snapshot: RefCell<Option<(u64, Arc<Vec<u8>>)>>,
    /// The writes handed out as jobs whose jobs have not ended well, in
    /// order: after a full disk they are written again (`begin_retry`).
    unwritten: RefCell<Vec<Unwritten>>,
    /// A job from `begin_retry` is out: its result ends every write in
    /// `unwritten`.
    retrying: std::cell::Cell<bool>,
}

/// What a write job writes, kept (sharing its bytes) until the job ended
/// well, so that a write that found the disk full can run again.
#[derive(Clone)]
enum Unwritten {
    Log(LogWrite),
    Snapshot(SnapshotWrite),
}

/// One `persist`'s transaction.
#[derive(Clone)]
struct LogWrite {
    /// (index, encoded entry)
    rows: Arc<Vec<(u64, Vec<u8>)>>,
    hs_bytes: Option<Vec<u8>>,
    /// The snapshot index and last log index when the write was prepared.
    snap_index: u64,
    last: u64,
}

/// One `save_snapshot`'s transaction: the snapshot, and the deletion of
/// the log entries it covers (tens of ms for a long log).
#[derive(Clone)]
struct SnapshotWrite {
    index: u64,
    old_snap_index: u64,
    compact_to: Option<(u64, u64)>,
    data: Arc<Vec<u8>>,
    meta_bytes: Vec<u8>,
    hs_bytes: Vec<u8>,
}

impl LogWrite {
    /// Ok(bytes of log entries the write replaced).
    fn write(&self, txn: &WriteTransaction) -> Result<u64, redb::Error> {
        let mut dropped = 0u64;
        if let Some((first, _)) = self.rows.first() {
            let mut log = txn.open_table(LOG)?;
            if *first <= self.last {
                // raft's conflict rule: the new entries replace the old suffix.
                dropped = stored_bytes(&log, (*first).max(self.snap_index + 1), self.last)?;
                log.retain_in(*first.., |_, _| false)?;
            }
            for (index, bytes) in self.rows.iter() {
                log.insert(*index, bytes.as_slice())?;
            }
        }
        if let Some(bytes) = &self.hs_bytes {
            txn.open_table(META)?.insert(KEY_HARD_STATE, bytes.as_slice())?;
        }
        Ok(dropped)
    }
}

impl SnapshotWrite {
    /// Ok(bytes of log entries the snapshot newly covers).
    fn write(&self, txn: &WriteTransaction) -> Result<u64, redb::Error> {
        let mut log = txn.open_table(LOG)?;
        let newly_covered = stored_bytes(&log, self.old_snap_index + 1, self.index)?;
        let mut m = txn.open_table(META)?;
        if let Some((cut, cut_term)) = self.compact_to {
            log.retain_in(..=cut, |_, _| false)?;
            m.insert(KEY_LOG_TRUNCATED, u64_pair_bytes(cut, cut_term).as_slice())?;
        }
        let mut snapshots = txn.open_table(SNAPSHOT)?;
        snapshots.retain(|_, _| false)?;
        snapshots.insert(self.index, self.data.as_slice())?;
        m.insert(KEY_SNAPSHOT_META, self.meta_bytes.as_slice())?;
        m.insert(KEY_HARD_STATE, self.hs_bytes.as_slice())?;
        Ok(newly_covered)
    }
}

/// Whether a failed write found the disk (or the user's quota) full.
fn disk_full(e: &WriteJobError) -> bool {
    let (WriteJobError::Log { source, .. } | WriteJobError::Snapshot { source, .. }) = e;
    match source {
        redb::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::StorageFull
                || matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        }
        _ => false,
    }
}

/// What the file holds, minus entries and snapshot data.
struct Cached {
    index: LogIndex,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: Option<SnapshotMetadata>,
    /// Encoded bytes of the entries after the snapshot index.
    log_bytes: u64,
    /// Encoded entries and hard states handed to write transactions
    /// since the store was opened.
    written_bytes: u64,
}

fn u64_pair_bytes(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

fn u64_pair_from(bytes: &[u8]) -> Option<(u64, u64)> {
    let a: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let b: [u8; 8] = bytes.get(8..)?.try_into().ok()?;
    Some((u64::from_le_bytes(a), u64::from_le_bytes(b)))
}

fn encode<M: protobuf::Message>(m: &M) -> Result<Vec<u8>, StoreError> {
    m.write_to_bytes().map_err(|e| StoreError::Io(format!("cannot encode a raft record: {e}")))
}

fn refused(reason: String) -> StoreError {
    log::warn!("raft store refused a write: {reason}");
    StoreError::Io(format!("write refused: {reason}"))
}

fn storage_error(e: StoreError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(e)))
}

/// How to start fresh, for the errors of a file that exists but cannot be
/// read as a store.
const START_FRESH: &str = "To start this node with no data, move the file aside (or delete it); a cluster node \
                           then receives the state from the leader";

/// A file shorter than this that redb cannot read is reported as too short
/// to be a store rather than as damage inside one: redb refuses anything
/// under its minimum layout (4 KiB was refused), and midge's store is
/// 72 KiB from its first write.
const STORE_BYTES_SHORT: u64 = 8192;

/// `Corrupt` errors at open say how to start fresh; a short file says so.
fn refused_file(file: &Path, e: StoreError) -> StoreError {
    let StoreError::Corrupt { path, reason } = e else { return e };
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(u64::MAX);
    let reason = if len < STORE_BYTES_SHORT {
        format!(
            "the file is too short to be a store ({len} bytes): it was truncated or replaced ({reason}). {START_FRESH}"
        )
    } else {
        format!("{reason}. {START_FRESH}")
    };
    StoreError::Corrupt { path, reason }
}

/// Classifies a redb failure while opening: damage is `Corrupt`, anything
/// else (permissions, a second process, a full disk) is `Open`.
fn open_error(path: &str, file_existed: bool, e: redb::Error) -> StoreError {
    let path = path.to_string();
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => StoreError::Open {
            path,
            reason: "the file is in use by another process (is another midge running on this persistence_location?)"
                .to_string(),
        },
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::RepairAborted
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_) => {
            StoreError::Corrupt { path, reason: format!("redb cannot read the file: {e}") }
        }
        redb::Error::Io(ref io)
            if file_existed
                && matches!(io.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) =>
        {
            StoreError::Corrupt { path, reason: format!("redb cannot read the file: {e}") }
        }
        other => StoreError::Open { path, reason: other.to_string() },
    }
}

impl RedbLog {
    /// Opens `dir/midge.redb`, creating `dir` and the file if needed. A new
    /// file gets the format version and `identity`; an existing one must
    /// carry the same ones and pass the integrity checks listed in
    /// docs/FORMATS.md. `durable = false` commits without fsync: a crash
    /// or power loss may then lose every write since the last clean close.
    pub fn open(dir: &Path, identity: StoreIdentity, durable: bool) -> Result<RedbLog, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Open { path: dir.display().to_string(), reason: e.to_string() })?;
        let file = dir.join(STORE_FILE_NAME);
        let path = file.display().to_string();
        let file_existed = match std::fs::metadata(&file) {
            // An empty file is not a store that was never written: redb
            // writes its header when it creates the file, so 0 bytes means
            // the file was truncated or replaced, and whatever it held is
            // gone. Starting fresh would drop every session and retained
            // message without a word.
            Ok(m) if m.len() == 0 => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: format!("the file is empty (0 bytes): it was truncated or replaced. {START_FRESH}"),
                })
            }
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::Open { path, reason: e.to_string() }),
        };
        // Verifying every page at open turns a file damaged outside redb
        // into an error instead of a panic; the file is small (the log is
        // bounded by snapshots), so this costs little.
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&file)
            .map_err(|e| refused_file(&file, open_error(&path, file_existed, e.into())))?;

        // A crash between redb creating the file and our first commit leaves
        // a valid database without tables: still a fresh store.
        let fresh = !file_existed || has_no_tables(&db).map_err(|e| open_error(&path, true, e))?;
        if fresh {
            initialize(&db, identity).map_err(|e| open_error(&path, file_existed, e))?;
            log::info!("created raft store {path} for cluster {} node {}", identity.cluster_id, identity.node_id);
        }
        let cached = load(&db, identity, &path)?;
        log::info!(
            "opened raft store {path}: log {}..={}, commit {}, snapshot at {}",
            cached.index.first_index(),
            cached.index.last_index(),
            cached.hard_state.commit,
            cached.index.snapshot().0
        );
        Ok(RedbLog {
            db: RefCell::new(Some(Arc::new(db))),
            file,
            path,
            durability: if durable { Durability::Immediate } else { Durability::None },
            cached: RefCell::new(cached),
            failed: RefCell::new(None),
            writing_snapshot: RefCell::new(None),
            unwritten: RefCell::new(Vec::new()),
            retrying: std::cell::Cell::new(false),
        })
    }

    /// The store's file, for log and error messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `body` in one write transaction and commits it. After any
    /// failure, this and every later write are refused.
    fn write<T>(&self, body: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>) -> Result<T, StoreError> {
        self.check_not_failed()?;
        let db = self.db()?;
        transaction(&db, self.durability, body).map_err(|e| self.fail(e.to_string()))
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.borrow().clone().ok_or_else(|| StoreError::Io(format!("{} is not open", self.path)))
    }

    /// After a write failed, redb refuses every further operation on the
    /// database (reads too) until it is opened again: open it again, at
    /// its last complete transaction. No job holds it (the failed one has
    /// ended, and a retry begins only after this).
    fn reopen(&self) -> Result<(), StoreError> {
        drop(self.db.borrow_mut().take());
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&self.file)
            .map_err(|e| StoreError::Io(format!("cannot open {} again: {e}", self.path)))?;
        *self.db.borrow_mut() = Some(Arc::new(db));
        Ok(())
    }

    fn check_not_failed(&self) -> Result<(), StoreError> {
        match self.failed.borrow().as_ref() {
            Some(reason) => {
                Err(StoreError::Io(format!("an earlier write to {} failed ({reason}); reopen the store", self.path)))
            }
            None => Ok(()),
        }
    }

    /// Ends a write job: Ok(log bytes it replaced or covered), or why it
    /// failed.
    fn end_write(&self, result: Result<u64, WriteJobError>) -> Result<(), StoreError> {
        let retried = self.retrying.replace(false);
        match result {
            Ok(bytes) => {
                let mut c = self.cached.borrow_mut();
                c.log_bytes = c.log_bytes.saturating_sub(bytes);
                let mut unwritten = self.unwritten.borrow_mut();
                if retried {
                    unwritten.clear();
                } else if !unwritten.is_empty() {
                    unwritten.remove(0);
                }
                if !unwritten.iter().any(|u| matches!(u, Unwritten::Snapshot(_))) {
                    *self.writing_snapshot.borrow_mut() = None;
                }
                Ok(())
            }
            Err(e) if disk_full(&e) => {
                // Nothing of this write is in the file; it stays in
                // `unwritten` for `begin_retry`.
                let why = e.to_string();
                if let Err(reopen) = self.reopen() {
                    return Err(self.fail(format!("{why}; {reopen}")));
                }
                Err(StoreError::Full(why))
            }
            Err(e) => Err(self.fail(e.to_string())),
        }
    }

    /// Records a failed write: this and every later write are refused.
    fn fail(&self, reason: String) -> StoreError {
        log::error!("write to raft store {} failed: {reason}", self.path);
        *self.failed.borrow_mut() = Some(reason.clone());
        StoreError::Io(format!("write to {} failed: {reason}", self.path))
    }

    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        let io = |e: redb::Error| StoreError::Io(format!("reading the log of {}: {e}", self.path));
        let txn = self.db()?.begin_read().map_err(|e| io(e.into()))?;
        let table = txn.open_table(LOG).map_err(|e| io(e.into()))?;
        let max_size = max_size.unwrap_or(raft::NO_LIMIT);
        let mut out: Vec<Entry> = Vec::new();
        let mut size = 0u64;
        for row in table.range(low..high).map_err(|e| io(e.into()))? {
            let (key, value) = row.map_err(|e| io(e.into()))?;
            let expected = low + out.len() as u64;
            if key.value() != expected {
                return Err(StoreError::Io(format!("log entry {expected} is missing from {}", self.path)));
            }
            let bytes = value.value();
            // The same rule as raft's `limit_size`: the first entry always,
            // then entries while the running total stays within max_size.
            size = size.saturating_add(bytes.len() as u64);
            if !out.is_empty() && size > max_size {
                return Ok(out);
            }
            let entry = Entry::parse_from_bytes(bytes)
                .map_err(|e| StoreError::Io(format!("log entry {expected} does not decode: {e}")))?;
            if entry.index != expected {
                return Err(StoreError::Io(format!("log entry {expected} holds index {}", entry.index)));
            }
            out.push(entry);
        }
        if (out.len() as u64) < high - low {
            return Err(StoreError::Io(format!("log entry {} is missing from {}", low + out.len() as u64, self.path)));
        }
        Ok(out)
    }

    fn read_snapshot_data(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        if let Some((i, data)) = self.writing_snapshot.borrow().as_ref() {
            if *i == index {
                return Ok(data.as_ref().clone());
            }
        }
        let io = |e: redb::Error| StoreError::Io(format!("reading the snapshot of {}: {e}", self.path));
        let txn = self.db()?.begin_read().map_err(|e| io(e.into()))?;
        let table = txn.open_table(SNAPSHOT).map_err(|e| io(e.into()))?;
        let data = table.get(index).map_err(|e| io(e.into()))?;
        match data {
            Some(guard) => Ok(guard.value().to_vec()),
            None => Err(StoreError::Io(format!("the data of the snapshot at {index} is missing from {}", self.path))),
        }
    }
}

fn has_no_tables(db: &Database) -> Result<bool, redb::Error> {
    let txn = db.begin_read()?;
    let none = txn.list_tables()?.next().is_none();
    Ok(none)
}

fn initialize(db: &Database, identity: StoreIdentity) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(KEY_FORMAT_VERSION, STORE_FORMAT_VERSION.to_le_bytes().as_slice())?;
        meta.insert(KEY_IDENTITY, u64_pair_bytes(identity.cluster_id, identity.node_id).as_slice())?;
        txn.open_table(LOG)?;
        txn.open_table(SNAPSHOT)?;
    }
    txn.commit()?;
    Ok(())
}

/// Reads and checks everything but entry payloads and snapshot data.
fn load(db: &Database, identity: StoreIdentity, path: &str) -> Result<Cached, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_string(), reason };
    let redb_failed = |e: redb::Error| open_error(path, true, e);
    let txn = db.begin_read().map_err(|e| redb_failed(e.into()))?;

    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => {
            return Err(corrupt("not a midge raft store: it has no meta table".to_string()))
        }
        Err(e) => return Err(redb_failed(e.into())),
    };
    let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        let value = meta.get(key).map_err(|e| redb_failed(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    };

    let version = match get(KEY_FORMAT_VERSION)? {
        None => return Err(corrupt("not a midge raft store: it has no format version".to_string())),
        Some(bytes) => match <[u8; 4]>::try_from(bytes.as_slice()) {
            Ok(le) => u32::from_le_bytes(le),
            Err(_) => return Err(corrupt(format!("the format version record is {} bytes, not 4", bytes.len()))),
        },
    };
    if version != STORE_FORMAT_VERSION {
        return Err(corrupt(format!(
            "the file has store format version {version}; this midge reads format version {STORE_FORMAT_VERSION}"
        )));
    }

    let found = match get(KEY_IDENTITY)?.as_deref().and_then(u64_pair_from) {
        Some((cluster_id, node_id)) => StoreIdentity { cluster_id, node_id },
        None => return Err(corrupt("the identity record is missing or not 16 bytes".to_string())),
    };
    if found != identity {
        return Err(corrupt(format!(
            "the data directory belongs to cluster {} node {}; this node is cluster {} node {}. Point \
             persistence_location elsewhere, or wipe it to rejoin the cluster by snapshot",
            found.cluster_id, found.node_id, identity.cluster_id, identity.node_id
        )));
    }

    fn decoded<M: protobuf::Message>(key: &str, bytes: Option<Vec<u8>>) -> Result<Option<M>, String> {
        match bytes {
            None => Ok(None),
            Some(b) => M::parse_from_bytes(&b).map(Some).map_err(|e| format!("the {key} record does not decode: {e}")),
        }
    }
    let hard_state: HardState = decoded(KEY_HARD_STATE, get(KEY_HARD_STATE)?).map_err(corrupt)?.unwrap_or_default();
    let conf_state: ConfState = decoded(KEY_CONF_STATE, get(KEY_CONF_STATE)?).map_err(corrupt)?.unwrap_or_default();
    let snapshot_meta: Option<SnapshotMetadata> =
        decoded(KEY_SNAPSHOT_META, get(KEY_SNAPSHOT_META)?).map_err(corrupt)?;
    let (truncated_index, truncated_term) = match get(KEY_LOG_TRUNCATED)? {
        None => (0, 0),
        Some(bytes) => {
            u64_pair_from(&bytes).ok_or_else(|| corrupt("the log_truncated record is not 16 bytes".into()))?
        }
    };
    let (snap_index, snap_term) = snapshot_meta.as_ref().map_or((0, 0), |m| (m.index, m.term));
    for (what, value) in [("log_truncated", truncated_index), ("snapshot", snap_index), ("commit", hard_state.commit)] {
        if value > INDEX_MAX {
            return Err(corrupt(format!("the {what} index {value} is out of range")));
        }
    }

    let mut index = LogIndex::starting_after(truncated_index, truncated_term);
    let mut log_bytes = 0u64;
    let log = match txn.open_table(LOG) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Err(corrupt("the log table is missing".to_string())),
        Err(e) => return Err(redb_failed(e.into())),
    };
    for row in log.iter().map_err(|e| redb_failed(e.into()))? {
        let (key, value) = row.map_err(|e| redb_failed(e.into()))?;
        let (key, bytes) = (key.value(), value.value());
        if key > INDEX_MAX {
            return Err(corrupt(format!("the log index {key} is out of range")));
        }
        let entry =
            Entry::parse_from_bytes(bytes).map_err(|e| corrupt(format!("log entry {key} does not decode: {e}")))?;
        if entry.index != key {
            return Err(corrupt(format!("log entry {key} holds index {}", entry.index)));
        }
        index.push_loaded(key, entry.term).map_err(corrupt)?;
        if key > snap_index {
            log_bytes += bytes.len() as u64;
        }
    }
    index.set_loaded_snapshot(snap_index, snap_term);
    index.verify(hard_state.commit).map_err(corrupt)?;

    let snapshots = match txn.open_table(SNAPSHOT) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Err(corrupt("the snapshot table is missing".to_string())),
        Err(e) => return Err(redb_failed(e.into())),
    };
    let mut rows = Vec::new();
    for row in snapshots.iter().map_err(|e| redb_failed(e.into()))? {
        let (key, _) = row.map_err(|e| redb_failed(e.into()))?;
        rows.push(key.value());
    }
    let expected: Vec<u64> = snapshot_meta.iter().map(|m| m.index).collect();
    if rows != expected {
        return Err(corrupt(format!(
            "the snapshot table holds data for indexes {rows:?}, but the snapshot metadata names {expected:?}"
        )));
    }

    Ok(Cached { index, hard_state, conf_state, snapshot_meta, log_bytes, written_bytes: 0 })
}

/// Sum of the stored sizes of the entries in `low..=high`.
fn stored_bytes(log: &impl ReadableTable<u64, &'static [u8]>, low: u64, high: u64) -> Result<u64, redb::Error> {
    let mut total = 0u64;
    if low > high {
        return Ok(0);
    }
    for row in log.range(low..=high)? {
        let (_, value) = row?;
        total += value.value().len() as u64;
    }
    Ok(total)
}

impl raft::Storage for RedbLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cached.borrow();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (first, last) = {
            let c = self.cached.borrow();
            (c.index.first_index(), c.index.last_index())
        };
        if low < first {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        // raft checks bounds before it asks; answer a bad range with an
        // error rather than MemStorage's panic.
        if high > last + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if low == high {
            return Ok(Vec::new());
        }
        self.read_entries(low, high, max_size.into()).map_err(storage_error)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.cached.borrow().index.term(idx).map_err(|gap| match gap {
            TermGap::Compacted => raft::Error::Store(raft::StorageError::Compacted),
            TermGap::Unavailable => raft::Error::Store(raft::StorageError::Unavailable),
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cached.borrow().index.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cached.borrow().index.last_index())
    }

    /// The latest stored snapshot, with its data. When there is none yet,
    /// or it is older than `request_index`, raft is told to try later
    /// (`SnapshotTemporarilyUnavailable`): the driver should take one.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let meta = match &self.cached.borrow().snapshot_meta {
            Some(meta) if meta.index >= request_index => meta.clone(),
            _ => return Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)),
        };
        let data = self.read_snapshot_data(meta.index).map_err(storage_error)?;
        let mut snap = Snapshot::default();
        snap.set_metadata(meta);
        snap.data = data.into();
        Ok(snap)
    }
}

/// Runs `body` in one write transaction with `durability` and commits it.
fn transaction<T>(
    db: &Database,
    durability: Durability,
    body: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
) -> Result<T, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let out = body(&txn)?;
    txn.commit()?;
    Ok(out)
}

/// One `persist`'s transaction, carried out off the event loop's thread.
struct RedbWrite {
    db: Arc<Database>,
    durability: Durability,
    write: LogWrite,
    path: String,
}

impl PersistJob for RedbWrite {
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        let w = *self;
        transaction(&w.db, w.durability, |txn| w.write.write(txn))
            .map_err(|source| WriteJobError::Log { path: w.path, source })
    }
}

/// One `save_snapshot`'s transaction, off the event loop's thread.
struct RedbSnapshotWrite {
    db: Arc<Database>,
    durability: Durability,
    write: SnapshotWrite,
    path: String,
}

impl PersistJob for RedbSnapshotWrite {
    /// Ok(bytes of log entries the snapshot newly covers).
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        let w = *self;
        transaction(&w.db, w.durability, |txn| w.write.write(txn)).map_err(|source| WriteJobError::Snapshot {
            index: w.write.index,
            path: w.path,
            source,
        })
    }
}

/// Every write not yet in the file, again, in one transaction (after a
/// full disk).
struct RedbRetry {
    db: Arc<Database>,
    durability: Durability,
    writes: Vec<Unwritten>,
    path: String,
}

impl PersistJob for RedbRetry {
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        let w = *self;
        transaction(&w.db, w.durability, |txn| {
            let mut bytes = 0;
            for u in &w.writes {
                bytes += match u {
                    Unwritten::Log(l) => l.write(txn)?,
                    Unwritten::Snapshot(s) => s.write(txn)?,
                };
            }
            Ok(bytes)
        })
        .map_err(|source| WriteJobError::Log { path: w.path, source })
    }
}

impl RaftLog for RedbLog {
    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StoreError> {
        let job = self.begin_persist(entries, hard_state)?;
        self.end_persist(job.run())
    }

    /// Checks and encodes the write and updates what this store reports
    /// (last index, terms, hard state) as if it were done; the job does
    /// the transaction, on any thread.
    fn begin_persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Box<dyn PersistJob>, StoreError> {
        self.check_not_failed()?;
        let db = self.db()?;
        let mut c = self.cached.borrow_mut();
        let commit = c.hard_state.commit;
        let new_commit = hard_state.map_or(commit, |hs| hs.commit);
        c.index.check_persist(entries, commit, new_commit).map_err(refused)?;
        let rows = entries.iter().map(|e| Ok((e.index, encode(e)?))).collect::<Result<Vec<_>, StoreError>>()?;
        let hs_bytes = hard_state.map(encode).transpose()?;
        let (snap_index, _) = c.index.snapshot();
        let last = c.index.last_index();
        let added: u64 = rows.iter().filter(|(i, _)| *i > snap_index).map(|(_, b)| b.len() as u64).sum();
        c.log_bytes += added;
        c.written_bytes +=
            rows.iter().map(|(_, b)| b.len() as u64).sum::<u64>() + hs_bytes.as_ref().map_or(0, |b| b.len() as u64);
        c.index.append(entries);
        if let Some(hs) = hard_state {
            c.hard_state = hs.clone();
        }
        let write = LogWrite { rows: Arc::new(rows), hs_bytes, snap_index, last };
        self.unwritten.borrow_mut().push(Unwritten::Log(write.clone()));
        Ok(Box::new(RedbWrite { db, durability: self.durability, write, path: self.path.clone() }))
    }

    fn end_persist(&self, result: Result<u64, WriteJobError>) -> Result<(), StoreError> {
        self.end_write(result)
    }

    fn set_conf_state(&self, cs: &ConfState) -> Result<(), StoreError> {
        let mut c = self.cached.borrow_mut();
        let bytes = encode(cs)?;
        self.write(|txn| {
            txn.open_table(META)?.insert(KEY_CONF_STATE, bytes.as_slice())?;
            Ok(())
        })?;
        c.conf_state = cs.clone();
        Ok(())
    }

    fn install_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let mut c = self.cached.borrow_mut();
        let meta = snap.get_metadata();
        c.index.check_install(meta.index, c.hard_state.commit).map_err(refused)?;
        let hs = hard_state_covering(&c.hard_state, meta.index, meta.term);
        let conf_state = meta.get_conf_state().clone();
        let (meta_bytes, hs_bytes, cs_bytes) = (encode(meta)?, encode(&hs)?, encode(&conf_state)?);
        let truncated = u64_pair_bytes(meta.index, meta.term);

        self.write(|txn| {
            txn.open_table(LOG)?.retain(|_, _| false)?;
            let mut snapshots = txn.open_table(SNAPSHOT)?;
            snapshots.retain(|_, _| false)?;
            snapshots.insert(meta.index, &snap.data[..])?;
            let mut m = txn.open_table(META)?;
            m.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())?;
            m.insert(KEY_LOG_TRUNCATED, truncated.as_slice())?;
            m.insert(KEY_CONF_STATE, cs_bytes.as_slice())?;
            m.insert(KEY_HARD_STATE, hs_bytes.as_slice())?;
            Ok(())
        })?;

        c.index.reset_to_snapshot(meta.index, meta.term);
        c.hard_state = hs;
        c.conf_state = conf_state;
        c.snapshot_meta = Some(meta.clone());
        c.log_bytes = 0;
        Ok(())
    }

    fn save_snapshot(
        &self,
        index: u64,
        conf_state: &ConfState,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<(), StoreError> {
        let job = self.begin_save_snapshot(index, conf_state, data, keep_entries)?;
        self.end_save_snapshot(job.run())
    }

    /// Plans the snapshot and makes the store report it (first index,
    /// snapshot, hard state) at once; the job writes it and deletes the
    /// compacted entries, which raft no longer reads.
    fn begin_save_snapshot(
        &self,
        index: u64,
        conf_state: &ConfState,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<Box<dyn PersistJob>, StoreError> {
        self.check_not_failed()?;
        let db = self.db()?;
        let mut c = self.cached.borrow_mut();
        let plan = c.index.plan_snapshot(index, keep_entries).map_err(refused)?;
        let meta = SnapshotMetadata {
            index: plan.index,
            term: plan.term,
            conf_state: protobuf::SingularPtrField::some(conf_state.clone()),
            ..Default::default()
        };
        let hs = hard_state_covering(&c.hard_state, plan.index, plan.term);
        let (meta_bytes, hs_bytes) = (encode(&meta)?, encode(&hs)?);
        let (old_snap_index, _) = c.index.snapshot();
        let data = Arc::new(data);
        c.index.apply_snapshot(&plan);
        c.snapshot_meta = Some(meta);
        c.hard_state = hs;
        *self.writing_snapshot.borrow_mut() = Some((plan.index, data.clone()));
        let write = SnapshotWrite {
            index: plan.index,
            old_snap_index,
            compact_to: plan.compact_to,
            data,
            meta_bytes,
            hs_bytes,
        };
        self.unwritten.borrow_mut().push(Unwritten::Snapshot(write.clone()));
        Ok(Box::new(RedbSnapshotWrite { db, durability: self.durability, write, path: self.path.clone() }))
    }

    fn end_save_snapshot(&self, result: Result<u64, WriteJobError>) -> Result<(), StoreError> {
        self.end_write(result)
    }

    fn begin_retry(&self) -> Result<Box<dyn PersistJob>, StoreError> {
        self.check_not_failed()?;
        let writes = self.unwritten.borrow().clone();
        self.retrying.set(true);
        Ok(Box::new(RedbRetry { db: self.db()?, durability: self.durability, writes, path: self.path.clone() }))
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, u64, ConfState, Vec<u8>)>, StoreError> {
        let meta = match &self.cached.borrow().snapshot_meta {
            Some(meta) => meta.clone(),
            None => return Ok(None),
        };
        let data = self.read_snapshot_data(meta.index)?;
        Ok(Some((meta.index, meta.term, meta.get_conf_state().clone(), data)))
    }

    fn log_bytes(&self) -> u64 {
        self.cached.borrow().log_bytes
    }

    fn written_bytes(&self) -> u64 {
        self.cached.borrow().written_bytes
    }
}
