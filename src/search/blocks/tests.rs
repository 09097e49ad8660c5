//! Block scans: through sections (header first, only the pages a query can use), through
//! data, and past damaged or missing objects.

use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

use crate::model::TraceId;
use crate::search::tests::{kv, record, s, span, MS};
use crate::search::{Search, TimeRange};
use crate::traceql::parse;

#[tokio::test]
async fn a_block_scan_reads_every_block_in_range_and_skips_an_unreadable_one() {
    use crate::storage::block::{encode, BlockInfo, BlockTrace};
    use crate::storage::BlockStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let mut metas = Vec::new();
    for (n, ids) in [("b1", [1u8, 2]), ("b2", [3, 4]), ("broken", [5, 6])] {
        let traces = ids
            .iter()
            .map(|&id| BlockTrace {
                id: TraceId([id; 16]),
                data: record(
                    id,
                    vec![("svc", vec![span(1, None, "op", u64::from(id), 1)])],
                )
                .into(),
            })
            .collect();
        let block = encode(
            traces,
            BlockInfo {
                tenant: "t".into(),
                block_id: n.into(),
                ingester: "i".into(),
                start_unix_nano: 1_000_000_000_000,
                end_unix_nano: 1_000_000_000_000 + 10 * MS,
                created_unix_secs: 0,
            },
        )
        .expect("encode");
        store.upload(&block).await.expect("upload");
        metas.push(block.meta);
    }
    std::fs::write(dir.path().join("t/broken/data"), b"not zstd").expect("break it");
    let search = Search::new(parse("{}").expect("parse"), None, 100, 3);
    let (search, stats) = super::scan_blocks(&store, metas.clone(), search, 2).await;
    assert_eq!((stats.blocks, stats.failed_blocks, stats.traces), (2, 1, 4));
    assert_eq!(search.hits.len(), 4);

    let far = Some(TimeRange { start: 1, end: 2 });
    let search = Search::new(parse("{}").expect("parse"), far, 100, 3);
    let (search, stats) = super::scan_blocks(&store, metas, search, 2).await;
    assert_eq!(
        (stats.blocks, search.hits.len()),
        (0, 0),
        "blocks outside the range are not read"
    );
}

/// Uploads block `name` of traces 1-6 (services "even" and "odd", span `i` lasting
/// `i` × 100 ms), with its search section or without.
async fn upload_replica(
    store: &crate::storage::BlockStore,
    name: &str,
    with_section: bool,
) -> crate::storage::block::BlockMeta {
    use crate::storage::block::{encode, BlockInfo, BlockTrace};
    let traces: Vec<BlockTrace> = (1..=6u8)
        .map(|id| BlockTrace {
            id: TraceId([id; 16]),
            data: record(
                id,
                vec![(
                    if id % 2 == 0 { "even" } else { "odd" },
                    vec![span(1, None, "op", u64::from(id), u64::from(id) * 100)],
                )],
            )
            .into(),
        })
        .collect();
    let section = crate::search::section::build(&traces)
        .expect("section")
        .expect("some");
    let mut block = encode(
        traces,
        BlockInfo {
            tenant: "t".into(),
            block_id: name.into(),
            ingester: "i".into(),
            start_unix_nano: 1_000_000_000_000,
            end_unix_nano: 1_000_000_000_000 + 700 * MS,
            created_unix_secs: 0,
        },
    )
    .expect("encode");
    if with_section {
        block = block.with_search(section.into(), crate::search::section::VERSION);
    }
    store.upload(&block).await.expect("upload");
    block.meta
}

