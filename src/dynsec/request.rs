//! Decoding a `$CONTROL/dynamic-security/v1` payload into typed commands,
//! checking each command's own fields in the plugin's order and with its
//! error texts. What depends on the state (does the client exist?) is left
//! to `apply` and the reads. Never panics, whatever the bytes; the payload
//! size and the number of commands are bounded first.

use serde_json::Value;

use super::command::{CommandError, DynsecChange, DynsecRead, ListParams, NameList};
use super::json_in::{get, get_bool_or, get_int_or, get_str, get_str_if, valid_utf8};
use super::model::{Acl, AclType, DefaultAclType, Membership, Role, ACL_PRIORITY_DEFAULT, MEMBERSHIP_PRIORITY_DEFAULT};
use super::password::PasswordHash;
use crate::mqtt::topic;

/// Bounds on one request. The plugin has none below MQTT's payload limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynsecLimits {
    /// Larger payloads get one "Request too large" answer.
    pub request_bytes_max: u32,
    /// Requests with more commands get one "Too many commands in one
    /// request" answer.
    pub commands_max: u32,
    /// Usernames, client ids, group and role names, passwords: longer is the
    /// field's "Invalid/missing ..." error. 65535 is MQTT's own limit.
    pub name_bytes_max: u32,
    /// textname and textdescription.
    pub text_bytes_max: u32,
}

impl Default for DynsecLimits {
    fn default() -> Self {
        DynsecLimits { request_bytes_max: 1 << 20, commands_max: 1000, name_bytes_max: 65_535, text_bytes_max: 65_535 }
    }
}

/// What to do with one command of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Read(DynsecRead),
    Change(DynsecChange),
    /// Answer with this error now; the state is not consulted.
    Refuse(CommandError),
}

/// One command of a request, answered in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestItem {
    /// The "command" of the answer: the canonical name for known commands,
    /// the name as sent for unknown ones, "Unknown command" when there was
    /// none.
    pub command: String,
    /// Echoed in the answer.
    pub correlation_data: Option<String>,
    pub action: Action,
}

/// Decodes a request payload. `hash_password` derives a new password's hash
/// (the caller chooses salt and iterations). Commands after one with a
/// wrongly typed correlationData are not answered, as in the plugin.
pub fn parse_request(
    payload: &[u8],
    limits: &DynsecLimits,
    hash_password: &mut dyn FnMut(&[u8]) -> PasswordHash,
) -> Vec<RequestItem> {
    let refuse_all = |e: CommandError| {
        vec![RequestItem { command: "Unknown command".into(), correlation_data: None, action: Action::Refuse(e) }]
    };
    if payload.len() > limits.request_bytes_max as usize {
        return refuse_all(CommandError::REQUEST_TOO_LARGE);
    }
    let Ok(tree) = serde_json::from_slice::<Value>(payload) else {
        return refuse_all(CommandError::PAYLOAD_NOT_JSON);
    };
    let Some(commands) = get(&tree, "commands").and_then(Value::as_array) else {
        return refuse_all(CommandError::INVALID_COMMANDS);
    };
    if commands.len() > limits.commands_max as usize {
        return refuse_all(CommandError::TOO_MANY_COMMANDS);
    }
    let mut items = Vec::with_capacity(commands.len());
    for cmd in commands {
        if !cmd.is_object() {
            items.push(RequestItem {
                command: "Unknown command".into(),
                correlation_data: None,
                action: Action::Refuse(CommandError::NOT_AN_OBJECT),
            });
            continue;
        }
        let Ok(Some(name)) = get_str(cmd, "command", false) else {
            items.push(RequestItem {
                command: "Unknown command".into(),
                correlation_data: None,
                action: Action::Refuse(CommandError::MISSING_COMMAND),
            });
            continue;
        };
        let Ok(correlation_data) = get_str(cmd, "correlationData", true) else {
            items.push(RequestItem {
                command: name.to_string(),
                correlation_data: None,
                action: Action::Refuse(CommandError::INVALID_CORRELATION),
            });
            break;
        };
        let correlation_data = correlation_data.map(str::to_string);
        let (command, action) = match parse_command(name, cmd, limits, hash_password) {
            Some((canonical, action)) => (canonical.to_string(), action),
            None => (name.to_string(), Action::Refuse(CommandError::UNKNOWN_COMMAND)),
        };
        items.push(RequestItem { command, correlation_data, action });
    }
    items
}

