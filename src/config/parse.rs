//! The line parser behind [`Config::parse_str`](super::Config::parse_str).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::bridge::{bridge_key, finish_bridge, is_bridge_key, BridgeLines};
use super::keys::{suggest, UNSUPPORTED_KEYS, UNSUPPORTED_PREFIXES};
use super::tls::{ClusterTlsFiles, ListenerTls, TlsOptions, TlsVersion};
use super::values::{is_hostname, join, parse_u64, peer_key, same_listener};
use super::{
    numbered_lines, read_text, split_first, ClusterMode, Config, ConfigError, ConfigErrors, FollowerMode, Listener,
    ListenerAuth, LogDest, LogType, Origin, AUTO_ID_PREFIX_BYTES_MAX, DEFAULT_CONNECTIONS_MAX, DEFAULT_PORT,
    PROTOCOL_MAX_BYTES,
};

/// The files of an `include_dir`, in Mosquitto's order: names longer than
/// `.conf` that end in `.conf`, sorted by their bytes.
fn conf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let b = name.as_bytes();
        if b.len() > 5 && b.ends_with(b".conf") {
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// An included file's text, at most [`INCLUDED_FILE_BYTES_MAX`].
fn read_included(path: &Path, name: &str) -> Result<String, ConfigError> {
    let len = std::fs::metadata(path).map_err(|e| ConfigError::new(name, 0, format!("cannot read: {e}")))?.len();
    if len > INCLUDED_FILE_BYTES_MAX {
        return Err(ConfigError::new(
            name,
            0,
            format!("{len} bytes, more than the {INCLUDED_FILE_BYTES_MAX} midge reads"),
        ));
    }
    read_text(path, name)
}

/// `busy_poll_us` at most: a millisecond of polling after each packet is
/// already all CPU and no lower latency.
const BUSY_POLL_US_MAX: u64 = 1_000;
/// The file name of Mosquitto's dynamic security plugin, built into midge.
pub const DYNSEC_PLUGIN: &str = "mosquitto_dynamic_security.so";

/// Mosquitto's security options: with `per_listener_settings true` they
/// belong to the listener above them, and `per_listener_settings` must come
/// before all of them.
const SECURITY_KEYS: [&str; 7] = [
    "allow_anonymous",
    "password_file",
    "acl_file",
    "plugin",
    "plugin_opt_config_file",
    "allow_zero_length_clientid",
    "auto_id_prefix",
];

/// A listener's security lines (`per_listener_settings true`), with the
/// line of each.
#[derive(Default)]
struct AuthLines {
    allow_anonymous: Option<bool>,
    password_file: Option<(PathBuf, Origin)>,
    acl_file: Option<(PathBuf, Origin)>,
}

/// The TLS settings of one listener. None when there are none, or when a
/// TLS line of this listener was itself an error (already reported: building
/// from what is left would only report its consequences).
fn build_tls(o: &TlsOptions, line_failed: bool, file: &str, errors: &mut Vec<ConfigError>) -> Option<ListenerTls> {
    if o.is_empty() || line_failed {
        return None;
    }
    super::tls::build(o, file).map_err(|es| errors.extend(es.0)).ok()
}

/// What a configuration file says, and what is wrong with it.
pub(super) struct Parsed {
    /// Complete when `errors` is empty; otherwise the file's valid lines.
    pub config: Config,
    /// In line order; errors of the whole file (a line of 0) first.
    pub errors: Vec<ConfigError>,
    /// The last line of each single-valued key that was set.
    pub key_lines: HashMap<String, Origin>,
}

impl Parsed {
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        ConfigErrors::check(self.config, self.errors)
    }
}

/// Reads every line: a line in error is reported and skipped, and the
/// checks across lines still run on the lines that were valid.
pub(super) fn parse(text: &str, file: &str) -> Parsed {
    let mut p = Parser::new(file);
    p.feed(0, text);
    let key_lines = p.seen.iter().map(|(k, &pos)| (k.clone(), p.places.origin(pos))).collect();
    let mut errors = std::mem::take(&mut p.errors);
    let places = p.places.clone();
    let config = p.finish(&mut errors);
    errors.sort_by_key(|e| e.line);
    let errors = errors.into_iter().map(|e| places.locate(e)).collect();
    Parsed { config, errors, key_lines }
}

/// `include_dir` reads at most this many files...
const INCLUDED_FILES_MAX: usize = 1_000;
/// ... of at most this many bytes each ...
const INCLUDED_FILE_BYTES_MAX: u64 = 1 << 20;
/// ... and a configuration has at most this many lines, included ones too.
const LINES_MAX: usize = 100_000;

/// Where the lines the parser read came from. With `include_dir` they come
/// from several files, so the parser numbers them in reading order (a
/// position, 1-based) and errors found with a position are given their
/// file and line at the end ([`Places::locate`]).
#[derive(Clone)]
struct Places {
    /// The main file first, then each included file.
    files: Vec<String>,
    /// (index in `files`, line) of each position.
    lines: Vec<(usize, u32)>,
}

impl Places {
    fn add(&mut self, file: usize, line: u32) -> u32 {
        self.lines.push((file, line));
        u32::try_from(self.lines.len()).unwrap_or(u32::MAX)
    }

    /// The file and line of a position; position 0 is the main file as a
    /// whole.
    fn get(&self, pos: u32) -> (usize, u32) {
        match pos.checked_sub(1).and_then(|i| self.lines.get(i as usize)) {
            Some(&at) => at,
            None => (0, 0),
        }
    }

    fn origin(&self, pos: u32) -> Origin {
        let (file, line) = self.get(pos);
        Origin { file: self.files[file].clone(), line }
    }

    /// `e`, found with a position, with its file and line.
    fn locate(&self, e: ConfigError) -> ConfigError {
        let Origin { file, line } = self.origin(e.line);
        ConfigError { file, line, message: e.message }
    }

    /// "line N" when position `pos` is in the same file as `from`, else
    /// "FILE:N".
    fn describe(&self, pos: u32, from: u32) -> String {
        let ((file, line), (here, _)) = (self.get(pos), self.get(from));
        if file == here {
            format!("line {line}")
        } else {
            format!("{}:{line}", self.files[file])
        }
    }
}

