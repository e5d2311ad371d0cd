//! Bridges to upstream brokers, in Mosquitto's bridge syntax: what a
//! `connection` block says (`BridgeConfig`) and how its `topic` lines map
//! topics between the two brokers (`TopicLine`, `OutRoute`).
//!
//! No I/O here. The messages waiting for the upstream broker are replicated
//! state (`broker::state`, `State::bridge_queue`); the MQTT client that
//! talks to the upstream broker is runtime (`net::bridge`).

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use crate::mqtt::{topic, QoS, Version};

/// The local client id a bridge's inbound messages carry as their origin:
/// a message that came in over bridge NAME is never sent back out over it
/// (as Mosquitto does not send a message back to the bridge it came from).
pub fn origin_id(name: &str) -> String {
    format!("$bridge/{name}")
}

/// A `topic` line's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    Both,
}

impl Direction {
    pub fn from_name(s: &str) -> Option<Direction> {
        match s.to_ascii_lowercase().as_str() {
            "out" => Some(Direction::Out),
            "in" => Some(Direction::In),
            "both" => Some(Direction::Both),
            _ => None,
        }
    }

    pub fn outward(self) -> bool {
        self != Direction::In
    }

    pub fn inward(self) -> bool {
        self != Direction::Out
    }
}

/// `topic PATTERN [[[out|in|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]`, with
/// Mosquitto's meaning: the local side subscribes to (or publishes on)
/// LOCAL_PREFIX + PATTERN, the remote side to REMOTE_PREFIX + PATTERN; a
/// message's topic loses the one prefix and gains the other on the way.
/// PATTERN `""` with both prefixes maps one topic to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLine {
    pub direction: Direction,
    pub qos: QoS,
    pub local_prefix: Option<String>,
    pub remote_prefix: Option<String>,
    /// LOCAL_PREFIX + PATTERN: the filter on the local broker.
    pub local_topic: String,
    /// REMOTE_PREFIX + PATTERN: the filter on the remote broker.
    pub remote_topic: String,
}

impl TopicLine {
    /// A line's values as Mosquitto checks them (`""` for a prefix or the
    /// pattern means none). The error says what is wrong.
    pub fn new(
        pattern: &str,
        direction: Direction,
        qos: QoS,
        local_prefix: Option<&str>,
        remote_prefix: Option<&str>,
    ) -> Result<TopicLine, String> {
        let none_if_empty = |s: Option<&str>| s.filter(|s| *s != "\"\"").map(str::to_string);
        let pattern = none_if_empty(Some(pattern));
        let (local_prefix, remote_prefix) = (none_if_empty(local_prefix), none_if_empty(remote_prefix));
        if pattern.is_none() && (local_prefix.is_none() || remote_prefix.is_none()) {
            return Err("pattern \"\" needs both a local and a remote prefix (a topic remapping)".into());
        }
        let pat = pattern.as_deref().unwrap_or("");
        for (which, p) in [("local", &local_prefix), ("remote", &remote_prefix)] {
            if let Some(p) = p {
                if !topic::valid_topic_name(p) {
                    return Err(format!("{which} prefix \"{p}\" is not a valid topic (no + or #)"));
                }
            }
        }
        let local_topic = format!("{}{pat}", local_prefix.as_deref().unwrap_or(""));
        let remote_topic = format!("{}{pat}", remote_prefix.as_deref().unwrap_or(""));
        for (which, t) in [("local", &local_topic), ("remote", &remote_topic)] {
            if !topic::valid_topic_filter(t) {
                return Err(format!("{which} prefix and pattern give \"{t}\", which is not a valid topic filter"));
            }
        }
        Ok(TopicLine { direction, qos, local_prefix, remote_prefix, local_topic, remote_topic })
    }

    fn remaps(&self) -> bool {
        self.local_prefix.is_some() || self.remote_prefix.is_some()
    }

    /// A local topic as the remote broker is to see it.
    fn to_remote(&self, topic: &str) -> String {
        let rest = match &self.local_prefix {
            Some(p) => topic.strip_prefix(p.as_str()).unwrap_or(topic),
            None => topic,
        };
        format!("{}{rest}", self.remote_prefix.as_deref().unwrap_or(""))
    }

    /// A remote topic as the local broker is to see it.
    fn to_local(&self, topic: &str) -> String {
        let rest = match &self.remote_prefix {
            Some(p) => topic.strip_prefix(p.as_str()).unwrap_or(topic),
            None => topic,
        };
        format!("{}{rest}", self.local_prefix.as_deref().unwrap_or(""))
    }
}

