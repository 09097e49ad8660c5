//! Search end to end: traces exported by the OpenTelemetry Python SDK
//! (tests/python/search_dataset.py), found through Tempo's search and tag APIs from live
//! data, from the ingesters' blocks, and from the object store after every ingester lost
//! everything; tenants isolated; bad queries refused with 400.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{flush, metric, python, wait_until, Cluster};
use serde_json::Value;

const A: &str = "tenant-a";
const B: &str = "tenant-b";
/// A tenant whose tag answers are capped at 12 bytes (`max_bytes_per_tag_values_query`).
const CAPPED: &str = "tenant-capped";

/// Exports the dataset (or, with `other`, tenant B's one trace); returns label → trace ID.
fn export(cluster: &Cluster, tenant: &str, other: bool) -> BTreeMap<String, String> {
    let out = cluster.dir.path().join(format!("dataset-{tenant}.txt"));
    let mut cmd = Command::new(python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/search_dataset.py"
    ))
    .args(["--endpoint", &cluster.front.otlp_grpc_addr()])
    .args(["--tenant", tenant])
    .arg("--out")
    .arg(&out);
    if other {
        cmd.arg("--other");
    }
    let run = cmd.output().expect("run the Python exporter");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(&out)
        .expect("dataset record")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(label, id)| (label.to_owned(), id.to_owned()))
        .collect()
}

/// GETs `path` of the query API at `front` (its base URL) as `tenant`.
async fn get(front: &str, tenant: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let r = get_response(front, tenant, path, params).await;
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn get_response(
    front: &str,
    tenant: &str,
    path: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{front}{path}"))
        .header("X-Scope-OrgID", tenant)
        .query(params)
        .send()
        .await
        .expect("request")
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The labels of the traces a search returns.
async fn search(
    front: &str,
    tenant: &str,
    labels: &BTreeMap<String, String>,
    params: &[(&str, &str)],
) -> Vec<String> {
    let (status, body) = get(front, tenant, "/api/search", params).await;
    assert_eq!(status, 200, "{params:?}: {body}");
    let by_id: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(l, id)| (id.as_str(), l.as_str()))
        .collect();
    json(&body)["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| {
            let id = t["traceID"].as_str().expect("traceID");
            by_id
                .get(id)
                .map_or(format!("unknown {id}"), |l| (*l).to_owned())
        })
        .collect()
}

fn set(labels: &[String]) -> BTreeSet<String> {
    labels.iter().cloned().collect()
}

