//! The dynamic-security data: clients, groups, roles with their ACLs, the
//! default access and the anonymous group. This is replicated state: it is
//! serialised with postcard into snapshots and raft entries, so it holds no
//! `usize`, no `HashMap`, and every list has the order Mosquitto's plugin
//! gives it (which is also the order the ACL check walks).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::password::PasswordHash;

/// The priority given to a role or group membership without one (the
/// plugin's default; such memberships are written without "priority").
pub const MEMBERSHIP_PRIORITY_DEFAULT: i32 = -1;
/// The priority of an ACL without one.
pub const ACL_PRIORITY_DEFAULT: i32 = 0;

/// The six ACL types a role can hold, in the order the plugin writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AclType {
    PublishClientSend,
    PublishClientReceive,
    SubscribeLiteral,
    SubscribePattern,
    UnsubscribeLiteral,
    UnsubscribePattern,
}

impl AclType {
    pub const ALL: [AclType; 6] = [
        AclType::PublishClientSend,
        AclType::PublishClientReceive,
        AclType::SubscribeLiteral,
        AclType::SubscribePattern,
        AclType::UnsubscribeLiteral,
        AclType::UnsubscribePattern,
    ];

    /// The name in JSON ("publishClientSend", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AclType::PublishClientSend => "publishClientSend",
            AclType::PublishClientReceive => "publishClientReceive",
            AclType::SubscribeLiteral => "subscribeLiteral",
            AclType::SubscribePattern => "subscribePattern",
            AclType::UnsubscribeLiteral => "unsubscribeLiteral",
            AclType::UnsubscribePattern => "unsubscribePattern",
        }
    }

    /// Parses a name case-insensitively, as the plugin's `strcasecmp` does.
    pub fn parse(s: &str) -> Option<AclType> {
        AclType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// One ACL entry of a role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub acl_type: AclType,
    pub topic: String,
    pub priority: i32,
    pub allow: bool,
}

/// A role or group that a client or group belongs to, with a priority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub name: String,
    pub priority: i32,
}

impl Membership {
    /// The plugin's order for role and group lists: higher priority first,
    /// then by name (byte order).
    fn by_priority(a: &Membership, b: &Membership) -> Ordering {
        b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name))
    }
}

/// Inserts into a list kept in `Membership::by_priority` order; an entry of
/// the same name already there is left alone. Returns whether it inserted.
pub(crate) fn insert_by_priority(list: &mut Vec<Membership>, m: Membership) -> bool {
    if list.iter().any(|x| x.name == m.name) {
        return false;
    }
    let at = list.partition_point(|x| Membership::by_priority(x, &m) != Ordering::Greater);
    list.insert(at, m);
    true
}

/// Inserts into a list kept in name order (a group's clients); an entry of
/// the same name already there is left alone. Returns whether it inserted.
pub(crate) fn insert_by_name(list: &mut Vec<Membership>, m: Membership) -> bool {
    match list.binary_search_by(|x| x.name.cmp(&m.name)) {
        Ok(_) => false,
        Err(at) => {
            list.insert(at, m);
            true
        }
    }
}

/// Removes the entry named `name`; returns whether there was one.
pub(crate) fn remove_named(list: &mut Vec<Membership>, name: &str) -> bool {
    let before = list.len();
    list.retain(|m| m.name != name);
    list.len() != before
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Only this client id may log in with this username, when set.
    pub clientid: Option<String>,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    pub disabled: bool,
    /// None: the client has no password and the plugin defers its logins.
    pub password: Option<PasswordHash>,
    /// In check order (priority, then name).
    pub roles: Vec<Membership>,
    /// In check order (priority, then name); mirrors the groups' `clients`.
    pub groups: Vec<Membership>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    /// In check order (priority, then name).
    pub roles: Vec<Membership>,
    /// By username; the priority is the group's priority for that client.
    pub clients: Vec<Membership>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    /// By type (in `AclType` order), then by priority, higher first; equal
    /// priorities keep the order they were added in, as the plugin does.
    pub acls: Vec<Acl>,
}

impl Role {
    /// The ACLs of one type, in check order.
    pub fn acls_of(&self, t: AclType) -> impl Iterator<Item = &Acl> {
        self.acls.iter().filter(move |a| a.acl_type == t)
    }

    pub fn find_acl(&self, t: AclType, topic: &str) -> Option<&Acl> {
        self.acls_of(t).find(|a| a.topic == topic)
    }

    /// Adds an ACL in check order. The caller has checked that no ACL of the
    /// same type and topic exists.
    pub(crate) fn insert_acl(&mut self, acl: Acl) {
        let key = |a: &Acl| (a.acl_type, std::cmp::Reverse(a.priority));
        let k = key(&acl);
        let at = self.acls.partition_point(|a| key(a) <= k);
        self.acls.insert(at, acl);
    }
}

