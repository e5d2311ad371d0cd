//! The snapshot format of the durable state: `State::snapshot` writes it,
//! `State::restore` reads it back and rebuilds what is derived from it (the
//! subscription tree, byte counts). postcard, led by `STATE_FORMAT_VERSION`;
//! a `Session` is written field by field as `SessionRepr`, the shape serde
//! derived in format version 1. The golden files in tests/golden hold the
//! bytes; they must not change without a version bump.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::{
    split_share, BridgeQueue, Delivery, Outbound, Queue, RetainedCursor, Session, SessionWill, State, WillMsg,
    STATE_FORMAT_VERSION, STATE_FORMAT_VERSION_MIN,
};
use crate::broker::lazy::Lazy;
use crate::broker::message::Message;
use crate::broker::tree::SubEntry;
use crate::dynsec::DynsecState;

/// The serialised form of a `Session`, unchanged since format version 1:
/// there the queue's cost and the will's due time are fields of their own.
/// (A due time without a will is dropped: `apply` no longer leaves one
/// behind, and one did nothing but wait for the next Tick to clear it.)
#[derive(Serialize, Deserialize)]
#[serde(rename = "Session")]
struct SessionRepr<U, S, Q, I, P, W> {
    username: U,
    expiry_secs: u32,
    online: bool,
    disconnected_at_ms: u64,
    window: u16,
    subs: S,
    queue: Q,
    queued_bytes: u64,
    inflight: I,
    last_pid: u16,
    inbound_qos2: P,
    unsent: P,
    will: W,
    will_due_ms: Option<u64>,
}

impl Serialize for Session {
    fn serialize<Ser: serde::Serializer>(&self, ser: Ser) -> Result<Ser::Ok, Ser::Error> {
        SessionRepr {
            username: &self.username,
            expiry_secs: self.expiry_secs,
            online: self.online,
            disconnected_at_ms: self.disconnected_at_ms,
            window: self.window,
            subs: &self.subs,
            queue: &self.queue.items,
            queued_bytes: self.queue.bytes,
            inflight: &self.inflight,
            last_pid: self.last_pid,
            inbound_qos2: &self.inbound_qos2,
            unsent: &self.unsent,
            will: self.will.as_ref().map(|w| &w.msg),
            will_due_ms: self.will.as_ref().and_then(|w| w.due_ms),
        }
        .serialize(ser)
    }
}

type SessionIn = SessionRepr<
    Option<Rc<str>>,
    Lazy<BTreeMap<String, SubEntry>>,
    VecDeque<Delivery>,
    Lazy<BTreeMap<u16, Outbound>>,
    Lazy<BTreeSet<u16>>,
    Option<WillMsg>,
>;

impl<'de> Deserialize<'de> for Session {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Session, D::Error> {
        let r = SessionIn::deserialize(de)?;
        Ok(Session {
            username: r.username,
            expiry_secs: r.expiry_secs,
            online: r.online,
            disconnected_at_ms: r.disconnected_at_ms,
            window: r.window,
            subs: r.subs,
            queue: Lazy::from(Queue { items: r.queue, bytes: r.queued_bytes }),
            inflight: r.inflight,
            last_pid: r.last_pid,
            inbound_qos2: r.inbound_qos2,
            unsent: r.unsent,
            will: r.will.map(|msg| Box::new(SessionWill { msg, due_ms: r.will_due_ms })),
        })
    }
}

/// The serialised form of `State` in a snapshot (postcard), led by
/// `STATE_FORMAT_VERSION`.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u16,
    applied_commands: u64,
    sessions: &'a BTreeMap<Rc<str>, Box<Session>>,
    retained: &'a BTreeMap<Rc<str>, Message>,
    peer_addrs: &'a BTreeMap<u64, String>,
    /// Since format 2.
    dynsec: Option<&'a DynsecState>,
    /// Since format 3.
    cluster_id: u128,
    /// Since format 3.
    bridges: &'a BTreeMap<Rc<str>, BridgeQueue>,
    /// Since format 4.
    retained_replays: &'a BTreeMap<Rc<str>, Vec<RetainedCursor>>,
}

/// Format 1: format 2 without `dynsec`.
#[derive(Deserialize)]
struct SnapshotInV1 {
    #[allow(dead_code)] // checked before decoding the rest
    version: u16,
    applied_commands: u64,
    sessions: BTreeMap<Rc<str>, Box<Session>>,
    retained: BTreeMap<Rc<str>, Message>,
    peer_addrs: BTreeMap<u64, String>,
}

/// Format 2: format 3 without `cluster_id`.
#[derive(Deserialize)]
struct SnapshotInV2 {
    #[allow(dead_code)] // checked before decoding the rest
    version: u16,
    applied_commands: u64,
    sessions: BTreeMap<Rc<str>, Box<Session>>,
    retained: BTreeMap<Rc<str>, Message>,
    peer_addrs: BTreeMap<u64, String>,
    dynsec: Option<DynsecState>,
}