/// Every query and the traces it must find (T1..T7, see search_dataset.py).
const QUERIES: &[(&str, &[&str])] = &[
    ("{}", &["T1", "T2", "T3", "T4", "T5", "T6", "T7"]),
    (
        r#"{ resource.service.name = "checkout" }"#,
        &["T1", "T2", "T3"],
    ),
    (
        r#"{ resource.service.name = "checkout" && duration > 200ms }"#,
        &["T1"],
    ),
    ("{ span.http.response.status_code >= 500 }", &["T3"]),
    ("{ status = error }", &["T3"]),
    ("{ status = ok }", &["T2"]),
    ("{ kind = consumer }", &["T7"]),
    ("{ kind = producer }", &["T7"]),
    (r#"{ name = "GET /cart" }"#, &["T4"]),
    (r#"{ name =~ "GET /.*" }"#, &["T4", "T5", "T6"]),
    (r#"{ name !~ "GET .*|POST .*" }"#, &["T1", "T3", "T4", "T7"]),
    (r#"{ trace:rootService = "frontend" }"#, &["T4", "T6"]),
    (r#"{ resource.service.name = "cart" }"#, &["T4", "T5"]),
    (
        r#"{ resource.service.name = "cart" && trace:rootService = "frontend" }"#,
        &["T4"],
    ),
    ("{ trace:duration > 1s }", &["T7"]),
    (
        r#"{ trace:rootName = "POST /checkout" }"#,
        &["T1", "T2", "T3"],
    ),
    (r#"{ .db.system = "postgresql" }"#, &["T1"]),
    (r#"{ .service.name = "worker" }"#, &["T7"]),
    ("{ span.retry = true }", &["T5"]),
    ("{ span.ratio > 0.5 && span.count = 3 }", &["T5"]),
    ("{ span.count >= 3.0 }", &["T5"]),
    (r#"{ statusMessage = "card declined" }"#, &["T3"]),
    (
        r#"{ resource.service.name = "checkout" } && { status = error }"#,
        &["T3"],
    ),
    (
        r#"{ resource.service.name = "cart" } || { kind = consumer }"#,
        &["T4", "T5", "T7"],
    ),
    (
        r#"{ span.http.request.method = "GET" && span.http.response.status_code = 404 }"#,
        &["T6"],
    ),
    ("{ .payment.provider != nil }", &["T3"]),
    ("{ duration < 6ms && kind = server }", &["T6"]),
    (
        r#"{ resource.service.name = "checkout" && duration >= 100ms && duration <= 120ms }"#,
        &["T1", "T3"],
    ),
    (
        r#"{ resource.service.name = "checkout" } && { resource.service.name = "cart" }"#,
        &[],
    ),
    (
        r#"{ (name = "GET /cart" || name = "enqueue") && kind != server }"#,
        &["T7"],
    ),
    // Nothing matches: a block's pages are skipped by their terms and duration ranges.
    (r#"{ resource.service.name = "nowhere" }"#, &[]),
    (r#"{ name = "no such span" || duration > 1h }"#, &[]),
];

/// Runs every query of [`QUERIES`] (with `extra` parameters) and the legacy form.
async fn assert_queries(
    front: &str,
    labels: &BTreeMap<String, String>,
    extra: &[(&str, &str)],
    phase: &str,
) {
    for (q, want) in QUERIES {
        let mut params = vec![("q", *q), ("limit", "100")];
        params.extend_from_slice(extra);
        let got = set(&search(front, A, labels, &params).await);
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want, "{phase}: {q}");
    }
    let mut legacy = vec![("tags", "service.name=checkout"), ("minDuration", "250ms")];
    legacy.extend_from_slice(extra);
    assert_eq!(
        search(front, A, labels, &legacy).await,
        ["T1"],
        "{phase}: legacy tags"
    );
    let mut legacy = vec![("tags", "http.request.method=GET"), ("maxDuration", "50ms")];
    legacy.extend_from_slice(extra);
    assert_eq!(
        search(front, A, labels, &legacy).await,
        ["T6"],
        "{phase}: legacy tags"
    );
}

fn range_params(start: u64, end: u64) -> [(String, String); 2] {
    [
        ("start".into(), start.to_string()),
        ("end".into(), end.to_string()),
    ]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn traceql_finds_exactly_the_matching_traces_in_live_data_blocks_and_the_store() {
    let overrides = format!("--tenant-overrides={CAPPED}:max_bytes_per_tag_values_query=12");
    let mut cluster = Cluster::start(58, 3, &["--multitenancy-enabled=true", &overrides]).await;
    let front = cluster.front.http();
    let started = unix_now() - 30;
    let labels = export(&cluster, A, false);
    let other = export(&cluster, B, true);
    export(&cluster, CAPPED, false);
    assert_eq!(labels.len(), 7);
    wait_until(
        "every exported trace to be searchable",
        Duration::from_secs(20),
        || async {
            search(&front, A, &labels, &[("q", "{}"), ("limit", "100")])
                .await
                .len()
                == 7
        },
    )
    .await;

    // Live data, no time range (recent data) and with one.
    assert_queries(&front, &labels, &[], "live").await;
    let range = range_params(started, unix_now() + 30);
    let range: Vec<(&str, &str)> = range
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_queries(&front, &labels, &range, "live, with start and end").await;

    // A range that misses every trace finds nothing.
    let miss = range_params(started - 3600, started - 1800);
    let miss: Vec<(&str, &str)> = miss.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut params = vec![("q", "{}")];
    params.extend_from_slice(&miss);
    assert!(search(&front, A, &labels, &params).await.is_empty());

    // limit: the most recent first (T7 started last); spss bounds each span set.
    assert_eq!(
        search(&front, A, &labels, &[("q", "{}"), ("limit", "3")]).await,
        ["T7", "T6", "T5"]
    );
    let (_, body) = get(
        &front,
        A,
        "/api/search",
        &[
            ("q", r#"{ resource.service.name = "checkout" }"#),
            ("spss", "1"),
        ],
    )
    .await;
    let body = json(&body);
    let t1 = body["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .find(|t| t["traceID"] == labels["T1"].as_str())
        .expect("T1");
    assert_eq!(t1["rootServiceName"], "checkout");
    assert_eq!(t1["rootTraceName"], "POST /checkout");
    assert_eq!(t1["durationMs"], 300);
    assert_eq!(t1["spanSets"][0]["matched"], 2);
    assert_eq!(t1["spanSets"][0]["spans"].as_array().map(Vec::len), Some(1));
    assert_eq!(t1["serviceStats"]["checkout"]["spanCount"], 2);
    assert!(
        body["metrics"]["inspectedTraces"]
            .as_u64()
            .is_some_and(|n| n >= 7),
        "{body}"
    );

    // Tenants: B sees only its trace and tag names, A none of B's.
    assert_eq!(search(&front, B, &other, &[("q", "{}")]).await, ["O1"]);
    assert!(search(
        &front,
        A,
        &labels,
        &[("q", r#"{ resource.service.name = "other-svc" }"#)]
    )
    .await
    .is_empty());
    assert_tags(&front, &[]).await;
    assert_tempo_contract(&front);

    // Blocks: cut and flush everything; the ingesters search their local blocks.
    for ingester in &cluster.ingesters {
        flush(ingester).await;
    }
    assert_queries(&front, &labels, &[], "ingesters' blocks").await;
    assert_sections_read(&cluster.ingesters, "the ingesters' local blocks").await;
    assert_tags(&front, &[]).await;
    assert_tag_tables_read(&cluster.ingesters, "the ingesters' local blocks").await;

    // The store: every ingester loses everything; a range search reads the blocks.
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    assert!(
        search(&front, A, &labels, &[("q", "{}")]).await.is_empty(),
        "without a range, only the (now empty) ingesters are searched"
    );
    wait_for_listed_blocks(&front, &labels, &range).await;
    assert_queries(&front, &labels, &range, "object store").await;
    assert_sections_read(std::slice::from_ref(&cluster.front), "the store's blocks").await;
    assert_tags(&front, &range).await;
    assert_tag_tables_read(std::slice::from_ref(&cluster.front), "the store's blocks").await;
    let mut params = vec![("q", "{}")];
    params.extend_from_slice(&range);
    assert_eq!(
        search(&front, B, &other, &params).await,
        ["O1"],
        "tenants in the store"
    );
}

/// An ingester is down while traces are written, so each is acked by the other two. Each
/// replica indexes only some of its traces for search (the distributor leaves each trace
/// to two of its three), yet every query finds every trace in the two ingesters' blocks,
/// in the object store after they lost their disks, as with every replica up.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_replica_down_at_write_every_trace_is_searchable_in_the_other_two_blocks() {
    let mut cluster = Cluster::start(71, 3, &["--multitenancy-enabled=true"]).await;
    let front = cluster.front.http();
    let started = unix_now() - 30;
    cluster.ingesters[0].kill();
    let labels = export(&cluster, A, false);
    assert_eq!(labels.len(), 7);
    for ingester in &cluster.ingesters[1..] {
        flush(ingester).await;
    }
    assert_queries(&front, &labels, &[], "the two ingesters' blocks").await;

    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    let range = range_params(started, unix_now() + 30);
    let range: Vec<(&str, &str)> = range
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    wait_for_listed_blocks(&front, &labels, &range).await;
    assert_queries(
        &front,
        &labels,
        &range,
        "the two ingesters' blocks in the store",
    )
    .await;
}

/// Waits until a search over `range` (which reaches the store) finds all seven traces of
/// tenant A: the querier has listed the flushed blocks.
async fn wait_for_listed_blocks(
    front: &str,
    labels: &BTreeMap<String, String>,
    range: &[(&str, &str)],
) {
    let mut all = vec![("q", "{}"), ("limit", "100")];
    all.extend_from_slice(range);
    wait_until(
        "the querier to list the flushed blocks",
        Duration::from_secs(20),
        || async { search(front, A, labels, &all).await.len() == 7 },
    )
    .await;
}

/// Blocks were searched through their search sections (written when the ingesters cut
/// them), which let selective queries skip pages, and none failed to decode.
async fn assert_sections_read(nodes: &[common::Node], what: &str) {
    let (mut read, mut skipped, mut damaged) = (0.0, 0.0, 0.0);
    for node in nodes {
        read += metric(node, "ringtail_search_section_pages_read_total").await;
        skipped += metric(node, "ringtail_search_section_pages_skipped_total").await;
        damaged += metric(node, "ringtail_search_unreadable_sections_total").await;
    }
    assert!(read > 0.0, "{what}: no section page was read");
    assert!(skipped > 0.0, "{what}: no section page was skipped");
    assert_eq!(damaged, 0.0, "{what}: sections failed to decode");
}

/// Tag requests were answered from blocks' tag tables (no page read for them).
async fn assert_tag_tables_read(nodes: &[common::Node], what: &str) {
    let mut read = 0.0;
    for node in nodes {
        read += metric(node, "ringtail_search_section_tag_tables_read_total").await;
    }
    assert!(read > 0.0, "{what}: no tag table was read");
}

/// Tag names and values list exactly what was exported, per tenant (`extra`: parameters
/// such as a time range, for every request).
async fn assert_tags(front: &str, extra: &[(&str, &str)]) {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    };
    let (status, body) = get(front, A, "/api/v2/search/tags", extra).await;
    assert_eq!(status, 200, "{body}");
    let body = json(&body);
    let scope = |name: &str| {
        body["scopes"]
            .as_array()
            .expect("scopes")
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| strings(&s["tags"]))
            .unwrap_or_default()
    };
    assert_eq!(
        scope("resource"),
        ["deployment.environment", "service.name"]
    );
    assert_eq!(
        scope("span"),
        [
            "count",
            "db.system",
            "http.request.method",
            "http.response.status_code",
            "messaging.system",
            "payment.provider",
            "ratio",
            "retry"
        ]
    );
    assert!(scope("intrinsic").contains(&"duration".to_owned()));

    let (_, body) = get(front, A, "/api/search/tags", extra).await;
    let names = strings(&json(&body)["tagNames"]);
    assert!(names.contains(&"service.name".to_owned()) && names.contains(&"db.system".to_owned()));
    assert!(
        !names.contains(&"secret.key".to_owned()),
        "another tenant's tag: {names:?}"
    );
    let (_, body) = get(front, B, "/api/search/tags", extra).await;
    assert_eq!(
        strings(&json(&body)["tagNames"]),
        ["deployment.environment", "secret.key", "service.name"]
    );

    let values = |body: &str| -> Vec<(String, String)> {
        json(body)["tagValues"]
            .as_array()
            .expect("tagValues")
            .iter()
            .map(|v| {
                (
                    v["type"].as_str().expect("type").to_owned(),
                    v["value"].as_str().expect("value").to_owned(),
                )
            })
            .collect()
    };
    let (_, body) = get(
        front,
        A,
        "/api/v2/search/tag/resource.service.name/values",
        extra,
    )
    .await;
    let s = |v: &str| ("string".to_owned(), v.to_owned());
    assert_eq!(
        values(&body),
        [s("cart"), s("checkout"), s("frontend"), s("worker")]
    );
    let (_, body) = get(
        front,
        A,
        "/api/v2/search/tag/resource.service.name/values",
        &[extra, &[("q", "{ status = error }")]].concat(),
    )
    .await;
    assert_eq!(values(&body), [s("checkout")], "q narrows the values");
    let (_, body) = get(front, A, "/api/v2/search/tag/span.count/values", extra).await;
    assert_eq!(values(&body), [("int".to_owned(), "3".to_owned())]);
    let (_, body) = get(front, A, "/api/v2/search/tag/status/values", extra).await;
    let st = |v: &str| ("status".to_owned(), v.to_owned());
    assert_eq!(values(&body), [st("error"), st("ok"), st("unset")]);
    let (_, body) = get(front, A, "/api/search/tag/service.name/values", extra).await;
    assert_eq!(
        strings(&json(&body)["tagValues"]),
        ["cart", "checkout", "frontend", "worker"]
    );

    // The capped tenant holds the same data; its answers stop at 12 bytes and say so.
    let path = "/api/v2/search/tag/resource.service.name/values";
    let r = get_response(front, A, path, extra).await;
    assert!(r.headers().get("x-ringtail-truncated").is_none());
    let r = get_response(front, CAPPED, path, extra).await;
    assert_eq!(
        r.headers()
            .get("x-ringtail-truncated")
            .map(|v| v.as_bytes()),
        Some(&b"max_bytes_per_tag_values_query"[..])
    );
    let listed = values(&r.text().await.expect("body"));
    let bytes: usize = listed.iter().map(|(_, v)| v.len()).sum();
    assert!(!listed.is_empty() && bytes <= 12, "{listed:?}");
    let all = [s("cart"), s("checkout"), s("frontend"), s("worker")];
    assert!(listed.iter().all(|v| all.contains(v)), "{listed:?}");
    let r = get_response(front, CAPPED, "/api/v2/search/tags", extra).await;
    assert!(
        r.headers().get("x-ringtail-truncated").is_some(),
        "tag names too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_searches_are_400_with_the_reason_and_where() {
    let cluster = Cluster::start(59, 3, &[]).await;
    let front = &cluster.front.http();
    for (params, says) in [
        (vec![("q", "{ .a = }")], "col 8"),
        (vec![("q", "{ .a = 1 } | count() > 1")], "not supported"),
        (vec![("q", "{ .a = 1 } >> { .b = 2 }")], "not supported"),
        (vec![("q", r#"{ name =~ "(" }"#)], "regular expression"),
        (vec![("q", "{}"), ("limit", "0")], "limit"),
        (vec![("q", "{}"), ("limit", "x")], "limit"),
        (vec![("q", "{}"), ("start", "200"), ("end", "100")], "end"),
        (vec![("q", "{}"), ("start", "100")], "end"),
        (vec![("tags", "a=\"x"), ("q", "")], "tags"),
        (vec![("minDuration", "fast")], "minDuration"),
    ] {
        let (status, body) = get(front, "single-tenant", "/api/search", &params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        assert!(body.contains(says), "{params:?}: {body}");
    }
    let (status, body) = get(
        front,
        "single-tenant",
        "/api/v2/search/tag/nope/values",
        &[],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(front, "single-tenant", "/api/echo", &[]).await;
    assert_eq!(status, 200);
}

/// Every response decodes as Tempo's message, with unknown fields rejected
/// (tests/python/tempo_contract.py, Google's protobuf JSON parser).
fn assert_tempo_contract(front: &str) {
    let checks = [
        ("SearchResponse", "/api/search?q=%7B%7D&limit=10"),
        (
            "SearchResponse",
            "/api/search?q=%7B%20span.http.response.status_code%20%3E%3D%20500%20%7D",
        ),
        ("SearchResponse", "/api/search?tags=service.name%3Dcheckout"),
        ("SearchTagsResponse", "/api/search/tags"),
        ("SearchTagsV2Response", "/api/v2/search/tags"),
        (
            "SearchTagValuesResponse",
            "/api/search/tag/service.name/values",
        ),
        (
            "SearchTagValuesV2Response",
            "/api/v2/search/tag/resource.service.name/values",
        ),
        (
            "SearchTagValuesV2Response",
            "/api/v2/search/tag/span.count/values",
        ),
        (
            "SearchTagValuesV2Response",
            "/api/v2/search/tag/status/values",
        ),
    ];
    let mut cmd = Command::new(python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/tempo_contract.py"
    ))
    .args([front, A]);
    for (message, path) in checks {
        cmd.args([message, path]);
    }
    let run = cmd.output().expect("run the contract check");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
