//! The commands that change the durable broker state and the effects that
//! applying them has.
//!
//! `Entry` (a `Command` with the leader's clock) is what the Raft log holds
//! and what every node applies in the same order; its postcard form is
//! versioned by `STATE_FORMAT_VERSION`, shared with the state snapshot, and
//! kept in tests/golden. An `Effect` is never stored: it tells the node that
//! serves clients what to send. Nothing here changes state.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::message::Message;
use super::state::Delivery;
use super::tree::SubEntry;
use crate::dynsec::{CommandError, DynsecChange, DynsecRead, DynsecState, Json, Kick};
use crate::mqtt::QoS;

/// Format version of `Command` and of the state snapshot. Bump on any
/// change to their serialised shape, and keep reading the older ones.
///
/// 2: `Command::Dynsec` and `Command::DynsecImport` appended; the snapshot
/// ends with the dynamic-security data. Version 1 entries and snapshots
/// still decode (a v1 `Command` is a v2 one; a v1 snapshot has no
/// dynamic-security data).
///
/// 3: `Command::ClusterId`, `Command::BridgeAcked` and
/// `Command::BridgeConnected` appended; the
/// snapshot ends with the cluster id (u128) and the bridges' queues.
/// Version 2 entries and snapshots still decode (cluster id 0, no queues).
///
/// 4: the snapshot ends with the retained replays at QoS 1/2 in progress
/// (`RetainedCursor`s by client id). `Command` is unchanged (its batches
/// stay at `BATCH_FORMAT_VERSION` 3). Version 3 snapshots still decode (no
/// replays in progress).
pub const STATE_FORMAT_VERSION: u16 = 4;

/// Oldest snapshot format this midge reads.
pub const STATE_FORMAT_VERSION_MIN: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillMsg {
    pub msg: Message,
    pub delay_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeReq {
    pub filter: String,
    pub entry: SubEntry,
}

/// A change to the durable state. Versioned by `STATE_FORMAT_VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A client connected (or took over its session).
    Connect {
        client: Rc<str>,
        username: Option<Rc<str>>,
        clean_start: bool,
        expiry_secs: u32,
        window: u16,
        will: Option<WillMsg>,
    },
    /// The connection of `client` ended. `will` is false after a normal
    /// DISCONNECT (reason 0x00), which discards the will [MQTT-3.1.2-10].
    Disconnect {
        client: Rc<str>,
        will: bool,
        expiry_secs: u32,
    },
    Subscribe {
        client: Rc<str>,
        packet_id: u16,
        reqs: Vec<SubscribeReq>,
        codes: Vec<u8>,
    },
    Unsubscribe {
        client: Rc<str>,
        packet_id: u16,
        filters: Vec<String>,
    },
    /// An accepted PUBLISH. `from` names the publisher and its packet id
    /// when the publisher awaits an acknowledgement (QoS 1 and 2).
    /// `offline_only`: a QoS 0 message already delivered to online
    /// sessions, recorded only for offline ones (queue_qos0_messages).
    Publish {
        msg: Message,
        from: Option<(Rc<str>, u16)>,
        offline_only: bool,
    },
    /// PUBREL from a publisher for an inbound QoS 2 message.
    Release {
        client: Rc<str>,
        packet_id: u16,
    },
    /// Acknowledgements from a subscriber: PUBACK, PUBREC or PUBCOMP.
    Acked {
        client: Rc<str>,
        acks: Vec<(u16, AckKind)>,
    },
    /// Periodic: due wills, expired sessions.
    Tick,
    /// A new leader starts serving: every session still marked online lost
    /// its connection with the old leader (an ungraceful end: wills are
    /// published as for a dropped connection).
    LeaderStart {
        node: u64,
        term: u64,
    },
    /// The changes and reads of one `$CONTROL/dynamic-security/v1` request,
    /// in request order (commands refused before any look at the state
    /// are answered by the node that took the request and are not here).
    /// Since format 2.
    Dynsec {
        tag: DynsecTag,
        steps: Vec<DynsecStep>,
    },
    /// The dynamic-security file, imported by the first leader when the
    /// state holds no dynamic-security data; ignored when it holds some.
    /// Since format 2.
    DynsecImport {
        state: Box<DynsecState>,
    },
    /// The cluster's random id, proposed by its first leader; ignored when
    /// the state holds one. Since format 3.
    ClusterId {
        id: u128,
    },
    /// The upstream broker of bridge `bridge` acknowledged these queued
    /// messages (PUBACK, PUBCOMP; QoS 0 ones once written): they leave its
    /// queue. Since format 3.
    BridgeAcked {
        bridge: Rc<str>,
        seqs: Vec<u64>,
    },
    /// Bridge `bridge` connected to its upstream broker: the retained
    /// messages of its `out`/`both` topics join its queue (as Mosquitto
    /// sends them to a bridge that connects). Since format 3.
    BridgeConnected {
        bridge: Rc<str>,
    },
}

