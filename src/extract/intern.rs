//! A bounded string interner.
//!
//! Services, operations and peers repeat on nearly every span; interning
//! turns them into shared `Arc<str>`s that compare and hash cheaply. Lookups
//! take a read lock only, and hash with foldhash (seeded per process, so
//! client-chosen names cannot be crafted to collide), several times faster
//! than the standard SipHash on short names. The table is bounded: once full, new strings are
//! handed out uninterned, so a client that sends a million distinct span
//! names costs memory in the analysis's own bounded tables, not here.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use foldhash::fast::RandomState;

pub struct Interner {
    table: RwLock<HashSet<Arc<str>, RandomState>>,
    max_entries: usize,
}

impl Interner {
    pub fn new(max_entries: usize) -> Interner {
        Interner {
            table: RwLock::new(HashSet::default()),
            max_entries,
        }
    }

    pub fn intern(&self, s: &str) -> Arc<str> {
        if let Some(found) = self.table.read().unwrap_or_else(|e| e.into_inner()).get(s) {
            return found.clone();
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = table.get(s) {
            return found.clone();
        }
        let sym: Arc<str> = Arc::from(s);
        if table.len() < self.max_entries {
            table.insert(sym.clone());
        }
        sym
    }

    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
