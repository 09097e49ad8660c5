//! A recursive-descent parser over [`lexer`](super::lexer) tokens. Every error carries the
//! column of the token it is about.

use regex::Regex;

use super::ast::{
    Comparison, Expr, Field, Filter, Intrinsic, Kind, Literal, LiteralType, Op, Query, Scope,
    Status,
};
use super::lexer::{tokenize, Tok};
use super::ParseError;

/// Words that start parts of TraceQL this parser does not support yet.
const AGGREGATES: &[&str] = &[
    "count",
    "avg",
    "min",
    "max",
    "sum",
    "by",
    "select",
    "coalesce",
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
];

pub(super) fn parse(query: &str) -> Result<Query, ParseError> {
    let tokens = tokenize(query)?;
    let mut p = Parser { tokens, at: 0 };
    let q = p.spanset_or()?;
    match p.peek() {
        Tok::End => Ok(q),
        Tok::Pipe => Err(p.unsupported("pipelines (`|`)")),
        Tok::Structural(op) => {
            let op = *op;
            Err(p.unsupported(&format!("the structural operator `{op}`")))
        }
        other => Err(ParseError::at(
            p.col(),
            format!("unexpected {} after the span set", other.describe()),
        )),
    }
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.at).map_or(&Tok::End, |(t, _)| t)
    }

    fn col(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |(_, c)| *c)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), ParseError> {
        if *self.peek() == want {
            self.bump();
            Ok(())
        } else {
            Err(ParseError::at(
                self.col(),
                format!("expected {what}, found {}", self.peek().describe()),
            ))
        }
    }

    fn unsupported(&self, what: &str) -> ParseError {
        ParseError::at(
            self.col(),
            format!("{what} not supported yet: Ringtail's TraceQL has span set filters joined by && and ||"),
        )
    }

    fn spanset_or(&mut self) -> Result<Query, ParseError> {
        let mut left = self.spanset_and()?;
        while *self.peek() == Tok::Or {
            self.bump();
            let right = self.spanset_and()?;
            left = Query::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn spanset_and(&mut self) -> Result<Query, ParseError> {
        let mut left = self.spanset_term()?;
        while *self.peek() == Tok::And {
            self.bump();
            let right = self.spanset_term()?;
            left = Query::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn spanset_term(&mut self) -> Result<Query, ParseError> {
        match self.peek().clone() {
            Tok::LBrace => {
                self.bump();
                if *self.peek() == Tok::RBrace {
                    self.bump();
                    return Ok(Query::Filter(Filter::All));
                }
                let expr = self.or()?;
                self.expect(Tok::RBrace, "`}` or `&&`/`||` and another condition")?;
                Ok(Query::Filter(Filter::Expr(expr)))
            }
            Tok::LParen => {
                self.bump();
                let q = self.spanset_or()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(q)
            }
            Tok::Ident(word) if AGGREGATES.contains(&word.as_str()) => {
                Err(self.unsupported(&format!("`{word}` (aggregates and metrics)")))
            }
            other => Err(ParseError::at(
                self.col(),
                format!(
                    "expected a span set `{{ ... }}`, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while *self.peek() == Tok::Or {
            self.bump();
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        while *self.peek() == Tok::And {
            self.bump();
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().clone() {
            Tok::LParen => {
                self.bump();
                let e = self.or()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(e)
            }
            Tok::Not => Err(self.unsupported("negation `!`")),
            Tok::Ident(w) if w == "true" || w == "false" => {
                self.bump();
                Ok(Expr::Static(w == "true"))
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let field_col = self.col();
        let field = self.field()?;
        let op_col = self.col();
        let op_tok = self.bump();
        let value_col = self.col();
        let value = self.literal()?;
        let op = match op_tok {
            Tok::Eq => Op::Eq,
            Tok::Ne => Op::Ne,
            Tok::Gt => Op::Gt,
            Tok::Ge => Op::Ge,
            Tok::Lt => Op::Lt,
            Tok::Le => Op::Le,
            Tok::Match | Tok::NotMatch => {
                let Literal::String(pattern) = &value else {
                    return Err(ParseError::at(
                        value_col,
                        "a regular expression must be a string",
                    ));
                };
                let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    ParseError::at(value_col, format!("invalid regular expression: {e}"))
                })?;
                if op_tok == Tok::Match {
                    Op::Match(re)
                } else {
                    Op::NotMatch(re)
                }
            }
            other => {
                return Err(ParseError::at(
                    op_col,
                    format!(
                        "expected a comparison operator (= != > >= < <= =~ !~), found {}",
                        other.describe()
                    ),
                ))
            }
        };
        check_types(&field, &op, &value).map_err(|why| ParseError::at(field_col, why))?;
        Ok(Expr::Compare(Comparison { field, op, value }))
    }

    fn field(&mut self) -> Result<Field, ParseError> {
        let col = self.col();
        match self.bump() {
            Tok::Attr(key) => Ok(Field::Attribute {
                scope: Scope::Any,
                key,
            }),
            Tok::Ident(word) => {
                if let Some(key) = word.strip_prefix("span.") {
                    return Ok(Field::Attribute {
                        scope: Scope::Span,
                        key: key.to_owned(),
                    });
                }
                if let Some(key) = word.strip_prefix("resource.") {
                    return Ok(Field::Attribute {
                        scope: Scope::Resource,
                        key: key.to_owned(),
                    });
                }
                if let Some(i) = Intrinsic::from_name(&word) {
                    return Ok(Field::Intrinsic(i));
                }
                if let Some((scope, _)) = word.split_once('.') {
                    return Err(ParseError::at(
                        col,
                        format!(
                            "the scope `{scope}.` is not supported yet (span., resource. or . are)"
                        ),
                    ));
                }
                if AGGREGATES.contains(&word.as_str()) {
                    return Err(ParseError::at(
                        col,
                        format!("`{word}` (aggregates and metrics) not supported yet"),
                    ));
                }
                Err(ParseError::at(
                    col,
                    format!("unknown intrinsic `{word}`: attributes are written .{word}, span.{word} or resource.{word}"),
                ))
            }
            other => Err(ParseError::at(
                col,
                format!(
                    "expected an attribute or intrinsic, found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        let col = self.col();
        Ok(match self.bump() {
            Tok::Str(s) => Literal::String(s),
            Tok::Int(i) => Literal::Int(i),
            Tok::Float(f) => Literal::Float(f),
            Tok::Duration(d) => Literal::Duration(d),
            Tok::Ident(w) => match w.as_str() {
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "nil" => Literal::Nil,
                other => {
                    if let Some(s) = Status::ALL.iter().find(|s| s.as_str() == other) {
                        Literal::Status(*s)
                    } else if let Some(k) = Kind::ALL.iter().find(|k| k.as_str() == other) {
                        Literal::Kind(*k)
                    } else {
                        return Err(ParseError::at(
                            col,
                            format!("expected a value, found `{other}` (strings are quoted: \"{other}\")"),
                        ));
                    }
                }
            },
            other => {
                return Err(ParseError::at(
                    col,
                    format!("expected a value, found {}", other.describe()),
                ))
            }
        })
    }
}

/// Static checks: what a comparison can mean at all.
fn check_types(field: &Field, op: &Op, value: &Literal) -> Result<(), String> {
    let ty = value.literal_type();
    let equality = matches!(op, Op::Eq | Op::Ne);
    match ty {
        LiteralType::Nil | LiteralType::Status | LiteralType::Kind | LiteralType::Bool
            if !equality =>
        {
            return Err(format!(
                "a {} can only be compared with = or !=",
                ty.as_str()
            ));
        }
        _ => {}
    }
    if let Field::Intrinsic(i) = field {
        let want = i.expects();
        let ok = ty == want
            || (want == LiteralType::Duration && matches!(ty, LiteralType::Int))
            || (want == LiteralType::String && matches!(op, Op::Match(_) | Op::NotMatch(_)));
        if !ok {
            let name = Intrinsic::SPELLINGS
                .iter()
                .find(|(_, x)| x == i)
                .map_or("", |(s, _)| *s);
            return Err(format!(
                "`{name}` is a {}, compared here with a {}",
                want.as_str(),
                ty.as_str()
            ));
        }
    }
    Ok(())
}
