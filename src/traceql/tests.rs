use rand::{RngExt, SeedableRng};

use super::ast::{Field, Filter, Intrinsic, Literal, Op, Query, Scope};
use super::{parse, ParseError};

fn err(q: &str) -> ParseError {
    match parse(q) {
        Ok(ast) => panic!("{q} parsed: {ast:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_queries_people_write_parse() {
    for q in [
        "{}",
        "{ }",
        r#"{ resource.service.name = "checkout" && duration > 200ms }"#,
        "{ span.http.response.status_code >= 500 }",
        "{ status = error }",
        "{ status != ok && kind = server }",
        r#"{ .http.method = "GET" || .http.method = "POST" }"#,
        r#"{ (name = "a" || name = "b") && duration < 1.5s }"#,
        r#"{ name =~ "GET /api/.*" }"#,
        r#"{ name !~ "health.*" }"#,
        r#"{ trace:rootService = "frontend" && trace:duration > 1s }"#,
        r#"{ trace:rootName = "GET /" }"#,
        r#"{ statusMessage = "boom" }"#,
        r#"{ span.retry = true }"#,
        "{ span.ratio > 0.5 }",
        "{ span.count = -3 }",
        "{ .missing = nil }",
        "{ .present != nil }",
        r#"{ span."name with spaces" = "x" }"#,
        r#"{ resource.service.name = "a" } && { resource.service.name = "b" }"#,
        r#"{ .a = 1 } || { .b = 2 } && { .c = 3 }"#,
        r#"({ .a = 1 } || { .b = 2 }) && { .c = 3 }"#,
        "{ duration > 100us && duration < 2m }",
        "{ kind = unspecified }",
        "{ true }",
    ] {
        if let Err(e) = parse(q) {
            panic!("{q}: {e}");
        }
    }
}

#[test]
fn scopes_intrinsics_and_literals_are_read_as_written() {
    let Ok(Query::Filter(Filter::Expr(super::ast::Expr::Compare(c)))) =
        parse(r#"{ resource.service.name = "checkout" }"#)
    else {
        panic!("not one comparison");
    };
    assert_eq!(
        c.field,
        Field::Attribute {
            scope: Scope::Resource,
            key: "service.name".into()
        }
    );
    assert!(matches!(c.op, Op::Eq));
    assert!(matches!(c.value, Literal::String(ref s) if s == "checkout"));

    let Ok(Query::Filter(Filter::Expr(super::ast::Expr::Compare(c)))) =
        parse("{ duration >= 1.5s }")
    else {
        panic!("not one comparison");
    };
    assert_eq!(c.field, Field::Intrinsic(Intrinsic::Duration));
    assert!(matches!(c.value, Literal::Duration(1_500_000_000)));
}

#[test]
fn span_set_and_binds_tighter_than_or() {
    let Ok(Query::Or(_, right)) = parse("{ .a = 1 } || { .b = 2 } && { .c = 3 }") else {
        panic!("top is not ||");
    };
    assert!(matches!(*right, Query::And(..)));
}

#[test]
fn errors_point_at_the_column_of_the_problem() {
    let e = err(r#"{ .a = "x" "#);
    assert_eq!(e.col, 12, "{e}");
    assert!(e.message.contains("expected `}`"), "{e}");

    let e = err("{ duration > 200xs }");
    assert_eq!(e.col, 17, "{e}");
    assert!(e.message.contains("unknown duration unit"), "{e}");

    let e = err("{ foo = 1 }");
    assert_eq!(e.col, 3, "{e}");
    assert!(e.message.contains(".foo"), "{e}");

    let e = err(r#"{ .a = "unterminated }"#);
    assert_eq!(e.col, 8, "{e}");

    let e = err("{ .a == 1 }");
    assert_eq!(e.col, 7, "the second `=`: {e}");

    let e = err(r#"{ .a =~ "(" }"#);
    assert!(e.message.contains("invalid regular expression"), "{e}");
    assert_eq!(e.col, 9);
    assert_eq!(
        e.to_string(),
        format!("parse error at line 1, col 9: {}", e.message)
    );
}

#[test]
fn comparisons_that_cannot_mean_anything_are_refused() {
    assert!(err("{ status = 5 }").message.contains("status"));
    assert!(err(r#"{ duration > "slow" }"#).message.contains("duration"));
    assert!(err("{ name = error }").message.contains("string"));
    assert!(err("{ status > error }").message.contains("= or !="));
    assert!(err("{ .a > nil }").message.contains("= or !="));
    assert!(err("{ .a =~ 5 }").message.contains("regular expression"));
}

#[test]
fn what_is_not_supported_yet_is_named() {
    for (q, names) in [
        ("{ .a = 1 } | count() > 2", "pipelines"),
        ("{ .a = 1 } >> { .b = 2 }", "`>>`"),
        ("{ .a = 1 } ~ { .b = 2 }", "`~`"),
        ("{ .a = 1 } !<< { .b = 2 }", "`!<<`"),
        ("count_over_time()", "aggregates"),
        ("{ event.name = \"x\" }", "`event.`"),
        ("{ !(.a = 1) }", "negation"),
    ] {
        let e = err(q);
        assert!(e.message.contains(names), "{q}: {e}");
        assert!(e.message.contains("not supported"), "{q}: {e}");
    }
}

#[test]
fn empty_and_garbage_queries_are_errors_not_panics() {
    for q in [
        "",
        "   ",
        "{",
        "}",
        "{{}}",
        "{ . }",
        "{ .a = }",
        "{ () }",
        "((",
        "{ .a = 1 } &&",
        "µ",
        "{ span. = 1 }",
        "{ 5 = .a }",
        "{ .a = 1 }}",
    ] {
        let e = err(q);
        assert!(e.col >= 1, "{q}: {e}");
        assert!(e.col <= q.chars().count() + 1, "{q}: {e}");
    }
}

/// Random strings of TraceQL-ish fragments: the parser never panics, and every error's
/// column is inside the query (or just past its end).
#[test]
fn random_queries_never_panic_and_errors_stay_inside_the_query() {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "(",
        ")",
        "&&",
        "||",
        "!",
        "=",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "=~",
        "!~",
        "|",
        ">>",
        "~",
        ",",
        ".",
        ".a",
        "span.",
        "span.x",
        "resource.service.name",
        "name",
        "status",
        "kind",
        "duration",
        "trace:duration",
        "error",
        "server",
        "nil",
        "true",
        "\"",
        "\"s\"",
        "`r`",
        "1",
        "-2",
        "3.5",
        "200ms",
        "1.5s",
        "9999999999999999999999",
        "µs",
        "\\",
        " ",
        "count",
        "(",
        "é",
        "\u{0}",
        "ns",
        "..",
        "1e5",
        "-",
        ":",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for _ in 0..20_000 {
        let n = rng.random_range(0..12);
        let q: String = (0..n)
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect::<Vec<_>>()
            .join(if rng.random_bool(0.5) { " " } else { "" });
        if let Err(e) = parse(&q) {
            assert!(e.col >= 1 && e.col <= q.chars().count() + 1, "{q:?}: {e}");
        }
    }
}
