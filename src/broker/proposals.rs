//! The broker's side of the commit pipeline: commands are proposed, taken
//! by a replicating runtime (or applied at once when not replicated, or at
//! propose, see `set_apply_at_propose`), applied to the durable `State` once
//! committed, and their effects turned into actions. The durable state
//! changes nowhere else.

use log::{debug, info, warn};

use super::{Broker, Command, Effect, Entry};
use crate::mqtt::{Packet, PubResp, SubAck, UnsubAck};

/// The largest batch buffer `recycle_proposals` keeps (entries).
const RECYCLED_ENTRIES_MAX: usize = 64;

impl Broker {
    pub fn has_proposals(&self) -> bool {
        !self.proposals.is_empty()
    }

    /// Whether the pending commands are only subscribers' acknowledgements
    /// (`Command::Acked`), which may be replicated lazily: nobody waits
    /// for their commit but the subscriber's window.
    pub fn proposals_lazy(&self) -> bool {
        self.proposals.iter().all(|e| matches!(e.cmd, Command::Acked { .. }))
    }

    /// Whether the pending commands are only final acknowledgements
    /// (PUBACK, PUBCOMP, a discarded delivery), none of which the broker
    /// waits for to send anything: they may wait for the next write (see
    /// `Node::lazy_deferred`). PUBREC is not: the PUBREL waits for it; nor
    /// is the acknowledgement of a client with messages queued or a
    /// retained replay at QoS 1/2 in progress.
    /// Returns when the oldest of them arrived (wall ms).
    pub fn proposals_deferrable(&self) -> Option<u64> {
        let deferrable = self.proposals_applied == 0
            && self.proposals.iter().all(|e| match &e.cmd {
                // Not when messages queue for the client, or its retained
                // replay goes on: they wait for the room in its window
                // that the acknowledgement makes.
                Command::Acked { client, acks } => {
                    acks.iter().all(|(_, k)| !matches!(k, super::AckKind::PubRec))
                        && self.state.sessions().get(client).is_none_or(|s| s.queue.is_empty())
                        && !self.state.retained_replays().contains_key(client)
                }
                _ => false,
            });
        if deferrable {
            self.proposals.first().map(|e| e.now_ms)
        } else {
            None
        }
    }

    pub(super) fn propose(&mut self, now_ms: u64, cmd: Command) {
        // An applied entry is final: acknowledgements join only one that
        // is not applied yet.
        let last_applied = self.proposals_applied == self.proposals.len();
        if let (Command::Acked { client, acks }, false) = (&cmd, last_applied) {
            if let Some(Entry { cmd: Command::Acked { client: c2, acks: a2 }, .. }) = self.proposals.last_mut() {
                if c2 == client {
                    a2.extend_from_slice(acks);
                    return;
                }
            }
        }
        self.proposals.push(Entry { now_ms, cmd });
    }

    /// Commands proposed since the last call, for a replicating runtime,
    /// and how many of them (a prefix) are applied already (see
    /// `set_apply_at_propose`).
    pub fn take_proposals(&mut self) -> (Vec<Entry>, usize) {
        (std::mem::take(&mut self.proposals), std::mem::replace(&mut self.proposals_applied, 0))
    }

    /// A batch from `take_proposals` that the runtime is done with: its
    /// buffer holds the next commands (one allocation less per batch).
    /// Not the buffer of a burst, which would stay allocated: after
    /// bench.sh's fan-out, RSS stayed about 12 MiB higher.
    pub fn recycle_proposals(&mut self, mut batch: Vec<Entry>) {
        batch.clear();
        if self.proposals.capacity() == 0 && batch.capacity() <= RECYCLED_ENTRIES_MAX {
            self.proposals = batch;
        }
    }

    /// Apply at propose: for a replicating runtime whose next log entries
    /// are certain to commit, in the order proposed, with nothing before
    /// them left to apply (a one-voter raft leader whose log is in
    /// memory: its own append is the quorum, and it cannot fail). Each
    /// command then applies as it is proposed, and its effects (a
    /// delivery, an acknowledgement) go out before the log round instead
    /// of after it; the commands stay queued for the log all the same,
    /// and the runtime skips them when they come back committed. Off
    /// again before the certainty ends.
    pub fn set_apply_at_propose(&mut self, on: bool, now: u64) {
        self.apply_at_propose = on;
        if on {
            self.apply_proposals(now);
        }
    }

    pub fn applies_at_propose(&self) -> bool {
        self.apply_at_propose
    }

    /// Whether every pending proposal is applied already (at propose):
    /// only their log entry is left.
    pub fn proposals_all_applied(&self) -> bool {
        self.proposals_applied == self.proposals.len()
    }

    /// Proposals applied but not yet taken for the log.
    pub fn proposals_applied(&self) -> usize {
        self.proposals_applied
    }

