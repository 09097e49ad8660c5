//! Hostile and careless input, against real processes: nothing acked is lost, bad input
//! gets the right code, and whatever bytes arrive, what was stored reads back.

mod common;

use std::io::Write;

use common::{spans_via_query, Cluster};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

fn span(trace: &str, span_id: u8, name: &str) -> Span {
    Span {
        trace_id: hex::decode(trace).expect("hex"),
        span_id: vec![span_id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    }
}

/// An encoded request whose spans are `spans` (each already encoded), in one scope.
fn request_of_encoded_spans(spans: &[Vec<u8>]) -> Vec<u8> {
    let mut scope = Vec::new();
    for s in spans {
        prost::encoding::bytes::encode(2, s, &mut scope);
    }
    let mut resource = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut resource);
    let mut body = Vec::new();
    prost::encoding::bytes::encode(1, &resource, &mut body);
    body
}

/// The issue's probe: a span of `trace` with valid IDs whose `name` (field 5) is
/// `0x2a 0x02 0xff 0xfe`, bytes that are not UTF-8.
fn malformed_span(trace: &str, span_id: u8) -> Vec<u8> {
    let mut bytes = Span {
        trace_id: hex::decode(trace).expect("hex"),
        span_id: vec![span_id; 8],
        ..Default::default()
    }
    .encode_to_vec();
    bytes.extend([0x2a, 0x02, 0xff, 0xfe]);
    bytes
}

