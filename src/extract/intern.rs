//! A bounded string interner.
//!
//! Services, operations and peers repeat on nearly every span; interning
//! turns them into shared `Arc<str>`s that compare and hash cheaply. Lookups
//! take a read lock only, and hash with foldhash (seeded per process, so
//! client-chosen names cannot be crafted to collide), several times faster
//! than the standard SipHash on short names.
//!
//! Memory is bounded in bytes, whatever clients send: every name is cut to
//! [`MAX_NAME_BYTES`] (at a character boundary) before it is used, so one
//! 1 MiB `http.route` costs 256 bytes wherever the analysis keeps it; and
//! the table holds at most `max_entries` names and [`MAX_TABLE_BYTES`] in
//! all. Once full, new names are handed out uninterned, so a client that
//! sends a million distinct span names costs memory in the analysis's own
//! bounded tables, not here.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use foldhash::fast::RandomState;

/// Longest name kept, in bytes: longer service, operation, route, peer and
/// code names are cut to this.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// Bytes of names the table retains at most.
pub(crate) const MAX_TABLE_BYTES: usize = 16 << 20;

/// `name` cut to [`MAX_NAME_BYTES`] at a character boundary.
pub(crate) fn bounded_name(name: &str) -> &str {
    crate::text::truncate(name, MAX_NAME_BYTES)
}

pub(crate) struct Interner {
    table: RwLock<Table>,
    max_entries: usize,
}

#[derive(Default)]
struct Table {
    names: HashSet<Arc<str>, RandomState>,
    bytes: usize,
}

impl Interner {
    pub(crate) fn new(max_entries: usize) -> Interner {
        Interner {
            table: RwLock::new(Table::default()),
            max_entries,
        }
    }

    /// The shared copy of `s`, cut to [`MAX_NAME_BYTES`].
    pub(crate) fn intern(&self, s: &str) -> Arc<str> {
        let s = bounded_name(s);
        if let Some(found) = self.table.read().unwrap_or_else(|e| e.into_inner()).names.get(s) {
            return found.clone();
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = table.names.get(s) {
            return found.clone();
        }
        let sym: Arc<str> = Arc::from(s);
        if table.names.len() < self.max_entries && table.bytes + s.len() <= MAX_TABLE_BYTES {
            table.bytes += s.len();
            table.names.insert(sym.clone());
        }
        sym
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).names.len()
    }

    /// Bytes of names retained.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_until_full() {
        let interner = Interner::new(2);
        let a1 = interner.intern("a");
        let a2 = interner.intern("a");
        assert!(Arc::ptr_eq(&a1, &a2));
        interner.intern("b");
        let c1 = interner.intern("c");
        let c2 = interner.intern("c");
        assert_eq!(c1, c2);
        assert!(!Arc::ptr_eq(&c1, &c2), "past the bound, strings are not retained");
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn names_are_cut_and_the_table_is_bounded_in_bytes() {
        let interner = Interner::new(usize::MAX);
        let route = "/x".repeat(1 << 19);
        let sym = interner.intern(&route);
        assert_eq!(sym.len(), MAX_NAME_BYTES);
        assert!(route.starts_with(&*sym));
        assert_eq!(bounded_name("é".repeat(200).as_str()).len(), MAX_NAME_BYTES);
        for i in 0..200_000 {
            interner.intern(&format!("{i:0>250}"));
        }
        assert!(interner.bytes() <= MAX_TABLE_BYTES, "{}", interner.bytes());
    }
}
