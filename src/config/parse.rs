//! The line parser behind [`Config::parse_str`](super::Config::parse_str).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use super::keys::{suggest, UNSUPPORTED_KEYS, UNSUPPORTED_PREFIXES};
use super::tls::{ListenerTls, TlsOptions, TlsVersion};
use super::values::{is_hostname, join, parse_u64, peer_key, same_listener};
use super::{
    numbered_lines, split_first, ClusterMode, Config, ConfigError, ConfigErrors, FollowerMode, Listener, LogDest,
    LogType, DEFAULT_CONNECTIONS_MAX, DEFAULT_PORT, PROTOCOL_MAX_BYTES,
};

/// `busy_poll_us` at most: a millisecond of polling after each packet is
/// already all CPU and no lower latency.
const BUSY_POLL_US_MAX: u64 = 1_000;
/// The file name of Mosquitto's dynamic security plugin, built into midge.
pub const DYNSEC_PLUGIN: &str = "mosquitto_dynamic_security.so";

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
    pub key_lines: HashMap<String, u32>,
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
    for (line, raw) in numbered_lines(text) {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        p.line = line;
        let (key, rest) = split_first(trimmed);
        if let Err(e) = p.option(key, rest) {
            p.errors.push(e);
            p.failed_keys.insert(key.to_string());
            if key == "listener" {
                // Its TLS lines belong to no listener; they are still checked.
                p.orphan_tls = Some(TlsOptions::default());
            }
        }
    }
    let key_lines = p.seen.clone();
    let mut errors = std::mem::take(&mut p.errors);
    let config = p.finish(&mut errors);
    errors.sort_by_key(|e| e.line);
    Parsed { config, errors, key_lines }
}

struct Parser<'f> {
    file: &'f str,
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
    /// Set when the last `listener` line was an error: TLS lines after it
    /// go here, to be checked but belong to no listener.
    orphan_tls: Option<TlsOptions>,
}

