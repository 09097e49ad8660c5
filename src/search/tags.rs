//! Tag names and values from the same decoded traces a search reads, bounded per query
//! by the tenant's `max_bytes_per_tag_values_query` (Tempo's): past the cap a collector
//! takes nothing more and says it was cut short.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::eval::{field_value, Val};
use super::model::{Attr, SearchTrace};
use super::section::{Lookup, Owner, TableValue, TagTable};
use crate::traceql::ast::{Field, Intrinsic, Scope};
use crate::traceql::Query;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagScope {
    Resource,
    Span,
}

/// Attribute names by scope, at most `cap` bytes of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagNames {
    pub resource: BTreeSet<String>,
    pub span: BTreeSet<String>,
    pub truncated: bool,
    bytes: usize,
    cap: usize,
}

impl TagNames {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            resource: BTreeSet::new(),
            span: BTreeSet::new(),
            truncated: false,
            bytes: 0,
            cap,
        }
    }

    pub(crate) fn offer(&mut self, trace: &SearchTrace) {
        for resource in &trace.resources {
            let attrs = &trace.attrs[resource.attrs.start as usize..resource.attrs.end as usize];
            self.add(TagScope::Resource, attrs);
        }
        for span in &trace.spans {
            self.add(TagScope::Span, trace.span_attrs(span));
        }
    }

    /// An empty collection with the same cap.
    pub(crate) fn empty_like(&self) -> Self {
        Self::new(self.cap)
    }

    /// Takes a block's names from its tag table; false when the table's lists are
    /// incomplete (the block's pages are read instead).
    pub(crate) fn offer_table(&mut self, table: &TagTable) -> bool {
        if table.keys_overflow {
            return false;
        }
        for (scope, owner) in [
            (TagScope::Resource, Owner::Resource),
            (TagScope::Span, Owner::Span),
        ] {
            for key in table.keys(owner) {
                self.add_name(scope, key);
            }
        }
        true
    }

    fn add(&mut self, scope: TagScope, attributes: &[Attr]) {
        for attr in attributes {
            self.add_name(scope, attr.key);
        }
    }

    fn add_name(&mut self, scope: TagScope, name: &str) {
        let set = match scope {
            TagScope::Resource => &mut self.resource,
            TagScope::Span => &mut self.span,
        };
        if self.truncated || set.contains(name) {
            return;
        }
        if self.bytes + name.len() > self.cap {
            self.truncated = true;
            return;
        }
        self.bytes += name.len();
        set.insert(name.to_owned());
    }

    /// Adds another node's names (`truncated`: it stopped at its cap).
    pub(crate) fn absorb(&mut self, resource: Vec<String>, span: Vec<String>, truncated: bool) {
        for (scope, names) in [(TagScope::Resource, resource), (TagScope::Span, span)] {
            for name in names {
                self.add_name(scope, &name);
            }
        }
        self.truncated |= truncated;
    }

    /// Every name once, scopes merged (the v1 API's `tagNames`).
    pub(crate) fn all(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.resource.iter().chain(&self.span).collect();
        all.into_iter().cloned().collect()
    }
}

/// A value and its TraceQL type, as `/api/v2/search/tag/{tag}/values` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct TagValue {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// The distinct values of one tag, at most `cap` bytes of them.
#[derive(Debug, Clone)]
pub(crate) struct TagValues {
    pub field: Field,
    pub values: BTreeSet<TagValue>,
    pub truncated: bool,
    bytes: usize,
    cap: usize,
}

impl TagValues {
    pub(crate) fn new(field: Field, cap: usize) -> Self {
        Self {
            field,
            values: BTreeSet::new(),
            truncated: false,
            bytes: 0,
            cap,
        }
    }

    /// The values of the tag on the trace's spans; only on the spans `filter` selects
    /// when there is one.
    pub(crate) fn offer(&mut self, trace: &SearchTrace, filter: Option<&Query>) {
        let selected: Vec<usize> = match filter {
            Some(q) => match super::eval::evaluate(q, trace) {
                Some(spans) => spans,
                None => return,
            },
            None => (0..trace.spans.len()).collect(),
        };
        for i in selected {
            let span = &trace.spans[i];
            if let Some(v) = field_value(&self.field, trace, span).and_then(typed) {
                self.add(v);
            }
            if self.truncated {
                return;
            }
        }
    }

