use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::search::eval::evaluate;
use crate::traceql::ast::Field;
use crate::traceql::parse;

const BASE: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// A trace of 1-4 services and 1-12 spans with attributes of every type, from `rng`;
/// traces from `n >= 1000` on carry `user = "late"` (so pages differ).
fn random_record(rng: &mut StdRng, n: u32) -> (TraceId, Vec<u8>) {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[4..12].copy_from_slice(&rng.random::<u64>().to_le_bytes());
    let start = BASE + u64::from(n) * 10 * MS;
    let mut span_no = 0u8;
    let resource_spans = (0..rng.random_range(1..=4))
        .map(|_| {
            let service = pick(rng, &["checkout", "payments", "db", "frontend"]);
            let mut resource = vec![
                kv(
                    "service.name",
                    any_value::Value::StringValue(service.into()),
                ),
                kv(
                    "region",
                    any_value::Value::StringValue(pick(rng, &["eu", "us"]).into()),
                ),
            ];
            if rng.random_bool(0.2) {
                resource.push(kv(
                    "tags",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        }],
                    }),
                ));
            }
            let spans = (0..rng.random_range(1..=3))
                .map(|_| {
                    span_no += 1;
                    let s0 = start + rng.random_range(0..50) * MS;
                    let attrs = random_attrs(rng, n);
                    Span {
                        trace_id: id.to_vec(),
                        span_id: vec![span_no; 8],
                        parent_span_id: if span_no == 1 || rng.random_bool(0.05) {
                            Vec::new()
                        } else {
                            vec![1; 8]
                        },
                        name: pick(rng, &["GET /", "POST /pay", "SELECT", "charge"]).into(),
                        kind: rng.random_range(0..=5),
                        start_time_unix_nano: s0,
                        end_time_unix_nano: s0 + rng.random_range(0..600) * MS,
                        attributes: attrs,
                        status: rng.random_bool(0.3).then(|| Status {
                            code: if rng.random_bool(0.5) {
                                status::StatusCode::Error as i32
                            } else {
                                status::StatusCode::Ok as i32
                            },
                            message: pick(rng, &["", "boom", "timeout"]).into(),
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    (TraceId(id), TracesData { resource_spans }.encode_to_vec())
}

/// A span's attributes: every type, and `user = "late"` from trace 1000 on.
fn random_attrs(rng: &mut StdRng, n: u32) -> Vec<KeyValue> {
    let user = if n >= 1000 {
        "late".to_owned()
    } else {
        format!("u{}", rng.random_range(0..50))
    };
    vec![
        kv(
            "http.status_code",
            any_value::Value::IntValue([200, 404, 500, 503][rng.random_range(0..4)]),
        ),
        kv(
            "http.method",
            any_value::Value::StringValue(pick(rng, &["GET", "POST"]).into()),
        ),
        kv("ratio", any_value::Value::DoubleValue(rng.random())),
        kv("flag", any_value::Value::BoolValue(rng.random_bool(0.5))),
        kv("user", any_value::Value::StringValue(user)),
    ]
}

fn records(n: u32, seed: u64) -> Vec<(TraceId, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<_> = (0..n).map(|i| random_record(&mut rng, i)).collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

fn section_of(records: &[(TraceId, Vec<u8>)]) -> Vec<u8> {
    let mut w = SectionWriter::new();
    for (id, r) in records {
        w.add(&SearchTrace::decode(*id, [&r[..]])).expect("add");
    }
    w.finish().expect("finish").expect("not empty")
}

fn assert_same(a: &SearchTrace, b: &SearchTrace) {
    assert_eq!(a.id, b.id);
    assert_eq!((a.start, a.end), (b.start, b.end));
    assert_eq!((a.root_name, a.root_service), (b.root_name, b.root_service));
    assert_eq!(a.resources, b.resources);
    assert_eq!(a.spans, b.spans);
    assert_eq!(a.attrs, b.attrs);
}

#[test]
fn a_section_streamed_out_page_by_page_reads_back_every_trace() {
    let recs = records(1500, 7);
    let mut w = SectionWriter::new();
    let mut bytes = Vec::new();
    for (i, (id, r)) in recs.iter().enumerate() {
        w.add(&SearchTrace::decode(*id, [&r[..]])).expect("add");
        if i % 300 == 0 {
            bytes.extend_from_slice(&w.take_pages());
        }
    }
    assert!(!bytes.is_empty(), "pages were sealed before the end");
    let (mut section, rest) = w.finish_parts().expect("finish").expect("not empty");
    section.extend_from_slice(&bytes);
    section.extend_from_slice(&rest);
    let index = SectionIndex::decode(&section).expect("index");
    let mut i = 0;
    for page in 0..index.pages() {
        let raw = index.read_page(&section, page).expect("page");
        for t in &decode_page(&raw).expect("decode") {
            let (id, r) = &recs[i];
            assert_same(t, &SearchTrace::decode(*id, [&r[..]]));
            i += 1;
        }
    }
    assert_eq!(i, recs.len());
}

#[test]
fn a_section_reads_back_every_trace_as_its_records_decode() {
    let recs = records(1200, 1);
    let bytes = section_of(&recs);
    let index = SectionIndex::decode(&bytes).expect("index");
    assert_eq!(index.pages(), 1200usize.div_ceil(PAGE_TRACES));
    let mut i = 0;
    for page in 0..index.pages() {
        let raw = index.read_page(&bytes, page).expect("page");
        let traces = decode_page(&raw).expect("decode");
        assert_eq!(traces.len() as u32, index.stats(page).traces);
        for t in &traces {
            let (id, r) = &recs[i];
            assert_same(t, &SearchTrace::decode(*id, [&r[..]]));
            let s = index.stats(page);
            assert!(s.start <= t.start && t.end <= s.end);
            i += 1;
        }
    }
    assert_eq!(i, recs.len());
    let data: usize = recs.iter().map(|(_, r)| r.len()).sum();
    assert!(
        bytes.len() * 4 < data,
        "the section ({} bytes) is much smaller than the records ({data})",
        bytes.len()
    );
}

const CONDITIONS: &[&str] = &[
    r#"resource.service.name = "checkout""#,
    r#".service.name = "db""#,
    r#"span.http.status_code >= 500"#,
    r#"span.http.method = "POST""#,
    r#".user = "u7""#,
    r#".user = "late""#,
    r#"span.user = "nobody""#,
    r#"name = "SELECT""#,
    r#"name = "absent""#,
    r#"name =~ "GET.*""#,
    "duration > 550ms",
    "duration < 1ms",
    "duration >= 0ms",
    "trace:duration > 590ms",
    "trace:duration <= 20ms",
    "status = error",
    "kind = server",
    "span.flag = true",
    r#".region != "eu""#,
    r#"resource.region = "ap""#,
    "span.missing = nil",
    "span.missing != nil",
    "resource.tags != nil",
    ".ratio > 0.5",
    r#"trace:rootName = "charge""#,
    r#"statusMessage = "timeout""#,
];

fn random_query(rng: &mut StdRng) -> String {
    let filter = |rng: &mut StdRng| {
        let mut e = pick(rng, CONDITIONS).to_owned();
        for _ in 0..rng.random_range(0..3) {
            let op = if rng.random_bool(0.5) { "&&" } else { "||" };
            e = format!("({e}) {op} {}", pick(rng, CONDITIONS));
        }
        format!("{{ {e} }}")
    };
    let mut q = filter(rng);
    if rng.random_bool(0.3) {
        let op = if rng.random_bool(0.5) { "&&" } else { "||" };
        q = format!("{q} {op} {}", filter(rng));
    }
    q
}

#[test]
fn a_page_is_skipped_only_when_no_trace_in_it_matches() {
    let recs = records(2100, 2);
    let bytes = section_of(&recs);
    let index = SectionIndex::decode(&bytes).expect("index");
    let pages: Vec<Vec<u8>> = (0..index.pages())
        .map(|p| index.read_page(&bytes, p).expect("page"))
        .collect();
    let decoded: Vec<Vec<SearchTrace>> = pages
        .iter()
        .map(|raw| decode_page(raw).expect("decode"))
        .collect();
    let mut rng = StdRng::seed_from_u64(3);
    let (mut skipped, mut queries) = (0, 0);
    for _ in 0..600 {
        let text = random_query(&mut rng);
        let q = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        queries += 1;
        for (p, traces) in decoded.iter().enumerate() {
            if index.may_match(p, &q) {
                continue;
            }
            skipped += 1;
            for t in traces {
                assert!(
                    evaluate(&q, t).is_none(),
                    "{text}: page {p} was skipped but trace {} matches",
                    t.id.to_hex()
                );
            }
        }
    }
    assert!(
        skipped > queries / 4,
        "the statistics skip pages ({skipped} in {queries} queries)"
    );
    // Names and keys no page holds are skipped but for the term filter's false positives
    // (~0.4% a term; which terms depends on the build's order, so not asserted one by
    // one): of 400 lookups, a handful at most.
    let pages = index.pages();
    let mut false_positives = 0;
    for i in 0..40 {
        let q = parse(&format!(r#"{{ name = "absent-{i}" }}"#)).expect("parse");
        false_positives += (0..pages).filter(|&p| index.may_match(p, &q)).count();
        let key = format!("absent-{i}");
        false_positives += (0..pages)
            .filter(|&p| index.may_have(p, Scope::Span, &key))
            .count();
    }
    assert!(
        false_positives <= 12,
        "{false_positives} false positives in {} lookups",
        80 * pages
    );
    // A value the later traces have: kept on every page that holds one of them.
    let q = parse(r#"{ .user = "late" }"#).expect("parse");
    assert!((1..pages).all(|p| index.may_match(p, &q)));
    assert!((0..pages).all(|p| index.may_have(p, Scope::Any, "region")));
}

#[test]
fn a_damaged_section_is_an_error_never_a_panic() {
    let bytes = section_of(&records(300, 4));
    assert!(SectionIndex::decode(b"RTSS").is_err());
    assert!(SectionIndex::decode(&bytes[..bytes.len() / 2]).is_err());
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..300 {
        let mut bad = bytes.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bad.len());
            bad[at] ^= 1 << rng.random_range(0..8);
        }
        if let Ok(index) = SectionIndex::decode(&bad) {
            let _ = index.tag_table();
            for p in 0..index.pages() {
                if let Ok(raw) = index.read_page(&bad, p) {
                    let _ = decode_page(&raw);
                }
            }
        }
    }
    // A page's columns cut short.
    let index = SectionIndex::decode(&bytes).expect("index");
    let raw = index.read_page(&bytes, 0).expect("page");
    for cut in [1, raw.len() / 3, raw.len() - 1] {
        assert!(decode_page(&raw[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn the_empty_strings_hash_is_the_one_the_dictionary_would_compute() {
    assert_eq!(xxh3_128(b"") as u64, EMPTY_HASH);
    assert_eq!(hash(""), EMPTY_HASH);
}

/// The names and values a scan of the pages collects (`None`: the field's values).
fn from_pages(index: &SectionIndex, bytes: &[u8], field: Option<&Field>) -> Vec<String> {
    let mut names = crate::search::TagNames::new(usize::MAX);
    let mut values = field.map(|f| crate::search::TagValues::new(f.clone(), usize::MAX));
    for p in 0..index.pages() {
        let raw = index.read_page(bytes, p).expect("page");
        for t in decode_page(&raw).expect("decode") {
            names.offer(&t);
            if let Some(v) = values.as_mut() {
                v.offer(&t, None);
            }
        }
    }
    listed(&names, values.as_ref())
}

fn listed(
    names: &crate::search::TagNames,
    values: Option<&crate::search::TagValues>,
) -> Vec<String> {
    match values {
        Some(v) => v
            .values
            .iter()
            .map(|v| format!("{}:{}", v.kind, v.value))
            .collect(),
        None => names
            .resource
            .iter()
            .map(|n| format!("resource.{n}"))
            .chain(names.span.iter().map(|n| format!("span.{n}")))
            .collect(),
    }
}

#[test]
fn the_tag_table_lists_what_the_pages_hold() {
    let recs = records(1200, 6);
    let bytes = section_of(&recs);
    let index = SectionIndex::decode(&bytes).expect("index");
    let table = index.tag_table().expect("version 2").expect("decodes");
    let mut names = crate::search::TagNames::new(usize::MAX);
    assert!(names.offer_table(&table));
    assert_eq!(listed(&names, None), from_pages(&index, &bytes, None));
    assert!(names.resource.contains("tags"), "{names:?}");
    for tag in [
        "resource.service.name",
        "resource.region",
        "resource.tags",
        "span.http.status_code",
        "span.http.method",
        "span.flag",
        ".user",
        ".service.name",
        "span.region",
        "name",
        "status",
        "kind",
    ] {
        let field = crate::search::tags::parse_tag(tag, true).expect("tag");
        let mut values = crate::search::TagValues::new(field.clone(), usize::MAX);
        assert!(values.offer_table(&table), "{tag} is in the table");
        let expected = from_pages(&index, &bytes, Some(&field));
        assert_eq!(listed(&names, Some(&values)), expected, "{tag}");
        assert_eq!(
            expected.is_empty(),
            ["resource.tags", "span.region"].contains(&tag),
            "{tag}: {expected:?}"
        );
    }
    // A float per span: too many to keep; the pages answer.
    for tag in [".ratio", "statusMessage", "trace:rootName"] {
        let field = crate::search::tags::parse_tag(tag, true).expect("tag");
        let mut values = crate::search::TagValues::new(field, usize::MAX);
        assert!(!values.offer_table(&table), "{tag} is not in the table");
    }
}

#[test]
fn a_key_past_the_caps_keeps_no_values_and_says_so() {
    let mut table = TagTable::default();
    let e = table.entry(Owner::Span, "id").expect("entry");
    for i in 0..tags::MAX_VALUES {
        e.add(TableValue::Int(i as i64));
    }
    assert!(!e.overflow);
    e.add(TableValue::Int(-1));
    assert!(e.overflow && e.values.is_empty());
    let long = "x".repeat(tags::MAX_VALUE_BYTES + 1);
    let e = table.entry(Owner::Span, "url").expect("entry");
    e.add(TableValue::Str(long.into()));
    assert!(e.overflow);
    for i in 0..tags::MAX_KEYS {
        table.entry(Owner::Resource, &format!("k{i}"));
    }
    assert!(!table.keys_overflow);
    assert!(table.entry(Owner::Resource, "one more").is_none());
    assert!(table.keys_overflow);
    assert!(matches!(
        table.lookup(Owner::Span, "absent"),
        Lookup::Overflow
    ));
    let mut encoded = Vec::new();
    table.encode(&mut encoded);
    assert_eq!(TagTable::decode(&encoded).expect("decode"), table);
    assert!(TagTable::decode(&encoded[..encoded.len() - 1]).is_err());
}

#[test]
fn a_version_1_section_without_a_tag_table_is_still_read() {
    let recs = records(700, 7);
    let v2 = section_of(&recs);
    let index = SectionIndex::decode(&v2).expect("index");
    let mut table = Vec::new();
    index
        .tag_table()
        .expect("table")
        .expect("decodes")
        .encode(&mut table);
    // The same section as version 1 wrote it: the header without the table.
    let header_len = u32::from_le_bytes(v2[5..9].try_into().expect("4 bytes")) as usize;
    let header = zstd::stream::decode_all(&v2[9..9 + header_len]).expect("header");
    assert!(header.ends_with(&table));
    let header = zstd::bulk::compress(&header[..header.len() - table.len()], 3).expect("zstd");
    let mut v1 = b"RTSS\x01".to_vec();
    v1.extend_from_slice(&(header.len() as u32).to_le_bytes());
    v1.extend_from_slice(&header);
    v1.extend_from_slice(&v2[9 + header_len..]);
    assert!(readable(1) && readable(VERSION) && !readable(0) && !readable(VERSION + 1));
    let old = SectionIndex::decode(&v1).expect("a version 1 section decodes");
    assert!(old.tag_table().is_none());
    assert_eq!(old.pages(), index.pages());
    for p in 0..old.pages() {
        let (a, b) = (
            old.read_page(&v1, p).expect("page"),
            index.read_page(&v2, p).expect("page"),
        );
        assert_eq!(a, b);
    }
}