/// One command by its (case-insensitive) name; None for an unknown name.
fn parse_command(
    name: &str,
    cmd: &Value,
    limits: &DynsecLimits,
    hash_password: &mut dyn FnMut(&[u8]) -> PasswordHash,
) -> Option<(&'static str, Action)> {
    const NAMES: [&str; 31] = [
        "setDefaultACLAccess",
        "getDefaultACLAccess",
        "createClient",
        "deleteClient",
        "getClient",
        "listClients",
        "modifyClient",
        "setClientPassword",
        "setClientId",
        "addClientRole",
        "removeClientRole",
        "enableClient",
        "disableClient",
        "addGroupClient",
        "createGroup",
        "deleteGroup",
        "getGroup",
        "listGroups",
        "modifyGroup",
        "removeGroupClient",
        "addGroupRole",
        "removeGroupRole",
        "setAnonymousGroup",
        "getAnonymousGroup",
        "createRole",
        "getRole",
        "listRoles",
        "modifyRole",
        "deleteRole",
        "addRoleACL",
        "removeRoleACL",
    ];
    let canonical = NAMES.into_iter().find(|n| n.eq_ignore_ascii_case(name))?;
    let p = Parser { cmd, limits };
    let result = match canonical {
        "setDefaultACLAccess" => p.set_default_acl_access().map(Action::Change),
        "getDefaultACLAccess" => Ok(Action::Read(DynsecRead::GetDefaultAclAccess)),
        "createClient" => p.create_client(hash_password).map(Action::Change),
        "deleteClient" => p.username_raw().map(|username| Action::Change(DynsecChange::DeleteClient { username })),
        "getClient" => p.username().map(|username| Action::Read(DynsecRead::GetClient { username })),
        "listClients" => Ok(Action::Read(DynsecRead::ListClients(p.list_params()))),
        "modifyClient" => p.modify_client(hash_password).map(Action::Change),
        "setClientPassword" => p.set_client_password(hash_password).map(Action::Change),
        "setClientId" => p.set_client_id().map(Action::Change),
        "addClientRole" => p.user_role().map(|(username, rolename)| {
            let priority = p.priority();
            Action::Change(DynsecChange::AddClientRole { username, rolename, priority })
        }),
        "removeClientRole" => p
            .user_role()
            .map(|(username, rolename)| Action::Change(DynsecChange::RemoveClientRole { username, rolename })),
        "enableClient" => p.username().map(|username| Action::Change(DynsecChange::EnableClient { username })),
        "disableClient" => p.username().map(|username| Action::Change(DynsecChange::DisableClient { username })),
        "addGroupClient" => p.user_group().map(|(username, groupname)| {
            let priority = p.priority();
            Action::Change(DynsecChange::AddGroupClient { username, groupname, priority })
        }),
        "createGroup" => p.create_group().map(Action::Change),
        "deleteGroup" => p.groupname().map(|groupname| Action::Change(DynsecChange::DeleteGroup { groupname })),
        "getGroup" => p.groupname().map(|groupname| Action::Read(DynsecRead::GetGroup { groupname })),
        "listGroups" => Ok(Action::Read(DynsecRead::ListGroups(p.list_params()))),
        "modifyGroup" => p.modify_group().map(Action::Change),
        "removeGroupClient" => p
            .user_group()
            .map(|(username, groupname)| Action::Change(DynsecChange::RemoveGroupClient { username, groupname })),
        "addGroupRole" => p.group_role().map(|(groupname, rolename)| {
            let priority = p.priority();
            Action::Change(DynsecChange::AddGroupRole { groupname, rolename, priority })
        }),
        "removeGroupRole" => p
            .group_role()
            .map(|(groupname, rolename)| Action::Change(DynsecChange::RemoveGroupRole { groupname, rolename })),
        "setAnonymousGroup" => {
            p.groupname().map(|groupname| Action::Change(DynsecChange::SetAnonymousGroup { groupname }))
        }
        "getAnonymousGroup" => Ok(Action::Read(DynsecRead::GetAnonymousGroup)),
        "createRole" => p.create_role().map(Action::Change),
        "getRole" => p.rolename().map(|rolename| Action::Read(DynsecRead::GetRole { rolename })),
        "listRoles" => Ok(Action::Read(DynsecRead::ListRoles(p.list_params()))),
        "modifyRole" => p.modify_role().map(Action::Change),
        "deleteRole" => p.rolename().map(|rolename| Action::Change(DynsecChange::DeleteRole { rolename })),
        "addRoleACL" => p.role_acl(true),
        "removeRoleACL" => p.role_acl(false),
        _ => Err(CommandError::UNKNOWN_COMMAND),
    };
    Some((canonical, result.unwrap_or_else(Action::Refuse)))
}

