//! Retained replay at QoS 1/2 against `State::apply` alone: a subscriber
//! that acknowledges everything it gets receives every retained message
//! once, in topic order, however small its queue bound.

use std::rc::Rc;

use super::super::{AckKind, AclCheck, ApplyLimits, Command, Effect, Entry, State, SubscribeReq};
use crate::broker::message::Message;
use crate::broker::tree::{SubEntry, SubOptionsRepr};
use crate::mqtt::{QoS, RetainHandling, SubOptions};

const QUEUE_MAX: u32 = 100;
const WINDOW: u16 = 20;

fn lim() -> ApplyLimits {
    ApplyLimits {
        queued_messages_max: QUEUE_MAX,
        queued_bytes_max: 1 << 30,
        retained_messages_max: 100_000,
        queue_qos0_messages: false,
        upgrade_outgoing_qos: false,
        bridges: Rc::from(vec![]),
    }
}

fn allow_all(_: &str, _: Option<&str>, _: &str) -> bool {
    true
}

/// One received PUBLISH: (packet id, topic, QoS, retain).
type Got = (Option<u16>, String, QoS, bool);

struct Run {
    st: State,
    now: u64,
    /// Every PUBLISH handed to "sub", in order.
    got: Vec<Got>,
    queue_full: usize,
}

impl Run {
    fn new() -> Run {
        Run { st: State::default(), now: 1_000, got: Vec::new(), queue_full: 0 }
    }

    fn apply(&mut self, cmd: Command, acl: AclCheck) {
        self.now += 1;
        let mut out = Vec::new();
        self.st.apply(&Entry { now_ms: self.now, cmd }, &lim(), acl, &mut out);
        for e in out {
            match e {
                Effect::Deliver { client, packet_id, delivery: d, .. } if &*client == "sub" => {
                    self.got.push((packet_id, d.msg.topic.to_string(), d.qos, d.retain));
                }
                Effect::QueueFull { .. } => self.queue_full += 1,
                _ => {}
            }
        }
        if let Some(s) = self.st.sessions().get("sub") {
            assert!(s.queue.len() <= QUEUE_MAX as usize, "queue {} over the bound", s.queue.len());
        }
    }

    fn connect(&mut self, client: &str, clean_start: bool) {
        let cmd = Command::Connect {
            client: Rc::from(client),
            username: None,
            clean_start,
            expiry_secs: 3600,
            window: WINDOW,
            will: None,
        };
        self.apply(cmd, Some(&allow_all));
    }

    /// `n` retained messages `r/0000`.. at `qos(i)`.
    fn retain(&mut self, n: usize, qos: impl Fn(usize) -> QoS) {
        self.connect("pub", true);
        for i in 0..n {
            let msg = Message {
                topic: Rc::from(format!("r/{i:04}")),
                payload: Rc::from(&b"x"[..]),
                qos: qos(i),
                retain: true,
                props: None,
                expires_at_ms: None,
                origin: Some(Rc::from("pub")),
            };
            self.apply(Command::Publish { msg, from: None, offline_only: false }, Some(&allow_all));
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS, acl: AclCheck) {
        let opts = SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        };
        let entry = SubEntry { opts: SubOptionsRepr::from_opts(opts), sub_id: Some(9) };
        let cmd = Command::Subscribe {
            client: Rc::from("sub"),
            packet_id: 1,
            reqs: vec![SubscribeReq { filter: filter.into(), entry }],
            codes: vec![qos as u8],
        };
        self.apply(cmd, acl);
    }

    /// PUBACK everything in flight to "sub", once.
    fn ack_all(&mut self, acl: AclCheck) -> bool {
        let Some(s) = self.st.sessions().get("sub") else { return false };
        let acks: Vec<(u16, AckKind)> = s.inflight.keys().map(|p| (*p, AckKind::PubAck)).collect();
        if acks.is_empty() {
            return false;
        }
        self.apply(Command::Acked { client: Rc::from("sub"), acks }, acl);
        true
    }

    fn ack_until_idle(&mut self, acl: AclCheck) {
        for _ in 0..10_000 {
            if !self.ack_all(acl) {
                return;
            }
        }
        panic!("still acknowledging after 10,000 rounds");
    }

