//! The option keys midge knows: those it implements, the Mosquitto keys it
//! ignores with a warning and those it rejects with a reason, and the
//! "did you mean" suggestion for an unknown key.

use super::values::edit_distance;

/// Every key midge implements (documented in docs/CONFIG.md).
pub(super) const SUPPORTED_KEYS: &[&str] = &[
    "acl_file",
    "address",
    "addresses",
    "admin_listener",
    "allow_anonymous",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "bind_address",
    "bridge_cafile",
    "bridge_certfile",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_queued_messages",
    "bridge_protocol_version",
    "busy_poll_us",
    "cafile",
    "certfile",
    "cleansession",
    "client_out_buffer_bytes",
    "clientid",
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
    "connection",
    "connection_messages",
    "health_listener",
    "include_dir",
    "keepalive_interval",
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
    "notification_topic",
    "notifications",
    "password",
    "password_file",
    "per_listener_settings",
    "persistence",
    "persistence_fsync",
    "persistence_batch_window_ms",
    "persistence_location",
    "persistence_min_free",
    "persistent_client_expiration",
    "pid_file",
    "plugin",
    "plugin_opt_config_file",
    "port",
    "protocol",
    "queue_qos0_messages",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "require_certificate",
    "restart_timeout",
    "retain_available",
    "round_robin",
    "set_tcp_nodelay",
    "start_type",
    "sys_interval",
    "tls_version",
    "topic",
    "try_private",
    "upgrade_outgoing_qos",
    "use_identity_as_username",
    "use_subject_as_username",
    "use_username_as_clientid",
    "username",
];

/// Mosquitto keys midge accepts and ignores with a warning.
pub(super) const IGNORED_KEYS: &[&str] = &[
    "autosave_interval",
    "autosave_on_changes",
    "log_timestamp",
    "log_timestamp_format",
    "persistence_file",
    "retry_interval",
    "store_clean_interval",
    "user",
];

const TLS: &str = "midge's TLS (rustls) takes certfile, keyfile, cafile, require_certificate, tls_version, use_identity_as_username and use_subject_as_username";
const PLUGINS: &str =
    "plugins are not supported (dynamic security is built in: plugin .../mosquitto_dynamic_security.so)";
const BRIDGES: &str = "a bridge takes the keys listed in docs/CONFIG.md, \"Bridges\"";
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
    ("local_clientid", BRIDGES),
    ("local_username", BRIDGES),
    ("local_password", BRIDGES),
    ("local_cleansession", BRIDGES),
    ("notifications_local_only", BRIDGES),
    ("idle_timeout", BRIDGES),
    ("threshold", BRIDGES),
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
