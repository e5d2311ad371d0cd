//! Answers in the plugin's JSON shape: reads answered from the state, and
//! the `{"responses":[...]}` payload published on
//! `$CONTROL/dynamic-security/v1/response`.

use super::command::{CommandError, DynsecRead, ListParams};
use super::json_out::Json;
use super::model::{Client, DefaultAclType, DynsecState, Group, Membership, Role, MEMBERSHIP_PRIORITY_DEFAULT};

/// The answer topic.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// Answers a read: the "data" object, or the plugin's error.
pub fn answer_read(state: &DynsecState, read: &DynsecRead) -> Result<Json, CommandError> {
    match read {
        DynsecRead::GetClient { username } => {
            let c = state.clients.get(username).ok_or(CommandError::CLIENT_NOT_FOUND)?;
            Ok(Json::Obj(vec![("client", client_json(username, c))]))
        }
        DynsecRead::ListClients(p) => {
            let list =
                page(state.clients.iter(), *p, |(u, c)| if p.verbose { client_json(u, c) } else { Json::str(u) });
            Ok(Json::Obj(vec![("totalCount", count(state.clients.len())), ("clients", Json::Arr(list))]))
        }
        DynsecRead::GetGroup { groupname } => {
            let g = state.groups.get(groupname).ok_or(CommandError::GROUP_NOT_FOUND)?;
            Ok(Json::Obj(vec![("group", group_json(groupname, g))]))
        }
        DynsecRead::ListGroups(p) => {
            let list = page(state.groups.iter(), *p, |(n, g)| if p.verbose { group_json(n, g) } else { Json::str(n) });
            Ok(Json::Obj(vec![("totalCount", count(state.groups.len())), ("groups", Json::Arr(list))]))
        }
        DynsecRead::GetRole { rolename } => {
            let r = state.roles.get(rolename).ok_or(CommandError::ROLE_NOT_FOUND)?;
            Ok(Json::Obj(vec![("role", role_json(rolename, r))]))
        }
        DynsecRead::ListRoles(p) => {
            let list = page(state.roles.iter(), *p, |(n, r)| if p.verbose { role_json(n, r) } else { Json::str(n) });
            Ok(Json::Obj(vec![("totalCount", count(state.roles.len())), ("roles", Json::Arr(list))]))
        }
        DynsecRead::GetAnonymousGroup => {
            let name = state.anonymous_group.clone().unwrap_or_default();
            Ok(Json::Obj(vec![("group", Json::Obj(vec![("groupname", Json::Str(name))]))]))
        }
        DynsecRead::GetDefaultAclAccess => {
            let acls = DefaultAclType::ALL
                .iter()
                .map(|t| {
                    Json::Obj(vec![
                        ("acltype", Json::str(t.as_str())),
                        ("allow", Json::Bool(state.default_access.get(*t))),
                    ])
                })
                .collect();
            Ok(Json::Obj(vec![("acls", Json::Arr(acls))]))
        }
        DynsecRead::RoleThenRefuse { rolename, error } => {
            if state.roles.contains_key(rolename) {
                Err(*error)
            } else {
                Err(CommandError::ROLE_NOT_FOUND)
            }
        }
    }
}

fn count(n: usize) -> Json {
    Json::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The plugin's paging: skip `offset`, then take `count` (negative: all;
/// 0 takes one, as the plugin's loop does).
fn page<T>(items: impl Iterator<Item = T>, p: ListParams, f: impl Fn(T) -> Json) -> Vec<Json> {
    let mut out = Vec::new();
    let mut count = i64::from(p.count);
    for (i, item) in items.enumerate() {
        if i64::try_from(i).unwrap_or(i64::MAX) < i64::from(p.offset) {
            continue;
        }
        out.push(f(item));
        if count >= 0 {
            count -= 1;
            if count <= 0 {
                break;
            }
        }
    }
    out
}

/// `[{"rolename": .., "priority": ..}]`, priority left out when it is the
/// default; `key` names the entries' name field.
pub(crate) fn memberships_json(list: &[Membership], key: &'static str) -> Json {
    Json::Arr(
        list.iter()
            .map(|m| {
                let mut o = Json::Obj(vec![(key, Json::str(&m.name))]);
                if m.priority != MEMBERSHIP_PRIORITY_DEFAULT {
                    o.push("priority", Json::Int(m.priority.into()));
                }
                o
            })
            .collect(),
    )
}

/// The verbose client object of getClient and listClients.
fn client_json(username: &str, c: &Client) -> Json {
    let mut o = client_head(username, c);
    o.push("roles", memberships_json(&c.roles, "rolename"));
    o.push("groups", memberships_json(&c.groups, "groupname"));
    o
}

/// username, clientid, textname, textdescription, disabled: the fields the
/// answers and the file share, in the plugin's order.
pub(crate) fn client_head(username: &str, c: &Client) -> Json {
    let mut o = Json::Obj(vec![("username", Json::str(username))]);
    o.push_opt("clientid", c.clientid.as_ref());
    o.push_opt("textname", c.textname.as_ref());
    o.push_opt("textdescription", c.textdescription.as_ref());
    if c.disabled {
        o.push("disabled", Json::Bool(true));
    }
    o
}

/// The group object of getGroup and listGroups (clients without priority).
fn group_json(name: &str, g: &Group) -> Json {
    let mut o = Json::Obj(vec![("groupname", Json::str(name))]);
    o.push_opt("textname", g.textname.as_ref());
    o.push_opt("textdescription", g.textdescription.as_ref());
    let clients = g.clients.iter().map(|c| Json::Obj(vec![("username", Json::str(&c.name))])).collect();
    o.push("clients", Json::Arr(clients));
    o.push("roles", memberships_json(&g.roles, "rolename"));
    o
}

/// The role object of getRole, listRoles and the file.
pub(crate) fn role_json(name: &str, r: &Role) -> Json {
    let mut o = Json::Obj(vec![("rolename", Json::str(name))]);
    o.push_opt("textname", r.textname.as_ref());
    o.push_opt("textdescription", r.textdescription.as_ref());
    let acls = r
        .acls
        .iter()
        .map(|a| {
            Json::Obj(vec![
                ("acltype", Json::str(a.acl_type.as_str())),
                ("topic", Json::str(&a.topic)),
                ("priority", Json::Int(a.priority.into())),
                ("allow", Json::Bool(a.allow)),
            ])
        })
        .collect();
    o.push("acls", Json::Arr(acls));
    o
}

/// The answers to one request, in request order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Responses {
    items: Vec<Json>,
}

impl Responses {
    pub fn new() -> Responses {
        Responses::default()
    }

    /// Adds one answer: Ok(Some(data)) for a read, Ok(None) for a change
    /// that was made, Err for a refused command.
    pub fn push(&mut self, command: &str, result: Result<Option<Json>, CommandError>, correlation_data: Option<&str>) {
        let mut o = Json::Obj(vec![("command", Json::str(command))]);
        match result {
            Ok(Some(data)) => o.push("data", data),
            Ok(None) => {}
            Err(e) => o.push("error", Json::str(e.as_str())),
        }
        if let Some(c) = correlation_data {
            o.push("correlationData", Json::str(c));
        }
        self.items.push(o);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The payload to publish: `{"responses":[...]}`.
    pub fn to_payload(&self) -> Vec<u8> {
        Json::Obj(vec![("responses", Json::Arr(self.items.clone()))]).compact().into_bytes()
    }
}
