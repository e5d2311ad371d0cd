//! Enforcement with the plugin's semantics: who may log in
//! (`authenticate`) and what a logged-in client may do (`check`).
//!
//! Order of an ACL check, first match decides: the client's roles by
//! priority (higher first, then by name), each role's ACLs of the kind
//! asked by priority (higher first, then in the order they were added);
//! then the client's groups by priority, and each group's roles likewise.
//! A client without a username uses the anonymous group's roles. For
//! subscribe and unsubscribe a role's literal ACL (exact filter) is looked
//! up before its pattern ACLs. No match: the default access, which never
//! grants `$CONTROL` topics.

use super::index::Found;
use super::model::{AclType, DefaultAclType, DynsecState, Membership};
use crate::mqtt::topic;

/// The kind of access asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A PUBLISH from the client (`topic` is the topic name).
    PublishClientSend,
    /// A message delivered to the client (`topic` is the topic name).
    PublishClientReceive,
    /// `topic` is the subscription's topic filter.
    Subscribe,
    /// `topic` is the topic filter unsubscribed from.
    Unsubscribe,
}

/// The answer of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// The plugin has no opinion (unknown username, or no match and the
    /// default access is "deny" or the topic is under `$CONTROL`). Mosquitto
    /// then asks the next ACL source; when none answers, it denies.
    Defer,
}

/// A logged-in client as the checks see it. The username is looked up at
/// every check, so changes to roles apply to the next one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientRef {
    pub username: Option<String>,
}

impl ClientRef {
    pub fn anonymous() -> ClientRef {
        ClientRef { username: None }
    }

    pub fn user(username: &str) -> ClientRef {
        ClientRef { username: Some(username.to_string()) }
    }
}

/// Why `authenticate` did not accept a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No username or no password in CONNECT: the plugin defers.
    NoCredentials,
    /// No such client: the plugin defers (a password_file may know it).
    UnknownClient,
    /// The client has no password: the plugin defers.
    NoPassword,
    /// Refused: the client is disabled.
    Disabled,
    /// Refused: the client is bound to another client id.
    ClientIdMismatch,
    /// Refused: wrong password.
    BadPassword,
}

impl AuthError {
    /// True where the plugin defers to the next authentication source
    /// rather than refusing.
    pub fn is_defer(self) -> bool {
        matches!(self, AuthError::NoCredentials | AuthError::UnknownClient | AuthError::NoPassword)
    }
}

/// The result of one role list: matched with a decision, or no match.
enum RoleMatch {
    Allow,
    Deny,
    NoMatch,
}

