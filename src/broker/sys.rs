//! `$SYS/broker/...` topics with Mosquitto's names. They describe this
//! node, not durable state, so they live outside `State`: published as
//! retained QoS 0 messages to current subscribers every `sys_interval`
//! and sent to new subscribers at SUBSCRIBE.

use std::rc::Rc;

use super::state::{Delivery, ReadCheck};
use super::{Broker, Message};
use crate::metrics::Exposition;
use crate::mqtt::{topic, QoS};

impl Broker {
    fn clients_connected(&self) -> u64 {
        self.conns.values().filter(|c| c.phase == super::Phase::Connected).count() as u64
    }

    /// The broker's part of `GET /metrics`: the counters `$SYS` reports,
    /// by QoS where they are kept so, and the sessions' queues.
    pub fn write_metrics(&self, e: &mut Exposition) {
        let st = &self.stats;
        let (mut queued, mut queued_bytes, mut inflight) = (0u64, 0u64, 0u64);
        for s in self.state.sessions().values() {
            queued += s.queue.len() as u64;
            queued_bytes += s.queue.bytes;
            inflight += s.inflight.len() as u64;
        }
        let total = self.state.sessions().len() as u64;
        let by_qos = |v: &[u64; 3]| [("0", v[0]), ("1", v[1]), ("2", v[2])];
        e.gauge(
            "midge_clients_connected",
            "Clients connected now ($SYS/broker/clients/connected).",
            self.clients_connected(),
        );
        e.gauge(
            "midge_clients_maximum",
            "Most clients connected at once, as of the last $SYS update ($SYS/broker/clients/maximum).",
            st.clients_maximum,
        );
        e.gauge("midge_sessions", "Sessions, connected or not ($SYS/broker/clients/total).", total);
        e.counter(
            "midge_packets_received_total",
            "MQTT packets received from clients ($SYS/broker/messages/received).",
            st.messages_received,
        );
        e.counter(
            "midge_packets_sent_total",
            "MQTT packets sent to clients ($SYS/broker/messages/sent).",
            st.messages_sent,
        );
        e.labelled(
            "counter",
            "midge_publish_received_total",
            "PUBLISH packets received from clients, by QoS ($SYS/broker/publish/messages/received).",
            "qos",
            &by_qos(&st.publish_received),
        );
        e.labelled(
            "counter",
            "midge_publish_sent_total",
            "PUBLISH packets sent to clients, by QoS ($SYS/broker/publish/messages/sent).",
            "qos",
            &by_qos(&st.publish_sent),
        );
        e.labelled(
            "counter",
            "midge_publish_dropped_total",
            "Messages not delivered: QoS 0 over client_out_buffer_bytes, or a full session queue (max_queued_messages / max_queued_bytes) ($SYS/broker/publish/messages/dropped is their sum).",
            "reason",
            &[("out_buffer_full", st.dropped_qos0), ("queue_full", st.dropped_queue_full)],
        );
        e.counter(
            "midge_bytes_received_total",
            "Bytes read from client sockets ($SYS/broker/bytes/received).",
            st.bytes_received,
        );
        e.counter("midge_bytes_sent_total", "Bytes written to client sockets ($SYS/broker/bytes/sent).", st.bytes_sent);
        e.gauge("midge_queued_messages", "Messages waiting in session queues for a delivery slot.", queued);
        e.gauge("midge_queued_bytes", "What the queued messages cost (max_queued_bytes counts it).", queued_bytes);
        e.gauge("midge_inflight_messages", "QoS 1 and 2 deliveries sent and not yet acknowledged.", inflight);
        e.gauge(
            "midge_retained_messages",
            "Retained messages ($SYS/broker/retained messages/count).",
            self.state.retained().len() as u64,
        );
        e.gauge(
            "midge_subscriptions",
            "Subscriptions ($SYS/broker/subscriptions/count).",
            self.state.tree().len() as u64,
        );
    }