/// Format 3: format 4 without `retained_replays`.
#[derive(Deserialize)]
struct SnapshotInV3 {
    #[allow(dead_code)] // checked before decoding the rest
    version: u16,
    applied_commands: u64,
    sessions: BTreeMap<Rc<str>, Box<Session>>,
    retained: BTreeMap<Rc<str>, Message>,
    peer_addrs: BTreeMap<u64, String>,
    dynsec: Option<DynsecState>,
    cluster_id: u128,
    bridges: BTreeMap<Rc<str>, BridgeQueue>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    #[allow(dead_code)] // checked before decoding the rest
    version: u16,
    applied_commands: u64,
    sessions: BTreeMap<Rc<str>, Box<Session>>,
    retained: BTreeMap<Rc<str>, Message>,
    peer_addrs: BTreeMap<u64, String>,
    dynsec: Option<DynsecState>,
    cluster_id: u128,
    bridges: BTreeMap<Rc<str>, BridgeQueue>,
    retained_replays: BTreeMap<Rc<str>, Vec<RetainedCursor>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotError {
    Version(u16),
    Decode(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Version(v) => {
                write!(
                    f,
                    "state snapshot has format version {v}, this midge reads {STATE_FORMAT_VERSION_MIN} to {STATE_FORMAT_VERSION}"
                )
            }
            SnapshotError::Decode(e) => write!(f, "state snapshot does not decode: {e}"),
        }
    }
}

impl State {
    /// Serialise the whole durable state (postcard, versioned).
    pub fn snapshot(&self) -> Vec<u8> {
        let out = SnapshotOut {
            version: STATE_FORMAT_VERSION,
            applied_commands: self.applied_commands,
            sessions: &self.sessions,
            retained: &self.retained,
            peer_addrs: &self.peer_addrs,
            dynsec: self.dynsec.as_deref(),
            cluster_id: self.cluster_id,
            bridges: &self.bridges,
            retained_replays: &self.retained_replays,
        };
        postcard::to_allocvec(&out).unwrap_or_default()
    }

    /// Rebuild a state from `snapshot()` bytes; derived indexes (the
    /// subscription tree, byte counts) are recomputed. Empty bytes give an
    /// empty state.
    pub fn restore(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.is_empty() {
            return Ok(State::default());
        }
        // The version is the first field; check it before the rest.
        let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let decode_err = |e: postcard::Error| SnapshotError::Decode(e.to_string());
        let s: SnapshotIn = match version {
            1 => {
                let v1: SnapshotInV1 = postcard::from_bytes(bytes).map_err(decode_err)?;
                SnapshotIn {
                    version: 1,
                    applied_commands: v1.applied_commands,
                    sessions: v1.sessions,
                    retained: v1.retained,
                    peer_addrs: v1.peer_addrs,
                    dynsec: None,
                    cluster_id: 0,
                    bridges: BTreeMap::new(),
                    retained_replays: BTreeMap::new(),
                }
            }
            2 => {
                let v2: SnapshotInV2 = postcard::from_bytes(bytes).map_err(decode_err)?;
                SnapshotIn {
                    version: 2,
                    applied_commands: v2.applied_commands,
                    sessions: v2.sessions,
                    retained: v2.retained,
                    peer_addrs: v2.peer_addrs,
                    dynsec: v2.dynsec,
                    cluster_id: 0,
                    bridges: BTreeMap::new(),
                    retained_replays: BTreeMap::new(),
                }
            }
            3 => {
                let v3: SnapshotInV3 = postcard::from_bytes(bytes).map_err(decode_err)?;
                SnapshotIn {
                    version: 3,
                    applied_commands: v3.applied_commands,
                    sessions: v3.sessions,
                    retained: v3.retained,
                    peer_addrs: v3.peer_addrs,
                    dynsec: v3.dynsec,
                    cluster_id: v3.cluster_id,
                    bridges: v3.bridges,
                    retained_replays: BTreeMap::new(),
                }
            }
            STATE_FORMAT_VERSION => postcard::from_bytes(bytes).map_err(decode_err)?,
            _ => return Err(SnapshotError::Version(version)),
        };
        let mut st = State { applied_commands: s.applied_commands, cluster_id: s.cluster_id, ..State::default() };
        let mut sessions = s.sessions;
        for (client, sess) in sessions.iter_mut() {
            for (f, e) in &sess.subs {
                let (share, tf) = split_share(f);
                st.tree.insert(tf, share, client, *e);
            }
            // Recomputed, not trusted from the bytes.
            sess.queue.recount();
            st.stored_bytes = st.stored_bytes.saturating_add(sess.queue.bytes);
            for o in sess.inflight.values() {
                if let Outbound::Publish(d) = o {
                    st.stored_bytes = st.stored_bytes.saturating_add(d.msg.cost_bytes());
                }
            }
        }
        st.stored_bytes = s.retained.values().fold(st.stored_bytes, |a, m| a.saturating_add(m.cost_bytes()));
        st.stored_bytes = s.bridges.values().fold(st.stored_bytes, |a, q| a.saturating_add(q.bytes()));
        st.bridges = s.bridges;
        // (A replay of no session, or an empty list, is never written; one
        // read is dropped rather than trusted.)
        st.retained_replays = s.retained_replays;
        st.retained_replays.retain(|c, list| !list.is_empty() && sessions.contains_key(c));
        st.sessions = sessions;
        st.retained = s.retained;
        st.peer_addrs = s.peer_addrs;
        st.dynsec = s.dynsec.map(|mut d| {
            d.reindex();
            Rc::new(d)
        });
        Ok(st)
    }
}