/// Which request a `Command::Dynsec` answers: the node that took it, the
/// requesting client and a number that node chose, unique on it (it grows
/// from the wall clock at each start).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DynsecTag {
    pub node: u64,
    pub client: Rc<str>,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DynsecStep {
    Change(DynsecChange),
    Read(DynsecRead),
}

/// The answer to one step: a read's data, or an error.
pub type StepResult = Result<Option<Json>, CommandError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubComp,
    /// The broker dropped a QoS 1/2 delivery itself (too large for the
    /// client's Maximum Packet Size, or denied by the ACL).
    Discard,
}

/// A command with the leader's clock, as it is logged and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub now_ms: u64,
    pub cmd: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// CONNACK may go out.
    Connected {
        client: Rc<str>,
        session_present: bool,
    },
    /// Send a PUBLISH (packet id present for QoS 1/2).
    Deliver {
        client: Rc<str>,
        packet_id: Option<u16>,
        delivery: Delivery,
        dup: bool,
    },
    /// Send PUBREL (resend after reconnect).
    SendPubRel {
        client: Rc<str>,
        packet_id: u16,
    },
    PubAck {
        client: Rc<str>,
        packet_id: u16,
        code: u8,
    },
    PubRec {
        client: Rc<str>,
        packet_id: u16,
        code: u8,
    },
    PubRel {
        client: Rc<str>,
        packet_id: u16,
    },
    PubComp {
        client: Rc<str>,
        packet_id: u16,
        code: u8,
    },
    SubAck {
        client: Rc<str>,
        packet_id: u16,
        codes: Vec<u8>,
    },
    UnsubAck {
        client: Rc<str>,
        packet_id: u16,
        codes: Vec<u8>,
    },
    /// Send the retained messages matching `filter` whose QoS, capped by
    /// `sub_qos`, is 0, to an online session that just subscribed. The
    /// serving broker paces them by the connection's output bound
    /// (`Broker::pump_replays`); as they change no durable state, no
    /// other node has anything to do.
    RetainedReplay {
        client: Rc<str>,
        /// The topic filter (without any `$share/` prefix: shared
        /// subscriptions get no retained messages).
        filter: String,
        sub_qos: QoS,
        sub_ids: Vec<u32>,
    },
    /// A message was dropped because a session's queue was full.
    QueueFull {
        client: Rc<str>,
    },
    SessionExpired {
        client: Rc<str>,
    },
    WillPublished {
        client: Rc<str>,
    },
    /// The LeaderStart command of `node` in `term` was applied.
    LeaderReady {
        node: u64,
        term: u64,
    },
    /// A `Command::Dynsec` was applied: one result per step.
    DynsecAnswered {
        tag: DynsecTag,
        results: Vec<StepResult>,
    },
    /// Connections to close after a dynamic-security change.
    DynsecKick {
        kick: Vec<Kick>,
    },
    /// The dynamic-security data changed (the file is to be rewritten).
    DynsecChanged,
    /// A message joined the queue of bridge `bridge`.
    BridgeQueued {
        bridge: Rc<str>,
    },
    /// A message for bridge `bridge` was dropped: its queue was full.
    BridgeQueueFull {
        bridge: Rc<str>,
        dropped: u64,
    },
}
