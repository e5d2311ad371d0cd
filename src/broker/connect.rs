//! CONNECT: validation, authentication, client ids, session takeover and
//! the CONNACK that follows once the session is in the durable state.

use std::rc::Rc;

use log::{info, warn};

use super::command::{Command, WillMsg};
use super::state::EXPIRY_NEVER;
use super::{dynsec, Action, Broker, ConnId, Message, MessageProps, PendingConnect, Phase};
use crate::auth::acl::Access;
use crate::mqtt::{reason, topic, ConnAck, Connect, Disconnect, Packet, Properties, PropertyValues, Version};

/// Mosquitto's limit for 3.1 client ids (MQTT 3.1 §3.1).
const V31_CLIENT_ID_CHARS_MAX: usize = 23;

impl Broker {
    /// A connection of a listener whose clients log in with their
    /// certificate's name (`use_identity_as_username`,
    /// `use_subject_as_username`): the name, or why the certificate gives
    /// none. Its CONNECT's username and password are then ignored.
    pub fn set_certificate_name(&mut self, conn: ConnId, name: Result<String, String>) {
        self.cert_names.insert(conn, name.map(|n| Rc::from(n.as_str())));
    }

    pub(super) fn on_connect(&mut self, conn: ConnId, mut cp: Connect, now: u64) {
        let settings = self.settings.clone();
        let lim = &settings.limits;
        {
            let Some(c) = self.conns.get_mut(&conn) else { return };
            c.version = cp.version;
        }
        let v5 = cp.version.is_v5();
        if !self.serving {
            if let (true, Some(leader)) = (v5, self.redirect.clone()) {
                // Use another server, naming the leader [MQTT-4.11].
                info!("Client from {} redirected to the leader at {}.", self.conns[&conn].peer, leader);
                let properties = PropertyValues { server_reference: Some(leader), ..Default::default() }.into();
                self.push_send(
                    conn,
                    Packet::ConnAck(ConnAck { session_present: false, code: reason::USE_ANOTHER_SERVER, properties }),
                );
                self.close(conn, None, now);
                return;
            }
            // Started on a full disk, the write that makes this node serve
            // (its election) waits for room: its clients get the reason a
            // serving node gives (below).
            if !self.store_full {
                return self.refuse(
                    conn,
                    reason::SERVER_UNAVAILABLE,
                    reason::V3_SERVER_UNAVAILABLE,
                    "this node is not the cluster leader",
                    now,
                );
            }
        }
        if self.store_full {
            // A connection is a durable change (its session).
            return self.refuse(
                conn,
                reason::QUOTA_EXCEEDED,
                reason::V3_SERVER_UNAVAILABLE,
                "the data store is full",
                now,
            );
        }
        let mut ack_props = Properties::default();

        // Client identifier [MQTT-3.1.3-6..9], in Mosquitto 2.0's order:
        // an empty one is refused or made up, then use_username_as_clientid
        // replaces it.
        let mut assigned = false;
        let client: Rc<str> = if cp.client_id.is_empty() {
            let why = if cp.version == Version::V31 {
                Some("empty client id (MQTT 3.1)")
            } else if cp.version == Version::V311 && !cp.clean_start {
                Some("empty client id without clean session")
            } else if !settings.allow_zero_length_clientid {
                Some("empty client id (allow_zero_length_clientid false)")
            } else {
                None
            };
            if let Some(why) = why {
                // (Mosquitto 2.0.11 answers a v5 client 0x80, unspecified.)
                return self.refuse(
                    conn,
                    reason::CLIENT_IDENTIFIER_NOT_VALID,
                    reason::V3_IDENTIFIER_REJECTED,
                    why,
                    now,
                );
            }
            assigned = true;
            match self.assign_client_id() {
                Ok(id) => id,
                Err(e) => {
                    // As Mosquitto: no random bytes, no made-up client id.
                    warn!("Cannot draw random bytes for a client id: {e}.");
                    let why = "no random bytes for a client id";
                    return self.refuse(conn, reason::SERVER_UNAVAILABLE, reason::V3_SERVER_UNAVAILABLE, why, now);
                }
            }
        } else {
            if cp.version == Version::V31 && cp.client_id.chars().count() > V31_CLIENT_ID_CHARS_MAX {
                return self.refuse(
                    conn,
                    reason::CLIENT_IDENTIFIER_NOT_VALID,
                    reason::V3_IDENTIFIER_REJECTED,
                    "3.1 client id longer than 23 characters",
                    now,
                );
            }
            Rc::from(cp.client_id.as_str())
        };
        // Mosquitto 2.0's order: the certificate's name replaces the
        // CONNECT's username and password and stands for the login.
        let cert_login = match self.cert_names.get(&conn).cloned() {
            None => false,
            Some(Ok(name)) => {
                cp.username = Some(name.to_string());
                cp.password = None;
                true
            }
            Some(Err(why)) => {
                return self.refuse(
                    conn,
                    reason::BAD_USER_NAME_OR_PASSWORD,
                    reason::V3_BAD_USER_NAME_OR_PASSWORD,
                    &why,
                    now,
                );
            }
        };
        let username_as_id = self
            .conn_options
            .get(&conn)
            .and_then(|o| o.use_username_as_clientid)
            .unwrap_or(settings.use_username_as_clientid);
        let client = match (username_as_id, cp.username.as_deref()) {
            (false, _) => client,
            (true, Some(user)) => Rc::from(user),
            (true, None) => {
                return self.refuse(
                    conn,
                    reason::NOT_AUTHORIZED,
                    reason::V3_NOT_AUTHORIZED,
                    "no username (use_username_as_clientid true)",
                    now,
                );
            }
        };
        if assigned && v5 {
            ack_props.assigned_client_identifier = Some(client.to_string());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.client = Some(client.clone());
        }

        if cp.properties.authentication_method.is_some() {
            // No enhanced authentication method is offered [MQTT-4.12.0-1].
            return self.refuse(
                conn,
                reason::BAD_AUTHENTICATION_METHOD,
                reason::V3_NOT_AUTHORIZED,
                "unsupported authentication method",
                now,
            );
        }
        // The listener's rules (per_listener_settings true), else the
        // broker-wide ones.
        let scope = self.conn_scope(conn);
        let (allow_anonymous, passwords) = settings.login_rules(scope);
        if cert_login {
            // The TLS handshake checked the certificate against cafile.
        } else if settings.dynsec {
            // Mosquitto 2.0's order: the plugin first; when it defers (no
            // such client, or no credentials), the password_file; when that
            // is absent too, only an anonymous client with allow_anonymous.
            let ds = self.dynsec_data().cloned();
            match dynsec::login(ds.as_deref(), cp.username.as_deref(), cp.password.as_deref(), &client) {
                Ok(true) => {}
                Err(why) => {
                    return self.refuse(conn, reason::NOT_AUTHORIZED, reason::V3_NOT_AUTHORIZED, why, now);
                }
                Ok(false) => {
                    let ok = match (passwords, cp.username.as_deref()) {
                        (_, None) => allow_anonymous,
                        (Some(pw), Some(user)) => pw.check(user, cp.password.as_deref().unwrap_or(&[])),
                        (None, Some(_)) => false,
                    };
                    if !ok {
                        let why = if cp.username.is_none() {
                            "not authorised (anonymous)"
                        } else {
                            "bad user name or password"
                        };
                        return self.refuse(conn, reason::NOT_AUTHORIZED, reason::V3_NOT_AUTHORIZED, why, now);
                    }
                }
            }
        } else {
            match (passwords, cp.username.as_deref()) {
                (_, None) if !allow_anonymous => {
                    return self.refuse(
                        conn,
                        reason::NOT_AUTHORIZED,
                        reason::V3_NOT_AUTHORIZED,
                        "not authorised (anonymous)",
                        now,
                    );
                }
                // Mosquitto answers a wrong password with "not authorised"
                // (5 / 0x87); clients and scripts expect it.
                (Some(pw), Some(user)) if !pw.check(user, cp.password.as_deref().unwrap_or(&[])) => {
                    return self.refuse(
                        conn,
                        reason::NOT_AUTHORIZED,
                        reason::V3_NOT_AUTHORIZED,
                        "bad user name or password",
                        now,
                    );
                }
                (None, Some(_)) if !allow_anonymous => {
                    return self.refuse(
                        conn,
                        reason::NOT_AUTHORIZED,
                        reason::V3_NOT_AUTHORIZED,
                        "not authorised (no password_file)",
                        now,
                    );
                }
                _ => {}
            }
        }

        // Keep alive [MQTT-3.1.2-22/24]; v5 Server Keep Alive.
        let mut keep_alive = cp.keep_alive;
        let max_ka = lim.keepalive_secs_max;
        if max_ka < u16::MAX && (keep_alive > max_ka || keep_alive == 0) && v5 {
            // v5: Server Keep Alive overrides the client's [MQTT-3.2.2-21].
            // 3.1.1 has no way to tell the client; like Mosquitto 2.0, its
            // keep alive is accepted as sent.
            keep_alive = max_ka;
            ack_props.server_keep_alive = Some(max_ka);
        }

        // Will, under the mount point.
        if let (Some(m), Some(w)) = (self.mount_of(conn), cp.will.as_mut()) {
            w.topic = format!("{m}{}", w.topic);
        }
        let mut will = None;
        if let Some(w) = &cp.will {
            if !topic::valid_topic_name(&w.topic) {
                return self.refuse(
                    conn,
                    reason::TOPIC_NAME_INVALID,
                    reason::V3_NOT_AUTHORIZED,
                    "invalid will topic",
                    now,
                );
            }
            if w.qos as u8 > self.max_qos_for(conn) {
                return self.refuse(
                    conn,
                    reason::QOS_NOT_SUPPORTED,
                    reason::V3_NOT_AUTHORIZED,
                    "will QoS above max_qos",
                    now,
                );
            }
            if w.retain && !settings.retain_available {
                return self.refuse(
                    conn,
                    reason::RETAIN_NOT_SUPPORTED,
                    reason::V3_NOT_AUTHORIZED,
                    "retained will but retain_available is false",
                    now,
                );
            }
            if w.payload.len() > lim.message_bytes_max as usize {
                return self.refuse(
                    conn,
                    reason::PACKET_TOO_LARGE,
                    reason::V3_NOT_AUTHORIZED,
                    "will payload over message_size_limit",
                    now,
                );
            }
            let ds = self.dynsec_data().cloned();
            if !settings.allowed(scope, ds.as_deref(), &client, cp.username.as_deref(), &w.topic, Access::Write) {
                return self.refuse(
                    conn,
                    reason::NOT_AUTHORIZED,
                    reason::V3_NOT_AUTHORIZED,
                    "will topic not authorised",
                    now,
                );
            }
            let msg = Message {
                topic: Rc::from(w.topic.as_str()),
                payload: Rc::from(&w.payload[..]),
                qos: w.qos,
                retain: w.retain,
                props: MessageProps::from_properties(&w.properties),
                // Expiry counts from when the will is published; kept relative
                // here is not possible in a shared Message, so it counts from
                // now, which is earlier than the spec's start and never later.
                expires_at_ms: w.properties.message_expiry_interval.map(|s| now + s as u64 * 1000),
                origin: Some(client.clone()),
            };
            will = Some(WillMsg { msg, delay_secs: w.properties.will_delay_interval.unwrap_or(0) });
        }

        // Session expiry: 3.1.1 clean session 0 means "until the client
        // cleans it", capped by persistent_client_expiration.
        let requested = if v5 {
            cp.properties.session_expiry_interval.unwrap_or(0)
        } else if cp.clean_start {
            0
        } else {
            EXPIRY_NEVER
        };
        let expiry = self.cap_expiry(requested);
        if v5 && expiry != requested {
            ack_props.session_expiry_interval = Some(expiry);
        }

        let (alias_max, max_qos) = (self.topic_alias_max_for(conn), self.max_qos_for(conn));
        let c = self.conns.get_mut(&conn).expect("connection checked above");
        c.keep_alive_secs = keep_alive;
        c.session_expiry_secs = expiry;
        c.phase = Phase::Connecting;
        if v5 {
            c.packet_bytes_out_max = cp.properties.maximum_packet_size.unwrap_or(u32::MAX);
            c.alias_out_max = cp.properties.topic_alias_maximum.unwrap_or(0);
        }
        let window = if v5 { cp.properties.receive_maximum.unwrap_or(u16::MAX) } else { u16::MAX }
            .min(lim.inflight_messages_max);
        if settings.connection_messages {
            info!(
                "New client connected from {} as {} (p{}, c{}, k{}{}).",
                c.peer,
                client,
                cp.version.level(),
                cp.clean_start as u8,
                keep_alive,
                cp.username.as_deref().map(|u| format!(", u'{}'", u)).unwrap_or_default()
            );
        }
        if v5 {
            if lim.inflight_messages_max < u16::MAX {
                ack_props.receive_maximum = Some(lim.inflight_messages_max);
            }
            ack_props.topic_alias_maximum = (alias_max > 0).then_some(alias_max);
            ack_props.maximum_packet_size = Some(lim.packet_bytes_max);
            if max_qos < 2 {
                ack_props.maximum_qos = Some(max_qos);
            }
            if !settings.retain_available {
                ack_props.retain_available = Some(0);
            }
        }
        let username: Option<Rc<str>> = cp.username.as_deref().map(Rc::from);
        c.pending = Some(Box::new(PendingConnect {
            connack: ConnAck { session_present: false, code: 0, properties: ack_props },
            username: username.clone(),
        }));

        // Session takeover [MQTT-3.1.4-3].
        if let Some(old) = self.by_client.insert(client.clone(), conn) {
            if old != conn {
                if settings.connection_messages {
                    info!("Client {} already connected, closing old connection.", client);
                }
                if let Some(oc) = self.conns.get_mut(&old) {
                    // The Connect command ends the old connection in the
                    // durable session (its will included).
                    oc.session_closed = true;
                    if oc.phase != Phase::Closing {
                        let v = oc.version;
                        oc.phase = Phase::Closing;
                        if v == Version::V5 {
                            self.push_send(
                                old,
                                Packet::Disconnect(Disconnect {
                                    code: reason::SESSION_TAKEN_OVER,
                                    properties: Default::default(),
                                }),
                            );
                        }
                        self.actions.push(Action::Close(old));
                    }
                }
            }
        }
        self.propose(
            now,
            Command::Connect { client, username, clean_start: cp.clean_start, expiry_secs: expiry, window, will },
        );
    }

