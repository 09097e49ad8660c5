//! The read fan-out against in-memory ingesters: no sockets, an in-memory object store.

use std::net::SocketAddr;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

use super::*;
use crate::cluster::fixed::active_ingesters;
use crate::cluster::ClusterView;
use crate::rpc::ingester_client::fake::{FakeIngesters, Script};

const TRACE: TraceId = TraceId([9; 16]);

/// A querier over three ACTIVE fake ingesters, and their gRPC addresses.
fn querier_over_fakes(read_timeout: Duration) -> (Arc<Querier>, FakeIngesters, Vec<SocketAddr>) {
    let ingesters = active_ingesters(3);
    let addrs = ingesters.iter().map(|i| i.grpc).collect();
    let fake = FakeIngesters::default();
    let settings = QuerierSettings {
        replication: ReplicationFactor::default(),
        read_timeout,
        search_timeout: read_timeout,
        search_jobs: crate::search::jobs::JobLimits {
            concurrency: 2,
            target_bytes: 1 << 20,
        },
        read_linger: Duration::from_millis(10),
        multitenancy_enabled: false,
        overrides: Arc::new(crate::overrides::LiveOverrides::fixed(
            crate::overrides::Overrides::new(crate::overrides::Limits::config_defaults()),
        )),
    };
    let membership = Membership::fixed(ClusterView::of(ingesters));
    let store = BlockStore::new(Arc::new(object_store::memory::InMemory::new()));
    (
        Querier::new(settings, membership, fake.clone(), store),
        fake,
        addrs,
    )
}

/// A replica's copy of [`TRACE`] holding the spans `ids` (`[id; 8]`).
fn copy_with_spans(ids: &[u8]) -> Bytes {
    let spans = ids
        .iter()
        .map(|&id| Span {
            trace_id: TRACE.0.to_vec(),
            span_id: vec![id; 8],
            ..Default::default()
        })
        .collect();
    let data = TracesData {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    data.encode_to_vec().into()
}

fn span_ids(trace: &MergedTrace) -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = trace
        .data
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.span_id.clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn two_answers_of_three_are_merged() {
    let (querier, fake, addrs) = querier_over_fakes(Duration::from_secs(30));
    fake.hold(addrs[0], copy_with_spans(&[1, 2]));
    fake.hold(addrs[1], copy_with_spans(&[2, 3]));
    fake.script(addrs[2], Script::fail(tonic::Code::Unavailable, "starting"));
    let trace = querier
        .find_trace(&TenantId::single(), TRACE)
        .await
        .expect("read quorum")
        .expect("found");
    assert_eq!(span_ids(&trace), [vec![1; 8], vec![2; 8], vec![3; 8]]);
    assert!(!trace.is_partial());
}

#[tokio::test]
async fn one_answer_is_not_a_read_quorum_and_the_error_says_why_the_others_failed() {
    let (querier, fake, addrs) = querier_over_fakes(Duration::from_millis(50));
    fake.hold(addrs[0], copy_with_spans(&[1]));
    fake.script(
        addrs[1],
        Script::fail(tonic::Code::Unavailable, "ingester is leaving"),
    );
    fake.script(addrs[2], Script::Hang);
    let error = querier
        .find_trace(&TenantId::single(), TRACE)
        .await
        .expect_err("one answer only");
    let QueryError::QuorumFailed { needed, failures } = &error else {
        panic!("not a quorum failure: {error:?}");
    };
    assert_eq!(*needed, 2);
    let mut failures = failures.clone();
    failures.sort();
    assert_eq!(
        failures,
        [
            "ingester-1: Unavailable: ingester is leaving",
            "ingester-2: timed out after 50 ms",
        ]
    );
}

#[tokio::test]
async fn a_replica_that_does_not_hold_the_trace_still_counts_towards_quorum() {
    let (querier, fake, addrs) = querier_over_fakes(Duration::from_secs(30));
    fake.hold(addrs[0], copy_with_spans(&[7]));
    fake.script(addrs[2], Script::Hang);
    let trace = querier
        .find_trace(&TenantId::single(), TRACE)
        .await
        .expect("the holder and the replica without the trace are a quorum")
        .expect("found");
    assert_eq!(span_ids(&trace), [vec![7; 8]]);

    let (querier, fake, addrs) = querier_over_fakes(Duration::from_secs(30));
    fake.script(addrs[2], Script::Hang);
    let nothing = querier
        .find_trace(&TenantId::single(), TRACE)
        .await
        .expect("two answers that do not hold it are a quorum");
    assert!(nothing.is_none());
}
