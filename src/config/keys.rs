//! The option keys midge knows: those it implements, the Mosquitto keys it
//! ignores with a warning and those it rejects with a reason, and the
//! "did you mean" suggestion for an unknown key.

use super::values::edit_distance;

/// Every key midge implements (documented in docs/CONFIG.md).
pub(super) const SUPPORTED_KEYS: &[&str] = &[
    "acl_file",
    "admin_listener",
    "allow_anonymous",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "bind_address",
    "busy_poll_us",
    "cafile",
    "certfile",
    "client_out_buffer_bytes",
    "cluster_allow_two_nodes",
    "cluster_cafile",
    "cluster_certfile",
    "cluster_election_ticks",
    "cluster_follower_mode",
    "cluster_heartbeat_ticks",
    "cluster_join",
    "cluster_keyfile",
    "cluster_mode",
    "cluster_node_id",
    "cluster_peer",
    "cluster_preferred_leader",
    "cluster_snapshot_entries",
    "cluster_tick_ms",
    "connection_messages",
    "health_listener",
    "include_dir",
    "keyfile",
    "listener",
    "log_dest",
    "log_facility",
    "log_type",
    "max_connections",
    "max_inflight_messages",
    "max_keepalive",
    "max_packet_size",
    "max_qos",
    "max_queued_bytes",
    "max_queued_messages",
    "max_retained_messages",
    "max_subscriptions_per_client",
    "max_topic_alias",
    "max_topic_levels",
    "memory_limit",
    "message_size_limit",
    "mount_point",
    "password_file",
    "persistence",
    "persistence_fsync",
    "persistence_location",
    "persistent_client_expiration",
    "pid_file",
    "plugin",
    "plugin_opt_config_file",
    "port",
    "protocol",
    "queue_qos0_messages",
    "require_certificate",
    "retain_available",
    "set_tcp_nodelay",
    "sys_interval",
    "tls_version",
    "upgrade_outgoing_qos",
    "use_identity_as_username",
    "use_subject_as_username",
    "use_username_as_clientid",
];

/// Mosquitto keys midge accepts and ignores with a warning.
pub(super) const IGNORED_KEYS: &[&str] = &[
    "autosave_interval",
    "autosave_on_changes",
    "log_timestamp",
    "log_timestamp_format",
    "per_listener_settings",
    "persistence_file",
    "retry_interval",
    "store_clean_interval",
    "user",
];

const TLS: &str = "midge's TLS (rustls) takes certfile, keyfile, cafile, require_certificate, tls_version, use_identity_as_username and use_subject_as_username";
const PLUGINS: &str =
    "plugins are not supported (dynamic security is built in: plugin .../mosquitto_dynamic_security.so)";
const BRIDGES: &str = "bridges are not supported";
const WEBSOCKETS: &str = "a WebSockets listener (protocol websockets) serves MQTT only, with fixed settings";

/// Mosquitto keys midge recognises but rejects, with the reason.
pub(super) const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    ("capath", TLS),
    ("ciphers", TLS),
    ("ciphers_tls1.3", TLS),
    ("crlfile", TLS),
    ("dhparamfile", TLS),
    ("tls_engine", TLS),
    ("tls_engine_kpass_sha1", TLS),
    ("tls_keyform", TLS),
    ("psk_hint", TLS),
    ("psk_file", TLS),
    ("auth_plugin", PLUGINS),
    ("auth_plugin_deny_special_chars", PLUGINS),
    ("global_plugin", PLUGINS),
    ("connection", BRIDGES),
    ("address", BRIDGES),
    ("addresses", BRIDGES),
    ("topic", BRIDGES),
    ("cleansession", BRIDGES),
    ("local_clientid", BRIDGES),
    ("remote_clientid", BRIDGES),
    ("remote_username", BRIDGES),
    ("remote_password", BRIDGES),
    ("notifications", BRIDGES),
    ("try_private", BRIDGES),
    ("round_robin", BRIDGES),
    ("start_type", BRIDGES),
    ("restart_timeout", BRIDGES),
    ("keepalive_interval", BRIDGES),
    ("http_dir", WEBSOCKETS),
    ("websockets_log_level", WEBSOCKETS),
    ("websockets_headers_size", WEBSOCKETS),
    ("bind_interface", "use listener PORT ADDRESS"),
    ("socket_domain", "use listener PORT ADDRESS with an IPv4 or IPv6 address"),
    ("max_inflight_bytes", "max_inflight_messages bounds the in-flight window"),
    ("clientid_prefixes", ""),
    ("check_retain_source", ""),
    ("allow_duplicate_messages", ""),
];

pub(super) const UNSUPPORTED_PREFIXES: &[(&str, &str)] =
    &[("auth_opt_", PLUGINS), ("plugin_opt_", PLUGINS), ("bridge_", BRIDGES)];

/// The closest known key: within edit distance 3, or else the shortest known
/// key that starts with `key` (so `max_inflight` suggests
/// `max_inflight_messages`).
pub(super) fn suggest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let known = || SUPPORTED_KEYS.iter().chain(IGNORED_KEYS).copied();
    let close = known().map(|k| (edit_distance(&key, k), k)).filter(|(d, _)| *d <= 3).min();
    if let Some((_, k)) = close {
        return Some(k);
    }
    if key.len() < 4 {
        return None;
    }
    known().filter(|k| k.starts_with(key.as_str())).min_by_key(|k| (k.len(), *k))
}
