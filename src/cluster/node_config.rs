//! A raft node's settings, from the config file (or the simulation).

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// Voters of a fresh cluster (ignored when the store has a membership).
    pub voters: Vec<u64>,
    pub election_ticks: usize,
    /// Elections time out after a random number of ticks in
    /// [election_ticks, election_ticks_max). Default 2x election_ticks;
    /// the simulation pins it (election_ticks + 1) for determinism.
    pub election_ticks_max: usize,
    pub heartbeat_ticks: usize,
    /// Take a snapshot after this many applied entries ...
    pub snapshot_entries: u64,
    /// ... or this many bytes of log since the last one.
    pub snapshot_log_bytes: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub snapshot_keep_entries: u64,
    pub max_msg_bytes: u64,
    /// Fresh store: wait to be added by the leader (empty membership)
    /// instead of starting with `voters`.
    pub join: bool,
}

impl NodeConfig {
    pub fn single(id: u64) -> NodeConfig {
        NodeConfig {
            id,
            voters: vec![id],
            election_ticks: 10,
            election_ticks_max: 20,
            heartbeat_ticks: 2,
            snapshot_entries: 5_000,
            snapshot_log_bytes: 32 * 1024 * 1024,
            snapshot_keep_entries: 2_000,
            max_msg_bytes: 1024 * 1024,
            join: false,
        }
    }
}