    /// Apply at propose: apply the proposals not applied yet, and those
    /// that applying them proposes, in order.
    pub fn apply_proposals(&mut self, now: u64) {
        if !self.apply_at_propose || self.proposals_applied == self.proposals.len() {
            return;
        }
        let mut queued = std::mem::take(&mut self.proposals);
        while self.proposals_applied < queued.len() {
            self.apply_committed(&queued[self.proposals_applied], now);
            self.proposals_applied += 1;
            queued.append(&mut self.proposals);
        }
        self.proposals = queued;
    }

    /// Apply a committed entry and act on its effects.
    pub fn apply_committed(&mut self, e: &Entry, now: u64) {
        let settings = self.settings.clone();
        let mut effects = std::mem::take(&mut self.effects);
        // (The ACL's inputs are not even cloned when no ACL applies.)
        if settings.reads_checked() {
            let mut acl = self.read_acl();
            if let Command::Dynsec { .. } | Command::DynsecImport { .. } = e.cmd {
                // It changes the data: a clone held here would make it
                // copy the whole of it (and it delivers nothing).
                acl.dynsec = None;
            }
            self.state.apply(e, &settings.apply, Some(&acl), &mut effects);
        } else {
            self.state.apply(e, &settings.apply, None, &mut effects);
        }
        for eff in effects.drain(..) {
            self.on_effect(eff, now);
        }
        self.effects = effects;
    }

    pub(super) fn commit(&mut self, now: u64) {
        if self.apply_at_propose {
            self.apply_proposals(now);
            return;
        }
        if !self.auto_commit {
            return;
        }
        while !self.proposals.is_empty() {
            let batch = std::mem::take(&mut self.proposals);
            for e in &batch {
                self.apply_committed(e, now);
            }
        }
    }

    pub(super) fn on_effect(&mut self, eff: Effect, now: u64) {
        match eff {
            Effect::Connected { client, session_present } => self.connected(&client, session_present),
            Effect::Deliver { client, packet_id, delivery, dup } => {
                self.deliver(&client, packet_id, &delivery, dup, now)
            }
            Effect::SendPubRel { client, packet_id } | Effect::PubRel { client, packet_id } => {
                self.send_to_client(
                    &client,
                    Packet::PubRel(PubResp { packet_id, code: 0, properties: Default::default() }),
                );
            }
            Effect::PubAck { client, packet_id, .. } if self.is_bridge_origin(&client) => {
                self.bridge_ack_effect(client, packet_id, crate::mqtt::QoS::AtLeastOnce)
            }
            Effect::PubRec { client, packet_id, .. } if self.is_bridge_origin(&client) => {
                self.bridge_ack_effect(client, packet_id, crate::mqtt::QoS::ExactlyOnce)
            }
            Effect::PubAck { client, packet_id, code } => {
                // (The client's connection looked up once for both.)
                if let Some(id) = self.conn_of(&client) {
                    self.inbound_done_on(id);
                    self.send_to_conn(id, Packet::PubAck(PubResp { packet_id, code, properties: Default::default() }));
                }
            }
            Effect::PubRec { client, packet_id, code } => {
                self.send_to_client(
                    &client,
                    Packet::PubRec(PubResp { packet_id, code, properties: Default::default() }),
                );
            }
            Effect::PubComp { client, packet_id, code } => {
                self.inbound_done(&client);
                self.send_to_client(
                    &client,
                    Packet::PubComp(PubResp { packet_id, code, properties: Default::default() }),
                );
            }
            Effect::SubAck { client, packet_id, codes } => {
                self.send_to_client(
                    &client,
                    Packet::SubAck(SubAck { packet_id, codes, properties: Default::default() }),
                );
            }
            Effect::UnsubAck { client, packet_id, codes } => {
                let codes = self.unsuback_codes(&client, packet_id, codes);
                self.send_to_client(
                    &client,
                    Packet::UnsubAck(UnsubAck { packet_id, codes, properties: Default::default() }),
                );
            }
            Effect::RetainedReplay { client, filter, sub_qos, sub_ids } => {
                self.start_replay(&client, filter, sub_qos, sub_ids, now)
            }
            Effect::QueueFull { client } => {
                self.stats.dropped_queue_full += 1;
                // As Mosquitto does, but at most once a second per broker.
                if now >= self.last_drop_log_ms + 1000 {
                    self.last_drop_log_ms = now;
                    warn!(
                        "Outgoing messages are being dropped for client {} (queue full: max_queued_messages / max_queued_bytes); {} dropped so far.",
                        client, self.stats.dropped_queue_full
                    );
                }
            }
            Effect::SessionExpired { client } => {
                info!("Expiring client {} due to timeout.", client);
            }
            Effect::WillPublished { client } => {
                debug!("Will message of client {} published.", client);
            }
            Effect::LeaderReady { node, term } => self.leader_ready = Some((node, term)),
            Effect::DynsecAnswered { tag, results } => self.on_dynsec_answered(tag, results, now),
            Effect::DynsecKick { kick } => self.on_dynsec_kick(&kick, now),
            Effect::DynsecChanged => self.on_dynsec_changed(),
            Effect::BridgeQueued { .. } => self.bridge_wake = true,
            Effect::BridgeQueueFull { bridge, dropped } => self.bridge_queue_full(&bridge, dropped, now),
        }
    }
}
