//! Connection lifecycle: a connection opens, is refused or closed, ends
//! (ungracefully: the will goes out), or sends bytes the codec rejects;
//! and the CONNACK once its Connect command applied. Only volatile
//! per-connection state changes here; the durable session hears of an end
//! through a proposed `Command::Disconnect`.

use std::net::SocketAddr;

use log::{info, warn};

use super::{Action, Broker, Command, Conn, ConnId, Kind, Lazy, PeerAddr, Phase};
use crate::mqtt::codec::{encoded_len, DecodeError};
use crate::mqtt::{reason, Disconnect, Packet, Version};

impl Broker {
    /// Protocol version of a connection once CONNECT was decoded (the
    /// codec needs it for everything after CONNECT).
    pub fn version(&self, conn: ConnId) -> Option<Version> {
        self.conns.get(&conn).and_then(|c| (c.phase != Phase::New).then_some(c.version))
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The runtime wrote `n` bytes of the connection's output to its
    /// socket. The broker counts every byte of every packet it hands the
    /// runtime (`push_send`) and every byte the runtime reports written
    /// here, so its count of what a connection holds unwritten is exact,
    /// whatever was sent in between.
    /// A retained replay waiting for room goes on (`replay.rs`).
    pub fn written(&mut self, conn: ConnId, n: usize, now: u64) {
        self.stats.bytes_sent += n as u64;
        if let Some(c) = self.conns.get_mut(&conn) {
            let n = u32::try_from(n).unwrap_or(u32::MAX).min(c.out_bytes);
            c.out_bytes -= n;
            self.out_bytes_total = self.out_bytes_total.saturating_sub(u64::from(n));
        }
        if self.replays.contains_key(&conn) {
            self.pump_replays(conn, now);
        }
    }

    /// Bytes handed to the runtime for `conn` and not yet written.
    pub fn out_buffered(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.out_bytes as usize)
    }

    /// Bytes handed to the runtime for all connections and not yet
    /// written: part of what `memory_limit` bounds.
    pub fn out_buffered_total(&self) -> u64 {
        self.out_bytes_total
    }

