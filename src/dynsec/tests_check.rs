//! Enforcement: login checks and the ACL check order of the plugin's
//! acl.c, each ACL type, default access and the anonymous group.

use super::*;

fn acl(acl_type: AclType, topic: &str, priority: i32, allow: bool) -> Acl {
    Acl { acl_type, topic: topic.into(), priority, allow }
}

fn role(acls: Vec<Acl>) -> Role {
    let mut r = Role::default();
    for a in acls {
        r.insert_acl(a);
    }
    r
}

fn m(name: &str, priority: i32) -> Membership {
    Membership { name: name.into(), priority }
}

/// A group of client "u": name, priority, its roles.
type GroupSpec<'a> = (&'a str, i32, &'a [(&'a str, i32)]);

/// Client "u" with roles and groups given as (name, priority).
fn state(roles: Vec<(&str, Role)>, client_roles: &[(&str, i32)], groups: &[GroupSpec]) -> DynsecState {
    let mut s = DynsecState::default();
    for (n, r) in roles {
        s.roles.insert(n.into(), r);
    }
    let mut c = Client::default();
    for (n, p) in client_roles {
        c.roles.push(m(n, *p));
    }
    c.roles.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    for (g, p, rs) in groups {
        let mut group = Group { clients: vec![m("u", *p)], ..Group::default() };
        for (n, rp) in rs.iter() {
            group.roles.push(m(n, *rp));
        }
        group.roles.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
        s.groups.insert(g.to_string(), group);
        c.groups.push(m(g, *p));
    }
    c.groups.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    s.clients.insert("u".into(), c);
    s
}

const U: fn() -> ClientRef = || ClientRef::user("u");
use AclType::*;

#[test]
fn each_acl_type_governs_its_access() {
    let r = role(vec![
        acl(PublishClientSend, "send/+", 0, true),
        acl(PublishClientReceive, "recv/#", 0, true),
        acl(SubscribeLiteral, "lit/+", 0, true),
        acl(SubscribePattern, "pat/#", 0, true),
        acl(UnsubscribeLiteral, "ulit", 0, true),
        acl(UnsubscribePattern, "upat/+", 0, true),
    ]);
    let s = state(vec![("r", r)], &[("r", 0)], &[]);
    let d = |t: &str, a| s.check(&U(), t, a);
    assert_eq!(d("send/x", Access::PublishClientSend), Decision::Allow);
    assert_eq!(d("send/x/y", Access::PublishClientSend), Decision::Defer);
    assert_eq!(d("send/x", Access::PublishClientReceive), Decision::Defer);
    assert_eq!(d("recv/a/b", Access::PublishClientReceive), Decision::Allow);
    assert_eq!(d("recv/a/b", Access::PublishClientSend), Decision::Defer);
    // Literal: the exact filter only, '+' in it is not a wildcard.
    assert_eq!(d("lit/+", Access::Subscribe), Decision::Allow);
    assert_eq!(d("lit/x", Access::Subscribe), Decision::Defer);
    // Pattern: any filter the pattern covers.
    assert_eq!(d("pat/x/+", Access::Subscribe), Decision::Allow);
    assert_eq!(d("pat/#", Access::Subscribe), Decision::Allow);
    assert_eq!(d("pat", Access::Subscribe), Decision::Allow);
    assert_eq!(d("other/#", Access::Subscribe), Decision::Defer);
    assert_eq!(d("ulit", Access::Unsubscribe), Decision::Allow);
    assert_eq!(d("upat/z", Access::Unsubscribe), Decision::Allow);
    assert_eq!(d("upat/#", Access::Unsubscribe), Decision::Defer);
    assert_eq!(d("ulit", Access::Subscribe), Decision::Defer);
}

