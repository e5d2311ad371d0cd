//! Dynamic security in the broker state machine: logins, ACLs, the API
//! answered after the change applied, kicks, and the file's text. The
//! file is Mosquitto's own (tests/fixtures/dynsec/init.json: admin with
//! password "secret" and the admin role).

use super::*;
use crate::dynsec::{import_json, RESPONSE_TOPIC as RESPONSE};

const INIT: &str = include_str!("../../../tests/fixtures/dynsec/init.json");
const REQUEST: &str = "$CONTROL/dynamic-security/v1";

fn dynsec_broker(f: impl FnOnce(&mut Config)) -> Broker {
    let mut b = broker_with(|c| {
        c.dynsec_plugin = true;
        c.allow_anonymous = false;
        f(c)
    });
    b.set_dynsec_file(import_json(INIT).unwrap().state);
    b.dynsec_serving(1000);
    b.commit(1000);
    assert!(b.state().dynsec().is_some(), "the file was imported");
    assert!(b.take_dynsec_file().is_some(), "the import marks the file for writing");
    b
}

fn login(
    b: &mut Broker,
    conn: ConnId,
    id: &str,
    user: Option<&str>,
    pw: &[u8],
    now: u64,
) -> (ConnAck, Vec<(ConnId, Packet)>) {
    b.open(conn, "127.0.0.1:1".parse().unwrap(), now);
    b.packet(
        conn,
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: id.into(),
            clean_start: true,
            keep_alive: 60,
            username: user.map(String::from),
            password: user.map(|_| pw.to_vec()),
            will: None,
            properties: Properties::default(),
        })),
        now,
    );
    let out = sent(b);
    (connack(&out[0].1).clone(), out)
}

/// Sends `commands` as the admin (connection 1, subscribed to the response
/// topic) and returns the decoded answer.
fn request(b: &mut Broker, commands: serde_json::Value, now: u64) -> serde_json::Value {
    let body = serde_json::json!({ "commands": commands }).to_string();
    b.packet(1, publish(REQUEST, body.as_bytes(), QoS::AtLeastOnce, Some(9), false), now);
    let got = publishes(&sent(b), 1);
    assert_eq!(got.len(), 1, "one answer");
    assert_eq!(&*got[0].topic, RESPONSE);
    serde_json::from_slice(&got[0].payload).unwrap()
}

fn admin(b: &mut Broker) {
    let (ack, _) = login(b, 1, "ctrl", Some("admin"), b"secret", 1000);
    assert_eq!(ack.code, 0);
    let out = subscribe(b, 1, RESPONSE, QoS::AtMostOnce, 1000);
    assert!(matches!(&out[0].1, Packet::SubAck(s) if s.codes == vec![0]), "{out:?}");
}

fn suback_codes(out: &[(ConnId, Packet)]) -> Vec<u8> {
    out.iter().find_map(|(_, p)| if let Packet::SubAck(s) = p { Some(s.codes.clone()) } else { None }).unwrap()
}

#[test]
fn logins_follow_the_data_and_refusals_say_not_authorised() {
    let mut b = dynsec_broker(|_| {});
    assert_eq!(login(&mut b, 1, "a", Some("admin"), b"secret", 1000).0.code, 0);
    assert_eq!(login(&mut b, 2, "b", Some("admin"), b"wrong", 1000).0.code, reason::NOT_AUTHORIZED);
    assert_eq!(login(&mut b, 3, "c", Some("nobody"), b"x", 1000).0.code, reason::NOT_AUTHORIZED);
    // Anonymous: allow_anonymous false (the default with dynamic security).
    assert_eq!(login(&mut b, 4, "d", None, b"", 1000).0.code, reason::NOT_AUTHORIZED);
}

#[test]
fn a_change_is_answered_after_it_applies_and_reads_see_it() {
    let mut b = dynsec_broker(|_| {});
    admin(&mut b);
    let v = request(
        &mut b,
        serde_json::json!([
            {"command": "createClient", "username": "bob", "password": "pw", "correlationData": "c1"},
            {"command": "getClient", "username": "bob"},
            {"command": "createClient", "username": "bob"},
            {"command": "noSuchCommand"},
        ]),
        1001,
    );
    let r = &v["responses"];
    assert_eq!(r[0], serde_json::json!({"command": "createClient", "correlationData": "c1"}));
    assert_eq!(r[1]["data"]["client"]["username"], "bob");
    assert_eq!(r[2]["error"], "Client already exists");
    assert_eq!(r[3]["error"], "Unknown command");
    let file = b.take_dynsec_file().expect("the file is rewritten after a change");
    assert!(file.contains("\"bob\""));
    assert!(b.take_dynsec_file().is_none(), "once per change");
    // The new client logs in.
    assert_eq!(login(&mut b, 2, "bobid", Some("bob"), b"pw", 1002).0.code, 0);
}

