//! A merge against a real (filesystem) store: three replicas' blocks become one copy.

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

use super::merge::dedupe;
use super::plan::{self, Listed, PlanSettings};
use super::run::compact;
use crate::model::TraceId;
use crate::storage::block::{self, encode, BlockInfo, BlockMeta, BlockTrace};
use crate::storage::{BlockStore, COMPACTED};

const BASE: u64 = 1_700_000_000_000_000_000;

fn trace_id(i: u32) -> TraceId {
    TraceId(
        u128::from(i)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            .to_be_bytes(),
    )
}

/// One push's bytes for trace `i` (`resource_spans` fields, as blocks store them): a
/// resource and three spans, the span IDs offset by `push`.
fn push_bytes(i: u32, push: u8) -> Vec<u8> {
    let id = trace_id(i);
    let spans = (0..3u8)
        .map(|s| Span {
            trace_id: id.0.to_vec(),
            span_id: vec![push * 8 + s + 1; 8],
            name: format!("op-{}", i % 7),
            start_time_unix_nano: BASE + u64::from(i) * 1_000_000,
            end_time_unix_nano: BASE + u64::from(i) * 1_000_000 + 500_000,
            attributes: vec![KeyValue {
                key: "http.route".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("/r/{}", i % 13))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn block_of(name: &str, traces: Vec<BlockTrace>) -> crate::storage::block::EncodedBlock {
    encode(
        traces,
        BlockInfo {
            tenant: "t".into(),
            block_id: name.into(),
            ingester: name.into(),
            start_unix_nano: BASE,
            end_unix_nano: BASE + 1000 * 1_000_000,
            created_unix_secs: 100,
        },
    )
    .expect("encode")
}

/// What every trace should read back as: trace `i` holds push 0, and trace 5 push 1 too.
fn expected(i: u32) -> Vec<u8> {
    let mut b = push_bytes(i, 0);
    if i == 5 {
        b.extend(push_bytes(i, 1));
    }
    b
}

/// How many traces a search of every trace finds in `blocks`.
async fn searched(store: &BlockStore, blocks: Vec<BlockMeta>) -> usize {
    let search = crate::search::Search::new(
        crate::traceql::parse(r#"{ resource.service.name = "checkout" }"#).expect("parse"),
        None,
        10_000,
        3,
    );
    crate::search::scan_blocks(store, blocks, search, 2)
        .await
        .0
        .hits
        .len()
}

/// A listing as the planner takes it, every block marked at `marked` (or not).
/// Hour windows, a minute's settle time, five minutes' retention, merges of up to
/// `max_block_bytes`.
fn hourly(max_block_bytes: u64) -> PlanSettings {
    PlanSettings {
        window_secs: 3600,
        max_block_bytes,
        settle_secs: 60,
        retention_secs: 300,
    }
}

fn listing(metas: &[BlockMeta], marked: Option<u64>) -> Vec<Listed> {
    metas
        .iter()
        .map(|m| Listed {
            meta: m.clone(),
            marked_unix_secs: marked,
        })
        .collect()
}

#[test]
fn copies_of_the_same_push_are_kept_once_and_different_pushes_are_all_kept() {
    let a = push_bytes(1, 0);
    let b = push_bytes(1, 1);
    let ab = [a.clone(), b.clone()].concat();
    let kept: Vec<u8> = dedupe(&[&a, &ab, &a]).concat();
    assert_eq!(kept, ab);
    assert_eq!(dedupe(&[&a]).concat(), a);
    // Bytes that are not `resource_spans` fields are kept whole, once.
    let junk = [0xffu8, 0xff, 0x01];
    assert_eq!(
        dedupe(&[&junk, &junk, &a]).concat(),
        [&junk[..], &a].concat()
    );
}

/// Uploads three replicas' blocks of `n` traces: replica r holds those with i % 3 != r
/// (two of three replicas each, as a write quorum of 2 may leave it), trace 5's second
/// push only on one replica. Returns the block one copy of each would make.
async fn upload_replicas(store: &BlockStore, n: u32) -> BlockMeta {
    for r in 0..3u32 {
        let traces = (0..n)
            .filter(|i| i % 3 != r)
            .map(|i| BlockTrace {
                id: trace_id(i),
                data: Bytes::from(if i == 5 && r == 1 {
                    expected(5)
                } else {
                    push_bytes(i, 0)
                }),
            })
            .collect();
        store
            .upload(&block_of(&format!("r{r}"), traces))
            .await
            .expect("upload");
    }
    block_of(
        "one",
        (0..n)
            .map(|i| BlockTrace {
                id: trace_id(i),
                data: Bytes::from(expected(i)),
            })
            .collect(),
    )
    .meta
}

#[tokio::test]
async fn a_closed_window_over_the_cap_merges_into_id_ranges_that_hold_each_trace_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let n = 6000u32;
    let one_copy = upload_replicas(&store, n).await;
    let listed = store.list_blocks("t").await.expect("list");
    // The three replicas hold two copies' bytes: three ranges or more.
    let settings = hourly(one_copy.data_bytes * 2 / 3 + 1);
    let closed = BASE / 1_000_000_000 + 7200;
    let p = plan::plan("t", &listing(&listed, None), closed, &settings);
    let k = p.merges.len();
    assert!(k >= 3, "{:?}", p.merges);
    let scratch = tempfile::tempdir().expect("scratch");
    let mut parts = Vec::new();
    for merge in &p.merges {
        let done = compact(
            &store,
            merge,
            &listed,
            "compactor-1",
            scratch.path(),
            closed,
        )
        .await
        .expect("compact");
        let out = done.output.expect("each range holds traces");
        assert_eq!((out.parts as usize, out.compaction_level), (k, 1));
        assert!(
            out.data_bytes <= settings.max_block_bytes,
            "{}",
            out.data_bytes
        );
        parts.push(out);
        // Until the last part is listed, readers read the inputs alone.
        let now = block::without_replaced(store.list_blocks("t").await.expect("list"));
        let mut ids: Vec<&str> = now.iter().map(|m| m.block_id.as_str()).collect();
        ids.sort();
        if parts.len() < k {
            assert_eq!(ids, ["r0", "r1", "r2"]);
        }
    }
    let read = block::without_replaced(store.list_blocks("t").await.expect("list"));
    let mut read_ids: Vec<&str> = read.iter().map(|m| m.block_id.as_str()).collect();
    read_ids.sort();
    let mut part_ids: Vec<&str> = parts.iter().map(|m| m.block_id.as_str()).collect();
    part_ids.sort();
    assert_eq!(read_ids, part_ids, "the parts replace the inputs together");
    // Each trace is in exactly one part, whole; one copy's bytes in all.
    assert_eq!(
        parts.iter().map(|m| m.total_traces).sum::<u64>(),
        u64::from(n)
    );
    let stored: u64 = parts.iter().map(|m| m.data_bytes).sum();
    assert!(
        stored * 10 <= one_copy.data_bytes * 11,
        "{stored} against {}",
        one_copy.data_bytes
    );
    for i in (0..n).step_by(7) {
        let mut found = Vec::new();
        for part in &parts {
            if let Some(got) = store.find_trace(part, &trace_id(i)).await.expect("find") {
                found.push(got);
            }
        }
        assert_eq!(found.len(), 1, "trace {i} in one part");
        assert_eq!(&found[0][..], &expected(i)[..], "trace {i}");
    }
    assert_eq!(
        searched(&store, parts.clone()).await,
        n as usize,
        "a search finds each once"
    );
    // The window is done; the plan marks the inputs now that the parts are all there.
    let after = store.list_blocks("t").await.expect("list");
    let p = plan::plan("t", &listing(&after, None), closed + 10, &settings);
    assert!(p.merges.is_empty(), "{:?}", p.merges);
    assert_eq!(p.mark.len(), 3);
}

#[test]
fn split_points_share_the_bytes_evenly_whatever_the_ids_look_like() {
    let id = |hi: u8, lo: u32| {
        let mut a = [0u8; 16];
        a[0] = hi;
        a[12..].copy_from_slice(&lo.to_be_bytes());
        TraceId(a)
    };
    // IDs bunched in a narrow band (a time-prefixed format): the points follow the pages.
    let pages: Vec<(TraceId, u32)> = (0..100).map(|i| (id(0x65, i * 10), 1000)).collect();
    let points = super::run::split_points(pages.iter().copied(), 4);
    assert_eq!(points, [id(0x65, 250), id(0x65, 500), id(0x65, 750)]);
    // Fewer distinct page starts than ranges: fewer points, never a repeated one.
    let same: Vec<(TraceId, u32)> = (0..10).map(|_| (id(1, 0), 1000)).collect();
    assert!(super::run::split_points(same.iter().copied(), 4).is_empty());
    assert!(super::run::split_points(pages.iter().copied(), 1).is_empty());
}

#[tokio::test]
async fn three_replicas_blocks_become_one_copy_that_reads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let n = 3000u32;
    let one_copy = upload_replicas(&store, n).await;
    let listed = store.list_blocks("t").await.expect("list");
    let settings = hourly(1 << 30);
    let p = plan::plan("t", &listing(&listed, None), 10_000, &settings);
    assert_eq!(p.merges.len(), 1);
    let merge = &p.merges[0];
    assert_eq!(merge.inputs, ["r0", "r1", "r2"]);

    let scratch = tempfile::tempdir().expect("scratch");
    let done = compact(
        &store,
        merge,
        &listed,
        "compactor-1",
        scratch.path(),
        10_000,
    )
    .await
    .expect("compact");
    let out = done.output.as_ref().expect("an output");
    assert_eq!(
        (out.total_traces, out.compaction_level, out.sources.clone()),
        (u64::from(n), 1, merge.inputs.clone())
    );
    assert_eq!(done.copies_read, u64::from(2 * n));
    assert!(out.data_pages > 1, "the merge streamed several pages");
    assert!(
        out.data_bytes * 10 <= one_copy.data_bytes * 11,
        "one copy's bytes: {} against {}",
        out.data_bytes,
        one_copy.data_bytes
    );
    for i in 0..n {
        let got = store.find_trace(out, &trace_id(i)).await.expect("find");
        assert_eq!(got.as_deref(), Some(&expected(i)[..]), "trace {i}");
    }
    // Readers see the output alone; the inputs carry their mark.
    let after = store.list_blocks("t").await.expect("list");
    let read: Vec<String> = block::without_replaced(after.clone())
        .into_iter()
        .map(|m| m.block_id)
        .collect();
    assert_eq!(read, std::slice::from_ref(&merge.output));
    for r in 0..3 {
        assert!(dir.path().join(format!("t/r{r}/{COMPACTED}")).exists());
    }
    // The output's section finds every trace once.
    assert_eq!(searched(&store, vec![out.clone()]).await, n as usize);
    assert_eq!(out.search_version, crate::search::section::VERSION);
    // Its pages went through a scratch file, gone with the merge.
    assert!(out.search_bytes > 0);
    assert_eq!(
        std::fs::read_dir(scratch.path()).expect("scratch").count(),
        0
    );

    // Nothing left to merge; the inputs go once their mark is past the retention.
    let p = plan::plan("t", &listing(&after, Some(10_000)), 10_100, &settings);
    assert!(p.merges.is_empty() && p.mark.is_empty() && p.delete.is_empty());
    let p = plan::plan("t", &listing(&after, Some(10_000)), 10_300, &settings);
    assert_eq!(p.delete, ["r0", "r1", "r2"]);

    // A retried merge (a crash after the output's meta) writes the same block again.
    let again = compact(
        &store,
        merge,
        &listed,
        "compactor-2",
        scratch.path(),
        10_050,
    )
    .await
    .expect("again");
    assert_eq!(again.output.map(|m| m.block_id), Some(out.block_id.clone()));
    assert_eq!(store.list_blocks("t").await.expect("list").len(), 4);
}

#[tokio::test]
async fn a_pass_merges_marks_what_a_crash_left_unmarked_and_deletes_after_the_retention() {
    use super::pass::{run_pass, Worker};
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    let scratch = tempfile::tempdir().expect("scratch");
    let status = super::status::CompactorStatus::default();
    let worker = Worker {
        store: &store,
        name: "c",
        scratch: scratch.path(),
        concurrency: 2,
        status: &status,
    };
    upload_replicas(&store, 900).await;
    let settings = |_: &str| hourly(1 << 30);
    let now = SystemTime::now();
    // Windows this compactor does not own are left alone.
    let stats = run_pass(worker, &settings, &|_, _| false, now)
        .await
        .expect("pass");
    assert_eq!(stats, Default::default());
    assert_eq!(store.list_blocks("t").await.expect("list").len(), 3);

    let stats = run_pass(worker, &settings, &|_, _| true, now)
        .await
        .expect("pass");
    assert_eq!(
        (stats.merges, stats.failed_merges, stats.waiting),
        (1, 0, 3)
    );
    assert!(stats.bytes_read > 0 && stats.bytes_written > 0);
    // The status shows what readers saw at the listing: three level-0 blocks.
    let t = status.snapshot()["t"].clone();
    assert_eq!(
        (t.levels[&0].blocks, t.levels[&0].traces, t.waiting_blocks),
        (3, 1800, 3)
    );
    assert!(t.last_success_unix.is_some() && t.last_error.is_none());
    // A crash between the output's meta and the marks: the next pass marks them.
    for r in 0..3 {
        std::fs::remove_file(dir.path().join(format!("t/r{r}/{COMPACTED}"))).expect("unmark");
    }
    let stats = run_pass(worker, &settings, &|_, _| true, now)
        .await
        .expect("pass");
    assert_eq!((stats.merges, stats.marked, stats.deleted), (0, 3, 0));
    let t = status.snapshot()["t"].clone();
    let levels: Vec<(u32, usize, u64)> = t
        .levels
        .iter()
        .map(|(l, v)| (*l, v.blocks, v.traces))
        .collect();
    assert_eq!((levels, t.replaced_blocks), (vec![(1, 1, 900)], 3));
    // Past the retention the inputs go; the output stays and holds every trace.
    let later = now + Duration::from_secs(301);
    let stats = run_pass(worker, &settings, &|_, _| true, later)
        .await
        .expect("pass");
    assert_eq!((stats.merges, stats.marked, stats.deleted), (0, 0, 3));
    let left = store.list_blocks("t").await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].total_traces, 900);
    for r in 0..3 {
        assert!(!dir.path().join(format!("t/r{r}")).join("data").exists());
    }
}

#[tokio::test]
async fn a_merge_whose_input_is_deleted_meanwhile_leaves_no_output() {
    use super::run::CompactError;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = BlockStore::local(dir.path()).expect("store");
    upload_replicas(&store, 600).await;
    let listed = store.list_blocks("t").await.expect("list");
    let settings = PlanSettings {
        settle_secs: 0,
        ..hourly(1 << 30)
    };
    let as_listed: Vec<Listed> = listed
        .iter()
        .map(|m| Listed {
            meta: m.clone(),
            marked_unix_secs: None,
        })
        .collect();
    let p = plan::plan("t", &as_listed, 10_000, &settings);
    let merge = &p.merges[0];
    // A tenant deletion (metas first) reaches one input after the listing.
    std::fs::remove_file(dir.path().join(format!("t/r1/{}", crate::storage::META)))
        .expect("delete meta");
    let scratch = tempfile::tempdir().expect("scratch");
    let err = compact(&store, merge, &listed, "c", scratch.path(), 10_000)
        .await
        .expect_err("an input is gone");
    assert!(
        matches!(&err, CompactError::InputDeleted(id) if id == "r1"),
        "{err}"
    );
    let mut left: Vec<String> = store
        .list_blocks("t")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.block_id)
        .collect();
    left.sort();
    assert_eq!(left, ["r0", "r2"], "the output is not visible");
    assert!(!dir.path().join(format!("t/{}/data", merge.output)).exists());
}
