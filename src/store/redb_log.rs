//! `RedbLog`: the durable raft storage of one node in its data directory
//! (format version 2, documented in docs/FORMATS.md; change it only
//! together with `STORE_FORMAT_VERSION`, that document and a new golden
//! directory):
//! - `midge.redb` holds what changes rarely: the format version, the
//!   identity, the conf state, the latest snapshot (metadata and data), the
//!   hard state as of that snapshot, where the log was truncated and the
//!   first segment that belongs to the log;
//! - `raft-log/<seq>.seg` hold the log entries and hard states as they are
//!   written: append-only segment files (`segments`), one `write` and one
//!   `fdatasync` per persist. A redb commit cost about eight 4 KiB pages
//!   per persist; an append costs the page or two it touches.
//!
//! Every write is durable when it returns (unless the store was opened with
//! `durable = false`). The shape of the log (first and last index, terms,
//! snapshot index) is cached in a `LogIndex`, and where each entry is in
//! the segments in `Segs`, so raft's frequent `term()` / `last_index()`
//! calls never touch disk. This module must never panic on what it reads
//! from disk: a damaged or foreign store is a `StoreError::Corrupt` at
//! open. A torn write at the end of the last segment (a crash or power
//! loss during an append, never acknowledged) is cut off at open, with a
//! warning naming the bytes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};
use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction,
};

use super::log_index::{hard_state_covering, LogIndex, TermGap};
use super::segments::{self, Record, KIND_ENTRY, KIND_HARD_STATE, RECORD_HEADER_BYTES, SEGMENT_BYTES, SEGMENT_DIR};
use super::{PersistJob, RaftLog, StoreError, StoreIdentity, WriteJobError, STORE_FORMAT_VERSION};

/// The store's redb file inside the data directory.
pub const STORE_FILE_NAME: &str = "midge.redb";

/// Format version 1 kept the log here (log index -> one protobuf-encoded
/// `eraftpb::Entry`); version 2 keeps the table, empty, and reads it only
/// to move a version 1 log into segments.
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
/// Since format 2: segments with a lower sequence number are not part of
/// the log (an installed snapshot replaced it); u64 LE.
const KEY_LOG_BASE: &str = "log_base";

/// Larger log indexes in a file are damage: raft never gets near them, and
/// refusing them keeps `index + 1` from overflowing.
const INDEX_MAX: u64 = u64::MAX / 2;

/// redb's page cache. Its default (1 GiB) does not suit a 512 MiB gateway;
/// the file now holds only the snapshot and a few small records.
const CACHE_BYTES: usize = 1024 * 1024;

/// A snapshot keeps at most this many bytes of entries before it (besides
/// `keep_entries`), so that the log's files stay bounded when entries are
/// large.
const KEEP_BYTES_MAX: u64 = 8 * 1024 * 1024;

pub struct RedbLog {
    /// None only while the file is being reopened after a full disk.
    db: RefCell<Option<Arc<Database>>>,
    /// The file, to reopen it after a full disk.
    file: PathBuf,
    path: String,
    /// The segments' directory.
    log_dir: PathBuf,
    durability: Durability,
    cached: RefCell<Cached>,
    /// Open segment files, by sequence number, oldest first (opened when
    /// first read or appended to).
    handles: RefCell<Vec<(u64, Arc<File>)>>,
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

/// Where an entry is: its segment and its payload's offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    seq: u64,
    offset: u64,
    len: u32,
}

/// The segments as the main thread sees them (writes included as soon as
/// they are handed out).
#[derive(Debug, Default)]
struct Segs {
    /// Sequence numbers of the segments in the log, oldest first.
    seqs: VecDeque<u64>,
    /// Bytes in the newest one: the next append's offset.
    active_len: u64,
    /// The sequence number of the next new segment.
    next_seq: u64,
    /// Where each entry from `first` on is.
    locs: VecDeque<Loc>,
    first: u64,
}

impl Segs {
    fn loc(&self, index: u64) -> Option<Loc> {
        let i = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(i).ok()?).copied()
    }

    /// Entries from `index` on are replaced: returns the payload bytes of
    /// those after `snap_index` that go.
    fn cut_from(&mut self, index: u64, snap_index: u64) -> u64 {
        let mut dropped = 0;
        while self.first + (self.locs.len() as u64) > index {
            let i = self.first + self.locs.len() as u64 - 1;
            let Some(loc) = self.locs.pop_back() else { break };
            if i > snap_index {
                dropped += loc.len as u64;
            }
        }
        if self.locs.is_empty() {
            self.first = index;
        }
        dropped
    }

    /// Forget entries up to `cut`; returns the segments that now hold
    /// nothing of the log (never the newest one).
    fn compact_to(&mut self, cut: u64) -> Vec<u64> {
        while self.first <= cut {
            if self.locs.pop_front().is_none() {
                break;
            }
            self.first += 1;
        }
        if self.locs.is_empty() {
            self.first = self.first.max(cut + 1);
        }
        let keep_from = self.locs.front().map_or(self.seqs.back().copied().unwrap_or(0), |l| l.seq);
        let mut gone = Vec::new();
        while self.seqs.len() > 1 && self.seqs.front().is_some_and(|&s| s < keep_from) {
            gone.extend(self.seqs.pop_front());
        }
        gone
    }
}

