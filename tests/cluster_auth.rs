//! The cluster secret with real processes: sealed gossip keeps out nodes that lack the
//! secret (or the label), internal gRPC needs the token, pushes are checked on the
//! ingester as the distributor checks them, and a secret rotates without a split.

mod common;

use std::time::Duration;

use common::{cluster_secret, spans_via_query, Cluster, Node};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use ringtail::cluster_keys::ClusterKeys;
use ringtail::rpc::auth::Credential;
use ringtail::rpc::codec::PushBody;
use ringtail::rpc::ingester_service::ingester_client::IngesterClient;
use ringtail::rpc::proto::{FindTraceRequest, PushRequest, TraceSegment};

fn span(trace: &str, id: u8) -> Span {
    Span {
        trace_id: hex::decode(trace).expect("hex"),
        span_id: vec![id; 8],
        name: format!("op-{id}"),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 2_000,
        ..Default::default()
    }
}

async fn push_otlp(cluster: &Cluster, trace: &str, spans: u8) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(common::export_request(
            (1..=spans).map(|i| span(trace, i)).collect(),
        ))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

async fn ring_json(node: &Node) -> Option<serde_json::Value> {
    reqwest::Client::new()
        .get(format!("{}/ring", node.http()))
        .header("accept", "application/json")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn member_names(ring: &serde_json::Value) -> Vec<String> {
    ring["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn refused(node: &Node, reason: &str) -> f64 {
    let text = common::get_text(format!("{}/metrics", node.http())).await;
    let series = format!("ringtail_gossip_packets_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_without_the_secret_or_label_are_never_listed_and_take_no_writes() {
    let cluster = Cluster::start(50, 3, &[]).await;
    let secret = cluster_secret(50);
    let rogues = [
        cluster.spawn_extra_unready(
            "rogue-plain",
            21,
            "ingester",
            &[("cluster-secret", None), ("insecure-cluster", Some("true"))],
        ),
        cluster.spawn_extra_unready(
            "rogue-other-secret",
            22,
            "ingester",
            &[("cluster-secret", Some("another-clusters-secret-0123"))],
        ),
        cluster.spawn_extra_unready(
            "rogue-other-label",
            23,
            "ingester",
            &[
                ("cluster-secret", Some(&secret)),
                ("cluster-label", Some("staging")),
            ],
        ),
    ];
    let members: Vec<&Node> = cluster.ingesters.iter().chain([&cluster.front]).collect();
    // The rogues announce to every seed once a second; watch every member while each
    // kind of refusal mounts up to several rounds' worth.
    let c = &cluster;
    let members_ref = &members;
    common::wait_until(
        "every member to refuse the rogues' packets for several rounds",
        Duration::from_secs(60),
        || async move {
            for m in members_ref {
                let ring = ring_json(m).await.unwrap_or_default();
                let names = member_names(&ring);
                assert!(
                    !names.iter().any(|n| n.starts_with("rogue")),
                    "{} lists a rogue: {names:?}",
                    m.name
                );
            }
            // The rogues' seeds are the ingesters.
            let mut enough = true;
            for reason in ["unsealed", "auth", "label"] {
                enough &= refused(&c.ingesters[0], reason).await >= 15.0;
            }
            enough
        },
    )
    .await;
    // Writes go to the real ingesters only.
    for i in 0..10u8 {
        let trace = format!("{:02x}{}", 0x50 + i, "1".repeat(30));
        assert_eq!(push_otlp(&cluster, &trace, 2).await, 200);
        assert_eq!(spans_via_query(&cluster.front.http(), &trace).await, Ok(2));
    }
    for rogue in &rogues {
        let ring = ring_json(rogue).await.expect("the rogue answers /ring");
        assert_eq!(
            member_names(&ring),
            vec![rogue.name.clone()],
            "{} sees only itself",
            rogue.name
        );
        assert_eq!(
            common::metric(rogue, "ringtail_ingester_wal_bytes_total").await,
            0.0,
            "{} received no writes",
            rogue.name
        );
    }
}

fn keys(secret: &str) -> ClusterKeys {
    ClusterKeys::new(&[secret.to_owned()], "").expect("keys")
}

async fn client(
    node: &Node,
    keys: Option<&ClusterKeys>,
) -> IngesterClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credential>,
> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    IngesterClient::with_interceptor(channel, Credential::new(keys))
        .max_encoding_message_size(64 << 20)
}

fn push_of(tenant: &str, trace: &str, resource_spans: Vec<u8>) -> PushBody {
    PushBody {
        shared: PushRequest {
            tenant: tenant.into(),
            traces: vec![TraceSegment {
                trace_id: hex::decode(trace).expect("hex").into(),
                resource_spans: resource_spans.into(),
            }],
            unindexed: Vec::new(),
            compressed_traces: Default::default(),
        }
        .encode_to_vec()
        .into(),
        own: Default::default(),
        compressed: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_calls_need_the_token_and_pushes_are_checked_like_the_distributors() {
    let cluster = Cluster::start(51, 3, &[]).await;
    let t = "51515151515151515151515151515151";
    let other = "52525252525252525252525252525252";
    assert_eq!(push_otlp(&cluster, t, 2).await, 200);
    let ingester = &cluster.ingesters[0];
    let find = || FindTraceRequest {
        tenant: "single-tenant".into(),
        trace_id: hex::decode(t).expect("hex").into(),
    };

    // No token, or another cluster's: nothing is read or written.
    for (what, k) in [
        ("no token", None),
        ("another secret", Some(keys("another-clusters-secret-0123"))),
    ] {
        let mut c = client(ingester, k.as_ref()).await;
        let read = c.find_trace_by_id(find()).await.expect_err(what);
        assert_eq!(read.code(), tonic::Code::Unauthenticated, "{what}: {read}");
        let write = c
            .push(push_of(
                "single-tenant",
                t,
                common::export_request(vec![span(t, 9)]),
            ))
            .await
            .expect_err(what);
        assert_eq!(
            write.code(),
            tonic::Code::Unauthenticated,
            "{what}: {write}"
        );
    }

    // With the token, a push is checked as the distributor checks a request.
    let ours = keys(&cluster_secret(51));
    let mut c = client(ingester, Some(&ours)).await;
    let refused = [
        (
            "a span filed under another trace",
            push_of(
                "single-tenant",
                t,
                common::export_request(vec![span(other, 1)]),
            ),
            "belongs to trace",
        ),
        (
            "random bytes",
            push_of(
                "single-tenant",
                t,
                vec![0x0a, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x99],
            ),
            "segment 0",
        ),
        (
            "an invalid tenant",
            push_of("bad tenant/..", t, common::export_request(vec![span(t, 8)])),
            "tenant",
        ),
    ];
    for (what, push, says) in refused {
        let e = c.push(push).await.expect_err(what);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
        assert!(e.message().contains(says), "{what}: {}", e.message());
    }
    let huge = push_of("single-tenant", t, vec![0u8; 40 << 20]);
    let e = c.push(huge).await.expect_err("a 40 MiB push");
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e}"
    );
    // A valid push and a read with the token work.
    c.push(push_of(
        "single-tenant",
        t,
        common::export_request(vec![span(t, 3)]),
    ))
    .await
    .expect("a valid push");
    let found = c.find_trace_by_id(find()).await.expect("find").into_inner();
    assert!(found.found);
    // Nothing refused was stored: the trace reads back whole and complete.
    let query = cluster.front.http();
    assert_eq!(spans_via_query(&query, t).await, Ok(3));
    let v2: serde_json::Value = reqwest::get(format!("{query}/api/v2/traces/{t}"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(v2["status"], "COMPLETE", "{v2}");
}

async fn wait_whole(cluster: &Cluster, what: &str) {
    cluster.wait_ready().await;
    let members: Vec<&Node> = cluster.ingesters.iter().chain([&cluster.front]).collect();
    let all = &members;
    common::wait_until(what, Duration::from_secs(30), || async move {
        let mut whole = true;
        for m in all {
            let ring = ring_json(m).await.unwrap_or_default();
            whole &= member_names(&ring).len() == all.len();
        }
        whole
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_rotates_node_by_node_without_splitting_the_cluster() {
    let old = "the-old-cluster-secret-0123";
    let new = "the-new-cluster-secret-4567";
    let mut cluster = Cluster::start(52, 3, &[&format!("--cluster-secret={old}")]).await;
    // Step 1: every node accepts the new secret too (still sealing with the old one);
    // step 2: every node seals with the new one; step 3: the old one is dropped. After
    // every single restart every member lists every other.
    for (step, keyring) in [
        format!("{old},{new}"),
        format!("{new},{old}"),
        new.to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        for i in 0..=cluster.ingesters.len() {
            let node = if i < cluster.ingesters.len() {
                &mut cluster.ingesters[i]
            } else {
                &mut cluster.front
            };
            node.set_flag("cluster-secret", &keyring);
            node.restart();
            let name = node.name.clone();
            wait_whole(
                &cluster,
                &format!("the cluster whole after {name} took {keyring}"),
            )
            .await;
        }
        let trace = format!("5200000000000000000000000000000{}", step + 1);
        let trace = trace.as_str();
        let c = &cluster;
        common::wait_until(
            "a push to be acked",
            Duration::from_secs(20),
            || async move { push_otlp(c, trace, 2).await == 200 },
        )
        .await;
        assert_eq!(spans_via_query(&cluster.front.http(), trace).await, Ok(2));
    }
    for m in cluster.ingesters.iter().chain([&cluster.front]) {
        assert_eq!(refused(m, "auth").await, 0.0, "{} refused a packet", m.name);
    }
}
