//! TraceQL, the part people use: span set filters `{ ... }` with conditions on
//! intrinsics (`name`, `status`, `kind`, `duration`, `statusMessage`, `trace:duration`,
//! `trace:rootName`, `trace:rootService`) and attributes (`resource.x`, `span.x`, `.x`),
//! joined by `&&` / `||` inside a filter and between filters.
//!
//! Pure syntax: [`parse`] turns a query into an [`ast::Query`] or a [`ParseError`] that
//! names the column; evaluation over traces is `search::eval`. Everything else in the
//! language (pipelines, aggregates, structural operators, metrics) is recognised and
//! refused with an error that names it.

pub(crate) mod ast;
mod lexer;

pub(crate) use lexer::nanos_per;
mod parser;

#[cfg(test)]
mod tests;

pub(crate) use ast::Query;

/// A query that does not parse, with the 1-based column (in characters) it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line 1, col {col}: {message}")]
pub(crate) struct ParseError {
    pub col: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(col: usize, message: impl Into<String>) -> Self {
        Self {
            col,
            message: message.into(),
        }
    }
}

/// Parses a TraceQL query.
pub(crate) fn parse(query: &str) -> Result<Query, ParseError> {
    if query.trim().is_empty() {
        return Err(ParseError::at(1, "empty query: `{}` matches every trace"));
    }
    parser::parse(query)
}
