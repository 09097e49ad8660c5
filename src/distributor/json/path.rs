//! Where a value sits in the request, for error messages: `resourceSpans[0].scopeSpans[1]
//! .spans[3].kind`, with each field named as the sender spelled it. A path is a chain of
//! borrowed steps on the stack, so nothing is allocated unless an error is reported.

use std::fmt;

use serde_json::Value;

use crate::distributor::PushError;

#[derive(Clone, Copy)]
pub(super) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    pub(super) fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    pub(super) fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }

    /// `MalformedJson` for the value at this path.
    pub(super) fn error(&self, problem: impl fmt::Display) -> PushError {
        match self {
            Path::Root => PushError::MalformedJson(problem.to_string()),
            _ => PushError::MalformedJson(format!("{self}: {problem}")),
        }
    }

    /// `MalformedJson`: the value at this path is not `expected`.
    pub(super) fn expected(&self, expected: &str, got: &Value) -> PushError {
        self.error(format_args!("expected {expected}, got {}", Shown(got)))
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A JSON value as an error message shows it: scalars as written (long strings cut),
/// objects and arrays by their kind.
pub(super) struct Shown<'a>(pub(super) &'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_CHARS: usize = 40;
        match self.0 {
            Value::Object(_) => f.write_str("an object"),
            Value::Array(_) => f.write_str("an array"),
            Value::String(s) if s.chars().count() > MAX_CHARS => {
                let cut: String = s.chars().take(MAX_CHARS).collect();
                write!(f, "{}…", Value::from(cut))
            }
            scalar => write!(f, "{scalar}"),
        }
    }
}
