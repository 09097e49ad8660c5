//! The search and tag APIs' query parameters, as Tempo reads them, checked. Pure.

use std::collections::HashMap;

use thiserror::Error;

use super::TimeRange;
use crate::error::{ErrorCode, HasErrorCode};
use crate::traceql::ast::{Comparison, Expr, Field, Filter, Intrinsic, Literal, Op, Query, Scope};
use crate::traceql::{self, ParseError};

pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const DEFAULT_SPANS_PER_SET: usize = 3;
/// Most results one search returns, whatever `limit` asks.
pub(crate) const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Error)]
pub(crate) enum ParamError {
    #[error("invalid TraceQL query: {0}")]
    Query(#[from] ParseError),
    #[error("invalid {name}: {why}")]
    Invalid { name: &'static str, why: String },
}

impl HasErrorCode for ParamError {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

fn invalid(name: &'static str, why: impl Into<String>) -> ParamError {
    ParamError::Invalid {
        name,
        why: why.into(),
    }
}

/// `/api/search`.
#[derive(Debug, Clone)]
pub(crate) struct SearchParams {
    /// The query as sent to ingesters (TraceQL text: the legacy parameters are turned
    /// into TraceQL here).
    pub query_text: String,
    pub query: Query,
    /// `None`: recent data (the ingesters only), as Tempo without `start`/`end`.
    pub range: Option<TimeRange>,
    pub limit: usize,
    pub spans_per_set: usize,
}

impl SearchParams {
    pub(crate) fn parse(p: &HashMap<String, String>) -> Result<Self, ParamError> {
        let limit = count(p, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
        let spans_per_set = count(p, "spss", DEFAULT_SPANS_PER_SET)?;
        let range = range(p)?;
        let mut text = match p.get("q").map(|q| q.trim()).filter(|q| !q.is_empty()) {
            Some(q) => q.to_owned(),
            None => legacy_tags(p.get("tags").map(String::as_str).unwrap_or(""))?,
        };
        for (name, op) in [("minDuration", ">="), ("maxDuration", "<=")] {
            if let Some(d) = p.get(name).filter(|v| !v.is_empty()) {
                let nanos = go_duration(d).ok_or_else(|| {
                    invalid(
                        name,
                        format!("{d:?} is not a duration (e.g. 100ms, 1.5s, 1m30s)"),
                    )
                })?;
                text = format!("({text}) && {{ trace:duration {op} {nanos}ns }}");
            }
        }
        let query = traceql::parse(&text)?;
        Ok(Self {
            query_text: text,
            query,
            range,
            limit,
            spans_per_set,
        })
    }
}

/// The tag APIs.
#[derive(Debug, Clone)]
pub(crate) struct TagParams {
    pub range: Option<TimeRange>,
    /// `q` narrowing the values to spans that match it (values calls only).
    pub filter_text: Option<String>,
    pub filter: Option<Query>,
    pub limit: Option<usize>,
}

impl TagParams {
    pub(crate) fn parse(p: &HashMap<String, String>) -> Result<Self, ParamError> {
        let text = p
            .get("q")
            .map(|q| q.trim())
            .filter(|q| !q.is_empty() && *q != "{}");
        let filter = text.map(traceql::parse).transpose()?;
        let limit = match p.get("limit").filter(|v| !v.is_empty()) {
            Some(_) => Some(count(p, "limit", 0)?),
            None => None,
        };
        Ok(Self {
            range: range(p)?,
            filter_text: text.map(str::to_owned),
            filter,
            limit,
        })
    }
}

/// A positive integer parameter, or its default when absent.
fn count(
    p: &HashMap<String, String>,
    name: &'static str,
    default: usize,
) -> Result<usize, ParamError> {
    match p.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Err(invalid(name, "must be greater than 0")),
            Ok(n) => Ok(n),
            Err(_) => Err(invalid(name, format!("{v:?} is not a positive integer"))),
        },
    }
}

/// `start` and `end`, unix seconds: both or neither, `end` after `start`.
fn range(p: &HashMap<String, String>) -> Result<Option<TimeRange>, ParamError> {
    let secs = |name: &'static str| -> Result<Option<u64>, ParamError> {
        match p.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| invalid(name, format!("{v:?} is not unix seconds"))),
        }
    };
    match (secs("start")?, secs("end")?) {
        (None, None) => Ok(None),
        (Some(start), Some(end)) if end > start => Ok(Some(TimeRange {
            start: start.saturating_mul(1_000_000_000),
            // Through the last nanosecond of the `end` second.
            end: end
                .saturating_mul(1_000_000_000)
                .saturating_add(999_999_999),
        })),
        (Some(_), Some(_)) => Err(invalid("end", "must be after start")),
        (Some(_), None) => Err(invalid("end", "start without end")),
        (None, Some(_)) => Err(invalid("start", "end without start")),
    }
}

/// The legacy `tags` parameter (logfmt `key=value key2="a value"`) as TraceQL: each pair
/// an equality on the span's or resource's attribute (`name` and `status` are the
/// intrinsics), all of them on one span.
fn legacy_tags(tags: &str) -> Result<String, ParamError> {
    let pairs = logfmt(tags).map_err(|why| invalid("tags", why))?;
    if pairs.is_empty() {
        return Ok("{}".into());
    }
    let conditions: Vec<Expr> = pairs
        .into_iter()
        .map(|(k, v)| {
            let (field, value) = match k.as_str() {
                "name" => (Field::Intrinsic(Intrinsic::Name), Literal::String(v)),
                _ => (
                    Field::Attribute {
                        scope: Scope::Any,
                        key: k,
                    },
                    Literal::String(v),
                ),
            };
            Expr::Compare(Comparison {
                field,
                op: Op::Eq,
                value,
            })
        })
        .collect();
    Ok(to_traceql(&Query::Filter(Filter::Expr(
        conditions
            .into_iter()
            .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
            .unwrap_or(Expr::Static(true)),
    ))))
}

/// TraceQL text for the queries `legacy_tags` builds.
fn to_traceql(q: &Query) -> String {
    fn expr(e: &Expr) -> String {
        match e {
            Expr::And(a, b) => format!("{} && {}", expr(a), expr(b)),
            Expr::Or(a, b) => format!("({} || {})", expr(a), expr(b)),
            Expr::Static(b) => b.to_string(),
            Expr::Compare(c) => {
                let field = match &c.field {
                    Field::Intrinsic(_) => "name".to_owned(),
                    Field::Attribute { key, .. } => format!(".{}", quote_name(key)),
                };
                let value = match &c.value {
                    Literal::String(s) => format!("{s:?}"),
                    _ => String::new(),
                };
                format!("{field} = {value}")
            }
        }
    }
    match q {
        Query::Filter(Filter::Expr(e)) => format!("{{ {} }}", expr(e)),
        _ => "{}".into(),
    }
}

fn quote_name(key: &str) -> String {
    if key
        .chars()
        .any(|c| c.is_whitespace() || "{}()=!<>~&|,\"`".contains(c))
    {
        format!("{key:?}")
    } else {
        key.to_owned()
    }
}

/// `key=value` pairs separated by spaces; values may be double-quoted.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("expected key=value, found {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of {key}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`), in nanoseconds.
pub(crate) fn go_duration(s: &str) -> Option<u64> {
    let mut total: f64 = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = traceql::nanos_per(&rest[..u])?;
        total += value * unit;
        rest = &rest[u..];
    }
    (total.is_finite() && total < u64::MAX as f64).then_some(total.round() as u64)
}