    /// Hand `p` to the runtime for `conn`, counting its bytes as held
    /// until the runtime reports them written (`written`).
    pub(super) fn push_send(&mut self, conn: ConnId, p: Packet) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        // The version the runtime encodes with: by the time it does, a
        // connection refused in `Phase::New` is closing, and `version`
        // gives its CONNECT's version.
        let len = encoded_len(&p, c.version);
        Self::count_out(c, &mut self.out_bytes_total, len);
        self.actions.push(Action::Send(conn, p));
    }

    /// `push_send` of a packet whose encoded length is known.
    pub(super) fn push_sized(&mut self, conn: ConnId, p: Packet, len: usize) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        Self::count_out(c, &mut self.out_bytes_total, len);
        self.actions.push(Action::Send(conn, p));
    }

    /// `len` bytes more held for `c` (and in all).
    fn count_out(c: &mut Conn, total: &mut u64, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        c.out_bytes = c.out_bytes.saturating_add(len);
        *total += u64::from(len);
    }

    pub fn open(&mut self, conn: ConnId, peer: SocketAddr, now: u64) {
        self.conns.insert(
            conn,
            Box::new(Conn {
                phase: Phase::New,
                peer: PeerAddr::from(peer),
                version: Version::V311,
                client: None,
                keep_alive_secs: 0,
                last_rx_ms: now,
                packet_bytes_out_max: u32::MAX,
                alias_out_max: 0,
                alias_out: Lazy::default(),
                alias_in: Lazy::default(),
                inbound_unacked: 0,
                session_expiry_secs: 0,
                pending: None,
                session_closed: true,
                kind: Kind::Client,
                out_bytes: 0,
            }),
        );
    }

    /// The socket closed or failed: an ungraceful end (will published).
    pub fn closed(&mut self, conn: ConnId, now: u64) {
        if let Some(c) = self.conns.get(&conn) {
            if c.phase == Phase::Connected && self.settings.connection_messages {
                info!("Client {} closed its connection.", c.client.as_deref().unwrap_or("<unknown>"));
            }
        }
        self.end_session_link(conn, true, None, now);
        self.replays.remove(&conn);
        self.cert_names.remove(&conn);
        self.conn_options.remove(&conn);
        if let Some(c) = self.conns.remove(&conn) {
            // Its unwritten output goes with it.
            self.out_bytes_total = self.out_bytes_total.saturating_sub(u64::from(c.out_bytes));
            if let Some(id) = c.client {
                if self.by_client.get(&id) == Some(&conn) {
                    self.by_client.remove(&id);
                }
            }
        }
        self.commit(now);
    }

    /// Record in the durable session that its connection ended.
    pub(super) fn end_session_link(&mut self, conn: ConnId, will: bool, expiry: Option<u32>, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.session_closed {
            return;
        }
        c.session_closed = true;
        let Some(client) = c.client.clone() else { return };
        let expiry_secs = expiry.unwrap_or(c.session_expiry_secs);
        self.propose(now, Command::Disconnect { client, will, expiry_secs });
    }

    /// The codec rejected the bytes of `conn`.
    pub fn decode_error(&mut self, conn: ConnId, err: &DecodeError, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.phase == Phase::Closing {
            return; // already refused or closed; nothing more is sent
        }
        let first_packet = c.phase == Phase::New;
        let who = self.who(conn);
        match err {
            DecodeError::UnsupportedVersion(_) if !first_packet => {
                warn!("Client {} sent a second CONNECT (with an unknown protocol version); disconnecting.", who);
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
            DecodeError::UnsupportedVersion(level) => {
                info!("Client {} refused: unsupported protocol version {}.", who, level);
                // Answered in the 3.1.1 form, as a client of any level can read it.
                self.push_send(
                    conn,
                    Packet::ConnAck(crate::mqtt::ConnAck {
                        session_present: false,
                        code: reason::V3_UNACCEPTABLE_PROTOCOL_VERSION,
                        properties: Default::default(),
                    }),
                );
                self.close(conn, None, now);
            }
            DecodeError::TooLarge { size, max } => {
                warn!("Client {} sent a packet of {} bytes, over the maximum of {}; disconnecting.", who, size, max);
                self.close(conn, Some(reason::PACKET_TOO_LARGE), now);
            }
            DecodeError::Malformed(what) => {
                warn!("Client {} sent a malformed packet ({}); disconnecting.", who, what);
                self.close(conn, Some(reason::MALFORMED_PACKET), now);
            }
            DecodeError::Protocol(what) => {
                warn!("Client {} violated the protocol ({}); disconnecting.", who, what);
                self.close(conn, Some(reason::PROTOCOL_ERROR), now);
            }
        }
        self.commit(now);
    }

    /// Close a connection from the broker side: a v5 client first gets a
    /// DISCONNECT with `reason` [MQTT-4.13.1-1]. The will is published.
    pub(super) fn close(&mut self, conn: ConnId, reason_code: Option<u8>, now: u64) {
        self.close_with(conn, reason_code, true, now)
    }

    /// `close` without publishing the will (a kick by dynamic security, as
    /// Mosquitto's plugin does it).
    pub(super) fn close_without_will(&mut self, conn: ConnId, reason_code: u8, now: u64) {
        self.close_with(conn, Some(reason_code), false, now)
    }

    fn close_with(&mut self, conn: ConnId, reason_code: Option<u8>, will: bool, now: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.phase == Phase::Closing {
            return;
        }
        let was_connected = c.phase == Phase::Connected;
        c.phase = Phase::Closing;
        if let (Some(code), Version::V5, true) = (reason_code, c.version, was_connected) {
            self.push_send(conn, Packet::Disconnect(Disconnect { code, properties: Default::default() }));
        }
        self.actions.push(Action::Close(conn));
        self.end_session_link(conn, will, None, now);
    }

    /// Same as `close` before CONNACK: v5 errors go in the CONNACK instead.
    pub(super) fn refuse(&mut self, conn: ConnId, v5_code: u8, v3_code: u8, why: &str, now: u64) {
        let Some(c) = self.conns.get(&conn) else { return };
        let code = if c.version.is_v5() { v5_code } else { v3_code };
        if self.settings.connection_messages {
            info!("Client {} from {} refused: {}.", c.client.as_deref().unwrap_or("<unknown>"), c.peer, why);
        }
        self.push_send(
            conn,
            Packet::ConnAck(crate::mqtt::ConnAck { session_present: false, code, properties: Default::default() }),
        );
        self.close(conn, None, now);
    }

    pub(super) fn conn_of(&self, client: &str) -> Option<ConnId> {
        self.by_client.get(client).copied()
    }

    /// The client id, or the address before CONNECT, for log lines.
    pub(super) fn who(&self, conn: ConnId) -> String {
        match self.conns.get(&conn) {
            Some(c) => c.client.as_deref().map_or_else(|| c.peer.to_string(), str::to_string),
            None => "<unknown>".to_string(),
        }
    }

    /// The Connect command of `client` applied: CONNACK may go out.
    pub(super) fn connected(&mut self, client: &str, session_present: bool) {
        let Some(id) = self.conn_of(client) else { return };
        if self.conns.get(&id).is_none_or(|c| c.phase != Phase::Connecting) {
            return;
        }
        if let Some(key) = self.state.sessions().get_key_value(client).map(|(k, _)| k.clone()) {
            self.remember_scope(&key, id);
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.phase = Phase::Connected;
        c.session_closed = false;
        // Hold the session's copy of the client id, not a second one.
        if let Some((key, _)) = self.state.sessions().get_key_value(client) {
            c.client = Some(key.clone());
            self.by_client.remove(client);
            self.by_client.insert(key.clone(), id);
        }
        if let Some(p) = c.pending.take() {
            let mut ack = p.connack;
            ack.session_present = session_present;
            self.push_send(id, Packet::ConnAck(ack));
        }
    }
}
