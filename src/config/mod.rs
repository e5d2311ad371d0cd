//! Mosquitto-compatible configuration file (`midge.conf`).
//!
//! The format is Mosquitto's: one `key value...` option per line, `#` starts
//! a comment line, blank lines are ignored. Every key midge understands is
//! documented, with its default and how it differs from Mosquitto, in
//! `docs/CONFIG.md`. Unknown keys and invalid values are hard errors that name
//! the file and line ([`ConfigError`]); a handful of harmless Mosquitto keys
//! that midge does not need are accepted with a `log::warn!`. A file is read
//! to its end whatever it contains: every error is reported in one run
//! ([`ConfigErrors`]), together with those of the files it names
//! ([`Config::load`]).
//!
//! ```text
//! listener 1883
//! listener 8883 127.0.0.1
//! password_file /etc/midge/passwd
//! max_inflight_messages 10
//! ```

mod bridge;
mod broker_settings;
mod keys;
mod parse;
mod referenced;
#[cfg(test)]
mod tests;
pub mod tls;
mod values;

pub use crate::limits::{Limits, DEFAULT_CONNECTIONS_MAX, PROTOCOL_MAX_BYTES};
pub use referenced::{ListenerFiles, Loaded};

use std::fmt;
use std::path::{Path, PathBuf};

/// The port used when no listener is configured.
pub const DEFAULT_PORT: u16 = 1883;

/// The start of the client ids midge makes for clients that send an
/// empty one (Mosquitto 2.0's default).
pub const DEFAULT_AUTO_ID_PREFIX: &str = "auto-";
/// A made-up client id is the prefix and 36 characters; client ids are
/// MQTT strings of at most 65535 bytes.
pub const AUTO_ID_PREFIX_BYTES_MAX: usize = 65535 - 36;

/// A TCP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    /// IPv4 or IPv6 literal (without brackets) or a hostname; `None` = all
    /// interfaces.
    pub address: Option<String>,
    /// TLS on this listener (`certfile`, `keyfile`, ... after its line).
    pub tls: Option<tls::ListenerTls>,
    /// `max_connections` after this listener's line (Mosquitto's
    /// per-listener limit); `None`: only the broker-wide bound.
    pub connections_max: Option<u32>,
    /// `protocol websockets` after this listener's line: MQTT over
    /// WebSockets (the `mqtt` subprotocol), over TLS when it has TLS.
    pub websockets: bool,
    /// `mount_point` after this listener's line: the prefix of its
    /// clients' topics.
    pub mount_point: Option<String>,
    /// `use_username_as_clientid` after this listener's line (Mosquitto's
    /// per-listener option); `None`: the broker-wide setting.
    pub use_username_as_clientid: Option<bool>,
    /// `max_qos` / `max_topic_alias` after this listener's line.
    pub max_qos: Option<u8>,
    pub max_topic_alias: Option<u16>,
    /// With `per_listener_settings true`: the `allow_anonymous`,
    /// `password_file` and `acl_file` after this listener's line, which
    /// apply to its clients instead of the broker-wide ones. `None`: the
    /// broker-wide ones (`per_listener_settings false`, or a default
    /// listener from `port` or `-p`).
    pub auth: Option<ListenerAuth>,
}

/// A listener's own security options (`per_listener_settings true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAuth {
    /// Default, as broker-wide: `true` when this listener has no
    /// `password_file`.
    pub allow_anonymous: bool,
    /// With the line that set it, for errors in the file.
    pub password_file: Option<(PathBuf, Origin)>,
    pub acl_file: Option<(PathBuf, Origin)>,
}

impl Listener {
    /// A plain listener on `port` on all interfaces.
    pub fn any(port: u16) -> Listener {
        Listener::new(port, None)
    }

    /// A plain listener on `port` at `address`.
    pub fn at(port: u16, address: &str) -> Listener {
        Listener::new(port, Some(address.to_string()))
    }

    /// A plain MQTT listener without options of its own (`None` address:
    /// all interfaces).
    pub fn new(port: u16, address: Option<String>) -> Listener {
        Listener {
            port,
            address,
            tls: None,
            connections_max: None,
            mount_point: None,
            use_username_as_clientid: None,
            max_qos: None,
            max_topic_alias: None,
            websockets: false,
            auth: None,
        }
    }
}