    /// A client id for a client that sent an empty one: `auto_id_prefix`
    /// and 16 random bytes written as Mosquitto writes them (36
    /// characters: hex digits, low nibble first, in 8-4-4-4-12 groups).
    fn assign_client_id(&mut self) -> Result<Rc<str>, String> {
        loop {
            self.next_assigned_id += 1;
            let bytes = match self.client_id_source.as_mut() {
                Some(random) => random()?,
                None => counter_id_bytes(self.next_assigned_id),
            };
            let id: Rc<str> = Rc::from(made_up_client_id(&self.settings.auto_id_prefix, &bytes));
            if !self.state.sessions().contains_key(&id) && !self.by_client.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// Where the random part of made-up client ids comes from (the
    /// runtime's random source); without one, a counter, so that tests and
    /// the simulation repeat.
    pub fn set_client_id_source(&mut self, source: ClientIdSource) {
        self.client_id_source = Some(source);
    }
}

/// Random bytes for a made-up client id (see `Broker::set_client_id_source`).
/// An error says why there are none.
pub type ClientIdSource = Box<dyn FnMut() -> Result<[u8; 16], String>>;

/// Without a random source: the counter's bytes, repeated.
fn counter_id_bytes(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    b
}

/// `prefix` and `bytes` as Mosquitto 2.0 writes a made-up client id: each
/// byte's low nibble, then its high nibble, as upper-case hex digits, with
/// a dash after the 8th, 12th, 16th and 20th digit.
pub fn made_up_client_id(prefix: &str, bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut id = String::with_capacity(prefix.len() + 36);
    id.push_str(prefix);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(HEX[(b & 0x0F) as usize] as char);
        id.push(HEX[(b >> 4) as usize] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::made_up_client_id;

    #[test]
    fn made_up_client_ids_are_written_as_mosquitto_writes_them() {
        let bytes = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE];
        // Each byte low nibble first; dashes after the 8th, 12th, 16th and
        // 20th digit.
        assert_eq!(made_up_client_id("auto-", &bytes), "auto-10325476-98BA-DCFE-0123-456789ABCDEF");
        assert_eq!(made_up_client_id("", &[0; 16]).len(), 36);
    }
}