    pub(super) fn sys_tick(&mut self, now: u64) {
        let interval = self.settings.sys_interval_secs as u64 * 1000;
        if interval == 0 || (self.last_sys_ms != 0 && now.saturating_sub(self.last_sys_ms) < interval) {
            return;
        }
        self.last_sys_ms = now.max(1);
        let connected = self.clients_connected();
        self.stats.clients_maximum = self.stats.clients_maximum.max(connected);
        let total = self.state.sessions().len() as u64;
        let st = self.stats.clone();
        let values: [(&str, String); 19] = [
            ("version", self.settings.version_string.to_string()),
            ("uptime", format!("{} seconds", now.saturating_sub(self.started_ms) / 1000)),
            ("clients/connected", connected.to_string()),
            ("clients/active", connected.to_string()),
            ("clients/total", total.to_string()),
            ("clients/disconnected", total.saturating_sub(connected).to_string()),
            ("clients/inactive", total.saturating_sub(connected).to_string()),
            ("clients/maximum", st.clients_maximum.to_string()),
            ("messages/received", st.messages_received.to_string()),
            ("messages/sent", st.messages_sent.to_string()),
            ("publish/messages/received", st.publish_received.iter().sum::<u64>().to_string()),
            ("publish/messages/sent", st.publish_sent.iter().sum::<u64>().to_string()),
            ("publish/messages/dropped", (st.dropped_qos0 + st.dropped_queue_full).to_string()),
            ("bytes/received", st.bytes_received.to_string()),
            ("bytes/sent", st.bytes_sent.to_string()),
            ("load/bytes/received", st.bytes_received.to_string()),
            ("retained messages/count", self.state.retained().len().to_string()),
            ("subscriptions/count", self.state.tree().len().to_string()),
            // midge: 1 while the data store's disk is full (see
            // `Broker::set_store_full`).
            ("store/full", u8::from(self.store_full).to_string()),
        ];
        let mut cluster: Vec<(String, String)> =
            self.cluster_sys.iter().map(|(k, v)| (format!("cluster/{k}"), v.clone())).collect();
        // midge: what the process wrote to disk, as the medium counts wear.
        if let Some(written) = self.disk_written_source.and_then(|f| f()) {
            cluster.push(("store/disk_written_bytes".to_string(), written.to_string()));
        }
        let bridges: Vec<(String, String)> = self
            .settings
            .apply
            .bridges
            .iter()
            .flat_map(|r| {
                let q = self.state.bridge_queue(&r.name);
                [
                    (format!("bridge/{}/queued", r.name), q.map_or(0, |q| q.items.len()).to_string()),
                    (format!("bridge/{}/dropped", r.name), q.map_or(0, |q| q.dropped).to_string()),
                ]
            })
            .collect();
        let all = values.into_iter().map(|(k, v)| (k.to_string(), v)).chain(cluster).chain(bridges);
        for (name, value) in all {
            let topic: Rc<str> = Rc::from(format!("$SYS/broker/{name}"));
            if self.sys_retained.get(&topic).is_some_and(|m| *m.payload == *value.as_bytes()) {
                continue;
            }
            let msg = Message {
                topic: topic.clone(),
                payload: Rc::from(value.into_bytes()),
                qos: QoS::AtMostOnce,
                retain: true,
                props: None,
                expires_at_ms: None,
                origin: None,
            };
            let acl = self.read_acl();
            for (client, mut d) in self.state.route(&msg, self.settings.apply.upgrade_outgoing_qos, acl.check()) {
                d.qos = QoS::AtMostOnce;
                self.deliver(&client, None, &d, false, now);
            }
            self.sys_retained.insert(topic, msg);
        }
    }

    /// `log_dest topic`: log lines to the online subscribers of
    /// `$SYS/broker/log/E`, `W` and `N` (errors, warnings, and the
    /// information lines, which Mosquitto logs as notices: connections and
    /// the like), QoS 0, not retained, not queued for offline sessions.
    pub fn publish_log(&mut self, lines: Vec<(log::Level, String)>, now: u64) {
        let acl = self.read_acl();
        for (level, text) in lines {
            let topic = match level {
                log::Level::Error => "$SYS/broker/log/E",
                log::Level::Warn => "$SYS/broker/log/W",
                _ => "$SYS/broker/log/N",
            };
            let msg = Message {
                topic: Rc::from(topic),
                payload: Rc::from(text.into_bytes()),
                qos: QoS::AtMostOnce,
                retain: false,
                props: None,
                expires_at_ms: None,
                origin: None,
            };
            for (client, mut d) in self.state.route(&msg, false, acl.check()) {
                if self.conn_of(&client).is_none() {
                    continue;
                }
                d.qos = QoS::AtMostOnce;
                self.deliver(&client, None, &d, false, now);
            }
        }
    }

    /// Retained $SYS values matching a new subscription.
    pub(super) fn send_sys_retained(&mut self, client: &Rc<str>, filter: &str, now: u64) {
        if !filter.starts_with('$') || filter.starts_with("$share/") {
            return;
        }
        let user = self.state.sessions().get(client).and_then(|s| s.username.clone());
        let acl = self.read_acl();
        let msgs: Vec<Message> = self
            .sys_retained
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .filter(|m| acl.allows(client, user.as_deref(), &m.topic))
            .cloned()
            .collect();
        for m in msgs {
            let d = Delivery { msg: m, qos: QoS::AtMostOnce, retain: true, sub_ids: Vec::new() };
            self.deliver(client, None, &d, false, now);
        }
    }
}