struct Parser {
    places: Places,
    /// The file being read (index in `places.files`).
    file: usize,
    /// Lines read so far, of every file.
    lines_read: usize,
    /// The position of the line being read (see [`Places`]).
    line: u32,
    cfg: Config,
    /// Single-valued keys already set, with their line.
    seen: HashMap<String, u32>,
    default_port: Option<u16>,
    default_address: Option<String>,
    default_line: u32,
    listeners: Vec<(Listener, u32)>,
    /// TLS options of each `listener` line (same order), and of the
    /// default listener (`port` / `bind_address`, or before any listener).
    listener_tls: Vec<TlsOptions>,
    default_tls: TlsOptions,
    allow_anonymous: Option<bool>,
    log_types: Option<Vec<LogType>>,
    /// The `log_dest` set so far, and the position of its line.
    log_dest: Option<(LogDest, u32)>,
    node_id_line: u32,
    peer_lines: Vec<u32>,
    preferred_leader_line: u32,
    errors: Vec<ConfigError>,
    /// Keys with a line in error: checks across lines that involve them are
    /// skipped, since the file's intent is unknown.
    failed_keys: HashSet<String>,
    /// Whether a TLS line of each listener (same order as `listener_tls`),
    /// or of the default listener, was an error.
    tls_line_failed: Vec<bool>,
    default_tls_line_failed: bool,
    /// The line of `protocol websockets` before any `listener` line (the
    /// default listener's).
    default_websockets: Option<u32>,
    /// Set when the last `listener` line was an error: TLS lines after it
    /// go here, to be checked but belong to no listener.
    orphan_tls: Option<TlsOptions>,
    /// TLS options after an `admin_listener` line (until the next
    /// `listener`) are the admin listener's.
    admin_tls: TlsOptions,
    tls_to_admin: bool,
    admin_tls_line_failed: bool,
    cluster_tls: ClusterTlsFiles,
    /// One per `connection` line (same order as `cfg.bridges`).
    bridge_lines: Vec<BridgeLines>,
    /// The position of `per_listener_settings true`.
    per_listener: Option<u32>,
    /// The first security option (see [`SECURITY_KEYS`]) and its position.
    first_security: Option<(String, u32)>,
    /// Security lines of each `listener` line (same order as `listeners`).
    listener_auth: Vec<AuthLines>,
}

impl Parser {
    fn new(file: &str) -> Parser {
        let mut cfg = Config::default();
        cfg.listeners.clear();
        Parser {
            places: Places { files: vec![file.to_string()], lines: Vec::new() },
            file: 0,
            lines_read: 0,
            line: 0,
            cfg,
            seen: HashMap::new(),
            default_port: None,
            default_address: None,
            default_line: 0,
            listeners: Vec::new(),
            listener_tls: Vec::new(),
            default_tls: TlsOptions::default(),
            allow_anonymous: None,
            log_types: None,
            log_dest: None,
            node_id_line: 0,
            peer_lines: Vec::new(),
            preferred_leader_line: 0,
            errors: Vec::new(),
            failed_keys: HashSet::new(),
            tls_line_failed: Vec::new(),
            default_tls_line_failed: false,
            default_websockets: None,
            orphan_tls: None,
            admin_tls: TlsOptions::default(),
            tls_to_admin: false,
            admin_tls_line_failed: false,
            cluster_tls: ClusterTlsFiles::default(),
            bridge_lines: Vec::new(),
            per_listener: None,
            first_security: None,
            listener_auth: Vec::new(),
        }
    }