/// What a write job writes, kept (sharing its bytes) until the job ended
/// well, so that a write that found the disk full can run again.
#[derive(Clone)]
enum Unwritten {
    Log(LogWrite),
    Snapshot(SnapshotWrite),
}

/// One `persist`: records appended to a segment at a known offset, so
/// that writing it again after a full disk writes the same bytes to the
/// same place.
#[derive(Clone)]
struct LogWrite {
    /// The segment file.
    seg: PathBuf,
    /// An open handle, unless this write creates the segment.
    file: Option<Arc<File>>,
    offset: u64,
    bytes: Arc<Vec<u8>>,
    durable: bool,
    /// The directory to fsync when this write creates the segment.
    log_dir: PathBuf,
}

impl LogWrite {
    fn write(&self) -> std::io::Result<()> {
        let opened;
        let file = match &self.file {
            Some(f) => f.as_ref(),
            None => {
                opened =
                    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.seg)?;
                &opened
            }
        };
        // Only the newest segment ends in allocated zeros: a segment takes
        // writes until its records reach `SEGMENT_BYTES`.
        if self.file.is_none() && !preallocate(file) {
            log::debug!("{}: not preallocated, its records extend the file", self.seg.display());
        }
        file.write_all_at(&self.bytes, self.offset)?;
        if self.durable {
            file.sync_data()?;
            if self.file.is_none() {
                File::open(&self.log_dir)?.sync_all()?;
            }
        }
        Ok(())
    }
}

/// Allocates `file` up to `SEGMENT_BYTES` (it reads as zeros past its
/// records), so that the appends that follow write over allocated space
/// and their `fdatasync` need not commit a new file size too. Measured on
/// ext4 (a loop of 1 KiB `pwrite` + `fdatasync`, the device's written
/// sectors from /sys/block/*/stat): 120 instead of 170 us each, and 5.2
/// instead of 8 KiB written to the device (the journal's commit of the
/// size is gone; what the journal writes is not in a process's
/// /proc/PID/io, so `scripts/bench-wear.sh` does not see it). False when
/// the file system cannot (no `fallocate`, or no room for a whole
/// segment): then the records extend the file as they are written, which
/// `load` reads just the same.
fn preallocate(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(SEGMENT_BYTES) else { return false };
    // SAFETY: `file` is an open descriptor for the call's duration, and
    // fallocate reads nothing but its integer arguments.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) == 0 }
}

/// One `save_snapshot`: the snapshot and where the log is truncated, in one
/// redb transaction; then the segments that hold only compacted entries
/// are deleted.
#[derive(Clone)]
struct SnapshotWrite {
    index: u64,
    compact_to: Option<(u64, u64)>,
    data: Arc<Vec<u8>>,
    meta_bytes: Vec<u8>,
    hs_bytes: Vec<u8>,
    delete: Vec<PathBuf>,
}

impl SnapshotWrite {
    fn write(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        let mut m = txn.open_table(META)?;
        if let Some((cut, cut_term)) = self.compact_to {
            m.insert(KEY_LOG_TRUNCATED, u64_pair_bytes(cut, cut_term).as_slice())?;
        }
        let mut snapshots = txn.open_table(SNAPSHOT)?;
        snapshots.retain(|_, _| false)?;
        snapshots.insert(self.index, self.data.as_slice())?;
        m.insert(KEY_SNAPSHOT_META, self.meta_bytes.as_slice())?;
        m.insert(KEY_HARD_STATE, self.hs_bytes.as_slice())?;
        Ok(())
    }

    /// After the transaction: the segments it made useless. A file that
    /// stays (an error) is deleted at the next open.
    fn delete_segments(&self) {
        for seg in &self.delete {
            if let Err(e) = std::fs::remove_file(seg) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot delete the compacted log segment {}: {e}", seg.display());
                }
            }
        }
    }
}