#[cfg(test)]
mod session_format {
    use super::*;
    use crate::broker::state::EXPIRY_NEVER;
    use crate::broker::tree::SubOptionsRepr;
    use crate::mqtt::QoS;

    /// `Session` as serde derived it before its will and its queue were
    /// boxed with what goes with them: the snapshot bytes must not change.
    #[derive(Serialize, Deserialize)]
    struct DerivedSession {
        username: Option<Rc<str>>,
        expiry_secs: u32,
        online: bool,
        disconnected_at_ms: u64,
        window: u16,
        subs: BTreeMap<String, SubEntry>,
        queue: VecDeque<Delivery>,
        queued_bytes: u64,
        inflight: BTreeMap<u16, Outbound>,
        last_pid: u16,
        inbound_qos2: BTreeSet<u16>,
        unsent: BTreeSet<u16>,
        will: Option<Box<WillMsg>>,
        will_due_ms: Option<u64>,
    }

    fn delivery(topic: &str, payload: &[u8]) -> Delivery {
        let msg = Message {
            topic: Rc::from(topic),
            payload: Rc::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: None,
            expires_at_ms: Some(9_000),
            origin: Some(Rc::from("pub")),
        };
        Delivery { msg, qos: QoS::AtLeastOnce, retain: false, sub_ids: vec![3] }
    }

    fn pair(d: &DerivedSession) -> Session {
        Session {
            username: d.username.clone(),
            expiry_secs: d.expiry_secs,
            online: d.online,
            disconnected_at_ms: d.disconnected_at_ms,
            window: d.window,
            subs: d.subs.clone().into(),
            queue: Queue { items: d.queue.clone(), bytes: d.queued_bytes }.into(),
            inflight: d.inflight.clone().into(),
            last_pid: d.last_pid,
            inbound_qos2: d.inbound_qos2.clone().into(),
            unsent: d.unsent.clone().into(),
            will: d.will.clone().map(|w| Box::new(SessionWill { msg: *w, due_ms: d.will_due_ms })),
        }
    }

    fn empty() -> DerivedSession {
        DerivedSession {
            username: None,
            expiry_secs: 0,
            online: false,
            disconnected_at_ms: 0,
            window: 0,
            subs: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: BTreeMap::new(),
            last_pid: 0,
            inbound_qos2: BTreeSet::new(),
            unsent: BTreeSet::new(),
            will: None,
            will_due_ms: None,
        }
    }

    /// Offline, with a will due, queued and in-flight messages.
    fn full() -> DerivedSession {
        let q = [delivery("a/b", b"one"), delivery("a/c", b"two")];
        DerivedSession {
            username: Some(Rc::from("alice")),
            expiry_secs: EXPIRY_NEVER,
            online: false,
            disconnected_at_ms: 1_700_000_000_123,
            window: 20,
            subs: [("a/#".to_string(), SubEntry { opts: SubOptionsRepr(1), sub_id: Some(3) })].into(),
            queued_bytes: q.iter().map(|d| d.msg.cost_bytes()).sum(),
            queue: q.into(),
            inflight: [(7, Outbound::Publish(delivery("x", b"3"))), (8, Outbound::Released)].into(),
            last_pid: 8,
            inbound_qos2: [4, 5].into(),
            unsent: [7].into(),
            will: Some(Box::new(WillMsg { msg: delivery("will", b"gone").msg, delay_secs: 5 })),
            will_due_ms: Some(1_700_000_005_123),
        }
    }

    #[test]
    fn same_bytes_as_the_derived_session() {
        let odd = DerivedSession { queued_bytes: u64::MAX / 2 + 1, ..empty() };
        let online = DerivedSession { online: true, will_due_ms: None, ..full() };
        for d in [empty(), odd, full(), online] {
            let bytes = postcard::to_allocvec(&d).unwrap();
            assert_eq!(postcard::to_allocvec(&pair(&d)).unwrap(), bytes);
            let back: Session = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, pair(&d));
        }
    }

    #[test]
    fn session_fits_a_96_byte_block() {
        assert!(std::mem::size_of::<Session>() <= 88, "{}", std::mem::size_of::<Session>());
    }
}