    /// An error at the current position (given its file and line at the
    /// end of [`parse`]).
    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new("", self.line, message)
    }

    fn origin(&self) -> Origin {
        self.places.origin(self.line)
    }

    fn warn(&mut self, message: &str) {
        let w = self.places.locate(self.err(message));
        log::warn!("{w}");
        self.cfg.warnings.push(w);
    }

    /// Reads the lines of file `file` (index in `places.files`).
    fn feed(&mut self, file: usize, text: &str) {
        for (line, raw) in numbered_lines(text) {
            self.lines_read += 1;
            if self.lines_read > LINES_MAX {
                self.file = file;
                self.line = self.places.add(file, line);
                self.errors
                    .push(self.err(format!("the configuration has more than {LINES_MAX} lines; the rest is not read")));
                return;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            self.file = file;
            self.line = self.places.add(file, line);
            let (key, rest) = split_first(trimmed);
            if let Err(e) = self.option(key, rest) {
                self.errors.push(e);
                self.failed_keys.insert(key.to_string());
                if key == "listener" || key == "admin_listener" {
                    // Its TLS lines belong to no listener; they are still checked.
                    self.orphan_tls = Some(TlsOptions::default());
                }
            }
        }
    }

    /// `include_dir DIR`: the files in DIR whose names end in `.conf`, in
    /// the byte order of their names, read as if their lines were here (as
    /// Mosquitto 2.0 does). Only the main file may include: Mosquitto
    /// silently skips include_dir in an included file; midge says so.
    fn include_dir(&mut self, rest: &str) -> Result<(), ConfigError> {
        let dir = self.path_value("include_dir", rest)?;
        if self.file != 0 {
            return Err(self.err(
                "include_dir: only the main configuration file may include a directory (Mosquitto ignores this line)",
            ));
        }
        let files = conf_files(&dir)
            .map_err(|e| self.err(format!("include_dir {}: cannot read the directory: {e}", dir.display())))?;
        if files.len() > INCLUDED_FILES_MAX {
            return Err(self.err(format!(
                "include_dir {}: {} .conf files, more than the {INCLUDED_FILES_MAX} midge reads",
                dir.display(),
                files.len()
            )));
        }
        let at = self.line;
        for path in files {
            let name = path.display().to_string();
            let index = self.places.files.len();
            self.places.files.push(name.clone());
            self.cfg.included_files.push(path.clone());
            match read_included(&path, &name) {
                Ok(text) => self.feed(index, &text),
                Err(e) if e.line == 0 => {
                    self.errors.push(ConfigError::new("", at, format!("include_dir {}: {}", dir.display(), e)))
                }
                Err(e) => {
                    let pos = self.places.add(index, e.line);
                    self.errors.push(ConfigError::new("", pos, e.message));
                }
            }
            if self.lines_read > LINES_MAX {
                break;
            }
        }
        Ok(())
    }

    fn option(&mut self, key: &str, rest: &str) -> Result<(), ConfigError> {
        if SECURITY_KEYS.contains(&key) {
            if self.first_security.is_none() {
                self.first_security = Some((key.to_string(), self.line));
            }
            if self.per_listener.is_some() && self.listener_security(key, rest)? {
                return Ok(());
            }
        }
        match key {
            "connection" => {
                let name = self.one(key, rest)?;
                if name.contains(['/', '+', '#']) {
                    return Err(self.err(format!("connection: \"{name}\" may not contain /, + or #")));
                }
                if let Some(i) = self.cfg.bridges.iter().position(|b| b.name == name) {
                    let prev = self.places.describe(self.bridge_lines[i].connection, self.line);
                    return Err(self.err(format!("connection {name}: already defined on {prev}")));
                }
                let queued = self.cfg.limits.queued_messages_max;
                self.cfg.bridges.push(crate::bridge::BridgeConfig::new(name, queued));
                self.bridge_lines.push(BridgeLines { connection: self.line, ..BridgeLines::default() });
            }
            k if is_bridge_key(k) => {
                let line = self.line;
                let (Some(b), Some(l)) = (self.cfg.bridges.last_mut(), self.bridge_lines.last_mut()) else {
                    return Err(
                        self.err(format!("{key}: a bridge key must follow a connection line (connection NAME)"))
                    );
                };
                bridge_key(b, l, key, rest, line).map_err(|m| ConfigError::new("", line, m))?;
            }
            "listener" => self.listener(rest)?,
            "certfile"
            | "keyfile"
            | "cafile"
            | "require_certificate"
            | "tls_version"
            | "use_identity_as_username"
            | "use_subject_as_username" => {
                if let Err(e) = self.tls_option(key, rest) {
                    if self.tls_to_admin && self.orphan_tls.is_none() {
                        self.admin_tls_line_failed = true;
                    } else if self.orphan_tls.is_none() {
                        match self.tls_line_failed.last_mut() {
                            Some(failed) => *failed = true,
                            None => self.default_tls_line_failed = true,
                        }
                    }
                    return Err(e);
                }
            }
            "health_listener" | "admin_listener" => {
                self.once(key);
                let l = self.single_listener(key, rest)?;
                if key == "health_listener" {
                    self.cfg.health_listener = Some(l);
                } else {
                    self.cfg.admin_listener = Some(l);
                    self.tls_to_admin = true;
                }
            }
            "port" => {
                let port = self.num_opt(key, rest, 1, 65535)?;
                self.default_port = Some(port as u16);
                self.default_line = self.line;
            }
            "bind_address" => {
                self.once(key);
                let v = self.one(key, rest)?;
                self.default_address = Some(self.address(key, v)?);
                self.default_line = self.line;
            }
            "protocol" => {
                // The listener above (as Mosquitto), else the default one.
                let ws = match self.one(key, rest)? {
                    "mqtt" => false,
                    "websockets" => true,
                    v => return Err(self.err(format!("protocol: \"{v}\" is not one of mqtt, websockets"))),
                };
                if self.tls_to_admin {
                    return Err(self.err("protocol: the admin_listener speaks MQTT only"));
                }
                match self.listeners.last_mut() {
                    Some((l, _)) => l.websockets = ws,
                    None => self.default_websockets = ws.then_some(self.line),
                }
            }
            "allow_anonymous" => self.allow_anonymous = Some(self.bool_opt(key, rest)?),
            "password_file" => self.cfg.password_file = Some(self.path_opt(key, rest)?),
            "acl_file" => self.cfg.acl_file = Some(self.path_opt(key, rest)?),
            "plugin" => {
                let path = self.path_opt(key, rest)?;
                if path.file_name().and_then(|n| n.to_str()) != Some(DYNSEC_PLUGIN) {
                    return Err(self.err(format!(
                        "plugin: \"{}\" is not supported: midge has one plugin built in, Mosquitto's dynamic \
                         security (plugin /usr/lib/x86_64-linux-gnu/{DYNSEC_PLUGIN}, in any directory)",
                        path.display()
                    )));
                }
                self.cfg.dynsec_plugin = true;
            }
            "plugin_opt_config_file" => self.cfg.dynsec_file = Some(self.path_opt(key, rest)?),
            "persistence_location" => self.cfg.persistence_location = Some(self.path_opt(key, rest)?),
            "persistent_client_expiration" => {
                self.once(key);
                let v = self.one(key, rest)?;
                self.cfg.persistent_client_expiration_secs = Some(self.duration(key, v)?);
            }
            "retain_available" => self.cfg.retain_available = self.bool_opt(key, rest)?,
            "allow_zero_length_clientid" => self.cfg.allow_zero_length_clientid = self.bool_opt(key, rest)?,
            "use_username_as_clientid" => {
                // After a listener line: that listener's, as in Mosquitto;
                // before any: every listener's.
                let on = self.bool_value(key, rest)?;
                match self.listeners.last_mut() {
                    Some((l, _)) => {
                        if l.use_username_as_clientid.replace(on).is_some() {
                            self.warn("use_username_as_clientid overrides the value set before for the same listener");
                        }
                    }
                    None => {
                        self.once(key);
                        self.cfg.use_username_as_clientid = on;
                    }
                }
            }
            "auto_id_prefix" => {
                // The rest of the line, as Mosquitto reads it.
                self.once(key);
                if rest.is_empty() {
                    return Err(self.err("auto_id_prefix: missing value"));
                }
                if rest.len() > AUTO_ID_PREFIX_BYTES_MAX {
                    return Err(self.err(format!(
                        "auto_id_prefix: longer than {AUTO_ID_PREFIX_BYTES_MAX} bytes (a client id is at most 65535)"
                    )));
                }
                self.cfg.auto_id_prefix = rest.to_string();
            }
            "queue_qos0_messages" => self.cfg.queue_qos0_messages = self.bool_opt(key, rest)?,
            "set_tcp_nodelay" => self.cfg.set_tcp_nodelay = self.bool_opt(key, rest)?,
            "busy_poll_us" => self.cfg.busy_poll_us = self.num_opt(key, rest, 0, BUSY_POLL_US_MAX)? as u32,
            "connection_messages" => self.cfg.connection_messages = self.bool_opt(key, rest)?,
            "upgrade_outgoing_qos" => self.cfg.upgrade_outgoing_qos = self.bool_opt(key, rest)?,
            "persistence" => self.cfg.persistence = self.bool_opt(key, rest)?,
            "sys_interval" => self.cfg.sys_interval_secs = self.num_opt(key, rest, 0, u32::MAX.into())? as u32,
            "max_qos" => {
                // After a listener line: that listener's, as in Mosquitto;
                // before any: every listener's.
                let v = self.num(key, self.one(key, rest)?, 0, 2)? as u8;
                match self.listeners.last_mut() {
                    Some((l, _)) => {
                        if l.max_qos.replace(v).is_some() {
                            self.warn("max_qos overrides the value set before for the same listener");
                        }
                    }
                    None => {
                        self.once(key);
                        self.cfg.max_qos = v;
                    }
                }
            }
            "log_type" => self.log_type(rest)?,
            "log_dest" => self.log_dest(rest)?,
            "log_facility" => self.cfg.log_facility = Some(self.num_opt(key, rest, 0, 7)? as u8),
            "include_dir" => self.include_dir(rest)?,
            "max_packet_size" => {
                let v = self.num_opt(key, rest, 0, PROTOCOL_MAX_BYTES.into())? as u32;
                if (1..20).contains(&v) {
                    return Err(self.err(format!(
                        "max_packet_size: {v} is below the minimum of 20 bytes (0 means the protocol maximum)"
                    )));
                }
                self.cfg.limits.packet_bytes_max = if v == 0 { PROTOCOL_MAX_BYTES } else { v };
            }
            "message_size_limit" => {
                let v = self.num_opt(key, rest, 0, PROTOCOL_MAX_BYTES.into())? as u32;
                self.cfg.limits.message_bytes_max = if v == 0 { PROTOCOL_MAX_BYTES } else { v };
            }
            "max_inflight_messages" => {
                let v = self.num_opt(key, rest, 0, 65535)? as u16;
                self.cfg.limits.inflight_messages_max = if v == 0 { u16::MAX } else { v };
            }
            "max_queued_messages" => {
                let v = self.num_opt(key, rest, 0, u32::MAX.into())? as u32;
                if v == 0 {
                    return Err(self.err("max_queued_messages: must be at least 1 (midge has no unlimited queues)"));
                }
                self.cfg.limits.queued_messages_max = v;
            }
            "max_queued_bytes" => {
                let v = self.num_opt(key, rest, 0, u64::MAX)?;
                self.cfg.limits.queued_bytes_max = if v == 0 { u64::MAX } else { v };
            }
            "memory_limit" => {
                let v = self.num_opt(key, rest, 0, u64::MAX)?;
                self.cfg.limits.memory_bytes_max = if v == 0 { u64::MAX } else { v };
            }
            "max_keepalive" => self.cfg.limits.keepalive_secs_max = self.num_opt(key, rest, 0, 65535)? as u16,
            "mount_point" => {
                // The rest of the line, as Mosquitto reads it; a topic name.
                if rest.is_empty() {
                    return Err(self.err("mount_point: missing value"));
                }
                if !crate::mqtt::topic::valid_topic_name(rest) {
                    return Err(self.err(format!(
                        "mount_point: \"{rest}\" is not a valid topic name (no + or #), which every topic of the listener's clients starts with"
                    )));
                }
                let Some((l, _)) = self.listeners.last_mut() else {
                    return Err(self.err("mount_point must follow the listener line it applies to"));
                };
                let again = l.mount_point.replace(rest.to_string()).is_some();
                if again {
                    self.warn("mount_point overrides the value set before for the same listener");
                }
            }
            "max_connections" => {
                let v = self.one(key, rest)?;
                let n = if v == "-1" {
                    0
                } else {
                    match parse_u64(v).filter(|&n| n <= u32::MAX.into()) {
                        Some(n) => n as u32,
                        None => {
                            return Err(self.err(format!(
                                "max_connections: \"{v}\" is not -1 or a number between 0 and {}",
                                u32::MAX
                            )))
                        }
                    }
                };
                // After a listener line: that listener's own limit, as in
                // Mosquitto (0 and -1: none). Before any: the broker-wide
                // bound (0 and -1: its default; it is never unlimited).
                match self.listeners.last_mut() {
                    Some((l, _)) => {
                        let again = std::mem::replace(&mut l.connections_max, (n > 0).then_some(n)).is_some();
                        if again {
                            self.warn("max_connections overrides the value set before for the same listener");
                        }
                    }
                    None => {
                        self.once(key);
                        self.cfg.limits.connections_max = if n == 0 { DEFAULT_CONNECTIONS_MAX } else { n };
                    }
                }
            }
            "client_out_buffer_bytes" => {
                self.cfg.limits.out_buffer_bytes_max = self.num_opt(key, rest, 1, u32::MAX.into())? as u32
            }
            "max_topic_levels" => self.cfg.limits.topic_levels_max = self.num_opt(key, rest, 1, 65535)? as u16,
            "max_subscriptions_per_client" => {
                self.cfg.limits.subscriptions_per_client_max = self.num_opt(key, rest, 1, u32::MAX.into())? as u32
            }
            "max_retained_messages" => {
                let v = self.num_opt(key, rest, 0, u32::MAX.into())? as u32;
                if v == 0 {
                    return Err(self.err(
                        "max_retained_messages: must be at least 1 (to disable retained messages use retain_available false)",
                    ));
                }
                self.cfg.limits.retained_messages_max = v;
            }
            "max_topic_alias" => {
                // As max_qos.
                let v = self.num(key, self.one(key, rest)?, 0, 65535)? as u16;
                match self.listeners.last_mut() {
                    Some((l, _)) => {
                        if l.max_topic_alias.replace(v).is_some() {
                            self.warn("max_topic_alias overrides the value set before for the same listener");
                        }
                    }
                    None => {
                        self.once(key);
                        self.cfg.limits.topic_alias_max = v;
                    }
                }
            }
            "cluster_node_id" => {
                self.cfg.cluster_node_id = Some(self.num_opt(key, rest, 1, u64::MAX)?);
                self.node_id_line = self.line;
            }
            "cluster_peer" => self.cluster_peer(rest)?,
            "cluster_cafile" | "cluster_certfile" | "cluster_keyfile" => self.cluster_tls_option(key, rest)?,
            "cluster_mode" => {
                self.once(key);
                self.cfg.cluster_mode = match self.one(key, rest)? {
                    "full_sync" => ClusterMode::FullSync,
                    "dynsec_sync" => ClusterMode::DynsecSync,
                    other => {
                        return Err(self.err(format!("cluster_mode: \"{other}\" is not one of full_sync, dynsec_sync")))
                    }
                };
            }
            "cluster_follower_mode" => {
                self.once(key);
                self.cfg.cluster_follower_mode = match self.one(key, rest)? {
                    "proxy" => FollowerMode::Proxy,
                    "redirect" => FollowerMode::Redirect,
                    "closed" => FollowerMode::Closed,
                    other => {
                        return Err(self
                            .err(format!("cluster_follower_mode: \"{other}\" is not one of proxy, redirect, closed")))
                    }
                };
            }
            "cluster_preferred_leader" => {
                self.cfg.cluster_preferred_leader = Some(self.num_opt(key, rest, 1, u64::MAX)?);
                self.preferred_leader_line = self.line;
            }
            "cluster_allow_two_nodes" => self.cfg.cluster_allow_two_nodes = self.bool_opt(key, rest)?,
            "cluster_tick_ms" => self.cfg.cluster.tick_ms = self.num_opt(key, rest, 5, 10_000)?,
            "cluster_election_ticks" => self.cfg.cluster.election_ticks = self.num_opt(key, rest, 3, 1000)? as u32,
            "cluster_heartbeat_ticks" => self.cfg.cluster.heartbeat_ticks = self.num_opt(key, rest, 1, 1000)? as u32,
            "cluster_snapshot_entries" => {
                self.cfg.cluster.snapshot_entries = self.num_opt(key, rest, 100, u32::MAX.into())?
            }
            "persistence_fsync" => self.cfg.persistence_fsync = self.bool_opt(key, rest)?,
            "persistence_batch_window_ms" => self.cfg.persistence_batch_window_ms = self.num_opt(key, rest, 0, 100)?,
            "persistence_min_free" => self.cfg.persistence_min_free = self.num_opt(key, rest, 0, u64::MAX)?,
            "cluster_join" => self.cfg.cluster_join = self.bool_opt(key, rest)?,
            // Harmless Mosquitto options: checked, then ignored with a warning.
            "autosave_interval" | "autosave_on_changes" => {
                if key == "autosave_interval" {
                    self.num_opt(key, rest, 0, u64::MAX)?;
                } else {
                    self.bool_opt(key, rest)?;
                }
                self.warn(&format!("{key} is ignored: midge writes every change to disk as it happens"));
            }
            "retry_interval" | "store_clean_interval" => {
                // Obsolete in Mosquitto; ignored with its own warning
                // (2.0's for retry_interval, 1.6's for store_clean_interval,
                // which 2.0 refuses as unknown).
                self.num_opt(key, rest, 0, u64::MAX)?;
                self.warn(if key == "retry_interval" {
                    "retry_interval is ignored: The retry_interval option is no longer available."
                } else {
                    "store_clean_interval is ignored: store_clean_interval is no longer needed."
                });
            }
            "pid_file" => self.cfg.pid_file = Some((self.path_opt(key, rest)?, self.origin())),
            "user" => {
                self.one(key, rest)?;
                self.warn("user is ignored: midge does not change user; start it as the user it should run as");
            }
            "log_timestamp" | "log_timestamp_format" => {
                if key == "log_timestamp" {
                    self.bool_opt(key, rest)?;
                } else {
                    self.path_opt(key, rest)?;
                }
                self.warn(&format!("{key} is ignored: midge's log format is fixed"));
            }
            "persistence_file" => {
                self.path_opt(key, rest)?;
                self.warn("persistence_file is ignored: midge names its own files inside persistence_location");
            }
            "per_listener_settings" => {
                let on = self.bool_opt(key, rest)?;
                if let Some(at) = self.per_listener {
                    if !on {
                        let at = self.places.describe(at, self.line);
                        return Err(self.err(format!(
                            "per_listener_settings false after per_listener_settings true on {at}: set it once"
                        )));
                    }
                } else if on {
                    if let Some((first, pos)) = &self.first_security {
                        // Mosquitto: "per_listener_settings must be set
                        // before any other security settings."
                        let at = self.places.describe(*pos, self.line);
                        return Err(self.err(format!(
                            "per_listener_settings must be set before any other security option ({first} on {at})"
                        )));
                    }
                    self.per_listener = Some(self.line);
                    self.cfg.per_listener_settings = true;
                } else {
                    self.warn("per_listener_settings false is ignored: it is what midge does by default");
                }
            }
            _ => return Err(self.unknown(key)),
        }
        Ok(())
    }

    fn unknown(&self, key: &str) -> ConfigError {
        let reason = UNSUPPORTED_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .or_else(|| UNSUPPORTED_PREFIXES.iter().find(|(p, _)| key.starts_with(p)));
        if let Some((_, reason)) = reason {
            let mut msg = format!("\"{key}\" is a Mosquitto option that midge does not support");
            if !reason.is_empty() {
                msg.push_str(&format!(" ({reason})"));
            }
            return self.err(msg);
        }
        let mut msg = format!("unknown option \"{key}\"");
        if let Some(s) = suggest(key) {
            msg.push_str(&format!(" (did you mean {s}?)"));
        }
        self.err(msg)
    }

    /// Notes a single-valued key; warns when it overrides an earlier line.
    fn once(&mut self, key: &str) {
        if let Some(prev) = self.seen.insert(key.to_string(), self.line) {
            let prev = self.places.describe(prev, self.line);
            self.warn(&format!("{key} overrides the value set on {prev}"));
        }
    }

    fn extra(&self, key: &str, extra: &str) -> ConfigError {
        let hint = if extra.starts_with('#') { " (comments must be on a line of their own)" } else { "" };
        self.err(format!("{key}: unexpected extra value \"{extra}\"{hint}"))
    }

    /// Exactly one whitespace-free value.
    fn one<'v>(&self, key: &str, rest: &'v str) -> Result<&'v str, ConfigError> {
        let mut toks = rest.split_whitespace();
        let v = toks.next().ok_or_else(|| self.err(format!("{key}: missing value")))?;
        match toks.next() {
            Some(extra) => Err(self.extra(key, extra)),
            None => Ok(v),
        }
    }

    fn num(&self, key: &str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        match parse_u64(v) {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(format!("{key}: \"{v}\" is not a number between {min} and {max}"))),
        }
    }

    fn num_opt(&mut self, key: &str, rest: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.once(key);
        let v = self.one(key, rest)?;
        self.num(key, v, min, max)
    }

    fn bool_opt(&mut self, key: &str, rest: &str) -> Result<bool, ConfigError> {
        self.once(key);
        self.bool_value(key, rest)
    }

    fn bool_value(&self, key: &str, rest: &str) -> Result<bool, ConfigError> {
        match self.one(key, rest)? {
            "true" => Ok(true),
            "false" => Ok(false),
            v => Err(self.err(format!("{key}: \"{v}\" is not true or false"))),
        }
    }

    /// The rest of the line, which may contain spaces (Mosquitto semantics).
    fn path_opt(&mut self, key: &str, rest: &str) -> Result<PathBuf, ConfigError> {
        self.once(key);
        self.path_value(key, rest)
    }

    fn path_value(&self, key: &str, rest: &str) -> Result<PathBuf, ConfigError> {
        if rest.is_empty() {
            return Err(self.err(format!("{key}: missing value")));
        }
        Ok(PathBuf::from(rest))
    }

    fn duration(&self, key: &str, v: &str) -> Result<u64, ConfigError> {
        let err = || {
            self.err(format!("{key}: \"{v}\" is not a duration (a number followed by s, h, d, w, m or y, e.g. 14d)"))
        };
        let unit = v.chars().last().ok_or_else(err)?;
        let mult: u64 = match unit {
            's' => 1,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'm' => 30 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(err()),
        };
        parse_u64(&v[..v.len() - 1]).filter(|&n| n > 0).and_then(|n| n.checked_mul(mult)).ok_or_else(err)
    }

    fn address(&self, key: &str, a: &str) -> Result<String, ConfigError> {
        if let Some(inner) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            if inner.parse::<Ipv6Addr>().is_ok() {
                return Ok(inner.to_string());
            }
        } else if a.parse::<IpAddr>().is_ok() || is_hostname(a) {
            return Ok(a.to_string());
        }
        Err(self.err(format!("{key}: \"{a}\" is not an IP address or host name")))
    }

    /// `KEY PORT [ADDRESS]` for the health and admin listeners.
    fn single_listener(&mut self, key: &str, rest: &str) -> Result<Listener, ConfigError> {
        let toks: Vec<&str> = rest.split_whitespace().collect();
        match toks.len() {
            0 => return Err(self.err(format!("{key}: missing port ({key} PORT [ADDRESS])"))),
            1 | 2 => {}
            _ => return Err(self.extra(key, toks[2])),
        }
        let port = self.num(key, toks[0], 1, 65535)? as u16;
        let address = match toks.get(1) {
            Some(a) => Some(self.address(key, a)?),
            None => None,
        };
        Ok(Listener::new(port, address))
    }

    fn listener(&mut self, rest: &str) -> Result<(), ConfigError> {
        let toks: Vec<&str> = rest.split_whitespace().collect();
        match toks.len() {
            0 => return Err(self.err("listener: missing port (listener PORT [ADDRESS])")),
            1 | 2 => {}
            _ => return Err(self.extra("listener", toks[2])),
        }
        if toks[0] == "0" {
            return Err(self.err("listener: port 0 (a Unix socket listener) is not supported by midge"));
        }
        let port = self.num("listener", toks[0], 1, 65535)? as u16;
        let address = match toks.get(1) {
            Some(a) => Some(self.address("listener", a)?),
            None => None,
        };
        self.listeners.push((Listener::new(port, address), self.line));
        self.listener_auth.push(AuthLines::default());
        self.listener_tls.push(TlsOptions::default());
        self.tls_line_failed.push(false);
        self.orphan_tls = None;
        self.tls_to_admin = false;
        Ok(())
    }

    /// With `per_listener_settings true`, a security option after a
    /// `listener` line: that listener's (Mosquitto's rule). `Ok(false)`:
    /// before the first listener line, a broker-wide option, read as
    /// without `per_listener_settings`.
    fn listener_security(&mut self, key: &str, rest: &str) -> Result<bool, ConfigError> {
        if matches!(key, "plugin" | "plugin_opt_config_file") {
            return Err(self.err(format!(
                "{key}: dynamic security with per_listener_settings true is not supported by midge \
                 (its clients and roles would apply to every listener); use password_file and acl_file per listener"
            )));
        }
        if self.tls_to_admin && self.orphan_tls.is_none() {
            return Err(self.err(format!(
                "{key} after admin_listener: with per_listener_settings true the admin listener uses the \
                 broker-wide security options, those before the first listener line"
            )));
        }
        if self.listeners.is_empty() && self.orphan_tls.is_none() {
            return Ok(false);
        }
        if matches!(key, "allow_zero_length_clientid" | "auto_id_prefix") {
            return Err(self.err(format!(
                "{key} after a listener line with per_listener_settings true: midge applies it to every \
                 listener; put it before the first listener line"
            )));
        }
        let origin = self.origin();
        let (allow_anonymous, path) = match key {
            "allow_anonymous" => (Some(self.bool_value(key, rest)?), None),
            _ => (None, Some(self.path_value(key, rest)?)),
        };
        // The listener line was an error: the value is checked, and
        // belongs to no listener.
        if self.orphan_tls.is_some() {
            return Ok(true);
        }
        let a = self.listener_auth.last_mut().expect("one per listener");
        let prev = match (allow_anonymous, path) {
            (Some(v), _) => a.allow_anonymous.replace(v).map(|_| ()),
            (None, Some(p)) if key == "password_file" => a.password_file.replace((p, origin)).map(|_| ()),
            (None, Some(p)) => a.acl_file.replace((p, origin)).map(|_| ()),
            (None, None) => None,
        };
        if prev.is_some() {
            self.warn(&format!("{key} overrides the value set before for the same listener"));
        }
        Ok(true)
    }

    /// A TLS key: it belongs to the last `listener` line, or to the default
    /// listener when none came before (Mosquitto's rule).
    fn tls_option(&mut self, key: &str, rest: &str) -> Result<(), ConfigError> {
        let line = self.line;
        let prev = match key {
            "certfile" => {
                let v = self.path_value(key, rest)?;
                self.tls_target().certfile.replace((v, line)).map(|x| x.1)
            }
            "keyfile" => {
                let v = self.path_value(key, rest)?;
                self.tls_target().keyfile.replace((v, line)).map(|x| x.1)
            }
            "cafile" => {
                let v = self.path_value(key, rest)?;
                self.tls_target().cafile.replace((v, line)).map(|x| x.1)
            }
            "require_certificate" => {
                let v = self.bool_value(key, rest)?;
                self.tls_target().require_certificate.replace((v, line)).map(|x| x.1)
            }
            "use_identity_as_username" => {
                let v = self.bool_value(key, rest)?;
                self.tls_target().use_identity_as_username.replace((v, line)).map(|x| x.1)
            }
            "use_subject_as_username" => {
                let v = self.bool_value(key, rest)?;
                self.tls_target().use_subject_as_username.replace((v, line)).map(|x| x.1)
            }
            _ => {
                let v = self.one(key, rest)?;
                let version = TlsVersion::from_name(v).ok_or_else(|| {
                    self.err(format!(
                        "tls_version: \"{v}\" is not supported (tlsv1.2 or tlsv1.3: the lowest version accepted)"
                    ))
                })?;
                self.tls_target().tls_version.replace((version, line)).map(|x| x.1)
            }
        };
        if let Some(prev) = prev {
            let prev = self.places.describe(prev, line);
            self.warn(&format!("{key} overrides the value set on {prev} for the same listener"));
        }
        Ok(())
    }

    fn tls_target(&mut self) -> &mut TlsOptions {
        if self.orphan_tls.is_none() && self.tls_to_admin {
            return &mut self.admin_tls;
        }
        match (&mut self.orphan_tls, self.listener_tls.last_mut()) {
            (Some(o), _) | (None, Some(o)) => o,
            (None, None) => &mut self.default_tls,
        }
    }

    /// `cluster_cafile`, `cluster_certfile`, `cluster_keyfile`.
    fn cluster_tls_option(&mut self, key: &str, rest: &str) -> Result<(), ConfigError> {
        self.once(key);
        let v = (self.path_value(key, rest)?, self.line);
        let slot = match key {
            "cluster_cafile" => &mut self.cluster_tls.cafile,
            "cluster_certfile" => &mut self.cluster_tls.certfile,
            _ => &mut self.cluster_tls.keyfile,
        };
        *slot = Some(v);
        Ok(())
    }

    /// `log_dest`: one destination. `none` turns the log off and forgets
    /// the lines before it (as in Mosquitto); another destination after a
    /// first one is an error (Mosquitto logs to each).
    fn log_dest(&mut self, rest: &str) -> Result<(), ConfigError> {
        let (kind, arg) = split_first(rest);
        if !arg.is_empty() && kind != "file" {
            return Err(self.extra("log_dest", split_first(arg).0));
        }
        let dest = match kind {
            "" => return Err(self.err("log_dest: missing value")),
            "none" => {
                // Forgets every destination before it, topic included.
                self.cfg.log_topic = false;
                LogDest::None
            }
            "stdout" => LogDest::Stdout,
            "stderr" => LogDest::Stderr,
            "file" if arg.is_empty() => return Err(self.err("log_dest file: missing file name")),
            "file" => LogDest::File(PathBuf::from(arg), self.origin()),
            "syslog" => LogDest::Syslog,
            "dlt" => {
                return Err(self.err(
                    "log_dest dlt is not supported by midge: use log_dest syslog, file or topic, or run under \
                     systemd, whose journal takes stderr",
                ))
            }
            "topic" => {
                // Besides the one destination, as in Mosquitto.
                self.cfg.log_topic = true;
                return Ok(());
            }
            other => {
                return Err(
                    self.err(format!("log_dest: \"{other}\" is not one of stdout, stderr, file, syslog, topic, none"))
                )
            }
        };
        let same = |a: &LogDest, b: &LogDest| match (a, b) {
            (LogDest::File(a, _), LogDest::File(b, _)) => a == b,
            _ => a == b,
        };
        match &self.log_dest {
            Some((first, pos)) if *first != LogDest::None && dest != LogDest::None && !same(first, &dest) => {
                let first = match first {
                    LogDest::File(path, _) => format!("file {}", path.display()),
                    LogDest::Stdout => "stdout".to_string(),
                    LogDest::Syslog => "syslog".to_string(),
                    _ => "stderr".to_string(),
                };
                let at = self.places.describe(*pos, self.line);
                Err(self.err(format!(
                    "log_dest {kind}: midge logs to one destination; log_dest {first} is already set on {at}"
                )))
            }
            Some((first, _)) if same(first, &dest) => Ok(()),
            _ => {
                self.log_dest = Some((dest, self.line));
                Ok(())
            }
        }
    }

    fn log_type(&mut self, rest: &str) -> Result<(), ConfigError> {
        if rest.is_empty() {
            return Err(self.err("log_type: missing value"));
        }
        let mut list = self.log_types.take().unwrap_or_default();
        for t in rest.split_whitespace() {
            match t {
                "none" => list.clear(),
                "all" => list = LogType::ALL.to_vec(),
                _ => match LogType::from_name(t) {
                    Some(x) if !list.contains(&x) => list.push(x),
                    Some(_) => {}
                    None => {
                        return Err(self.err(format!(
                            "log_type: \"{t}\" is not one of error, warning, notice, information, \
                             debug, subscribe, unsubscribe, websockets, none, all"
                        )))
                    }
                },
            }
        }
        self.log_types = Some(list);
        Ok(())
    }

    fn cluster_peer(&mut self, rest: &str) -> Result<(), ConfigError> {
        let toks: Vec<&str> = rest.split_whitespace().collect();
        match toks.len() {
            0 | 1 => return Err(self.err("cluster_peer: expected cluster_peer ID HOST:PORT")),
            2 => {}
            _ => return Err(self.extra("cluster_peer", toks[2])),
        }
        let id = self.num("cluster_peer", toks[0], 1, u64::MAX)?;
        let addr = toks[1];
        let key = peer_key(addr).ok_or_else(|| {
            self.err(format!("cluster_peer: \"{addr}\" is not HOST:PORT (an IPv6 address is written [ADDRESS]:PORT)"))
        })?;
        for (i, (other_id, other_addr)) in self.cfg.cluster_peers.iter().enumerate() {
            let line = self.places.describe(self.peer_lines[i], self.line);
            if *other_id == id {
                return Err(self.err(format!("cluster_peer: id {id} is already used on {line}")));
            }
            if peer_key(other_addr).as_ref() == Some(&key) {
                return Err(
                    self.err(format!("cluster_peer: address {addr} is already used by peer {other_id} on {line}"))
                );
            }
        }
        self.cfg.cluster_peers.push((id, addr.to_string()));
        self.peer_lines.push(self.line);
        Ok(())
    }

    /// The checks across lines, on the lines that were valid; adds what it
    /// finds to `errors`.
    fn finish(mut self, errors: &mut Vec<ConfigError>) -> Config {
        // Positions, given their file and line by `parse`.
        let file = "";
        let mut err = |line: u32, msg: String| errors.push(ConfigError::new(file, line, msg));
        let mut listeners = Vec::new();
        if self.default_port.is_some() || self.default_address.is_some() {
            let mut tls_errors = Vec::new();
            let l = Listener {
                tls: build_tls(&self.default_tls, self.default_tls_line_failed, file, &mut tls_errors),
                websockets: self.default_websockets.is_some(),
                ..Listener::new(self.default_port.unwrap_or(DEFAULT_PORT), self.default_address.take())
            };
            tls_errors.into_iter().for_each(|e| err(e.line, e.message));
            listeners.push((l, self.default_line));
        } else if !self.default_tls.is_empty() {
            err(
                self.default_tls.first_line(),
                "TLS options must follow a listener line (or a port line) they apply to".into(),
            );
        } else if let Some(line) = self.default_websockets {
            err(line, "protocol websockets must follow a listener line (or a port line) it applies to".into());
        }
        if self.per_listener.is_some() {
            for ((l, _), a) in self.listeners.iter_mut().zip(std::mem::take(&mut self.listener_auth)) {
                l.auth = Some(ListenerAuth {
                    allow_anonymous: a.allow_anonymous.unwrap_or(a.password_file.is_none()),
                    password_file: a.password_file,
                    acl_file: a.acl_file,
                });
            }
        }
        for (((l, _), o), failed) in self.listeners.iter_mut().zip(&self.listener_tls).zip(&self.tls_line_failed) {
            let mut tls_errors = Vec::new();
            l.tls = build_tls(o, *failed, file, &mut tls_errors);
            tls_errors.into_iter().for_each(|e| err(e.line, e.message));
        }
        listeners.append(&mut self.listeners);
        listeners.sort_by_key(|(_, line)| *line);
        for (i, (l, line)) in listeners.iter().enumerate() {
            if let Some((_, first)) = listeners[..i].iter().find(|(o, _)| same_listener(o, l)) {
                let at = match &l.address {
                    Some(a) => format!("{a} port {}", l.port),
                    None => format!("port {} on all interfaces", l.port),
                };
                let first = self.places.describe(*first, *line);
                err(*line, format!("duplicate listener on {at} (already defined on {first})"));
            }
        }
        let mut cfg = self.cfg;
        if let Some(admin) = &mut cfg.admin_listener {
            let mut tls_errors = Vec::new();
            admin.tls = build_tls(&self.admin_tls, self.admin_tls_line_failed, file, &mut tls_errors);
            tls_errors.into_iter().for_each(|e| err(e.line, e.message));
        }
        if !self.cluster_tls.is_empty() {
            match super::tls::build_cluster(&self.cluster_tls, file) {
                Ok(t) => cfg.cluster_tls = Some(t),
                Err(es) => es.0.into_iter().for_each(|e| err(e.line, e.message)),
            }
        }
        cfg.listeners = listeners.into_iter().map(|(l, _)| l).collect();
        if cfg.listeners.is_empty() {
            cfg.listeners.push(Listener::any(DEFAULT_PORT));
        }
        cfg.allow_anonymous = self.allow_anonymous.unwrap_or(cfg.password_file.is_none() && !cfg.dynsec_plugin);
        if let Some(types) = self.log_types {
            cfg.log_types = types;
        }
        if let Some((dest, _)) = self.log_dest {
            cfg.log_dest = dest;
        }

        // Checks across keys are skipped when a line of a key they involve
        // was an error: which value was meant is unknown.
        let failed = |keys: &[&str]| keys.iter().any(|k| self.failed_keys.contains(*k));
        let line_of = |key: &str| self.seen.get(key).copied().unwrap_or(0);

        // Cluster membership.
        let ids: Vec<u64> = cfg.cluster_peers.iter().map(|(id, _)| *id).collect();
        if !ids.is_empty() && !failed(&["cluster_peer", "cluster_node_id", "cluster_allow_two_nodes"]) {
            match cfg.cluster_node_id {
                None => err(self.peer_lines[0], "cluster_peer requires cluster_node_id (this node's own id)".into()),
                Some(me) if !ids.contains(&me) => err(
                    self.node_id_line,
                    format!(
                        "cluster_node_id {me} is not one of the cluster_peer ids ({}); \
                         list this node as a cluster_peer too",
                        join(&ids)
                    ),
                ),
                Some(_) => {}
            }
            if ids.len() == 2 && !cfg.cluster_allow_two_nodes {
                err(
                    self.peer_lines[1],
                    "a two-node cluster has no fault tolerance: a majority of 2 is 2, so losing \
                     either node stops it; add a third peer or set cluster_allow_two_nodes true"
                        .into(),
                );
            }
        }
        if let Some(at) = self.per_listener {
            if !ids.is_empty() && cfg.cluster_mode == ClusterMode::FullSync && !failed(&["cluster_mode"]) {
                err(
                    at,
                    "per_listener_settings true in a cluster is not supported by midge: which listener a \
                     session last connected on is kept in memory, not replicated, and every node must route \
                     messages to offline sessions by the same rules"
                        .into(),
                );
            }
        }
        if cfg.cluster_mode == ClusterMode::DynsecSync && !cfg.dynsec_plugin && !failed(&["plugin", "cluster_mode"]) {
            err(
                line_of("cluster_mode"),
                format!("cluster_mode dynsec_sync synchronizes dynamic security: it needs plugin .../{DYNSEC_PLUGIN} and plugin_opt_config_file"),
            );
        }
        for (b, l) in cfg.bridges.iter_mut().zip(&self.bridge_lines) {
            let queued = cfg.limits.queued_messages_max;
            for e in finish_bridge(b, l, queued) {
                err(e.line, e.message);
            }
            if cfg.cluster_mode == ClusterMode::DynsecSync && !failed(&["cluster_mode"]) {
                err(
                    l.connection,
                    format!("connection {}: bridges need cluster_mode full_sync (in dynsec_sync every node serves its own clients, and no node holds the others' messages)", b.name),
                );
            }
        }
        if cfg.dynsec_plugin && cfg.dynsec_file.is_none() && !failed(&["plugin_opt_config_file"]) {
            err(
                line_of("plugin"),
                format!("plugin {DYNSEC_PLUGIN} needs plugin_opt_config_file FILE (create FILE with mosquitto_ctrl dynsec init FILE admin-user)"),
            );
        }
        if cfg.dynsec_file.is_some() && !cfg.dynsec_plugin && !failed(&["plugin"]) {
            err(
                line_of("plugin_opt_config_file"),
                format!("plugin_opt_config_file without a plugin line (plugin .../{DYNSEC_PLUGIN})"),
            );
        }
        if cfg.admin_listener.is_some()
            && cfg.password_file.is_none()
            && !cfg.dynsec_plugin
            && !failed(&["password_file", "plugin"])
        {
            err(
                line_of("admin_listener"),
                "admin_listener needs a password_file or dynamic security: the admin listener is never open to anonymous clients".into(),
            );
        }
        if cfg.cluster.heartbeat_ticks >= cfg.cluster.election_ticks
            && !failed(&["cluster_heartbeat_ticks", "cluster_election_ticks"])
        {
            err(
                line_of("cluster_heartbeat_ticks").max(line_of("cluster_election_ticks")),
                format!(
                    "cluster_heartbeat_ticks ({}) must be less than cluster_election_ticks ({})",
                    cfg.cluster.heartbeat_ticks, cfg.cluster.election_ticks
                ),
            );
        }
        if let Some(leader) = cfg.cluster_preferred_leader {
            let members = if ids.is_empty() { cfg.cluster_node_id.into_iter().collect() } else { ids };
            if !members.contains(&leader) && !failed(&["cluster_peer", "cluster_node_id"]) {
                err(
                    self.preferred_leader_line,
                    format!(
                        "cluster_preferred_leader {leader} is not a cluster member ({})",
                        if members.is_empty() {
                            "no cluster_node_id or cluster_peer is set".to_string()
                        } else {
                            format!("members: {}", join(&members))
                        }
                    ),
                );
            }
        }
        cfg
    }
}
