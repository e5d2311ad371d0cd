use super::*;
use Access::{Read, Subscribe, Write};

fn acl(text: &str) -> AclFile {
    AclFile::parse_str(text, "acl").expect("valid acl")
}

fn err(text: &str) -> String {
    AclFile::parse_str(text, "acl").unwrap_err().to_string()
}

const ALL: [Access; 3] = [Read, Write, Subscribe];

#[test]
fn topic_lines_before_first_user_are_for_anonymous_clients_only() {
    let a = acl("topic read public/#\n\nuser alice\ntopic alice/#\n");
    assert!(a.check("c1", None, "public/news", Read));
    assert!(a.check("c1", None, "public/#", Subscribe));
    assert!(!a.check("c1", None, "public/news", Write));
    assert!(!a.check("c1", None, "alice/x", Read));
    // A named user does not get the anonymous rules.
    assert!(!a.check("c1", Some("alice"), "public/news", Read));
    assert!(a.check("c1", Some("alice"), "alice/x", Read));
    assert!(a.check("c1", Some("alice"), "alice/x", Write));
    // Nor does an unknown user.
    assert!(!a.check("c1", Some("bob"), "public/news", Read));
}

#[test]
fn users_with_no_rules_are_denied_everything() {
    let a = acl("user alice\ntopic alice/#\nuser bob\n");
    for access in ALL {
        for topic in ["alice/x", "bob/x", "x"] {
            assert!(!a.check("bob", Some("bob"), topic, access), "{topic} {access:?}");
            assert!(!a.check("carol", Some("carol"), topic, access));
            assert!(!a.check("anon", None, topic, access));
        }
        assert!(!a.check("bob", Some("bob"), "#", Subscribe));
    }
}

#[test]
fn empty_file_denies_everything() {
    let a = acl("# nothing\n\n");
    assert_eq!(a.rule_count(), 0);
    for access in ALL {
        assert!(!a.check("c", None, "a", access));
        assert!(!a.check("c", Some("u"), "a", access));
    }
}

#[test]
fn access_types() {
    let a = acl("user u\ntopic read r/#\ntopic write w/#\ntopic readwrite rw/#\ntopic both/#\n");
    let can = |t: &str, x| a.check("c", Some("u"), t, x);
    assert!(can("r/1", Read) && can("r/1", Subscribe) && !can("r/1", Write));
    assert!(!can("w/1", Read) && !can("w/1", Subscribe) && can("w/1", Write));
    assert!(can("rw/1", Read) && can("rw/1", Subscribe) && can("rw/1", Write));
    assert!(can("both/1", Read) && can("both/1", Subscribe) && can("both/1", Write));
    assert!(!can("other", Read));
}

#[test]
fn repeated_user_sections_accumulate() {
    let a = acl("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n");
    assert!(a.check("c", Some("u"), "a", Read));
    assert!(a.check("c", Some("u"), "c", Read));
    assert!(!a.check("c", Some("u"), "b", Read));
    assert!(a.check("c", Some("v"), "b", Read));
    assert_eq!(a.rule_count(), 3);
}

