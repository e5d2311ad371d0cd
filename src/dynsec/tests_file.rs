//! The file format against files written by Mosquitto 2.0.11 itself
//! (tests/fixtures/dynsec/README.md), and the postcard form.

use super::*;

const INIT: &str = include_str!("../../tests/fixtures/dynsec/init.json");
const PLUGIN: &str = include_str!("../../tests/fixtures/dynsec/plugin.json");

pub(crate) fn plugin_state() -> DynsecState {
    let imported = import_json(PLUGIN).expect("plugin.json imports");
    assert_eq!(imported.skipped, Vec::<String>::new());
    imported.state
}

#[test]
fn imports_a_mosquitto_ctrl_init_file() {
    let Imported { state, skipped } = import_json(INIT).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(state.clients.len(), 1);
    let admin = &state.clients["admin"];
    // init writes "textName"; the plugin reads keys case-insensitively.
    assert_eq!(admin.textname.as_deref(), Some("Dynsec admin user"));
    assert_eq!(admin.roles, vec![Membership { name: "admin".into(), priority: -1 }]);
    assert!(!admin.disabled);
    assert_eq!(admin.password.as_ref().unwrap().iterations(), 101);
    assert!(state.authenticate(Some("admin"), Some(b"secret"), "any-id").is_ok());
    assert_eq!(state.authenticate(Some("admin"), Some(b"Secret"), "any-id"), Err(AuthError::BadPassword));
    let role = &state.roles["admin"];
    assert_eq!(role.acls.len(), 8);
    // Stored in the plugin's order: by type, then priority.
    let types: Vec<_> = role.acls.iter().map(|a| a.acl_type).collect();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(types, sorted);
    assert!(role.acls.iter().all(|a| a.allow && a.priority == 0));
    assert_eq!(
        state.default_access,
        DefaultAccess { publish_client_send: false, publish_client_receive: true, subscribe: false, unsubscribe: true }
    );
    assert!(state.groups.is_empty());
    assert_eq!(state.anonymous_group, None);
}

#[test]
fn init_file_round_trips_through_export() {
    let state = import_json(INIT).unwrap().state;
    let text = export_json(&state);
    assert_eq!(import_json(&text).unwrap().state, state);
    // What the plugin writes after its first change (same key order).
    assert!(text.starts_with("{\n\t\"defaultACLAccess\":\t{\n\t\t\"publishClientSend\":\tfalse,"));
}

#[test]
fn export_matches_the_plugins_own_file_byte_for_byte() {
    let state = plugin_state();
    assert_eq!(export_json(&state), PLUGIN);
    let bob = &state.clients["bob"];
    assert!(bob.disabled);
    assert_eq!(bob.clientid.as_deref(), Some("bobid"));
    assert_eq!(bob.groups, vec![Membership { name: "field".into(), priority: 7 }]);
    assert_eq!(state.groups["field"].clients, vec![Membership { name: "bob".into(), priority: 7 }]);
    assert_eq!(state.anonymous_group.as_deref(), Some("field"));
    assert!(state.clients["carol"].password.as_ref().unwrap().verify(b"x y"));
}

#[test]
fn postcard_round_trip_and_version() {
    let state = plugin_state();
    let bytes = state.encode();
    assert_eq!(DynsecState::decode(&bytes), Ok(state.clone()));
    let mut other = bytes.clone();
    other[0] = 9; // version varint
    assert_eq!(DynsecState::decode(&other), Err(DecodeError::Version(9)));
    assert!(matches!(DynsecState::decode(&bytes[..bytes.len() / 2]), Err(DecodeError::Postcard(_))));
    assert!(matches!(DynsecState::decode(&[]), Err(DecodeError::Postcard(_))));
    let change = DynsecChange::Import(Box::new(state));
    assert_eq!(DynsecChange::decode(&change.encode()), Ok(change));
    let change = DynsecChange::AddRoleAcl {
        rolename: "r".into(),
        acl: Acl { acl_type: AclType::SubscribePattern, topic: "a/#".into(), priority: -3, allow: true },
    };
    assert_eq!(DynsecChange::decode(&change.encode()), Ok(change));
}

#[test]
fn postcard_golden_bytes_of_format_version_1() {
    // A change's layout is what the raft log holds: it must not drift.
    let change = DynsecChange::SetClientId { username: "u".into(), clientid: Some("c".into()) };
    assert_eq!(change.encode(), [1, 3, 1, b'u', 1, 1, b'c']);
    assert_eq!(DynsecState::default().encode(), [1, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn lenient_import_skips_what_the_plugin_skips() {
    let text = r#"{
        "defaultACLAccess": {"publishClientSend": true, "subscribe": "yes"},
        "roles": [{"rolename": "r", "acls": [
            {"acltype": "publishClientSend", "topic": "a", "priority": 1, "allow": true},
            {"acltype": "publishClientSend", "topic": "a", "allow": false},
            {"acltype": "bogus", "topic": "b"},
            {"acltype": "subscribeLiteral"}]},
            {"rolename": "r"}, {"textname": "no name"}, 7],
        "clients": [
            {"username": "ok", "roles": [{"rolename": "r"}, {"rolename": "missing"}]},
            {"username": "badsalt", "salt": "AAAA", "password": "AAAA", "iterations": 101},
            {"username": "zero", "salt": "AAAAAAAAAAAAAAAA", "password": "AAAA", "iterations": 0},
            {"username": "ok"}],
        "groups": [{"groupname": "g", "clients": [{"username": "ok", "priority": 2}, {"username": "ghost"}]}],
        "anonymousGroup": "nope"
    }"#;
    let Imported { state, skipped } = import_json(text).unwrap();
    assert!(state.default_access.publish_client_send);
    assert!(!state.default_access.subscribe);
    assert_eq!(state.roles["r"].acls.len(), 1);
    assert!(state.roles["r"].acls[0].allow);
    assert_eq!(state.clients.keys().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(state.clients["ok"].roles.len(), 1);
    assert_eq!(state.clients["ok"].groups, vec![Membership { name: "g".into(), priority: 2 }]);
    assert_eq!(state.anonymous_group, None);
    assert_eq!(skipped.len(), 8, "{skipped:#?}");
}

#[test]
fn import_errors() {
    assert!(matches!(import_json("{"), Err(ImportError::NotJson(_))));
    assert_eq!(import_json("[]"), Err(ImportError::NotAnObject));
    assert_eq!(import_json(r#"{"clients": {}}"#), Err(ImportError::NotAnArray("clients")));
    assert_eq!(import_json("").unwrap().state, DynsecState::default());
    assert_eq!(import_json("{}").unwrap().state, DynsecState::default());
}
