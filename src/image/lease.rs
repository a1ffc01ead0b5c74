//! Image leases (containerd's model): a container holds one on each image
//! it is made from, from the moment CreateContainer finds the image until
//! the container is removed. RemoveImage takes the same table's lock to
//! decide: a leased image only loses its names (its content stays for the
//! containers), an unleased one goes. Finding an image and leasing it are
//! one step, so a removal cannot slip between them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ucri_storage::digest::Digest;

/// How many leases each image has.
#[derive(Debug, Default)]
pub struct LeaseTable {
    counts: Mutex<HashMap<Digest, usize>>,
}

impl LeaseTable {
    /// The table, locked: leases are neither taken nor dropped meanwhile.
    pub fn lock(&self) -> LockedLeases<'_> {
        LockedLeases {
            counts: self.counts.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// The lease table while its lock is held.
pub struct LockedLeases<'a> {
    counts: MutexGuard<'a, HashMap<Digest, usize>>,
}

impl LockedLeases<'_> {
    /// Whether image `id` has a lease.
    pub fn is_leased(&self, id: &Digest) -> bool {
        self.counts.get(id).is_some_and(|n| *n > 0)
    }

    /// A new lease on image `id`, dropped with the returned value.
    pub fn take(&mut self, table: &Arc<LeaseTable>, id: &Digest) -> ImageLease {
        *self.counts.entry(id.clone()).or_default() += 1;
        ImageLease {
            table: Arc::clone(table),
            id: id.clone(),
        }
    }
}

/// One lease on an image; dropping it ends the lease.
#[derive(Debug)]
pub struct ImageLease {
    table: Arc<LeaseTable>,
    id: Digest,
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .expect("digest")
    }

    #[test]
    fn an_image_is_leased_until_its_last_lease_is_dropped() {
        let table = Arc::new(LeaseTable::default());
        let (a, b) = (digest(1), digest(2));
        let first = table.lock().take(&table, &a);
        let second = table.lock().take(&table, &a);
        assert!(table.lock().is_leased(&a));
        assert!(!table.lock().is_leased(&b));
        drop(first);
        assert!(table.lock().is_leased(&a), "one lease is left");
        drop(second);
        assert!(!table.lock().is_leased(&a));
        assert!(
            table.counts.lock().expect("lock").is_empty(),
            "no entry stays"
        );
    }
}
