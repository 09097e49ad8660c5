//! Errors of the write path, each with its [`ErrorCode`] (which `crate::error` maps to
//! gRPC and HTTP codes). Retryable conditions (quorum not reached, not enough ingesters)
//! are UNAVAILABLE / 503.

use std::time::Duration;

use thiserror::Error;

use crate::error::{ErrorCode, HasErrorCode};

use crate::model::TenantError;
use crate::otlp::WireError;

#[derive(Debug, Error)]
pub enum PushError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Malformed(#[from] WireError),
    #[error("malformed OTLP JSON: {0}")]
    MalformedJson(String),
    #[error("malformed gzip body: {0}")]
    MalformedGzip(String),
    #[error("unsupported content type {0:?}; use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}; use gzip or none")]
    UnsupportedEncoding(String),
    #[error(
        "request of {size} bytes exceeds the limit of {limit} bytes (max_recv_msg_size_bytes)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("request body exceeds the limit of {limit} bytes (max_recv_msg_size_bytes)")]
    BodyTooLarge { limit: usize },
    #[error("request makes an ingester push of {size} bytes, over the ingesters' limit of {limit} bytes (twice max_recv_msg_size_bytes; each trace repeats its resource and scope): send smaller requests")]
    PushTooLarge { size: usize, limit: usize },
    #[error("request body could not be read: {0}")]
    UnreadableBody(String),
    #[error("request body stalled: no data within http_body_timeout_ms")]
    BodyTimeout,
    #[error("no valid spans in the request: {message}")]
    NoValidSpans { rejected: u64, message: String },
    #[error(
        "not enough ingesters: {active} ACTIVE, {quorum} needed to take a write (write quorum \
         of replication factor {factor}); crashed and departed ingesters do not count"
    )]
    NotEnoughIngesters {
        active: usize,
        factor: usize,
        quorum: usize,
    },
    #[error("tenant over its ingestion rate ({limit} bytes/s): retry in {} ms", retry_after.as_millis())]
    RateLimited { limit: u64, retry_after: Duration },
    #[error("request of {size} bytes exceeds the tenant's ingestion burst of {burst} bytes: send smaller requests")]
    OverBurst { size: usize, burst: u64 },
    #[error("write quorum not reached ({needed} of each trace's replicas needed); failed replicas: {}", failures.join("; "))]
    QuorumFailed {
        needed: usize,
        failures: Vec<String>,
    },
}

impl HasErrorCode for PushError {
    fn error_code(&self) -> ErrorCode {
        match self {
            PushError::Tenant(TenantError::Missing) => ErrorCode::Unauthenticated,
            PushError::Tenant(TenantError::Invalid(_))
            | PushError::Malformed(_)
            | PushError::MalformedJson(_)
            | PushError::MalformedGzip(_)
            | PushError::UnsupportedEncoding(_)
            | PushError::UnreadableBody(_)
            | PushError::NoValidSpans { .. } => ErrorCode::BadRequest,
            PushError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            PushError::TooLarge { .. }
            | PushError::BodyTooLarge { .. }
            | PushError::PushTooLarge { .. }
            | PushError::OverBurst { .. } => ErrorCode::TooLarge,
            PushError::RateLimited { .. } => ErrorCode::TooManyRequests,
            PushError::NotEnoughIngesters { .. } | PushError::QuorumFailed { .. } => {
                ErrorCode::Unavailable
            }
            PushError::BodyTimeout => ErrorCode::ClientTimeout,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            PushError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => self.error_code().retry_after(),
        }
    }
}

impl PushError {
    /// Label for `ringtail_distributor_push_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::Tenant(_) => "tenant",
            PushError::Malformed(_)
            | PushError::MalformedJson(_)
            | PushError::MalformedGzip(_)
            | PushError::UnreadableBody(_) => "malformed",
            PushError::UnsupportedMediaType(_) | PushError::UnsupportedEncoding(_) => "media_type",
            PushError::TooLarge { .. }
            | PushError::BodyTooLarge { .. }
            | PushError::PushTooLarge { .. } => "too_large",
            PushError::NoValidSpans { .. } => "no_valid_spans",
            PushError::BodyTimeout => "body_timeout",
            PushError::NotEnoughIngesters { .. } => "not_enough_ingesters",
            PushError::QuorumFailed { .. } => "quorum_failed",
            PushError::RateLimited { .. } => "rate_limited",
            PushError::OverBurst { .. } => "over_burst",
        }
    }
}

impl From<PushError> for tonic::Status {
    fn from(e: PushError) -> Self {
        crate::error::grpc_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tonic::Code;

    #[test]
    fn transient_failures_are_unavailable_and_retryable() {
        let e = PushError::QuorumFailed {
            needed: 2,
            failures: vec!["ingester-2: connection refused".into()],
        };
        assert_eq!(e.error_code().grpc(), Code::Unavailable);
        assert_eq!(e.error_code().http(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.error_code().retryable());
        assert!(e.to_string().contains("ingester-2"));
    }

    #[test]
    fn bad_input_is_invalid_argument_and_not_retryable() {
        let e = PushError::NoValidSpans {
            rejected: 3,
            message: "3 spans rejected".into(),
        };
        assert_eq!(e.error_code().grpc(), Code::InvalidArgument);
        assert!(!e.error_code().retryable());
        let e = PushError::TooLarge {
            size: 20,
            limit: 10,
        };
        assert_eq!(e.error_code().grpc(), Code::ResourceExhausted);
        assert_eq!(e.error_code().http(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            PushError::Tenant(TenantError::Missing).error_code().http(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn a_stalled_body_is_408_and_not_retried() {
        let e = PushError::BodyTimeout;
        assert_eq!(e.error_code().http(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(e.error_code().grpc(), Code::DeadlineExceeded);
        assert_eq!(e.reason(), "body_timeout");
        assert!(!e.error_code().retryable());
    }
}