/// Whether a failed I/O found the disk (or the user's quota) full.
fn io_full(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::StorageFull || matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Whether a failed write found the disk (or the user's quota) full.
fn disk_full(e: &WriteJobError) -> bool {
    match e {
        WriteJobError::Log { source: redb::Error::Io(io), .. }
        | WriteJobError::Snapshot { source: redb::Error::Io(io), .. } => io_full(io),
        WriteJobError::Segment { source, .. } => io_full(source),
        _ => false,
    }
}

/// What the store holds, minus entry payloads and snapshot data.
struct Cached {
    index: LogIndex,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: Option<SnapshotMetadata>,
    segs: Segs,
    /// Encoded bytes of the entries after the snapshot index.
    log_bytes: u64,
    /// Record bytes handed to write jobs since the store was opened.
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
const START_FRESH: &str = "To start this node with no data, move the file and the log directory beside it aside \
                           (or delete them); a cluster node then receives the state from the leader";

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
    /// Opens the store in `dir`, creating `dir`, `midge.redb` and `log/` if
    /// needed. A new store gets the format version and `identity`; an
    /// existing one must carry the same ones and pass the integrity checks
    /// listed in docs/FORMATS.md (a format 1 store has its log moved into
    /// segments first). `durable = false` writes without fsync: a crash or
    /// power loss may then lose every write since the last clean close.
    pub fn open(dir: &Path, identity: StoreIdentity, durable: bool) -> Result<RedbLog, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Open { path: dir.display().to_string(), reason: e.to_string() })?;
        let file = dir.join(STORE_FILE_NAME);
        let path = file.display().to_string();
        let log_dir = dir.join(SEGMENT_DIR);
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
        // into an error instead of a panic; the file holds one snapshot
        // and a few records, so this costs little.
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&file)
            .map_err(|e| refused_file(&file, open_error(&path, file_existed, e.into())))?;

        // A crash between redb creating the file and our first commit leaves
        // a valid database without tables: still a fresh store.
        let fresh = !file_existed || has_no_tables(&db).map_err(|e| open_error(&path, true, e))?;
        if fresh {
            if segments_in(&log_dir).map_err(|reason| StoreError::Open { path: path.clone(), reason })?.next().is_some()
            {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    reason: format!(
                        "{} holds log segments but the store file is new: the file was deleted or replaced. \
                         {START_FRESH}",
                        log_dir.display()
                    ),
                });
            }
            initialize(&db, identity).map_err(|e| open_error(&path, file_existed, e))?;
            log::info!("created raft store {path} for cluster {} node {}", identity.cluster_id, identity.node_id);
        }
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| StoreError::Open { path: log_dir.display().to_string(), reason: e.to_string() })?;
        let meta = load_meta(&db, identity, &path)?;
        if meta.version == 1 {
            migrate_v1(&db, &path, &log_dir, durable)?;
        }
        let meta = load_meta(&db, identity, &path)?;
        let cached = load(meta, &path, &log_dir, durable).map_err(|e| refused_file(&file, e))?;
        log::info!(
            "opened raft store {path}: log {}..={} in {} segment(s), commit {}, snapshot at {}",
            cached.index.first_index(),
            cached.index.last_index(),
            cached.segs.seqs.len(),
            cached.hard_state.commit,
            cached.index.snapshot().0
        );
        Ok(RedbLog {
            db: RefCell::new(Some(Arc::new(db))),
            file,
            path,
            log_dir,
            durability: if durable { Durability::Immediate } else { Durability::None },
            cached: RefCell::new(cached),
            handles: RefCell::new(Vec::new()),
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

    fn durable(&self) -> bool {
        !matches!(self.durability, Durability::None)
    }

    fn seg_path(&self, seq: u64) -> PathBuf {
        self.log_dir.join(segments::segment_name(seq))
    }

    /// An open handle of segment `seq` (opened now if need be).
    fn handle(&self, seq: u64) -> std::io::Result<Arc<File>> {
        let mut handles = self.handles.borrow_mut();
        let at = handles.partition_point(|(s, _)| *s < seq);
        if let Some((s, f)) = handles.get(at) {
            if *s == seq {
                return Ok(f.clone());
            }
        }
        let f = Arc::new(std::fs::OpenOptions::new().read(true).write(true).open(self.seg_path(seq))?);
        handles.insert(at, (seq, f.clone()));
        Ok(f)
    }

    fn forget_handles(&self, below: u64) {
        self.handles.borrow_mut().retain(|(s, _)| *s >= below);
    }

    /// Runs `body` in one write transaction and commits it. A full disk
    /// is `StoreError::Full`: nothing of it was written, and the store
    /// takes writes again (reopened at its last transaction). After any
    /// other failure, this and every later write are refused.
    fn write<T>(&self, body: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>) -> Result<T, StoreError> {
        self.check_not_failed()?;
        let db = self.db()?;
        match transaction(&db, self.durability, body) {
            Ok(t) => Ok(t),
            Err(redb::Error::Io(io)) if io_full(&io) => {
                drop(db);
                let why = format!("{io} (writing to {})", self.path);
                if let Err(reopen) = self.reopen() {
                    return Err(self.fail(format!("{why}; {reopen}")));
                }
                Err(StoreError::Full(why))
            }
            Err(e) => Err(self.fail(e.to_string())),
        }
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

    /// Ends a write job: Ok, or why it failed.
    fn end_write(&self, result: Result<u64, WriteJobError>) -> Result<(), StoreError> {
        let retried = self.retrying.replace(false);
        match result {
            Ok(_) => {
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
                // What the job wrote is written again, to the same place,
                // by `begin_retry`: it stays in `unwritten`.
                let why = e.to_string();
                if matches!(e, WriteJobError::Snapshot { .. } | WriteJobError::Log { .. }) {
                    if let Err(reopen) = self.reopen() {
                        return Err(self.fail(format!("{why}; {reopen}")));
                    }
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
        let max_size = max_size.unwrap_or(raft::NO_LIMIT);
        let locs: Vec<Loc> = {
            let c = self.cached.borrow();
            let mut locs = Vec::new();
            let mut size = 0u64;
            for index in low..high {
                let loc = c.segs.loc(index).ok_or_else(|| {
                    StoreError::Io(format!("log entry {index} is missing from {}", self.log_dir.display()))
                })?;
                // The same rule as raft's `limit_size`: the first entry
                // always, then entries while the total stays within max_size.
                size = size.saturating_add(loc.len as u64);
                if !locs.is_empty() && size > max_size {
                    break;
                }
                locs.push(loc);
            }
            locs
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut buf = Vec::new();
        let mut i = 0;
        while i < locs.len() {
            // Entries next to each other in one segment: one read.
            let first = locs[i];
            let mut j = i + 1;
            let mut end = first.offset + first.len as u64;
            while j < locs.len()
                && locs[j].seq == first.seq
                && locs[j].offset == end + RECORD_HEADER_BYTES as u64
                && end - first.offset < 1024 * 1024
            {
                end = locs[j].offset + locs[j].len as u64;
                j += 1;
            }
            let start = first.offset - RECORD_HEADER_BYTES as u64;
            buf.resize((end - start) as usize, 0);
            let io = |e: std::io::Error| {
                StoreError::Io(format!("reading log segment {}: {e}", self.seg_path(first.seq).display()))
            };
            self.handle(first.seq).and_then(|f| f.read_exact_at(&mut buf, start)).map_err(io)?;
            for (k, loc) in locs[i..j].iter().enumerate() {
                let index = low + (i + k) as u64;
                let at = (loc.offset - RECORD_HEADER_BYTES as u64 - start) as usize;
                let payload = segments::check_record(&buf[at..], KIND_ENTRY)
                    .map_err(|e| StoreError::Io(format!("log entry {index} reads back damaged: {e}")))?;
                let entry = Entry::parse_from_bytes(payload)
                    .map_err(|e| StoreError::Io(format!("log entry {index} does not decode: {e}")))?;
                if entry.index != index {
                    return Err(StoreError::Io(format!("log entry {index} holds index {}", entry.index)));
                }
                out.push(entry);
            }
            i = j;
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

/// The segment files in `log_dir` (sequence number, path), in no order;
/// none when the directory does not exist. Other files are left alone.
fn segments_in(log_dir: &Path) -> Result<impl Iterator<Item = (u64, PathBuf)>, String> {
    let read = match std::fs::read_dir(log_dir) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot list {}: {e}", log_dir.display())),
    };
    let mut found = Vec::new();
    for item in read.into_iter().flatten() {
        let item = item.map_err(|e| format!("cannot list {}: {e}", log_dir.display()))?;
        if let Some(seq) = item.file_name().to_str().and_then(segments::parse_segment_name) {
            found.push((seq, item.path()));
        }
    }
    Ok(found.into_iter())
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
        meta.insert(KEY_LOG_BASE, 1u64.to_le_bytes().as_slice())?;
        txn.open_table(LOG)?;
        txn.open_table(SNAPSHOT)?;
    }
    txn.commit()?;
    Ok(())
}

/// The records of `midge.redb`, checked.
struct Meta {
    version: u32,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: Option<SnapshotMetadata>,
    truncated: (u64, u64),
    log_base: u64,
}

/// Reads and checks the small records and the snapshot table.
fn load_meta(db: &Database, identity: StoreIdentity, path: &str) -> Result<Meta, StoreError> {
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
    if version != STORE_FORMAT_VERSION && version != 1 {
        return Err(corrupt(format!(
            "the file has store format version {version}; this midge reads format versions 1 and \
             {STORE_FORMAT_VERSION}"
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
    let truncated = match get(KEY_LOG_TRUNCATED)? {
        None => (0, 0),
        Some(bytes) => {
            u64_pair_from(&bytes).ok_or_else(|| corrupt("the log_truncated record is not 16 bytes".into()))?
        }
    };
    let log_base = match get(KEY_LOG_BASE)? {
        None if version == 1 => 1,
        None => return Err(corrupt("the log_base record is missing".to_string())),
        Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(le) => u64::from_le_bytes(le),
            Err(_) => return Err(corrupt(format!("the log_base record is {} bytes, not 8", bytes.len()))),
        },
    };
    let snap_index = snapshot_meta.as_ref().map_or(0, |m| m.index);
    for (what, value) in [("log_truncated", truncated.0), ("snapshot", snap_index), ("commit", hard_state.commit)] {
        if value > INDEX_MAX {
            return Err(corrupt(format!("the {what} index {value} is out of range")));
        }
    }

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
    match txn.open_table(LOG) {
        Ok(_) => {}
        Err(TableError::TableDoesNotExist(_)) => return Err(corrupt("the log table is missing".to_string())),
        Err(e) => return Err(redb_failed(e.into())),
    }
    Ok(Meta { version, hard_state, conf_state, snapshot_meta, truncated, log_base })
}

/// Format 1 kept the log in redb's `log` table: write it to segment 1
/// (after deleting segments an earlier, interrupted move left), make that
/// durable, then empty the table and set format 2 in one transaction. A
/// crash in between leaves a format 1 store, moved again at the next open.
fn migrate_v1(db: &Database, path: &str, log_dir: &Path, durable: bool) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_string(), reason };
    let redb_failed = |e: redb::Error| open_error(path, true, e);
    let io =
        |what: &str, e: std::io::Error| StoreError::Open { path: path.to_string(), reason: format!("{what}: {e}") };
    let mut bytes = segments::header(1).to_vec();
    let mut count = 0u64;
    {
        let txn = db.begin_read().map_err(|e| redb_failed(e.into()))?;
        let log = txn.open_table(LOG).map_err(|e| redb_failed(e.into()))?;
        for row in log.iter().map_err(|e| redb_failed(e.into()))? {
            let (key, value) = row.map_err(|e| redb_failed(e.into()))?;
            let (key, payload) = (key.value(), value.value());
            let entry = Entry::parse_from_bytes(payload)
                .map_err(|e| corrupt(format!("log entry {key} does not decode: {e}")))?;
            if entry.index != key {
                return Err(corrupt(format!("log entry {key} holds index {}", entry.index)));
            }
            segments::encode_record(KIND_ENTRY, payload, &mut bytes);
            count += 1;
        }
        let meta = txn.open_table(META).map_err(|e| redb_failed(e.into()))?;
        if let Some(hs) = meta.get(KEY_HARD_STATE).map_err(|e| redb_failed(e.into()))? {
            segments::encode_record(KIND_HARD_STATE, hs.value(), &mut bytes);
        }
    }
    for (_, old) in segments_in(log_dir).map_err(|reason| StoreError::Open { path: path.to_string(), reason })? {
        std::fs::remove_file(&old).map_err(|e| io("removing a segment of an interrupted upgrade", e))?;
    }
    let seg = log_dir.join(segments::segment_name(1));
    let write =
        LogWrite { seg: seg.clone(), file: None, offset: 0, bytes: Arc::new(bytes), durable, log_dir: log_dir.into() };
    write.write().map_err(|e| io(&format!("writing {}", seg.display()), e))?;
    let txn = db.begin_write().map_err(|e| redb_failed(e.into()))?;
    {
        txn.open_table(LOG)
            .and_then(|mut t| t.retain(|_, _| false).map_err(Into::into))
            .map_err(|e| redb_failed(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| redb_failed(e.into()))?;
        meta.insert(KEY_FORMAT_VERSION, STORE_FORMAT_VERSION.to_le_bytes().as_slice())
            .map_err(|e| redb_failed(e.into()))?;
        meta.insert(KEY_LOG_BASE, 1u64.to_le_bytes().as_slice()).map_err(|e| redb_failed(e.into()))?;
    }
    txn.commit().map_err(|e| redb_failed(e.into()))?;
    log::warn!(
        "upgraded raft store {path} from format 1 to {STORE_FORMAT_VERSION}: {count} log entries moved to {}",
        seg.display()
    );
    Ok(())
}

/// Reads the segments of the log and puts the store's shape together.
fn load(meta: Meta, path: &str, log_dir: &Path, durable: bool) -> Result<Cached, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { path: path.to_string(), reason };
    let open_failed = |reason: String| StoreError::Open { path: path.to_string(), reason };
    let mut found: Vec<(u64, PathBuf)> = segments_in(log_dir).map_err(open_failed)?.collect();
    found.sort();
    // Segments before the base were replaced by an installed snapshot
    // (deleting them was cut short).
    for (_, old) in found.iter().filter(|(s, _)| *s < meta.log_base) {
        if let Err(e) = std::fs::remove_file(old) {
            log::warn!("cannot delete the replaced log segment {}: {e}", old.display());
        }
    }
    found.retain(|(s, _)| *s >= meta.log_base);

    // Every entry record in write order, with raft's conflict rule: a
    // record at or below the last index replaces the entries from there.
    let mut loaded: VecDeque<(u64, u64, Loc)> = VecDeque::new();
    let mut hs_log: Option<HardState> = None;
    let mut seqs = VecDeque::new();
    let mut active_len = 0u64;
    let count = found.len();
    for (n, (seq, seg)) in found.iter().enumerate() {
        let last_segment = n + 1 == count;
        let name = seg.display().to_string();
        let bytes = std::fs::read(seg).map_err(|e| open_failed(format!("cannot read {name}: {e}")))?;
        if let Err(why) = segments::check_header(&bytes, *seq) {
            let never_written =
                bytes.len() < segments::HEADER_BYTES || bytes[..segments::HEADER_BYTES].iter().all(|&b| b == 0);
            if last_segment && never_written {
                // Created, never written: the write that made it did not
                // finish, and nothing in it was acknowledged.
                log::warn!("removing the log segment {name}: its first write did not finish ({} bytes)", bytes.len());
                std::fs::remove_file(seg).map_err(|e| open_failed(format!("cannot remove {name}: {e}")))?;
                continue;
            }
            return Err(corrupt(format!("the log segment {name} is not readable: {why}")));
        }
        // (A torn segment's records end where the damage begins.)
        let segments::Scanned { records, end: len, torn } = segments::scan(&bytes);
        if let Some(torn) = &torn {
            if !last_segment {
                return Err(corrupt(format!(
                    "the log segment {name} is damaged at byte {}: {} (only the newest segment can end in an \
                     unfinished write)",
                    torn.at, torn.reason
                )));
            }
            // Up to its last byte that is not zero: a preallocated
            // segment's rest was never written.
            let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1);
            log::warn!(
                "the log segment {name} ends in a write that did not finish (at byte {}: {}): cutting off its last \
                 {} bytes, which were never acknowledged",
                torn.at,
                torn.reason,
                written.saturating_sub(torn.at)
            );
        }
        // The newest segment: cut after its last whole record, and
        // allocated whole (see `preallocate`), so that what follows its
        // records is zeros, never an old record the next appends would not
        // overwrite. A segment written before segments were allocated
        // ahead (or where there was no room) is allocated now, if it can be.
        if torn.is_some() || (last_segment && (bytes.len() as u64) < SEGMENT_BYTES) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(seg)
                .map_err(|e| open_failed(format!("cannot open {name} to cut or allocate it: {e}")))?;
            if torn.is_some() {
                f.set_len(len).map_err(|e| open_failed(format!("cannot cut {name}: {e}")))?;
            }
            let allocated = preallocate(&f);
            if durable && (torn.is_some() || allocated) {
                f.sync_all().map_err(|e| open_failed(format!("cannot sync {name}: {e}")))?;
            }
        }
        for Record { kind, offset, len } in records {
            let payload = &bytes[offset as usize..(offset + len as u64) as usize];
            if kind == KIND_HARD_STATE {
                hs_log =
                    Some(HardState::parse_from_bytes(payload).map_err(|e| {
                        corrupt(format!("a hard state in {name} at byte {offset} does not decode: {e}"))
                    })?);
                continue;
            }
            let entry = Entry::parse_from_bytes(payload)
                .map_err(|e| corrupt(format!("a log entry in {name} at byte {offset} does not decode: {e}")))?;
            let index = entry.index;
            if index > INDEX_MAX || index == 0 {
                return Err(corrupt(format!("the log index {index} is out of range ({name} at byte {offset})")));
            }
            if let Some(&(last, _, _)) = loaded.back() {
                if index > last + 1 {
                    return Err(corrupt(format!(
                        "log entry {} is missing (the log jumps from {last} to {index} in {name})",
                        last + 1
                    )));
                }
                while loaded.back().is_some_and(|(i, _, _)| *i >= index) {
                    loaded.pop_back();
                }
            }
            loaded.push_back((index, entry.term, Loc { seq: *seq, offset, len }));
        }
        seqs.push_back(*seq);
        active_len = len;
    }

    let (truncated_index, truncated_term) = meta.truncated;
    let (snap_index, snap_term) = meta.snapshot_meta.as_ref().map_or((0, 0), |m| (m.index, m.term));
    while loaded.front().is_some_and(|(i, _, _)| *i <= truncated_index) {
        loaded.pop_front();
    }
    let mut index = LogIndex::starting_after(truncated_index, truncated_term);
    let mut segs = Segs {
        seqs,
        active_len,
        next_seq: found.last().map_or(meta.log_base, |(s, _)| s + 1).max(meta.log_base),
        locs: VecDeque::with_capacity(loaded.len()),
        first: truncated_index + 1,
    };
    let mut log_bytes = 0u64;
    for (i, term, loc) in loaded {
        index.push_loaded(i, term).map_err(corrupt)?;
        if i > snap_index {
            log_bytes += loc.len as u64;
        }
        segs.locs.push_back(loc);
    }
    index.set_loaded_snapshot(snap_index, snap_term);

    // The hard state: the newest of the one stored with the snapshot and
    // the last one appended to the log (terms only grow, a vote is cast
    // once per term, commits only grow).
    let mut hard_state = meta.hard_state;
    if let Some(hs) = hs_log {
        let commit = hard_state.commit.max(hs.commit);
        if hs.term > hard_state.term || (hs.term == hard_state.term && hs.vote != 0) {
            hard_state = hs;
        }
        hard_state.commit = commit;
    }
    index.verify(hard_state.commit).map_err(corrupt)?;
    Ok(Cached {
        index,
        hard_state,
        conf_state: meta.conf_state,
        snapshot_meta: meta.snapshot_meta,
        segs,
        log_bytes,
        written_bytes: 0,
    })
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

/// One `persist`'s append, carried out off the event loop's thread.
struct SegmentWrite {
    write: LogWrite,
}

impl PersistJob for SegmentWrite {
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        self.write
            .write()
            .map_err(|source| WriteJobError::Segment { path: self.write.seg.display().to_string(), source })?;
        Ok(0)
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
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        let w = *self;
        transaction(&w.db, w.durability, |txn| w.write.write(txn)).map_err(|source| WriteJobError::Snapshot {
            index: w.write.index,
            path: w.path,
            source,
        })?;
        w.write.delete_segments();
        Ok(0)
    }
}

/// Every write not yet done, again, in order (after a full disk).
struct Retry {
    db: Arc<Database>,
    durability: Durability,
    writes: Vec<Unwritten>,
    path: String,
}

impl PersistJob for Retry {
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        for u in self.writes {
            match u {
                Unwritten::Log(write) => Box::new(SegmentWrite { write }).run()?,
                Unwritten::Snapshot(write) => Box::new(RedbSnapshotWrite {
                    db: self.db.clone(),
                    durability: self.durability,
                    write,
                    path: self.path.clone(),
                })
                .run()?,
            };
        }
        Ok(0)
    }
}

impl RaftLog for RedbLog {
    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StoreError> {
        let job = self.begin_persist(entries, hard_state)?;
        self.end_persist(job.run())
    }

    /// Checks and encodes the write and updates what this store reports
    /// (last index, terms, hard state) as if it were done; the job appends
    /// it, on any thread.
    fn begin_persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Box<dyn PersistJob>, StoreError> {
        self.check_not_failed()?;
        let mut c = self.cached.borrow_mut();
        let commit = c.hard_state.commit;
        let new_commit = hard_state.map_or(commit, |hs| hs.commit);
        c.index.check_persist(entries, commit, new_commit).map_err(refused)?;

        // A new segment when there is none or the newest one is full.
        let roll = c.segs.seqs.is_empty() || c.segs.active_len >= SEGMENT_BYTES;
        let (seq, offset, file) = if roll {
            (c.segs.next_seq, 0, None)
        } else {
            let seq = *c.segs.seqs.back().expect("a segment");
            let file = self.handle(seq).map_err(|e| {
                StoreError::Io(format!("cannot open log segment {}: {e}", self.seg_path(seq).display()))
            })?;
            (seq, c.segs.active_len, Some(file))
        };
        let mut bytes = Vec::new();
        if roll {
            bytes.extend_from_slice(&segments::header(seq));
        }
        let mut locs = Vec::with_capacity(entries.len());
        for e in entries {
            let payload = encode(e)?;
            let at = offset + (bytes.len() + RECORD_HEADER_BYTES) as u64;
            locs.push(Loc { seq, offset: at, len: payload.len() as u32 });
            segments::encode_record(KIND_ENTRY, &payload, &mut bytes);
        }
        if let Some(hs) = hard_state {
            segments::encode_record(KIND_HARD_STATE, &encode(hs)?, &mut bytes);
        }

        let (snap_index, _) = c.index.snapshot();
        if let Some(first) = entries.first() {
            let dropped = c.segs.cut_from(first.index, snap_index);
            c.log_bytes = c.log_bytes.saturating_sub(dropped);
        }
        for (e, loc) in entries.iter().zip(&locs) {
            if e.index > snap_index {
                c.log_bytes += loc.len as u64;
            }
        }
        c.segs.locs.extend(locs);
        if roll {
            c.segs.seqs.push_back(seq);
            c.segs.next_seq = seq + 1;
        }
        c.segs.active_len = offset + bytes.len() as u64;
        c.written_bytes += bytes.len() as u64;
        c.index.append(entries);
        if let Some(hs) = hard_state {
            c.hard_state = hs.clone();
        }
        let write = LogWrite {
            seg: self.seg_path(seq),
            file,
            offset,
            bytes: Arc::new(bytes),
            durable: self.durable(),
            log_dir: self.log_dir.clone(),
        };
        self.unwritten.borrow_mut().push(Unwritten::Log(write.clone()));
        Ok(Box::new(SegmentWrite { write }))
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

    /// The snapshot replaces the whole log: one transaction stores it and
    /// moves the log's base past every segment there is; then they are
    /// deleted (at the next open, if this is cut short).
    fn install_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let mut c = self.cached.borrow_mut();
        let meta = snap.get_metadata();
        c.index.check_install(meta.index, c.hard_state.commit).map_err(refused)?;
        let hs = hard_state_covering(&c.hard_state, meta.index, meta.term);
        let conf_state = meta.get_conf_state().clone();
        let (meta_bytes, hs_bytes, cs_bytes) = (encode(meta)?, encode(&hs)?, encode(&conf_state)?);
        let truncated = u64_pair_bytes(meta.index, meta.term);
        let base = c.segs.next_seq;

        self.write(|txn| {
            let mut snapshots = txn.open_table(SNAPSHOT)?;
            snapshots.retain(|_, _| false)?;
            snapshots.insert(meta.index, &snap.data[..])?;
            let mut m = txn.open_table(META)?;
            m.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())?;
            m.insert(KEY_LOG_TRUNCATED, truncated.as_slice())?;
            m.insert(KEY_LOG_BASE, base.to_le_bytes().as_slice())?;
            m.insert(KEY_CONF_STATE, cs_bytes.as_slice())?;
            m.insert(KEY_HARD_STATE, hs_bytes.as_slice())?;
            Ok(())
        })?;
        self.forget_handles(u64::MAX);
        for seq in c.segs.seqs.drain(..) {
            let seg = self.seg_path(seq);
            if let Err(e) = std::fs::remove_file(&seg) {
                log::warn!("cannot delete the replaced log segment {}: {e}", seg.display());
            }
        }

        c.index.reset_to_snapshot(meta.index, meta.term);
        c.segs = Segs { next_seq: base, first: meta.index + 1, ..Segs::default() };
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
    /// segments that hold only compacted entries, which raft no longer
    /// reads.
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
        // Keep at most KEEP_BYTES_MAX of entries before the snapshot.
        let mut keep = 0u64;
        let mut kept_bytes = 0u64;
        while keep < keep_entries && index > keep {
            match c.segs.loc(index - keep) {
                Some(loc) if kept_bytes + loc.len as u64 <= KEEP_BYTES_MAX => kept_bytes += loc.len as u64,
                _ => break,
            }
            keep += 1;
        }
        let plan = c.index.plan_snapshot(index, keep).map_err(refused)?;
        let meta = SnapshotMetadata {
            index: plan.index,
            term: plan.term,
            conf_state: protobuf::SingularPtrField::some(conf_state.clone()),
            ..Default::default()
        };
        let hs = hard_state_covering(&c.hard_state, plan.index, plan.term);
        let (meta_bytes, hs_bytes) = (encode(&meta)?, encode(&hs)?);
        let (old_snap_index, _) = c.index.snapshot();
        // The entries the snapshot newly covers no longer count as log.
        let mut covered = 0u64;
        for i in old_snap_index + 1..=plan.index {
            covered += c.segs.loc(i).map_or(0, |l| l.len as u64);
        }
        c.log_bytes = c.log_bytes.saturating_sub(covered);
        let delete = match plan.compact_to {
            Some((cut, _)) => c.segs.compact_to(cut),
            None => Vec::new(),
        };
        if let Some(&newest_gone) = delete.last() {
            self.forget_handles(newest_gone + 1);
        }
        let data = Arc::new(data);
        c.index.apply_snapshot(&plan);
        c.snapshot_meta = Some(meta);
        c.hard_state = hs;
        *self.writing_snapshot.borrow_mut() = Some((plan.index, data.clone()));
        let write = SnapshotWrite {
            index: plan.index,
            compact_to: plan.compact_to,
            data,
            meta_bytes,
            hs_bytes,
            delete: delete.into_iter().map(|s| self.seg_path(s)).collect(),
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
        Ok(Box::new(Retry { db: self.db()?, durability: self.durability, writes, path: self.path.clone() }))
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

    fn older_segments(&self) -> usize {
        self.cached.borrow().segs.seqs.len().saturating_sub(1)
    }
}
