//! Numbers and strings with meaning: trace IDs, tenants, node names.

use std::fmt;

use thiserror::Error;

/// Tenant used for every request when multitenancy is off.
pub const SINGLE_TENANT: &str = "single-tenant";

/// A 16-byte OTLP trace ID that is not all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// A map keyed by trace ID, hashed with foldhash (randomly seeded, so trace IDs that clients
/// choose cannot be made to collide at will) rather than std's SipHash, which took ~0.8% of
/// an ingester's and of the distributor's CPU for the per-trace and per-span lookups of a
/// push. In memory only: its hashes change between versions and runs.
pub type TraceMap<V> = std::collections::HashMap<TraceId, V, foldhash::fast::RandomState>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TraceIdError {
    #[error("trace ID must be 32 hex characters (16 bytes), got {len} characters")]
    BadHexLength { len: usize },
    #[error("trace ID is not hexadecimal")]
    NotHex,
    #[error("trace ID must be 16 bytes, got {len}")]
    BadLength { len: usize },
    #[error("trace ID is all zero")]
    Zero,
}

impl TraceId {
    /// Parses raw OTLP bytes: exactly 16 bytes, not all zero.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TraceIdError> {
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| TraceIdError::BadLength { len: bytes.len() })?;
        if arr == [0; 16] {
            return Err(TraceIdError::Zero);
        }
        Ok(Self(arr))
    }

    /// Parses the 32-hex-character form used in URLs. Like Tempo, shorter IDs are
    /// left-padded with zeros (a 64-bit trace ID is a valid 128-bit one).
    pub fn from_hex(s: &str) -> Result<Self, TraceIdError> {
        if s.is_empty() || s.len() > 32 {
            return Err(TraceIdError::BadHexLength { len: s.len() });
        }
        let padded = format!("{s:0>32}");
        let mut arr = [0u8; 16];
        hex::decode_to_slice(padded, &mut arr).map_err(|_| TraceIdError::NotHex)?;
        Self::from_bytes(&arr)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A tenant (the `X-Scope-OrgID` header). Same rules as Cortex/Tempo tenant IDs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TenantIdError {
    #[error("tenant ID is empty")]
    Empty,
    #[error("tenant ID is longer than 150 bytes")]
    TooLong,
    #[error("tenant ID may not be '.' or '..'")]
    Dots,
    #[error("tenant ID contains {0:?}; allowed: letters, digits and !-_.*'()")]
    BadChar(char),
}

/// Why a request has no usable tenant.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("missing X-Scope-OrgID header (multitenancy is enabled)")]
    Missing,
    #[error("invalid X-Scope-OrgID header: {0}")]
    Invalid(TenantIdError),
}

/// The tenant header, as HTTP and gRPC metadata spell it.
pub const TENANT_HEADER: &str = "x-scope-orgid";

impl TenantId {
    pub const MAX_LEN: usize = 150;

    pub fn parse(s: &str) -> Result<Self, TenantIdError> {
        if s.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(TenantIdError::TooLong);
        }
        if s == "." || s == ".." {
            return Err(TenantIdError::Dots);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
        {
            return Err(TenantIdError::BadChar(c));
        }
        Ok(Self(s.to_owned()))
    }

    /// The tenant of a request from its `X-Scope-OrgID` header, as raw bytes (HTTP and
    /// gRPC alike): the one place a request's tenant is read. Without multitenancy every
    /// request is the single tenant; with it, a missing header is
    /// [`TenantError::Missing`] and a malformed one (including bytes that are not UTF-8)
    /// [`TenantError::Invalid`].
    pub fn from_header(value: Option<&[u8]>, multitenancy: bool) -> Result<Self, TenantError> {
        if !multitenancy {
            return Ok(Self::single());
        }
        let Some(value) = value else {
            return Err(TenantError::Missing);
        };
        match std::str::from_utf8(value) {
            Ok(v) => Self::parse(v.trim()).map_err(TenantError::Invalid),
            Err(_) => Err(TenantError::Invalid(TenantIdError::BadChar(
                char::REPLACEMENT_CHARACTER,
            ))),
        }
    }

    pub fn single() -> Self {
        Self(SINGLE_TENANT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Maps keyed by tenant can be looked up by the tenant's name (hashes and orders as its `String`).
impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_rejects_wrong_length_and_zero() {
        assert_eq!(
            TraceId::from_bytes(&[1; 8]),
            Err(TraceIdError::BadLength { len: 8 })
        );
        assert_eq!(TraceId::from_bytes(&[0; 16]), Err(TraceIdError::Zero));
        assert!(TraceId::from_bytes(&[7; 16]).is_ok());
    }

    #[test]
    fn trace_id_hex_round_trips_and_pads_short_ids() {
        let id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("valid");
        assert_eq!(id.to_hex(), "0af7651916cd43dd8448eb211c80319c");
        let short = TraceId::from_hex("8448eb211c80319c").expect("valid");
        assert_eq!(short.to_hex(), "00000000000000008448eb211c80319c");
        assert_eq!(TraceId::from_hex("zz"), Err(TraceIdError::NotHex));
        assert!(matches!(
            TraceId::from_hex(&"a".repeat(33)),
            Err(TraceIdError::BadHexLength { len: 33 })
        ));
        assert_eq!(TraceId::from_hex(&"0".repeat(32)), Err(TraceIdError::Zero));
    }

    #[test]
    fn tenant_ids_follow_the_cortex_rules() {
        assert!(TenantId::parse("team-a_1.prod").is_ok());
        assert_eq!(TenantId::parse(""), Err(TenantIdError::Empty));
        assert_eq!(TenantId::parse(".."), Err(TenantIdError::Dots));
        assert_eq!(TenantId::parse("a/b"), Err(TenantIdError::BadChar('/')));
        assert_eq!(
            TenantId::parse(&"x".repeat(151)),
            Err(TenantIdError::TooLong)
        );
    }

    #[test]
    fn a_requests_tenant_is_read_the_same_way_from_any_header_bytes() {
        let single = TenantId::from_header(Some(b"\xff"), false).expect("single tenant");
        assert_eq!(single, TenantId::single());
        assert_eq!(
            TenantId::from_header(Some(b" team-a "), true).map(|t| t.as_str().to_owned()),
            Ok("team-a".to_owned())
        );
        assert_eq!(TenantId::from_header(None, true), Err(TenantError::Missing));
        // Not UTF-8: malformed (400), not missing (401), on writes and reads alike.
        assert!(matches!(
            TenantId::from_header(Some(b"t\xff"), true),
            Err(TenantError::Invalid(TenantIdError::BadChar(_)))
        ));
        assert!(matches!(
            TenantId::from_header(Some(b"a/b"), true),
            Err(TenantError::Invalid(TenantIdError::BadChar('/')))
        ));
    }
}
