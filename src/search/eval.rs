//! TraceQL evaluated over a decoded trace: which spans each filter matches, and whether
//! the trace matches the whole query. Pure.
//!
//! Semantics (Tempo's): a filter `{ cond }` selects the spans for which `cond` holds; a
//! trace matches when the selection is not empty. `{a} && {b}` needs both selections
//! non-empty and reports their union; `{a} || {b}` needs either. A comparison with an
//! attribute the span does not have is false (`!= nil` asks whether it has it). `.x`
//! reads the span's attribute, else its resource's. Numbers compare across int and
//! float; durations are nanoseconds.

use std::cmp::Ordering;

use super::model::{attribute, AttrValue, SearchSpan, SearchTrace, NO_ROOT};
use crate::traceql::ast::{
    Comparison, Expr, Field, Filter, Intrinsic, Kind, Literal, Op, Query, Scope, Status,
};

/// Indices into `trace.spans` of the spans the query selected (sorted, distinct), or
/// `None` when the trace does not match.
pub(crate) fn evaluate(query: &Query, trace: &SearchTrace) -> Option<Vec<usize>> {
    match query {
        Query::Filter(filter) => {
            let spans: Vec<usize> = (0..trace.spans.len())
                .filter(|&i| matches_filter(filter, trace, &trace.spans[i]))
                .collect();
            (!spans.is_empty()).then_some(spans)
        }
        Query::And(a, b) => {
            let left = evaluate(a, trace)?;
            let right = evaluate(b, trace)?;
            Some(union(left, right))
        }
        Query::Or(a, b) => match (evaluate(a, trace), evaluate(b, trace)) {
            (Some(l), Some(r)) => Some(union(l, r)),
            (Some(l), None) => Some(l),
            (None, r) => r,
        },
    }
}

fn union(mut a: Vec<usize>, b: Vec<usize>) -> Vec<usize> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

fn matches_filter(filter: &Filter, trace: &SearchTrace, span: &SearchSpan) -> bool {
    match filter {
        Filter::All => true,
        Filter::Expr(e) => matches_expr(e, trace, span),
    }
}

fn matches_expr(expr: &Expr, trace: &SearchTrace, span: &SearchSpan) -> bool {
    match expr {
        Expr::And(a, b) => matches_expr(a, trace, span) && matches_expr(b, trace, span),
        Expr::Or(a, b) => matches_expr(a, trace, span) || matches_expr(b, trace, span),
        Expr::Static(b) => *b,
        Expr::Compare(c) => compare(c, trace, span),
    }
}

/// A span's value of a field, borrowed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Duration(u64),
    Status(Status),
    Kind(Kind),
    /// Arrays, maps, bytes: present, but no comparison applies.
    Other,
}

fn from_attr(v: AttrValue<'_>) -> Val<'_> {
    match v {
        AttrValue::Str(s) => Val::Str(s),
        AttrValue::Int(i) => Val::Int(i),
        AttrValue::Float(f) => Val::Float(f),
        AttrValue::Bool(b) => Val::Bool(b),
        AttrValue::Other(_) => Val::Other,
    }
}

/// The value `field` has on `span` (`None`: absent).
pub(crate) fn field_value<'a>(
    field: &Field,
    trace: &SearchTrace<'a>,
    span: &SearchSpan<'a>,
) -> Option<Val<'a>> {
    match field {
        Field::Intrinsic(i) => Some(match i {
            Intrinsic::Name => Val::Str(span.name),
            Intrinsic::Status => Val::Status(span.status),
            Intrinsic::StatusMessage => Val::Str(span.status_message),
            Intrinsic::Kind => Val::Kind(span.kind),
            Intrinsic::Duration => Val::Duration(span.duration()),
            Intrinsic::TraceDuration => Val::Duration(trace.duration()),
            Intrinsic::TraceRootName => Val::Str(trace.root_name.unwrap_or(NO_ROOT)),
            Intrinsic::TraceRootService => Val::Str(trace.root_service.unwrap_or(NO_ROOT)),
        }),
        Field::Attribute { scope, key } => {
            let on_span = || attribute(trace.span_attrs(span), key);
            let on_resource = || attribute(trace.resource_of(span), key);
            let v = match scope {
                Scope::Span => on_span(),
                Scope::Resource => on_resource(),
                Scope::Any => on_span().or_else(on_resource),
            };
            v.map(from_attr)
        }
    }
}

fn compare(c: &Comparison, trace: &SearchTrace, span: &SearchSpan) -> bool {
    let value = field_value(&c.field, trace, span);
    let Some(value) = value else {
        // Absent: only `= nil` holds.
        return matches!((&c.op, &c.value), (Op::Eq, Literal::Nil));
    };
    match (&c.op, &c.value) {
        (Op::Eq, Literal::Nil) => return false,
        (Op::Ne, Literal::Nil) => return true,
        (Op::Match(re), _) => return matches!(value, Val::Str(s) if re.is_match(s)),
        (Op::NotMatch(re), _) => return matches!(value, Val::Str(s) if !re.is_match(s)),
        _ => {}
    }
    let Some(ordering) = order(value, &c.value) else {
        return false;
    };
    match c.op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Match(_) | Op::NotMatch(_) => false,
    }
}

/// How a span's value orders against a literal; `None` when the types do not compare
/// (then every operator is false, `!=` included, as in Tempo). Equality-only types
/// answer Equal or Greater.
fn order(value: Val<'_>, literal: &Literal) -> Option<Ordering> {
    let eq = |same: bool| {
        Some(if same {
            Ordering::Equal
        } else {
            Ordering::Greater
        })
    };
    match (value, literal) {
        (Val::Str(s), Literal::String(l)) => Some(s.cmp(l.as_str())),
        (Val::Bool(b), Literal::Bool(l)) => eq(b == *l),
        (Val::Status(s), Literal::Status(l)) => eq(s == *l),
        (Val::Kind(k), Literal::Kind(l)) => eq(k == *l),
        (Val::Duration(d), Literal::Duration(l)) => Some(d.cmp(l)),
        (Val::Duration(d), Literal::Int(l)) => Some((d as i128).cmp(&(*l as i128))),
        (Val::Int(i), Literal::Int(l)) => Some(i.cmp(l)),
        (Val::Int(_) | Val::Float(_), Literal::Int(_) | Literal::Float(_)) => {
            let v = match value {
                Val::Int(i) => i as f64,
                Val::Float(f) => f,
                _ => return None,
            };
            let l = match literal {
                Literal::Int(i) => *i as f64,
                Literal::Float(f) => *f,
                _ => return None,
            };
            v.partial_cmp(&l)
        }
        _ => None,
    }
}
