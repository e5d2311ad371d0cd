//! `dynamic-security.json`, the file of `mosquitto_ctrl dynsec init` and of
//! the plugin: read it into a `DynsecState` (leniently, as the plugin does:
//! an entry it cannot use is skipped and reported), and write a state back
//! in the plugin's layout, key order and sort order. No file I/O here: text
//! in, text out.

use serde_json::Value;

use super::answer::{client_head, memberships_json, role_json};
use super::json_in::{get, get_str_if};
use super::json_out::Json;
use super::model::{insert_by_name, insert_by_priority, Client, DefaultAclType, DynsecState, Group, Membership, Role};
use super::password::PasswordHash;
use super::request::{acl_list, name_list};

/// Why a file cannot be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// Not JSON; serde_json's message (line and column).
    NotJson(String),
    /// The top level is not an object.
    NotAnObject,
    /// "clients", "groups" or "roles" is present but not an array.
    NotAnArray(&'static str),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::NotJson(e) => write!(f, "not valid JSON: {e}"),
            ImportError::NotAnObject => f.write_str("the top level is not a JSON object"),
            ImportError::NotAnArray(k) => write!(f, "\"{k}\" is not an array"),
        }
    }
}

/// A file read into a state, with the entries that were skipped (one line
/// each, for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub state: DynsecState,
    pub skipped: Vec<String>,
}

/// Reads the file's text. An empty file is an empty state (as the plugin
/// takes it).
pub fn import_json(text: &str) -> Result<Imported, ImportError> {
    let mut out = Imported { state: DynsecState::default(), skipped: Vec::new() };
    if text.trim().is_empty() {
        return Ok(out);
    }
    let tree: Value = serde_json::from_str(text).map_err(|e| ImportError::NotJson(e.to_string()))?;
    if !tree.is_object() {
        return Err(ImportError::NotAnObject);
    }
    let array = |key: &'static str| -> Result<&[Value], ImportError> {
        match get(&tree, key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(ImportError::NotAnArray(key)),
        }
    };
    let (roles, clients, groups) = (array("roles")?, array("clients")?, array("groups")?);
    let state = &mut out.state;
    let skipped = &mut out.skipped;

    if let Some(d) = get(&tree, "defaultACLAccess").filter(|d| d.is_object()) {
        for t in DefaultAclType::ALL {
            state.default_access.set(t, get(d, t.as_str()).and_then(Value::as_bool).unwrap_or(false));
        }
    }

    for (i, r) in roles.iter().enumerate().filter(|(_, r)| r.is_object()) {
        let Some(name) = get_str_if(r, "rolename") else {
            skipped.push(format!("roles[{i}]: no string \"rolename\""));
            continue;
        };
        if state.roles.contains_key(name) {
            skipped.push(format!("roles[{i}]: role \"{name}\" again"));
            continue;
        }
        let role = Role {
            textname: get_str_if(r, "textname").map(str::to_string),
            textdescription: get_str_if(r, "textdescription").map(str::to_string),
            acls: get(r, "acls").and_then(Value::as_array).map(|a| acl_list(a)).unwrap_or_default(),
        };
        state.roles.insert(name.to_string(), role);
    }

    for (i, c) in clients.iter().enumerate().filter(|(_, c)| c.is_object()) {
        let Some(username) = get_str_if(c, "username") else {
            skipped.push(format!("clients[{i}]: no string \"username\""));
            continue;
        };
        if state.clients.contains_key(username) {
            skipped.push(format!("clients[{i}]: client \"{username}\" again"));
            continue;
        }
        let salt = get_str_if(c, "salt");
        let hash = get_str_if(c, "password");
        let iterations = get(c, "iterations").and_then(Value::as_f64);
        let password = match (salt, hash, iterations) {
            (Some(s), Some(h), Some(n)) => match PasswordHash::from_base64(s, h, n as i64) {
                Some(p) => Some(p),
                None => {
                    skipped.push(format!("clients[{i}]: client \"{username}\": unusable salt, password or iterations"));
                    continue;
                }
            },
            _ => None,
        };
        let mut client = Client {
            clientid: get_str_if(c, "clientid").map(str::to_string),
            textname: get_str_if(c, "textname").map(str::to_string),
            textdescription: get_str_if(c, "textdescription").map(str::to_string),
            disabled: get(c, "disabled").and_then(Value::as_bool).unwrap_or(false),
            password,
            roles: Vec::new(),
            groups: Vec::new(),
        };
        for m in name_list(c, "roles", "rolename", false).unwrap_or_default().into_iter().flatten() {
            if state.roles.contains_key(&m.name) {
                insert_by_priority(&mut client.roles, m);
            } else {
                skipped.push(format!("clients[{i}]: client \"{username}\": no role \"{}\"", m.name));
            }
        }
        state.clients.insert(username.to_string(), client);
    }

    for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.is_object()) {
        let Some(groupname) = get_str_if(g, "groupname") else {
            skipped.push(format!("groups[{i}]: no string \"groupname\""));
            continue;
        };
        if state.groups.contains_key(groupname) {
            skipped.push(format!("groups[{i}]: group \"{groupname}\" again"));
            continue;
        }
        let mut group = Group {
            textname: get_str_if(g, "textname").map(str::to_string),
            textdescription: get_str_if(g, "textdescription").map(str::to_string),
            roles: Vec::new(),
            clients: Vec::new(),
        };
        for m in name_list(g, "roles", "rolename", false).unwrap_or_default().into_iter().flatten() {
            if state.roles.contains_key(&m.name) {
                insert_by_priority(&mut group.roles, m);
            } else {
                skipped.push(format!("groups[{i}]: group \"{groupname}\": no role \"{}\"", m.name));
            }
        }
        for m in name_list(g, "clients", "username", false).unwrap_or_default().into_iter().flatten() {
            let Some(client) = state.clients.get_mut(&m.name) else {
                skipped.push(format!("groups[{i}]: group \"{groupname}\": no client \"{}\"", m.name));
                continue;
            };
            let priority = m.priority;
            if insert_by_name(&mut group.clients, m) {
                insert_by_priority(&mut client.groups, Membership { name: groupname.to_string(), priority });
            }
        }
        state.groups.insert(groupname.to_string(), group);
    }

    if let Some(anon) = get_str_if(&tree, "anonymousGroup") {
        if state.groups.contains_key(anon) {
            state.anonymous_group = Some(anon.to_string());
        } else {
            skipped.push(format!("anonymousGroup: no group \"{anon}\""));
        }
    }
    out.state.reindex();
    Ok(out)
}