    fn topics(&self) -> Vec<String> {
        self.got.iter().map(|g| g.1.clone()).collect()
    }
}

fn all_topics(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r/{i:04}")).collect()
}

/// 2,000 retained QoS 1 messages, a window of 20, a queue bound of 100: a QoS 1
/// subscription to `#` gets every one, once, in topic order, with retain
/// set [MQTT-3.3.1-8], as it acknowledges; none dropped as "queue full".
#[test]
fn a_subscriber_that_acknowledges_gets_every_retained_message_once_in_order() {
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("#", QoS::AtLeastOnce, Some(&allow_all));
    assert_eq!(r.got.len(), WINDOW as usize, "the window");
    assert!(r.st.sessions()["sub"].queue.is_empty(), "the queue is left to live messages");
    assert_eq!(r.st.retained_replays()["sub"].len(), 1, "the rest waits behind a cursor");
    r.ack_until_idle(Some(&allow_all));
    assert_eq!(r.topics(), all_topics(2_000));
    assert!(r.got.iter().all(|g| g.0.is_some() && g.2 == QoS::AtLeastOnce && g.3), "QoS 1 with retain = 1");
    assert_eq!(r.queue_full, 0);
    assert!(r.st.retained_replays().is_empty(), "the replay ended");
}

/// QoS = min(message, subscription); what goes at QoS 0 is the serving
/// broker's replay (`Effect::RetainedReplay`), not the state's.
#[test]
fn qos_is_the_lower_of_message_and_subscription() {
    let mut r = Run::new();
    r.retain(300, |i| [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3]);
    r.connect("sub", true);
    r.subscribe("r/+", QoS::AtLeastOnce, Some(&allow_all));
    r.ack_until_idle(Some(&allow_all));
    let want: Vec<String> = (0..300).filter(|i| i % 3 != 0).map(|i| format!("r/{i:04}")).collect();
    assert_eq!(r.topics(), want);
    assert!(r.got.iter().all(|g| g.2 == QoS::AtLeastOnce));
}

/// Topics the ACL denies the subscriber are never delivered, whether the
/// check happens at SUBSCRIBE or as an acknowledgement resumes the replay;
/// a replay that finds its next allowed topic far away still reaches it
/// (with nothing in flight, the scan does not stop at its bound).
#[test]
fn acl_denied_topics_are_never_delivered() {
    let deny_1xxx = |c: &str, _: Option<&str>, t: &str| !(c == "sub" && t.starts_with("r/1"));
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&deny_1xxx));
    r.ack_until_idle(Some(&deny_1xxx));
    assert_eq!(r.topics(), all_topics(1_000), "r/0000..r/0999, none of r/1xxx");

    let only_last = |c: &str, _: Option<&str>, t: &str| c != "sub" || t == "r/1999";
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&only_last));
    r.ack_until_idle(Some(&only_last));
    assert_eq!(r.topics(), ["r/1999"]);
}

/// Every 300th topic allowed: pauses at the scan bound while something is
/// in flight, resumed by its acknowledgement, and nothing is missed.
#[test]
fn a_sparse_replay_resumes_after_its_scan_bound() {
    let sparse = |c: &str, _: Option<&str>, t: &str| c != "sub" || t[2..].parse::<usize>().is_ok_and(|i| i % 300 == 0);
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("#", QoS::AtLeastOnce, Some(&sparse));
    assert_eq!(r.topics(), ["r/0000"]);
    let after = r.st.retained_replays()["sub"][0].after.clone();
    assert_eq!(after.as_deref(), Some("r/0255"), "256 topics looked at, then a pause");
    r.ack_until_idle(Some(&sparse));
    let want: Vec<String> = (0..2_000).step_by(300).map(|i| format!("r/{i:04}")).collect();
    assert_eq!(r.topics(), want);
}