struct Parser<'a> {
    cmd: &'a Value,
    limits: &'a DynsecLimits,
}

type Parsed<T> = Result<T, CommandError>;

impl Parser<'_> {
    /// A required name: missing, wrongly typed or too long is `missing`,
    /// not valid MQTT UTF-8 is `utf8`.
    fn name(&self, key: &str, missing: CommandError, utf8: Option<CommandError>) -> Parsed<String> {
        let s = get_str(self.cmd, key, false).ok().flatten().ok_or(missing)?;
        if let Some(utf8) = utf8 {
            if !valid_utf8(s) {
                return Err(utf8);
            }
        }
        if s.len() > self.limits.name_bytes_max as usize {
            return Err(missing);
        }
        Ok(s.to_string())
    }

    fn username(&self) -> Parsed<String> {
        self.name("username", CommandError::INVALID_USERNAME, Some(CommandError::USERNAME_UTF8))
    }

    /// deleteClient checks no UTF-8.
    fn username_raw(&self) -> Parsed<String> {
        self.name("username", CommandError::INVALID_USERNAME, None)
    }

    fn groupname(&self) -> Parsed<String> {
        self.name("groupname", CommandError::INVALID_GROUPNAME, Some(CommandError::GROUPNAME_UTF8))
    }

    fn rolename(&self) -> Parsed<String> {
        self.name("rolename", CommandError::INVALID_ROLENAME, Some(CommandError::ROLENAME_UTF8))
    }

    fn user_role(&self) -> Parsed<(String, String)> {
        Ok((self.username()?, self.rolename()?))
    }

    fn user_group(&self) -> Parsed<(String, String)> {
        Ok((self.username()?, self.groupname()?))
    }

    fn group_role(&self) -> Parsed<(String, String)> {
        Ok((self.groupname()?, self.rolename()?))
    }

    fn priority(&self) -> i32 {
        get_int_or(self.cmd, "priority", MEMBERSHIP_PRIORITY_DEFAULT)
    }

    /// An optional text field: wrongly typed or too long is `err`.
    fn text(&self, key: &str, err: CommandError) -> Parsed<Option<String>> {
        match get_str(self.cmd, key, true) {
            Ok(Some(s)) if s.len() > self.limits.text_bytes_max as usize => Err(err),
            Ok(s) => Ok(s.map(str::to_string)),
            Err(()) => Err(err),
        }
    }

    /// A text field that modify* sets when it is a string (other types are
    /// ignored, as in the plugin).
    fn text_if(&self, key: &str, err: CommandError) -> Parsed<Option<String>> {
        match get_str_if(self.cmd, key) {
            Some(s) if s.len() > self.limits.text_bytes_max as usize => Err(err),
            s => Ok(s.map(str::to_string)),
        }
    }

    fn list_params(&self) -> ListParams {
        ListParams {
            verbose: get_bool_or(self.cmd, "verbose", false),
            count: get_int_or(self.cmd, "count", -1),
            offset: get_int_or(self.cmd, "offset", 0),
        }
    }

    /// `dynsec_rolelist__load_from_json`'s reading of "roles".
    fn roles(&self) -> NameList {
        name_list(self.cmd, "roles", "rolename", true)
    }

    fn create_client(&self, hash_password: &mut dyn FnMut(&[u8]) -> PasswordHash) -> Parsed<DynsecChange> {
        let username = self.username()?;
        let password = get_str(self.cmd, "password", true).map_err(|()| CommandError::INVALID_PASSWORD)?;
        if password.is_some_and(|p| p.len() > self.limits.name_bytes_max as usize) {
            return Err(CommandError::INVALID_PASSWORD);
        }
        let clientid = get_str(self.cmd, "clientid", true).map_err(|()| CommandError::INVALID_CLIENT_ID_CREATE)?;
        if let Some(id) = clientid {
            if !valid_utf8(id) {
                return Err(CommandError::CLIENT_ID_UTF8);
            }
            if id.len() > self.limits.name_bytes_max as usize {
                return Err(CommandError::INVALID_CLIENT_ID_CREATE);
            }
        }
        let textname = self.text("textname", CommandError::INVALID_TEXTNAME)?;
        let textdescription = self.text("textdescription", CommandError::INVALID_TEXTDESCRIPTION)?;
        // Groups: entries that are not objects with a string groupname are
        // skipped by the plugin.
        let groups = name_list(self.cmd, "groups", "groupname", false)
            .map(|l| l.into_iter().flatten().collect())
            .unwrap_or_default();
        Ok(DynsecChange::CreateClient {
            username,
            password: password.map(|p| hash_password(p.as_bytes())),
            clientid: clientid.filter(|c| !c.is_empty()).map(str::to_string),
            textname,
            textdescription,
            roles: self.roles(),
            groups,
        })
    }

    fn modify_client(&self, hash_password: &mut dyn FnMut(&[u8]) -> PasswordHash) -> Parsed<DynsecChange> {
        let username = self.username()?;
        let clientid = match get_str_if(self.cmd, "clientid") {
            Some(id) if id.len() > self.limits.name_bytes_max as usize => return Err(CommandError::INVALID_CLIENT_ID),
            Some(id) => Some(Some(id.to_string()).filter(|c| !c.is_empty())),
            None => None,
        };
        let password = match get_str_if(self.cmd, "password") {
            Some(p) if p.len() > self.limits.name_bytes_max as usize => return Err(CommandError::INVALID_PASSWORD),
            // An empty password is ignored.
            Some(p) if !p.is_empty() => Some(hash_password(p.as_bytes())),
            _ => None,
        };
        Ok(DynsecChange::ModifyClient {
            username,
            clientid,
            password,
            textname: self.text_if("textname", CommandError::INVALID_TEXTNAME)?,
            textdescription: self.text_if("textdescription", CommandError::INVALID_TEXTDESCRIPTION)?,
            roles: self.roles(),
            groups: name_list(self.cmd, "groups", "groupname", false),
        })
    }

    fn set_client_password(&self, hash_password: &mut dyn FnMut(&[u8]) -> PasswordHash) -> Parsed<DynsecChange> {
        let username = self.username()?;
        let password = get_str(self.cmd, "password", false).ok().flatten().ok_or(CommandError::INVALID_PASSWORD)?;
        if password.is_empty() {
            return Err(CommandError::EMPTY_PASSWORD);
        }
        if password.len() > self.limits.name_bytes_max as usize {
            return Err(CommandError::INVALID_PASSWORD);
        }
        Ok(DynsecChange::SetClientPassword { username, password: hash_password(password.as_bytes()) })
    }

    fn set_client_id(&self) -> Parsed<DynsecChange> {
        let username = self.username()?;
        let clientid = get_str(self.cmd, "clientid", true).map_err(|()| CommandError::INVALID_CLIENT_ID)?;
        if let Some(id) = clientid {
            if !valid_utf8(id) {
                return Err(CommandError::CLIENT_ID_UTF8);
            }
            if id.len() > self.limits.name_bytes_max as usize {
                return Err(CommandError::INVALID_CLIENT_ID);
            }
        }
        Ok(DynsecChange::SetClientId { username, clientid: clientid.filter(|c| !c.is_empty()).map(str::to_string) })
    }

    fn create_group(&self) -> Parsed<DynsecChange> {
        Ok(DynsecChange::CreateGroup {
            groupname: self.groupname()?,
            textname: self.text("textname", CommandError::INVALID_TEXTNAME)?,
            textdescription: self.text("textdescription", CommandError::INVALID_TEXTDESCRIPTION)?,
            roles: self.roles(),
        })
    }

    fn modify_group(&self) -> Parsed<DynsecChange> {
        Ok(DynsecChange::ModifyGroup {
            groupname: self.groupname()?,
            textname: self.text_if("textname", CommandError::INVALID_TEXTNAME)?,
            textdescription: self.text_if("textdescription", CommandError::INVALID_TEXTDESCRIPTION)?,
            roles: self.roles(),
            clients: name_list(self.cmd, "clients", "username", false),
        })
    }

    fn create_role(&self) -> Parsed<DynsecChange> {
        Ok(DynsecChange::CreateRole {
            rolename: self.rolename()?,
            textname: self.text("textname", CommandError::INVALID_TEXTNAME)?,
            textdescription: self.text("textdescription", CommandError::INVALID_TEXTDESCRIPTION)?,
            acls: get(self.cmd, "acls").and_then(Value::as_array).map(|a| acl_list(a)).unwrap_or_default(),
        })
    }

    fn modify_role(&self) -> Parsed<DynsecChange> {
        Ok(DynsecChange::ModifyRole {
            rolename: self.rolename()?,
            textname: self.text_if("textname", CommandError::INVALID_TEXTNAME)?,
            textdescription: self.text_if("textdescription", CommandError::INVALID_TEXTDESCRIPTION)?,
            acls: get(self.cmd, "acls").and_then(Value::as_array).map(|a| acl_list(a)),
        })
    }

    /// addRoleACL / removeRoleACL. The plugin looks the role up before it
    /// reads acltype and topic, so their errors wait for that check.
    fn role_acl(&self, add: bool) -> Parsed<Action> {
        let rolename = self.rolename()?;
        match self.acl_fields() {
            Ok((acl_type, topic)) => Ok(Action::Change(if add {
                let priority = get_int_or(self.cmd, "priority", ACL_PRIORITY_DEFAULT);
                let allow = get_bool_or(self.cmd, "allow", false);
                DynsecChange::AddRoleAcl { rolename, acl: Acl { acl_type, topic, priority, allow } }
            } else {
                DynsecChange::RemoveRoleAcl { rolename, acl_type, topic }
            })),
            Err(error) => Ok(Action::Read(DynsecRead::RoleThenRefuse { rolename, error })),
        }
    }

    fn acl_fields(&self) -> Parsed<(AclType, String)> {
        let t = get(self.cmd, "acltype").and_then(Value::as_str).ok_or(CommandError::INVALID_ACLTYPE)?;
        let acl_type = AclType::parse(t).ok_or(CommandError::UNKNOWN_ACLTYPE)?;
        let topic = get(self.cmd, "topic").and_then(Value::as_str).ok_or(CommandError::INVALID_TOPIC)?;
        if !valid_utf8(topic) {
            return Err(CommandError::TOPIC_UTF8);
        }
        // mosquitto_sub_topic_check: wildcards whole levels, at most 65535
        // bytes; unlike MQTT it lets an empty filter through.
        if !(topic.is_empty() || topic::valid_topic_filter(topic)) {
            return Err(CommandError::INVALID_ACL_TOPIC);
        }
        Ok((acl_type, topic.to_string()))
    }

    fn set_default_acl_access(&self) -> Parsed<DynsecChange> {
        let list = get(self.cmd, "acls").and_then(Value::as_array).ok_or(CommandError::INVALID_ACTIONS)?;
        let acls = list
            .iter()
            .filter_map(|a| {
                let t = get(a, "acltype")?.as_str()?;
                // The plugin reads a boolean "allow"; mosquitto_ctrl 2.0
                // sends "access": "allow"|"deny", which the plugin ignores
                // (and answers success). midge takes both.
                let allow = match get(a, "allow").and_then(Value::as_bool) {
                    Some(b) => b,
                    None => match get(a, "access")?.as_str()? {
                        "allow" => true,
                        "deny" => false,
                        _ => return None,
                    },
                };
                Some((DefaultAclType::parse(t)?, allow))
            })
            .collect();
        Ok(DynsecChange::SetDefaultAclAccess { acls })
    }
}