/// A local message's way out over one bridge: its topic on the remote
/// broker and the QoS it goes with, or None when no `out`/`both` line
/// matches. As in Mosquitto, the bridge holds a local subscription per line
/// (so the QoS is the message's, capped by the highest QoS of the matching
/// lines, or that QoS with `upgrade_outgoing_qos`), and the topic is
/// remapped by the first matching line that has a prefix.
pub fn map_out(lines: &[TopicLine], topic_name: &str, qos: QoS, upgrade: bool) -> Option<(String, QoS)> {
    let mut granted: Option<QoS> = None;
    let mut remote: Option<String> = None;
    for l in lines.iter().filter(|l| l.direction.outward()) {
        if !topic::matches(&l.local_topic, topic_name) {
            continue;
        }
        granted = Some(granted.map_or(l.qos, |g| g.max(l.qos)));
        if remote.is_none() && l.remaps() {
            remote = Some(l.to_remote(topic_name));
        }
    }
    let sub_qos = granted?;
    let qos = if upgrade { sub_qos } else { qos.min(sub_qos) };
    Some((remote.unwrap_or_else(|| topic_name.to_string()), qos))
}

/// A message from the remote broker: its local topic (remapped by the
/// first matching `in`/`both` line that has a prefix, as Mosquitto does).
pub fn map_in(lines: &[TopicLine], topic_name: &str) -> String {
    lines
        .iter()
        .filter(|l| l.direction.inward() && l.remaps())
        .find(|l| topic::matches(&l.remote_topic, topic_name))
        .map_or_else(|| topic_name.to_string(), |l| l.to_local(topic_name))
}

/// What every node's `apply` needs of a bridge to queue messages for it:
/// the same on every node of a cluster, like the other apply limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRoute {
    pub name: Rc<str>,
    /// `origin_id(name)`: messages of this origin do not go back out.
    pub origin: Rc<str>,
    pub lines: Vec<TopicLine>,
    /// `bridge_max_queued_messages`: messages queued for this bridge,
    /// sent ones awaiting the upstream's acknowledgement included.
    pub queued_messages_max: u32,
}

/// `bridge_cafile`, `bridge_certfile`, `bridge_keyfile`, `bridge_insecure`,
/// and the rustls configuration built from them when the file was read.
#[derive(Clone)]
pub struct BridgeTls {
    pub cafile: PathBuf,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `bridge_insecure true`: the upstream's certificate must chain to
    /// `bridge_cafile` but need not name the host dialled.
    pub insecure: bool,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for BridgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeTls")
            .field("cafile", &self.cafile)
            .field("certfile", &self.certfile)
            .field("keyfile", &self.keyfile)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BridgeTls {
    fn eq(&self, o: &Self) -> bool {
        (&self.cafile, &self.certfile, &self.keyfile, self.insecure) == (&o.cafile, &o.certfile, &o.keyfile, o.insecure)
    }
}
impl Eq for BridgeTls {}

/// One `connection NAME` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// `address HOST:PORT [HOST:PORT ...]` (also `addresses`), tried in
    /// turn.
    pub addresses: Vec<(String, u16)>,
    pub topics: Vec<TopicLine>,
    /// `bridge_protocol_version`: 3.1.1 (default) or 5.0.
    pub version: Version,
    /// `cleansession`, default false (Mosquitto's).
    pub clean_session: bool,
    /// `remote_clientid`; default: the connection's name (the same on
    /// every node, so that a new leader takes the bridge's session over
    /// upstream).
    pub remote_clientid: String,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    pub tls: Option<BridgeTls>,
    /// `try_private`, default true: a 3.1.1 CONNECT says it is a bridge
    /// (protocol level 0x84), so that Mosquitto does not echo messages back.
    pub try_private: bool,
    /// `notifications`, default true.
    pub notifications: bool,
    /// `notification_topic`; default `$SYS/broker/connection/<remote_clientid>/state`.
    pub notification_topic: Option<String>,
    /// `keepalive_interval`, default 60 s.
    pub keepalive_secs: u16,
    /// `restart_timeout BASE [CAP]` in seconds: with one value a constant
    /// wait between attempts (default 5 s); with two, a backoff from BASE
    /// doubling up to CAP.
    pub restart_base_secs: u32,
    pub restart_cap_secs: Option<u32>,
    /// `round_robin`, default false: after a lost connection, start again
    /// from the first address (false) or go on with the next (true).
    pub round_robin: bool,
    /// `bridge_max_queued_messages`.
    pub queued_messages_max: u32,
}

impl BridgeConfig {
    pub fn new(name: &str, queued_messages_max: u32) -> BridgeConfig {
        BridgeConfig {
            name: name.to_string(),
            addresses: Vec::new(),
            topics: Vec::new(),
            version: Version::V311,
            clean_session: false,
            remote_clientid: name.to_string(),
            remote_username: None,
            remote_password: None,
            tls: None,
            try_private: true,
            notifications: true,
            notification_topic: None,
            keepalive_secs: 60,
            restart_base_secs: 5,
            restart_cap_secs: None,
            round_robin: false,
            queued_messages_max,
        }
    }

