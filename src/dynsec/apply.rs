//! Applying a `DynsecChange` to the state: the same deterministic function
//! on every node, in log order. A refused change leaves the state exactly as
//! it was (each change is checked in the plugin's order, then made). The
//! answer lists the connected clients the plugin would kick, so that new
//! roles, passwords and bindings take effect at their next CONNECT.

use super::command::{CommandError, DynsecChange, NameList};
use super::model::{insert_by_name, insert_by_priority, remove_named, Client, DynsecState, Group, Membership, Role};

/// Connected clients to disconnect after a change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kick {
    /// Every connection logged in with this username.
    Username(String),
    /// Every connection without a username (the anonymous group changed).
    Anonymous,
}

/// What a change that was made asks of the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Sorted, without repeats.
    pub kick: Vec<Kick>,
}

impl Applied {
    fn kicking(mut kick: Vec<Kick>) -> Applied {
        kick.sort();
        kick.dedup();
        Applied { kick }
    }

    fn user(username: &str) -> Applied {
        Applied { kick: vec![Kick::Username(username.to_string())] }
    }
}

type Outcome = Result<Applied, CommandError>;

/// Applies one change. Err leaves `state` untouched.
pub fn apply(state: &mut DynsecState, change: &DynsecChange) -> Outcome {
    // Checks take the slow path until the caller reindexes.
    state.index.invalidate();
    apply_change(state, change)
}