#[test]
fn pattern_substitution() {
    let a = acl("user alice\ntopic read x\n\
         pattern write devices/%c/state\n\
         pattern read users/%u/#\n\
         pattern readwrite mixed/%u/%c\n\
         pattern read pre%cpost/x\n");
    // Patterns apply to every client, including ones after a user line.
    assert!(a.check("dev1", Some("alice"), "devices/dev1/state", Write));
    assert!(a.check("dev1", Some("bob"), "devices/dev1/state", Write));
    assert!(a.check("dev1", None, "devices/dev1/state", Write));
    assert!(!a.check("dev1", Some("bob"), "devices/dev2/state", Write));
    assert!(!a.check("dev1", Some("bob"), "devices/dev1/state", Read));
    // %u
    assert!(a.check("c", Some("bob"), "users/bob/inbox", Read));
    assert!(a.check("c", Some("bob"), "users/bob/#", Subscribe));
    assert!(!a.check("c", Some("bob"), "users/alice/inbox", Read));
    assert!(!a.check("c", Some("bob"), "users/+/inbox", Subscribe));
    // A %u pattern never matches an anonymous client, not even "users/%u".
    assert!(!a.check("c", None, "users/%u/inbox", Read));
    assert!(!a.check("c", None, "users//inbox", Read));
    // Both in one pattern.
    assert!(a.check("c9", Some("bob"), "mixed/bob/c9", Write));
    assert!(!a.check("c9", Some("bob"), "mixed/c9/bob", Write));
    // Substitution also happens inside a level, as in Mosquitto.
    assert!(a.check("c9", None, "prec9post/x", Read));
    // The user's own topic rules still apply alongside the patterns.
    assert!(a.check("c", Some("alice"), "x", Read));
}

#[test]
fn dangerous_ids_are_denied_when_patterns_exist() {
    let a = acl("user a+b\ntopic read t\npattern read p/%c\n");
    assert!(!a.check("c", Some("a+b"), "t", Read));
    assert!(!a.check("x#", None, "p/x#", Read));
    assert!(!a.check("+", Some("u"), "p/+", Subscribe));
    assert!(a.check("ok", None, "p/ok", Read));
    // Without patterns there is nothing to inject into.
    let b = acl("user a+b\ntopic read t\n");
    assert!(b.check("c#", Some("a+b"), "t", Read));
}

#[test]
fn deny_takes_precedence() {
    // Deny after the grant still wins (Mosquitto sorts denies first).
    let a = acl("user u\ntopic readwrite a/#\ntopic deny a/secret\ntopic deny a/+/private\n\
         user v\ntopic deny b/x\ntopic b/#\n");
    let u = |t: &str, x| a.check("c", Some("u"), t, x);
    assert!(u("a/open", Read) && u("a/open", Write));
    for x in ALL {
        assert!(!u("a/secret", x), "{x:?}");
        assert!(!u("a/q/private", x), "{x:?}");
    }
    assert!(a.check("c", Some("v"), "b/y", Write));
    assert!(!a.check("c", Some("v"), "b/x", Write));
    // A deny rule also beats a pattern grant and vice versa.
    let b =
        acl("user u\ntopic deny dev/c1/cmd\ntopic read x/#\npattern deny x/%u/private\npattern readwrite dev/%c/#\n");
    assert!(b.check("c1", Some("u"), "dev/c1/state", Write));
    assert!(!b.check("c1", Some("u"), "dev/c1/cmd", Write));
    assert!(b.check("c1", Some("u"), "x/u/public", Read));
    assert!(!b.check("c1", Some("u"), "x/u/private", Read));
    // Anonymous deny.
    let c = acl("topic deny public/admin\ntopic public/#\n");
    assert!(c.check("c", None, "public/a", Write));
    assert!(!c.check("c", None, "public/admin", Write));
}

#[test]
fn subscribe_needs_a_rule_covering_the_whole_filter() {
    let a = acl("user u\ntopic read a/#\ntopic read b/c\ntopic read s/+/t\ntopic write w/#\n");
    let sub = |f: &str| a.check("c", Some("u"), f, Subscribe);
    // a/# covers everything under a, and a itself.
    for f in ["a/#", "a/+/b", "a/x/y/z", "a", "a/+", "a/+/#"] {
        assert!(sub(f), "{f}");
    }
    // A literal rule covers only itself.
    assert!(sub("b/c"));
    for f in ["b/#", "b/+", "#", "+/c", "b"] {
        assert!(!sub(f), "{f}");
    }
    // + rules cover + and literals, not #.
    assert!(sub("s/+/t") && sub("s/x/t"));
    assert!(!sub("s/#") && !sub("s/+/#") && !sub("s/+/t/u"));
    // write-only rules do not allow subscribing.
    assert!(!sub("w/x"));
    // Invalid filters are refused.
    assert!(!sub("a/#/b") && !sub("a/b+") && !sub(""));
}

