//! A derived index for ACL checks: for each client (and for anonymous
//! clients) the roles it holds, in check order, each role's ACLs already
//! split by the kind of access they answer. Never stored or replicated:
//! rebuilt from the data after every change (`DynsecState::reindex`).
//!
//! Without it a check looked every role up by name in a map and filtered
//! its ACLs by type: with 1,000 roles about ten times Mosquitto's cost per
//! role (benches/results/dynsec.md). With it a role that has no ACL of the
//! kind asked costs one empty slice.

use std::collections::HashMap;
use std::rc::Rc;

use super::check::{filter_covers, Access};
use super::model::{AclType, DynsecState, Membership};
use crate::mqtt::topic;

/// One ACL as a check reads it.
#[derive(Clone, Debug)]
struct Entry {
    /// subscribeLiteral / unsubscribeLiteral: the filter must be equal.
    literal: bool,
    topic: Box<str>,
    allow: bool,
}

/// A role's ACLs by access kind, in check order (for subscribe and
/// unsubscribe the literal ACLs first, then the patterns).
#[derive(Debug, Default)]
struct RoleAcls {
    kinds: [Vec<Entry>; 4],
}

fn kind(a: Access) -> usize {
    match a {
        Access::PublishClientSend => 0,
        Access::PublishClientReceive => 1,
        Access::Subscribe => 2,
        Access::Unsubscribe => 3,
    }
}

type RoleList = Rc<[Rc<RoleAcls>]>;

/// See the module comment. `valid` is false from a change until the next
/// `reindex`; checks then take the slow path.
#[derive(Clone, Debug, Default)]
pub struct AclIndex {
    valid: bool,
    users: HashMap<String, RoleList>,
    anonymous: Option<RoleList>,
}

/// The index never makes two states differ.
impl PartialEq for AclIndex {
    fn eq(&self, _: &AclIndex) -> bool {
        true
    }
}

impl Eq for AclIndex {}

/// What a check over the roles found.
pub(crate) enum Found {
    Allow,
    Deny,
    NoMatch,
    /// Unknown username.
    Unknown,
}

impl AclIndex {
    pub(crate) fn is_valid(&self) -> bool {
        self.valid
    }

    pub(crate) fn invalidate(&mut self) {
        self.valid = false;
    }

    pub(crate) fn build(state: &DynsecState) -> AclIndex {
        let roles: HashMap<&str, Rc<RoleAcls>> = state
            .roles
            .iter()
            .map(|(name, role)| {
                let mut r = RoleAcls::default();
                let push = |r: &mut RoleAcls, k: usize, literal: bool, t: AclType| {
                    for a in role.acls_of(t) {
                        r.kinds[k].push(Entry { literal, topic: a.topic.as_str().into(), allow: a.allow });
                    }
                };
                push(&mut r, 0, false, AclType::PublishClientSend);
                push(&mut r, 1, false, AclType::PublishClientReceive);
                push(&mut r, 2, true, AclType::SubscribeLiteral);
                push(&mut r, 2, false, AclType::SubscribePattern);
                push(&mut r, 3, true, AclType::UnsubscribeLiteral);
                push(&mut r, 3, false, AclType::UnsubscribePattern);
                (name.as_str(), Rc::new(r))
            })
            .collect();
        let resolve = |list: &[Membership], out: &mut Vec<Rc<RoleAcls>>| {
            out.extend(list.iter().filter_map(|m| roles.get(m.name.as_str()).cloned()));
        };
        let mut users = HashMap::with_capacity(state.clients.len());
        for (username, c) in &state.clients {
            let mut list = Vec::new();
            resolve(&c.roles, &mut list);
            for g in &c.groups {
                if let Some(group) = state.groups.get(&g.name) {
                    resolve(&group.roles, &mut list);
                }
            }
            users.insert(username.clone(), RoleList::from(list));
        }
        let anonymous = state.anonymous_group.as_ref().and_then(|g| state.groups.get(g)).map(|group| {
            let mut list = Vec::new();
            resolve(&group.roles, &mut list);
            RoleList::from(list)
        });
        AclIndex { valid: true, users, anonymous }
    }

    /// The first ACL of the client's roles that matches, in check order.
    pub(crate) fn find(&self, username: Option<&str>, subject: &str, access: Access) -> Found {
        let list = match username {
            Some(u) => match self.users.get(u) {
                Some(l) => l,
                None => return Found::Unknown,
            },
            None => match &self.anonymous {
                Some(l) => l,
                None => return Found::NoMatch,
            },
        };
        let k = kind(access);
        let publish = k < 2;
        for role in list.iter() {
            for e in &role.kinds[k] {
                let hit = if publish {
                    topic::matches(&e.topic, subject)
                } else if e.literal {
                    *e.topic == *subject
                } else {
                    filter_covers(&e.topic, subject)
                };
                if hit {
                    return if e.allow { Found::Allow } else { Found::Deny };
                }
            }
        }
        Found::NoMatch
    }
}