#[test]
fn deny_acls_deny() {
    let r = role(vec![acl(PublishClientSend, "a/#", 0, false), acl(SubscribePattern, "#", 0, false)]);
    let mut s = state(vec![("r", r)], &[("r", 0)], &[]);
    s.default_access =
        DefaultAccess { publish_client_send: true, publish_client_receive: true, subscribe: true, unsubscribe: true };
    assert_eq!(s.check(&U(), "a/b", Access::PublishClientSend), Decision::Deny);
    assert_eq!(s.check(&U(), "b", Access::PublishClientSend), Decision::Allow);
    assert_eq!(s.check(&U(), "x/y", Access::Subscribe), Decision::Deny);
}

#[test]
fn acl_priority_within_a_role() {
    // Higher priority first; equal priorities in the order added.
    let r = role(vec![
        acl(PublishClientSend, "a/#", 1, false),
        acl(PublishClientSend, "a/b", 5, true),
        acl(PublishClientSend, "x/+", 0, true),
        acl(PublishClientSend, "x/#", 0, false),
    ]);
    let s = state(vec![("r", r)], &[("r", 0)], &[]);
    assert_eq!(s.check(&U(), "a/b", Access::PublishClientSend), Decision::Allow);
    assert_eq!(s.check(&U(), "a/c", Access::PublishClientSend), Decision::Deny);
    assert_eq!(s.check(&U(), "x/y", Access::PublishClientSend), Decision::Allow);
    assert_eq!(s.check(&U(), "x/y/z", Access::PublishClientSend), Decision::Deny);
}

#[test]
fn literal_before_pattern_in_a_role_whatever_the_priority() {
    let r = role(vec![acl(SubscribePattern, "a/#", 100, false), acl(SubscribeLiteral, "a/b", -100, true)]);
    let s = state(vec![("r", r)], &[("r", 0)], &[]);
    assert_eq!(s.check(&U(), "a/b", Access::Subscribe), Decision::Allow);
    assert_eq!(s.check(&U(), "a/c", Access::Subscribe), Decision::Deny);
}

#[test]
fn role_priority_then_name_then_groups() {
    let allow = |t| role(vec![acl(PublishClientSend, t, 0, true)]);
    let deny = |t| role(vec![acl(PublishClientSend, t, 0, false)]);
    // Client roles: priority decides, ties by name ("a" before "b").
    let s = state(vec![("a", deny("t")), ("b", allow("t"))], &[("a", 1), ("b", 2)], &[]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Allow);
    let s = state(vec![("a", deny("t")), ("b", allow("t"))], &[("a", 2), ("b", 2)], &[]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Deny);
    // The client's own roles before any group's, whatever the priorities.
    let s = state(vec![("own", allow("t")), ("g", deny("t"))], &[("own", -5)], &[("grp", 100, &[("g", 100)])]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Allow);
    // Groups by priority, then name; a group's roles by priority.
    let roles = || vec![("yes", allow("t")), ("no", deny("t"))];
    let s = state(roles(), &[], &[("g1", 1, &[("yes", 0)]), ("g2", 2, &[("no", 0)])]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Deny);
    let s = state(roles(), &[], &[("g1", 2, &[("yes", 0)]), ("g2", 2, &[("no", 0)])]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Allow);
    let s = state(roles(), &[], &[("g", 0, &[("yes", 1), ("no", 3)])]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Deny);
    // No match in a role moves on to the next one.
    let s = state(vec![("a", allow("other")), ("b", deny("t"))], &[("a", 9), ("b", 1)], &[]);
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Deny);
}

#[test]
fn default_access_and_control_topics() {
    let mut s = state(vec![], &[], &[]);
    for a in [Access::PublishClientSend, Access::PublishClientReceive, Access::Subscribe, Access::Unsubscribe] {
        assert_eq!(s.check(&U(), "t", a), Decision::Defer);
    }
    s.default_access =
        DefaultAccess { publish_client_send: true, publish_client_receive: false, subscribe: true, unsubscribe: false };
    assert_eq!(s.check(&U(), "t", Access::PublishClientSend), Decision::Allow);
    assert_eq!(s.check(&U(), "t", Access::PublishClientReceive), Decision::Defer);
    assert_eq!(s.check(&U(), "t/#", Access::Subscribe), Decision::Allow);
    assert_eq!(s.check(&U(), "t", Access::Unsubscribe), Decision::Defer);
    // Never $CONTROL by default.
    assert_eq!(s.check(&U(), "$CONTROL/dynamic-security/v1", Access::PublishClientSend), Decision::Defer);
    assert_eq!(s.check(&U(), "$CONTROL/midge/cluster/v1", Access::Subscribe), Decision::Defer);
    // An unknown username is not ours to judge, default or not.
    assert_eq!(s.check(&ClientRef::user("ghost"), "t", Access::PublishClientSend), Decision::Defer);
}

