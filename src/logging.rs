//! Tracing set-up, in one place: human-readable lines on stderr, filtered by
//! the configured level (or `RUST_LOG` when set).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
