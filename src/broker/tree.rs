//! The subscription index: a tree of topic levels. Each node holds the
//! plain subscriptions and the shared-subscription groups whose filter ends
//! there. Matching walks one path per topic level plus the `+` and `#`
//! branches, so its cost depends on the topic, not on the number of
//! subscriptions. Children are ordered (BTreeMap) so that the order of
//! matches is the same on every node and after a snapshot restore.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::mqtt::SubOptions;

/// One subscription of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubEntry {
    pub opts: SubOptionsRepr,
    /// v5 Subscription Identifier, if the SUBSCRIBE carried one.
    pub sub_id: Option<u32>,
}

/// `SubOptions` in a serialisable, fixed-width form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubOptionsRepr(pub u8);

impl SubOptionsRepr {
    pub fn from_opts(o: SubOptions) -> Self {
        SubOptionsRepr(
            (o.qos as u8)
                | (o.no_local as u8) << 2
                | (o.retain_as_published as u8) << 3
                | (o.retain_handling as u8) << 4,
        )
    }
    pub fn qos(self) -> crate::mqtt::QoS {
        crate::mqtt::QoS::from_u8(self.0 & 3).unwrap_or_default()
    }
    pub fn no_local(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn retain_as_published(self) -> bool {
        self.0 & 8 != 0
    }
    pub fn retain_handling(self) -> u8 {
        (self.0 >> 4) & 3
    }
}

#[derive(Debug, Default)]
pub struct SharedGroup {
    pub members: BTreeMap<Rc<str>, SubEntry>,
    /// Round-robin position. Not part of the replicated state: which member
    /// receives a message is a leader-local choice.
    pub cursor: Cell<u64>,
}

#[derive(Debug, Default)]
struct Node {
    children: BTreeMap<Box<str>, Node>,
    /// How many of `children` are "#" or "+": matching looks them up
    /// only when there are any.
    wild: u8,
    subs: BTreeMap<Rc<str>, SubEntry>,
    shared: BTreeMap<Box<str>, SharedGroup>,
}

fn is_wild(level: &str) -> bool {
    level == "#" || level == "+"
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_empty()
    }

    /// The "#" or "+" child.
    fn wild_child(&self, level: &str) -> Option<&Node> {
        if self.wild == 0 {
            return None;
        }
        self.children.get(level)
    }
}

#[derive(Debug, Default)]
pub struct TopicTree {
    root: Node,
    count: usize,
}