impl<'f> Parser<'f> {
    fn new(file: &'f str) -> Parser<'f> {
        let mut cfg = Config::default();
        cfg.listeners.clear();
        Parser {
            file,
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
            node_id_line: 0,
            peer_lines: Vec::new(),
            preferred_leader_line: 0,
            errors: Vec::new(),
            failed_keys: HashSet::new(),
            tls_line_failed: Vec::new(),
            default_tls_line_failed: false,
            orphan_tls: None,
        }
    }

    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, self.line, message)
    }

    fn warn(&mut self, message: &str) {
        let w = self.err(message);
        log::warn!("{w}");
        self.cfg.warnings.push(w);
    }

    fn option(&mut self, key: &str, rest: &str) -> Result<(), ConfigError> {
        match key {
            "listener" => self.listener(rest)?,
            "certfile" | "keyfile" | "cafile" | "require_certificate" | "tls_version" => {
                if let Err(e) = self.tls_option(key, rest) {
                    if self.orphan_tls.is_none() {
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
                let v = self.one(key, rest)?;
                if v != "mqtt" {
                    return Err(self.err(format!("protocol: \"{v}\" is not supported by midge (only mqtt)")));
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
            "queue_qos0_messages" => self.cfg.queue_qos0_messages = self.bool_opt(key, rest)?,
            "set_tcp_nodelay" => self.cfg.set_tcp_nodelay = self.bool_opt(key, rest)?,
            "busy_poll_us" => self.cfg.busy_poll_us = self.num_opt(key, rest, 0, BUSY_POLL_US_MAX)? as u32,
            "connection_messages" => self.cfg.connection_messages = self.bool_opt(key, rest)?,
            "upgrade_outgoing_qos" => self.cfg.upgrade_outgoing_qos = self.bool_opt(key, rest)?,
            "persistence" => self.cfg.persistence = self.bool_opt(key, rest)?,
            "sys_interval" => self.cfg.sys_interval_secs = self.num_opt(key, rest, 0, u32::MAX.into())? as u32,
            "max_qos" => self.cfg.max_qos = self.num_opt(key, rest, 0, 2)? as u8,
            "log_type" => self.log_type(rest)?,
            "log_dest" => {
                self.once(key);
                let mut toks = rest.split_whitespace();
                let dest = match toks.next() {
                    Some("stdout") => LogDest::Stdout,
                    Some("stderr") => LogDest::Stderr,
                    Some(other) => {
                        return Err(
                            self.err(format!("log_dest: \"{other}\" is not supported by midge (use stdout or stderr)"))
                        )
                    }
                    None => return Err(self.err("log_dest: missing value")),
                };
                if let Some(extra) = toks.next() {
                    return Err(self.extra(key, extra));
                }
                self.cfg.log_dest = dest;
            }
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
            "max_connections" => {
                self.once(key);
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
                self.cfg.limits.connections_max = if n == 0 { DEFAULT_CONNECTIONS_MAX } else { n };
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
            "max_topic_alias" => self.cfg.limits.topic_alias_max = self.num_opt(key, rest, 0, 65535)? as u16,
            "cluster_node_id" => {
                self.cfg.cluster_node_id = Some(self.num_opt(key, rest, 1, u64::MAX)?);
                self.node_id_line = self.line;
            }
            "cluster_peer" => self.cluster_peer(rest)?,
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
                // Mosquitto 2.0 itself only warns that these are gone.
                self.num_opt(key, rest, 0, u64::MAX)?;
                self.warn(&format!("{key} is ignored: Mosquitto 2 no longer uses it either"));
            }
            "pid_file" => {
                self.path_opt(key, rest)?;
                self.warn("pid_file is ignored: midge writes no pid file");
            }
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
                if self.bool_opt(key, rest)? {
                    return Err(self.err(
                        "per_listener_settings true is not supported by midge: authentication and access control apply to all listeners",
                    ));
                }
                self.warn("per_listener_settings false is ignored: it is what midge always does");
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
            self.warn(&format!("{key} overrides the value set on line {prev}"));
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
        Ok(Listener { port, address, tls: None })
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
        self.listeners.push((Listener { port, address, tls: None }, self.line));
        self.listener_tls.push(TlsOptions::default());
        self.tls_line_failed.push(false);
        self.orphan_tls = None;
        Ok(())
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
            self.warn(&format!("{key} overrides the value set on line {prev} for the same listener"));
        }
        Ok(())
    }

    fn tls_target(&mut self) -> &mut TlsOptions {
        match (&mut self.orphan_tls, self.listener_tls.last_mut()) {
            (Some(o), _) | (None, Some(o)) => o,
            (None, None) => &mut self.default_tls,
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
            let line = self.peer_lines[i];
            if *other_id == id {
                return Err(self.err(format!("cluster_peer: id {id} is already used on line {line}")));
            }
            if peer_key(other_addr).as_ref() == Some(&key) {
                return Err(
                    self.err(format!("cluster_peer: address {addr} is already used by peer {other_id} on line {line}"))
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
        let file = self.file;
        let mut err = |line: u32, msg: String| errors.push(ConfigError::new(file, line, msg));
        let mut listeners = Vec::new();
        if self.default_port.is_some() || self.default_address.is_some() {
            let mut tls_errors = Vec::new();
            let l = Listener {
                port: self.default_port.unwrap_or(DEFAULT_PORT),
                address: self.default_address.take(),
                tls: build_tls(&self.default_tls, self.default_tls_line_failed, file, &mut tls_errors),
            };
            tls_errors.into_iter().for_each(|e| err(e.line, e.message));
            listeners.push((l, self.default_line));
        } else if !self.default_tls.is_empty() {
            err(
                self.default_tls.first_line(),
                "TLS options must follow a listener line (or a port line) they apply to".into(),
            );
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
                err(*line, format!("duplicate listener on {at} (already defined on line {first})"));
            }
        }
        let mut cfg = self.cfg;
        cfg.listeners = listeners.into_iter().map(|(l, _)| l).collect();
        if cfg.listeners.is_empty() {
            cfg.listeners.push(Listener::any(DEFAULT_PORT));
        }
        cfg.allow_anonymous = self.allow_anonymous.unwrap_or(cfg.password_file.is_none() && !cfg.dynsec_plugin);
        if let Some(types) = self.log_types {
            cfg.log_types = types;
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
        if cfg.cluster_mode == ClusterMode::DynsecSync && !cfg.dynsec_plugin && !failed(&["plugin", "cluster_mode"]) {
            err(
                line_of("cluster_mode"),
                format!("cluster_mode dynsec_sync synchronizes dynamic security: it needs plugin .../{DYNSEC_PLUGIN} and plugin_opt_config_file"),
            );
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