/// A `log_type` value. `none` and `all` are not variants: they set the list
/// to empty and to [`LogType::ALL`] respectively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogType {
    Error,
    Warning,
    Notice,
    Information,
    Debug,
    Subscribe,
    Unsubscribe,
    Websockets,
}

impl LogType {
    pub const ALL: [LogType; 8] = [
        LogType::Error,
        LogType::Warning,
        LogType::Notice,
        LogType::Information,
        LogType::Debug,
        LogType::Subscribe,
        LogType::Unsubscribe,
        LogType::Websockets,
    ];
    /// Mosquitto's default: error, warning, notice, information.
    pub const DEFAULT: [LogType; 4] = [LogType::Error, LogType::Warning, LogType::Notice, LogType::Information];

    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            LogType::Error => "error",
            LogType::Warning => "warning",
            LogType::Notice => "notice",
            LogType::Information => "information",
            LogType::Debug => "debug",
            LogType::Subscribe => "subscribe",
            LogType::Unsubscribe => "unsubscribe",
            LogType::Websockets => "websockets",
        }
    }

    pub fn from_name(name: &str) -> Option<LogType> {
        LogType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// `log_dest`: where log output goes (one destination; midge's logger
/// writes to standard error, which the others redirect).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogDest {
    Stdout,
    #[default]
    Stderr,
    /// Appended to; reopened on SIGHUP. With the line that set it, for
    /// errors found when it is opened.
    File(PathBuf, Origin),
    /// `log_dest none`: no log.
    None,
    /// `log_dest syslog`: through syslog(3), facility `log_facility`.
    Syslog,
}

/// The file and line a value was set on, for errors found only when the
/// value is used (a log file or pid file that cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub line: u32,
}

impl Origin {
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file.clone(), self.line, message)
    }
}

/// `cluster_follower_mode`: what a follower does with client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FollowerMode {
    /// Accept clients and forward their traffic to the leader.
    #[default]
    Proxy,
    /// Tell MQTT 5 clients to use the leader (Server Reference) and refuse.
    Redirect,
    /// Refuse client connections while not the leader.
    Closed,
}

impl FollowerMode {
    pub fn name(self) -> &'static str {
        match self {
            FollowerMode::Proxy => "proxy",
            FollowerMode::Redirect => "redirect",
            FollowerMode::Closed => "closed",
        }
    }
}

/// `cluster_mode`: what the cluster replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterMode {
    /// Active-passive: everything (sessions, messages, retained, dynamic
    /// security); the leader serves clients.
    #[default]
    FullSync,
    /// Active-active: only dynamic security (and membership); every node
    /// serves its own clients from its own node-local state.
    DynsecSync,
}

impl ClusterMode {
    pub fn name(self) -> &'static str {
        match self {
            ClusterMode::FullSync => "full_sync",
            ClusterMode::DynsecSync => "dynsec_sync",
        }
    }

    /// The byte the peer hello carries (docs/FORMATS.md).
    pub fn wire(self) -> u8 {
        match self {
            ClusterMode::FullSync => 0,
            ClusterMode::DynsecSync => 1,
        }
    }

    pub fn from_wire(b: u8) -> Option<ClusterMode> {
        match b {
            0 => Some(ClusterMode::FullSync),
            1 => Some(ClusterMode::DynsecSync),
            _ => None,
        }
    }
}

/// Raft timing: one tick every `tick_ms`; a follower that hears nothing for
/// `election_ticks` (randomised up to twice that) starts an election; the
/// leader sends heartbeats every `heartbeat_ticks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTiming {
    pub tick_ms: u64,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub snapshot_entries: u64,
}

impl Default for ClusterTiming {
    fn default() -> Self {
        ClusterTiming { tick_ms: 50, election_ticks: 6, heartbeat_ticks: 1, snapshot_entries: 5_000 }
    }
}