/// A list of `{"<name_key>": "...", "priority": n}` objects. With `strict`
/// (role lists) a present "roles" that is not an array, or an entry without
/// a string name, is kept as a None entry for `apply` to refuse in order;
/// otherwise (group and client lists) entries that are not objects are
/// skipped and a non-array is no list.
pub(crate) fn name_list(cmd: &Value, key: &str, name_key: &str, strict: bool) -> NameList {
    let list = get(cmd, key)?;
    let Some(entries) = list.as_array() else {
        return if strict { Some(vec![None]) } else { None };
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if !strict && !e.is_object() {
            continue;
        }
        let m = get(e, name_key).and_then(Value::as_str).map(|name| Membership {
            name: name.to_string(),
            priority: get_int_or(e, "priority", MEMBERSHIP_PRIORITY_DEFAULT),
        });
        out.push(m);
    }
    Some(out)
}

/// `dynsec_roles__acl_load` for all six types: entries need a string acltype
/// naming a type and a string topic; a repeated type and topic is skipped
/// (Mosquitto 2.0.12 and later); priority defaults to 0, allow to false.
/// Returned in the role's check order.
pub(crate) fn acl_list(entries: &[Value]) -> Vec<Acl> {
    let mut role = Role::default();
    let mut seen = std::collections::BTreeSet::new();
    for e in entries {
        let Some(acl_type) = get(e, "acltype").and_then(Value::as_str).and_then(AclType::parse) else {
            continue;
        };
        let Some(topic) = get(e, "topic").and_then(Value::as_str) else {
            continue;
        };
        if !seen.insert((acl_type, topic)) {
            continue;
        }
        role.insert_acl(Acl {
            acl_type,
            topic: topic.to_string(),
            priority: get_int_or(e, "priority", ACL_PRIORITY_DEFAULT),
            allow: get_bool_or(e, "allow", false),
        });
    }
    role.acls
}
