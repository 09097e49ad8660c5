//! A block's tag table (in the header since section version 2): every attribute key by
//! scope with its distinct values up to a cap, the span names likewise, and which
//! statuses and kinds occur. The tag APIs (Grafana's autocomplete) are answered from it
//! without reading a page; a key past the cap says so and is read from the pages.
//!
//! ```text
//! table: keys overflowed (u8), status mask (u8), kind mask (u8), entry count, entries
//! entry: owner ('r' resource, 's' span, 'n' span names with an empty key), key length ‖
//!        key, overflowed (u8), value count, values (type ‖ payload: 0 string: length ‖
//!        bytes; 1 int: zigzag varint; 2 float: 8 bytes LE; 3 false; 4 true)
//! ```

use std::collections::{BTreeSet, HashMap};

use super::{put_varint, unzigzag, zigzag, Cursor, SectionError};
use crate::traceql::ast::{Kind, Scope, Status};

/// Distinct values kept per key and block; past either cap the key keeps none and is
/// marked (its values are then read from the pages, as an old block's are).
pub(super) const MAX_VALUES: usize = 256;
pub(super) const MAX_VALUE_BYTES: usize = 16 << 10;
/// Keys kept per owner and block, likewise.
pub(super) const MAX_KEYS: usize = 4096;

/// Whose key an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Owner {
    Resource,
    Span,
    /// Span names (one entry, empty key).
    SpanName,
}

impl Owner {
    pub(crate) fn of(scope: Scope) -> Self {
        match scope {
            Scope::Resource => Self::Resource,
            _ => Self::Span,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Resource => b'r',
            Self::Span => b's',
            Self::SpanName => b'n',
        }
    }

    fn from_byte(b: u8) -> Result<Self, SectionError> {
        Ok(match b {
            b'r' => Self::Resource,
            b's' => Self::Span,
            b'n' => Self::SpanName,
            _ => return Err(SectionError("tag table owner")),
        })
    }
}

/// A value as the table keeps it (floats by their bits, so values are ordered sets).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TableValue {
    Str(Box<str>),
    Int(i64),
    Float(u64),
    Bool(bool),
}

impl TableValue {
    fn size(&self) -> usize {
        match self {
            Self::Str(s) => s.len(),
            _ => 8,
        }
    }
}

/// One key's values in a block.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Entry {
    /// Past the caps: `values` is empty and says nothing.
    pub overflow: bool,
    pub values: BTreeSet<TableValue>,
    bytes: usize,
}

impl Entry {
    pub(super) fn add(&mut self, v: TableValue) {
        if self.overflow || self.values.contains(&v) {
            return;
        }
        if self.values.len() >= MAX_VALUES || self.bytes + v.size() > MAX_VALUE_BYTES {
            self.overflow = true;
            self.values = BTreeSet::new();
            self.bytes = 0;
            return;
        }
        self.bytes += v.size();
        self.values.insert(v);
    }
}

/// What a lookup of one key found.
pub(crate) enum Lookup<'a> {
    /// No span or resource of the block has it.
    Absent,
    /// Too many values to keep: read the pages.
    Overflow,
    Values(&'a BTreeSet<TableValue>),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TagTable {
    /// More keys than `MAX_KEYS` for an owner: the key lists are incomplete.
    pub keys_overflow: bool,
    /// Bit `i`: some span has `Status::ALL[i]`, or `Kind::ALL[i]`.
    pub statuses: u8,
    pub kinds: u8,
    /// By `Owner as usize`.
    entries: [HashMap<Box<str>, Entry>; 3],
}

impl TagTable {
    /// The entry of `key`, created on first use (`None` once the owner has `MAX_KEYS`).
    pub(super) fn entry(&mut self, owner: Owner, key: &str) -> Option<&mut Entry> {
        let entries = &mut self.entries[owner as usize];
        if !entries.contains_key(key) {
            if entries.len() >= MAX_KEYS {
                self.keys_overflow = true;
                return None;
            }
            entries.insert(key.into(), Entry::default());
        }
        entries.get_mut(key)
    }

    /// The keys of `owner` (sorted).
    pub(crate) fn keys(&self, owner: Owner) -> Vec<&str> {
        let mut keys: Vec<&str> = self.entries[owner as usize].keys().map(|k| &**k).collect();
        keys.sort_unstable();
        keys
    }

    pub(crate) fn lookup(&self, owner: Owner, key: &str) -> Lookup<'_> {
        match self.entries[owner as usize].get(key) {
            None if self.keys_overflow => Lookup::Overflow,
            None => Lookup::Absent,
            Some(e) if e.overflow => Lookup::Overflow,
            Some(e) => Lookup::Values(&e.values),
        }
    }

    pub(crate) fn statuses(&self) -> impl Iterator<Item = Status> + '_ {
        Status::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.statuses & (1 << i) != 0)
            .map(|(_, s)| s)
    }

    pub(crate) fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        Kind::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.kinds & (1 << i) != 0)
            .map(|(_, k)| k)
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[u8::from(self.keys_overflow), self.statuses, self.kinds]);
        let mut entries: Vec<_> = [Owner::Resource, Owner::Span, Owner::SpanName]
            .into_iter()
            .flat_map(|o| self.entries[o as usize].iter().map(move |(k, e)| (o, k, e)))
            .collect();
        entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        put_varint(out, entries.len() as u64);
        for (owner, key, e) in entries {
            out.push(owner.byte());
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key.as_bytes());
            out.push(u8::from(e.overflow));
            put_varint(out, e.values.len() as u64);
            for v in &e.values {
                match v {
                    TableValue::Str(s) => {
                        out.push(0);
                        put_varint(out, s.len() as u64);
                        out.extend_from_slice(s.as_bytes());
                    }
                    TableValue::Int(i) => {
                        out.push(1);
                        put_varint(out, zigzag(*i));
                    }
                    TableValue::Float(bits) => {
                        out.push(2);
                        out.extend_from_slice(&bits.to_le_bytes());
                    }
                    TableValue::Bool(b) => out.push(3 + u8::from(*b)),
                }
            }
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, SectionError> {
        let mut r = Cursor::new(bytes);
        let [overflow, statuses, kinds] = r.bytes(3)? else {
            return Err(SectionError("tag table"));
        };
        let mut table = Self {
            keys_overflow: *overflow != 0,
            statuses: *statuses,
            kinds: *kinds,
            ..Self::default()
        };
        let count = r.varint()?;
        for _ in 0..count {
            let owner = Owner::from_byte(r.bytes(1)?[0])?;
            let key = r.string()?;
            let mut entry = Entry {
                overflow: r.bytes(1)?[0] != 0,
                ..Entry::default()
            };
            for _ in 0..r.varint()? {
                let v = match r.bytes(1)?[0] {
                    0 => TableValue::Str(r.string()?.into()),
                    1 => TableValue::Int(unzigzag(r.varint()?)),
                    2 => {
                        let b = r.bytes(8)?;
                        TableValue::Float(u64::from_le_bytes(b.try_into().unwrap_or_default()))
                    }
                    t @ (3 | 4) => TableValue::Bool(t == 4),
                    _ => return Err(SectionError("tag table value type")),
                };
                entry.bytes += v.size();
                entry.values.insert(v);
            }
            table.entries[owner as usize].insert(key.into(), entry);
        }
        if !r.is_empty() {
            return Err(SectionError("bytes after the tag table"));
        }
        Ok(table)
    }
}