impl DynsecState {
    /// Checks a login as the plugin's basic-auth callback does: a disabled
    /// client or one bound to another client id is refused before its
    /// password is derived.
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        clientid: &str,
    ) -> Result<ClientRef, AuthError> {
        let (Some(username), Some(password)) = (username, password) else {
            return Err(AuthError::NoCredentials);
        };
        let client = self.clients.get(username).ok_or(AuthError::UnknownClient)?;
        if client.disabled {
            return Err(AuthError::Disabled);
        }
        if client.clientid.as_deref().is_some_and(|id| id != clientid) {
            return Err(AuthError::ClientIdMismatch);
        }
        let hash = client.password.as_ref().ok_or(AuthError::NoPassword)?;
        if hash.verify(password) {
            Ok(ClientRef::user(username))
        } else {
            Err(AuthError::BadPassword)
        }
    }

    /// Whether `client` may have `access` to `topic`.
    pub fn check(&self, client: &ClientRef, topic: &str, access: Access) -> Decision {
        self.check_user(client.username.as_deref(), topic, access)
    }

    /// Whether the client logged in as `username` (None: anonymous) may
    /// have `access` to `topic`.
    pub fn check_user(&self, username: Option<&str>, topic: &str, access: Access) -> Decision {
        let found = if self.index.is_valid() {
            match self.index.find(username, topic, access) {
                Found::Allow => RoleMatch::Allow,
                Found::Deny => RoleMatch::Deny,
                Found::NoMatch => RoleMatch::NoMatch,
                Found::Unknown => return Decision::Defer,
            }
        } else {
            match self.check_slow(username, topic, access) {
                Some(found) => found,
                None => return Decision::Defer,
            }
        };
        self.decide(found, topic, access)
    }

    /// The roles' answer without the index (between a change and the next
    /// `reindex`): each role looked up by name.
    /// None: an unknown username.
    fn check_slow(&self, username: Option<&str>, topic: &str, access: Access) -> Option<RoleMatch> {
        Some(match username {
            Some(username) => {
                let c = self.clients.get(username)?;
                let mut found = self.check_roles(&c.roles, topic, access);
                for g in &c.groups {
                    if !matches!(found, RoleMatch::NoMatch) {
                        break;
                    }
                    if let Some(group) = self.groups.get(&g.name) {
                        found = self.check_roles(&group.roles, topic, access);
                    }
                }
                found
            }
            None => match self.anonymous_group.as_ref().and_then(|g| self.groups.get(g)) {
                Some(group) => self.check_roles(&group.roles, topic, access),
                None => RoleMatch::NoMatch,
            },
        })
    }

    fn decide(&self, found: RoleMatch, topic: &str, access: Access) -> Decision {
        match found {
            RoleMatch::Allow => Decision::Allow,
            RoleMatch::Deny => Decision::Deny,
            RoleMatch::NoMatch => {
                let default = match access {
                    Access::PublishClientSend => DefaultAclType::PublishClientSend,
                    Access::PublishClientReceive => DefaultAclType::PublishClientReceive,
                    Access::Subscribe => DefaultAclType::Subscribe,
                    Access::Unsubscribe => DefaultAclType::Unsubscribe,
                };
                // The plugin never grants $CONTROL by default.
                if self.default_access.get(default) && !topic.starts_with("$CONTROL") {
                    Decision::Allow
                } else {
                    Decision::Defer
                }
            }
        }
    }

    fn check_roles(&self, roles: &[Membership], topic: &str, access: Access) -> RoleMatch {
        let decide = |allow: bool| if allow { RoleMatch::Allow } else { RoleMatch::Deny };
        for m in roles {
            let Some(role) = self.roles.get(&m.name) else { continue };
            let (literal, pattern) = match access {
                Access::PublishClientSend | Access::PublishClientReceive => {
                    let t = if access == Access::PublishClientSend {
                        AclType::PublishClientSend
                    } else {
                        AclType::PublishClientReceive
                    };
                    if let Some(acl) = role.acls_of(t).find(|a| topic::matches(&a.topic, topic)) {
                        return decide(acl.allow);
                    }
                    continue;
                }
                Access::Subscribe => (AclType::SubscribeLiteral, AclType::SubscribePattern),
                Access::Unsubscribe => (AclType::UnsubscribeLiteral, AclType::UnsubscribePattern),
            };
            if let Some(acl) = role.find_acl(literal, topic) {
                return decide(acl.allow);
            }
            if let Some(acl) = role.acls_of(pattern).find(|a| filter_covers(&a.topic, topic)) {
                return decide(acl.allow);
            }
        }
        RoleMatch::NoMatch
    }
}

/// Whether the ACL pattern `acl` covers every topic the subscription filter
/// `sub` can match (the plugin's `sub_acl_check`): '+' in the ACL matches
/// one level of `sub` (including a '+' there), a trailing '#' in the ACL any
/// remaining levels; a '#' in `sub` needs one in the ACL.
pub fn filter_covers(acl: &str, sub: &str) -> bool {
    if acl == "#" {
        return true;
    }
    // "x/#" and "#" lose their '#' (and the '/' before it).
    fn strip_hash(s: &str) -> (&str, bool) {
        if s == "#" {
            ("", true)
        } else if let Some(head) = s.strip_suffix("/#") {
            (head, true)
        } else {
            (s, false)
        }
    }
    let (acl, acl_hash) = strip_hash(acl);
    let (sub, sub_hash) = strip_hash(sub);
    if sub_hash && !acl_hash {
        return false;
    }
    let acl_levels = topic::level_count(acl);
    let sub_levels = topic::level_count(sub);
    if acl_levels > sub_levels || (sub_levels > acl_levels && !acl_hash) {
        return false;
    }
    let mut a = acl.split('/');
    for s in sub.split('/') {
        match a.next() {
            Some(al) if al == "+" || al == s => {}
            None if acl_hash => {}
            _ => return false,
        }
    }
    true
}
