//! Whether a page can hold what a query asks for, from its terms and statistics. A
//! false answer is always right; a true one is confirmed by evaluating the page.

use super::{hash, key_term, name_term, value_term, PageStats};
use crate::traceql::ast::{Comparison, Expr, Field, Filter, Intrinsic, Literal, Op, Query, Scope};

/// Whether a query can select anything in a page with `terms` and `stats`.
pub(super) fn query_may_match(q: &Query, terms: &dyn Fn(u64) -> bool, stats: &PageStats) -> bool {
    match q {
        Query::Filter(Filter::All) => true,
        Query::Filter(Filter::Expr(e)) => expr_may_match(e, terms, stats),
        Query::And(a, b) => query_may_match(a, terms, stats) && query_may_match(b, terms, stats),
        Query::Or(a, b) => query_may_match(a, terms, stats) || query_may_match(b, terms, stats),
    }
}

fn expr_may_match(e: &Expr, terms: &dyn Fn(u64) -> bool, stats: &PageStats) -> bool {
    match e {
        Expr::And(a, b) => expr_may_match(a, terms, stats) && expr_may_match(b, terms, stats),
        Expr::Or(a, b) => expr_may_match(a, terms, stats) || expr_may_match(b, terms, stats),
        Expr::Static(b) => *b,
        Expr::Compare(c) => compare_may_match(c, terms, stats),
    }
}

pub(super) fn has_key(terms: &dyn Fn(u64) -> bool, scope: Scope, key: &str) -> bool {
    let key = hash(key);
    match scope {
        Scope::Any => terms(key_term(Scope::Span, key)) || terms(key_term(Scope::Resource, key)),
        s => terms(key_term(s, key)),
    }
}

fn compare_may_match(c: &Comparison, terms: &dyn Fn(u64) -> bool, stats: &PageStats) -> bool {
    match &c.field {
        Field::Attribute { scope, key } => match (&c.op, &c.value) {
            // Absence holds anywhere a span lacks it.
            (Op::Eq, Literal::Nil) => true,
            (Op::Eq, Literal::String(v)) => {
                let (key, v) = (hash(key), hash(v));
                match scope {
                    Scope::Any => {
                        terms(value_term(Scope::Span, key, v))
                            || terms(value_term(Scope::Resource, key, v))
                    }
                    s => terms(value_term(*s, key, v)),
                }
            }
            // Every other test needs the attribute.
            _ => has_key(terms, *scope, key),
        },
        Field::Intrinsic(Intrinsic::Name) => match (&c.op, &c.value) {
            (Op::Eq, Literal::String(v)) => terms(name_term(hash(v))),
            _ => true,
        },
        Field::Intrinsic(Intrinsic::Duration) => within(c, stats.span_duration),
        Field::Intrinsic(Intrinsic::TraceDuration) => within(c, stats.trace_duration),
        Field::Intrinsic(_) => true,
    }
}

/// Whether a duration comparison can hold for some value in `[min, max]`.
fn within(c: &Comparison, (min, max): (u64, u64)) -> bool {
    let l = match c.value {
        Literal::Duration(d) => d,
        Literal::Int(i) if i >= 0 => i as u64,
        _ => return true,
    };
    match c.op {
        Op::Gt => max > l,
        Op::Ge => max >= l,
        Op::Lt => min < l,
        Op::Le => min <= l,
        Op::Eq => min <= l && l <= max,
        _ => true,
    }
}