/// The broker configuration. `Config::default()` is what midge runs with when
/// started without a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Default: one listener on port 1883 on all interfaces when none is
    /// configured (`listener`, `port` or `bind_address`).
    pub listeners: Vec<Listener>,
    /// Default: `true` when no `password_file` is set, `false` when one is.
    pub allow_anonymous: bool,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// `per_listener_settings true`: a listener's `allow_anonymous`,
    /// `password_file` and `acl_file` are its own ([`Listener::auth`]);
    /// those before the first `listener` line are the broker-wide ones.
    pub per_listener_settings: bool,
    /// `plugin .../mosquitto_dynamic_security.so`: dynamic security on.
    pub dynsec_plugin: bool,
    /// `plugin_opt_config_file`: the plugin's JSON file.
    pub dynsec_file: Option<PathBuf>,
    /// `persistent_client_expiration`; `None` = never expire.
    pub persistent_client_expiration_secs: Option<u64>,
    /// Default `true`.
    pub retain_available: bool,
    /// Default 10; 0 disables `$SYS` updates.
    pub sys_interval_secs: u32,
    /// Default `false`.
    pub queue_qos0_messages: bool,
    /// Default `false` (Mosquitto's default).
    pub set_tcp_nodelay: bool,
    /// `busy_poll_us`: after a client's packet arrives, poll the sockets
    /// for this long before sleeping. Default 0 (off).
    pub busy_poll_us: u32,
    /// Default [`LogType::DEFAULT`]. Empty means log nothing.
    pub log_types: Vec<LogType>,
    pub log_dest: LogDest,
    /// `log_facility N`: syslog's LOG_LOCALN; `None`: LOG_DAEMON.
    pub log_facility: Option<u8>,
    /// `log_dest topic`: log lines are also published on
    /// `$SYS/broker/log/...`.
    pub log_topic: bool,
    /// `pid_file`: written once the listeners are open, removed at exit.
    pub pid_file: Option<(PathBuf, Origin)>,
    /// Default `true`.
    pub connection_messages: bool,
    /// Default `true`: a client may connect with an empty client id
    /// (and clean session / clean start); it gets `auto_id_prefix` and a
    /// random part.
    pub allow_zero_length_clientid: bool,
    /// Default `auto-` (Mosquitto's).
    pub auto_id_prefix: String,
    /// Default `false`: the username replaces the client id.
    pub use_username_as_clientid: bool,
    /// Default 2.
    pub max_qos: u8,
    /// Default `false`.
    pub upgrade_outgoing_qos: bool,
    /// Default `true` (Mosquitto: `false`).
    pub persistence: bool,
    /// `None` = the current working directory.
    pub persistence_location: Option<PathBuf>,
    pub limits: Limits,
    /// Cluster settings: validated now, used by the cluster layer.
    pub cluster_node_id: Option<u64>,
    /// `cluster_peer ID HOST:PORT` lines, in file order; includes this node.
    pub cluster_peers: Vec<(u64, String)>,
    pub cluster_follower_mode: FollowerMode,
    pub cluster_mode: ClusterMode,
    pub cluster_preferred_leader: Option<u64>,
    /// `cluster_allow_two_nodes`: accept a two-node cluster. Default `false`.
    pub cluster_allow_two_nodes: bool,
    /// `health_listener PORT [ADDRESS]`: HTTP health endpoint (200 on the
    /// serving leader, 503 elsewhere). None = off.
    pub health_listener: Option<Listener>,
    /// `admin_listener PORT [ADDRESS]`: MQTT listener for `midge ctl`, open
    /// on every node, password-only. None = off.
    pub admin_listener: Option<Listener>,
    /// Raft timing and snapshot settings (`cluster_tick_ms`, ...).
    pub cluster: ClusterTiming,
    /// `cluster_cafile`, `cluster_certfile`, `cluster_keyfile`: mutual TLS
    /// on the peer link. None = plain TCP (a warning at start).
    pub cluster_tls: Option<tls::ClusterTls>,
    /// `cluster_join`: a fresh node waits to be added by `midge ctl
    /// add-node` instead of forming a cluster from its cluster_peer lines.
    pub cluster_join: bool,
    /// `persistence_fsync`: fsync every raft Ready (default `true`).
    pub persistence_fsync: bool,
    /// `persistence_batch_window_ms`: how long after a write the next one
    /// may wait for more messages while the clients it answered are quiet
    /// (default 0: never; 5 for SD cards with many low-rate devices).
    pub persistence_batch_window_ms: u64,
    /// `persistence_min_free`: bytes the data store's file system keeps
    /// free; below them the node refuses durable changes as on a full disk
    /// (0: off, the default).
    pub persistence_min_free: u64,
    /// `connection NAME` blocks: bridges to upstream brokers, in file order.
    pub bridges: Vec<crate::bridge::BridgeConfig>,
    /// The file this configuration was read from.
    pub source: Option<PathBuf>,
    /// The files `include_dir` read, in order.
    pub included_files: Vec<PathBuf>,
    /// Warnings found while parsing (ignored Mosquitto options, options set
    /// twice), each naming file and line. They are also sent to `log::warn!`
    /// as they are found; a program that sets up its logger only after
    /// reading the configuration should log these once the logger is ready.
    pub warnings: Vec<ConfigError>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: vec![Listener::any(DEFAULT_PORT)],
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            per_listener_settings: false,
            dynsec_plugin: false,
            dynsec_file: None,
            persistent_client_expiration_secs: None,
            retain_available: true,
            sys_interval_secs: 10,
            queue_qos0_messages: false,
            set_tcp_nodelay: false,
            busy_poll_us: 0,
            log_types: LogType::DEFAULT.to_vec(),
            log_dest: LogDest::Stderr,
            log_facility: None,
            log_topic: false,
            pid_file: None,
            connection_messages: true,
            allow_zero_length_clientid: true,
            auto_id_prefix: DEFAULT_AUTO_ID_PREFIX.to_string(),
            use_username_as_clientid: false,
            max_qos: 2,
            upgrade_outgoing_qos: false,
            persistence: true,
            persistence_location: None,
            limits: Limits::default(),
            cluster_node_id: None,
            cluster_peers: Vec::new(),
            cluster_follower_mode: FollowerMode::Proxy,
            cluster_mode: ClusterMode::FullSync,
            cluster_preferred_leader: None,
            cluster_allow_two_nodes: false,
            health_listener: None,
            admin_listener: None,
            cluster: ClusterTiming::default(),
            persistence_fsync: true,
            persistence_batch_window_ms: 0,
            persistence_min_free: 0,
            bridges: Vec::new(),
            cluster_tls: None,
            cluster_join: false,
            source: None,
            included_files: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a configuration file and the password and ACL files it names;
    /// every error of all of them, each naming its file and line.
    pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
        referenced::load(path)
    }

    /// Reads and parses a configuration file (and the TLS files it names,
    /// but not its password and ACL files: see [`Config::load`]). Errors
    /// name the file as given.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = read_text(path, &name)?;
        let mut cfg = Config::parse_str(&text, &name)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses configuration text; `file_name` is used in error messages.
    pub fn parse_str(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
        parse::parse(text, file_name).into_result()
    }

    /// Like `mosquitto -p PORT`: replaces every listener with one on `port`
    /// on all interfaces.
    pub fn override_port(&mut self, port: u16) {
        self.listeners = vec![Listener::any(port)];
    }

    /// Whether messages of type `t` are to be logged.
    pub fn logs(&self, t: LogType) -> bool {
        self.log_types.contains(&t)
    }

    /// The most verbose `log` level that `log_types` asks for: `debug` →
    /// Debug; `information`, `notice`, `subscribe`, `unsubscribe` → Info;
    /// `warning` → Warn; `error` → Error; nothing → Off.
    pub fn log_level(&self) -> log::LevelFilter {
        use log::LevelFilter;
        let mut level = LevelFilter::Off;
        for t in &self.log_types {
            let l = match t {
                LogType::Debug => LevelFilter::Debug,
                LogType::Information | LogType::Notice | LogType::Subscribe | LogType::Unsubscribe => LevelFilter::Info,
                LogType::Warning => LevelFilter::Warn,
                LogType::Error => LevelFilter::Error,
                LogType::Websockets => LevelFilter::Off,
            };
            level = level.max(l);
        }
        level
    }
}

/// An error in a configuration, password or ACL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given by the caller.
    pub file: String,
    /// 1-based line number; 0 when the error is not about one line.
    pub line: u32,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl Into<String>, line: u32, message: impl Into<String>) -> ConfigError {
        ConfigError { file: file.into(), line, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration (or password, or ACL) file and the
/// files it names, in file order. Never empty. Displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// `Ok(value)` when `errors` is empty.
    pub(crate) fn check<T>(value: T, errors: Vec<ConfigError>) -> Result<T, ConfigErrors> {
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads a whole UTF-8 text file, naming `name` in errors.
pub(crate) fn read_text(path: &Path, name: &str) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::new(name, 0, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::new(name, line_no(line), "not valid UTF-8 text")
    })
}

/// Numbered lines (1-based) of a text file, with a leading UTF-8 byte order
/// mark and trailing `\r` removed.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().map(|(i, l)| (line_no(i + 1), l))
}

/// Splits a line into its first word and the rest of the line, trimmed.
pub(crate) fn split_first(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

fn line_no(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
