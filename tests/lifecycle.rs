//! End-to-end tests of the ingester lifecycle: drain on SIGTERM, rolling restarts.

mod common;

use std::time::{Duration, Instant};

use common::{bench, read_record, wait_for_writes, wait_until, Cluster, Node, PythonLoad};

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

/// Stops the Python load and asserts what its client saw: only success or retryable codes,
/// every span acked in the end (retried batches landed), and every acked trace complete.
async fn finish_python_load(cluster: &Cluster, load: PythonLoad) -> serde_json::Value {
    let result = load.finish().await;
    assert!(
        result.ok,
        "the exporter saw only success or retryable codes and every batch landed:\n{}",
        result.output
    );
    assert!(!result.acked.is_empty(), "{}", result.output);
    common::assert_all_complete(&cluster.front.http(), &result.acked, "acked traces").await;
    result.summary
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_of_an_ingester_under_load_loses_nothing_and_every_peer_drops_it_within_2_s() {
    let mut cluster = Cluster::start(31, 3, &[]).await;
    let load = PythonLoad::start(&cluster, 2000);
    wait_for_writes(&cluster, "the Python exporter's first spans").await;

    let started = Instant::now();
    let code = cluster
        .ingester("ingester-2")
        .signal_and_wait("TERM", Duration::from_secs(60));
    let drain = started.elapsed();
    assert_eq!(code, Some(0), "the drain ends with exit 0");
    assert!(
        drain < Duration::from_secs(60),
        "within shutdown_timeout_ms"
    );
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
    // 2 ingesters left of RF=3: writes go on at write quorum, under-replicated, and the
    // ring says so.
    let (status, body) = push_one_span(&cluster.front).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ring_json(&cluster.front).await["replication"]["writes"],
        "under-replicated"
    );
    wait_for_writes(&cluster, "writes while ingester-2 is away").await;
    cluster.ingester("ingester-2").restart();
    cluster.wait_ready().await;
    wait_for_writes(&cluster, "writes after ingester-2 is back").await;
    assert_eq!(
        ring_json(&cluster.front).await["replication"]["writes"],
        "full"
    );

    let summary = finish_python_load(&cluster, load).await;
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
    eprintln!("drain took {drain:?}; the exporter saw {summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_ingester_under_load_refuses_no_write_and_loses_nothing() {
    let mut cluster = Cluster::start(32, 3, &[]).await;
    let load = PythonLoad::start(&cluster, 2000);
    wait_for_writes(&cluster, "the Python exporter's first spans").await;
    for i in 0..3 {
        let name = cluster.ingesters[i].name.clone();
        let code = cluster.ingesters[i].signal_and_wait("TERM", Duration::from_secs(60));
        assert_eq!(code, Some(0), "{name} exits 0");
        cluster.ingesters[i].restart();
        cluster.wait_ready().await;
        wait_for_writes(&cluster, &format!("writes after {name} is back")).await;
    }
    let summary = finish_python_load(&cluster, load).await;
    // Writes never paused: each restart left 2 ACTIVE ingesters, the write quorum.
    assert_eq!(
        summary["codes"]["UNAVAILABLE"].as_u64().unwrap_or(0),
        0,
        "no write was refused during the restarts: {summary}"
    );
    assert!(
        common::metric(
            &cluster.front,
            "ringtail_distributor_under_replicated_traces_total"
        )
        .await
            > 0.0,
        "the writes made while an ingester was away are counted as under-replicated"
    );
    eprintln!("the exporter saw {summary}");
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
async fn each_role_lists_its_workers_on_status_workers_with_rounds_run_and_only_compactors_keep_the_store(
) {
    let one = [
        "--replication-factor=1",
        "--write-quorum=1",
        "--read-quorum=1",
    ];
    let cluster = Cluster::start(38, 1, &one).await;
    let compactor = cluster.spawn_extra("compactor", 60, "compactor").await;
    let (ingester, front) = (&cluster.ingesters[0], &cluster.front);
    for (node, worker) in [
        (ingester, "ingester-cut"),
        (ingester, "ingester-complete"),
        (ingester, "ingester-flush"),
        (&compactor, "retention"),
    ] {
        wait_until(
            &format!("{} to list {worker} with a round run", node.name),
            Duration::from_secs(15),
            || async { common::worker_status(node, worker).await["rounds"].as_u64() > Some(0) },
        )
        .await;
        let status = common::worker_status(node, worker).await;
        assert!(status["last_run_unix"].as_u64() > Some(0), "{status}");
        assert!(status["last_error"].is_null(), "{status}");
    }
    // The store's upkeep is the compactor's alone.
    for worker in ["retention", "compactor"] {
        assert!(
            common::worker_status(front, worker).await.is_null(),
            "{worker} on the front"
        );
        assert!(
            common::worker_status(ingester, worker).await.is_null(),
            "{worker} on an ingester"
        );
    }
    assert!(!common::worker_status(&compactor, "compactor")
        .await
        .is_null());
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

/// The front's `/ring` JSON.
async fn ring_json(node: &Node) -> serde_json::Value {
    match reqwest::Client::new()
        .get(format!("{}/ring", node.http()))
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Whether a node's `/ring` lists `name` among the absent (crashed) ingesters.
async fn lists_absent(node: &Node, name: &str) -> bool {
    ring_json(node).await["absent_ingesters"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["name"] == name))
}

/// One OTLP/HTTP JSON push of a single span: (status, body).
async fn push_one_span(node: &Node) -> (u16, String) {
    let trace: u128 = rand::random::<u128>() | 1;
    let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": format!("{trace:032x}"),
        "spanId": "eee19b7ec3c1b174",
        "name": "probe",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000001000000",
    }]}]}]});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", node.otlp_http()))
        .json(&body)
        .send()
        .await
        .expect("push");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_ingester_is_listed_absent_until_forgotten_and_writes_go_on_at_quorum() {
    let mut cluster = Cluster::start(35, 3, &[]).await;
    cluster.ingester("ingester-1").kill();
    // SWIM takes it out of the ring and the front remembers it as absent...
    wait_until(
        "the front to list ingester-1 as absent",
        Duration::from_secs(10),
        || lists_absent(&cluster.front, "ingester-1"),
    )
    .await;
    assert!(!lists(&cluster.front, "ingester-1").await);
    // ...so 2 live ingesters of RF=3 still take writes: a crash costs one replica.
    let (status, body) = push_one_span(&cluster.front).await;
    assert_eq!(status, 200, "{body}");
    // A distributor that starts now never saw the crash: it learns it from its peers.
    let late = cluster
        .spawn_extra("late-distributor", 101, "distributor")
        .await;
    wait_until(
        "the late distributor to list ingester-1 as absent",
        Duration::from_secs(10),
        || lists_absent(&late, "ingester-1"),
    )
    .await;
    let (status, body) = push_one_span(&late).await;
    assert_eq!(status, 200, "{body}");

    let html = common::get_text(format!("{}/ring", cluster.front.http())).await;
    assert!(
        html.contains(r#"data-forget="ingester-1""#)
            && html.contains(r#"data-forget="ingester-2""#),
        "the ring page offers the action for members and absent ingesters"
    );
    let http = reqwest::Client::new();
    let forget = |name: &str| {
        http.post(format!("{}/ring/forget/{name}", cluster.front.http()))
            .send()
    };
    assert_eq!(forget("nobody").await.expect("post").status(), 404);
    // An operator forgets it on one node (it will not come back); every node forgets it,
    // and writes go on, under-replicated, on the 2 that are left.
    assert_eq!(forget("ingester-1").await.expect("post").status(), 200);
    for node in [&cluster.front, &late] {
        assert!(!lists_absent(node, "ingester-1").await, "{}", node.name);
        let (status, body) = push_one_span(node).await;
        assert_eq!(status, 200, "{}: {body}", node.name);
        let ring = ring_json(node).await;
        assert_eq!(
            ring["replication"],
            serde_json::json!({"factor": 3, "write_quorum": 2, "active_ingesters": 2, "writes": "under-replicated", "zones": 0}),
            "{}",
            node.name
        );
    }
    let html = common::get_text(format!("{}/ring", cluster.front.http())).await;
    assert!(
        html.contains("Writing under-replicated: 2 ACTIVE"),
        "{html}"
    );

    // It comes back after all, through JOINING (WAL replay) to ACTIVE: writes resume.
    cluster.ingester("ingester-1").restart();
    cluster.wait_ready().await;
    let (status, body) = push_one_span(&cluster.front).await;
    assert_eq!(status, 200, "{body}");
    let metrics = common::get_text(format!("{}/metrics", cluster.ingesters[0].http())).await;
    assert!(
        metrics.contains(
            "ringtail_membership_state_transitions_total{from=\"JOINING\",to=\"ACTIVE\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_ingester_is_forgotten_by_every_node_on_its_own_after_absent_forget_after() {
    let mut cluster = Cluster::start(39, 3, &["--absent-forget-after-ms=4000"]).await;
    cluster.ingester("ingester-1").kill();
    wait_until(
        "the front to list ingester-1 as absent",
        Duration::from_secs(10),
        || lists_absent(&cluster.front, "ingester-1"),
    )
    .await;
    // It holds no write back meanwhile.
    let (status, body) = push_one_span(&cluster.front).await;
    assert_eq!(status, 200, "{body}");
    // No operator forgets it: every node does so on its own.
    for node in [&cluster.front, &cluster.ingesters[1], &cluster.ingesters[2]] {
        wait_until(
            &format!("{} to forget ingester-1 on its own", node.name),
            Duration::from_secs(20),
            || async { !lists_absent(node, "ingester-1").await },
        )
        .await;
        assert_eq!(
            common::metric(node, "ringtail_membership_absent_forgotten_total").await,
            1.0,
            "{}",
            node.name
        );
    }
    let log = std::fs::read_to_string(&cluster.front.log).unwrap_or_default();
    assert!(
        log.contains("forgot an absent ingester") && log.contains("ingester-1"),
        "the front logs it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_down_4_to_3_to_2_keeps_writing_at_quorum_and_1_refuses_and_nothing_is_lost() {
    let mut cluster = Cluster::start(37, 4, &[]).await;
    let http = cluster.front.http();

    // 4 → 3 under load: every push is acked.
    let record = cluster.dir.path().join("acked-4-3.txt");
    let load = steady_load(&cluster, 6, &record);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let code = cluster
        .ingester("ingester-4")
        .signal_and_wait("TERM", Duration::from_secs(60));
    assert_eq!(code, Some(0), "ingester-4 drains and exits 0");
    cluster
        .wait_active_ingesters(3, Duration::from_secs(5))
        .await;
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench"))
        .await
        .expect("join");
    assert!(ok && out.contains("errors: none"), "4 → 3:\n{out}");
    let mut acked = read_record(&record);

    // 3 → 2 under load: writes go on at write quorum (each trace on both), degraded and
    // visible on /ring.
    let record = cluster.dir.path().join("acked-3-2.txt");
    let load = steady_load(&cluster, 6, &record);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let code = cluster
        .ingester("ingester-3")
        .signal_and_wait("TERM", Duration::from_secs(60));
    assert_eq!(code, Some(0), "ingester-3 drains and exits 0");
    cluster
        .wait_active_ingesters(2, Duration::from_secs(5))
        .await;
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench"))
        .await
        .expect("join");
    assert!(ok && out.contains("errors: none"), "3 → 2:\n{out}");
    acked.extend(read_record(&record));
    assert_eq!(
        ring_json(&cluster.front).await["replication"]["writes"],
        "under-replicated"
    );

    // Nothing acked so far is lost (reads need 2 ingesters: checked before the last step).
    common::assert_all_complete(&http, &acked, "traces acked before the scale-down to 1").await;

    // 2 → 1: below the write quorum every write answers UNAVAILABLE (retryable) and says why.
    let code = cluster
        .ingester("ingester-2")
        .signal_and_wait("TERM", Duration::from_secs(60));
    assert_eq!(code, Some(0), "ingester-2 drains and exits 0");
    cluster
        .wait_active_ingesters(1, Duration::from_secs(5))
        .await;
    let (status, body) = push_one_span(&cluster.front).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not enough ingesters: 1 ACTIVE, 2 needed")
            && body.contains("replication factor 3"),
        "{body}"
    );
    assert_eq!(
        ring_json(&cluster.front).await["replication"]["writes"],
        "refused"
    );
    let (_, out) = bench(&[
        format!("--endpoint={}", cluster.front.otlp_grpc()),
        "--requests=20".into(),
        "--batch-spans=100".into(),
    ]);
    assert!(
        out.contains("errors: Unavailable: 20") && !out.contains("errors: none"),
        "with 1 ingester every gRPC push is UNAVAILABLE:\n{out}"
    );

    // Back up to 4: writes are acked again, and everything acked reads back.
    cluster.ingester("ingester-2").restart();
    cluster.ingester("ingester-3").restart();
    cluster.ingester("ingester-4").restart();
    cluster.wait_ready().await;
    acked.extend(common::push_recorded(
        &cluster,
        &["--requests=50", "--batch-spans=100"],
    ));
    common::assert_all_complete(&http, &acked, "acked traces").await;
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

/// Drops every gossip packet to and from `ip` (iptables) until dropped.
struct GossipCut(std::net::IpAddr);

impl GossipCut {
    fn rules(&self) -> [Vec<String>; 2] {
        let ip = self.0.to_string();
        [
            [
                "INPUT", "-p", "udp", "-d", &ip, "--dport", "7946", "-j", "DROP",
            ],
            [
                "INPUT", "-p", "udp", "-s", &ip, "--sport", "7946", "-j", "DROP",
            ],
        ]
        .map(|r| r.iter().map(|s| s.to_string()).collect())
    }

    fn iptables(op: &str, rule: &[String]) -> bool {
        std::process::Command::new("iptables")
            .arg(op)
            .args(rule)
            .status()
            .is_ok_and(|s| s.success())
    }

    fn cut(ip: std::net::IpAddr) -> Self {
        let cut = Self(ip);
        for rule in cut.rules() {
            assert!(Self::iptables("-I", &rule), "iptables -I {rule:?}");
        }
        cut
    }
}

impl Drop for GossipCut {
    fn drop(&mut self) {
        for rule in self.rules() {
            Self::iptables("-D", &rule);
        }
    }
}

/// The body of a node's `/ready`.
async fn ready_text(node: &Node) -> String {
    match node
        .client()
        .get(format!("{}/ready", node.http()))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingester_cut_off_from_gossip_is_not_ready_and_says_why_until_it_reaches_a_peer_again() {
    let cluster = Cluster::start(40, 3, &[]).await;
    let ingester = &cluster.ingesters[2];
    let cut = GossipCut::cut(ingester.ip);
    wait_until(
        "the cut-off ingester to report not ready",
        Duration::from_secs(30),
        || async { !ingester.is_ready().await },
    )
    .await;
    let text = ready_text(ingester).await;
    assert!(text.contains("no gossip peer reachable"), "{text}");
    // The others stay ready: 2 ACTIVE ingesters still take writes.
    assert!(cluster.front.is_ready().await);
    drop(cut);
    wait_until(
        "the ingester to be ready again once it reaches its peers",
        Duration::from_secs(60),
        || ingester.is_ready(),
    )
    .await;
    cluster
        .wait_active_ingesters(3, Duration::from_secs(30))
        .await;
}
