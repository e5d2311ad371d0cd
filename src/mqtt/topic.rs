//! Topic names, topic filters and matching (§4.7), shared subscriptions
//! (§4.8.2). Pure functions on already-decoded (valid UTF-8, no U+0000)
//! strings.

/// Longest topic name or filter [MQTT-4.7.3-3].
const MAX_LEN: usize = 65_535;

/// A PUBLISH topic name: non-empty [MQTT-4.7.3-1], no '+' or '#'
/// [MQTT-4.7.1-1] (3.1.1) / [MQTT-4.7.0-1] (5.0), at most 65535 bytes
/// [MQTT-4.7.3-3] (UTF-8 validity assumed already).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_LEN && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// A topic filter: non-empty, at most 65535 bytes; '#' only as the whole
/// last level [MQTT-4.7.1-2]; '+' only as a whole level [MQTT-4.7.1-3].
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_LEN {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Does `filter` match `topic`? Implements '+' and '#' per §4.7, including
/// "sport/#" matching "sport" and '+' matching an empty level, and the rule
/// that topics starting with '$' are not matched by filters starting with a
/// wildcard [MQTT-4.7.2-1]. Comparison is byte-exact, no normalisation
/// [MQTT-4.7.3-4]. `filter` is assumed valid (see `valid_topic_filter`) and
/// not a "$share/..." filter (strip it with `parse_shared` first); on other
/// input the answer is unspecified but the function does not panic.
pub fn matches(filter: &str, topic: &str) -> bool {
    let (f, t) = (filter.as_bytes(), topic.as_bytes());
    if t.first() == Some(&b'$') && matches!(f.first(), Some(b'+' | b'#')) {
        return false;
    }
    // Byte by byte, one level at a time (no iterators to set up: an ACL
    // check runs this once per rule, and most rules differ in their first
    // bytes). `i` and `j` are at the start of a level of each.
    let (mut i, mut j) = (0, 0);
    let level_end = |b: &[u8], k: usize| k == b.len() || b[k] == b'/';
    loop {
        if f.get(i) == Some(&b'#') && level_end(f, i + 1) {
            // '#' matches the parent level and any number of child levels.
            return true;
        }
        if f.get(i) == Some(&b'+') && level_end(f, i + 1) {
            i += 1;
            while j < t.len() && t[j] != b'/' {
                j += 1;
            }
        } else {
            while i < f.len() && f[i] != b'/' {
                if t.get(j) != Some(&f[i]) {
                    return false;
                }
                i += 1;
                j += 1;
            }
            if !level_end(t, j) {
                return false;
            }
        }
        match (i < f.len(), j < t.len()) {
            (false, false) => return true,
            (true, true) => {
                // Both at a '/'.
                i += 1;
                j += 1;
            }
            // The topic ended: only a last "/#" level still matches.
            (true, false) => return f[i..].starts_with(b"/#") && level_end(f, i + 2),
            (false, true) => return false,
        }
    }
}

/// Split a shared subscription "$share/{ShareName}/{filter}" into
/// (share_name, filter). Returns Ok(None) if not a shared subscription
/// (does not start with "$share/"), Err(()) if it starts with "$share/" but
/// is invalid: empty share name [MQTT-4.8.2-1], share name containing '+'
/// or '#' [MQTT-4.8.2-2], or no '/' and non-empty filter after the share name.
/// The returned filter still has to pass `valid_topic_filter`.
#[allow(clippy::result_unit_err)]
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, ()> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    // The share name ends at the first '/', so it cannot contain one.
    let Some((name, inner)) = rest.split_once('/') else {
        return Err(());
    };
    if name.is_empty() || name.contains(['+', '#']) || inner.is_empty() {
        return Err(());
    }
    Ok(Some((name, inner)))
}

