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

    let compactor = cluster.spawn_extra("compactor-1", 50, "compactor").await;
    wait_until(
        "only merged blocks left in the store",
        Duration::from_secs(60),
        || async {
            let m = metas(&store);
            !m.is_empty() && m.iter().all(|m| m["compaction_level"].as_u64() >= Some(1))
        },
    )
    .await;
    let after = metas(&store);
    assert_eq!(
        sum(&after, "total_traces"),
        record.len() as u64,
        "one copy of each trace: {after:?}"
    );
    let bytes_after = sum(&after, "data_bytes");
    eprintln!(
        "store: {} blocks, {bytes_before} data bytes before; {} blocks, {bytes_after} after",
        before.len(),
        after.len()
    );
    assert!(
        bytes_after * 3 * 10 <= bytes_before * 11,
        "stored bytes within 1.1x of one replica's: {bytes_after} against {bytes_before} for three"
    );
    assert!(metric(&compactor, "ringtail_compactor_merges_total").await >= 1.0);

    // The store alone answers: wipe the ingesters, then read every trace and search.
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    wait_until(
        "the querier to list the merged blocks alone",
        Duration::from_secs(20),
        || async {
            metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize
                == after.len()
        },
    )
    .await;
    common::assert_all_complete(
        &cluster.front.http(),
        &record,
        "every acked trace reads back from the merged blocks",
    )
    .await;
    let range = [
        ("q", "{}".to_owned()),
        ("limit", "10000".to_owned()),
        ("start", start.to_string()),
        ("end", (common::unix_secs() + 60).to_string()),
    ];
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/search", cluster.front.http()))
        .query(&range)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let mut found: Vec<String> = body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|t| t["traceID"].as_str().map(str::to_owned))
        .collect();
    found.sort();
    let mut acked: Vec<String> = record.iter().map(|(id, _)| id.clone()).collect();
    acked.sort();
    assert_eq!(
        found, acked,
        "a search over the merged blocks finds each trace once"
    );
    assert_eq!(
        body["metrics"]["inspectedTraces"].as_u64(),
        Some(record.len() as u64),
        "each trace inspected once: {}",
        body["metrics"]
    );
}
