//! End-to-end tests of durable storage: cut, flush, read back from blocks.

mod common;

use std::time::Duration;

use common::{
    bench, flush, metric, read_record, spans_via_query, visible_blocks, wait_until, Cluster,
};

/// A moto S3 server and a cluster that stores its blocks there, on loopback range `subnet`.
async fn s3_cluster(subnet: u8) -> (common::S3Server, Cluster) {
    let s3 = common::S3Server::start(subnet, "ringtail").await;
    let flags = s3.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(subnet, 3, &flags).await;
    (s3, cluster)
}

/// Wipes every ingester (WAL, memory, local blocks), waits until the querier lists every
/// block in S3, and reads every recorded trace: S3 alone must hold everything acked.
async fn wipe_ingesters_and_read_back(
    cluster: &mut Cluster,
    s3: &common::S3Server,
    record: &[(String, usize)],
) {
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    let metas = s3
        .keys("single-tenant/")
        .await
        .iter()
        .filter(|k| k.ends_with("/meta.json"))
        .count();
    wait_querier_lists(cluster, metas).await;
    common::assert_all_complete(
        &cluster.front.http(),
        record,
        "every acked trace reads back from S3",
    )
    .await;
}

/// Waits until the querier's block lists hold `blocks` blocks (it polls every 500 ms).
async fn wait_querier_lists(cluster: &Cluster, blocks: usize) {
    wait_until(
        &format!("the querier to list {blocks} blocks"),
        Duration::from_secs(20),
        || async {
            metric(&cluster.front, "ringtail_querier_blocklist_blocks").await as usize == blocks
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flushed_traces_read_back_after_every_ingester_restarted_with_empty_wal_and_memory() {
    let mut cluster = Cluster::start(21, 3, &[]).await;
    let dir = cluster.dir.path().to_owned();
    let record = common::push_recorded(&cluster, &["--requests=20", "--batch-spans=500"]);

    // POST /flush cuts and uploads everything now.
    for i in 0..3 {
        let stats = flush(&cluster.ingesters[i]).await;
        assert_eq!(stats["blocks_pending"], 0, "{stats}");
    }
    let blocks = visible_blocks(&dir.join("blocks"), "single-tenant");
    assert!(
        blocks.len() >= 3,
        "one block per ingester at least: {blocks:?}"
    );

    // Wipe every ingester: WAL, memory and local blocks are gone; only the store remains.
    for i in 0..3 {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    wait_querier_lists(
        &cluster,
        visible_blocks(&dir.join("blocks"), "single-tenant").len(),
    )
    .await;
    let query = cluster.front.http();
    common::assert_all_complete(&query, &record, "every acked trace reads back from blocks").await;
    // And the three replicas' copies were merged into one trace each.
    let (id, expected) = &record[0];
    assert_eq!(spans_via_query(&query, id).await, Ok(*expected));
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_stay_readable_while_they_move_from_memory_to_blocks() {
    let cluster = Cluster::start(22, 3, &[]).await;
    let dir = cluster.dir.path().to_owned();
    let record = common::push_recorded(
        &cluster,
        &["--duration-secs=6", "--rate=5000", "--batch-spans=100"],
    );
    let query = cluster.front.http();
    // Read everything repeatedly while the pipeline cuts (1 s idle), completes (3 s),
    // flushes and retires local blocks (3 s): every read of every trace is complete.
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        let bad = common::incomplete_traces(&query, &record).await;
        if !bad.is_empty() {
            panic!(
                "round {rounds}: {} incomplete, e.g. {:?}",
                bad.len(),
                &bad[..bad.len().min(5)]
            );
        }
        rounds += 1;
    }
    assert!(!visible_blocks(&dir.join("blocks"), "single-tenant").is_empty());
    // The ingesters' WALs were truncated once the blocks were complete.
    for n in &cluster.ingesters {
        let metrics = common::get_text(format!("{}/metrics", n.http())).await;
        let completed = metrics
            .lines()
            .find(|l| l.starts_with("ringtail_ingester_blocks_flushed_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(completed >= 1.0, "{}: {metrics}", n.name);
    }
}

fn objects_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                objects_under(&p)
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tenant_from_a_compactor_that_never_saw_its_data_leaves_zero_objects_and_other_roles_refuse(
) {
    let cluster = Cluster::start(
        23,
        3,
        &["--multitenancy-enabled=true", "--admin-token=s3cret"],
    )
    .await;
    let dir = cluster.dir.path().to_owned();
    for tenant in ["doomed", "kept"] {
        let (ok, out) = bench(&[
            format!("--endpoint={}", cluster.front.otlp_grpc()),
            "--requests=10".into(),
            "--batch-spans=100".into(),
            format!("--tenant={tenant}"),
        ]);
        assert!(ok && out.contains("errors: none"), "{out}");
    }
    for n in &cluster.ingesters {
        flush(n).await;
    }
    let store = dir.join("blocks");
    assert!(!visible_blocks(&store, "doomed").is_empty());
    assert!(!visible_blocks(&store, "kept").is_empty());

    // The front (distributor, querier) does not delete: compactors own what the store keeps.
    let http = reqwest::Client::new();
    let refused = http
        .delete(format!("{}/api/admin/tenants/doomed", cluster.front.http()))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("delete");
    assert_eq!(refused.status(), 404);
    let why = refused.text().await.unwrap_or_default();
    assert!(why.contains("runs no compactor"), "{why}");
    assert!(
        !visible_blocks(&store, "doomed").is_empty(),
        "nothing deleted"
    );

    // A compactor started only now: it never received either tenant's data.
    let admin = cluster
        .spawn_extra("admin-compactor", 50, "compactor")
        .await;
    let url = format!("{}/api/admin/tenants/doomed", admin.http());
    assert_eq!(
        http.delete(&url).send().await.expect("delete").status(),
        401
    );
    let resp = http
        .delete(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["objects_deleted"].as_u64().unwrap_or(0) >= 12,
        "{body}"
    );
    assert_eq!(objects_under(&store.join("doomed")), 0);
    assert!(
        !visible_blocks(&store, "kept").is_empty(),
        "other tenants are untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_blocks_past_the_tenants_retention_and_keeps_recent_ones() {
    let cluster = Cluster::start(
        24,
        3,
        &[
            "--multitenancy-enabled=true",
            "--tenant-overrides=short:block_retention_hours=1",
            "--retention-interval-ms=500",
        ],
    )
    .await;
    // Retention runs on compactors.
    let compactor = cluster.spawn_extra("compactor", 60, "compactor").await;
    let store = cluster.dir.path().join("blocks");
    let push = |tenant: &str, age: u64| {
        bench(&[
            format!("--endpoint={}", cluster.front.otlp_grpc()),
            "--requests=5".into(),
            "--batch-spans=100".into(),
            format!("--tenant={tenant}"),
            format!("--span-age-secs={age}"),
        ])
    };
    // Two hours old: past tenant "short"'s 1 h, within the default 14 days elsewhere.
    for tenant in ["short", "long"] {
        let (ok, out) = push(tenant, 7200);
        assert!(ok, "{out}");
    }
    for n in &cluster.ingesters {
        flush(n).await;
    }
    wait_until(
        "short's old blocks deleted",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move { objects_under(&store.join("short")) == 0 }
        },
    )
    .await;
    assert!(
        !visible_blocks(&store, "long").is_empty(),
        "within retention"
    );
    // Fresh data of the short tenant stays.
    let (ok, out) = push("short", 0);
    assert!(ok, "{out}");
    for n in &cluster.ingesters {
        flush(n).await;
    }
    let passes = || async {
        common::get_text(format!("{}/metrics", compactor.http()))
            .await
            .lines()
            .find(|l| l.starts_with("ringtail_retention_passes_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = passes().await;
    wait_until(
        "two more retention passes",
        Duration::from_secs(10),
        || async { passes().await >= before + 2 },
    )
    .await;
    assert!(
        !visible_blocks(&store, "short").is_empty(),
        "recent blocks are kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_flushed_to_s3_read_back_after_the_ingesters_lost_everything() {
    let (s3, mut cluster) = s3_cluster(25).await;
    let start = common::unix_secs() - 60;
    let record = common::push_recorded(&cluster, &["--requests=10", "--batch-spans=200"]);
    for n in &cluster.ingesters {
        assert_eq!(flush(n).await["blocks_pending"], 0);
    }
    let keys = s3.keys("single-tenant/").await;
    assert!(
        keys.iter().filter(|k| k.ends_with("/meta.json")).count() >= 3,
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with("/search")), "{keys:?}");
    wipe_ingesters_and_read_back(&mut cluster, &s3, &record).await;

    // Search over S3 alone: sections read by their headers and ranged page reads find
    // every acked trace once.
    let (found, _) = common::search_everything_since(&cluster.front, start).await;
    let acked = common::sorted_ids(&record);
    assert_eq!(found, acked, "every acked trace, once");
    assert!(
        metric(
            &cluster.front,
            "ringtail_search_section_bytes_fetched_total"
        )
        .await
            > 0.0
    );
    assert_eq!(
        metric(&cluster.front, "ringtail_search_unreadable_sections_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_of_30_s_under_load_loses_nothing_and_the_backlog_drains() {
    let (s3, mut cluster) = s3_cluster(26).await;
    let dir = cluster.dir.path().to_owned();
    let record = dir.join("acked.txt");
    let args = vec![
        format!("--endpoint={}", cluster.front.otlp_grpc()),
        "--duration-secs=40".into(),
        "--rate=600".into(),
        "--batch-spans=100".into(),
        format!("--record={}", record.display()),
    ];
    let load = std::thread::spawn(move || bench(&args));
    tokio::time::sleep(Duration::from_secs(3)).await;
    s3.pause();
    let outage = std::time::Instant::now();
    // Blocks complete every 3 s and cannot be uploaded: the backlog shows in metrics,
    // and the ingesters stay ready for writes.
    let ingester = &cluster.ingesters[0];
    wait_until(
        "a flush backlog during the outage",
        Duration::from_secs(25),
        || async { metric(ingester, "ringtail_ingester_flush_backlog_blocks").await >= 1.0 },
    )
    .await;
    for n in &cluster.ingesters {
        assert!(n.is_ready().await, "{} must stay ready for writes", n.name);
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    s3.resume();
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench"))
        .await
        .expect("join");
    assert!(
        ok && out.contains("errors: none"),
        "writes never failed:\n{out}"
    );
    let record = read_record(&record);
    for n in &cluster.ingesters {
        wait_until(
            &format!("{}'s backlog drained", n.name),
            Duration::from_secs(60),
            || async { metric(n, "ringtail_ingester_flush_backlog_blocks").await == 0.0 },
        )
        .await;
        assert!(metric(n, "ringtail_ingester_flush_failures_total").await >= 1.0);
    }
    // Nothing lost: with every ingester wiped, S3 alone serves every acked trace.
    for n in &cluster.ingesters {
        flush(n).await;
    }
    wipe_ingesters_and_read_back(&mut cluster, &s3, &record).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_an_upload_loses_nothing_and_leaves_no_duplicate_block() {
    let (s3, mut cluster) = s3_cluster(27).await;
    let dir = cluster.dir.path().to_owned();
    let record = common::push_recorded(&cluster, &["--requests=10", "--batch-spans=200"]);

    // Freeze the store, then make ingester-1 cut everything: its upload hangs mid-flight.
    s3.pause();
    let url = format!("{}/flush", cluster.ingesters[0].http());
    let hanging = tokio::spawn(async move { reqwest::Client::new().post(url).send().await });
    let local = dir.join("ingester-1/complete");
    wait_until(
        "ingester-1 to complete a local block",
        Duration::from_secs(20),
        || {
            let local = local.clone();
            async move { visible_blocks(&local, "single-tenant").len() == 1 }
        },
    )
    .await;
    cluster.ingester("ingester-1").kill();
    hanging.abort();
    s3.resume();

    // Restart with its data: the local block is uploaded under the same ID.
    cluster.ingester("ingester-1").restart();
    cluster.wait_ready().await;
    let ingester = &cluster.ingesters[0];
    wait_until(
        "ingester-1's backlog to drain",
        Duration::from_secs(30),
        || async { metric(ingester, "ringtail_ingester_flush_backlog_blocks").await == 0.0 },
    )
    .await;
    let mut by_ingester = std::collections::HashMap::<String, usize>::new();
    for meta in s3
        .block_store()
        .list_blocks("single-tenant")
        .await
        .expect("list")
    {
        *by_ingester.entry(meta.ingester).or_default() += 1;
    }
    assert_eq!(
        by_ingester.get("ingester-1"),
        Some(&1),
        "one cut, one visible block: {by_ingester:?}"
    );

    // Nothing lost: flush the others, wipe every ingester, read everything from S3.
    for n in &cluster.ingesters[1..] {
        flush(n).await;
    }
    wipe_ingesters_and_read_back(&mut cluster, &s3, &record).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_partial_files_are_skipped_counted_and_cleaned_up_after_a_grace_period() {
    let mut cluster = Cluster::start(
        28,
        3,
        &[
            "--orphan-grace-ms=3000",
            "--retention-interval-ms=500",
            "--wal-store=file",
        ],
    )
    .await;
    let _compactor = cluster.spawn_extra("compactor", 60, "compactor").await;
    let dir = cluster.dir.path().to_owned();
    let store = dir.join("blocks");
    let record = common::push_recorded(&cluster, &["--requests=5", "--batch-spans=100"]);
    for n in &cluster.ingesters {
        flush(n).await;
    }
    let good = visible_blocks(&store, "single-tenant");
    // Garbage of every kind: an upload that never finished (no meta.json), a meta.json
    // whose data is gone, a meta.json that does not parse.
    let tenant = store.join("single-tenant");
    std::fs::create_dir_all(tenant.join("unfinished")).expect("mkdir");
    std::fs::write(tenant.join("unfinished/data"), b"partial").expect("write");
    let gutted = tenant.join(&good[0]);
    std::fs::remove_file(gutted.join("data")).expect("remove data");
    std::fs::create_dir_all(tenant.join("garbled")).expect("mkdir");
    std::fs::write(tenant.join("garbled/meta.json"), b"{ not json").expect("write");

    // Reads go on (the gutted block's replicas hold the same traces) and count the skips.
    for n in &cluster.ingesters {
        flush(n).await;
    }
    let query = cluster.front.http();
    common::assert_all_complete(&query, &record, "reads skip broken blocks").await;
    // An unreadable WAL segment: ingester-2 restarts on a corrupted one and serves.
    let wal = dir.join("ingester-2/wal-segments");
    cluster.ingester("ingester-2").kill();
    std::fs::write(wal.join("00000000000000000001.seg"), b"\xff\xff garbage").expect("write");
    cluster.ingester("ingester-2").restart();
    cluster.wait_ready().await;
    assert!(
        metric(
            &cluster.ingesters[1],
            "ringtail_ingester_wal_corrupt_records_total"
        )
        .await
            >= 1.0
    );

    // After the grace period the garbage is gone and the good blocks stay.
    wait_until("garbage cleaned up", Duration::from_secs(20), || {
        let tenant = tenant.clone();
        async move {
            !tenant.join("unfinished").exists()
                && !tenant.join("garbled").exists()
                && !gutted_exists(&tenant)
        }
    })
    .await;
    assert!(metric(&cluster.front, "ringtail_storage_unreadable_blocks_total").await >= 1.0);
    assert_eq!(
        visible_blocks(&store, "single-tenant").len(),
        good.len() - 1
    );
    common::assert_all_complete(&query, &record, "still readable").await;
    fn gutted_exists(tenant: &std::path::Path) -> bool {
        std::fs::read_dir(tenant)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().join("meta.json").exists() && !e.path().join("data").exists())
            })
            .unwrap_or(false)
    }
}

/// An ingester's live traces stay within `max_live_bytes` whatever the load: above it the
/// least recently appended traces move to head blocks at once, and read back like any other.
#[tokio::test(flavor = "multi_thread")]
async fn live_traces_stay_within_their_memory_budget_and_every_trace_reads_back() {
    const BUDGET: f64 = 2.0 * 1024.0 * 1024.0;
    // Traces would stay live for 10 minutes: only the budget moves them.
    let cluster = Cluster::start(
        29,
        3,
        &[
            "--trace-idle-period-ms=600000",
            "--max-block-duration-ms=600000",
            "--max-live-bytes=2097152",
        ],
    )
    .await;
    // About 14 MB of traces, every one to every ingester (RF=3 of 3).
    let record = common::push_recorded(&cluster, &["--requests=200", "--batch-spans=500"]);
    for n in &cluster.ingesters {
        common::wait_until(
            &format!("{}: live traces within the budget", n.name),
            Duration::from_secs(10),
            || async { common::metric(n, "ringtail_ingester_live_bytes").await <= BUDGET },
        )
        .await;
        let cut = common::metric(n, "ringtail_ingester_traces_cut_total{reason=\"memory\"}").await;
        assert!(cut > 0.0, "{}: no trace was cut for memory", n.name);
        let live = common::metric(n, "ringtail_ingester_live_traces").await;
        assert!(
            live > 0.0 && live < record.len() as f64,
            "{}: {live} live traces of {}: the budget keeps some, not all",
            n.name,
            record.len()
        );
    }
    common::assert_all_complete(
        &cluster.front.http(),
        &record,
        "every acked trace reads back, whether live or cut for memory",
    )
    .await;
}
