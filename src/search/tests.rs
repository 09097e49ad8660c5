use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span, Status, TracesData,
};
use prost::Message;

use super::eval::evaluate;
use super::model::{SearchTrace, NO_ROOT};
use super::params::{go_duration, SearchParams};
use super::{merge_hits, Scanner, Search, TimeRange, TraceHit};
use crate::model::TraceId;
use crate::traceql::parse;

pub(super) const MS: u64 = 1_000_000;

pub(super) fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

pub(super) fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

pub(super) struct SpanSpec {
    pub id: u8,
    pub parent: Option<u8>,
    pub name: &'static str,
    pub start_ms: u64,
    pub ms: u64,
    pub error: bool,
    pub attrs: Vec<KeyValue>,
}

pub(super) fn span(
    id: u8,
    parent: Option<u8>,
    name: &'static str,
    start_ms: u64,
    ms: u64,
) -> SpanSpec {
    SpanSpec {
        id,
        parent,
        name,
        start_ms,
        ms,
        error: false,
        attrs: Vec::new(),
    }
}

/// One trace's records: a resource per service with its spans.
pub(super) fn record(trace: u8, services: Vec<(&str, Vec<SpanSpec>)>) -> Vec<u8> {
    TracesData {
        resource_spans: services
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: spans
                        .into_iter()
                        .map(|sp| Span {
                            trace_id: vec![trace; 16],
                            span_id: vec![sp.id; 8],
                            parent_span_id: sp.parent.map(|p| vec![p; 8]).unwrap_or_default(),
                            name: sp.name.into(),
                            kind: 2,
                            start_time_unix_nano: 1_000_000_000_000 + sp.start_ms * MS,
                            end_time_unix_nano: 1_000_000_000_000 + (sp.start_ms + sp.ms) * MS,
                            attributes: sp.attrs,
                            status: sp.error.then(|| Status {
                                code: status::StatusCode::Error as i32,
                                message: "boom".into(),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

/// (The record is leaked: a test's traces borrow their bytes for the whole test.)
fn checkout() -> SearchTrace<'static> {
    let mut db = span(2, Some(1), "SELECT", 10, 100);
    db.attrs = vec![
        kv("db.system", s("postgresql")),
        kv("rows", any_value::Value::IntValue(7)),
    ];
    let mut pay = span(3, Some(1), "charge", 20, 50);
    pay.error = true;
    let r = record(
        1,
        vec![
            (
                "checkout",
                vec![span(1, None, "POST /checkout", 0, 300), db],
            ),
            ("payments", vec![pay]),
        ],
    );
    let r: &'static [u8] = Box::leak(r.into_boxed_slice());
    SearchTrace::decode(TraceId([1; 16]), [r])
}

fn matches(q: &str, trace: &SearchTrace) -> Option<Vec<usize>> {
    evaluate(&parse(q).unwrap_or_else(|e| panic!("{q}: {e}")), trace)
}

#[test]
fn a_filter_selects_the_spans_that_match_and_the_trace_matches_when_any_does() {
    let t = checkout();
    assert_eq!(matches("{}", &t), Some(vec![0, 1, 2]));
    assert_eq!(
        matches(r#"{ resource.service.name = "checkout" }"#, &t),
        Some(vec![0, 1])
    );
    assert_eq!(matches("{ duration > 200ms }", &t), Some(vec![0]));
    assert_eq!(matches("{ status = error }", &t), Some(vec![2]));
    assert_eq!(
        matches(
            r#"{ resource.service.name = "checkout" && status = error }"#,
            &t
        ),
        None
    );
    assert_eq!(
        matches(r#"{ .service.name = "payments" }"#, &t),
        Some(vec![2]),
        ". falls back to the resource"
    );
    assert_eq!(
        matches(r#"{ span.service.name = "payments" }"#, &t),
        None,
        "span. does not"
    );
}

#[test]
fn span_set_operators_need_each_side_and_report_the_union() {
    let t = checkout();
    let q = r#"{ resource.service.name = "checkout" } && { status = error }"#;
    assert_eq!(matches(q, &t), Some(vec![0, 1, 2]));
    assert_eq!(
        matches(r#"{ name = "nope" } && { status = error }"#, &t),
        None
    );
    assert_eq!(
        matches(r#"{ name = "nope" } || { status = error }"#, &t),
        Some(vec![2])
    );
}

#[test]
fn trace_intrinsics_read_the_root_and_the_whole_trace() {
    let t = checkout();
    assert_eq!(t.root_name, Some("POST /checkout"));
    assert_eq!(t.root_service, Some("checkout"));
    assert!(matches(
        r#"{ trace:rootService = "checkout" && status = error }"#,
        &t
    )
    .is_some());
    assert!(matches("{ trace:duration = 300ms }", &t).is_some());
    assert!(matches("{ trace:duration > 300ms }", &t).is_none());
}

#[test]
fn absent_attributes_are_false_except_for_eq_nil() {
    let t = checkout();
    assert_eq!(
        matches(r#"{ .db.system != "mysql" }"#, &t),
        Some(vec![1]),
        "only the span that has it"
    );
    assert_eq!(matches("{ .db.system != nil }", &t), Some(vec![1]));
    assert_eq!(matches("{ .db.system = nil }", &t), Some(vec![0, 2]));
    assert_eq!(
        matches("{ .rows > 6.5 }", &t),
        Some(vec![1]),
        "int against float"
    );
    assert_eq!(
        matches(r#"{ .rows = "7" }"#, &t),
        None,
        "no coercion between string and int"
    );
}

#[test]
fn regexes_are_anchored() {
    let t = checkout();
    assert_eq!(matches(r#"{ name =~ "POST" }"#, &t), None);
    assert_eq!(matches(r#"{ name =~ "POST.*" }"#, &t), Some(vec![0]));
    assert_eq!(matches(r#"{ name !~ "POST.*" }"#, &t), Some(vec![1, 2]));
}

#[test]
fn a_trace_without_its_root_says_so() {
    let r = record(9, vec![("svc", vec![span(2, Some(1), "child", 0, 5)])]);
    let t = SearchTrace::decode(TraceId([9; 16]), [&r[..]]);
    assert_eq!(t.root_name, None);
    let hit = TraceHit::new(&t, &[0], &[], 3);
    assert_eq!(hit.root_service_name, NO_ROOT);
}

#[test]
fn copies_of_a_span_from_several_records_count_once() {
    let r = record(1, vec![("a", vec![span(1, None, "root", 0, 10)])]);
    let t = SearchTrace::decode(TraceId([1; 16]), [&r[..], &r[..]]);
    assert_eq!(t.spans.len(), 1);
}

#[test]
fn non_ascii_text_is_read_and_text_that_is_not_utf8_is_not() {
    let mut root = span(1, None, "café ☕", 0, 10);
    root.attrs = vec![kv("città", s("Zürich"))];
    let r = record(1, vec![("naïve", vec![root])]);
    let t = SearchTrace::decode(TraceId([1; 16]), [&r[..]]);
    assert_eq!(t.spans[0].name, "café ☕");
    assert_eq!(t.root_service, Some("naïve"));
    assert_eq!(matches(r#"{ span.città = "Zürich" }"#, &t), Some(vec![0]));
    // A name of bytes that are not UTF-8 (`0xff 0xfe`) ends that record's decode: the
    // span is not read (with a string it could not hold), the good record still is.
    let bad =
        crate::otlp::test_bytes::request_of(&[crate::otlp::test_bytes::span_with_non_utf8_name(
            1, 2,
        )]);
    let t = SearchTrace::decode(TraceId([1; 16]), [&bad[..], &r[..]]);
    assert_eq!(t.spans.len(), 1);
    assert_eq!(t.spans[0].name, "café ☕");
}

fn hit(id: u8, start_ms: u64, spans: &[u8]) -> TraceHit {
    let services = vec![(
        "svc",
        spans
            .iter()
            .map(|&s| span(s, (s != 1).then_some(1), "op", start_ms + u64::from(s), 1))
            .collect(),
    )];
    let r = record(id, services);
    let t = SearchTrace::decode(TraceId([id; 16]), [&r[..]]);
    let all: Vec<usize> = (0..t.spans.len()).collect();
    TraceHit::new(&t, &all, &[], 3)
}

#[test]
fn replicas_answers_merge_into_one_hit_per_trace_most_recent_first() {
    let merged = merge_hits(
        vec![
            hit(1, 0, &[1, 2]),
            hit(2, 100, &[1]),
            hit(1, 0, &[2, 3]),
            hit(3, 50, &[1]),
        ],
        10,
        3,
    );
    let ids: Vec<&str> = merged.iter().map(|h| &h.trace_id[..2]).collect();
    assert_eq!(ids, ["02", "03", "01"]);
    let one = &merged[2];
    assert_eq!(one.span_sets[0].spans.len(), 3, "spans merged by ID");
    assert_eq!(
        one.root_trace_name, "op",
        "a known root wins over a missing one"
    );
    assert_eq!(
        merge_hits(vec![hit(1, 0, &[1]), hit(2, 100, &[1])], 1, 3).len(),
        1
    );
}

#[test]
fn a_search_keeps_the_most_recent_hits_and_wants_nothing_older_once_full() {
    let q = parse("{}").expect("parse");
    let mut search = Search::new(q, None, 2, 3);
    for (id, start) in [(1u8, 0u64), (2, 300), (3, 100), (4, 200)] {
        let r = record(id, vec![("svc", vec![span(1, None, "op", start, 1)])]);
        super::offer_records(&mut search, TraceId([id; 16]), [&r[..]]);
    }
    let ids: Vec<&str> = search.hits.iter().map(|h| &h.trace_id[..2]).collect();
    assert_eq!(ids, ["02", "04"]);
    let base = 1_000_000_000_000;
    assert!(
        !search.wants(base, base + 150 * MS),
        "ended before the oldest hit"
    );
    assert!(search.wants(base, base + 250 * MS));
}

#[test]
fn time_ranges_overlap_and_unknown_ranges_may_hold_anything() {
    let r = TimeRange {
        start: 100,
        end: 200,
    };
    assert!(r.overlaps(150, 300) && r.overlaps(50, 100) && r.overlaps(200, 250));
    assert!(!r.overlaps(201, 300) && !r.overlaps(10, 99));
    assert!(r.overlaps(0, 0) && r.overlaps(u64::MAX, 0));
}

fn params(pairs: &[(&str, &str)]) -> Result<SearchParams, String> {
    let map = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    SearchParams::parse(&map).map_err(|e| e.to_string())
}

#[test]
fn search_parameters_default_and_are_checked() {
    let p = params(&[]).expect("defaults");
    assert_eq!((p.limit, p.spans_per_set, p.range), (20, 3, None));
    assert_eq!(p.query_text, "{}");
    let p = params(&[
        ("start", "10"),
        ("end", "20"),
        ("limit", "5"),
        ("spss", "1"),
    ])
    .expect("range");
    assert_eq!(
        p.range,
        Some(TimeRange {
            start: 10_000_000_000,
            end: 20_999_999_999
        })
    );
    assert_eq!((p.limit, p.spans_per_set), (5, 1));
    for (bad, says) in [
        (vec![("limit", "0")], "limit"),
        (vec![("spss", "-1")], "spss"),
        (vec![("start", "20"), ("end", "10")], "end"),
        (vec![("end", "10")], "start"),
        (vec![("q", "{ nope }")], "col 3"),
        (vec![("minDuration", "1x")], "minDuration"),
    ] {
        let e = params(&bad).expect_err("bad");
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

#[test]
fn legacy_tags_and_durations_become_traceql() {
    let p = params(&[
        ("tags", r#"service.name=checkout name="GET /""#),
        ("minDuration", "1.5s"),
    ])
    .expect("legacy");
    assert_eq!(
        p.query_text,
        r#"({ .service.name = "checkout" && name = "GET /" }) && { trace:duration >= 1500000000ns }"#
    );
    assert_eq!(go_duration("1m30s"), Some(90_000_000_000));
    assert_eq!(go_duration("250ms"), Some(250 * MS));
    assert_eq!(go_duration("0"), Some(0));
    assert_eq!(go_duration("fast"), None);
    assert_eq!(go_duration("10"), None, "a unit is required");
}

#[test]
fn copies_of_many_spans_count_once_too() {
    let spans = (1..=40u8)
        .map(|i| span(i, (i > 1).then_some(1), "op", u64::from(i), 1))
        .collect();
    let r = record(1, vec![("a", spans)]);
    let t = SearchTrace::decode(TraceId([1; 16]), [&r[..], &r[..], &r[..]]);
    assert_eq!(t.spans.len(), 40);
    assert_eq!(t.root_name, Some("op"));
}

#[tokio::test]
async fn jobs_over_blocks_find_the_most_recent_hits_and_skip_what_cannot_make_the_cut() {
    use crate::storage::block::{encode, BlockInfo, BlockTrace};
    use crate::storage::BlockStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let base = 1_000_000_000_000u64;
    let mut metas = Vec::new();
    // Block i holds traces 2i+1 and 2i+2, starting at i × 100 ms (+1 ms for the odd one).
    for i in 0..12u8 {
        let traces = || -> Vec<BlockTrace> {
            [2 * i + 1, 2 * i + 2]
                .iter()
                .map(|&id| BlockTrace {
                    id: TraceId([id; 16]),
                    data: record(
                        id,
                        vec![(
                            if id % 2 == 0 { "even" } else { "odd" },
                            vec![span(
                                1,
                                None,
                                "op",
                                u64::from(i) * 100 + u64::from(id % 2),
                                5,
                            )],
                        )],
                    )
                    .into(),
                })
                .collect()
        };
        let mut block = encode(
            traces(),
            BlockInfo {
                tenant: "t".into(),
                block_id: format!("b{i:02}"),
                ingester: "i".into(),
                start_unix_nano: base + u64::from(i) * 100 * MS,
                end_unix_nano: base + (u64::from(i) * 100 + 6) * MS,
                created_unix_secs: 0,
            },
        )
        .expect("encode");
        let mut sorted = traces();
        sorted.sort_by_key(|t| t.id);
        let section = super::section::build(&sorted)
            .expect("section")
            .expect("some");
        block = block.with_search(section.into(), super::section::VERSION);
        store.upload(&block).await.expect("upload");
        metas.push(block.meta);
    }
    let target = metas.iter().map(|m| m.search_bytes).max().unwrap_or(1) * 2;
    let jobs = super::jobs::plan(metas.clone(), target);
    assert_eq!(jobs.len(), 6, "two blocks a job");

    let search = Search::new(parse("{}").expect("parse"), None, 5, 3);
    let (search, stats) = super::jobs::run(&store, jobs.clone(), search, 2).await;
    let ids: Vec<String> = search.hits.iter().map(|h| h.trace_id.clone()).collect();
    let expected: Vec<String> = [23u8, 24, 21, 22, 19]
        .iter()
        .map(|&id| TraceId([id; 16]).to_hex())
        .collect();
    assert_eq!(ids, expected, "the five most recent, newest first");
    assert_eq!((stats.total, stats.completed), (6, 6));
    assert!(
        stats.scan.blocks < 12,
        "older blocks are not read once five recent hits are kept ({} read)",
        stats.scan.blocks
    );

    // Tag values: every job's values, merged.
    let field = super::tags::parse_tag("resource.service.name", true).expect("tag");
    let scan = super::ValueScan {
        range: None,
        filter: None,
        values: super::TagValues::new(field, 1 << 20),
    };
    let (scan, stats) = super::jobs::run(&store, jobs, scan, 2).await;
    let values: Vec<&str> = scan
        .values
        .values
        .iter()
        .map(|v| v.value.as_str())
        .collect();
    assert_eq!(values, ["even", "odd"]);
    assert_eq!(
        (stats.total, stats.completed, stats.scan.blocks),
        (6, 6, 12)
    );
}
