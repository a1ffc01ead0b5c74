//! Wall-clock time as CRI carries it: nanoseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    unix_nanos(SystemTime::now())
}

/// `t` in Unix nanoseconds; 0 for a time before the epoch.
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_read_as_zero() {
        let second = std::time::Duration::from_secs(1);
        assert_eq!(unix_nanos(UNIX_EPOCH + second), 1_000_000_000);
        assert_eq!(unix_nanos(UNIX_EPOCH - second), 0);
        assert!(now_nanos() > 1_700_000_000 * 1_000_000_000);
    }
}
