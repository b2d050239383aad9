//! Changes held in memory over LMDB (deferred writes, a write's own
//! changes) and the merge of their key-ordered streams with LMDB's.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use super::{Change, Table};

/// Changed keys per table, newest value first-class: `None` is a deletion.
/// Kept sorted so range scans can merge them with LMDB's cursors.
#[derive(Default)]
pub(super) struct Overlay([BTreeMap<Vec<u8>, Option<Vec<u8>>>; 5]);

impl Overlay {
    /// `Some(v)`: the overlay decides (`v == None`: deleted); `None`: ask LMDB.
    pub(super) fn get(&self, t: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.0[t as usize].get(key).map(Option::as_deref)
    }
    /// Set a key, returning what the overlay held for it before.
    pub(super) fn set(&mut self, t: Table, key: Vec<u8>, val: Option<Vec<u8>>) -> Option<Option<Vec<u8>>> {
        self.0[t as usize].insert(key, val)
    }
    pub(super) fn restore(&mut self, t: Table, key: Vec<u8>, old: Option<Option<Vec<u8>>>) {
        match old {
            Some(v) => self.0[t as usize].insert(key, v),
            None => self.0[t as usize].remove(&key),
        };
    }
    /// Keys of `t` from `from` on, in LMDB's (bytewise) order.
    pub(super) fn range<'a>(
        &'a self,
        t: Table,
        from: &[u8],
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.0[t as usize]
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = (Table, &[u8], Option<&[u8]>)> {
        Table::ALL
            .into_iter()
            .flat_map(move |t| self.0[t as usize].iter().map(move |(k, v)| (t, k.as_slice(), v.as_deref())))
    }
    pub(super) fn absorb(&mut self, newer: Overlay) {
        for (mine, theirs) in self.0.iter_mut().zip(newer.0) {
            mine.extend(theirs);
        }
    }
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(BTreeMap::len).sum()
    }
    pub(super) fn to_changes(&self) -> Vec<Change> {
        self.iter().map(|(table, k, v)| Change { table, key: k.to_vec(), value: v.map(<[u8]>::to_vec) }).collect()
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.iter().all(BTreeMap::is_empty)
    }
}

/// Two key-ordered streams as one: on equal keys the upper one wins (its
/// value may be `None`, a deletion that hides the lower entry).
pub(super) struct Layered<'a, U: Iterator, L: Iterator> {
    upper: Peekable<U>,
    lower: Peekable<L>,
    _keys: std::marker::PhantomData<&'a [u8]>,
}

impl<'a, U, L> Layered<'a, U, L>
where
    U: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    L: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
{
    pub(super) fn new(upper: U, lower: L) -> Self {
        Layered { upper: upper.peekable(), lower: lower.peekable(), _keys: std::marker::PhantomData }
    }
}

impl<'a, U, L> Iterator for Layered<'a, U, L>
where
    U: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    L: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
{
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.upper.peek(), self.lower.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(u), Some(l)) => u.0.cmp(l.0),
        };
        match order {
            Ordering::Less => self.upper.next(),
            Ordering::Greater => self.lower.next(),
            Ordering::Equal => {
                self.lower.next();
                self.upper.next()
            }
        }
    }
}
