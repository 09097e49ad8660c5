//! Who may change state through the admin API (`POST /shutdown`, `POST /flush`,
//! `POST /ring/forget/{name}`, `DELETE /api/admin/tenants/{tenant}`).
//!
//! - With `admin_token` set: every such call needs `Authorization: Bearer <token>` (the
//!   scheme in any case), compared in constant time, from any address.
//! - Without it: only calls from a loopback address are accepted (an operator on the
//!   node, `ringtail shutdown` in a preStop hook), and tenant deletion is off.
//! - Either way, a browser request from another origin (a page on the web posting to
//!   `127.0.0.1:3200/shutdown`) is refused: its `Origin` must name the host it calls.
//!
//! Reads (`/ready`, `/metrics`, `/ring`, `/status`) need nothing.

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::error::{ErrorCode, HasErrorCode};

/// The admin API's credentials, from `admin_token`.
#[derive(Clone, Debug)]
pub(crate) enum AdminAuth {
    Token(String),
    LoopbackOnly,
}

/// Why a state-changing call was refused (each is answered with its status).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    #[error("admin token required (Authorization: Bearer <admin_token>)")]
    MissingToken,
    #[error("wrong admin token")]
    WrongToken,
    #[error("no admin_token is configured: admin calls are accepted from loopback only")]
    NotLoopback,
    #[error("cross-origin admin calls are refused (Origin {origin:?} does not match Host)")]
    CrossOrigin { origin: String },
}

impl HasErrorCode for Denied {
    fn error_code(&self) -> ErrorCode {
        match self {
            Denied::MissingToken | Denied::WrongToken => ErrorCode::Unauthenticated,
            Denied::NotLoopback | Denied::CrossOrigin { .. } => ErrorCode::Forbidden,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether a browser sent this from a page of another origin. Non-browser clients send
/// no `Origin`.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    (origin_host != host).then(|| origin.to_owned())
}

impl AdminAuth {
    pub(crate) fn from_config(token: Option<&str>) -> Self {
        match token {
            Some(t) => AdminAuth::Token(t.to_owned()),
            None => AdminAuth::LoopbackOnly,
        }
    }

    /// Decides a state-changing call from `peer` with these headers.
    pub(crate) fn check(&self, peer: IpAddr, headers: &HeaderMap) -> Result<(), Denied> {
        if let Some(origin) = cross_origin(headers) {
            return Err(Denied::CrossOrigin { origin });
        }
        match self {
            AdminAuth::Token(expected) => {
                let presented = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer)
                    .ok_or(Denied::MissingToken)?;
                if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                    Ok(())
                } else {
                    Err(Denied::WrongToken)
                }
            }
            AdminAuth::LoopbackOnly => {
                let loopback = match peer {
                    IpAddr::V4(v4) => v4.is_loopback(),
                    IpAddr::V6(v6) => {
                        v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                    }
                };
                if loopback {
                    Ok(())
                } else {
                    Err(Denied::NotLoopback)
                }
            }
        }
    }

    /// The `Authorization` value to forward to peers (forget fans out), if any.
    pub(crate) fn header_value(&self) -> Option<String> {
        match self {
            AdminAuth::Token(t) => Some(format!("Bearer {t}")),
            AdminAuth::LoopbackOnly => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn with_a_token_every_caller_needs_it_and_the_scheme_is_case_insensitive() {
        let auth = AdminAuth::from_config(Some("s3cret"));
        assert_eq!(
            auth.check(LOCAL, &HeaderMap::new()),
            Err(Denied::MissingToken)
        );
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER   s3cret "] {
            let h = headers(&[(header::AUTHORIZATION, value)]);
            assert_eq!(auth.check(REMOTE, &h), Ok(()), "{value}");
        }
        for value in [
            "Bearer s3cre",
            "Bearer s3cretX",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            let h = headers(&[(header::AUTHORIZATION, value)]);
            assert!(auth.check(LOCAL, &h).is_err(), "{value}");
        }
    }

    #[test]
    fn without_a_token_only_loopback_callers_are_accepted() {
        let auth = AdminAuth::from_config(None);
        assert_eq!(auth.check(LOCAL, &HeaderMap::new()), Ok(()));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(auth.check(mapped, &HeaderMap::new()), Ok(()));
        assert_eq!(
            auth.check(REMOTE, &HeaderMap::new()),
            Err(Denied::NotLoopback)
        );
        assert_eq!(
            Denied::NotLoopback.error_code().http(),
            axum::http::StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn a_page_of_another_origin_cannot_post_to_a_local_node() {
        let auth = AdminAuth::from_config(None);
        let h = headers(&[
            (header::ORIGIN, "https://evil.example"),
            (header::HOST, "127.0.0.1:3200"),
        ]);
        assert!(matches!(
            auth.check(LOCAL, &h),
            Err(Denied::CrossOrigin { .. })
        ));
        let same = headers(&[
            (header::ORIGIN, "http://127.0.0.1:3200"),
            (header::HOST, "127.0.0.1:3200"),
        ]);
        assert_eq!(auth.check(LOCAL, &same), Ok(()));
    }
}