impl TopicTree {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Insert or replace; returns true if the subscription existed already.
    pub fn insert(&mut self, filter: &str, share: Option<&str>, client: &Rc<str>, e: SubEntry) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            if is_wild(level) && !node.children.contains_key(level) {
                node.wild += 1;
            }
            node = node.children.entry(level.into()).or_default();
        }
        let old = match share {
            None => node.subs.insert(client.clone(), e),
            Some(g) => node.shared.entry(g.into()).or_default().members.insert(client.clone(), e),
        };
        if old.is_none() {
            self.count += 1;
        }
        old.is_some()
    }

    /// Remove; returns true if it existed. Empty branches are pruned.
    pub fn remove(&mut self, filter: &str, share: Option<&str>, client: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_in(&mut self.root, &levels, share, client);
        if removed {
            self.count -= 1;
        }
        removed
    }

    fn remove_in(node: &mut Node, levels: &[&str], share: Option<&str>, client: &str) -> bool {
        match levels.split_first() {
            None => match share {
                None => node.subs.remove(client).is_some(),
                Some(g) => {
                    let Some(group) = node.shared.get_mut(g) else { return false };
                    let r = group.members.remove(client).is_some();
                    if group.members.is_empty() {
                        node.shared.remove(g);
                    }
                    r
                }
            },
            Some((first, rest)) => {
                let Some(child) = node.children.get_mut(*first) else { return false };
                let r = Self::remove_in(child, rest, share, client);
                if child.is_empty() {
                    node.children.remove(*first);
                    if is_wild(first) {
                        node.wild -= 1;
                    }
                }
                r
            }
        }
    }

    /// Call `plain` for every plain subscription matching `topic`, and
    /// `shared` for every shared group with a matching filter.
    pub fn for_each_match<'a>(
        &'a self,
        topic: &str,
        plain: &mut dyn FnMut(&'a Rc<str>, &'a SubEntry),
        shared: &mut dyn FnMut(&'a SharedGroup),
    ) {
        // [MQTT-4.7.2-1] topics starting with '$' are not matched by a
        // filter starting with a wildcard.
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, Some(topic), dollar, plain, shared);
    }

    fn visit<'a>(
        node: &'a Node,
        plain: &mut dyn FnMut(&'a Rc<str>, &'a SubEntry),
        shared: &mut dyn FnMut(&'a SharedGroup),
    ) {
        for (c, e) in &node.subs {
            plain(c, e);
        }
        for g in node.shared.values() {
            shared(g);
        }
    }

    /// `levels`: the topic's levels not matched yet, '/'-separated (None:
    /// none left; `Some("")` is one empty level).
    fn walk<'a>(
        node: &'a Node,
        levels: Option<&str>,
        skip_wild: bool,
        plain: &mut dyn FnMut(&'a Rc<str>, &'a SubEntry),
        shared: &mut dyn FnMut(&'a SharedGroup),
    ) {
        let Some(levels) = levels else {
            Self::visit(node, plain, shared);
            // "sport/#" also matches "sport".
            if let Some(h) = node.wild_child("#") {
                Self::visit(h, plain, shared);
            }
            return;
        };
        // (A byte loop: levels are short, where a memchr search costs more.)
        let (first, rest) = match levels.bytes().position(|b| b == b'/') {
            Some(i) => (&levels[..i], Some(&levels[i + 1..])),
            None => (levels, None),
        };
        if !skip_wild {
            if let Some(h) = node.wild_child("#") {
                Self::visit(h, plain, shared);
            }
            if let Some(p) = node.wild_child("+") {
                Self::walk(p, rest, false, plain, shared);
            }
        }
        if let Some(c) = node.children.get(first) {
            Self::walk(c, rest, false, plain, shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(t: &TopicTree, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        t.for_each_match(topic, &mut |c, _| out.push(c.to_string()), &mut |_| {});
        out.sort();
        out
    }

    /// The count of wildcard children follows inserts and removals, so
    /// that a removed "+" or "#" no longer matches and a new one does.
    #[test]
    fn wildcard_children_match_after_inserts_and_removals() {
        let mut t = TopicTree::default();
        let e = SubEntry { opts: SubOptionsRepr(1), sub_id: None };
        let (a, b, c): (Rc<str>, Rc<str>, Rc<str>) = ("a".into(), "b".into(), "c".into());
        t.insert("s/+/x", None, &a, e);
        t.insert("s/#", None, &b, e);
        t.insert("s/y/x", None, &c, e);
        assert_eq!(matches(&t, "s/y/x"), ["a", "b", "c"]);
        assert_eq!(matches(&t, "s"), ["b"], "s/# matches its parent level [MQTT-4.7.1-2]");
        assert!(t.remove("s/+/x", None, "a"));
        assert_eq!(matches(&t, "s/y/x"), ["b", "c"]);
        assert!(t.remove("s/#", None, "b"));
        assert_eq!(matches(&t, "s/y/x"), ["c"]);
        assert_eq!(matches(&t, "s/z/x"), Vec::<String>::new());
        t.insert("s/+/x", None, &a, e);
        assert_eq!(matches(&t, "s/z/x"), ["a"]);
        assert_eq!(matches(&t, "s//x"), ["a"], "an empty level is a level");
        assert_eq!(matches(&t, "s/z/x/"), Vec::<String>::new());
        t.insert("+/+/x/", None, &b, e);
        assert_eq!(matches(&t, "s/z/x/"), ["b"]);
        assert_eq!(matches(&t, "$s/z/x/"), Vec::<String>::new(), "[MQTT-4.7.2-1]");
    }
}
