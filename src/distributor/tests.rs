//! The write path's replication against in-memory ingesters: no sockets.

use crate::error::HasErrorCode;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::*;
use crate::cluster::fixed::active_ingesters;
use crate::cluster::ClusterView;
use crate::otlp::test_bytes::request_of;
use crate::rpc::ingester_client::fake::{FakeIngesters, Gate, Script};
use crate::rpc::proto::PushRequest;

/// A distributor in front of three ACTIVE fake ingesters, and their gRPC addresses.
fn distributor_over_fakes(
    push_timeout: Duration,
) -> (Arc<Distributor>, FakeIngesters, Vec<SocketAddr>) {
    distributor_with_overrides(push_timeout, &[])
}

/// [`distributor_over_fakes`] with `tenant_overrides` entries.
fn distributor_with_overrides(
    push_timeout: Duration,
    overrides: &[&str],
) -> (Arc<Distributor>, FakeIngesters, Vec<SocketAddr>) {
    distributor_with(push_timeout, overrides, true)
}

/// [`distributor_with_overrides`], its pushes compressed or not.
fn distributor_with(
    push_timeout: Duration,
    overrides: &[&str],
    compress_pushes: bool,
) -> (Arc<Distributor>, FakeIngesters, Vec<SocketAddr>) {
    let ingesters = active_ingesters(3);
    let addrs = ingesters.iter().map(|i| i.grpc).collect();
    let fake = FakeIngesters::default();
    let settings = DistributorSettings {
        replication: ReplicationFactor::default(),
        push_timeout,
        compress_pushes,
        multitenancy_enabled: false,
        max_recv_msg_size: 4 << 20,
        overrides: Arc::new(crate::overrides::LiveOverrides::fixed(
            crate::overrides::Overrides::parse(
                crate::overrides::Limits {
                    trace_idle_period: Duration::from_secs(10),
                    max_block_duration: Duration::from_secs(60),
                    max_block_bytes: 1 << 20,
                    block_retention: Duration::from_secs(3600),
                    ingestion_rate_bytes: 0,
                    ingestion_burst_bytes: 0,
                    max_bytes_per_trace: 0,
                    max_bytes_per_tag_values_query: 1 << 20,
                    compaction_window: Duration::from_secs(3600),
                    max_compacted_block_bytes: 1 << 30,
                },
                &overrides.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            )
            .expect("valid overrides"),
        )),
        rate_global: false,
    };
    let membership = Membership::fixed(ClusterView::of(ingesters));
    (
        Distributor::new(settings, membership, fake.clone()),
        fake,
        addrs,
    )
}