#[tokio::test]
async fn blocks_are_searched_through_their_section_and_through_data_without_one() {
    use crate::storage::BlockStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let mut metas = Vec::new();
    // The same traces in three blocks, as three replicas flush them: one with a
    // section, one without (written before sections existed), one whose section is
    // damaged after upload, one whose section object is lost.
    for n in ["with", "without", "damaged", "lost"] {
        metas.push(upload_replica(&store, n, n != "without").await);
    }
    let meta = store.read_meta("t", "with").await.expect("meta");
    assert_eq!(meta.search_version, crate::search::section::VERSION);
    assert!(meta.search_bytes > 0);
    assert_eq!(
        store
            .read_meta("t", "without")
            .await
            .expect("meta")
            .search_version,
        0
    );
    let damaged = dir.path().join("t/damaged/search");
    let mut bytes = std::fs::read(&damaged).expect("read");
    let n = bytes.len();
    bytes.truncate(n - 5);
    std::fs::write(&damaged, bytes).expect("damage");
    std::fs::remove_file(dir.path().join("t/lost/search")).expect("lose it");

    for (q, want) in [
        (
            r#"{ resource.service.name = "even" && duration > 300ms }"#,
            vec![6, 4],
        ),
        ("{ duration < 250ms }", vec![2, 1]),
        (r#"{ name = "nope" }"#, vec![]),
    ] {
        let search = Search::new(parse(q).expect("parse"), None, 20, 3);
        let (search, stats) = super::scan_blocks(&store, metas.clone(), search, 2).await;
        let ids: Vec<u8> = search
            .hits
            .iter()
            .map(|h| u8::from_str_radix(&h.trace_id[..2], 16).expect("hex"))
            .collect();
        assert_eq!(ids, want, "{q}: one hit per trace across the blocks");
        assert_eq!((stats.blocks, stats.failed_blocks), (4, 0), "{q}");
    }
    // Tag values read the sections too, and a section's page without the tag is skipped.
    let field = crate::search::tags::parse_tag("resource.service.name", true).expect("tag");
    let scan = crate::search::ValueScan {
        range: None,
        filter: Some(parse("{ duration > 450ms }").expect("parse")),
        values: crate::search::TagValues::new(field, 1 << 20),
    };
    let (scan, _) = super::scan_blocks(&store, metas, scan, 2).await;
    let values: Vec<&str> = scan
        .values
        .values
        .iter()
        .map(|v| v.value.as_str())
        .collect();
    assert_eq!(values, ["even", "odd"]);
}

/// A block of `n` traces, trace `i` with span attribute `k<i>` holding 64 hex digits
/// (so the tag table alone outgrows the first read of a section), and trace 7 with
/// `needle = "yes"` as well.
async fn upload_wide_block(
    store: &crate::storage::BlockStore,
    n: u32,
) -> crate::storage::block::BlockMeta {
    use crate::storage::block::{encode, BlockInfo, BlockTrace};
    let traces: Vec<BlockTrace> = (0..n)
        .map(|i| {
            let id = TraceId(u128::from(i + 1).to_be_bytes());
            let hash = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
            let mut attrs = vec![kv(&format!("k{i}"), s(&format!("{hash:032x}{hash:032x}")))];
            if i == 7 {
                attrs.push(kv("needle", s("yes")));
            }
            let spans = ScopeSpans {
                spans: vec![Span {
                    trace_id: id.0.to_vec(),
                    span_id: vec![1; 8],
                    name: "op".into(),
                    start_time_unix_nano: 1_000_000_000_000 + u64::from(i) * MS,
                    end_time_unix_nano: 1_000_000_000_000 + u64::from(i + 1) * MS,
                    attributes: attrs,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let data = TracesData {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", s("wide"))],
                        ..Default::default()
                    }),
                    scope_spans: vec![spans],
                    ..Default::default()
                }],
            };
            BlockTrace {
                id,
                data: data.encode_to_vec().into(),
            }
        })
        .collect();
    let section = crate::search::section::build(&traces)
        .expect("section")
        .expect("some");
    let block = encode(
        traces,
        BlockInfo {
            tenant: "t".into(),
            block_id: "wide".into(),
            ingester: "i".into(),
            start_unix_nano: 1_000_000_000_000,
            end_unix_nano: 1_000_000_000_000 + u64::from(n + 1) * MS,
            created_unix_secs: 0,
        },
    )
    .expect("encode")
    .with_search(section.into(), crate::search::section::VERSION);
    store.upload(&block).await.expect("upload");
    block.meta
}

#[tokio::test]
async fn a_section_is_read_by_its_header_and_only_the_pages_a_query_can_use() {
    use crate::storage::BlockStore;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let meta = upload_wide_block(&store, 4000).await;
    let whole = std::fs::read(dir.path().join("t/wide/search")).expect("read");
    let head = crate::search::section::SectionIndex::head_len(&whole).expect("head") as u64;
    assert!(
        head > super::SECTION_HEAD_READ,
        "the header ({head} bytes) takes a second read"
    );
    let index = crate::search::section::SectionIndex::decode(&whole).expect("decode");
    assert!(index.pages() > 4, "{} pages", index.pages());

    let needle = parse(r#"{ span.needle = "yes" }"#).expect("parse");
    // The pages the header keeps: the needle's, and any its term filter lets through
    // (~0.4% a page).
    let kept: Vec<usize> = (0..index.pages())
        .filter(|&p| index.may_match(p, &needle))
        .collect();
    assert!(
        kept.contains(&0) && kept.len() < index.pages() / 2,
        "{kept:?}"
    );
    let search = Search::new(needle, None, 20, 3);
    let (search, stats) = super::scan_blocks(&store, vec![meta.clone()], search, 2).await;
    let ids: Vec<String> = search.hits.iter().map(|h| h.trace_id.clone()).collect();
    assert_eq!(ids, [TraceId(8u128.to_be_bytes()).to_hex()]);
    let kept_bytes: u64 = kept.iter().map(|&p| index.page_range(p).len() as u64).sum();
    assert_eq!(
        stats.section_bytes_fetched,
        head + kept_bytes,
        "the header and the pages whose terms may hold the needle, nothing else"
    );
    let kept_traces: u64 = kept.iter().map(|&p| u64::from(index.stats(p).traces)).sum();
    assert_eq!(
        stats.traces, kept_traces,
        "only the kept pages' traces evaluated"
    );

    let search = Search::new(parse("{}").expect("parse"), None, 5000, 3);
    let (search, stats) = super::scan_blocks(&store, vec![meta.clone()], search, 2).await;
    assert_eq!(
        search.hits.len(),
        4000,
        "every page read when every page can match"
    );
    assert_eq!(stats.section_bytes_fetched, meta.search_bytes);

    // Tag values from the table alone: no page fetched.
    let field = crate::search::tags::parse_tag("span.k7", true).expect("tag");
    let scan = crate::search::ValueScan {
        range: None,
        filter: None,
        values: crate::search::TagValues::new(field, 1 << 20),
    };
    let (scan, stats) = super::scan_blocks(&store, vec![meta], scan, 2).await;
    assert_eq!(scan.values.values.len(), 1);
    assert_eq!(stats.section_bytes_fetched, head);
}