#[test]
fn subscribe_and_deny() {
    let a = acl("user u\ntopic read a/#\ntopic deny a/secret/#\n");
    let sub = |f: &str| a.check("c", Some("u"), f, Subscribe);
    // A deny covering only part of the filter does not refuse the subscription;
    // the broker filters deliveries with Access::Read.
    assert!(sub("a/#"));
    assert!(!a.check("c", Some("u"), "a/secret/x", Read));
    // A deny covering the whole filter refuses it.
    assert!(!sub("a/secret/#") && !sub("a/secret/+") && !sub("a/secret"));
}

#[test]
fn shared_subscriptions_are_checked_without_the_prefix() {
    let a = acl("user u\ntopic read jobs/#\n");
    assert!(a.check("c", Some("u"), "$share/workers/jobs/#", Subscribe));
    assert!(!a.check("c", Some("u"), "$share/workers/other/#", Subscribe));
    assert!(!a.check("c", Some("u"), "$share/workers", Subscribe));
    assert!(!a.check("c", Some("u"), "$share//jobs/x", Subscribe));
    assert!(!a.check("c", Some("u"), "$share/g+/jobs/x", Subscribe));
}

#[test]
fn dollar_topics_need_dollar_rules() {
    let a = acl("user u\ntopic #\ntopic read +/x\nuser admin\ntopic read $SYS/#\n");
    assert!(a.check("c", Some("u"), "anything/at/all", Write));
    assert!(!a.check("c", Some("u"), "$SYS/broker/uptime", Read));
    assert!(!a.check("c", Some("u"), "$SYS/x", Read));
    assert!(!a.check("c", Some("u"), "$SYS/#", Subscribe));
    assert!(a.check("c", Some("u"), "#", Subscribe));
    assert!(a.check("c", Some("admin"), "$SYS/broker/uptime", Read));
    assert!(a.check("c", Some("admin"), "$SYS/#", Subscribe));
    assert!(!a.check("c", Some("admin"), "#", Subscribe));
}

#[test]
fn read_and_write_take_topic_names() {
    let a = acl("topic #\n");
    assert!(a.check("c", None, "a/b", Write));
    assert!(!a.check("c", None, "a/+", Write));
    assert!(!a.check("c", None, "a/#", Read));
    assert!(!a.check("c", None, "", Read));
    // Empty levels are ordinary levels.
    assert!(a.check("c", None, "/a//b/", Read));
}

#[test]
fn topics_may_contain_spaces_with_an_explicit_access() {
    let a = acl("user  bob smith \ntopic read  room 1/temp \npattern write out/%u/x y\n");
    assert!(a.check("c", Some("bob smith"), "room 1/temp", Read));
    assert!(!a.check("c", Some("bob smith"), "room", Read));
    assert!(a.check("c", Some("bob smith"), "out/bob smith/x y", Write));
    assert!(err("topic room 1/temp").starts_with("acl:1: topic: \"room\" is not an access type"));
}

#[test]
fn whitespace_comments_crlf_and_bom() {
    let a = acl("\u{feff}# c\r\n  \r\n\tuser\tu\r\n  topic\tread\ta/b  \r\n   # indented comment\r\n");
    assert!(a.check("c", Some("u"), "a/b", Read));
    assert_eq!(a.rule_count(), 1);
}

#[test]
fn single_word_after_topic_is_the_topic() {
    // Mosquitto: with one word it is the topic, even if it reads "read".
    let a = acl("topic read\n");
    assert!(a.check("c", None, "read", Write));
}