/// Number of levels ('/'-separated) in a topic or filter: "a" -> 1,
/// "a/b" -> 2, "/" -> 2, "" -> 1.
pub fn level_count(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'/').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("a//b"));
        assert!(valid_topic_name("$SYS/broker/load"));
        assert!(valid_topic_name(" "));
        assert!(valid_topic_name("sport/tennis/player1"));
        // [MQTT-4.7.3-1]
        assert!(!valid_topic_name(""));
        // [MQTT-4.7.1-1] / [MQTT-4.7.0-1]
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a+b"));
        assert!(!valid_topic_name("#"));
        // [MQTT-4.7.3-3]
        assert!(valid_topic_name(&"x".repeat(65_535)));
        assert!(!valid_topic_name(&"x".repeat(65_536)));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a",
            "a/b",
            "a/#",
            "a/+",
            "+/+",
            "/+",
            "+/",
            "/#",
            "a/+/b",
            "+/tennis/#",
            "sport/+/player1",
            "a//b",
            "/",
            "$SYS/#",
            "$share/g/a/#",
            "//",
        ] {
            assert!(valid_topic_filter(ok), "{ok:?} should be valid");
        }
        // [MQTT-4.7.1-2]: '#' alone and last
        for bad in ["a/#/b", "#a", "a#", "a/b#", "#/", "##", "sport/tennis#", "a/#/#"] {
            assert!(!valid_topic_filter(bad), "{bad:?} should be invalid");
        }
        // [MQTT-4.7.1-3]: '+' a whole level
        for bad in ["a+", "+a", "a/+b", "sport+", "a/b+/c", "++"] {
            assert!(!valid_topic_filter(bad), "{bad:?} should be invalid");
        }
        // [MQTT-4.7.3-1] / [MQTT-4.7.3-3]
        assert!(!valid_topic_filter(""));
        assert!(valid_topic_filter(&"x".repeat(65_535)));
        assert!(!valid_topic_filter(&"x".repeat(65_536)));
    }

    #[test]
    fn exact_matching() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a", "A")); // case-sensitive
        assert!(!matches("a/b", "a/b/"));
        assert!(matches("/", "/"));
        assert!(!matches("a", "/a"));
    }

    #[test]
    fn multi_level_wildcard() {
        // §4.7.1.2 examples
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
        assert!(matches("sport/#", "sport")); // '#' matches the parent level
        assert!(matches("#", "a"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(matches("a/#", "a/"));
        assert!(matches("a/#", "a//b"));
        assert!(!matches("a/#", "b"));
        assert!(!matches("a/#", "ab"));
        assert!(!matches("a/b/#", "a"));
    }

    #[test]
    fn single_level_wildcard() {
        // §4.7.1.3 examples
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // '+' matches an empty level
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/+/+", "//"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
        assert!(matches("+/b/#", "a/b"));
        assert!(matches("+/b/#", "a/b/c/d"));
        assert!(!matches("+/b/#", "a/c/d"));
        assert!(matches("+/#", "a"));
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/broker/load"));
        assert!(!matches("+/broker/load", "$SYS/broker/load"));
        assert!(!matches("+/#", "$SYS/x"));
        assert!(!matches("#", "$SYS"));
        assert!(!matches("+", "$foo"));
        assert!(matches("$SYS/#", "$SYS/broker/load"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/+/load", "$SYS/broker/load"));
        assert!(matches("$SYS/broker/load", "$SYS/broker/load"));
        // '$' only matters as the first character of the topic
        assert!(matches("#", "a/$SYS"));
        assert!(matches("+/+", "a/$b"));
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert_eq!(parse_shared("$SYS/#"), Ok(None));
        assert_eq!(parse_shared("$share"), Ok(None));
        assert_eq!(parse_shared("$shared/g/a"), Ok(None));
        assert_eq!(parse_shared("$share/g/a/b"), Ok(Some(("g", "a/b"))));
        assert_eq!(parse_shared("$share/consumer1/sport/tennis/+"), Ok(Some(("consumer1", "sport/tennis/+"))));
        assert_eq!(parse_shared("$share/g/#"), Ok(Some(("g", "#"))));
        assert_eq!(parse_shared("$share/g//"), Ok(Some(("g", "/"))));
        assert_eq!(parse_shared("$share/g/$SYS/#"), Ok(Some(("g", "$SYS/#"))));
        // [MQTT-4.8.2-1]: ShareName at least one character
        assert_eq!(parse_shared("$share//a"), Err(()));
        // [MQTT-4.8.2-2]: no '+' or '#' in ShareName, followed by '/' and a filter
        assert_eq!(parse_shared("$share/+/a"), Err(()));
        assert_eq!(parse_shared("$share/#/a"), Err(()));
        assert_eq!(parse_shared("$share/g+/a"), Err(()));
        assert_eq!(parse_shared("$share/g"), Err(()));
        assert_eq!(parse_shared("$share/g/"), Err(()));
        assert_eq!(parse_shared("$share/"), Err(()));
    }

    #[test]
    fn levels() {
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count("a/b"), 2);
        assert_eq!(level_count("a/b/c"), 3);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("a//b"), 3);
        assert_eq!(level_count("/finance"), 2);
        assert_eq!(level_count(""), 1);
        assert_eq!(level_count("#"), 1);
    }
}

#[cfg(test)]
mod matches_equivalence {
    /// The level-split definition `matches` had before it went byte by
    /// byte: the reference.
    fn reference(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let mut f = filter.split('/');
        let mut t = topic.split('/');
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(fl), Some(tl)) if fl == tl => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Every filter and topic of up to four characters over an alphabet
    /// with the separators and wildcards (valid or not), and some longer.
    #[test]
    fn byte_matcher_agrees_with_the_level_split_reference() {
        let alphabet = ['a', 'b', '/', '+', '#', '$'];
        let mut words = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for w in &frontier {
                for c in alphabet {
                    next.push(format!("{w}{c}"));
                }
            }
            words.extend(next.iter().cloned());
            frontier = next;
        }
        words.extend(
            ["sport/tennis/player1", "sport/+/player1", "sport/#", "+/+/+", "a/b/c/#", "$SYS/x", "//"]
                .map(String::from),
        );
        let mut n = 0u64;
        for f in &words {
            for t in &words {
                assert_eq!(super::matches(f, t), reference(f, t), "filter {f:?} topic {t:?}");
                n += 1;
            }
        }
        assert!(n > 2_000_000);
    }
}
