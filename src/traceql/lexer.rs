//! TraceQL tokens, each with the column it starts at (1-based, in characters).

use super::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Match,
    NotMatch,
    Pipe,
    /// `>>`, `<<`, `~`, `!>>`, `!<<`, `!~`-between-span-sets and friends: structural
    /// operators, recognised so the error can name them.
    Structural(&'static str),
    Comma,
    /// A word: keyword, intrinsic, function name, or a scoped attribute (`span.x`).
    Ident(String),
    /// `.x`: an unscoped attribute.
    Attr(String),
    Str(String),
    Int(i64),
    Float(f64),
    Duration(u64),
    End,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Attr(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Duration(_) => "a duration".into(),
            Tok::End => "the end of the query".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Not => "!",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Match => "=~",
            Tok::NotMatch => "!~",
            Tok::Pipe => "|",
            Tok::Structural(s) => s,
            Tok::Comma => ",",
            _ => "",
        }
    }
}

/// Characters that end an attribute name (besides whitespace).
fn ends_name(c: char) -> bool {
    c.is_whitespace() || "{}()=!<>~&|,\"`".contains(c)
}

pub(super) fn tokenize(query: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let next2 = chars.get(i + 2).copied();
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (tok, len) = match (c, next) {
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            (',', _) => (Tok::Comma, 1),
            ('&', Some('&')) => (Tok::And, 2),
            ('&', _) => (Tok::Structural("&>>"), 1),
            ('|', Some('|')) => (Tok::Or, 2),
            ('|', _) => (Tok::Pipe, 1),
            ('=', Some('~')) => (Tok::Match, 2),
            ('=', _) => (Tok::Eq, 1),
            ('!', Some('=')) => (Tok::Ne, 2),
            ('!', Some('~')) => (Tok::NotMatch, 2),
            ('!', Some('>')) if next2 == Some('>') => (Tok::Structural("!>>"), 3),
            ('!', Some('<')) if next2 == Some('<') => (Tok::Structural("!<<"), 3),
            ('!', _) => (Tok::Not, 1),
            ('>', Some('>')) => (Tok::Structural(">>"), 2),
            ('>', Some('=')) => (Tok::Ge, 2),
            ('>', _) => (Tok::Gt, 1),
            ('<', Some('<')) => (Tok::Structural("<<"), 2),
            ('<', Some('=')) => (Tok::Le, 2),
            ('<', _) => (Tok::Lt, 1),
            ('~', _) => (Tok::Structural("~"), 1),
            ('"', _) | ('`', _) => {
                let (s, len) = string(&chars, i)?;
                (Tok::Str(s), len)
            }
            ('.', Some(n)) if !n.is_ascii_digit() => {
                let (name, len) = attribute_name(&chars, i + 1)?;
                if name.is_empty() {
                    return Err(ParseError::at(col, "expected an attribute name after `.`"));
                }
                (Tok::Attr(name), len + 1)
            }
            (c, _)
                if c.is_ascii_digit()
                    || (c == '-' && next.is_some_and(|n| n.is_ascii_digit()))
                    || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) =>
            {
                number(&chars, i)?
            }
            (c, _) if c.is_alphabetic() || c == '_' => {
                let start = i;
                let mut j = i;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == ':')
                {
                    j += 1;
                }
                let word: String = chars[start..j].iter().collect();
                if (word == "span" || word == "resource") && chars.get(j) == Some(&'.') {
                    let (name, len) = attribute_name(&chars, j + 1)?;
                    if name.is_empty() {
                        return Err(ParseError::at(
                            j + 2,
                            "expected an attribute name after `.`",
                        ));
                    }
                    (Tok::Ident(format!("{word}.{name}")), j + 1 + len - start)
                } else if chars.get(j) == Some(&'.') {
                    // `event.x`, `link.x`, `instrumentation.x`: scopes not supported yet.
                    let (name, len) = attribute_name(&chars, j + 1)?;
                    (Tok::Ident(format!("{word}.{name}")), j + 1 + len - start)
                } else {
                    (Tok::Ident(word), j - start)
                }
            }
            (c, _) => return Err(ParseError::at(col, format!("unexpected character {c:?}"))),
        };
        out.push((tok, col));
        i += len;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

/// An attribute name from `start`: plain characters, or one quoted string
/// (`span."name with spaces"`). Returns the name and the characters it took.
fn attribute_name(chars: &[char], start: usize) -> Result<(String, usize), ParseError> {
    if chars.get(start) == Some(&'"') {
        let (s, len) = string(chars, start)?;
        return Ok((s, len));
    }
    let mut j = start;
    while j < chars.len() && !ends_name(chars[j]) {
        j += 1;
    }
    Ok((chars[start..j].iter().collect(), j - start))
}

/// A string literal from `start` (at its quote): `"..."` with escapes, or `` `...` `` raw.
fn string(chars: &[char], start: usize) -> Result<(String, usize), ParseError> {
    let quote = chars[start];
    let mut out = String::new();
    let mut j = start + 1;
    while j < chars.len() {
        let c = chars[j];
        if c == quote {
            return Ok((out, j + 1 - start));
        }
        if c == '\\' && quote == '"' {
            let escaped = chars
                .get(j + 1)
                .ok_or_else(|| ParseError::at(j + 1, "unterminated escape in string"))?;
            out.push(match escaped {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '\\' => '\\',
                '"' => '"',
                other => {
                    return Err(ParseError::at(
                        j + 1,
                        format!("unknown escape `\\{other}` in string"),
                    ))
                }
            });
            j += 2;
            continue;
        }
        out.push(c);
        j += 1;
    }
    Err(ParseError::at(start + 1, "unterminated string"))
}

/// Nanoseconds in one `unit` of a duration (TraceQL's and Go's units).
pub(crate) fn nanos_per(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

/// A number, or a duration (a number followed by `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
fn number(chars: &[char], start: usize) -> Result<(Tok, usize), ParseError> {
    let mut j = start;
    if chars[j] == '-' {
        j += 1;
    }
    while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
        j += 1;
    }
    let digits: String = chars[start..j].iter().collect();
    let unit_start = j;
    while j < chars.len() && chars[j].is_alphabetic() {
        j += 1;
    }
    let unit: String = chars[unit_start..j].iter().collect();
    let col = start + 1;
    if unit.is_empty() {
        if digits.contains('.') {
            let f: f64 = digits
                .parse()
                .map_err(|_| ParseError::at(col, format!("invalid number `{digits}`")))?;
            return Ok((Tok::Float(f), j - start));
        }
        let i: i64 = digits
            .parse()
            .map_err(|_| ParseError::at(col, format!("invalid integer `{digits}`")))?;
        return Ok((Tok::Int(i), j - start));
    }
    let Some(per_unit) = nanos_per(&unit) else {
        return Err(ParseError::at(
            unit_start + 1,
            format!("unknown duration unit `{unit}` (ns, us, ms, s, m, h)"),
        ));
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| ParseError::at(col, format!("invalid duration `{digits}{unit}`")))?;
    if value < 0.0 {
        return Err(ParseError::at(col, "a duration cannot be negative"));
    }
    let nanos = value * per_unit;
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(ParseError::at(col, "duration out of range"));
    }
    Ok((Tok::Duration(nanos.round() as u64), j - start))
}
