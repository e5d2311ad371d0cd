//! Golden files for the replicated formats (docs/FORMATS.md): a raft
//! entry's command batch and a state snapshot, in every version this
//! release reads (tests/golden/state-v1: batch and state format 1;
//! state-v2: batch and state format 2, with dynamic security; state-v3:
//! batch and state format 3, with the cluster id and a bridge's queue;
//! state-v4: state format 4, with a retained replay in progress — the
//! commands did not change in format 4, and batches stay at version 3). A
//! later release must still decode these bytes to the same values.
//! Regenerate only the current version's files, only when its format
//! version is bumped — and then keep the old files and a reader for them:
//! `MIDGE_WRITE_GOLDEN=1 cargo test --test formats_golden`.

use std::path::Path;
use std::rc::Rc;

use midge::bridge::{Direction, OutRoute, TopicLine};
use midge::broker::state::{
    AckKind, ApplyLimits, Command, DynsecStep, DynsecTag, Entry, State, SubscribeReq, WillMsg, STATE_FORMAT_VERSION,
};
use midge::broker::tree::{SubEntry, SubOptionsRepr};
use midge::broker::{Message, MessageProps};
use midge::cluster::{decode_batch, encode_batch, BATCH_FORMAT_VERSION};
use midge::dynsec::{import_json, DynsecChange, DynsecRead, PasswordHash};
use midge::mqtt::{QoS, RetainHandling, SubOptions};