#[test]
fn parse_errors_name_file_and_line() {
    assert_eq!(
        err("user u\n\ntopic readonly a/b"),
        "acl:3: topic: \"readonly\" is not an access type (read, write, readwrite or deny; a topic containing spaces needs one)"
    );
    assert_eq!(err("# x\nuser"), "acl:2: user: missing username");
    assert_eq!(err("topic"), "acl:1: topic: missing topic");
    assert_eq!(err("pattern   "), "acl:1: pattern: missing topic");
    assert_eq!(err("topic read a/#/b"), "acl:1: topic: \"a/#/b\" is not a valid topic filter");
    assert_eq!(err("pattern read a/b+"), "acl:1: pattern: \"a/b+\" is not a valid topic filter");
    assert_eq!(err("topic a\nusers bob"), "acl:2: unknown keyword \"users\" (expected user, topic or pattern)");
}

#[test]
fn load_from_file_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl");
    std::fs::write(&path, "user u\ntopic read a\n").unwrap();
    let a = AclFile::load(&path).unwrap();
    assert!(a.check("c", Some("u"), "a", Read));
    std::fs::write(&path, "user u\ntopic bogus a\n").unwrap();
    let e = AclFile::load(&path).unwrap_err().0.remove(0);
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.line, 2);
    let e = AclFile::load(&dir.path().join("missing")).unwrap_err().0.remove(0);
    assert_eq!(e.line, 0);
    assert!(e.message.starts_with("cannot read:"));
}

#[test]
fn matcher() {
    let yes = [
        ("#", "a"),
        ("#", "a/b/c"),
        ("a/#", "a"),
        ("a/#", "a/b/c"),
        ("a/+", "a/b"),
        ("+/+", "a/b"),
        ("+", "a"),
        ("+/b", "/b"),
        ("a/+/c", "a//c"),
        ("$SYS/#", "$SYS/x"),
        ("$SYS/+", "$SYS/x"),
        ("a/b", "a/b"),
    ];
    let no = [
        ("a/+", "a"),
        ("a/+", "a/b/c"),
        ("+", "a/b"),
        ("a/b", "a/b/c"),
        ("a/b", "a"),
        ("a/b", "A/b"),
        ("#", "$SYS/x"),
        ("+/x", "$SYS/x"),
        ("$SYS/#", "SYS/x"),
    ];
    for (f, t) in yes {
        assert!(filter_matches(f, t), "{f} should match {t}");
    }
    for (f, t) in no {
        assert!(!filter_matches(f, t), "{f} should not match {t}");
    }
}

#[test]
fn coverage() {
    let yes = [
        ("#", "#"),
        ("#", "a/+/#"),
        ("a/#", "a"),
        ("a/#", "a/#"),
        ("a/#", "a/+/b"),
        ("+/+", "+/b"),
        ("+/#", "+/+/+"),
        ("a/b", "a/b"),
        ("$SYS/#", "$SYS/+/x"),
    ];
    let no = [
        ("a/b", "a/#"),
        ("a/b", "a/+"),
        ("a/+", "a/#"),
        ("a/+", "a"),
        ("a/#", "#"),
        ("+", "#"),
        ("+/b", "+/+"),
        ("#", "$SYS/#"),
        ("+/#", "$SYS/x"),
        ("$SYS/#", "+/x"),
    ];
    for (r, s) in yes {
        assert!(filter_covers(r, s), "{r} should cover {s}");
    }
    for (r, s) in no {
        assert!(!filter_covers(r, s), "{r} should not cover {s}");
    }
    // Coverage implies matching for sample topics.
    for (r, s) in yes {
        let topic = s.replace('#', "q/r").replace('+', "p");
        assert!(filter_matches(r, &topic), "{r} vs {topic}");
    }
}

#[test]
fn substitution_edge_cases() {
    assert_eq!(substitute("a/%c", "id", None).as_deref(), Some("a/id"));
    assert_eq!(substitute("a/%u", "id", None), None);
    assert_eq!(substitute("a/%u/%u", "id", Some("u")).as_deref(), Some("a/u/u"));
    assert_eq!(substitute("%%c/%x", "id", None).as_deref(), Some("%id/%x"));
    assert_eq!(substitute("50%", "id", None).as_deref(), Some("50%"));
}
