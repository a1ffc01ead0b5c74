//! Whether a stop signal would reach a container's process. The kernel
//! discards a signal sent to the init of a PID namespace (a container's
//! first process) while that process has no handler for it, SIGKILL
//! excepted; so a SIGTERM sent in the first moments after StartContainer,
//! before the program installed its handler, is lost, and the stop then
//! waits its whole grace period for nothing. The stop path waits for the
//! handler first (see [`wait_until_deliverable`]).

use std::time::{Duration, Instant};

/// How often the handler is looked for while waiting.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `signal` (a name as the OCI runtime takes it: `TERM`,
/// `SIGUSR1`, `15`) sent to `pid` now would be delivered, or until
/// `deadline`. It returns at once for a process that is not a PID
/// namespace's init, that handles or ignores the signal, that is gone, or
/// whose status cannot be read: waiting changes nothing for them. For an
/// init that never installs a handler, the signal would be discarded at
/// any time, so waiting to the deadline ends as sending it at once would:
/// in SIGKILL after the grace period.
pub fn wait_until_deliverable(pid: i32, signal: &str, deadline: Instant) {
    let Some(number) = signal_number(signal) else {
        return;
    };
    let status = format!("/proc/{pid}/status");
    let mut waited = false;
    while let Ok(text) = std::fs::read_to_string(&status) {
        if !discards(&text, number) {
            break;
        }
        if Instant::now() >= deadline {
            tracing::info!(
                pid,
                signal,
                "the container's init has no handler for its stop signal; it would be discarded"
            );
            return;
        }
        waited = true;
        std::thread::sleep(POLL);
    }
    if waited {
        tracing::debug!(
            pid,
            signal,
            "waited for the container's init to handle its stop signal"
        );
    }
}

/// The number of signal `name`, with or without its `SIG` prefix.
fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let full = if name.starts_with("SIG") {
        name.to_owned()
    } else {
        format!("SIG{name}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// True when the process whose `/proc/PID/status` is `status` is the init
/// of its PID namespace and neither handles nor ignores signal `number`:
/// the kernel would discard it.
fn discards(status: &str, number: i32) -> bool {
    if number == libc_sigkill() || !(1..=64).contains(&number) {
        return false;
    }
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let is_namespace_init = field("NSpid:")
        .and_then(|ids| ids.split_whitespace().last())
        .is_some_and(|innermost| innermost == "1");
    let has_bit = |mask: Option<&str>| {
        mask.and_then(|m| u64::from_str_radix(m, 16).ok())
            .is_some_and(|m| m & (1u64 << (number - 1)) != 0)
    };
    is_namespace_init && !has_bit(field("SigCgt:")) && !has_bit(field("SigIgn:"))
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(nspid: &str, caught: &str, ignored: &str) -> String {
        format!("Name:\ttop\nNSpid:\t{nspid}\nSigIgn:\t{ignored}\nSigCgt:\t{caught}\n")
    }

    #[test]
    fn only_an_init_without_a_handler_discards() {
        let term = signal_number("TERM").expect("TERM");
        assert_eq!(term, 15);
        assert_eq!(signal_number("SIGUSR1"), Some(10));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("NOPE"), None);
        let none = "0000000000000000";
        let term_bit = "0000000000004000";
        assert!(
            discards(&status("4242\t1", none, none), term),
            "init, no handler"
        );
        assert!(
            !discards(&status("4242\t1", term_bit, none), term),
            "init with a handler"
        );
        assert!(
            !discards(&status("4242\t1", none, term_bit), term),
            "init that ignores it"
        );
        assert!(
            !discards(&status("4242\t7", none, none), term),
            "not an init"
        );
        assert!(
            !discards(&status("4242", none, none), term),
            "the daemon's own namespace"
        );
        assert!(
            !discards(&status("4242\t1", none, none), 9),
            "SIGKILL always arrives"
        );
    }

    #[test]
    fn a_process_that_is_not_an_init_is_not_waited_for() {
        let started = Instant::now();
        wait_until_deliverable(
            std::process::id() as i32,
            "TERM",
            started + Duration::from_secs(5),
        );
        wait_until_deliverable(i32::MAX, "TERM", started + Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
