//! The one error type of the serving core. Transport adapters map it exactly once: HTTP in
//! `api::http_error`, gRPC in `api::grpc`.

/// Everything that can go wrong while serving a request or accepting data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 / INVALID_ARGUMENT. `reason` is a stable snake_case metric label, e.g. "unknown_modality",
    /// "non_finite", "channel_multiple", "wrong_length", "too_many_samples", "bad_timestamp", "bad_json".
    #[error("{message}")]
    InvalidInput {
        reason: &'static str,
        message: String,
    },
    /// 404 / NOT_FOUND
    #[error("{0}")]
    NotFound(String),
    /// 413 / RESOURCE_EXHAUSTED — body/frame/message too large
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429 / RESOURCE_EXHAUSTED. reason: "queue_full", "max_devices", "rate_limited"
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
    },
    /// 401 / UNAUTHENTICATED
    #[error("{0}")]
    Unauthenticated(String),
    /// 403 / PERMISSION_DENIED
    #[error("{0}")]
    PermissionDenied(String),
    /// 409 / ABORTED — the device is now streamed by another stream (reason "taken_over")
    #[error("{message}")]
    Conflict {
        reason: &'static str,
        message: String,
    },
    /// 503 / UNAVAILABLE — not ready, shutting down
    #[error("{0}")]
    Unavailable(String),
    /// 504 / DEADLINE_EXCEEDED — window dropped past its deadline while a caller waited
    #[error("{0}")]
    DeadlineExceeded(String),
    /// 500 / INTERNAL
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason,
            message: message.into(),
        }
    }

    /// Stable snake_case name of the variant; the `kind` field of every JSON error body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid_input",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::ResourceExhausted { .. } => "resource_exhausted",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Conflict { .. } => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::DeadlineExceeded(_) => "deadline_exceeded",
            Self::Internal(_) => "internal",
        }
    }

    /// Metric label for rejections: the specific reason where the variant carries one, else the kind.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidInput { reason, .. }
            | Self::ResourceExhausted { reason, .. }
            | Self::Conflict { reason, .. } => reason,
            Self::PayloadTooLarge(_) => "too_large",
            other => other.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_prefers_the_specific_label() {
        let e = Error::invalid("non_finite", "NaN in torso_acc");
        assert_eq!(e.kind(), "invalid_input");
        assert_eq!(e.reason(), "non_finite");
        assert_eq!(e.to_string(), "NaN in torso_acc");
        assert_eq!(Error::NotFound("x".into()).reason(), "not_found");
        let q = Error::ResourceExhausted {
            reason: "queue_full",
            message: "queue full".into(),
        };
        assert_eq!((q.kind(), q.reason()), ("resource_exhausted", "queue_full"));
    }
}
