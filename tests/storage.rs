//! End-to-end tests of durable storage: cut, flush, read back from blocks.

mod common;

use std::time::Duration;

use common::{bench, flush, read_record, spans_via_query, visible_blocks, wait_until, Cluster};

async fn all_complete(query: &str, record: &[(String, usize)]) -> Result<(), String> {
    for (id, expected) in record {
        match spans_via_query(query, id).await {
            Ok(n) if n == *expected => {}
            Ok(n) => return Err(format!("{id}: {n} of {expected} spans")),
            Err(e) => return Err(format!("{id}: {e}")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn flushed_traces_read_back_after_every_ingester_restarted_with_empty_wal_and_memory() {
    let mut cluster = Cluster::start(21, 3, &[]).await;
    let dir = cluster.dir.path().to_owned();
    let record = dir.join("acked.txt");
    let (ok, out) = bench(&[
        format!("--endpoint={}", cluster.front.otlp_grpc()),
        "--requests=20".into(),
        "--batch-spans=500".into(),
        format!("--record={}", record.display()),
    ]);
    assert!(ok && out.contains("errors: none"), "{out}");
    let record = read_record(&record);

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
    let query = cluster.front.http();
    wait_until(
        "every acked trace readable from blocks",
        Duration::from_secs(20),
        || {
            let (query, record) = (query.clone(), record.clone());
            async move { all_complete(&query, &record).await.is_ok() }
        },
    )
    .await;
    // And the three replicas' copies were merged into one trace each.
    let (id, expected) = &record[0];
    assert_eq!(spans_via_query(&query, id).await, Ok(*expected));
}

#[tokio::test(flavor = "multi_thread")]
async fn traces_stay_readable_while_they_move_from_memory_to_blocks() {
    let cluster = Cluster::start(22, 3, &[]).await;
    let dir = cluster.dir.path().to_owned();
    let record = dir.join("acked.txt");
    let (ok, out) = bench(&[
        format!("--endpoint={}", cluster.front.otlp_grpc()),
        "--duration-secs=6".into(),
        "--rate=5000".into(),
        "--batch-spans=100".into(),
        format!("--record={}", record.display()),
    ]);
    assert!(ok && out.contains("errors: none"), "{out}");
    let record = read_record(&record);
    let query = cluster.front.http();
    // Read everything repeatedly while the pipeline cuts (1 s idle), completes (3 s),
    // flushes and retires local blocks (3 s): every read of every trace is complete.
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        if let Err(e) = all_complete(&query, &record).await {
            cluster.dump_logs();
            panic!("round {rounds}: {e}");
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