    /// Where the bridge's state ("1" up, "0" down) is published, retained.
    pub fn notification_topic(&self) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.remote_clientid))
    }

    pub fn out_route(&self) -> OutRoute {
        OutRoute {
            name: Rc::from(self.name.as_str()),
            origin: Rc::from(origin_id(&self.name)),
            lines: self.topics.iter().filter(|l| l.direction.outward()).cloned().collect(),
            queued_messages_max: self.queued_messages_max,
        }
    }

    /// The wait before attempt `n` (0 after the first failure).
    pub fn restart_delay_secs(&self, n: u32) -> u32 {
        match self.restart_cap_secs {
            None => self.restart_base_secs,
            Some(cap) => self.restart_base_secs.saturating_mul(1u32 << n.min(16)).min(cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(p: &str, d: Direction, q: u8, l: Option<&str>, r: Option<&str>) -> TopicLine {
        TopicLine::new(p, d, QoS::from_u8(q).unwrap(), l, r).unwrap()
    }

    #[test]
    fn out_without_prefix_keeps_the_topic_and_caps_the_qos() {
        let lines = [line("sensors/#", Direction::Out, 1, None, None)];
        assert_eq!(map_out(&lines, "sensors/a", QoS::ExactlyOnce, false), Some(("sensors/a".into(), QoS::AtLeastOnce)));
        assert_eq!(map_out(&lines, "sensors/a", QoS::AtMostOnce, false), Some(("sensors/a".into(), QoS::AtMostOnce)));
        assert_eq!(map_out(&lines, "sensors/a", QoS::AtMostOnce, true), Some(("sensors/a".into(), QoS::AtLeastOnce)));
        assert_eq!(map_out(&lines, "other", QoS::AtLeastOnce, false), None);
    }

    #[test]
    fn prefixes_as_mosquitto() {
        // topic # both 2 local/ remote/: local "local/x" <-> remote "remote/x".
        let lines = [line("#", Direction::Both, 2, Some("local/"), Some("remote/"))];
        assert_eq!(lines[0].local_topic, "local/#");
        assert_eq!(lines[0].remote_topic, "remote/#");
        assert_eq!(
            map_out(&lines, "local/x/y", QoS::ExactlyOnce, false),
            Some(("remote/x/y".into(), QoS::ExactlyOnce))
        );
        assert_eq!(map_out(&lines, "x/y", QoS::ExactlyOnce, false), None);
        assert_eq!(map_in(&lines, "remote/x/y"), "local/x/y");
        // An in-only line does not send out.
        let lines = [line("#", Direction::In, 2, Some("l/"), Some("r/"))];
        assert_eq!(map_out(&lines, "l/x", QoS::AtLeastOnce, false), None);
        assert_eq!(map_in(&lines, "r/x"), "l/x");
        assert_eq!(map_in(&lines, "other"), "other");
    }

    #[test]
    fn empty_pattern_maps_one_topic() {
        let l = line("\"\"", Direction::Out, 1, Some("plant/temp"), Some("site7/temp"));
        assert_eq!(map_out(&[l], "plant/temp", QoS::AtLeastOnce, false), Some(("site7/temp".into(), QoS::AtLeastOnce)));
        assert!(TopicLine::new("\"\"", Direction::Out, QoS::AtMostOnce, Some("a"), None).is_err());
    }

    #[test]
    fn invalid_prefixes_are_refused() {
        assert!(TopicLine::new("#", Direction::Out, QoS::AtMostOnce, Some("a/+/"), None).is_err());
        assert!(TopicLine::new("#", Direction::Out, QoS::AtMostOnce, Some("a/#"), None).is_err());
        assert!(TopicLine::new("a/#/b", Direction::Out, QoS::AtMostOnce, None, None).is_err());
    }

    #[test]
    fn highest_qos_of_matching_lines_first_remap() {
        let lines =
            [line("a/#", Direction::Out, 0, None, None), line("a/b", Direction::Out, 2, Some("\"\""), Some("up/"))];
        // "" given as a prefix is no prefix: the second line has only a remote prefix.
        assert_eq!(map_out(&lines, "a/b", QoS::ExactlyOnce, false), Some(("up/a/b".into(), QoS::ExactlyOnce)));
        assert_eq!(map_out(&lines, "a/c", QoS::ExactlyOnce, false), Some(("a/c".into(), QoS::AtMostOnce)));
    }

    #[test]
    fn restart_backoff() {
        let mut b = BridgeConfig::new("b", 10);
        assert_eq!(b.restart_delay_secs(3), 5);
        b.restart_base_secs = 1;
        b.restart_cap_secs = Some(10);
        assert_eq!((0..6).map(|n| b.restart_delay_secs(n)).collect::<Vec<_>>(), [1, 2, 4, 8, 10, 10]);
    }
}