/// An OTLP request with one span in each of the traces `[t; 16]`.
fn request(traces: &[u8]) -> Vec<u8> {
    let spans: Vec<Vec<u8>> = traces
        .iter()
        .map(|&t| {
            Span {
                trace_id: vec![t; 16],
                span_id: vec![t; 8],
                name: format!("span of trace {t}"),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    request_of(&spans)
}

fn trace_ids(push: &PushRequest) -> BTreeSet<Vec<u8>> {
    push.traces.iter().map(|t| t.trace_id.to_vec()).collect()
}

fn every_trace(traces: &[u8]) -> BTreeSet<Vec<u8>> {
    traces.iter().map(|&t| vec![t; 16]).collect()
}

/// Pushes carry their traces compressed by default (what the fakes record is what an
/// ingester decodes), and plain with `compress_pushes` off; the same traces either way.
#[tokio::test]
async fn pushes_are_compressed_unless_turned_off_and_carry_the_same_traces() {
    for compress in [true, false] {
        let (distributor, fake, _) = distributor_with(Duration::from_secs(30), &[], compress);
        let body = request(&[4, 5, 6, 7]);
        distributor
            .push(&TenantId::single(), &body)
            .await
            .expect("quorum reached");
        let acked = fake.wait_for_acked_pushes(3).await;
        for (addr, push) in &acked {
            assert_eq!(
                !push.compressed_traces.is_empty(),
                compress,
                "compressed at {addr}"
            );
            assert_eq!(
                trace_ids(push),
                every_trace(&[4, 5, 6, 7]),
                "traces at {addr}"
            );
        }
        let split = crate::otlp::split_by_trace(&body).expect("valid");
        let push = &acked[0].1;
        for t in &split.traces {
            let sent = push
                .traces
                .iter()
                .find(|s| s.trace_id[..] == t.trace_id.0[..])
                .expect("sent");
            assert_eq!(sent.resource_spans, t.resource_spans);
        }
    }
}

#[tokio::test]
async fn three_healthy_replicas_reach_quorum_and_each_gets_every_trace() {
    let (distributor, fake, addrs) = distributor_over_fakes(Duration::from_secs(30));
    let outcome = distributor
        .push(&TenantId::single(), &request(&[1, 2, 3]))
        .await
        .expect("quorum reached");
    assert_eq!(outcome.accepted_spans, 3);
    let acked = fake.wait_for_acked_pushes(3).await;
    let receivers: BTreeSet<SocketAddr> = acked.iter().map(|(addr, _)| *addr).collect();
    assert_eq!(receivers, addrs.into_iter().collect());
    for (addr, push) in &acked {
        assert_eq!(push.tenant, TenantId::single().as_str(), "tenant at {addr}");
        assert_eq!(trace_ids(push), every_trace(&[1, 2, 3]), "traces at {addr}");
    }
}

/// With three replicas and a write quorum of 2, each trace is left unindexed (for search)
/// by exactly one of its replicas, so two index it and any two that ack include one; which
/// one varies from trace to trace.
#[tokio::test]
async fn each_trace_is_left_unindexed_by_one_replica_and_the_work_is_spread() {
    let (distributor, fake, _) = distributor_over_fakes(Duration::from_secs(30));
    let traces: Vec<u8> = (1..=60).collect();
    distributor
        .push(&TenantId::single(), &request(&traces))
        .await
        .expect("quorum reached");
    let acked = fake.wait_for_acked_pushes(3).await;
    let mut unindexed_by = std::collections::BTreeMap::<Vec<u8>, usize>::new();
    for (addr, push) in &acked {
        assert!(!push.unindexed.is_empty(), "{addr} indexes every trace");
        assert!(push.unindexed.windows(2).all(|w| w[0] < w[1]));
        for &i in &push.unindexed {
            let trace = push.traces[i as usize].trace_id.to_vec();
            *unindexed_by.entry(trace).or_default() += 1;
        }
    }
    assert_eq!(unindexed_by.len(), traces.len());
    assert!(unindexed_by.values().all(|&n| n == 1), "{unindexed_by:?}");
}

#[tokio::test]
async fn a_slow_replica_does_not_delay_the_ack_and_its_push_still_lands_after_it() {
    let (distributor, fake, addrs) = distributor_over_fakes(Duration::from_secs(30));
    let gate = Gate::default();
    fake.script(addrs[2], Script::Held(gate.clone()));
    distributor
        .push(&TenantId::single(), &request(&[4, 5]))
        .await
        .expect("acked by the two others");
    let at_ack = fake.acked_pushes();
    assert_eq!(at_ack.len(), 2);
    assert!(at_ack.iter().all(|(addr, _)| *addr != addrs[2]));
    gate.open();
    let acked = fake.wait_for_acked_pushes(3).await;
    let (addr, push) = &acked[2];
    assert_eq!(*addr, addrs[2], "the slow replica's push was cancelled");
    assert_eq!(trace_ids(push), every_trace(&[4, 5]));
}

#[tokio::test]
async fn two_failed_replicas_fail_the_push_as_unavailable_naming_both_and_why() {
    let (distributor, fake, addrs) = distributor_over_fakes(Duration::from_millis(50));
    fake.script(
        addrs[0],
        Script::fail(tonic::Code::Unavailable, "ingester is leaving"),
    );
    fake.script(addrs[1], Script::Hang);
    let error = distributor
        .push(&TenantId::single(), &request(&[6]))
        .await
        .expect_err("only one replica acked");
    let PushError::QuorumFailed { needed, failures } = &error else {
        panic!("not a quorum failure: {error:?}");
    };
    assert_eq!(*needed, 2);
    let mut failures = failures.clone();
    failures.sort();
    assert_eq!(
        failures,
        [
            "ingester-0: Unavailable: ingester is leaving",
            "ingester-1: timed out after 50 ms",
        ]
    );
    assert_eq!(error.error_code().grpc(), tonic::Code::Unavailable);
    assert!(error.error_code().retryable());
}

/// A tenant over its rate is refused whole, as RESOURCE_EXHAUSTED with a RetryInfo delay
/// (what the Collector needs to retry it), and nothing of the request reaches an
/// ingester; another tenant is not held back.
#[tokio::test]
async fn a_tenant_over_its_rate_gets_resource_exhausted_with_retry_info_and_others_go_on() {
    use tonic_types::StatusExt;
    let body = request(&[1, 2]);
    let len = body.len();
    let entries = [
        format!("single-tenant:ingestion_rate_bytes={len}"),
        format!("single-tenant:ingestion_burst_bytes={}", 2 * len),
    ];
    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
    let (d, fake, _) = distributor_with_overrides(Duration::from_secs(5), &entries);
    let tenant = TenantId::single();
    // The burst holds two requests; the third is over the rate.
    d.push(&tenant, &body).await.expect("first");
    d.push(&tenant, &body).await.expect("second");
    let pushes = fake.acked_pushes().len();
    let refused = d.push(&tenant, &body).await.expect_err("over the rate");
    assert!(
        matches!(refused, PushError::RateLimited { .. }),
        "{refused}"
    );
    assert_eq!(
        fake.acked_pushes().len(),
        pushes,
        "nothing of it was sent on"
    );
    let status = tonic::Status::from(refused);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    let other = TenantId::parse("other").expect("tenant");
    d.push(&other, &body)
        .await
        .expect("another tenant is not limited");
}

/// A replica's refusals (indices into its own push) map back to the request's traces.
#[test]
fn refused_segments_map_back_to_the_requests_traces() {
    use crate::otlp::TraceSegment;
    use crate::ring::ReplicaSet;
    use crate::rpc::quorum::{CallError, CallOutcome};
    let traces: Vec<TraceSegment> = (1..=3u8)
        .map(|t| TraceSegment {
            trace_id: crate::model::TraceId([t; 16]),
            resource_spans: Bytes::new(),
            spans: u32::from(t) * 10,
        })
        .collect();
    // Trace 1 on ingesters {0, 1}, trace 2 on {1, 2}, trace 3 on {0, 2}.
    let place = |t: &TraceSegment| match t.trace_id.0[0] {
        1 => ReplicaSet::from_ids([0, 1]),
        2 => ReplicaSet::from_ids([1, 2]),
        _ => ReplicaSet::from_ids([0, 2]),
    };
    let answers = vec![
        // Ingester 1 was pushed traces 1 and 2, and refused its second: trace 2.
        CallOutcome {
            instance: 1,
            result: Ok(vec![1]),
        },
        // Ingester 0 was pushed traces 1 and 3, and refused its first: trace 1.
        CallOutcome {
            instance: 0,
            result: Ok(vec![0, 7]),
        },
        CallOutcome {
            instance: 2,
            result: Err(CallError::TimedOut(Duration::from_secs(1))),
        },
    ];
    let refused = TooLarge::from_answers(&answers, &traces, place);
    assert_eq!(
        refused,
        TooLarge {
            traces: 2,
            spans: 30,
            first: Some(crate::model::TraceId([1; 16]))
        }
    );
    let none = vec![CallOutcome {
        instance: 0,
        result: Ok(Vec::new()),
    }];
    assert_eq!(
        TooLarge::from_answers(&none, &traces, place),
        TooLarge::default()
    );
}