/// UNSUBSCRIBE ends the replay: what was in flight is still acknowledged,
/// nothing follows it.
#[test]
fn unsubscribe_mid_replay_stops_it() {
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&allow_all));
    r.ack_all(Some(&allow_all));
    let sent = r.got.len();
    assert!(r.st.retained_replays().contains_key("sub"));
    r.apply(
        Command::Unsubscribe { client: Rc::from("sub"), packet_id: 2, filters: vec!["r/#".into()] },
        Some(&allow_all),
    );
    assert!(r.st.retained_replays().is_empty());
    r.ack_until_idle(Some(&allow_all));
    assert_eq!(r.topics(), all_topics(sent), "nothing after the UNSUBSCRIBE");
}

/// A new SUBSCRIBE to the same filter replaces the replay (starting over);
/// one cursor per subscription.
#[test]
fn resubscribe_replaces_the_replay() {
    let mut r = Run::new();
    r.retain(1_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&allow_all));
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&allow_all));
    assert_eq!(r.st.retained_replays()["sub"].len(), 1);
    assert_eq!(r.st.retained_replays()["sub"][0].after, None, "started over");
}

/// A snapshot taken mid-replay carries the cursor: the restored state
/// hands out the rest, and exactly what the original would have.
#[test]
fn snapshot_mid_replay_then_the_rest() {
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&allow_all));
    for _ in 0..10 {
        r.ack_all(Some(&allow_all));
    }
    let bytes = r.st.snapshot();
    let restored = State::restore(&bytes).expect("restores");
    assert_eq!(restored.snapshot(), bytes);
    assert_eq!(restored.retained_replays(), r.st.retained_replays());
    let mut copy = Run { st: restored, now: r.now, got: Vec::new(), queue_full: 0 };
    let before = r.got.len();
    r.ack_until_idle(Some(&allow_all));
    copy.ack_until_idle(Some(&allow_all));
    assert_eq!(r.topics(), all_topics(2_000));
    assert_eq!(copy.topics(), r.topics()[before..], "the restored state hands out the same rest");
}

/// A persistent session whose connection ends mid-replay (a failover:
/// LeaderStart) gets the rest after it reconnects: the in-flight ones
/// again (DUP), then the cursor's.
#[test]
fn reconnect_resumes_the_replay() {
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("r/#", QoS::AtLeastOnce, Some(&allow_all));
    r.ack_all(Some(&allow_all));
    r.apply(Command::LeaderStart { node: 2, term: 3 }, Some(&allow_all));
    let acked = r.got.len() - WINDOW as usize;
    r.got.truncate(acked); // the unacknowledged window comes again
    r.connect("sub", false);
    r.ack_until_idle(Some(&allow_all));
    assert_eq!(r.topics(), all_topics(2_000));
}

/// Live messages published during a replay wait in the queue, up to its
/// bound, and go before the replay's next ones: the replay never takes
/// queue room, so none of them is dropped (a replay that kept the queue
/// full would have every one dropped for as long as it lasts).
#[test]
fn live_messages_during_a_replay_are_queued_not_dropped() {
    let mut r = Run::new();
    r.retain(2_000, |_| QoS::AtLeastOnce);
    r.connect("sub", true);
    r.subscribe("#", QoS::AtLeastOnce, Some(&allow_all));
    r.ack_all(Some(&allow_all));
    for i in 0..QUEUE_MAX {
        let msg = Message {
            topic: Rc::from(format!("live/{i:03}")),
            payload: Rc::from(&b"y"[..]),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: None,
            expires_at_ms: None,
            origin: Some(Rc::from("pub")),
        };
        r.apply(Command::Publish { msg, from: None, offline_only: false }, Some(&allow_all));
    }
    assert_eq!(r.st.sessions()["sub"].queue.len(), QUEUE_MAX as usize);
    let before = r.got.len();
    r.ack_all(Some(&allow_all));
    assert!(r.got[before..].iter().all(|g| g.1.starts_with("live/")), "the queue first");
    r.ack_until_idle(Some(&allow_all));
    assert_eq!(r.queue_full, 0);
    let live = r.got.iter().filter(|g| g.1.starts_with("live/")).count();
    assert_eq!(live, QUEUE_MAX as usize);
    let retained: Vec<String> = r.topics().into_iter().filter(|t| t.starts_with("r/")).collect();
    assert_eq!(retained, all_topics(2_000));
}
