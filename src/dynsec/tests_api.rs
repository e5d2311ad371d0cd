//! The `$CONTROL/dynamic-security/v1` API: every command's success and
//! errors, paging, answers compared with Mosquitto 2.0.11's own, and random
//! input that must not panic.

use serde_json::{json, Value};

use super::tests_file::plugin_state;
use super::*;

/// Sent to Mosquitto 2.0.11 with plugin.json loaded; its answer is
/// tests/fixtures/dynsec/responses.json.
const GOLDEN_REQUEST: &str = r#"{"commands":[{"command":"listClients","verbose":true,"count":2,"offset":1,"correlationData":"c1"},{"command":"getGroup","groupname":"field"},{"command":"listRoles","verbose":true},{"command":"getClient","username":"nobody","correlationData":"x"},{"command":"bogus"},{"nocommand":1},5,{"command":"getAnonymousGroup"},{"command":"getDefaultACLAccess"},{"command":"listGroups","count":0},{"command":"addClientRole","username":"bob","rolename":"sensors"}]}"#;
const GOLDEN_RESPONSE: &str = include_str!("../../tests/fixtures/dynsec/responses.json");

fn hash(p: &[u8]) -> PasswordHash {
    PasswordHash::new(p, [5; SALT_BYTES], 1)
}

fn run(state: &mut DynsecState, payload: &[u8]) -> (Value, Vec<Kick>) {
    let (out, kick) = run_request(state, payload, &DynsecLimits::default(), &mut hash);
    (serde_json::from_slice(&out).expect("answers are JSON"), kick)
}

/// One command; its answer object and the kicks.
fn one(state: &mut DynsecState, cmd: Value) -> (Value, Vec<Kick>) {
    let (v, kick) = run(state, json!({ "commands": [cmd] }).to_string().as_bytes());
    (v["responses"][0].clone(), kick)
}

/// The error of one command (None: it succeeded). A refused change must
/// leave the state as it was.
fn error(state: &mut DynsecState, cmd: Value) -> Option<String> {
    let before = state.clone();
    let (r, _) = one(state, cmd);
    let e = r.get("error").and_then(Value::as_str).map(str::to_string);
    if e.is_some() {
        assert_eq!(*state, before, "a refused command changed the state");
    }
    e
}

fn user(u: &str) -> Kick {
    Kick::Username(u.into())
}

#[test]
fn answers_match_mosquitto_byte_for_byte() {
    let mut state = plugin_state();
    let (out, kick) = run_request(&mut state, GOLDEN_REQUEST.as_bytes(), &DynsecLimits::default(), &mut hash);
    assert_eq!(String::from_utf8(out).unwrap(), GOLDEN_RESPONSE.trim_end());
    assert!(kick.is_empty());
}