#[test]
fn anonymous_clients_use_the_anonymous_group() {
    let mut s = state(vec![("anon", role(vec![acl(PublishClientSend, "public/#", 0, true)]))], &[], &[]);
    s.groups.insert("guests".into(), Group { roles: vec![m("anon", -1)], ..Group::default() });
    assert_eq!(s.check(&ClientRef::anonymous(), "public/x", Access::PublishClientSend), Decision::Defer);
    s.anonymous_group = Some("guests".into());
    assert_eq!(s.check(&ClientRef::anonymous(), "public/x", Access::PublishClientSend), Decision::Allow);
    assert_eq!(s.check(&ClientRef::anonymous(), "private", Access::PublishClientSend), Decision::Defer);
    // A named client does not get the anonymous group's roles.
    assert_eq!(s.check(&U(), "public/x", Access::PublishClientSend), Decision::Defer);
}

#[test]
fn the_init_admin_may_use_the_api_and_nothing_else_by_default() {
    let s = import_json(include_str!("../../tests/fixtures/dynsec/init.json")).unwrap().state;
    let admin = s.authenticate(Some("admin"), Some(b"secret"), "ctl").unwrap();
    assert_eq!(s.check(&admin, "$CONTROL/dynamic-security/v1", Access::PublishClientSend), Decision::Allow);
    assert_eq!(s.check(&admin, "$CONTROL/dynamic-security/#", Access::Subscribe), Decision::Allow);
    assert_eq!(s.check(&admin, "$CONTROL/dynamic-security/v1/response", Access::PublishClientReceive), Decision::Allow);
    assert_eq!(s.check(&admin, "sensors/1", Access::PublishClientSend), Decision::Defer);
    assert_eq!(s.check(&admin, "$SYS/#", Access::Subscribe), Decision::Allow);
}

#[test]
fn authentication() {
    let mut s = DynsecState::default();
    let pw = PasswordHash::new(b"pw", [1; SALT_BYTES], 2);
    s.clients.insert("plain".into(), Client { password: Some(pw.clone()), ..Client::default() });
    s.clients.insert(
        "bound".into(),
        Client { password: Some(pw.clone()), clientid: Some("dev-1".into()), ..Client::default() },
    );
    s.clients.insert("off".into(), Client { password: Some(pw), disabled: true, ..Client::default() });
    s.clients.insert("nopw".into(), Client::default());
    assert_eq!(s.authenticate(Some("plain"), Some(b"pw"), "any"), Ok(ClientRef::user("plain")));
    assert_eq!(s.authenticate(Some("plain"), Some(b"pw!"), "any"), Err(AuthError::BadPassword));
    assert_eq!(s.authenticate(Some("bound"), Some(b"pw"), "dev-1"), Ok(ClientRef::user("bound")));
    assert_eq!(s.authenticate(Some("bound"), Some(b"pw"), "dev-2"), Err(AuthError::ClientIdMismatch));
    assert_eq!(s.authenticate(Some("off"), Some(b"pw"), "x"), Err(AuthError::Disabled));
    assert_eq!(s.authenticate(Some("nopw"), Some(b""), "x"), Err(AuthError::NoPassword));
    assert_eq!(s.authenticate(Some("ghost"), Some(b"pw"), "x"), Err(AuthError::UnknownClient));
    assert_eq!(s.authenticate(Some("plain"), None, "x"), Err(AuthError::NoCredentials));
    assert_eq!(s.authenticate(None, Some(b"pw"), "x"), Err(AuthError::NoCredentials));
    assert!(AuthError::UnknownClient.is_defer() && !AuthError::Disabled.is_defer());
}

