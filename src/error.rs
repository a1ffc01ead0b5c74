//! The service-layer error, and its one mapping to gRPC status codes.

/// Errors the CRI services return.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The RPC is part of CRI v1 but not implemented by this build.
    #[error("{rpc} is not implemented by ucri yet")]
    Unimplemented {
        /// The RPC name.
        rpc: &'static str,
    },
    /// A part of an RPC this build does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// A referenced object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Credentials are missing or wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (e.g. a blocked registry).
    #[error("{0}")]
    PermissionDenied(String),
    /// A remote dependency (a registry) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// An operation ran out of time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Content is corrupt (a digest mismatch).
    #[error("{0}")]
    DataLoss(String),
    /// Too many requests of a kind are in flight.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller went away before the work finished; it was stopped.
    #[error("{0}")]
    Cancelled(String),
    /// Anything else; a bug or an environment failure.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::streaming::StreamingError> for CriError {
    fn from(err: crate::streaming::StreamingError) -> CriError {
        use crate::streaming::StreamingError as E;
        match err {
            E::InvalidArgument(message) => CriError::InvalidArgument(message),
            E::Lifecycle(e) => CriError::from(e),
            E::Token(e @ crate::streaming::tokens::TokenError::TooManyPending) => {
                CriError::ResourceExhausted(e.to_string())
            }
            E::Token(e) => CriError::Internal(e.to_string()),
        }
    }
}

impl From<crate::runtime::LifecycleError> for CriError {
    fn from(err: crate::runtime::LifecycleError) -> CriError {
        use crate::runtime::LifecycleError as E;
        let message = err.to_string();
        match err {
            E::NotFound(_) => CriError::NotFound(message),
            E::InvalidArgument(_) => CriError::InvalidArgument(message),
            E::AlreadyExists(_) => CriError::AlreadyExists(message),
            E::FailedPrecondition(_) => CriError::FailedPrecondition(message),
            E::Unsupported(_) => CriError::Unsupported(message),
            E::Timeout(_) => CriError::DeadlineExceeded(message),
            E::Cancelled(_) => CriError::Cancelled(message),
            E::Network(e) => CriError::from(e),
            E::Oci(e) => CriError::from(e),
            E::Sandbox(e) => CriError::from(e),
            E::Userns(e) => CriError::from(e),
            E::Runtime(_) | E::Command(_) | E::State(_) | E::Io { .. } | E::Internal(_) => {
                CriError::Internal(message)
            }
        }
    }
}

impl From<crate::runtime::oci::OciError> for CriError {
    fn from(err: crate::runtime::oci::OciError) -> CriError {
        use crate::runtime::oci::OciError as E;
        let message = err.to_string();
        match err {
            E::Timeout(_) => CriError::DeadlineExceeded(message),
            E::Cancelled(_) => CriError::Cancelled(message),
            E::Runtime(_) | E::Command(_) | E::Io { .. } => CriError::Internal(message),
        }
    }
}

impl From<crate::runtime::sandbox::SandboxError> for CriError {
    fn from(err: crate::runtime::sandbox::SandboxError) -> CriError {
        use crate::runtime::sandbox::SandboxError as E;
        let message = err.to_string();
        match err {
            E::FailedPrecondition(_) => CriError::FailedPrecondition(message),
            E::Userns(e) => CriError::from(e),
            E::Runtime(_) | E::Command(_) | E::Io { .. } => CriError::Internal(message),
        }
    }
}

impl From<crate::runtime::userns::UsernsError> for CriError {
    fn from(err: crate::runtime::userns::UsernsError) -> CriError {
        use crate::runtime::userns::UsernsError as E;
        let message = err.to_string();
        match err {
            E::InvalidArgument(_) => CriError::InvalidArgument(message),
            E::Internal(_) | E::Command(_) | E::Io { .. } => CriError::Internal(message),
        }
    }
}

