//! `Lazy<C>`: a collection that takes one pointer while empty. Most
//! sessions and connections hold no queue, no in-flight messages, no QoS 2
//! state and no topic aliases, yet each empty `BTreeMap` or `VecDeque`
//! costs 24-32 bytes in every one of them. A `Lazy` boxes its collection on
//! the first insert and drops the box when the collection becomes empty
//! again. Reads go through `Deref`; changes only through the methods below,
//! which keep that rule. It serializes exactly as the bare collection (the
//! state format does not change).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub struct Lazy<C>(Option<Box<C>>);

/// A collection with a shared empty value to read through.
pub trait Empty: Default + 'static {
    const EMPTY: &'static Self;
    fn is_empty_collection(&self) -> bool;
}

impl<K: 'static, V: 'static> Empty for BTreeMap<K, V> {
    const EMPTY: &'static Self = &BTreeMap::new();
    fn is_empty_collection(&self) -> bool {
        self.is_empty()
    }
}

impl<T: 'static> Empty for BTreeSet<T> {
    const EMPTY: &'static Self = &BTreeSet::new();
    fn is_empty_collection(&self) -> bool {
        self.is_empty()
    }
}

impl<T: 'static> Empty for VecDeque<T> {
    const EMPTY: &'static Self = &VecDeque::new();
    fn is_empty_collection(&self) -> bool {
        self.is_empty()
    }
}

impl<C: Empty> Lazy<C> {
    fn from_collection(c: C) -> Lazy<C> {
        Lazy(if c.is_empty_collection() { None } else { Some(Box::new(c)) })
    }

    /// Apply `f` to the collection (boxed for it), then drop the box if
    /// the collection is empty.
    pub(super) fn change<R>(&mut self, f: impl FnOnce(&mut C) -> R) -> R {
        let c = self.0.get_or_insert_with(Default::default);
        let r = f(c);
        if c.is_empty_collection() {
            self.0 = None;
        }
        r
    }

    /// Drop the box if its collection is empty (see `remove_keep`).
    pub fn trim(&mut self) {
        if self.0.as_ref().is_some_and(|c| c.is_empty_collection()) {
            self.0 = None;
        }
    }

    /// Like `change`, for changes that can only remove: nothing is boxed.
    pub(super) fn shrink<R>(&mut self, none: R, f: impl FnOnce(&mut C) -> R) -> R {
        if self.0.is_none() {
            return none;
        }
        self.change(f)
    }
}

impl<K: Ord + 'static, V: 'static> Lazy<BTreeMap<K, V>> {
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.change(|m| m.insert(k, v))
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.shrink(None, |m| m.remove(k))
    }

    /// `remove` that keeps the box, and the map's node, when the map
    /// becomes empty: for a map that fills and empties with every message
    /// (a session's in-flight window), whose next insert then allocates
    /// nothing. `trim` drops them once the map stays empty.
    pub fn remove_keep<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.as_mut().and_then(|m| m.remove(k))
    }
}

impl<T: Ord + 'static> Lazy<BTreeSet<T>> {
    pub fn insert(&mut self, v: T) -> bool {
        self.change(|s| s.insert(v))
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, v: &Q) -> bool
    where
        T: std::borrow::Borrow<Q>,
    {
        self.shrink(false, |s| s.remove(v))
    }

    pub fn pop_first(&mut self) -> Option<T> {
        self.shrink(None, |s| s.pop_first())
    }
}

impl<T: 'static> Lazy<VecDeque<T>> {
    pub fn push_back(&mut self, v: T) {
        self.change(|q| q.push_back(v))
    }

    pub fn pop_front(&mut self) -> Option<T> {
        self.shrink(None, |q| q.pop_front())
    }
}

impl<C: Empty> Deref for Lazy<C> {
    type Target = C;
    fn deref(&self) -> &C {
        match &self.0 {
            Some(c) => c,
            None => C::EMPTY,
        }
    }
}

impl<C> Default for Lazy<C> {
    fn default() -> Lazy<C> {
        Lazy(None)
    }
}

impl<C: Clone> Clone for Lazy<C> {
    fn clone(&self) -> Lazy<C> {
        Lazy(self.0.clone())
    }
}