#[test]
fn filter_covers_like_sub_acl_check() {
    // The plugin's own sub_matches_sub.c test table.
    for (acl, sub, want) in [
        ("foo/+/bar", "foo/#", false),
        ("foo/+/ba℞/#", "foo/baz/ba℞", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/+", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/#", true),
        ("foo/+/ba℞/#", "foo/baz/+/#", false),
        ("/+//#", "/foo///#", true),
        ("#", "#", true),
        ("#", "+", true),
        ("/#", "+", false),
        ("/#", "/+", true),
        ("/+", "#", false),
        ("/+", "+", false),
        ("+/+", "topic/topic", true),
        ("+/+", "topic/topic/", false),
        ("+", "#", false),
        ("+", "+", true),
        ("a/b/c/d/e", "a/b/c/d/e", true),
        ("a/b/ /d/e", "a/b/c/d/e", false),
    ] {
        assert_eq!(filter_covers(acl, sub), want, "{acl} covers {sub}");
    }
}

/// The index (`DynsecState::reindex`) answers every check as the slow path
/// does: roles by priority, literal before pattern, groups after the
/// client's own roles, the anonymous group, unknown users.
#[test]
fn the_index_answers_as_the_slow_path() {
    let r1 = role(vec![
        acl(PublishClientSend, "a/#", 5, true),
        acl(PublishClientSend, "a/secret", 9, false),
        acl(SubscribeLiteral, "a/+", 0, false),
        acl(SubscribePattern, "a/#", 1, true),
        acl(UnsubscribeLiteral, "keep", 0, false),
    ]);
    let r2 = role(vec![
        acl(PublishClientReceive, "b/#", 0, false),
        acl(PublishClientSend, "b/+", 0, true),
        acl(UnsubscribePattern, "#", 0, true),
        acl(SubscribePattern, "b/+/c", 0, true),
    ]);
    let r3 = role(vec![acl(PublishClientReceive, "#", -1, true), acl(SubscribeLiteral, "c", 3, true)]);
    let mut slow = state(
        vec![("r1", r1), ("r2", r2), ("r3", r3)],
        &[("r2", 1), ("missing", 9)],
        &[("g1", 5, &[("r1", 0)]), ("g2", 1, &[("r3", 2), ("r2", 1)])],
    );
    slow.anonymous_group = Some("g2".into());
    slow.default_access.set(DefaultAclType::Subscribe, true);
    let mut fast = slow.clone();
    fast.reindex();
    assert!(!slow.index.is_valid() && fast.index.is_valid());
    let topics = ["a/b", "a/secret", "a/+", "a/#", "b/x", "b/x/c", "b/+/c", "c", "keep", "$CONTROL/x", "z"];
    let accesses = [Access::PublishClientSend, Access::PublishClientReceive, Access::Subscribe, Access::Unsubscribe];
    let mut checked = 0;
    for user in [Some("u"), Some("nobody"), None] {
        for t in topics {
            for a in accesses {
                assert_eq!(fast.check_user(user, t, a), slow.check_user(user, t, a), "{user:?} {t} {a:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * topics.len() * accesses.len());
    // A change leaves the index stale: checks take the slow path until the
    // next reindex, never a stale answer.
    apply(&mut fast, &DynsecChange::RemoveClientRole { username: "u".into(), rolename: "r2".into() }).unwrap();
    assert!(!fast.index.is_valid());
    apply(&mut slow, &DynsecChange::RemoveClientRole { username: "u".into(), rolename: "r2".into() }).unwrap();
    assert_eq!(
        fast.check_user(Some("u"), "b/x", Access::PublishClientSend),
        slow.check_user(Some("u"), "b/x", Access::PublishClientSend)
    );
}