#[test]
fn request_level_errors() {
    let mut s = DynsecState::default();
    let unknown = |e: &str| json!({"responses": [{"command": "Unknown command", "error": e}]});
    assert_eq!(run(&mut s, b"not json").0, unknown("Payload not valid JSON"));
    assert_eq!(run(&mut s, b"\xff\xfe").0, unknown("Payload not valid JSON"));
    assert_eq!(run(&mut s, br#"{"commands": {}}"#).0, unknown("Invalid/missing commands"));
    assert_eq!(run(&mut s, b"[]").0, unknown("Invalid/missing commands"));
    let limits = DynsecLimits { request_bytes_max: 10, ..DynsecLimits::default() };
    let (out, _) = run_request(&mut s, br#"{"commands":[]}"#, &limits, &mut hash);
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), unknown("Request too large"));
    let limits = DynsecLimits { commands_max: 1, ..DynsecLimits::default() };
    let two = br#"{"commands":[{"command":"listRoles"},{"command":"listRoles"}]}"#;
    let (out, _) = run_request(&mut s, two, &limits, &mut hash);
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), unknown("Too many commands in one request"));
    // An empty command list gets an empty answer list.
    assert_eq!(run(&mut s, br#"{"commands":[]}"#).0, json!({"responses": []}));
}

#[test]
fn bad_correlation_data_stops_the_request() {
    let mut s = DynsecState::default();
    let req = json!({"commands": [
        {"command": "listRoles", "correlationData": "a"},
        {"command": "listRoles", "correlationData": 5},
        {"command": "createRole", "rolename": "never"}]});
    let (v, _) = run(&mut s, req.to_string().as_bytes());
    assert_eq!(v["responses"].as_array().unwrap().len(), 2);
    assert_eq!(v["responses"][0]["correlationData"], "a");
    assert_eq!(v["responses"][1], json!({"command": "listRoles", "error": "Invalid correlationData data type."}));
    assert!(s.roles.is_empty());
}

#[test]
fn command_names_and_keys_are_case_insensitive() {
    let mut s = DynsecState::default();
    let (r, _) = one(&mut s, json!({"COMMAND": "CreateRole", "RoleName": "r", "correlationData": "c"}));
    assert_eq!(r, json!({"command": "createRole", "correlationData": "c"}));
    assert!(s.roles.contains_key("r"));
    let (r, _) = one(&mut s, json!({"command": "frobnicate", "correlationData": "c"}));
    assert_eq!(r, json!({"command": "frobnicate", "error": "Unknown command", "correlationData": "c"}));
}

#[test]
fn client_commands() {
    let mut s = plugin_state();
    // createClient
    for (cmd, e) in [
        (json!({"command": "createClient"}), "Invalid/missing username"),
        (json!({"command": "createClient", "username": 5}), "Invalid/missing username"),
        (json!({"command": "createClient", "username": "a\u{1}"}), "Username not valid UTF-8"),
        (json!({"command": "createClient", "username": "n", "password": 1}), "Invalid/missing password"),
        (json!({"command": "createClient", "username": "n", "clientid": []}), "Invalid/missing client id"),
        (json!({"command": "createClient", "username": "n", "clientid": "\u{7f}"}), "Client ID not valid UTF-8"),
        (json!({"command": "createClient", "username": "n", "textname": 1}), "Invalid/missing textname"),
        (json!({"command": "createClient", "username": "n", "textdescription": 1}), "Invalid/missing textdescription"),
        (json!({"command": "createClient", "username": "bob"}), "Client already exists"),
        (
            json!({"command": "createClient", "username": "n", "roles": {}}),
            "'roles' not an array or missing/invalid rolename",
        ),
        (json!({"command": "createClient", "username": "n", "roles": [{"rolename": "x"}, 1]}), "Role not found"),
        (
            json!({"command": "createClient", "username": "n", "roles": [{"priority": 1}]}),
            "'roles' not an array or missing/invalid rolename",
        ),
        (json!({"command": "createClient", "username": "n", "groups": [{"groupname": "nope"}]}), "Group not found"),
        (
            json!({"command": "createClient", "username": "n", "groups": [{"groupname": "field"}, {"groupname": "field"}]}),
            "Internal error",
        ),
    ] {
        assert_eq!(error(&mut s, cmd.clone()).as_deref(), Some(e), "{cmd}");
    }
    let long = "x".repeat(65_536);
    assert_eq!(
        error(&mut s, json!({"command": "createClient", "username": long})).as_deref(),
        Some("Invalid/missing username")
    );
    let create = json!({"command": "createClient", "username": "dave", "password": "pw", "clientid": "d1",
        "textname": "Dave", "roles": [{"rolename": "sensors", "priority": 3}, {"rolename": "admin"}],
        "groups": [{"groupname": "field", "priority": 4}, "skipped", {"nogroupname": 1}]});
    let (r, kick) = one(&mut s, create);
    assert_eq!(r, json!({"command": "createClient"}));
    assert!(kick.is_empty());
    let (r, _) = one(&mut s, json!({"command": "getClient", "username": "dave"}));
    assert_eq!(
        r["data"]["client"],
        json!({"username": "dave", "clientid": "d1", "textname": "Dave",
            "roles": [{"rolename": "sensors", "priority": 3}, {"rolename": "admin"}],
            "groups": [{"groupname": "field", "priority": 4}]})
    );
    assert!(s.authenticate(Some("dave"), Some(b"pw"), "d1").is_ok());
    // An empty client id is no binding; no password is no password.
    assert_eq!(error(&mut s, json!({"command": "createClient", "username": "eve", "clientid": ""})), None);
    assert_eq!(s.clients["eve"].clientid, None);
    assert_eq!(s.authenticate(Some("eve"), Some(b""), "x"), Err(AuthError::NoPassword));

    // setClientPassword
    for (cmd, e) in [
        (json!({"command": "setClientPassword", "username": "dave"}), "Invalid/missing password"),
        (json!({"command": "setClientPassword", "username": "dave", "password": ""}), "Empty password is not allowed"),
        (json!({"command": "setClientPassword", "password": "x"}), "Invalid/missing username"),
        (json!({"command": "setClientPassword", "username": "nope", "password": "x"}), "Client not found"),
    ] {
        assert_eq!(error(&mut s, cmd.clone()).as_deref(), Some(e), "{cmd}");
    }
    let (_, kick) = one(&mut s, json!({"command": "setClientPassword", "username": "dave", "password": "new"}));
    assert_eq!(kick, [user("dave")]);
    assert!(s.authenticate(Some("dave"), Some(b"new"), "d1").is_ok());

    // setClientId
    assert_eq!(
        error(&mut s, json!({"command": "setClientId", "username": "dave", "clientid": 1})).as_deref(),
        Some("Invalid/missing client ID")
    );
    assert_eq!(
        error(&mut s, json!({"command": "setClientId", "username": "nope"})).as_deref(),
        Some("Client not found")
    );
    let (_, kick) = one(&mut s, json!({"command": "setClientId", "username": "dave"}));
    assert_eq!(kick, [user("dave")]);
    assert_eq!(s.clients["dave"].clientid, None);

    // enable / disable
    assert_eq!(
        error(&mut s, json!({"command": "disableClient", "username": "nope"})).as_deref(),
        Some("Client not found")
    );
    assert_eq!(error(&mut s, json!({"command": "enableClient"})).as_deref(), Some("Invalid/missing username"));
    let (_, kick) = one(&mut s, json!({"command": "disableClient", "username": "dave"}));
    assert_eq!(kick, [user("dave")]);
    assert_eq!(s.authenticate(Some("dave"), Some(b"new"), "x"), Err(AuthError::Disabled));
    let (_, kick) = one(&mut s, json!({"command": "enableClient", "username": "dave"}));
    assert!(kick.is_empty());
    assert!(s.authenticate(Some("dave"), Some(b"new"), "x").is_ok());

    // addClientRole / removeClientRole
    for (cmd, e) in [
        (json!({"command": "addClientRole", "username": "dave"}), "Invalid/missing rolename"),
        (json!({"command": "addClientRole", "username": "dave", "rolename": "\u{fdd0}"}), "Role name not valid UTF-8"),
        (json!({"command": "addClientRole", "username": "nope", "rolename": "admin"}), "Client not found"),
        (json!({"command": "addClientRole", "username": "eve", "rolename": "nope"}), "Role not found"),
        (json!({"command": "addClientRole", "username": "dave", "rolename": "admin"}), "Internal error"),
        (json!({"command": "removeClientRole", "username": "nope", "rolename": "admin"}), "Client not found"),
        (json!({"command": "removeClientRole", "username": "dave", "rolename": "nope"}), "Role not found"),
    ] {
        assert_eq!(error(&mut s, cmd.clone()).as_deref(), Some(e), "{cmd}");
    }
    let (_, kick) =
        one(&mut s, json!({"command": "addClientRole", "username": "eve", "rolename": "admin", "priority": 2}));
    assert_eq!(kick, [user("eve")]);
    assert_eq!(s.clients["eve"].roles, [Membership { name: "admin".into(), priority: 2 }]);
    let (_, kick) = one(&mut s, json!({"command": "removeClientRole", "username": "eve", "rolename": "admin"}));
    assert_eq!(kick, [user("eve")]);
    assert!(s.clients["eve"].roles.is_empty());
    // Removing a role the client does not have still succeeds.
    assert_eq!(error(&mut s, json!({"command": "removeClientRole", "username": "eve", "rolename": "admin"})), None);

    // deleteClient
    assert_eq!(
        error(&mut s, json!({"command": "deleteClient", "username": "nope"})).as_deref(),
        Some("Client not found")
    );
    let (_, kick) = one(&mut s, json!({"command": "deleteClient", "username": "dave"}));
    assert_eq!(kick, [user("dave")]);
    assert!(!s.clients.contains_key("dave"));
    assert!(s.groups["field"].clients.iter().all(|c| c.name != "dave"));
}

#[test]
fn modify_client_is_all_or_nothing() {
    let mut s = plugin_state();
    for (cmd, e) in [
        (json!({"command": "modifyClient", "username": "nope"}), "Client not found"),
        (
            json!({"command": "modifyClient", "username": "bob", "textname": "T", "roles": [{"rolename": "x"}]}),
            "Role not found",
        ),
        (
            json!({"command": "modifyClient", "username": "bob", "roles": "admin"}),
            "'roles' not an array or missing/invalid rolename",
        ),
        (
            json!({"command": "modifyClient", "username": "bob", "groups": [{"groupname": 1}]}),
            "'groups' contains an object with an invalid 'groupname'",
        ),
        (
            json!({"command": "modifyClient", "username": "bob", "groups": [{"groupname": "x"}]}),
            "'groups' contains an object with a 'groupname' that does not exist",
        ),
    ] {
        assert_eq!(error(&mut s, cmd.clone()).as_deref(), Some(e), "{cmd}");
    }
    let cmd = json!({"command": "modifyClient", "username": "bob", "clientid": "", "password": "pw2",
        "textname": "Bob", "textdescription": 5, "roles": [{"rolename": "admin", "priority": 1}], "groups": []});
    let (r, kick) = one(&mut s, cmd);
    assert_eq!(r, json!({"command": "modifyClient"}));
    assert_eq!(kick, [user("bob")]);
    let bob = &s.clients["bob"];
    assert_eq!(bob.clientid, None);
    assert_eq!(bob.textname.as_deref(), Some("Bob"));
    assert_eq!(bob.textdescription, None);
    assert_eq!(bob.roles, [Membership { name: "admin".into(), priority: 1 }]);
    assert!(bob.groups.is_empty());
    assert!(s.groups["field"].clients.is_empty());
    assert!(bob.password.as_ref().unwrap().verify(b"pw2"));
    // An empty password leaves the old one.
    one(&mut s, json!({"command": "modifyClient", "username": "bob", "password": ""}));
    assert!(s.clients["bob"].password.as_ref().unwrap().verify(b"pw2"));
}

#[test]
fn group_commands() {
    let mut s = plugin_state();
    for (cmd, e) in [
        (json!({"command": "createGroup"}), "Invalid/missing groupname"),
        (json!({"command": "createGroup", "groupname": "\u{0}"}), "Group name not valid UTF-8"),
        (json!({"command": "createGroup", "groupname": "g", "textname": false}), "Invalid/missing textname"),
        (json!({"command": "createGroup", "groupname": "field"}), "Group already exists"),
        (json!({"command": "createGroup", "groupname": "g", "roles": [{"rolename": "x"}]}), "Role not found"),
        (json!({"command": "createGroup", "groupname": "g", "roles": 1}), "Internal error"),
        (json!({"command": "deleteGroup", "groupname": "nope"}), "Group not found"),
        (json!({"command": "deleteGroup", "groupname": "field"}), "Deleting the anonymous group is forbidden"),
        (json!({"command": "getGroup", "groupname": "nope"}), "Group not found"),
        (json!({"command": "modifyGroup", "groupname": "nope"}), "Group not found"),
        (
            json!({"command": "modifyGroup", "groupname": "field", "clients": [{"username": 1}]}),
            "'clients' contains an object with an invalid 'username'",
        ),
        (
            json!({"command": "modifyGroup", "groupname": "field", "clients": [{"username": "x"}]}),
            "'clients' contains an object with a 'username' that does not exist",
        ),
        (json!({"command": "modifyGroup", "groupname": "field", "roles": [{"rolename": "x"}]}), "Role not found"),
        (json!({"command": "addGroupClient", "username": "nope", "groupname": "field"}), "Client not found"),
        (json!({"command": "addGroupClient", "username": "bob", "groupname": "nope"}), "Group not found"),
        (
            json!({"command": "addGroupClient", "username": "bob", "groupname": "field"}),
            "Client is already in this group",
        ),
        (json!({"command": "addGroupClient", "groupname": "field"}), "Invalid/missing username"),
        (json!({"command": "removeGroupClient", "username": "nope", "groupname": "field"}), "Client not found"),
        (json!({"command": "removeGroupClient", "username": "bob", "groupname": "nope"}), "Group not found"),
        (json!({"command": "addGroupRole", "groupname": "nope", "rolename": "admin"}), "Group not found"),
        (json!({"command": "addGroupRole", "groupname": "field", "rolename": "nope"}), "Role not found"),
        (
            json!({"command": "addGroupRole", "groupname": "field", "rolename": "sensors"}),
            "Group is already in this role",
        ),
        (json!({"command": "removeGroupRole", "groupname": "field", "rolename": "nope"}), "Role not found"),
        (json!({"command": "setAnonymousGroup", "groupname": "nope"}), "Group not found"),
        (json!({"command": "setAnonymousGroup"}), "Invalid/missing groupname"),
    ] {
        assert_eq!(error(&mut s, cmd.clone()).as_deref(), Some(e), "{cmd}");
    }
    let (r, kick) = one(
        &mut s,
        json!({"command": "createGroup", "groupname": "ops", "textname": "Ops", "roles": [{"rolename": "admin"}]}),
    );
    assert_eq!((r, kick), (json!({"command": "createGroup"}), vec![]));
    let (_, kick) =
        one(&mut s, json!({"command": "addGroupClient", "username": "carol", "groupname": "ops", "priority": 9}));
    assert_eq!(kick, [user("carol")]);
    let (r, _) = one(&mut s, json!({"command": "getGroup", "groupname": "ops"}));
    assert_eq!(
        r["data"]["group"],
        json!({"groupname": "ops", "textname": "Ops", "clients": [{"username": "carol"}], "roles": [{"rolename": "admin"}]})
    );
    let (_, kick) =
        one(&mut s, json!({"command": "addGroupRole", "groupname": "ops", "rolename": "sensors", "priority": 5}));
    assert_eq!(kick, [user("carol")]);
    assert_eq!(s.groups["ops"].roles[0].name, "sensors");
    let (_, kick) = one(&mut s, json!({"command": "removeGroupRole", "groupname": "field", "rolename": "sensors"}));
    assert_eq!(kick, [user("bob"), Kick::Anonymous]);
    let (_, kick) = one(
        &mut s,
        json!({"command": "modifyGroup", "groupname": "ops", "textdescription": "d", "clients": [{"username": "bob", "priority": 1}]}),
    );
    assert_eq!(kick, [user("bob"), user("carol")]);
    assert_eq!(s.clients["bob"].groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["field", "ops"]);
    assert!(s.clients["carol"].groups.is_empty());
    let (_, kick) = one(&mut s, json!({"command": "removeGroupClient", "username": "bob", "groupname": "ops"}));
    assert_eq!(kick, [user("bob")]);
    let (_, kick) = one(&mut s, json!({"command": "setAnonymousGroup", "groupname": "ops"}));
    assert_eq!(kick, [Kick::Anonymous]);
    let (r, _) = one(&mut s, json!({"command": "getAnonymousGroup"}));
    assert_eq!(r["data"], json!({"group": {"groupname": "ops"}}));
    let (_, kick) = one(&mut s, json!({"command": "deleteGroup", "groupname": "field"}));
    assert_eq!(kick, [user("bob")]);
    assert!(s.clients["bob"].groups.is_empty());
}

#[test]
fn role_commands() {
    let mut s = plugin_state();
    for (cmd, e) in [
        (json!({"command": "createRole"}), "Invalid/missing rolename"),
        (json!({"command": "createRole", "rolename": "admin"}), "Role already exists"),
        (json!({"command": "createRole", "rolename": "r", "textdescription": 1}), "Invalid/missing textdescription"),
        (json!({"command": "getRole", "rolename": "nope"}), "Role not found"),
        (json!({"command": "deleteRole", "rolename": "nope"}), "Role not found"),
        (json!({"command": "modifyRole", "rolename": "nope"}), "Role does not exist"),
        (json!({"command": "addRoleACL", "rolename": "nope", "acltype": 1}), "Role not found"),
        (json!({"command": "addRoleACL", "rolename": "sensors"}), "Invalid/missing acltype"),
        (
            json!({"command": "addRoleACL", "rolename": "sensors", "acltype": "subscribe", "topic": "a"}),
            "Unknown acltype",
        ),
        (
            json!({"command": "addRoleACL", "rolename": "sensors", "acltype": "subscribeLiteral"}),
            "Invalid/missing topic",
        ),
        (
            json!({"command": "addRoleACL", "rolename": "sensors", "acltype": "subscribeLiteral", "topic": "a\u{9f}"}),
            "Topic not valid UTF-8",
        ),
        (
            json!({"command": "addRoleACL", "rolename": "sensors", "acltype": "subscribeLiteral", "topic": "a/#/b"}),
            "Invalid ACL topic",
        ),
        (
            json!({"command": "addRoleACL", "rolename": "sensors", "acltype": "subscribeLiteral", "topic": "cmd/#"}),
            "ACL with this topic already exists",
        ),
        (json!({"command": "removeRoleACL", "rolename": "nope", "acltype": "x"}), "Role not found"),
        (json!({"command": "removeRoleACL", "rolename": "sensors", "acltype": "x"}), "Unknown acltype"),
        (
            json!({"command": "removeRoleACL", "rolename": "sensors", "acltype": "subscribeLiteral", "topic": 1}),
            "Invalid/missing topic",
        ),
        (
            json!({"command": "removeRoleACL", "rolename": "sensors", "acltype": "subscribePattern", "topic": "cmd/#"}),
            "ACL not found",
        ),
        (json!({"command": "setDefaultACLAccess", "acls": {}}), "Missing/invalid actions array"),
    ] {
        assert_eq!(error(&mut s, cmd.clone()).as_deref(), Some(e), "{cmd}");
    }
    let create = json!({"command": "createRole", "rolename": "r", "textname": "R", "acls": [
        {"acltype": "publishClientReceive", "topic": "x/#", "allow": true},
        {"acltype": "PUBLISHCLIENTSEND", "topic": "y", "priority": 2}]});
    assert_eq!(one(&mut s, create), (json!({"command": "createRole"}), vec![]));
    let (r, _) = one(&mut s, json!({"command": "getRole", "rolename": "r"}));
    assert_eq!(
        r["data"]["role"],
        json!({"rolename": "r", "textname": "R", "acls": [
            {"acltype": "publishClientSend", "topic": "y", "priority": 2, "allow": false},
            {"acltype": "publishClientReceive", "topic": "x/#", "priority": 0, "allow": true}]})
    );
    one(&mut s, json!({"command": "addClientRole", "username": "carol", "rolename": "r"}));
    one(&mut s, json!({"command": "addGroupRole", "groupname": "field", "rolename": "r"}));
    let add = json!({"command": "addRoleACL", "rolename": "r", "acltype": "subscribePattern", "topic": "z/+", "priority": 1, "allow": true});
    let (r, kick) = one(&mut s, add);
    assert_eq!(r, json!({"command": "addRoleACL"}));
    assert_eq!(kick, [user("bob"), user("carol"), Kick::Anonymous]);
    let (_, kick) = one(
        &mut s,
        json!({"command": "removeRoleACL", "rolename": "r", "acltype": "subscribePattern", "topic": "z/+"}),
    );
    assert_eq!(kick, [user("bob"), user("carol"), Kick::Anonymous]);
    let (_, kick) = one(&mut s, json!({"command": "modifyRole", "rolename": "r", "textname": "R2", "acls": []}));
    assert!(kick.is_empty());
    assert!(s.roles["r"].acls.is_empty());
    assert_eq!(s.roles["r"].textname.as_deref(), Some("R2"));
    let (_, kick) = one(&mut s, json!({"command": "deleteRole", "rolename": "r"}));
    assert_eq!(kick, [user("bob"), user("carol"), Kick::Anonymous]);
    assert!(s.clients["carol"].roles.is_empty());
    assert!(s.groups["field"].roles.iter().all(|r| r.name != "r"));

    let set = json!({"command": "setDefaultACLAccess", "acls": [
        {"acltype": "publishClientSend", "allow": true}, {"acltype": "subscribe", "allow": "yes"},
        {"acltype": "unknown", "allow": true}, {"acltype": "UNSUBSCRIBE", "allow": false}]});
    assert_eq!(one(&mut s, set), (json!({"command": "setDefaultACLAccess"}), vec![]));
    let (r, _) = one(&mut s, json!({"command": "getDefaultACLAccess"}));
    assert_eq!(
        r["data"]["acls"],
        json!([{"acltype": "publishClientSend", "allow": true}, {"acltype": "publishClientReceive", "allow": true},
            {"acltype": "subscribe", "allow": false}, {"acltype": "unsubscribe", "allow": false}])
    );
}

#[test]
fn list_paging_like_the_plugin() {
    let mut s = DynsecState::default();
    for name in ["a", "b", "c", "d"] {
        one(&mut s, json!({"command": "createRole", "rolename": name}));
    }
    let names = |s: &mut DynsecState, count: Value, offset: Value| {
        let (r, _) = one(s, json!({"command": "listRoles", "count": count, "offset": offset}));
        assert_eq!(r["data"]["totalCount"], 4);
        r["data"]["roles"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(&mut s, json!(-1), json!(0)), ["a", "b", "c", "d"]);
    assert_eq!(names(&mut s, json!(2), json!(1)), ["b", "c"]);
    assert_eq!(names(&mut s, json!(0), json!(0)), ["a"], "count 0 still gives one, as the plugin's loop does");
    assert_eq!(names(&mut s, json!(10), json!(3)), ["d"]);
    assert_eq!(names(&mut s, json!(1), json!(4)), Vec::<String>::new());
    assert_eq!(names(&mut s, json!(-7), json!(-2)), ["a", "b", "c", "d"]);
    assert_eq!(names(&mut s, json!("2"), json!(null)), ["a", "b", "c", "d"], "wrong types: defaults");
    assert_eq!(names(&mut s, json!(1.9), json!(2.5)), ["c"]);
    let (r, _) = one(&mut s, json!({"command": "listRoles", "verbose": true, "count": 1}));
    assert_eq!(r["data"]["roles"], json!([{"rolename": "a", "acls": []}]));
    let (r, _) = one(&mut s, json!({"command": "listClients"}));
    assert_eq!(r["data"], json!({"totalCount": 0, "clients": []}));
    let (r, _) = one(&mut s, json!({"command": "listGroups", "verbose": true}));
    assert_eq!(r["data"], json!({"totalCount": 0, "groups": []}));
}

/// A tiny deterministic generator (no dependency, no clock).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn value(&mut self, depth: u32) -> Value {
        const NAMES: &[&str] = &["bob", "carol", "field", "sensors", "admin", "x", "", "a/#", "+", "#", "\u{1}"];
        const KEYS: &[&str] = &[
            "username",
            "groupname",
            "rolename",
            "password",
            "clientid",
            "textname",
            "roles",
            "groups",
            "clients",
            "acls",
            "acltype",
            "topic",
            "priority",
            "allow",
            "verbose",
            "count",
            "offset",
            "correlationData",
        ];
        const COMMANDS: &[&str] = &[
            "createClient",
            "deleteClient",
            "setClientPassword",
            "setClientId",
            "modifyClient",
            "enableClient",
            "disableClient",
            "getClient",
            "listClients",
            "addClientRole",
            "removeClientRole",
            "createGroup",
            "deleteGroup",
            "modifyGroup",
            "getGroup",
            "listGroups",
            "addGroupClient",
            "removeGroupClient",
            "addGroupRole",
            "removeGroupRole",
            "setAnonymousGroup",
            "getAnonymousGroup",
            "createRole",
            "deleteRole",
            "modifyRole",
            "getRole",
            "listRoles",
            "addRoleACL",
            "removeRoleACL",
            "setDefaultACLAccess",
            "getDefaultACLAccess",
            "publishClientSend",
            "subscribePattern",
            "subscribe",
        ];
        match self.next() % if depth > 3 { 5 } else { 8 } {
            0 => Value::Null,
            1 => json!(self.next().is_multiple_of(2)),
            2 => json!((self.next() as i64) - (1 << 30)),
            3 => json!(self.pick(NAMES)),
            4 => json!(self.pick(COMMANDS)),
            5 | 6 => {
                let mut m = serde_json::Map::new();
                if !self.next().is_multiple_of(3) {
                    m.insert("command".into(), json!(self.pick(COMMANDS)));
                }
                for _ in 0..self.next() % 6 {
                    m.insert(self.pick(KEYS).into(), self.value(depth + 1));
                }
                Value::Object(m)
            }
            _ => Value::Array((0..self.next() % 4).map(|_| self.value(depth + 1)).collect()),
        }
    }
}

