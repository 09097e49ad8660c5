//! One map from what went wrong to what each transport answers.
//!
//! Every layer has its own typed error (the distributor's `PushError`, the ingester's
//! `IngesterError`, the querier's `QueryError`) and says which [`ErrorCode`] each variant
//! is ([`HasErrorCode`]). The code alone decides the gRPC code, the HTTP status, whether a
//! client should retry, and the `Retry-After` it gets: handlers never pick codes
//! themselves. (quickwit-proto's `ServiceErrorCode` is the model.)
//!
//! Retryable conditions are UNAVAILABLE / 503, never UNKNOWN or INTERNAL, which the
//! OpenTelemetry Collector drops for good.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tonic::Code;

/// What kind of failure an error is, as far as a client is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// Malformed or invalid input: fix the request; retrying it fails the same way.
    BadRequest,
    /// No credential (or no tenant where multitenancy needs one).
    Unauthenticated,
    /// A credential that does not allow this, or a caller this is not open to.
    Forbidden,
    NotFound,
    /// Over a size limit: send smaller requests.
    TooLarge,
    UnsupportedMediaType,
    /// The client stopped sending its request body.
    ClientTimeout,
    /// Temporarily unable (quorum not reached, starting, leaving): retry the same request.
    Unavailable,
    /// Over a rate limit: retry the same request after the error's retry delay.
    TooManyRequests,
}

impl ErrorCode {
    /// Whether a client should retry the same request later.
    pub(crate) fn retryable(self) -> bool {
        self == ErrorCode::Unavailable
    }

    /// How long a client should wait before retrying (`None`: do not retry).
    pub(crate) fn retry_after(self) -> Option<Duration> {
        self.retryable().then_some(Duration::from_secs(1))
    }

    pub(crate) fn grpc(self) -> Code {
        match self {
            ErrorCode::BadRequest | ErrorCode::UnsupportedMediaType => Code::InvalidArgument,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::Forbidden => Code::PermissionDenied,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::TooLarge => Code::ResourceExhausted,
            ErrorCode::ClientTimeout => Code::DeadlineExceeded,
            ErrorCode::Unavailable => Code::Unavailable,
            // With a RetryInfo detail (see `grpc_status`): the Collector and the SDKs
            // retry RESOURCE_EXHAUSTED only when it is there.
            ErrorCode::TooManyRequests => Code::ResourceExhausted,
        }
    }

    pub(crate) fn http(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A typed error that knows its [`ErrorCode`].
pub(crate) trait HasErrorCode: std::fmt::Display {
    fn error_code(&self) -> ErrorCode;

    /// How long a client should wait before retrying (`None`: do not retry); the code's
    /// unless the error knows better (a rate limit knows when the request would fit).
    fn retry_after(&self) -> Option<Duration> {
        self.error_code().retry_after()
    }
}

/// The gRPC status for `e`: its code and its message, and for a rate limit a
/// `google.rpc.RetryInfo` detail with the delay.
pub(crate) fn grpc_status(e: &impl HasErrorCode) -> tonic::Status {
    let code = e.error_code();
    match (code, e.retry_after()) {
        (ErrorCode::TooManyRequests, Some(delay)) => {
            use tonic_types::{ErrorDetails, StatusExt};
            tonic::Status::with_error_details(
                code.grpc(),
                e.to_string(),
                ErrorDetails::with_retry_info(Some(delay)),
            )
        }
        _ => tonic::Status::new(code.grpc(), e.to_string()),
    }
}

/// Sets `Retry-After` (whole seconds, at least 1) on `response` when `e` is retryable.
pub(crate) fn with_retry_after(e: &impl HasErrorCode, mut response: Response) -> Response {
    if let Some(after) = e.retry_after() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

/// A plain-text HTTP answer for `e`: its status, its message (one line), and
/// `Retry-After` when retryable.
pub(crate) fn text_response(e: &impl HasErrorCode) -> Response {
    with_retry_after(e, (e.error_code().http(), format!("{e}\n")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 9] = [
        ErrorCode::TooManyRequests,
        ErrorCode::BadRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ClientTimeout,
        ErrorCode::Unavailable,
    ];

    /// The one retryable code is the one the Collector and the SDKs retry on both
    /// transports; every other is final on both.
    #[test]
    fn only_unavailable_is_retryable_and_it_is_503_and_unavailable_with_a_retry_after() {
        for code in ALL {
            let retried_by_clients =
                code.grpc() == Code::Unavailable && code.http() == StatusCode::SERVICE_UNAVAILABLE;
            assert_eq!(code.retryable(), retried_by_clients, "{code:?}");
            assert_eq!(code.retry_after().is_some(), code.retryable(), "{code:?}");
            assert!(
                code.http().is_client_error() || code.retryable(),
                "{code:?}"
            );
        }
    }

    struct Quorum;
    impl std::fmt::Display for Quorum {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("write quorum not reached")
        }
    }
    impl HasErrorCode for Quorum {
        fn error_code(&self) -> ErrorCode {
            ErrorCode::Unavailable
        }
    }

    #[test]
    fn a_typed_error_becomes_a_status_and_a_response_with_its_message() {
        let status = grpc_status(&Quorum);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "write quorum not reached");
        let response = text_response(&Quorum);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
    }
}
