//! Admin connections: the `admin_listener`, open on every node whether it
//! leads or not, for `midge ctl`. Such a connection must authenticate
//! against the password file, has no durable session (nothing is
//! proposed), and may only publish requests to `ADMIN_TOPIC` and subscribe
//! to `ADMIN_RESPONSE_TOPIC`. The runtime executes requests (they touch
//! raft) and answers through `admin_reply`.

use std::net::SocketAddr;
use std::rc::Rc;

use log::{info, warn};

use super::{Action, AuthScope, Broker, ConnId, Kind, Phase};
use crate::auth::acl::Access;
use crate::mqtt::{reason, ConnAck, Connect, Packet, Properties, Publish, QoS, SubAck};

pub const ADMIN_TOPIC: &str = "$CONTROL/midge/cluster/v1";
pub const ADMIN_RESPONSE_TOPIC: &str = "$CONTROL/midge/cluster/v1/response";
/// Largest request a management client may send.
pub const ADMIN_REQUEST_BYTES_MAX: usize = 64 * 1024;

impl Broker {
    /// A new connection on the admin listener.
    pub fn open_admin(&mut self, conn: ConnId, peer: SocketAddr, now: u64) {
        self.open(conn, peer, now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = Kind::Admin { subscribed: false };
        }
    }

    pub(super) fn on_admin_connect(&mut self, conn: ConnId, cp: Connect, now: u64) {
        let settings = self.settings.clone();
        let password_file = || match (&settings.passwords, cp.username.as_deref()) {
            (Some(pw), Some(user)) => pw.check(user, cp.password.as_deref().unwrap_or(&[])),
            _ => false,
        };
        // With dynamic security, a user of either source must also be
        // allowed to publish to the admin topic by the ACLs (checked once,
        // here: `midge ctl` connects for each request).
        let ok = if settings.dynsec {
            let ds = self.dynsec_data().cloned();
            let user = cp.username.as_deref();
            let authed = match super::dynsec::login(ds.as_deref(), user, cp.password.as_deref(), &cp.client_id) {
                Ok(true) => true,
                Ok(false) => user.is_some() && password_file(),
                Err(_) => false,
            };
            authed
                && settings.allowed(AuthScope::Broker, ds.as_deref(), &cp.client_id, user, ADMIN_TOPIC, Access::Write)
        } else {
            // With an acl_file, the user also needs its grant.
            password_file()
                && settings.allowed(
                    AuthScope::Broker,
                    None,
                    &cp.client_id,
                    cp.username.as_deref(),
                    ADMIN_TOPIC,
                    Access::Write,
                )
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.version = cp.version;
            c.client = Some(Rc::from(format!("admin:{}", cp.client_id)));
        }
        if !ok {
            return self.refuse(
                conn,
                reason::NOT_AUTHORIZED,
                reason::V3_NOT_AUTHORIZED,
                if settings.has_acl(AuthScope::Broker) {
                    "admin listener needs a user allowed to publish to $CONTROL/midge/cluster/v1"
                } else {
                    "admin listener needs a user from password_file"
                },
                now,
            );
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.phase = Phase::Connected;
        c.keep_alive_secs = cp.keep_alive;
        info!(
            "Admin client {} connected from {} as user {}.",
            cp.client_id,
            c.peer,
            cp.username.as_deref().unwrap_or("")
        );
        self.push_send(
            conn,
            Packet::ConnAck(ConnAck { session_present: false, code: 0, properties: Properties::default() }),
        );
    }

    pub(super) fn admin_packet(&mut self, conn: ConnId, p: Packet, now: u64) {
        match p {
            Packet::Subscribe(s) => {
                let mut codes = Vec::new();
                for (f, _) in &s.filters {
                    if f == ADMIN_RESPONSE_TOPIC {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.kind = Kind::Admin { subscribed: true };
                        }
                        codes.push(0);
                    } else {
                        codes.push(reason::NOT_AUTHORIZED.min(if self.is_v5(conn) { 0x87 } else { 0x80 }));
                    }
                }
                self.push_send(
                    conn,
                    Packet::SubAck(SubAck { packet_id: s.packet_id, codes, properties: Properties::default() }),
                );
            }
            Packet::Publish(p) if &*p.topic == ADMIN_TOPIC && p.payload.len() <= ADMIN_REQUEST_BYTES_MAX => {
                if let Some(pid) = p.packet_id {
                    let ack = crate::mqtt::PubResp { packet_id: pid, code: 0, properties: Properties::default() };
                    self.push_send(
                        conn,
                        if p.qos == QoS::ExactlyOnce { Packet::PubRec(ack) } else { Packet::PubAck(ack) },
                    );
                }
                self.control_requests.push((conn, p.payload.to_vec()));
            }
            Packet::PubRel(r) => {
                self.push_send(conn, Packet::PubComp(r));
            }
            Packet::PingReq => self.push_send(conn, Packet::PingResp),
            Packet::Disconnect(_) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::Closing;
                }
                self.actions.push(Action::Close(conn));
            }
            other => {
                warn!(
                    "Admin client {} sent {} (only {} requests are accepted); disconnecting.",
                    self.who(conn),
                    other.name(),
                    ADMIN_TOPIC
                );
                self.close(conn, Some(reason::NOT_AUTHORIZED), now);
            }
        }
    }

    fn is_v5(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.version.is_v5())
    }

    /// Management requests received since the last call: (connection, JSON).
    pub fn take_control_requests(&mut self) -> Vec<(ConnId, Vec<u8>)> {
        std::mem::take(&mut self.control_requests)
    }

    /// Answer a management request on the response topic.
    pub fn admin_reply(&mut self, conn: ConnId, payload: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.kind != (Kind::Admin { subscribed: true }) || c.phase != Phase::Connected {
            return;
        }
        self.push_send(
            conn,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: Rc::from(ADMIN_RESPONSE_TOPIC),
                packet_id: None,
                payload: Rc::from(payload),
                properties: Properties::default(),
            }),
        );
    }
}