#[test]
fn random_requests_never_panic_and_keep_the_state_consistent() {
    let mut rng = Lcg(0x5eed);
    let mut s = plugin_state();
    for i in 0..4000 {
        let payload = if i % 10 == 0 {
            // Raw bytes, sometimes a mangled real request.
            let mut b = GOLDEN_REQUEST.as_bytes().to_vec();
            for _ in 0..rng.next() % 4 {
                let at = (rng.next() as usize) % b.len();
                b[at] = rng.next() as u8;
            }
            b
        } else {
            let cmds: Vec<Value> = (0..1 + rng.next() % 4).map(|_| rng.value(0)).collect();
            json!({ "commands": cmds }).to_string().into_bytes()
        };
        let (out, _) = run_request(&mut s, &payload, &DynsecLimits::default(), &mut hash);
        let v: Value = serde_json::from_slice(&out).expect("answer is JSON");
        assert!(v["responses"].is_array());
        assert_consistent(&s);
        let _ = s.check(&ClientRef::user("bob"), "a/b", Access::Subscribe);
    }
    // Whatever the changes did, the file and postcard forms still round-trip.
    assert_eq!(import_json(&export_json(&s)).unwrap().state, s);
    assert_eq!(DynsecState::decode(&s.encode()), Ok(s));
}

/// Memberships point at things that exist, both sides agree, and the
/// anonymous group exists.
fn assert_consistent(s: &DynsecState) {
    for (u, c) in &s.clients {
        for r in &c.roles {
            assert!(s.roles.contains_key(&r.name), "{u} has missing role {}", r.name);
        }
        for g in &c.groups {
            let group = &s.groups[&g.name];
            assert!(group.clients.iter().any(|m| &m.name == u && m.priority == g.priority));
        }
    }
    for (n, g) in &s.groups {
        for r in &g.roles {
            assert!(s.roles.contains_key(&r.name), "{n} has missing role {}", r.name);
        }
        for m in &g.clients {
            assert!(s.clients[&m.name].groups.iter().any(|x| &x.name == n));
        }
    }
    if let Some(a) = &s.anonymous_group {
        assert!(s.groups.contains_key(a));
    }
}
