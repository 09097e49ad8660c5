//! End-to-end tests of the ingester lifecycle: drain on SIGTERM, rolling restarts.

mod common;

use std::time::{Duration, Instant};

use common::{bench, read_record, wait_until, Cluster, Node};

/// Whether a node's `/ring` lists a member called `name`.
async fn lists(node: &Node, name: &str) -> bool {
    let ring: serde_json::Value = match reqwest::Client::new()
        .get(format!("{}/ring", node.http()))
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return false,
    };
    ring["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["name"] == name))
}

fn steady_load(
    cluster: &Cluster,
    secs: u64,
    record: &std::path::Path,
) -> std::thread::JoinHandle<(bool, String)> {
    let args = vec![
        format!("--endpoint={}", cluster.front.otlp_grpc()),
        format!("--duration-secs={secs}"),
        "--rate=5000".into(),
        "--batch-spans=100".into(),
        format!("--record={}", record.display()),
    ];
    std::thread::spawn(move || bench(&args))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_of_an_ingester_under_load_loses_nothing_and_every_peer_drops_it_within_2_s() {
    let mut cluster = Cluster::start(31, 3, &[]).await;
    let record = cluster.dir.path().join("acked.txt");
    let load = steady_load(&cluster, 8, &record);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let code = cluster
        .ingester("ingester-2")
        .signal_and_wait("TERM", Duration::from_secs(60));
    let drain = started.elapsed();
    assert_eq!(code, Some(0), "the drain ends with exit 0");
    // Every peer drops the node within 2 s of its exit.
    let exited = Instant::now();
    for peer in [&cluster.front, &cluster.ingesters[0], &cluster.ingesters[2]] {
        wait_until(
            &format!("{} to drop ingester-2", peer.name),
            Duration::from_secs(2),
            || async { !lists(peer, "ingester-2").await },
        )
        .await;
    }
    assert!(exited.elapsed() <= Duration::from_secs(2));
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench"))
        .await
        .expect("join");
    assert!(
        ok && out.contains("errors: none"),
        "the client saw only success:\n{out}"
    );
    let record = read_record(&record);
    let bad = common::incomplete_traces(&cluster.front.http(), &record).await;
    if !bad.is_empty() {
        cluster.dump_logs();
        let again = common::incomplete_traces(&cluster.front.http(), &record).await;
        eprintln!("read again: {} still incomplete", again.len());
    }
    assert!(
        bad.is_empty(),
        "{} acked traces lost or incomplete, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let log = std::fs::read_to_string(&cluster.ingesters[1].log).unwrap_or_default();
    for step in [
        "shutdown 1/6",
        "shutdown 4/6",
        "shutdown 6/6",
        "shutdown: done",
    ] {
        assert!(
            log.contains(step),
            "the drain logs each step; missing {step:?}"
        );
    }
    eprintln!("drain took {drain:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_ingester_under_load_loses_nothing() {
    let mut cluster = Cluster::start(32, 3, &[]).await;
    let record = cluster.dir.path().join("acked.txt");
    let load = steady_load(&cluster, 20, &record);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        let name = cluster.ingesters[i].name.clone();
        let code = cluster.ingesters[i].signal_and_wait("TERM", Duration::from_secs(60));
        assert_eq!(code, Some(0), "{name} exits 0");
        cluster.ingesters[i].restart();
        cluster.wait_ready().await;
    }
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench"))
        .await
        .expect("join");
    assert!(
        ok && out.contains("errors: none"),
        "no failed push during the rolling restart:\n{out}"
    );
    let record = read_record(&record);
    common::assert_all_complete(&cluster.front.http(), &record, "acked traces").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn post_shutdown_runs_the_same_drain_and_exits_0() {
    let mut cluster = Cluster::start(33, 3, &[]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/shutdown", cluster.ingesters[2].http()))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let node = cluster.ingester("ingester-3");
    wait_until("ingester-3 to exit", Duration::from_secs(30), || {
        let running = node.is_running();
        async move { !running }
    })
    .await;
    cluster
        .wait_active_ingesters(2, Duration::from_secs(5))
        .await;
    let log = std::fs::read_to_string(&cluster.ingesters[2].log).unwrap_or_default();
    assert!(
        log.contains("shutdown 4/6") && log.contains("shutdown: done"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_up_under_load_spreads_writes_and_keeps_older_traces_complete() {
    let cluster = Cluster::start(34, 3, &[]).await;
    let record = cluster.dir.path().join("acked.txt");
    let load = steady_load(&cluster, 8, &record);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A fourth ingester joins (it knows the others as seeds) and takes tokens.
    let fourth = cluster.spawn_extra("ingester-4", 4, "ingester").await;
    cluster
        .wait_active_ingesters(4, Duration::from_secs(10))
        .await;
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench"))
        .await
        .expect("join");
    assert!(ok && out.contains("errors: none"), "{out}");
    // Writes spread onto the new ingester...
    assert!(
        common::metric(&fourth, "ringtail_ingester_wal_records_total").await > 0.0,
        "the new ingester receives pushes"
    );
    // ...and every trace, also those written before it joined, reads back complete.
    let record = read_record(&record);
    common::assert_all_complete(&cluster.front.http(), &record, "acked traces").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_can_forget_a_member_from_the_ring_page() {
    let mut cluster = Cluster::start(35, 3, &[]).await;
    cluster.ingester("ingester-1").kill();
    let http = reqwest::Client::new();
    let forget = |name: &str| {
        http.post(format!("{}/ring/forget/{name}", cluster.front.http()))
            .send()
    };
    assert_eq!(forget("nobody").await.expect("post").status(), 404);
    assert_eq!(forget("ingester-1").await.expect("post").status(), 200);
    // Gone from the front's ring at once, well before SWIM's ~5 s.
    assert!(!lists(&cluster.front, "ingester-1").await);
    let html = common::get_text(format!("{}/ring", cluster.front.http())).await;
    assert!(
        html.contains("/ring/forget/ingester-2"),
        "the ring page offers the action"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_departure_under_20_percent_gossip_loss_is_seen_by_every_peer_within_10_s() {
    let cluster = Cluster::start(36, 3, &[]).await;
    let mut lossy = cluster
        .spawn_extra_with("ingester-4", 4, "ingester", &["--gossip-packet-loss=0.2"])
        .await;
    cluster
        .wait_active_ingesters(4, Duration::from_secs(15))
        .await;
    let code = lossy.signal_and_wait("TERM", Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let exited = Instant::now();
    for peer in [
        &cluster.front,
        &cluster.ingesters[0],
        &cluster.ingesters[1],
        &cluster.ingesters[2],
    ] {
        wait_until(
            &format!("{} to drop ingester-4", peer.name),
            Duration::from_secs(10),
            || async { !lists(peer, "ingester-4").await },
        )
        .await;
    }
    assert!(exited.elapsed() <= Duration::from_secs(10));
    assert!(common::metric(&cluster.front, "ringtail_gossip_packets_received_total").await > 0.0);
}