fn apply_change(state: &mut DynsecState, change: &DynsecChange) -> Outcome {
    use DynsecChange as C;
    match change {
        C::CreateClient { username, password, clientid, textname, textdescription, roles, groups } => {
            if state.clients.contains_key(username) {
                return Err(CommandError::CLIENT_EXISTS);
            }
            let roles = resolve_roles(state, roles, CommandError::ROLES_INVALID)?.unwrap_or_default();
            let mut seen = Vec::new();
            for g in groups {
                if !state.groups.contains_key(&g.name) {
                    return Err(CommandError::GROUP_NOT_FOUND);
                }
                // The plugin answers a group listed twice this way.
                if !insert_by_name(&mut seen, g.clone()) {
                    return Err(CommandError::INTERNAL_ERROR);
                }
            }
            let client = Client {
                clientid: clientid.clone(),
                textname: textname.clone(),
                textdescription: textdescription.clone(),
                disabled: false,
                password: password.clone(),
                roles,
                groups: Vec::new(),
            };
            state.clients.insert(username.clone(), client);
            for g in groups {
                join_group(state, username, &g.name, g.priority);
            }
            Ok(Applied::default())
        }
        C::DeleteClient { username } => {
            let client = state.clients.remove(username).ok_or(CommandError::CLIENT_NOT_FOUND)?;
            for g in &client.groups {
                if let Some(group) = state.groups.get_mut(&g.name) {
                    remove_named(&mut group.clients, username);
                }
            }
            Ok(Applied::user(username))
        }
        C::SetClientPassword { username, password } => {
            client_mut(state, username)?.password = Some(password.clone());
            Ok(Applied::user(username))
        }
        C::SetClientId { username, clientid } => {
            client_mut(state, username)?.clientid = clientid.clone();
            Ok(Applied::user(username))
        }
        C::ModifyClient { username, clientid, password, textname, textdescription, roles, groups } => {
            if !state.clients.contains_key(username) {
                return Err(CommandError::CLIENT_NOT_FOUND);
            }
            let roles = resolve_roles(state, roles, CommandError::ROLES_INVALID)?;
            if let Some(groups) = groups {
                for g in groups {
                    let g = g.as_ref().ok_or(CommandError::GROUPS_INVALID_NAME)?;
                    if !state.groups.contains_key(&g.name) {
                        return Err(CommandError::GROUPS_UNKNOWN);
                    }
                }
                leave_all_groups(state, username);
                for g in groups.iter().flatten() {
                    join_group(state, username, &g.name, g.priority);
                }
            }
            let client = client_mut(state, username)?;
            if let Some(password) = password {
                client.password = Some(password.clone());
            }
            if let Some(clientid) = clientid {
                client.clientid = clientid.clone();
            }
            set_some(&mut client.textname, textname);
            set_some(&mut client.textdescription, textdescription);
            if let Some(roles) = roles {
                client.roles = roles;
            }
            Ok(Applied::user(username))
        }
        C::EnableClient { username } => {
            client_mut(state, username)?.disabled = false;
            Ok(Applied::default())
        }
        C::DisableClient { username } => {
            client_mut(state, username)?.disabled = true;
            Ok(Applied::user(username))
        }
        C::AddClientRole { username, rolename, priority } => {
            if !state.clients.contains_key(username) {
                return Err(CommandError::CLIENT_NOT_FOUND);
            }
            if !state.roles.contains_key(rolename) {
                return Err(CommandError::ROLE_NOT_FOUND);
            }
            let client = client_mut(state, username)?;
            let m = Membership { name: rolename.clone(), priority: *priority };
            // Mosquitto 2.0 answers a role the client already has this way.
            if !insert_by_priority(&mut client.roles, m) {
                return Err(CommandError::INTERNAL_ERROR);
            }
            Ok(Applied::user(username))
        }
        C::RemoveClientRole { username, rolename } => {
            if !state.clients.contains_key(username) {
                return Err(CommandError::CLIENT_NOT_FOUND);
            }
            if !state.roles.contains_key(rolename) {
                return Err(CommandError::ROLE_NOT_FOUND);
            }
            remove_named(&mut client_mut(state, username)?.roles, rolename);
            Ok(Applied::user(username))
        }
        C::CreateGroup { groupname, textname, textdescription, roles } => {
            if state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_EXISTS);
            }
            // createGroup answers a malformed "roles" with "Internal error".
            let roles = resolve_roles(state, roles, CommandError::INTERNAL_ERROR)?.unwrap_or_default();
            let group =
                Group { textname: textname.clone(), textdescription: textdescription.clone(), roles, clients: vec![] };
            state.groups.insert(groupname.clone(), group);
            Ok(Applied::default())
        }
        C::DeleteGroup { groupname } => {
            if !state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_NOT_FOUND);
            }
            // Mosquitto 2.0.11 crashes here; later versions refuse.
            if state.anonymous_group.as_deref() == Some(groupname.as_str()) {
                return Err(CommandError::DELETE_ANONYMOUS_GROUP);
            }
            let kick = group_kicks(state, groupname);
            if let Some(group) = state.groups.remove(groupname) {
                for c in &group.clients {
                    if let Some(client) = state.clients.get_mut(&c.name) {
                        remove_named(&mut client.groups, groupname);
                    }
                }
            }
            Ok(Applied::kicking(kick))
        }
        C::ModifyGroup { groupname, textname, textdescription, roles, clients } => {
            if !state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_NOT_FOUND);
            }
            let roles = resolve_roles(state, roles, CommandError::ROLES_INVALID)?;
            let mut kick = Vec::new();
            if let Some(clients) = clients {
                for c in clients {
                    let c = c.as_ref().ok_or(CommandError::CLIENTS_INVALID_NAME)?;
                    if !state.clients.contains_key(&c.name) {
                        return Err(CommandError::CLIENTS_UNKNOWN);
                    }
                }
                // The clients leaving are kicked as well as those joining.
                kick = group_kicks(state, groupname);
                let old: Vec<String> = state.groups[groupname].clients.iter().map(|m| m.name.clone()).collect();
                for username in old {
                    leave_group(state, &username, groupname);
                }
                for c in clients.iter().flatten() {
                    join_group(state, &c.name, groupname, c.priority);
                }
            }
            let group = state.groups.get_mut(groupname).ok_or(CommandError::GROUP_NOT_FOUND)?;
            set_some(&mut group.textname, textname);
            set_some(&mut group.textdescription, textdescription);
            if let Some(roles) = roles {
                group.roles = roles;
            }
            kick.extend(group_kicks(state, groupname));
            Ok(Applied::kicking(kick))
        }
        C::AddGroupClient { username, groupname, priority } => {
            if !state.clients.contains_key(username) {
                return Err(CommandError::CLIENT_NOT_FOUND);
            }
            let group = state.groups.get(groupname).ok_or(CommandError::GROUP_NOT_FOUND)?;
            if group.clients.iter().any(|m| &m.name == username) {
                return Err(CommandError::CLIENT_IN_GROUP);
            }
            join_group(state, username, groupname, *priority);
            Ok(Applied::user(username))
        }
        C::RemoveGroupClient { username, groupname } => {
            if !state.clients.contains_key(username) {
                return Err(CommandError::CLIENT_NOT_FOUND);
            }
            if !state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_NOT_FOUND);
            }
            leave_group(state, username, groupname);
            Ok(Applied::user(username))
        }
        C::AddGroupRole { groupname, rolename, priority } => {
            if !state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_NOT_FOUND);
            }
            if !state.roles.contains_key(rolename) {
                return Err(CommandError::ROLE_NOT_FOUND);
            }
            let group = state.groups.get_mut(groupname).ok_or(CommandError::GROUP_NOT_FOUND)?;
            if !insert_by_priority(&mut group.roles, Membership { name: rolename.clone(), priority: *priority }) {
                return Err(CommandError::GROUP_HAS_ROLE);
            }
            Ok(Applied::kicking(group_kicks(state, groupname)))
        }
        C::RemoveGroupRole { groupname, rolename } => {
            if !state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_NOT_FOUND);
            }
            if !state.roles.contains_key(rolename) {
                return Err(CommandError::ROLE_NOT_FOUND);
            }
            if let Some(group) = state.groups.get_mut(groupname) {
                remove_named(&mut group.roles, rolename);
            }
            Ok(Applied::kicking(group_kicks(state, groupname)))
        }
        C::SetAnonymousGroup { groupname } => {
            if !state.groups.contains_key(groupname) {
                return Err(CommandError::GROUP_NOT_FOUND);
            }
            state.anonymous_group = Some(groupname.clone());
            Ok(Applied { kick: vec![Kick::Anonymous] })
        }
        C::CreateRole { rolename, textname, textdescription, acls } => {
            if state.roles.contains_key(rolename) {
                return Err(CommandError::ROLE_EXISTS);
            }
            let role =
                Role { textname: textname.clone(), textdescription: textdescription.clone(), acls: acls.clone() };
            state.roles.insert(rolename.clone(), role);
            Ok(Applied::default())
        }
        C::DeleteRole { rolename } => {
            if !state.roles.contains_key(rolename) {
                return Err(CommandError::ROLE_NOT_FOUND);
            }
            let kick = role_kicks(state, rolename);
            state.roles.remove(rolename);
            for client in state.clients.values_mut() {
                remove_named(&mut client.roles, rolename);
            }
            for group in state.groups.values_mut() {
                remove_named(&mut group.roles, rolename);
            }
            Ok(Applied::kicking(kick))
        }
        C::ModifyRole { rolename, textname, textdescription, acls } => {
            let role = state.roles.get_mut(rolename).ok_or(CommandError::ROLE_DOES_NOT_EXIST)?;
            set_some(&mut role.textname, textname);
            set_some(&mut role.textdescription, textdescription);
            if let Some(acls) = acls {
                role.acls = acls.clone();
            }
            // Mosquitto 2.0.11 kicks no one here: ACLs are checked afresh
            // at every publish, subscribe and delivery anyway.
            Ok(Applied::default())
        }
        C::AddRoleAcl { rolename, acl } => {
            let role = state.roles.get_mut(rolename).ok_or(CommandError::ROLE_NOT_FOUND)?;
            if role.find_acl(acl.acl_type, &acl.topic).is_some() {
                return Err(CommandError::ACL_EXISTS);
            }
            role.insert_acl(acl.clone());
            Ok(Applied::kicking(role_kicks(state, rolename)))
        }
        C::RemoveRoleAcl { rolename, acl_type, topic } => {
            let role = state.roles.get_mut(rolename).ok_or(CommandError::ROLE_NOT_FOUND)?;
            let before = role.acls.len();
            role.acls.retain(|a| !(a.acl_type == *acl_type && &a.topic == topic));
            if role.acls.len() == before {
                return Err(CommandError::ACL_NOT_FOUND);
            }
            Ok(Applied::kicking(role_kicks(state, rolename)))
        }
        C::SetDefaultAclAccess { acls } => {
            for (t, allow) in acls {
                state.default_access.set(*t, *allow);
            }
            Ok(Applied::default())
        }
        C::Import(new) => {
            // Everyone was authorised by the old data.
            let mut kick: Vec<Kick> = state.clients.keys().cloned().map(Kick::Username).collect();
            kick.push(Kick::Anonymous);
            *state = (**new).clone();
            Ok(Applied::kicking(kick))
        }
    }
}

