//! Durable raft storage: the raft log, hard state, conf state and the
//! snapshot of the applied broker state with its index. `RaftLog` is what
//! the cluster driver needs; `RedbLog` keeps it in one redb file, `MemLog`
//! keeps it in memory for the deterministic simulation (it survives a
//! simulated crash because the simulation owns it, like a disk).

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

mod log_index;
pub mod mem;
pub mod redb_log;
pub mod segments;
pub mod staged;
#[cfg(test)]
mod tests;

pub use mem::MemLog;
pub use redb_log::RedbLog;
pub use staged::{FlushJob, FlushResult, Staged};

/// On-disk format version of the redb file (tables and record encodings,
/// see docs/FORMATS.md). Bump on any change; `RedbLog::open` refuses a
/// file with another version.
pub const STORE_FORMAT_VERSION: u32 = 2;

#[derive(Debug)]
pub enum StoreError {
    /// The data directory or file could not be created or opened.
    Open { path: String, reason: String },
    /// The file exists but is not a midge store, has another format
    /// version, belongs to another cluster or node, or fails an integrity
    /// check (a missing log entry, a hard state that points past the log).
    Corrupt { path: String, reason: String },
    /// A read or write failed after opening. Also a write that would break
    /// the log's invariants (a gap, overwriting committed or compacted
    /// entries, a commit past the log, an out-of-date snapshot): refused
    /// before anything is written, with a message starting "write refused".
    /// After a write failed, every later write is refused until reopen.
    Io(String),
    /// A write job found the disk full (ENOSPC, EDQUOT). Nothing was
    /// written and nothing is lost: the store keeps the write and runs it
    /// again (`RaftLog::begin_retry`) until it succeeds; meanwhile no
    /// other write may begin.
    Full(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Open { path, reason } => write!(f, "cannot open data store {path}: {reason}"),
            StoreError::Corrupt { path, reason } => write!(f, "data store {path} is damaged or foreign: {reason}"),
            StoreError::Io(r) => write!(f, "data store I/O error: {r}"),
            StoreError::Full(r) => write!(f, "data store full: {r}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a write job (`PersistJob::run`) failed. The job runs off the event
/// loop's thread; `end_persist` / `end_save_snapshot` take this back and
/// turn it into a `StoreError` (and refuse every later write).
#[derive(Debug)]
pub enum WriteJobError {
    /// The transaction with a Ready's log entries and hard state.
    Log { path: String, source: redb::Error },
    /// The transaction with the snapshot taken at `index` and the log
    /// compaction that goes with it.
    Snapshot { index: u64, path: String, source: redb::Error },
    /// The append of a Ready's entries and hard state to a log segment.
    Segment { path: String, source: std::io::Error },
}

impl std::fmt::Display for WriteJobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteJobError::Log { path, source } => write!(f, "{source} (writing the log of {path})"),
            WriteJobError::Snapshot { index, path, source } => {
                write!(f, "{source} (writing the snapshot at {index} to {path})")
            }
            WriteJobError::Segment { path, source } => write!(f, "{source} (appending to the log segment {path})"),
        }
    }
}

impl std::error::Error for WriteJobError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteJobError::Log { source, .. } | WriteJobError::Snapshot { source, .. } => Some(source),
            WriteJobError::Segment { source, .. } => Some(source),
        }
    }
}

/// Identity written into a store when it is created and checked at every
/// open, so a data directory from another cluster or node is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
}

/// The transaction of one `begin_persist`, to run on any thread.
pub trait PersistJob: Send {
    /// Ok(bytes of log entries the write replaced), or why it failed.
    fn run(self: Box<Self>) -> Result<u64, WriteJobError>;
}

/// A job with nothing left to do.
struct Written;

impl PersistJob for Written {
    fn run(self: Box<Self>) -> Result<u64, WriteJobError> {
        Ok(0)
    }
}