/// What a client gets when no ACL of its roles matches. Mosquitto's plugin
/// starts from all false when the file has no "defaultACLAccess";
/// `mosquitto_ctrl dynsec init` writes publishClientReceive and unsubscribe
/// true.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultAccess {
    pub publish_client_send: bool,
    pub publish_client_receive: bool,
    pub subscribe: bool,
    pub unsubscribe: bool,
}

/// The four kinds of default access (setDefaultACLAccess's "acltype").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultAclType {
    PublishClientSend,
    PublishClientReceive,
    Subscribe,
    Unsubscribe,
}

impl DefaultAclType {
    pub const ALL: [DefaultAclType; 4] = [
        DefaultAclType::PublishClientSend,
        DefaultAclType::PublishClientReceive,
        DefaultAclType::Subscribe,
        DefaultAclType::Unsubscribe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DefaultAclType::PublishClientSend => "publishClientSend",
            DefaultAclType::PublishClientReceive => "publishClientReceive",
            DefaultAclType::Subscribe => "subscribe",
            DefaultAclType::Unsubscribe => "unsubscribe",
        }
    }

    pub fn parse(s: &str) -> Option<DefaultAclType> {
        DefaultAclType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl DefaultAccess {
    pub fn get(&self, t: DefaultAclType) -> bool {
        match t {
            DefaultAclType::PublishClientSend => self.publish_client_send,
            DefaultAclType::PublishClientReceive => self.publish_client_receive,
            DefaultAclType::Subscribe => self.subscribe,
            DefaultAclType::Unsubscribe => self.unsubscribe,
        }
    }

    pub fn set(&mut self, t: DefaultAclType, allow: bool) {
        match t {
            DefaultAclType::PublishClientSend => self.publish_client_send = allow,
            DefaultAclType::PublishClientReceive => self.publish_client_receive = allow,
            DefaultAclType::Subscribe => self.subscribe = allow,
            DefaultAclType::Unsubscribe => self.unsubscribe = allow,
        }
    }
}

/// All dynamic-security data. Maps are keyed by username, group name and
/// role name; iteration (and so every list answer and the file) is in byte
/// order of those names, as the plugin sorts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynsecState {
    pub clients: BTreeMap<String, Client>,
    pub groups: BTreeMap<String, Group>,
    pub roles: BTreeMap<String, Role>,
    /// Names a group in `groups` (kept so by every change).
    pub anonymous_group: Option<String>,
    pub default_access: DefaultAccess,
    /// Derived from the above for fast ACL checks; never stored (see
    /// `reindex`).
    #[serde(skip)]
    pub(crate) index: super::index::AclIndex,
}

impl DynsecState {
    /// Rebuilds the ACL index after changes (checks are correct without
    /// it, only slower).
    pub fn reindex(&mut self) {
        self.index = super::index::AclIndex::build(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, priority: i32) -> Membership {
        Membership { name: name.into(), priority }
    }

    #[test]
    fn membership_order_is_priority_then_name() {
        let mut l = Vec::new();
        for x in [m("b", 1), m("a", 1), m("z", 5), m("c", -1), m("a", 9)] {
            insert_by_priority(&mut l, x);
        }
        let names: Vec<_> = l.iter().map(|x| (x.name.as_str(), x.priority)).collect();
        assert_eq!(names, [("z", 5), ("a", 1), ("b", 1), ("c", -1)]);
        assert!(remove_named(&mut l, "a"));
        assert!(!remove_named(&mut l, "a"));
    }

    #[test]
    fn acl_order_is_type_then_priority_then_insertion() {
        let mut r = Role::default();
        let acl = |t, topic: &str, priority| Acl { acl_type: t, topic: topic.into(), priority, allow: true };
        r.insert_acl(acl(AclType::SubscribePattern, "s", 0));
        r.insert_acl(acl(AclType::PublishClientSend, "p1", 0));
        r.insert_acl(acl(AclType::PublishClientSend, "p2", 0));
        r.insert_acl(acl(AclType::PublishClientSend, "p3", 7));
        r.insert_acl(acl(AclType::PublishClientSend, "p4", -2));
        let topics: Vec<_> = r.acls.iter().map(|a| a.topic.as_str()).collect();
        assert_eq!(topics, ["p3", "p1", "p2", "p4", "s"]);
    }

    #[test]
    fn acl_type_names_parse_case_insensitively() {
        for t in AclType::ALL {
            assert_eq!(AclType::parse(t.as_str()), Some(t));
            assert_eq!(AclType::parse(&t.as_str().to_uppercase()), Some(t));
        }
        assert_eq!(AclType::parse("subscribe"), None);
        assert_eq!(DefaultAclType::parse("SUBSCRIBE"), Some(DefaultAclType::Subscribe));
    }
}