fn msg(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Message {
    Message {
        topic: Rc::from(topic),
        payload: Rc::from(payload),
        qos,
        retain,
        props: Some(Rc::new(MessageProps {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(vec![1, 2, 3]),
            user_properties: vec![("k".into(), "v".into())],
        })),
        expires_at_ms: Some(1_700_000_100_000),
        origin: Some(Rc::from("pub")),
    }
}

fn entries() -> Vec<Entry> {
    let now = 1_700_000_000_000;
    let sub = |qos, rh| SubEntry {
        opts: SubOptionsRepr::from_opts(SubOptions {
            qos,
            no_local: true,
            retain_as_published: true,
            retain_handling: rh,
        }),
        sub_id: Some(7),
    };
    let cmds = vec![
        Command::Connect {
            client: Rc::from("sub"),
            username: Some(Rc::from("alice")),
            clean_start: false,
            expiry_secs: 3600,
            window: 20,
            will: Some(WillMsg { msg: msg("will/sub", b"gone", QoS::AtLeastOnce, true), delay_secs: 5 }),
        },
        Command::Subscribe {
            client: Rc::from("sub"),
            packet_id: 1,
            reqs: vec![
                SubscribeReq { filter: "a/+".into(), entry: sub(QoS::AtLeastOnce, RetainHandling::SendAtSubscribe) },
                SubscribeReq { filter: "$share/g/b/#".into(), entry: sub(QoS::ExactlyOnce, RetainHandling::DoNotSend) },
            ],
            codes: vec![1, 2],
        },
        Command::Connect {
            client: Rc::from("pub"),
            username: None,
            clean_start: true,
            expiry_secs: 0,
            window: 65535,
            will: None,
        },
        Command::Publish {
            msg: msg("a/1", b"retained", QoS::AtLeastOnce, true),
            from: Some((Rc::from("pub"), 9)),
            offline_only: false,
        },
        Command::Disconnect { client: Rc::from("sub"), will: false, expiry_secs: 3600 },
        Command::Publish {
            msg: msg("a/2", b"queued", QoS::ExactlyOnce, false),
            from: Some((Rc::from("pub"), 10)),
            offline_only: false,
        },
        Command::Release { client: Rc::from("pub"), packet_id: 10 },
        Command::Acked { client: Rc::from("sub"), acks: vec![(1, AckKind::PubAck), (2, AckKind::PubRec)] },
        Command::Tick,
        Command::LeaderStart { node: 2, term: 5 },
    ];
    cmds.into_iter().enumerate().map(|(i, cmd)| Entry { now_ms: now + i as u64, cmd }).collect()
}

fn applied_state(es: &[Entry]) -> State {
    let lim = ApplyLimits {
        queued_messages_max: 100,
        queued_bytes_max: 1 << 20,
        retained_messages_max: 100,
        queue_qos0_messages: false,
        upgrade_outgoing_qos: false,
        // Only format 3's entries publish on bridge/#.
        bridges: Rc::from(vec![OutRoute {
            name: Rc::from("cloud"),
            origin: Rc::from("$bridge/cloud"),
            lines: vec![TopicLine::new("#", Direction::Out, QoS::AtLeastOnce, Some("bridge/"), Some("site7/")).unwrap()],
            queued_messages_max: 10,
        }]),
    };
    let mut st = State::default();
    let mut out = Vec::new();
    for e in es {
        st.apply(e, &lim, None, &mut out);
    }
    st.peer_added(4, "10.0.0.14:7883".into());
    st
}

/// Format 2 added the dynamic-security commands.
fn entries_v2() -> Vec<Entry> {
    let mut es = entries();
    let init = include_str!("fixtures/dynsec/plugin.json");
    let state = Box::new(import_json(init).expect("fixture").state);
    let t = 1_700_000_001_000;
    es.push(Entry { now_ms: t, cmd: Command::DynsecImport { state } });
    let steps = vec![
        DynsecStep::Change(DynsecChange::CreateClient {
            username: "dave".into(),
            password: Some(PasswordHash::new(b"pw", [7; 12], 101)),
            clientid: Some("dave-1".into()),
            textname: Some("Dave".into()),
            textdescription: None,
            roles: None,
            groups: vec![],
        }),
        DynsecStep::Read(DynsecRead::GetClient { username: "dave".into() }),
    ];
    es.push(Entry {
        now_ms: t + 1,
        cmd: Command::Dynsec { tag: DynsecTag { node: 2, client: Rc::from("ctrl"), seq: 42 }, steps },
    });
    es
}

fn golden(dir: &str, name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(dir).join(name);
    let current = (dir, name) == (CURRENT_BATCH, "batch.bin") || (dir, name) == (CURRENT_SNAPSHOT, "snapshot.bin");
    if std::env::var("MIDGE_WRITE_GOLDEN").is_ok() && current {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The directories of the formats this release writes: command batches
/// (`BATCH_FORMAT_VERSION`) and state snapshots (`STATE_FORMAT_VERSION`).
const CURRENT_BATCH: &str = "state-v3";
const CURRENT_SNAPSHOT: &str = "state-v4";

#[test]
fn command_batch_v1_still_decodes() {
    let gold = golden("state-v1", "batch.bin", &[]);
    assert_eq!(gold[0], 1, "format 1");
    assert_eq!(decode_batch(&gold).expect("golden batch decodes"), entries());
}

#[test]
fn state_snapshot_v1_still_restores() {
    let gold = golden("state-v1", "snapshot.bin", &[]);
    assert_eq!(gold[0], 1, "format 1");
    let restored = State::restore(&gold).expect("golden snapshot restores");
    assert_eq!(restored.snapshot(), applied_state(&entries()).snapshot(), "the same state as format 1 held");
    assert_eq!(restored.sessions().len(), 1, "sub persists, pub (expiry 0) ended");
    assert!(restored.retained().contains_key("a/1"));
    assert_eq!(restored.peer_addrs().get(&4).map(String::as_str), Some("10.0.0.14:7883"));
    assert_eq!(restored.tree().len(), 2, "subscriptions rebuilt into the tree");
    assert!(restored.dynsec().is_none(), "format 1 has no dynamic-security data");
}

#[test]
fn command_batch_v2_still_decodes() {
    let gold = golden("state-v2", "batch.bin", &[]);
    assert_eq!(gold[0], 2, "format 2");
    assert_eq!(decode_batch(&gold).expect("golden batch decodes"), entries_v2());
}

#[test]
fn state_snapshot_v2_still_restores() {
    let gold = golden("state-v2", "snapshot.bin", &[]);
    assert_eq!(gold[0], 2, "format 2");
    let restored = State::restore(&gold).expect("golden snapshot restores");
    assert_eq!(restored.snapshot(), applied_state(&entries_v2()).snapshot(), "the same state as format 2 held");
    let ds = restored.dynsec().expect("dynamic-security data");
    assert!(ds.clients.contains_key("dave") && ds.clients.contains_key("bob"), "import and change both applied");
    assert_eq!(ds.clients["dave"].clientid.as_deref(), Some("dave-1"));
    assert_eq!(restored.cluster_id(), 0, "format 2 has no cluster id");
}

/// Format 3: format 2's entries and the cluster id (twice: the second,
/// from a later leader, is ignored), three messages queued for a bridge
/// and the first two of them acknowledged upstream, a retained one, and the
/// bridge connecting (which queues the retained one again).
fn entries_v3() -> Vec<Entry> {
    let mut es = entries_v2();
    es.push(Entry { now_ms: 1_700_000_002_000, cmd: Command::ClusterId { id: CLUSTER_ID } });
    es.push(Entry { now_ms: 1_700_000_002_001, cmd: Command::ClusterId { id: 5 } });
    for (i, payload) in [&b"b1"[..], b"b2", b"b3"].into_iter().enumerate() {
        es.push(Entry {
            now_ms: 1_700_000_002_002 + i as u64,
            cmd: Command::Publish {
                msg: msg("bridge/temp", payload, QoS::ExactlyOnce, false),
                from: Some((Rc::from("pub"), 20 + i as u16)),
                offline_only: false,
            },
        });
    }
    es.push(Entry {
        now_ms: 1_700_000_002_010,
        cmd: Command::BridgeAcked { bridge: Rc::from("cloud"), seqs: vec![0, 1] },
    });
    es.push(Entry {
        now_ms: 1_700_000_002_011,
        cmd: Command::Publish {
            msg: msg("bridge/level", b"kept", QoS::AtLeastOnce, true),
            from: Some((Rc::from("pub"), 30)),
            offline_only: false,
        },
    });
    es.push(Entry { now_ms: 1_700_000_002_012, cmd: Command::BridgeConnected { bridge: Rc::from("cloud") } });
    es
}

const CLUSTER_ID: u128 = 0x6d69_6467_6520_636c_7573_7465_7220_6964;

#[test]
fn command_batch_v3_still_decodes() {
    assert_eq!(BATCH_FORMAT_VERSION, 3);
    let es = entries_v3();
    let bytes = encode_batch(&es);
    let gold = golden(CURRENT_BATCH, "batch.bin", &bytes);
    assert_eq!(decode_batch(&gold).expect("golden batch decodes"), es);
    assert_eq!(bytes, gold, "the batch encoding changed: bump BATCH_FORMAT_VERSION and keep a reader for v3");
}

#[test]
fn state_snapshot_v3_still_restores() {
    let gold = golden("state-v3", "snapshot.bin", &[]);
    assert_eq!(gold[0], 3, "format 3");
    let restored = State::restore(&gold).expect("golden snapshot restores");
    assert_eq!(restored.snapshot(), applied_state(&entries_v3()).snapshot(), "the same state as format 3 held");
    assert_eq!(restored.cluster_id(), CLUSTER_ID);
    assert!(restored.dynsec().is_some_and(|d| d.clients.contains_key("dave")));
    let q = restored.bridge_queue("cloud").expect("the bridge's queue");
    let items: Vec<(u64, &str, QoS, bool)> =
        q.items.iter().map(|m| (m.seq, &*m.msg.topic, m.msg.qos, m.msg.retain)).collect();
    assert_eq!(
        items,
        [
            (2, "site7/temp", QoS::AtLeastOnce, false),
            (3, "site7/level", QoS::AtLeastOnce, true),
            (4, "site7/level", QoS::AtLeastOnce, true),
        ],
        "two of three acknowledged upstream; the retained one, and again on connect"
    );
    assert_eq!(q.next_seq, 5);
    assert!(restored.retained_replays().is_empty(), "format 3 has no retained replays");
}

/// Retained messages `c/0`.. (QoS 1, no properties) in format 4's entries.
const REPLAYED: usize = 5;

/// Format 4: format 3's entries, then `REPLAYED` retained QoS 1 messages
/// and a persistent session with a window of 1 that subscribes to `c/#`
/// at QoS 1 and acknowledges its first message: the second in flight, the
/// rest behind a cursor after `c/1`.
fn entries_v4() -> Vec<Entry> {
    let mut es = entries_v3();
    let t = 1_700_000_003_000;
    for i in 0..REPLAYED {
        let mut m = msg(&format!("c/{i}"), b"c", QoS::AtLeastOnce, true);
        m.props = None;
        m.expires_at_ms = None;
        es.push(Entry { now_ms: t + i as u64, cmd: Command::Publish { msg: m, from: None, offline_only: false } });
    }
    let t = t + 1_000;
    es.push(Entry {
        now_ms: t,
        cmd: Command::Connect {
            client: Rc::from("slow"),
            username: None,
            clean_start: true,
            expiry_secs: 600,
            window: 1,
            will: None,
        },
    });
    let opts = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    es.push(Entry {
        now_ms: t + 1,
        cmd: Command::Subscribe {
            client: Rc::from("slow"),
            packet_id: 1,
            reqs: vec![SubscribeReq {
                filter: "c/#".into(),
                entry: SubEntry { opts: SubOptionsRepr::from_opts(opts), sub_id: Some(11) },
            }],
            codes: vec![1],
        },
    });
    es.push(Entry {
        now_ms: t + 2,
        cmd: Command::Acked { client: Rc::from("slow"), acks: vec![(1, AckKind::PubAck)] },
    });
    es
}

#[test]
fn state_snapshot_v4_still_restores() {
    assert_eq!(STATE_FORMAT_VERSION, 4);
    let st = applied_state(&entries_v4());
    let bytes = st.snapshot();
    let gold = golden(CURRENT_SNAPSHOT, "snapshot.bin", &bytes);
    assert_eq!(gold[0], 4, "format 4");
    let restored = State::restore(&gold).expect("golden snapshot restores");
    assert_eq!(restored.snapshot(), gold);
    assert_eq!(restored.cluster_id(), CLUSTER_ID);
    assert!(restored.bridge_queue("cloud").is_some());
    let slow = &restored.sessions()["slow"];
    assert_eq!(slow.inflight.len(), 1);
    assert!(slow.queue.is_empty(), "a replay takes no queue room");
    let replays = &restored.retained_replays()["slow"];
    assert_eq!(replays.len(), 1);
    let c = &replays[0];
    assert_eq!((c.filter.as_str(), c.sub_qos, c.sub_ids.as_slice()), ("c/#", QoS::AtLeastOnce, &[11][..]));
    assert_eq!(c.after.as_deref(), Some("c/1"), "c/0 acknowledged, c/1 in flight");
    assert_eq!(bytes, gold, "the snapshot encoding changed: bump STATE_FORMAT_VERSION and keep a reader for v4");
}

#[test]
fn unknown_versions_are_refused() {
    let mut b = encode_batch(&entries());
    b[0] = 4; // postcard varint of the version field
    assert!(decode_batch(&b).is_err());
    let mut s = applied_state(&entries()).snapshot();
    s[0] = 9;
    assert!(State::restore(&s).is_err());
}
