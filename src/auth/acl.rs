//! Mosquitto ACL files (`acl_file`, see mosquitto.conf(5)).
//!
//! ```text
//! # Rules before the first `user` line apply to anonymous clients only.
//! topic read public/#
//!
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//!
//! # Patterns apply to every client, whatever `user` line they follow.
//! pattern write devices/%c/state
//! pattern read users/%u/#
//! ```
//!
//! Semantics, as in Mosquitto 2.0:
//!
//! * `topic [read|write|readwrite|deny] TOPIC` — the access word is optional
//!   (default `readwrite`) unless TOPIC contains a space. TOPIC is an MQTT
//!   topic filter (`+`, `#`).
//! * `topic` lines before the first `user` line apply to anonymous clients
//!   (no username). After `user NAME` they apply to clients that logged in
//!   as NAME. A client with a username never gets the anonymous rules.
//! * `pattern` lines apply to all clients; `%c` is replaced by the client id
//!   and `%u` by the username (a pattern containing `%u` never matches an
//!   anonymous client). When the file has any pattern, a client whose
//!   username or client id contains `+` or `#` is denied everything.
//! * Anything not granted is denied; a client with no applicable rule is
//!   denied everything, and so is everyone when the file has no rules.
//! * `deny` wins: a matching `deny` rule refuses access whatever grants it.
//!   (Mosquitto's documentation says so; its implementation checks a user's
//!   `topic` rules before the patterns, so there a user grant beats a pattern
//!   deny. midge applies every deny first.)
//! * Topics starting with `$` are only matched by rules whose first level
//!   starts with `$` (so `#` does not grant `$SYS/...`).
//!
//! Subscriptions (midge; Mosquitto 2.0 does not check them at all and only
//! filters deliveries): a subscription is allowed when a `read`/`readwrite`
//! rule's filter covers every topic the subscription can match (`a/#` allows
//! subscribing to `a/+/b`; `a/b` does not allow `a/#`) and no `deny` rule
//! covers all of it. A deny that covers only part of a subscription does not
//! refuse it, so the broker must still check [`Access::Read`] for every
//! message it delivers. `$share/GROUP/` is stripped before the check.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use crate::config::{numbered_lines, read_text, split_first, ConfigError, ConfigErrors};

/// What a client wants to do with a topic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Receive a message published to a topic name.
    Read,
    /// Publish to a topic name.
    Write,
    /// Subscribe with a topic filter.
    Subscribe,
    /// Unsubscribe from a topic filter. An acl_file allows it always (as
    /// Mosquitto's); dynamic security checks it.
    Unsubscribe,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Grant::Read | Grant::ReadWrite, Access::Read | Access::Subscribe)
                | (Grant::Write | Grant::ReadWrite, Access::Write)
        )
    }
}