fn client_mut<'a>(state: &'a mut DynsecState, username: &str) -> Result<&'a mut Client, CommandError> {
    state.clients.get_mut(username).ok_or(CommandError::CLIENT_NOT_FOUND)
}

fn set_some(field: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value {
        *field = Some(v.clone());
    }
}

/// A role list checked in order: a malformed entry is `invalid`, an unknown
/// role "Role not found". Repeats keep the first. Ok(None): no list.
fn resolve_roles(
    state: &DynsecState,
    list: &NameList,
    invalid: CommandError,
) -> Result<Option<Vec<Membership>>, CommandError> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::new();
    for m in list {
        let m = m.as_ref().ok_or(invalid)?;
        if !state.roles.contains_key(&m.name) {
            return Err(CommandError::ROLE_NOT_FOUND);
        }
        insert_by_priority(&mut out, m.clone());
    }
    Ok(Some(out))
}

/// Puts a client in a group on both sides; both must exist. A repeat is
/// ignored.
fn join_group(state: &mut DynsecState, username: &str, groupname: &str, priority: i32) {
    let (Some(client), Some(group)) = (state.clients.get_mut(username), state.groups.get_mut(groupname)) else {
        return;
    };
    if insert_by_name(&mut group.clients, Membership { name: username.to_string(), priority }) {
        insert_by_priority(&mut client.groups, Membership { name: groupname.to_string(), priority });
    }
}