#[test]
fn acls_decide_publish_subscribe_unsubscribe_and_delivery() {
    let mut b = dynsec_broker(|_| {});
    admin(&mut b);
    request(
        &mut b,
        serde_json::json!([
            {"command": "createRole", "rolename": "r"},
            {"command": "addRoleACL", "rolename": "r", "acltype": "subscribePattern", "topic": "a/#", "allow": true},
            {"command": "addRoleACL", "rolename": "r", "acltype": "publishClientSend", "topic": "a/+", "allow": true},
            {"command": "addRoleACL", "rolename": "r", "acltype": "publishClientReceive", "topic": "a/secret", "allow": false},
            {"command": "addRoleACL", "rolename": "r", "acltype": "unsubscribeLiteral", "topic": "a/keep", "allow": false},
            {"command": "createClient", "username": "bob", "password": "pw", "roles": [{"rolename": "r"}]},
        ]),
        1001,
    );
    assert_eq!(login(&mut b, 2, "bob1", Some("bob"), b"pw", 1002).0.code, 0);
    assert_eq!(suback_codes(&subscribe(&mut b, 2, "a/#", QoS::AtMostOnce, 1002)), vec![0]);
    assert_eq!(suback_codes(&subscribe(&mut b, 2, "b/#", QoS::AtMostOnce, 1002)), vec![reason::NOT_AUTHORIZED]);
    assert_eq!(suback_codes(&subscribe(&mut b, 2, "a/keep", QoS::AtMostOnce, 1002)), vec![0]);
    // Publish allowed to a/x and delivered; a/secret is published (send
    // allowed) but not delivered (receive denied); b/x is refused.
    b.packet(2, publish("a/x", b"1", QoS::AtMostOnce, None, false), 1003);
    b.packet(2, publish("a/secret", b"2", QoS::AtMostOnce, None, false), 1003);
    b.packet(2, publish("b/x", b"3", QoS::AtLeastOnce, Some(4), false), 1003);
    let out = sent(&mut b);
    let got: Vec<String> = publishes(&out, 2).iter().map(|p| p.topic.to_string()).collect();
    assert_eq!(got, vec!["a/x"]);
    assert!(out.iter().any(|(c, p)| *c == 2 && matches!(p, Packet::PubAck(r) if r.code == reason::NOT_AUTHORIZED)));
    // Unsubscribe: a/keep is denied (0x87, still subscribed), a/# goes.
    b.packet(
        2,
        Packet::Unsubscribe(crate::mqtt::Unsubscribe {
            packet_id: 5,
            filters: vec!["a/keep".into(), "a/#".into()],
            properties: Properties::default(),
        }),
        1004,
    );
    let out = sent(&mut b);
    let codes = out.iter().find_map(|(_, p)| if let Packet::UnsubAck(u) = p { Some(u.codes.clone()) } else { None });
    assert_eq!(codes, Some(vec![reason::NOT_AUTHORIZED, 0]));
    assert!(b.state().sessions()["bob1"].subs.contains_key("a/keep"));
    assert!(!b.state().sessions()["bob1"].subs.contains_key("a/#"));
}

#[test]
fn disabling_a_client_kicks_it_without_its_will_and_refuses_it() {
    let mut b = dynsec_broker(|_| {});
    admin(&mut b);
    request(&mut b, serde_json::json!([{"command": "createClient", "username": "bob", "password": "pw"}]), 1001);
    assert_eq!(login(&mut b, 2, "bob1", Some("bob"), b"pw", 1002).0.code, 0);
    let body = br#"{"commands":[{"command":"disableClient","username":"bob"}]}"#;
    b.packet(1, publish(REQUEST, body, QoS::AtMostOnce, None, false), 1003);
    let actions: Vec<Action> = b.take_actions().collect();
    assert!(actions.contains(&Action::Send(
        2,
        Packet::Disconnect(Disconnect { code: reason::ADMINISTRATIVE_ACTION, properties: Default::default() })
    )));
    assert!(actions.contains(&Action::Close(2)));
    assert!(!actions.contains(&Action::Close(1)), "the admin stays");
    assert_eq!(login(&mut b, 3, "bob1", Some("bob"), b"pw", 1004).0.code, reason::NOT_AUTHORIZED);
}