#[derive(Clone, Debug)]
struct Rule {
    grant: Grant,
    filter: String,
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl AclFile {
    /// Reads an ACL file. Errors name the file as given and the line.
    pub fn load(path: &Path) -> Result<AclFile, ConfigErrors> {
        let name = path.display().to_string();
        let text = read_text(path, &name)?;
        AclFile::parse_str(&text, &name)
    }

    /// Parses ACL text; `file_name` is used in error messages. Every line
    /// in error is reported.
    pub fn parse_str(text: &str, file_name: &str) -> Result<AclFile, ConfigErrors> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        let mut errors = Vec::new();
        for (line, raw) in numbered_lines(text) {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut err = |msg: String| errors.push(ConfigError::new(file_name, line, msg));
            let (keyword, rest) = split_first(l);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        err("user: missing username".into());
                        continue;
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (first, remainder) = split_first(rest);
                    if first.is_empty() {
                        err(format!("{keyword}: missing topic"));
                        continue;
                    }
                    let (grant, filter) = if remainder.is_empty() {
                        (Grant::ReadWrite, first)
                    } else {
                        let grant = match first {
                            "read" => Grant::Read,
                            "write" => Grant::Write,
                            "readwrite" => Grant::ReadWrite,
                            "deny" => Grant::Deny,
                            other => {
                                err(format!(
                                    "{keyword}: \"{other}\" is not an access type (read, write, \
                                     readwrite or deny; a topic containing spaces needs one)"
                                ));
                                continue;
                            }
                        };
                        (grant, remainder)
                    };
                    if !valid_filter(filter) {
                        err(format!("{keyword}: \"{filter}\" is not a valid topic filter"));
                        continue;
                    }
                    let has_subst = filter.contains("%c") || filter.contains("%u");
                    let rule = Rule { grant, filter: filter.to_string() };
                    if keyword == "pattern" {
                        if !has_subst {
                            log::warn!("{file_name}:{line}: pattern \"{filter}\" contains neither %c nor %u");
                        }
                        acl.patterns.push(rule);
                    } else {
                        if has_subst {
                            log::warn!(
                                "{file_name}:{line}: %c and %u are only replaced in pattern lines, \
                                 not in topic lines"
                            );
                        }
                        match &user {
                            None => acl.anonymous.push(rule),
                            Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                        }
                    }
                }
                other => err(format!("unknown keyword \"{other}\" (expected user, topic or pattern)")),
            }
        }
        ConfigErrors::check(acl, errors)
    }

    /// Number of `topic` and `pattern` rules.
    pub fn rule_count(&self) -> usize {
        self.anonymous.len() + self.patterns.len() + self.users.values().map(Vec::len).sum::<usize>()
    }

    /// Is `client_id` / `username` allowed `access` to `topic`?
    ///
    /// For [`Access::Read`] and [`Access::Write`] `topic` is a topic name (a
    /// name containing wildcards is denied). For [`Access::Subscribe`] it is a
    /// topic filter, possibly `$share/GROUP/FILTER`; see the module docs for
    /// when a subscription is allowed.
    pub fn check(&self, client_id: &str, username: Option<&str>, topic: &str, access: Access) -> bool {
        let subject = match access {
            Access::Unsubscribe => return true,
            Access::Subscribe => match strip_share(topic) {
                Some(f) if valid_filter(f) => f,
                _ => return false,
            },
            Access::Read | Access::Write => {
                if !valid_topic_name(topic) {
                    return false;
                }
                topic
            }
        };
        if !self.patterns.is_empty() && (has_wildcard(client_id) || username.is_some_and(has_wildcard)) {
            return false;
        }
        let direct: &[Rule] = match username {
            None => &self.anonymous,
            Some(u) => self.users.get(u).map_or(&[], Vec::as_slice),
        };
        let substituted: Vec<(Grant, Cow<'_, str>)> = self
            .patterns
            .iter()
            .filter_map(|r| substitute(&r.filter, client_id, username).map(|f| (r.grant, f)))
            .collect();
        let rules = || {
            direct.iter().map(|r| (r.grant, r.filter.as_str())).chain(substituted.iter().map(|(g, f)| (*g, f.as_ref())))
        };
        let applies = |filter: &str| match access {
            Access::Subscribe | Access::Unsubscribe => filter_covers(filter, subject),
            Access::Read | Access::Write => filter_matches(filter, subject),
        };
        if rules().any(|(g, f)| g == Grant::Deny && applies(f)) {
            return false;
        }
        rules().any(|(g, f)| g.allows(access) && applies(f))
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['+', '#'])
}

/// Replaces `%c` and `%u` (left to right, as Mosquitto does); `None` when the
/// pattern needs a username and the client has none.
fn substitute<'a>(pattern: &'a str, client_id: &str, username: Option<&str>) -> Option<Cow<'a, str>> {
    if !pattern.contains('%') {
        return Some(Cow::Borrowed(pattern));
    }
    if username.is_none() && pattern.contains("%u") {
        return None;
    }
    let mut out = String::with_capacity(pattern.len() + client_id.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('c')) => {
                chars.next();
                out.push_str(client_id);
            }
            ('%', Some('u')) => {
                chars.next();
                out.push_str(username.unwrap_or_default());
            }
            _ => out.push(c),
        }
    }
    Some(Cow::Owned(out))
}

/// `$share/GROUP/FILTER` → `FILTER`; other filters unchanged; `None` when
/// malformed.
fn strip_share(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        None => Some(filter),
        Some(rest) => {
            let (group, f) = rest.split_once('/')?;
            (!group.is_empty() && !has_wildcard(group) && !f.is_empty()).then_some(f)
        }
    }
}

fn valid_topic_name(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0'])
}

/// MQTT topic filter syntax: `+` and `#` fill a whole level, `#` only last.
fn valid_filter(f: &str) -> bool {
    if f.is_empty() || f.contains('\0') {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(l) = levels.next() {
        let last = levels.peek().is_none();
        let ok = match l {
            "+" => true,
            "#" => last,
            _ => !has_wildcard(l),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A rule whose first level is a wildcard does not match `$` topics.
fn dollar_blocked(filter: &str, topic: &str) -> bool {
    topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'))
}

/// Does `filter` match the topic name `topic`?
fn filter_matches(filter: &str, topic: &str) -> bool {
    if dollar_blocked(filter, topic) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Does `rule` match every topic that the filter `sub` matches?
fn filter_covers(rule: &str, sub: &str) -> bool {
    if dollar_blocked(rule, sub) {
        return false;
    }
    let (mut r, mut s) = (rule.split('/'), sub.split('/'));
    loop {
        match (r.next(), s.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