fn leave_group(state: &mut DynsecState, username: &str, groupname: &str) {
    if let Some(group) = state.groups.get_mut(groupname) {
        remove_named(&mut group.clients, username);
    }
    if let Some(client) = state.clients.get_mut(username) {
        remove_named(&mut client.groups, groupname);
    }
}

fn leave_all_groups(state: &mut DynsecState, username: &str) {
    let groups: Vec<String> =
        state.clients.get(username).map(|c| c.groups.iter().map(|g| g.name.clone()).collect()).unwrap_or_default();
    for g in groups {
        leave_group(state, username, &g);
    }
}

/// The group's clients, and the anonymous ones if it is the anonymous group.
fn group_kicks(state: &DynsecState, groupname: &str) -> Vec<Kick> {
    let mut kick: Vec<Kick> = state
        .groups
        .get(groupname)
        .map(|g| g.clients.iter().map(|c| Kick::Username(c.name.clone())).collect())
        .unwrap_or_default();
    if state.anonymous_group.as_deref() == Some(groupname) {
        kick.push(Kick::Anonymous);
    }
    kick
}

/// Everyone who holds the role directly or through a group.
fn role_kicks(state: &DynsecState, rolename: &str) -> Vec<Kick> {
    let has = |roles: &[Membership]| roles.iter().any(|r| r.name == rolename);
    let mut kick: Vec<Kick> =
        state.clients.iter().filter(|(_, c)| has(&c.roles)).map(|(u, _)| Kick::Username(u.clone())).collect();
    for (name, group) in &state.groups {
        if has(&group.roles) {
            kick.extend(group_kicks(state, name));
        }
    }
    kick
}