    /// An empty collection of the same tag with the same cap.
    pub(crate) fn empty_like(&self) -> Self {
        Self::new(self.field.clone(), self.cap)
    }

    /// Takes a block's values of the tag from its tag table; false when the table does
    /// not have them (too many to keep, or a field it does not list: the block's pages
    /// are read instead).
    pub(crate) fn offer_table(&mut self, table: &TagTable) -> bool {
        let owners: &[Owner] = match &self.field {
            Field::Intrinsic(Intrinsic::Status) => {
                for s in table.statuses() {
                    self.add(TagValue::of("status", s.as_str()));
                }
                return true;
            }
            Field::Intrinsic(Intrinsic::Kind) => {
                for k in table.kinds() {
                    self.add(TagValue::of("kind", k.as_str()));
                }
                return true;
            }
            Field::Intrinsic(Intrinsic::Name) => &[Owner::SpanName],
            Field::Intrinsic(_) => return false,
            Field::Attribute { scope, .. } => match scope {
                Scope::Resource => &[Owner::Resource],
                Scope::Span => &[Owner::Span],
                Scope::Any => &[Owner::Resource, Owner::Span],
            },
        };
        let key = match &self.field {
            Field::Attribute { key, .. } => key.clone(),
            Field::Intrinsic(_) => String::new(),
        };
        let mut found = Vec::new();
        for &owner in owners {
            match table.lookup(owner, &key) {
                Lookup::Absent => {}
                Lookup::Overflow => return false,
                Lookup::Values(values) => found.push(values),
            }
        }
        for v in found.into_iter().flatten() {
            self.add(match v {
                TableValue::Str(s) => TagValue::of("string", s),
                TableValue::Int(i) => TagValue::of("int", &i.to_string()),
                TableValue::Float(bits) => {
                    TagValue::of("float", &f64::from_bits(*bits).to_string())
                }
                TableValue::Bool(b) => TagValue::of("bool", &b.to_string()),
            });
        }
        true
    }

    fn add(&mut self, v: TagValue) {
        if self.truncated || self.values.contains(&v) {
            return;
        }
        if self.bytes + v.value.len() > self.cap {
            self.truncated = true;
            return;
        }
        self.bytes += v.value.len();
        self.values.insert(v);
    }

    pub(crate) fn absorb(&mut self, values: impl IntoIterator<Item = TagValue>, truncated: bool) {
        for v in values {
            self.add(v);
        }
        self.truncated |= truncated;
    }
}

impl TagValue {
    fn of(kind: &str, value: &str) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

fn typed(v: Val<'_>) -> Option<TagValue> {
    let (kind, value) = match v {
        Val::Str(s) => ("string", s.to_owned()),
        Val::Int(i) => ("int", i.to_string()),
        Val::Float(f) => ("float", f.to_string()),
        Val::Bool(b) => ("bool", b.to_string()),
        Val::Status(s) => ("status", s.as_str().to_owned()),
        Val::Kind(k) => ("kind", k.as_str().to_owned()),
        // Durations are not listed (every span has its own); neither are arrays and maps.
        Val::Duration(_) | Val::Other => return None,
    };
    Some(TagValue {
        kind: kind.into(),
        value,
    })
}

/// The tag a values request names: an intrinsic, `resource.x`, `span.x`, `.x`, or (the v1
/// API, unscoped) a bare attribute name.
pub(crate) fn parse_tag(tag: &str, scoped: bool) -> Option<Field> {
    if tag.is_empty() {
        return None;
    }
    if scoped {
        if let Some(i) = Intrinsic::from_name(tag) {
            return Some(Field::Intrinsic(i));
        }
        for (prefix, scope) in [
            ("resource.", Scope::Resource),
            ("span.", Scope::Span),
            (".", Scope::Any),
        ] {
            if let Some(key) = tag.strip_prefix(prefix) {
                return (!key.is_empty()).then(|| Field::Attribute {
                    scope,
                    key: key.to_owned(),
                });
            }
        }
        return None;
    }
    Some(Field::Attribute {
        scope: Scope::Any,
        key: tag.to_owned(),
    })
}
