//! The error type of pod networking, shared by every module of the crate.

/// Errors of pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The request is malformed (a bad port mapping, a privileged host port).
    #[error("{0}")]
    InvalidArgument(String),
    /// Networking is not usable yet (no CNI config, a missing plugin, the
    /// uplink helper is down).
    #[error("pod networking is not ready: {0}")]
    NotReady(String),
    /// A host port is taken.
    #[error("{0}")]
    PortInUse(String),
    /// A CNI plugin failed; `message` is the plugin's own error.
    #[error("CNI plugin {plugin} {command} failed: {message}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// ADD, DEL or CHECK.
        command: String,
        /// The plugin's message (from its error JSON, else its stderr).
        message: String,
    },
    /// The uplink helper failed.
    #[error("{0}")]
    Helper(String),
    /// A file or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Io { context, source }
}
