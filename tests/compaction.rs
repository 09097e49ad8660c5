//! End-to-end tests of the compactor: real processes, the replicas' blocks merged into
//! one copy in the store, every acked trace still read back whole.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{flush, metric, visible_blocks, wait_until, Cluster};

const TENANT: &str = "single-tenant";

/// Fast compaction for a test: a pass every 500 ms, no settle time, replaced blocks
/// deleted 2 s after (the cluster's block-list poll is 500 ms).
const FAST: [&str; 3] = [
    "--compaction-interval-ms=500",
    "--compaction-settle-ms=0",
    "--compacted-block-retention-ms=2000",
];

/// The metas of the tenant's visible blocks in the filesystem store.
fn metas(store: &Path) -> Vec<serde_json::Value> {
    visible_blocks(store, TENANT)
        .iter()
        .filter_map(|b| std::fs::read(store.join(TENANT).join(b).join("meta.json")).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

fn sum(metas: &[serde_json::Value], field: &str) -> u64 {
    metas.iter().filter_map(|m| m[field].as_u64()).sum()
}

/// Reads every trace of `record` back while the compactor works, until the store holds
/// only merged blocks and the querier lists them all (within `secs`). Returns the rounds
/// of reads.
async fn read_back_while_merging(
    cluster: &Cluster,
    store: &Path,
    record: &[(String, usize)],
    secs: u64,
) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0;
    loop {
        common::assert_all_complete(
            &cluster.front.http(),
            record,
            "every acked trace reads back while the compactor works",
        )
        .await;
        rounds += 1;
        let m = metas(store);
        let merged_alone =
            !m.is_empty() && m.iter().all(|m| m["compaction_level"].as_u64() >= Some(1));
        let listed = metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize;
        if merged_alone && listed == m.len() {
            return rounds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store still holds unmerged blocks after {secs} s: {m:?}"
        );
    }
}

/// A search over everything since `start` finds each trace of `record` once, and counts
/// each once.
async fn assert_searched_once(front: &common::Node, start: u64, record: &[(String, usize)]) {
    let (found, body) = common::search_everything_since(front, start).await;
    assert_eq!(
        found,
        common::sorted_ids(record),
        "a search finds each trace once"
    );
    assert_eq!(
        body["metrics"]["inspectedTraces"].as_u64(),
        Some(record.len() as u64),
        "no trace counted twice: {}",
        body["metrics"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replicas_blocks_become_one_copy_and_every_acked_trace_reads_back_from_it() {
    let mut cluster = Cluster::start(64, 3, &FAST).await;
    let start = common::unix_secs() - 60;
    let record = common::push_recorded(&cluster, &["--requests=20", "--batch-spans=200"]);
    for n in &cluster.ingesters {
        assert_eq!(flush(n).await["blocks_pending"], 0);
    }
    let store = cluster.dir.path().join("blocks");
    let before = metas(&store);
    assert!(before.len() >= 3, "every replica flushed: {before:?}");
    let (traces_before, bytes_before) = (sum(&before, "total_traces"), sum(&before, "data_bytes"));
    assert_eq!(
        traces_before,
        3 * record.len() as u64,
        "three copies of each trace"
    );

    // The store alone answers from here on: once the querier lists the blocks, the
    // ingesters lose everything. Then the compactor starts, and reads go on all through
    // its merge, marks and deletions.
    wait_until(
        "the querier to list the blocks",
        Duration::from_secs(20),
        || async {
            metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize
                == before.len()
        },
    )
    .await;
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    let compactor = cluster.spawn_extra("compactor-1", 50, "compactor").await;
    let rounds = read_back_while_merging(&cluster, &store, &record, 60).await;
    let after = metas(&store);
    let bytes_after = sum(&after, "data_bytes");
    eprintln!(
        "store: {} blocks, {bytes_before} data bytes before; {} blocks, {bytes_after} after; {rounds} rounds of reads meanwhile",
        before.len(),
        after.len()
    );
    assert_eq!(
        sum(&after, "total_traces"),
        record.len() as u64,
        "one copy of each trace: {after:?}"
    );
    assert!(
        bytes_after * 3 * 10 <= bytes_before * 11,
        "stored bytes within 1.1x of one replica's: {bytes_after} against {bytes_before} for three"
    );
    assert!(metric(&compactor, "ringtail_compactor_merges_total").await >= 1.0);
    // The compactor's status shows the same: one copy, at level 1 and up, nothing left.
    wait_until(
        "/status/compactor to show the merged blocks alone",
        Duration::from_secs(10),
        || async {
            let status: serde_json::Value = serde_json::from_str(
                &common::get_text(format!("{}/status/compactor", compactor.http())).await,
            )
            .unwrap_or_default();
            let t = &status["tenants"][TENANT];
            let levels = t["levels"].as_object().cloned().unwrap_or_default();
            let traces: u64 = levels.values().filter_map(|l| l["traces"].as_u64()).sum();
            !levels.contains_key("0")
                && traces == record.len() as u64
                && t["waiting_blocks"] == 0
                && t["last_success_unix"].as_u64() > Some(0)
                && t["last_error"].is_null()
        },
    )
    .await;
    common::assert_all_complete(
        &cluster.front.http(),
        &record,
        "every acked trace reads back from the merged blocks",
    )
    .await;
    assert_searched_once(&cluster.front, start, &record).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_compactors_share_the_tenants_and_merge_nothing_twice() {
    let mut flags = FAST.to_vec();
    flags.push("--multitenancy-enabled=true");
    let cluster = Cluster::start(65, 3, &flags).await;
    let tenants: Vec<String> = (0..16).map(|i| format!("tenant-{i}")).collect();
    let mut pushed = Vec::new();
    for t in &tenants {
        let record = common::push_recorded(
            &cluster,
            &[
                "--requests=2",
                "--batch-spans=100",
                &format!("--tenant={t}"),
            ],
        );
        pushed.push(record.len() as u64);
    }
    for n in &cluster.ingesters {
        assert_eq!(flush(n).await["blocks_pending"], 0);
    }
    let store = cluster.dir.path().join("blocks");
    let c1 = cluster.spawn_extra("compactor-1", 50, "compactor").await;
    let c2 = cluster.spawn_extra("compactor-2", 51, "compactor").await;
    let tenant_metas = |t: &str| -> Vec<serde_json::Value> {
        visible_blocks(&store, t)
            .iter()
            .filter_map(|b| std::fs::read(store.join(t).join(b).join("meta.json")).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    };
    wait_until(
        "every tenant's blocks merged and the inputs gone",
        Duration::from_secs(60),
        || async {
            tenants.iter().all(|t| {
                let m = tenant_metas(t);
                !m.is_empty() && m.iter().all(|m| m["compaction_level"].as_u64() >= Some(1))
            })
        },
    )
    .await;
    for (t, traces) in tenants.iter().zip(&pushed) {
        let m = tenant_metas(t);
        assert_eq!(
            sum(&m, "total_traces"),
            *traces,
            "{t}: one copy of each trace"
        );
    }
    let (m1, m2) = (
        metric(&c1, "ringtail_compactor_merges_total").await,
        metric(&c2, "ringtail_compactor_merges_total").await,
    );
    let merged: usize = tenants.iter().map(|t| tenant_metas(t).len()).sum();
    assert_eq!(
        (m1 + m2) as usize,
        merged,
        "each merge ran once ({m1} and {m2})"
    );
    // 16 tenants over two compactors: each owns some (all on one: odds 2 in 65536).
    assert!(m1 > 0.0 && m2 > 0.0, "the work is shared: {m1} and {m2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_a_merge_of_several_upload_parts_keeps_every_acked_trace() {
    let s3 = common::S3Server::start(66, "ringtail").await;
    let mut flags: Vec<String> = s3.flags();
    flags.extend(FAST.iter().map(|f| f.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(66, 3, &flags).await;
    // ~300k spans: the merged data outgrows one 5 MiB upload part.
    let record = common::push_recorded(&cluster, &["--requests=600", "--batch-spans=500"]);
    for n in &cluster.ingesters {
        assert_eq!(flush(n).await["blocks_pending"], 0);
    }
    let store = s3.block_store();
    let before = store.list_blocks(TENANT).await.expect("list");
    let bytes_before: u64 = before.iter().map(|m| m.data_bytes).sum();
    let compactor = cluster.spawn_extra("compactor-1", 50, "compactor").await;
    let mut after = Vec::new();
    // Alone this takes ~30 s; beside another cluster test on 2 busy cores (the test
    // command runs two at a time), moto answering every part took over 120 s once.
    wait_until(
        "only merged blocks left in S3",
        Duration::from_secs(300),
        || {
            let store = store.clone();
            async move {
                store
                    .list_blocks(TENANT)
                    .await
                    .is_ok_and(|m| !m.is_empty() && m.iter().all(|m| m.compaction_level >= 1))
            }
        },
    )
    .await;
    after.extend(store.list_blocks(TENANT).await.expect("list"));
    let bytes_after: u64 = after.iter().map(|m| m.data_bytes).sum();
    eprintln!(
        "s3: {} blocks, {bytes_before} data bytes before; {} blocks, {bytes_after} after",
        before.len(),
        after.len()
    );
    assert!(bytes_after > 5 << 20, "several parts: {bytes_after} bytes");
    assert_eq!(
        after.iter().map(|m| m.total_traces).sum::<u64>(),
        record.len() as u64
    );
    assert!(bytes_after * 3 * 10 <= bytes_before * 11);
    assert!(metric(&compactor, "ringtail_compactor_merges_total").await >= 1.0);
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    wait_until(
        "the querier to list the merged blocks",
        Duration::from_secs(20),
        || async {
            metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize
                == after.len()
        },
    )
    .await;
    // Every tenth (the count above covers all of them).
    let sample: Vec<(String, usize)> = record.iter().step_by(10).cloned().collect();
    common::assert_all_complete(
        &cluster.front.http(),
        &sample,
        "acked traces read back from the merged blocks in S3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compactor_killed_mid_merge_loses_nothing_and_its_restart_finishes_the_merge() {
    let mut cluster = Cluster::start(67, 3, &FAST).await;
    let start = common::unix_secs() - 60;
    // ~300k spans: a merge that runs long enough to be caught in the middle, in 6000 traces
    // (under the search limit, so one search can see every trace).
    let record = common::push_recorded(
        &cluster,
        &[
            "--requests=600",
            "--batch-spans=500",
            "--spans-per-trace=50",
        ],
    );
    for n in &cluster.ingesters {
        assert_eq!(flush(n).await["blocks_pending"], 0);
    }
    let store = cluster.dir.path().join("blocks");
    let before = metas(&store);
    wait_until(
        "the querier to list the blocks",
        Duration::from_secs(20),
        || async {
            metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize
                == before.len()
        },
    )
    .await;
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;

    let mut compactor = cluster.spawn_extra("compactor-1", 50, "compactor").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&compactor, "ringtail_compactor_merges_running").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no merge started in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    compactor.kill();
    let at_kill = metas(&store);
    assert!(
        at_kill
            .iter()
            .all(|m| m["compaction_level"].as_u64() == Some(0)),
        "killed before the output's meta: {at_kill:?}"
    );
    common::assert_all_complete(
        &cluster.front.http(),
        &record,
        "every acked trace reads back from the inputs after the kill",
    )
    .await;

    compactor.restart();
    wait_until(
        "only merged blocks left, and the querier lists them",
        Duration::from_secs(90),
        || async {
            let m = metas(&store);
            !m.is_empty()
                && m.iter().all(|m| m["compaction_level"].as_u64() >= Some(1))
                && metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize
                    == m.len()
        },
    )
    .await;
    let after = metas(&store);
    assert_eq!(
        sum(&after, "total_traces"),
        record.len() as u64,
        "one copy of each trace: {after:?}"
    );
    common::assert_all_complete(
        &cluster.front.http(),
        &record,
        "every acked trace reads back from the merge the restart finished",
    )
    .await;
    assert_searched_once(&cluster.front, start, &record).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_window_too_large_for_one_block_ends_in_id_ranges_holding_each_trace_once() {
    // Spans two hours old: their window is closed, so its blocks merge all at once; the
    // cap makes that merge several blocks, each a range of trace IDs.
    let mut args = FAST.to_vec();
    args.push("--max-compacted-block-bytes=150000");
    let cluster = Cluster::start(68, 3, &args).await;
    let start = common::unix_secs() - 3 * 3600;
    let mut record = Vec::new();
    for _ in 0..3 {
        record.extend(common::push_recorded(
            &cluster,
            &["--requests=15", "--batch-spans=500", "--span-age-secs=7200"],
        ));
        for n in &cluster.ingesters {
            assert_eq!(flush(n).await["blocks_pending"], 0);
        }
    }
    let store = cluster.dir.path().join("blocks");
    let before = metas(&store);
    assert!(
        before.len() >= 9,
        "three cuts of three replicas: {before:?}"
    );
    let bytes_before = sum(&before, "data_bytes");

    let compactor = cluster.spawn_extra("compactor-1", 50, "compactor").await;
    read_back_while_merging(&cluster, &store, &record, 60).await;
    let after = metas(&store);
    assert!(after.len() > 1, "several ranges: {after:?}");
    assert!(
        after
            .iter()
            .all(|m| m["parts"].as_u64() == Some(after.len() as u64)),
        "the parts of one merge: {after:?}"
    );
    assert_eq!(
        sum(&after, "total_traces"),
        record.len() as u64,
        "each trace in one range, once: {after:?}"
    );
    let bytes_after = sum(&after, "data_bytes");
    assert!(
        bytes_after * 3 * 10 <= bytes_before * 11,
        "within 1.1x of one replica's bytes: {bytes_after} against {bytes_before} for three"
    );
    common::assert_all_complete(
        &cluster.front.http(),
        &record,
        "every acked trace reads back from the ranges",
    )
    .await;
    assert_searched_once(&cluster.front, start, &record).await;
    // Nothing more to do in the window: no merge in the passes after the ranges.
    let merges = metric(&compactor, "ringtail_compactor_merges_total").await;
    let rounds = |s: serde_json::Value| s["rounds"].as_u64().unwrap_or(0);
    let passes = rounds(common::worker_status(&compactor, "compactor").await);
    wait_until(
        "three more compaction passes",
        Duration::from_secs(20),
        || async { rounds(common::worker_status(&compactor, "compactor").await) >= passes + 3 },
    )
    .await;
    assert_eq!(
        metric(&compactor, "ringtail_compactor_merges_total").await,
        merges,
        "a window merged into ranges is left alone"
    );
}
