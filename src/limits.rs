//! Every bound of the broker in one place (STYLE.md §3), with units last in
//! names and nothing unlimited. The config file sets them (`config::parse`
//! maps each Mosquitto key and its "0 = unlimited" to a value here; see
//! `docs/CONFIG.md`); the broker and the runtime only read them. Kept at the
//! crate root so that `broker` reads its bounds without knowing the config.

/// The largest packet / payload size MQTT can express (Remaining Length max).
pub const PROTOCOL_MAX_BYTES: u32 = 268_435_455;

const KIB: u32 = 1024;
const MIB: u64 = 1024 * 1024;

/// Every bound in one place; units last in names. Nothing defaults to
/// unlimited: a Mosquitto "0 = unlimited" value is mapped as documented per
/// field (and in `docs/CONFIG.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_packet_size`: largest packet accepted, whole packet. Default 1 MiB;
    /// configured `0` means the protocol maximum (268 435 455).
    pub packet_bytes_max: u32,
    /// `message_size_limit`: largest PUBLISH payload. Default and configured
    /// `0` mean the protocol maximum (268 435 455); the packet limit still
    /// applies, so the effective payload limit is the smaller of the two.
    pub message_bytes_max: u32,
    /// `max_inflight_messages`: the Receive Maximum midge advertises and its
    /// outbound QoS 1/2 window per client. Default 20; configured `0` (Mosquitto:
    /// unlimited) means 65535.
    pub inflight_messages_max: u16,
    /// `max_queued_messages`: QoS 1/2 messages queued per session beyond the
    /// in-flight window. Default 1000; must be at least 1.
    pub queued_messages_max: u32,
    /// `max_queued_bytes`: payload bytes queued per session. Default 16 MiB;
    /// configured `0` (Mosquitto: unlimited) means `u64::MAX`, i.e. only
    /// `queued_messages_max` bounds the queue.
    pub queued_bytes_max: u64,
    /// `memory_limit`: total memory the broker will use for messages.
    /// Default 256 MiB; configured `0` (Mosquitto: unlimited) means `u64::MAX`.
    pub memory_bytes_max: u64,
    /// `max_keepalive`: largest keep-alive granted to clients. Default 65535.
    pub keepalive_secs_max: u16,
    /// `max_connections`: simultaneous client connections, all listeners
    /// together. Default 100 000; configured `-1` or `0` (Mosquitto: unlimited)
    /// mean the default.
    pub connections_max: u32,
    /// `client_out_buffer_bytes` (midge): bytes queued to one socket before
    /// QoS 0 messages to that client are dropped. Default 256 KiB.
    pub out_buffer_bytes_max: u32,
    /// `max_topic_levels` (midge): levels in a topic name or filter. Default 64.
    pub topic_levels_max: u16,
    /// `max_subscriptions_per_client` (midge). Default 1000.
    pub subscriptions_per_client_max: u32,
    /// `max_retained_messages` (midge): retained messages broker-wide.
    /// Default 100 000.
    pub retained_messages_max: u32,
    /// `max_topic_alias`: Topic Alias Maximum midge advertises. Default 10;
    /// `0` disables topic aliases.
    pub topic_alias_max: u16,
}

/// Value of `max_connections` when unset, `-1` or `0`.
pub const DEFAULT_CONNECTIONS_MAX: u32 = 100_000;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            packet_bytes_max: 1024 * KIB,
            message_bytes_max: PROTOCOL_MAX_BYTES,
            inflight_messages_max: 20,
            queued_messages_max: 1000,
            queued_bytes_max: 16 * MIB,
            memory_bytes_max: 256 * MIB,
            keepalive_secs_max: 65535,
            connections_max: DEFAULT_CONNECTIONS_MAX,
            out_buffer_bytes_max: 256 * KIB,
            topic_levels_max: 64,
            subscriptions_per_client_max: 1000,
            retained_messages_max: 100_000,
            topic_alias_max: 10,
        }
    }
}