/// The state as the plugin writes its file: tab-indented, keys in the
/// plugin's order, clients, groups and roles by name, no final newline.
pub fn export_json(state: &DynsecState) -> String {
    let d = &state.default_access;
    let default_access = Json::Obj(DefaultAclType::ALL.iter().map(|t| (t.as_str(), Json::Bool(d.get(*t)))).collect());
    let clients = state
        .clients
        .iter()
        .map(|(username, c)| {
            let mut o = client_head(username, c);
            o.push("roles", memberships_json(&c.roles, "rolename"));
            if let Some(p) = &c.password {
                o.push("password", Json::Str(p.hash_base64()));
                o.push("salt", Json::Str(p.salt_base64()));
                o.push("iterations", Json::Int(p.iterations().into()));
            }
            o
        })
        .collect();
    let groups = state
        .groups
        .iter()
        .map(|(name, g)| {
            let mut o = Json::Obj(vec![("groupname", Json::str(name))]);
            o.push_opt("textname", g.textname.as_ref());
            o.push_opt("textdescription", g.textdescription.as_ref());
            o.push("roles", memberships_json(&g.roles, "rolename"));
            o.push("clients", memberships_json(&g.clients, "username"));
            o
        })
        .collect();
    let mut tree = Json::Obj(vec![
        ("defaultACLAccess", default_access),
        ("clients", Json::Arr(clients)),
        ("groups", Json::Arr(groups)),
    ]);
    if let Some(anon) = &state.anonymous_group {
        tree.push("anonymousGroup", Json::str(anon));
    }
    tree.push("roles", Json::Arr(state.roles.iter().map(|(n, r)| role_json(n, r)).collect()));
    tree.pretty()
}