async fn get_v2(cluster: &Cluster, trace: &str) -> serde_json::Value {
    reqwest::get(format!("{}/api/v2/traces/{trace}", cluster.front.http()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_span_is_rejected_alone_and_the_trace_it_claims_stays_readable() {
    let cluster = Cluster::start(41, 3, &[]).await;
    let query = cluster.front.http();
    let t = "5b8efff798038103d269b633813fc60c";
    let other = "6c9f000000000000000000000000000a";

    // A good span of T, acked first.
    let good = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(t, 1, "good")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, _) = common::post_protobuf(&cluster.front, good.encode_to_vec()).await;
    assert_eq!(status, 200);

    // Then a request with a malformed span of T next to a good span of another trace.
    let body =
        request_of_encoded_spans(&[malformed_span(t, 2), span(other, 3, "fine").encode_to_vec()]);
    let (status, resp) = common::post_protobuf(&cluster.front, body).await;
    assert_eq!(status, 200, "the valid span is accepted");
    let resp =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
            &resp[..],
        )
        .expect("an OTLP response");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("Span.name") && partial.error_message.contains("UTF-8"),
        "{}",
        partial.error_message
    );

    // Only malformed spans: 400 with the reason, nothing stored.
    let (status, resp) = common::post_protobuf(
        &cluster.front,
        request_of_encoded_spans(&[malformed_span(t, 4)]),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&resp).contains("not valid OTLP"));

    // T reads back with its acked span, complete; the other trace too, also after a flush.
    assert_eq!(spans_via_query(&query, t).await, Ok(1));
    assert_eq!(spans_via_query(&query, other).await, Ok(1));
    assert_eq!(get_v2(&cluster, t).await["status"], "COMPLETE");
    for ingester in &cluster.ingesters {
        common::flush(ingester).await;
    }
    assert_eq!(spans_via_query(&query, t).await, Ok(1));
    let metrics = common::get_text(format!("{query}/metrics")).await;
    assert!(
        metrics.contains("ringtail_distributor_spans_rejected_total{reason=\"malformed_span\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_record_that_does_not_decode_costs_only_itself_and_the_answer_says_partial() {
    let cluster = Cluster::start(42, 3, &[]).await;
    let query = cluster.front.http();
    let t = "7d0a1b2c3d4e5f60718293a4b5c6d7e8";
    let good = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(t, 1, "a"), span(t, 2, "b")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, _) = common::post_protobuf(&cluster.front, good.encode_to_vec()).await;
    assert_eq!(status, 200);

    // A record that does not decode, in a block of the object store (as an older version
    // or a disk fault could have left it; every write path now refuses such a record).
    let mut record = Vec::new();
    let scope = {
        let mut s = Vec::new();
        prost::encoding::bytes::encode(2, &malformed_span(t, 3), &mut s);
        s
    };
    let mut rs = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut rs);
    prost::encoding::bytes::encode(1, &rs, &mut record);
    assert!(TracesData::decode(&record[..]).is_err());
    let id = ringtail::model::TraceId::from_bytes(&hex::decode(t).expect("hex")).expect("id");
    let block = ringtail::storage::block::encode(
        vec![ringtail::storage::block::BlockTrace {
            id,
            data: record.into(),
        }],
        ringtail::storage::block::BlockInfo {
            tenant: "single-tenant".into(),
            block_id: "0badb10c0000000000000000000000aa".into(),
            ingester: "an-older-version".into(),
            start_unix_nano: 1,
            end_unix_nano: 2,
            created_unix_secs: 1,
        },
    )
    .expect("block");
    ringtail::storage::BlockStore::local(&cluster.dir.path().join("blocks"))
        .expect("store")
        .upload(&block)
        .await
        .expect("upload");
    common::wait_until(
        "the querier to read the block's record and say the answer is partial",
        std::time::Duration::from_secs(20),
        || async { get_v2(&cluster, t).await["status"] == "PARTIAL" },
    )
    .await;

    assert_eq!(
        spans_via_query(&query, t).await,
        Ok(2),
        "the good spans are kept"
    );
    let v2 = get_v2(&cluster, t).await;
    assert_eq!(v2["status"], "PARTIAL", "{v2}");
    assert!(v2["message"]
        .as_str()
        .is_some_and(|m| m.contains("could not be decoded")));
    let r = reqwest::get(format!("{query}/api/traces/{t}"))
        .await
        .expect("get");
    assert!(r.headers().contains_key("x-ringtail-partial"));
    let metrics = common::get_text(format!("{query}/metrics")).await;
    assert!(
        metrics.contains("ringtail_querier_unreadable_records_total"),
        "{metrics}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_member_of_a_gzip_body_is_stored_and_trailing_garbage_is_a_400() {
    let cluster = Cluster::start(43, 3, &[]).await;
    let a = "1a000000000000000000000000000001";
    let b = "1b000000000000000000000000000002";
    // Two members: the request's bytes split in two, each compressed on its own. A
    // protobuf message may be cut anywhere; concatenated they are the whole request.
    let body = request_of_encoded_spans(&[
        span(a, 1, "first").encode_to_vec(),
        span(b, 2, "second").encode_to_vec(),
    ]);
    let (head, tail) = body.split_at(body.len() / 2);
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(format!("{}/v1/traces", cluster.front.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
    };
    let r = post([gzip(head), gzip(tail)].concat()).await.expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(spans_via_query(&cluster.front.http(), a).await, Ok(1));
    assert_eq!(spans_via_query(&cluster.front.http(), b).await, Ok(1));

    let c = "1c000000000000000000000000000003";
    let one = request_of_encoded_spans(&[span(c, 3, "third").encode_to_vec()]);
    let r = post([gzip(&one), b"garbage after the member".to_vec()].concat())
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(spans_via_query(&cluster.front.http(), c).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused_for_good_with_a_status_in_the_requests_format() {
    let cluster = Cluster::start(44, 3, &["--max-recv-msg-size-bytes=65536"]).await;

    // gRPC, above tonic's own limit (4 × ours): RESOURCE_EXHAUSTED, not OUT_OF_RANGE
    // (which exporters retry forever).
    let mut client = common::otlp_grpc_client(&cluster.front).await;
    for size in [100_000, 1_000_000] {
        let err = client
            .export(ringtail::rpc::codec::RawBytes(vec![0x0a; size].into()))
            .await
            .expect_err("too large");
        assert_eq!(
            err.code(),
            tonic::Code::ResourceExhausted,
            "{size} bytes: {err:?}"
        );
    }

    // HTTP, above the body limit: 413 with a google.rpc.Status in the request's format.
    let http = reqwest::Client::new();
    let post = |ct: &'static str| {
        http.post(format!("{}/v1/traces", cluster.front.otlp_http()))
            .header("content-type", ct)
            .body(vec![b' '; 100_000])
            .send()
    };
    let r = post("application/json").await.expect("post");
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/json");
    let status: serde_json::Value = r.json().await.expect("a JSON google.rpc.Status");
    assert_eq!(status["code"], tonic::Code::ResourceExhausted as i32);
    assert!(status["message"]
        .as_str()
        .is_some_and(|m| m.contains("65536")));
    let r = post("application/x-protobuf").await.expect("post");
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let status = ringtail::rpc::proto::RpcStatus::decode(r.bytes().await.expect("body"))
        .expect("a protobuf google.rpc.Status");
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
    assert!(cluster.front.is_ready().await);
}

async fn post_admin(url: String, authorization: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let r = request.send().await.expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// `DELETE /api/admin/tenants/single-tenant` on the front, without credentials.
async fn delete_tenant(cluster: &Cluster) -> u16 {
    reqwest::Client::new()
        .delete(format!(
            "{}/api/admin/tenants/single-tenant",
            cluster.front.http()
        ))
        .send()
        .await
        .expect("delete")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_need_the_admin_token_when_one_is_set() {
    let mut cluster = Cluster::start(45, 3, &["--admin-token=s3cret-token"]).await;
    let ingester = cluster.ingesters[0].http();
    for path in ["/shutdown", "/flush", "/ring/forget/ingester-2"] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic s3cret-token"),
            Some("s3cret-token"),
        ] {
            let (status, body) = post_admin(format!("{ingester}{path}"), auth).await;
            assert_eq!(status, 401, "{path} with {auth:?}: {body}");
        }
    }
    let (status, body) = post_admin(
        format!("{}/api/admin/tenants/single-tenant", cluster.front.http()),
        None,
    )
    .await;
    assert_eq!(status, 405, "DELETE only: {body}");
    assert_eq!(delete_tenant(&cluster).await, 401);
    // Nothing was stopped or forgotten.
    assert!(cluster.ingesters[0].is_running());
    cluster
        .wait_active_ingesters(3, std::time::Duration::from_secs(5))
        .await;

    // The right token, the scheme in any case.
    let (status, _) = post_admin(format!("{ingester}/flush"), Some("bearer s3cret-token")).await;
    assert_eq!(status, 200);

    // `ringtail shutdown` reads the token from the environment, as the chart's preStop does.
    let out = std::process::Command::new(common::BIN)
        .args(["shutdown", "--url", &format!("{ingester}/shutdown")])
        .env("RINGTAIL_ADMIN_TOKEN", "s3cret-token")
        .output()
        .expect("ringtail shutdown");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let node = &mut cluster.ingesters[0];
    common::wait_until(
        "ingester-1 to exit",
        std::time::Duration::from_secs(30),
        || {
            let running = node.is_running();
            async move { !running }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_admin_calls_from_a_page_of_another_origin_are_refused() {
    let cluster = Cluster::start(46, 3, &[]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/shutdown", cluster.ingesters[0].http()))
        .header("origin", "https://attacker.example")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(
        delete_tenant(&cluster).await,
        403,
        "tenant deletion is off without a token"
    );
    // From loopback, without an Origin (curl, `ringtail shutdown`): accepted.
    let (status, _) = post_admin(format!("{}/flush", cluster.ingesters[0].http()), None).await;
    assert_eq!(status, 200);
    cluster
        .wait_active_ingesters(3, std::time::Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_name_with_markup_is_escaped_on_the_ring_page() {
    let cluster = Cluster::start(47, 3, &[]).await;
    let evil = r#"q" onmouseover="alert(1)"><img src=x onerror=alert(2)>"#;
    let _extra = cluster.spawn_extra(evil, 50, "querier").await;
    let url = format!("{}/ring", cluster.front.http());
    common::wait_until(
        "the front to list the extra member",
        std::time::Duration::from_secs(30),
        || {
            let url = url.clone();
            async move { common::get_text(url).await.contains("onerror=alert(2)") }
        },
    )
    .await;
    let page = common::get_text(url).await;
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains(r#"" onmouseover="#), "{page}");
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    assert!(page.contains("&quot; onmouseover=&quot;"), "{page}");
}

async fn read_as(cluster: &Cluster, tenant: &str, trace: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/api/traces/{trace}", cluster.front.http()))
        .header("x-scope-orgid", tenant)
        .send()
        .await
        .expect("get")
        .status()
        .as_u16()
}

/// Pushes one span of `trace` as `tenant` over OTLP/HTTP; returns the status.
async fn push_as(cluster: &Cluster, tenant: &str, trace: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .header("x-scope-orgid", tenant)
        .body(request_of_encoded_spans(&[
            span(trace, 1, "op").encode_to_vec()
        ]))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_named_star_flushes_its_blocks_and_blocks_no_other_tenant() {
    let mut cluster = Cluster::start(48, 3, &["--multitenancy-enabled=true"]).await;
    let traces = [
        ("*", "2a000000000000000000000000000001"),
        ("team-a", "2b000000000000000000000000000002"),
    ];
    for (tenant, trace) in traces {
        assert_eq!(push_as(&cluster, tenant, trace).await, 200, "{tenant}");
    }
    for ingester in &cluster.ingesters {
        let stats = common::flush(ingester).await;
        assert_eq!(stats["flush_failures"], 0, "{}: {stats}", ingester.name);
        assert_eq!(stats["blocks_pending"], 0, "{}: {stats}", ingester.name);
    }
    // Only the object store holds them now: every ingester lost its WAL and local blocks.
    let dir = cluster.dir.path().to_owned();
    for i in 0..cluster.ingesters.len() {
        cluster.ingesters[i].restart_empty(&dir);
    }
    cluster.wait_ready().await;
    for (tenant, trace) in traces {
        let c = &cluster;
        common::wait_until(
            &format!("tenant {tenant}'s trace to read back from the store"),
            std::time::Duration::from_secs(20),
            || async move { read_as(c, tenant, trace).await == 200 },
        )
        .await;
    }
    // Each tenant sees only its own.
    assert_eq!(read_as(&cluster, "team-a", traces[0].1).await, 404);
    assert_eq!(read_as(&cluster, "*", traces[1].1).await, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_that_never_uploads_is_quarantined_and_holds_up_no_other_block() {
    let mut cluster = Cluster::start(
        49,
        3,
        &["--multitenancy-enabled=true", "--shutdown-timeout-ms=60000"],
    )
    .await;
    // The store cannot take this tenant's objects: a file stands where its folder goes.
    let store = cluster.dir.path().join("blocks");
    std::fs::create_dir_all(&store).expect("store dir");
    std::fs::write(store.join("poisoned"), b"not a folder").expect("blocker");
    // The poisoned tenant's block is the older one, so it is first in the flush queue.
    let traces = [
        ("poisoned", "2c000000000000000000000000000001"),
        ("team-b", "2d000000000000000000000000000002"),
    ];
    for (tenant, trace) in traces {
        assert_eq!(push_as(&cluster, tenant, trace).await, 200, "{tenant}");
    }
    // Each ingester's flush (and its own background rounds) gets the other tenant's block
    // past the poisoned one, which stays pending until its strikes are counted.
    for ingester in &cluster.ingesters {
        common::flush(ingester).await;
    }
    let store_ref = &store;
    common::wait_until(
        "every replica's block of the other tenant in the store",
        std::time::Duration::from_secs(20),
        || async move { common::visible_blocks(store_ref, "team-b").len() == 3 },
    )
    .await;
    // Rounds go on while the store works; the block that always fails leaves the queue.
    for ingester in &cluster.ingesters {
        common::wait_until(
            &format!("{} to quarantine the poisoned block", ingester.name),
            std::time::Duration::from_secs(20),
            || async move {
                let stats = common::flush(ingester).await;
                stats["blocks_pending"] == 0 && stats["blocks_quarantined"] == 1
            },
        )
        .await;
        assert_eq!(
            common::metric(ingester, "ringtail_ingester_blocks_quarantined_total").await,
            1.0
        );
        let folder = cluster
            .dir
            .path()
            .join(&ingester.name)
            .join("complete")
            .join("poisoned");
        let marker = std::fs::read_dir(&folder)
            .expect("the quarantined block stays on local disk")
            .flatten()
            .map(|e| e.path().join("quarantined"))
            .find(|m| m.exists())
            .expect("a quarantine marker");
        let why = std::fs::read_to_string(marker).expect("marker");
        assert!(!why.is_empty(), "the marker says why");
    }
    // Nothing acked is lost: the quarantined blocks still answer reads.
    assert_eq!(read_as(&cluster, "poisoned", traces[0].1).await, 200);
    // It stays quarantined across a restart, and a shutdown does not wait for it.
    cluster.ingesters[0].restart();
    cluster.wait_ready().await;
    let stats = common::flush(&cluster.ingesters[0]).await;
    assert_eq!(stats["blocks_pending"], 0, "{stats}");
    assert_eq!(stats["blocks_quarantined"], 1, "{stats}");
    assert_eq!(
        cluster.ingesters[1].signal_and_wait("TERM", std::time::Duration::from_secs(30)),
        Some(0),
        "a graceful shutdown finishes without waiting for the quarantined block"
    );
}

/// A `ResourceSpans` with attributes at every level, for the mutation test to damage.
fn victim_resource_spans(seed: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let trace = format!("77{seed:030x}");
    let mut spans: Vec<Span> = (1..=3).map(|i| span(&trace, i, "victim")).collect();
    for s in &mut spans {
        s.attributes = vec![kv("http.route", "/items/{id}"), kv("peer", "10.0.0.1")];
    }
    ResourceSpans {
        resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: vec![kv("service.name", "victim")],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_requests_never_cost_a_valid_span_sent_alongside() {
    use rand::{RngExt, SeedableRng};
    let cluster = Cluster::start(53, 3, &[]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(53);
    let (mut accepted, mut with_rejections, mut refused) = (Vec::new(), 0, 0);
    for i in 0..300u64 {
        let valid = format!("53{:030x}", i + 1);
        let good = ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(&valid, 1, "kept")],
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        // Damage the second record inside its own bytes: its length prefix stays right,
        // so what breaks is a resource, a scope, a span or the record's inner framing.
        let mut victim = victim_resource_spans(i);
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..victim.len());
            match rng.random_range(0..3) {
                0 => victim[at] = rng.random(),
                1 => victim[at] ^= 1 << rng.random_range(0..8),
                _ => victim[at] = 0xff,
            }
        }
        let mut body = Vec::new();
        prost::encoding::bytes::encode(1, &good, &mut body);
        prost::encoding::bytes::encode(1, &victim, &mut body);
        let (status, reply) = common::post_protobuf(&cluster.front, body).await;
        match status {
            200 => {
                let reply = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(&reply[..])
                    .expect("an OTLP response");
                if reply.partial_success.is_some_and(|p| p.rejected_spans > 0) {
                    with_rejections += 1;
                }
                accepted.push(valid);
            }
            400 => refused += 1,
            other => panic!(
                "request {i}: status {other}, {}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    // Both outcomes occur with this seed, so both paths were exercised.
    assert!(with_rejections > 20, "{with_rejections} partial successes");
    assert!(refused > 0, "no request was refused");
    let query = cluster.front.http();
    for trace in &accepted {
        assert_eq!(
            spans_via_query(&query, trace).await,
            Ok(1),
            "the valid span of {trace} was acked and must read back"
        );
    }
    assert!(cluster.front.is_ready().await);
}