#[test]
fn the_data_survives_a_snapshot_and_version_1_snapshots_have_none() {
    let mut b = dynsec_broker(|_| {});
    admin(&mut b);
    request(&mut b, serde_json::json!([{"command": "createClient", "username": "bob"}]), 1001);
    let bytes = b.state().snapshot();
    let back = State::restore(&bytes).unwrap();
    assert_eq!(back.dynsec(), b.state().dynsec());
}

#[test]
fn without_the_plugin_requests_get_not_enabled() {
    let mut b = broker();
    connect(&mut b, 1, "ctrl", Version::V5, true, 1000);
    subscribe(&mut b, 1, RESPONSE, QoS::AtMostOnce, 1000);
    let body = br#"{"commands":[{"command":"createClient","username":"x"}]}"#;
    b.packet(1, publish(REQUEST, body, QoS::AtMostOnce, None, false), 1001);
    let got = publishes(&sent(&mut b), 1);
    let v: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(v["responses"][0]["error"], super::super::dynsec::NOT_ENABLED);
    assert!(b.state().dynsec().is_none());
}

/// The admin listener (`midge ctl`) with dynamic security: the user must
/// log in and be allowed to publish to the cluster admin topic.
#[test]
fn the_admin_listener_asks_the_acls() {
    let mut b = dynsec_broker(|_| {});
    let admin_connect = |b: &mut Broker, conn: ConnId| {
        b.open_admin(conn, "127.0.0.1:1".parse().unwrap(), 1000);
        b.packet(
            conn,
            Packet::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: "ctl".into(),
                clean_start: true,
                keep_alive: 60,
                username: Some("admin".into()),
                password: Some(b"secret".to_vec()),
                will: None,
                properties: Properties::default(),
            })),
            1000,
        );
        connack(&sent(b)[0].1).code
    };
    assert_eq!(admin_connect(&mut b, 7), reason::NOT_AUTHORIZED, "init's admin role covers dynamic security only");
    admin(&mut b);
    request(
        &mut b,
        serde_json::json!([{"command": "addRoleACL", "rolename": "admin", "acltype": "publishClientSend",
            "topic": "$CONTROL/midge/cluster/v1", "allow": true}]),
        1001,
    );
    assert_eq!(admin_connect(&mut b, 8), 0);
}

/// A change that reaches the log before the file's import (dynsec_sync: a
/// forwarded request can beat a new leader's import) is refused and leaves
/// no data behind, so the import still applies in full.
#[test]
fn a_change_before_the_import_is_refused_and_the_import_still_applies() {
    use crate::broker::command::{DynsecStep, DynsecTag};
    use crate::broker::state::ApplyLimits;
    use crate::dynsec::DynsecChange;
    let mut st = State::default();
    let lim = ApplyLimits {
        queued_messages_max: 10,
        queued_bytes_max: 1 << 20,
        retained_messages_max: 10,
        queue_qos0_messages: false,
        upgrade_outgoing_qos: false,
        bridges: Rc::from(vec![]),
    };
    let mut out = Vec::new();
    let tag = DynsecTag { node: 2, client: Rc::from("ctrl"), seq: 1 };
    let steps = vec![DynsecStep::Change(DynsecChange::DeleteClient { username: "admin".into() })];
    st.apply(&Entry { now_ms: 1, cmd: Command::Dynsec { tag, steps } }, &lim, None, &mut out);
    assert!(st.dynsec().is_none(), "no data made up");
    assert!(
        matches!(&out[..], [Effect::DynsecAnswered { results, .. }] if results == &vec![Err(crate::dynsec::CommandError::NOT_LOADED)]),
        "{out:?}"
    );
    let state = Box::new(import_json(INIT).unwrap().state);
    st.apply(&Entry { now_ms: 2, cmd: Command::DynsecImport { state } }, &lim, None, &mut out);
    assert!(st.dynsec().unwrap().clients.contains_key("admin"), "the import applied");
}
