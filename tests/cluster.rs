//! End-to-end tests: real `ringtail` processes on loopback, real OTLP exporters.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{
    bench, get_text, incomplete_traces, python, read_record, spans_via_query, wait_until, Cluster,
};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;

#[tokio::test(flavor = "multi_thread")]
async fn spans_from_the_python_and_rust_otlp_exporters_read_back_complete() {
    let cluster = Cluster::start(11, 3, &[]).await;

    // The OpenTelemetry Python SDK's OTLP gRPC exporter: 10,000 spans in 1,000 traces,
    // read back through the querier's Tempo JSON API by the same script.
    let (ok, text) = common::python_export_and_verify(
        &cluster,
        &["--traces", "1000", "--spans-per-trace", "10"],
    );
    assert!(ok, "python exporter run failed:\n{text}");
    assert!(text.contains("verified 1000 complete"), "{text}");

    // The Rust `opentelemetry-otlp` exporter (tonic): 10,000 spans in 1,000 traces.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(cluster.front.otlp_grpc())
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("exporter");
    // The default queue (2,048 spans) would drop most of a 10,000-span burst.
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_max_queue_size(20_000)
                .with_max_export_batch_size(512)
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("rust-e2e")
                .build(),
        )
        .build();
    let tracer = provider.tracer("e2e");
    let mut traces = Vec::new();
    for t in 0..1000 {
        let root = tracer.start("root");
        let trace_id = root.span_context().trace_id().to_string();
        let cx = opentelemetry::Context::current_with_span(root);
        for c in 0..9 {
            let mut child = tracer.start_with_context("child", &cx);
            child.set_attribute(KeyValue::new("e2e.index", (t * 10 + c) as i64));
            child.end();
        }
        cx.span().end();
        traces.push((trace_id, 10));
    }
    provider.force_flush().expect("flush");
    provider.shutdown().expect("shutdown");
    let bad = incomplete_traces(&cluster.front.http(), &traces).await;
    assert!(
        bad.is_empty(),
        "{} traces incomplete, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_one_ingester_under_load_loses_no_acked_span_and_it_replays_its_wal() {
    sigkill_one_ingester_under_load(12, "sled").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_one_ingester_loses_nothing_with_the_file_wal_store_too() {
    sigkill_one_ingester_under_load(16, "file").await;
}

async fn sigkill_one_ingester_under_load(subnet: u8, wal_store: &str) {
    let mut cluster = Cluster::start(subnet, 3, &[&format!("--wal-store={wal_store}")]).await;
    let dir = cluster.dir.path().to_owned();
    let endpoint = cluster.front.otlp_grpc();

    // Phase 1: a complete run while every ingester is up; all three hold every trace.
    let before = dir.join("before.txt");
    let (ok, out) = bench(&[
        format!("--endpoint={endpoint}"),
        "--requests=40".into(),
        "--batch-spans=500".into(),
        format!("--record={}", before.display()),
    ]);
    assert!(ok && out.contains("errors: none"), "{out}");
    let before = read_record(&before);
    assert_eq!(before.iter().map(|t| t.1).sum::<usize>(), 20_000);

    // Phase 2: push for 8 s and SIGKILL ingester-2 one second in.
    let during = dir.join("during.txt");
    let args = vec![
        format!("--endpoint={endpoint}"),
        "--duration-secs=8".into(),
        "--rate=20000".into(),
        "--batch-spans=200".into(),
        format!("--record={}", during.display()),
    ];
    let load = std::thread::spawn(move || bench(&args));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.ingester("ingester-2").kill();
    let (ok, out) = tokio::task::spawn_blocking(move || load.join().expect("bench thread"))
        .await
        .expect("join");
    assert!(ok, "{out}");
    assert!(
        out.contains("errors: none"),
        "pushes must keep succeeding with one ingester down:\n{out}"
    );
    let during = read_record(&during);
    assert!(during.len() > 500, "{out}");
    // The pushes the killed ingester missed before the ring dropped it are counted: the
    // operator's sign that those traces have two copies, not three.
    assert!(
        common::metric(
            &cluster.front,
            "ringtail_distributor_replica_push_failures_total"
        )
        .await
            > 0.0,
        "the killed ingester's failed pushes are counted"
    );

    // Every acked span is readable right away.
    let query = cluster.front.http();
    common::assert_all_complete(&query, &during, "acked traces").await;
    // SWIM removes the dead ingester from the write ring on its own.
    cluster
        .wait_active_ingesters(2, Duration::from_secs(15))
        .await;

    // Restart: it replays its WAL and serves, alone, every trace it held before the kill.
    cluster.ingester("ingester-2").restart();
    let ingester = cluster.ingester("ingester-2");
    wait_until(
        "ingester-2 ready after restart",
        Duration::from_secs(30),
        || ingester.is_ready(),
    )
    .await;
    cluster
        .wait_active_ingesters(3, Duration::from_secs(15))
        .await;
    let addr = cluster.ingester("ingester-2").grpc_addr();
    let mut client = cluster.ingester_clients().get(addr);
    let mut missing = 0;
    for (id, expected) in &before {
        let resp = client
            .find_trace_by_id(ringtail::rpc::proto::FindTraceRequest {
                tenant: "single-tenant".into(),
                trace_id: hex::decode(id).expect("hex").into(),
            })
            .await
            .expect("lookup")
            .into_inner();
        use prost::Message;
        let data = opentelemetry_proto::tonic::trace::v1::TracesData::decode(resp.resource_spans)
            .expect("decodes");
        if ringtail::span_count(&data) != *expected {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "traces the restarted ingester lost");
    // And the cluster still serves everything acked.
    let bad = incomplete_traces(&query, &before).await;
    assert!(bad.is_empty(), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_ingesters_killed_pushes_fail_with_unavailable_only() {
    let mut cluster = Cluster::start(13, 3, &[]).await;
    cluster.ingester("ingester-1").kill();
    cluster.ingester("ingester-3").kill();
    // Right after the kill (dead members still in the ring) and after SWIM removed them.
    let query = cluster.front.http();
    for phase in ["before detection", "after detection"] {
        let resp = reqwest::get(format!(
            "{query}/api/traces/0af7651916cd43dd8448eb211c80319c"
        ))
        .await
        .expect("get");
        assert_eq!(resp.status(), 503, "{phase}: reads need 2 answers");
        let body = resp.text().await.expect("body");
        assert!(
            body.contains("quorum") || body.contains("not enough ingesters"),
            "{phase}: {body}"
        );
        let (_, out) = bench(&[
            format!("--endpoint={}", cluster.front.otlp_grpc()),
            "--requests=20".into(),
            "--batch-spans=100".into(),
        ]);
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("errors:")).collect();
        assert_eq!(errors, vec!["errors: Unavailable: 20"], "{phase}:\n{out}");
        if phase == "before detection" {
            cluster
                .wait_active_ingesters(1, Duration::from_secs(15))
                .await;
        }
    }
    // The HTTP receiver says 503 with the reason and Retry-After.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/json")
        .body(valid_json_request("0af7651916cd43dd8448eb211c80319c"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.expect("body");
    assert!(body.contains("not enough ingesters: 1 ACTIVE"), "{body}");

    // The OpenTelemetry Python exporter retries UNAVAILABLE: its batches land once the
    // ingesters are back, and every span it exported reads back complete.
    let errors_before = pushes_failed_unavailable(&cluster).await;
    let python = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/export_and_verify.py"
        ))
        .args(["--endpoint", &cluster.front.otlp_grpc_addr()])
        .args(["--query-url", &cluster.front.http()])
        .args([
            "--traces",
            "100",
            "--spans-per-trace",
            "5",
            "--export-timeout",
            "40",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python exporter");
    wait_until(
        "the exporter's first pushes to fail",
        Duration::from_secs(20),
        || {
            let cluster = &cluster;
            async move { pushes_failed_unavailable(cluster).await > errors_before }
        },
    )
    .await;
    cluster.ingester("ingester-1").restart();
    cluster.ingester("ingester-3").restart();
    cluster.wait_ready().await;
    let out = tokio::task::spawn_blocking(move || python.wait_with_output())
        .await
        .expect("join")
        .expect("python output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "retried batches must land:\n{text}");
    assert!(text.contains("verified 100 complete"), "{text}");
}

/// `ringtail_distributor_push_errors_total{reason=...}` for quorum failures, from /metrics.
async fn pushes_failed_unavailable(cluster: &Cluster) -> u64 {
    get_text(format!("{}/metrics", cluster.front.http()))
        .await
        .lines()
        .filter(|l| l.starts_with("ringtail_distributor_push_errors_total"))
        .filter(|l| l.contains("quorum_failed") || l.contains("not_enough_ingesters"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn valid_json_request(trace_id: &str) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"curl"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"manual"}},"spans":[{{"traceId":"{trace_id}","spanId":"eee19b7ec3c1b174",
        "name":"op","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000"}}]}}]}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_loses_nothing_already_accepted() {
    let cluster = Cluster::start(14, 3, &["--max-recv-msg-size-bytes=65536"]).await;
    let http = reqwest::Client::new();
    let traces = format!("{}/v1/traces", cluster.front.otlp_http());
    let query = cluster.front.http();

    // Something accepted first.
    let good = "5b8efff798038103d269b633813fc60c";
    let resp = http
        .post(&traces)
        .header("content-type", "application/json")
        .body(valid_json_request(good))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(spans_via_query(&query, good).await, Ok(1));

    let post = |ct: &'static str, body: Vec<u8>| {
        http.post(&traces)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let mut statuses = HashMap::new();
    let r = post("application/x-protobuf", vec![0xff, 0xff, 0xff, 0x01])
        .await
        .expect("post");
    statuses.insert("malformed protobuf", r.status().as_u16());
    let r = post("application/json", b"{\"resourceSpans\": [".to_vec())
        .await
        .expect("post");
    statuses.insert("malformed json", r.status().as_u16());
    let zero = valid_json_request(&"0".repeat(32));
    let r = post("application/json", zero.into_bytes())
        .await
        .expect("post");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("trace ID"), "{body}");
    statuses.insert("zero trace id", status);
    let short = valid_json_request("0af7651916cd43dd");
    let r = post("application/json", short.into_bytes())
        .await
        .expect("post");
    statuses.insert("8-byte trace id", r.status().as_u16());
    let r = post("application/x-protobuf", vec![]).await.expect("post");
    statuses.insert("empty request (valid OTLP)", r.status().as_u16());
    let r = post("application/x-protobuf", vec![0x0a; 100_000])
        .await
        .expect("post");
    statuses.insert("above max_recv_msg_size", r.status().as_u16());
    let r = post("text/plain", b"hello".to_vec()).await.expect("post");
    statuses.insert("unsupported content type", r.status().as_u16());
    let expected = HashMap::from([
        ("malformed protobuf", 400),
        ("malformed json", 400),
        ("zero trace id", 400),
        ("8-byte trace id", 400),
        ("empty request (valid OTLP)", 200),
        ("above max_recv_msg_size", 413),
        ("unsupported content type", 415),
    ]);
    assert_eq!(statuses, expected);

    // A request with one valid and one invalid span: partial success, the valid one stored.
    let mixed = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"11111111111111111111111111111111","spanId":"0000000000000000","name":"bad"},
        {"traceId":"22222222222222222222222222222222","spanId":"1111111111111111","name":"good"}]}]}]}"#
        .to_owned();
    let r = post("application/json", mixed.into_bytes())
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["partialSuccess"]["rejectedSpans"], 1, "{body}");
    assert_eq!(
        spans_via_query(&query, "22222222222222222222222222222222").await,
        Ok(1)
    );

    // gRPC: oversized → RESOURCE_EXHAUSTED; garbage → INVALID_ARGUMENT.
    let mut client = common::otlp_grpc_client(&cluster.front).await;
    let big = client
        .export(ringtail::rpc::codec::RawBytes(vec![0x0a; 100_000].into()))
        .await
        .expect_err("too large");
    assert_eq!(big.code(), tonic::Code::ResourceExhausted, "{big:?}");
    let garbage = client
        .export(ringtail::rpc::codec::RawBytes(
            vec![0xff, 0xff, 0xff].into(),
        ))
        .await
        .expect_err("malformed");
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");

    // Query API: malformed ID → 400, unknown → 404.
    let r = http
        .get(format!("{query}/api/traces/not-hex"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{query}/api/traces/{}", "ab".repeat(16)))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);

    // gzip-compressed OTLP/HTTP is accepted.
    let gz_id = "33333333333333333333333333333333";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, valid_json_request(gz_id).as_bytes()).expect("gzip");
    let r = http
        .post(&traces)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(spans_via_query(&query, gz_id).await, Ok(1));

    // The admin API reports what happened.
    let metrics = get_text(format!("{query}/metrics")).await;
    for name in [
        "ringtail_distributor_spans_received_total",
        "ringtail_distributor_spans_rejected_total{reason=\"invalid_trace_id\"}",
        "ringtail_distributor_push_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // Members by state: a gauge that follows gossip. On a saturated machine a member can be
    // declared down for a moment, and is then ACTIVE again under a new generation.
    let members_by_state = || async {
        get_text(format!("{query}/metrics"))
            .await
            .lines()
            .filter(|l| l.starts_with("ringtail_membership_members{"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lines = members_by_state().await;
        if lines.contains("ringtail_membership_members{state=\"ACTIVE\"} 4") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 4 ACTIVE members in /metrics after 30 s:\n{lines}\n{}",
            http.get(format!("{query}/ring"))
                .header("accept", "application/json")
                .send()
                .await
                .expect("get /ring")
                .text()
                .await
                .expect("/ring body")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingester_metrics = get_text(format!("{}/metrics", cluster.ingesters[0].http())).await;
    assert!(
        ingester_metrics.contains("ringtail_ingester_wal_bytes_total"),
        "{ingester_metrics}"
    );
    assert!(
        ingester_metrics.contains("ringtail_ingester_live_traces"),
        "{ingester_metrics}"
    );
    let ring = get_text(format!("{query}/ring")).await;
    for name in ["front", "ingester-1", "ingester-2", "ingester-3", "ACTIVE"] {
        assert!(ring.contains(name), "/ring lacks {name}: {ring}");
    }
    for path in ["/status/buildinfo", "/api/status/buildinfo"] {
        let info: serde_json::Value = http
            .get(format!("{query}{path}"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"), "{path}");
        // Built from this checkout: git's revision, and when.
        assert_eq!(
            info["revision"].as_str().map(str::len),
            Some(12),
            "{path}: {info}"
        );
        assert!(
            info["buildDate"].as_str().is_some_and(|d| d.ends_with('Z')),
            "{path}: {info}"
        );
    }
    let echo = get_text(format!("{query}/api/echo")).await;
    assert_eq!(echo, "echo");

    // Still serving, nothing lost.
    assert!(cluster.front.is_ready().await);
    assert_eq!(spans_via_query(&query, good).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn multitenancy_requires_a_valid_tenant_header_and_isolates_tenants() {
    let cluster = Cluster::start(15, 3, &["--multitenancy-enabled=true"]).await;
    let http = reqwest::Client::new();
    let traces = format!("{}/v1/traces", cluster.front.otlp_http());
    let id = "0af7651916cd43dd8448eb211c80319c";
    let send = |tenant: Option<&'static str>| {
        let mut req = http
            .post(&traces)
            .header("content-type", "application/json")
            .body(valid_json_request(id));
        if let Some(t) = tenant {
            req = req.header("x-scope-orgid", t);
        }
        req.send()
    };
    assert_eq!(send(None).await.expect("post").status(), 401);
    assert_eq!(send(Some("a/b")).await.expect("post").status(), 400);
    assert_eq!(send(Some("team-a")).await.expect("post").status(), 200);
    let get = |tenant: &'static str| {
        http.get(format!("{}/api/traces/{id}", cluster.front.http()))
            .header("x-scope-orgid", tenant)
            .send()
    };
    let r = get("team-a").await.expect("get");
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        json["batches"][0]["scopeSpans"][0]["spans"][0]["spanId"],
        "eee19b7ec3c1b174"
    );
    assert_eq!(get("team-b").await.expect("get").status(), 404);
    let r = http
        .get(format!("{}/api/traces/{id}", cluster.front.http()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_ingestion_rate_is_told_when_to_retry_and_another_tenant_is_unaffected() {
    let cluster = Cluster::start(
        17,
        3,
        &[
            "--multitenancy-enabled=true",
            "--tenant-overrides=slow:ingestion_rate_bytes=200000",
        ],
    )
    .await;
    // What is in force, as every node reports it.
    let in_force: serde_json::Value =
        reqwest::get(format!("{}/status/overrides", cluster.front.http()))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
    assert_eq!(
        in_force["tenants"]["slow"]["ingestion_rate_bytes"], 200_000,
        "{in_force}"
    );
    assert_eq!(
        in_force["defaults"]["ingestion_rate_bytes"], 0,
        "{in_force}"
    );
    let endpoint = format!("--endpoint={}", cluster.front.otlp_grpc());
    // 40 requests of ~71 KB as fast as they go: far over 200 KB/s (burst 400 KB).
    let push_as = |tenant: &str| {
        bench(&[
            endpoint.clone(),
            "--requests=40".into(),
            format!("--tenant={tenant}"),
        ])
        .1
    };
    let slow = push_as("slow");
    assert!(slow.contains("errors: ResourceExhausted: "), "{slow}");
    let fast = push_as("fast");
    assert!(fast.contains("errors: none"), "{fast}");

    // OTLP/HTTP: 429 with Retry-After once the bucket is empty (spans with a 20 KB
    // attribute, so the requests outrun the 200 KB/s refill).
    let pad = "x".repeat(20_000);
    let padded = valid_json_request("0af7651916cd43dd8448eb211c80319c").replace(
        r#"{"key":"service.name""#,
        &format!(r#"{{"key":"pad","value":{{"stringValue":"{pad}"}}}},{{"key":"service.name""#),
    );
    let http = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..200 {
        let resp = http
            .post(format!("{}/v1/traces", cluster.front.otlp_http()))
            .header("content-type", "application/json")
            .header("x-scope-orgid", "slow")
            .body(padded.clone())
            .send()
            .await
            .expect("post");
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("a 429 once over the rate");
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.expect("body");
    assert!(body.contains("ingestion rate"), "{body}");
    assert!(
        common::metric(&cluster.front, "ringtail_distributor_spans_rejected_total").await > 0.0
    );

    // The OpenTelemetry Python exporter retries RESOURCE_EXHAUSTED after the RetryInfo
    // delay: ~1.5 MB of spans at 200 KB/s meet the limit, and everything it exports still
    // lands and reads back complete.
    let rejected = "ringtail_distributor_spans_rejected_total";
    let before = common::metric(&cluster.front, rejected).await;
    let (ok, text) = common::python_export_and_verify(
        &cluster,
        &[
            "--tenant",
            "slow",
            "--traces",
            "2000",
            "--spans-per-trace",
            "5",
            "--export-timeout",
            "60",
        ],
    );
    assert!(ok, "{text}");
    assert!(
        common::metric(&cluster.front, rejected).await > before,
        "the exporter met the limit (and retried)"
    );
}

/// `name`'s `/status/overrides` value for `tenant`'s `ingestion_rate_bytes` (`Null` when
/// the node does not answer).
async fn rate_in_force(node: &common::Node, tenant: &str) -> serde_json::Value {
    let doc: serde_json::Value =
        match reqwest::get(format!("{}/status/overrides", node.http())).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return serde_json::Value::Null,
        };
    doc["tenants"][tenant]["ingestion_rate_bytes"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overrides_file_changed_while_running_takes_effect_and_a_bad_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("overrides.yaml");
    let write = |rate: u64| {
        std::fs::write(
            &file,
            format!("overrides:\n  slow:\n    ingestion_rate_bytes: {rate}\n"),
        )
        .expect("write overrides")
    };
    write(100_000);
    let flag = format!("--overrides-file={}", file.display());
    let mut cluster = Cluster::start(18, 3, &["--multitenancy-enabled=true", &flag]).await;
    assert_eq!(rate_in_force(&cluster.front, "slow").await, 100_000);
    // Changed on disk: in force within the 10 s reload period, on every node.
    write(300_000);
    for node in [&cluster.front, &cluster.ingesters[0]] {
        wait_until(
            &format!("{} to use the new overrides", node.name),
            Duration::from_secs(20),
            || async { rate_in_force(node, "slow").await == 300_000 },
        )
        .await;
    }
    // SIGHUP re-reads at once.
    write(400_000);
    cluster.front.signal("HUP");
    wait_until(
        "the front to re-read on SIGHUP",
        Duration::from_secs(5),
        || async { rate_in_force(&cluster.front, "slow").await == 400_000 },
    )
    .await;
    // A file that does not parse is refused; the last good table stays, and the worker
    // says why.
    std::fs::write(&file, "overrides: [").expect("write");
    cluster.front.signal("HUP");
    wait_until(
        "the front to refuse the bad file",
        Duration::from_secs(5),
        || async {
            common::metric(&cluster.front, "ringtail_overrides_reload_failures_total").await > 0.0
        },
    )
    .await;
    assert_eq!(rate_in_force(&cluster.front, "slow").await, 400_000);
    let workers = get_text(format!("{}/status/workers", cluster.front.http())).await;
    assert!(
        workers.contains("overrides-reload") && workers.contains("overrides.yaml"),
        "{workers}"
    );
    assert!(cluster.front.is_running());
}

/// An OTLP request with `spans` spans of each `(trace, first span ID)`, each span carrying
/// `payload` bytes of attributes.
fn request_with(traces: &[(&str, u8)], spans: u8, payload: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::Span;
    let spans = traces
        .iter()
        .flat_map(|&(trace, first)| {
            (first..first + spans).map(move |s| Span {
                trace_id: hex::decode(trace).expect("hex"),
                span_id: vec![s; 8],
                name: format!("op-{s}"),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_001_000_000,
                attributes: vec![KeyValue {
                    key: "payload".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("x".repeat(payload))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })
        })
        .collect();
    common::export_request(spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_past_max_bytes_per_trace_are_reported_in_partial_success_and_the_rest_is_stored() {
    let cluster = Cluster::start(19, 3, &["--max-bytes-per-trace=4000"]).await;
    let query = cluster.front.http();
    let mut client = common::otlp_grpc_client(&cluster.front).await;
    let (big, other, late) = (
        "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
        "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
        "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
    );
    // 10 spans of ~250 bytes: each trace's first request fits in 4000 bytes.
    let first = client
        .export(ringtail::rpc::codec::RawBytes(
            request_with(&[(big, 1), (other, 1)], 10, 200).into(),
        ))
        .await
        .expect("accepted")
        .into_inner();
    assert!(
        first.partial_success.is_none_or(|p| p.rejected_spans == 0),
        "nothing over the limit yet"
    );
    // The client is acked at write quorum; the third replica's push may still be in
    // flight. Each ingester applies the limit to what it holds, so wait until all three
    // hold the first request (else the third could take the second request's spans first
    // and refuse the first's).
    for ingester in &cluster.ingesters {
        wait_until(
            "every ingester to have stored the first request",
            Duration::from_secs(10),
            || async {
                common::metric(ingester, "ringtail_ingester_push_duration_seconds_count").await
                    >= 1.0
            },
        )
        .await;
    }
    // 10 more spans of `big` would double it past the limit; `late` is new.
    let second = client
        .export(ringtail::rpc::codec::RawBytes(
            request_with(&[(big, 11), (late, 1)], 10, 200).into(),
        ))
        .await
        .expect("the rest is accepted")
        .into_inner();
    let partial = second.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 10, "{}", partial.error_message);
    assert!(
        partial
            .error_message
            .contains("max_bytes_per_trace (4000 bytes)")
            && partial.error_message.contains(big),
        "{}",
        partial.error_message
    );
    assert_eq!(spans_via_query(&query, big).await, Ok(10));
    assert_eq!(spans_via_query(&query, other).await, Ok(10));
    assert_eq!(spans_via_query(&query, late).await, Ok(10));
    assert_eq!(
        common::metric(
            &cluster.front,
            "ringtail_distributor_spans_rejected_total{reason=\"trace_too_large\"}"
        )
        .await,
        10.0
    );
}
