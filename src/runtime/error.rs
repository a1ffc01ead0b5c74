//! The lifecycle's error: what its services report, each driver's own
//! error kept as the source. A leaf, so that the concerns of the runtime
//! can name it without depending on the `Lifecycle` that uses them.

use super::{command, oci, sandbox, state, userns};

/// Errors of the lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Unknown pod or container (or image).
    #[error("{0}")]
    NotFound(String),
    /// Malformed request.
    #[error("{0}")]
    InvalidArgument(String),
    /// Name already taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// Wrong state for the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A CRI feature this build does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// An operation ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// The caller went away; the work was stopped.
    #[error("{0}")]
    Cancelled(String),
    /// The OCI runtime or conmon failed.
    #[error("{0}")]
    Runtime(String),
    /// An external program failed.
    #[error(transparent)]
    Command(#[from] command::CommandError),
    /// The OCI runtime or conmon driver failed.
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    /// The sandbox (namespace) driver failed.
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    /// The pod user-namespace driver failed.
    #[error(transparent)]
    Userns(#[from] userns::UsernsError),
    /// The record store failed.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// Where.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Pod networking failed.
    #[error("{0}")]
    Network(#[from] ucri_net::NetError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// Maps an I/O error to a lifecycle error that says where it happened.
pub(super) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LifecycleError {
    let context = context.into();
    move |source| LifecycleError::Io { context, source }
}
