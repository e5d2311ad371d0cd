//! `$SYS/broker/...` topics with Mosquitto's names. They describe this
//! node, not durable state, so they live outside `State`: published as
//! retained QoS 0 messages to current subscribers every `sys_interval`
//! and sent to new subscribers at SUBSCRIBE.

use std::rc::Rc;

use super::state::Delivery;
use super::{Broker, Message};
use crate::auth::acl::Access;
use crate::mqtt::{topic, QoS};

impl Broker {
    pub(super) fn sys_tick(&mut self, now: u64) {
        let interval = self.settings.sys_interval_secs as u64 * 1000;
        if interval == 0 || (self.last_sys_ms != 0 && now.saturating_sub(self.last_sys_ms) < interval) {
            return;
        }
        self.last_sys_ms = now.max(1);
        let connected = self.conns.values().filter(|c| c.phase == super::Phase::Connected).count() as u64;
        self.stats.clients_maximum = self.stats.clients_maximum.max(connected);
        let total = self.state.sessions().len() as u64;
        let st = self.stats.clone();
        let values: [(&str, String); 18] = [
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
            ("publish/messages/received", st.publish_received.to_string()),
            ("publish/messages/sent", st.publish_sent.to_string()),
            ("publish/messages/dropped", (st.dropped_qos0 + st.dropped_queue_full).to_string()),
            ("bytes/received", st.bytes_received.to_string()),
            ("bytes/sent", st.bytes_sent.to_string()),
            ("load/bytes/received", st.bytes_received.to_string()),
            ("retained messages/count", self.state.retained().len().to_string()),
            ("subscriptions/count", self.state.tree().len().to_string()),
        ];
        let cluster: Vec<(String, String)> =
            self.cluster_sys.iter().map(|(k, v)| (format!("cluster/{k}"), v.clone())).collect();
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
            let settings = self.settings.clone();
            let ds = self.dynsec_data().cloned();
            let acl = |c: &str, u: Option<&str>, t: &str| settings.allowed(ds.as_deref(), c, u, t, Access::Read);
            for (client, mut d) in self.state.route(&msg, settings.apply.upgrade_outgoing_qos, &acl) {
                d.qos = QoS::AtMostOnce;
                self.deliver(&client, None, &d, false, now);
            }
            self.sys_retained.insert(topic, msg);
        }
    }

    /// Retained $SYS values matching a new subscription.
    pub(super) fn send_sys_retained(&mut self, client: &Rc<str>, filter: &str, now: u64) {
        if !filter.starts_with('$') || filter.starts_with("$share/") {
            return;
        }
        let user = self.state.sessions().get(client).and_then(|s| s.username.clone());
        let settings = self.settings.clone();
        let ds = self.dynsec_data().cloned();
        let msgs: Vec<Message> = self
            .sys_retained
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .filter(|m| settings.allowed(ds.as_deref(), client, user.as_deref(), &m.topic, Access::Read))
            .cloned()
            .collect();
        for m in msgs {
            let d = Delivery { msg: m, qos: QoS::AtMostOnce, retain: true, sub_ids: Vec::new() };
            self.deliver(client, None, &d, false, now);
        }
    }
}