impl<C: Empty + PartialEq> PartialEq for Lazy<C> {
    fn eq(&self, other: &Lazy<C>) -> bool {
        **self == **other
    }
}

impl<C: Empty + Eq> Eq for Lazy<C> {}

impl<C: Empty + fmt::Debug> fmt::Debug for Lazy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<C: Empty + Serialize> Serialize for Lazy<C> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<C: Empty> From<C> for Lazy<C> {
    fn from(c: C) -> Lazy<C> {
        Lazy::from_collection(c)
    }
}

impl<'de, C: Empty + Deserialize<'de>> Deserialize<'de> for Lazy<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lazy<C>, D::Error> {
        C::deserialize(d).map(Lazy::from_collection)
    }
}

impl<C: Empty + FromIterator<T>, T> FromIterator<T> for Lazy<C> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Lazy<C> {
        Lazy::from_collection(it.into_iter().collect())
    }
}

impl<'a, C: Empty> IntoIterator for &'a Lazy<C>
where
    &'a C: IntoIterator,
{
    type Item = <&'a C as IntoIterator>::Item;
    type IntoIter = <&'a C as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        (**self).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_only_while_not_empty() {
        let mut m: Lazy<BTreeMap<u16, u8>> = Lazy::default();
        assert!(m.0.is_none() && m.is_empty());
        assert_eq!(m.remove(&1), None);
        assert!(m.0.is_none(), "a remove from nothing boxes nothing");
        m.insert(1, 10);
        m.insert(2, 20);
        assert_eq!(m.get(&2), Some(&20));
        assert_eq!(m.remove(&1), Some(10));
        assert!(m.0.is_some());
        assert_eq!(m.remove(&2), Some(20));
        assert!(m.0.is_none(), "emptied: the box is gone");

        let mut s: Lazy<BTreeSet<u16>> = [3, 1].into_iter().collect();
        assert_eq!(s.pop_first(), Some(1));
        assert!(s.insert(2) && !s.insert(2) && s.remove(&3) && s.remove(&2));
        assert!(s.0.is_none());
        let none: Lazy<BTreeSet<u16>> = std::iter::empty().collect();
        assert!(none.0.is_none());

        let mut q: Lazy<VecDeque<u8>> = Lazy::default();
        q.push_back(1);
        assert_eq!((q.len(), q.pop_front(), q.pop_front()), (1, Some(1), None));
        assert!(q.0.is_none());
    }

    #[test]
    fn remove_keep_keeps_the_box_until_trimmed() {
        let mut m: Lazy<BTreeMap<u16, u8>> = Lazy::default();
        assert_eq!(m.remove_keep(&1), None);
        assert!(m.0.is_none(), "nothing to remove from: still nothing boxed");
        m.insert(1, 10);
        assert_eq!(m.remove_keep(&1), Some(10));
        assert!(m.is_empty() && m.0.is_some(), "emptied, kept");
        assert_eq!(postcard::to_allocvec(&m).unwrap(), [0], "an empty map either way");
        assert_eq!(m, Lazy::default());
        m.insert(2, 20);
        m.trim();
        assert_eq!(m.get(&2), Some(&20), "trim keeps what is not empty");
        m.remove_keep(&2);
        m.trim();
        assert!(m.0.is_none(), "trimmed");
    }

    #[test]
    fn same_bytes_as_the_collection() {
        let mut m: Lazy<BTreeMap<u16, u8>> = Lazy::default();
        let bare: BTreeMap<u16, u8> = BTreeMap::new();
        assert_eq!(postcard::to_allocvec(&m).unwrap(), postcard::to_allocvec(&bare).unwrap());
        m.insert(7, 1);
        let bare: BTreeMap<u16, u8> = [(7, 1)].into_iter().collect();
        let bytes = postcard::to_allocvec(&m).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&bare).unwrap());
        let back: Lazy<BTreeMap<u16, u8>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        let empty: Lazy<BTreeMap<u16, u8>> = postcard::from_bytes(&[0]).unwrap();
        assert!(empty.0.is_none());
    }
}
