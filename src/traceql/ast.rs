//! What a parsed query is. Pipelines, aggregates and structural operators are not here
//! yet: they would be new [`Query`] variants (a query is a tree of span set expressions)
//! and new stages after the filter, without changing how a filter is evaluated.

use regex::Regex;

/// A whole query: span set filters joined by span set operators.
#[derive(Clone, Debug)]
pub(crate) enum Query {
    /// `{ ... }`: the spans matching the filter.
    Filter(Filter),
    /// `{a} && {b}`: a trace with spans matching each side; the union of both.
    And(Box<Query>, Box<Query>),
    /// `{a} || {b}`: a trace with spans matching either side.
    Or(Box<Query>, Box<Query>),
}

/// The inside of `{ }`.
#[derive(Clone, Debug)]
pub(crate) enum Filter {
    /// `{}`: every span.
    All,
    Expr(Expr),
}

/// A condition on one span (and its trace).
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Comparison),
    /// `true` / `false`.
    Static(bool),
}

#[derive(Clone, Debug)]
pub(crate) struct Comparison {
    pub field: Field,
    pub op: Op,
    pub value: Literal,
}

/// What a comparison reads from a span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Intrinsic(Intrinsic),
    Attribute { scope: Scope, key: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    Resource,
    Span,
    /// `.x`: the span's attribute, else its resource's.
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intrinsic {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    TraceDuration,
    TraceRootName,
    TraceRootService,
}

impl Intrinsic {
    /// Every spelling the parser accepts (Tempo's, with and without the `span:` scope).
    pub(crate) const SPELLINGS: &'static [(&'static str, Intrinsic)] = &[
        ("name", Intrinsic::Name),
        ("span:name", Intrinsic::Name),
        ("status", Intrinsic::Status),
        ("span:status", Intrinsic::Status),
        ("statusMessage", Intrinsic::StatusMessage),
        ("span:statusMessage", Intrinsic::StatusMessage),
        ("kind", Intrinsic::Kind),
        ("span:kind", Intrinsic::Kind),
        ("duration", Intrinsic::Duration),
        ("span:duration", Intrinsic::Duration),
        ("trace:duration", Intrinsic::TraceDuration),
        ("traceDuration", Intrinsic::TraceDuration),
        ("trace:rootName", Intrinsic::TraceRootName),
        ("rootName", Intrinsic::TraceRootName),
        ("trace:rootService", Intrinsic::TraceRootService),
        ("rootServiceName", Intrinsic::TraceRootService),
    ];

    /// The names the tag APIs list, one per intrinsic plus Tempo's aliases.
    pub(crate) fn listed() -> impl Iterator<Item = &'static str> {
        Self::SPELLINGS.iter().map(|(s, _)| *s)
    }

    pub(crate) fn from_name(name: &str) -> Option<Intrinsic> {
        Self::SPELLINGS
            .iter()
            .find(|(s, _)| *s == name)
            .map(|(_, i)| *i)
    }

    /// The literal type a comparison with it must have.
    pub(crate) fn expects(self) -> LiteralType {
        match self {
            Intrinsic::Name
            | Intrinsic::StatusMessage
            | Intrinsic::TraceRootName
            | Intrinsic::TraceRootService => LiteralType::String,
            Intrinsic::Status => LiteralType::Status,
            Intrinsic::Kind => LiteralType::Kind,
            Intrinsic::Duration | Intrinsic::TraceDuration => LiteralType::Duration,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LiteralType {
    String,
    Int,
    Float,
    Bool,
    Duration,
    Status,
    Kind,
    Nil,
}

impl LiteralType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LiteralType::String => "string",
            LiteralType::Int => "int",
            LiteralType::Float => "float",
            LiteralType::Bool => "bool",
            LiteralType::Duration => "duration",
            LiteralType::Status => "status",
            LiteralType::Kind => "kind",
            LiteralType::Nil => "nil",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Unset,
    Ok,
    Error,
}

impl Status {
    pub(crate) const ALL: [Status; 3] = [Status::Error, Status::Ok, Status::Unset];

    /// From OTLP's `Status.code`.
    pub(crate) fn from_code(code: i32) -> Status {
        match code {
            1 => Status::Ok,
            2 => Status::Error,
            _ => Status::Unset,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Unset => "unset",
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Unspecified,
        Kind::Internal,
        Kind::Server,
        Kind::Client,
        Kind::Producer,
        Kind::Consumer,
    ];

    /// From OTLP's `Span.kind`.
    pub(crate) fn from_code(code: i32) -> Kind {
        match code {
            1 => Kind::Internal,
            2 => Kind::Server,
            3 => Kind::Client,
            4 => Kind::Producer,
            5 => Kind::Consumer,
            _ => Kind::Unspecified,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Unspecified => "unspecified",
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Literal {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(u64),
    Status(Status),
    Kind(Kind),
    Nil,
}

impl Literal {
    pub(crate) fn literal_type(&self) -> LiteralType {
        match self {
            Literal::String(_) => LiteralType::String,
            Literal::Int(_) => LiteralType::Int,
            Literal::Float(_) => LiteralType::Float,
            Literal::Bool(_) => LiteralType::Bool,
            Literal::Duration(_) => LiteralType::Duration,
            Literal::Status(_) => LiteralType::Status,
            Literal::Kind(_) => LiteralType::Kind,
            Literal::Nil => LiteralType::Nil,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// `=~`, anchored at both ends (as Tempo's).
    Match(Regex),
    /// `!~`.
    NotMatch(Regex),
}

impl Query {
    /// Every field a filter reads (the attributes a span set reports).
    pub(crate) fn fields(&self) -> Vec<&Field> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a Field>) {
        match self {
            Query::Filter(Filter::All) => {}
            Query::Filter(Filter::Expr(e)) => e.collect_fields(out),
            Query::And(a, b) | Query::Or(a, b) => {
                a.collect_fields(out);
                b.collect_fields(out);
            }
        }
    }
}

impl Expr {
    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a Field>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_fields(out);
                b.collect_fields(out);
            }
            Expr::Compare(c) => {
                if !out.contains(&&c.field) {
                    out.push(&c.field);
                }
            }
            Expr::Static(_) => {}
        }
    }
}
