//! Locks by key: one per pod, container, blob or layer in use, made on
//! first use and dropped once nobody holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A lock of type `L` (a std or tokio mutex) per key.
#[derive(Debug)]
pub struct KeyedLocks<L> {
    map: Mutex<HashMap<String, Arc<L>>>,
}

impl<L> Default for KeyedLocks<L> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<L: Default> KeyedLocks<L> {
    /// The lock of `key`; the caller locks it. Locks that no caller holds
    /// any more are dropped on the way, so the map stays as small as the
    /// number of keys in use.
    pub fn get(&self, key: &str) -> Arc<L> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_shares_a_lock_and_unused_locks_are_dropped() {
        let locks: KeyedLocks<Mutex<()>> = KeyedLocks::default();
        let a = locks.get("a");
        assert!(Arc::ptr_eq(&a, &locks.get("a")));
        let _guard = a.lock().expect("lock");
        assert!(locks.get("b").try_lock().is_ok(), "another key is free");
        drop(_guard);
        drop(a);
        locks.get("c");
        assert_eq!(locks.map.lock().expect("map").len(), 1, "only c is left");
    }
}