/// Raft storage with the write side the Ready loop needs. All methods that
/// write are durable when they return (one transaction each; one fsync
/// unless durability was relaxed).
pub trait RaftLog: raft::Storage {
    /// Persist one Ready: append `entries` (first dropping any existing
    /// entries at or after the first new index — raft's conflict rule), and
    /// store `hard_state` if given — all in ONE transaction.
    fn persist(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StoreError>;

    /// `persist` in three steps, so that the slow part (the transaction
    /// and its fsync) can run on another thread while the event loop goes
    /// on: `begin_persist` checks the write and makes the store report it
    /// (last index, terms, hard state) at once; the job writes it;
    /// `end_persist` takes the job's result. At most one job at a time,
    /// and no other write to the store until it has ended. The default
    /// writes at once (an in-memory store has nothing to wait for).
    fn begin_persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Box<dyn PersistJob>, StoreError> {
        self.persist(entries, hard_state)?;
        Ok(Box::new(Written))
    }

    /// Takes a job's result: `Ok(bytes of log entries it replaced)`, or
    /// why it failed (then this and every later write are refused).
    fn end_persist(&self, result: Result<u64, WriteJobError>) -> Result<(), StoreError> {
        result.map(|_| ()).map_err(|e| StoreError::Io(e.to_string()))
    }

    /// Store the membership after a conf change was applied.
    fn set_conf_state(&self, cs: &ConfState) -> Result<(), StoreError>;

    /// Install a snapshot received from the leader: replaces the whole log
    /// with the snapshot's metadata (index, term, conf state), stores its
    /// data as the applied state, and sets the hard state's commit to at
    /// least its index.
    fn install_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError>;

    /// Record a snapshot of the applied state taken locally at `index`
    /// (whose term the log knows), then drop log entries up to
    /// `index - keep_entries` (keep a tail so slightly lagging followers
    /// catch up from the log, not a snapshot).
    fn save_snapshot(
        &self,
        index: u64,
        conf_state: &ConfState,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<(), StoreError>;

    /// `save_snapshot` in steps, like `begin_persist`: the store reports
    /// the snapshot (and the compacted log) at once, the job writes it.
    fn begin_save_snapshot(
        &self,
        index: u64,
        conf_state: &ConfState,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<Box<dyn PersistJob>, StoreError> {
        self.save_snapshot(index, conf_state, data, keep_entries)?;
        Ok(Box::new(Written))
    }

    /// Takes a snapshot job's result: `Ok(bytes of log entries it newly
    /// covers)`, or why it failed.
    fn end_save_snapshot(&self, result: Result<u64, WriteJobError>) -> Result<(), StoreError> {
        result.map(|_| ()).map_err(|e| StoreError::Io(e.to_string()))
    }

    /// After a job ended with `StoreError::Full`: one job that writes
    /// again everything whose write has not succeeded yet. Its result goes
    /// to `end_persist`, like a log write's. Only a store on disk returns
    /// `Full`, so the default is never called.
    fn begin_retry(&self) -> Result<Box<dyn PersistJob>, StoreError> {
        Err(StoreError::Io("write refused: nothing to write again".to_string()))
    }

    /// The latest snapshot: (index, term, conf state, data). `None` if
    /// there is none yet (fresh store).
    #[allow(clippy::type_complexity)]
    fn latest_snapshot(&self) -> Result<Option<(u64, u64, ConfState, Vec<u8>)>, StoreError>;

    /// Bytes of log entries stored after the snapshot, to decide when to
    /// snapshot.
    fn log_bytes(&self) -> u64;

    /// Encoded entries and hard states this store has written since it
    /// was opened (0 for a store in memory).
    fn written_bytes(&self) -> u64 {
        0
    }

    /// Log files besides the one being appended to (what a snapshot that
    /// keeps no entries would delete); 0 for a store in memory.
    fn older_segments(&self) -> usize {
        0
    }

    /// Whether writes go to disk. An in-memory log makes no group commit
    /// worth waiting for.
    fn on_disk(&self) -> bool {
        true
    }

    /// Drop the log up to the applied `index` without a snapshot of it.
    /// Only a store whose contents die with the process
    /// (`MemLog::volatile`) may, and the caller asks only while its node
    /// is the cluster's only member: no follower will ask for the entries
    /// and no restart reads them. Until the next real snapshot, raft is
    /// told a snapshot is temporarily unavailable. Returns whether it
    /// dropped anything; `false` for every other store.
    fn forget_applied(&self, _index: u64) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Whether nothing reads this store after the process ends
    /// (`MemLog::volatile`): what it forgets, nobody misses.
    fn is_volatile(&self) -> bool {
        false
    }
}