impl From<ucri_net::NetError> for CriError {
    fn from(err: ucri_net::NetError) -> CriError {
        use ucri_net::NetError as E;
        let message = err.to_string();
        match err {
            E::InvalidArgument(_) => CriError::InvalidArgument(message),
            E::NotReady(_) | E::PortInUse(_) => CriError::FailedPrecondition(message),
            E::Plugin { .. } | E::Helper(_) | E::Io { .. } => CriError::Internal(message),
        }
    }
}

impl From<crate::image::ImageError> for CriError {
    fn from(err: crate::image::ImageError) -> CriError {
        use crate::image::ImageError as E;
        let message = err.to_string();
        match err {
            E::InvalidArgument(_) => CriError::InvalidArgument(message),
            E::NotFound(_) => CriError::NotFound(message),
            E::Unauthenticated(_) => CriError::Unauthenticated(message),
            E::PermissionDenied(_) => CriError::PermissionDenied(message),
            E::Unavailable(_) => CriError::Unavailable(message),
            E::Corrupt(_) => CriError::DataLoss(message),
            E::Config(_) => CriError::FailedPrecondition(message),
            E::LimitExceeded(_) => CriError::ResourceExhausted(message),
            E::Store(_) => CriError::Internal(message),
        }
    }
}

/// The longest error message sent to a client. gRPC carries it in a header
/// (`grpc-message`), and clients refuse header blocks past their limit
/// (grpc-go: 16 KiB in all); a 1000-layer image once made a 48 KB message.
pub const MAX_STATUS_MESSAGE: usize = 4096;

/// `message` cut to [`MAX_STATUS_MESSAGE`] bytes at a character boundary,
/// saying how much was cut; the daemon's log keeps it whole.
fn bounded_message(message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    tracing::warn!(%message, "error message cut for the client");
    let mut end = MAX_STATUS_MESSAGE - 80;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes; the daemon's log has the whole message)",
        &message[..end],
        message.len() - end
    )
}

impl From<CriError> for tonic::Status {
    fn from(err: CriError) -> tonic::Status {
        let message = bounded_message(err.to_string());
        match err {
            CriError::Unimplemented { .. } | CriError::Unsupported(_) => {
                tonic::Status::unimplemented(message)
            }
            CriError::NotFound(_) => tonic::Status::not_found(message),
            CriError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            CriError::AlreadyExists(_) => tonic::Status::already_exists(message),
            CriError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            CriError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            CriError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            CriError::Unavailable(_) => tonic::Status::unavailable(message),
            CriError::DataLoss(_) => tonic::Status::data_loss(message),
            CriError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            CriError::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            CriError::Cancelled(_) => tonic::Status::cancelled(message),
            CriError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_variant_has_its_code() {
        let cases = [
            (CriError::Unimplemented { rpc: "Exec" }, Code::Unimplemented),
            (CriError::NotFound("x".into()), Code::NotFound),
            (CriError::Cancelled("x".into()), Code::Cancelled),
            (CriError::InvalidArgument("x".into()), Code::InvalidArgument),
            (CriError::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                CriError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (CriError::Unauthenticated("x".into()), Code::Unauthenticated),
            (
                CriError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (CriError::Unavailable("x".into()), Code::Unavailable),
            (CriError::DataLoss("x".into()), Code::DataLoss),
            (
                CriError::DeadlineExceeded("x".into()),
                Code::DeadlineExceeded,
            ),
            (CriError::Internal("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
    }

    #[test]
    fn long_messages_are_cut_for_the_client() {
        let long = format!("layer {}", "é".repeat(30_000));
        let status = tonic::Status::from(CriError::Internal(long.clone()));
        assert!(
            status.message().len() <= MAX_STATUS_MESSAGE,
            "{}",
            status.message().len()
        );
        assert!(status.message().starts_with("layer é"));
        assert!(status
            .message()
            .ends_with("the daemon's log has the whole message)"));
        let short = tonic::Status::from(CriError::NotFound("pod x not found".into()));
        assert_eq!(short.message(), "pod x not found");
    }

    #[test]
    fn unimplemented_names_the_rpc() {
        let status = tonic::Status::from(CriError::Unimplemented { rpc: "PullImage" });
        assert_eq!(status.message(), "PullImage is not implemented by ucri yet");
    }
}
