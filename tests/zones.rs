//! End-to-end test of zone-aware replication: 6 ingester processes in 3 zones.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{wait_for_writes, wait_until, Cluster, PythonLoad};

const ZONES: [&str; 6] = ["zone-a", "zone-a", "zone-b", "zone-b", "zone-c", "zone-c"];

async fn ring_json(cluster: &Cluster) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}/ring", cluster.front.http()))
        .header("accept", "application/json")
        .send()
        .await
        .expect("ring")
        .json()
        .await
        .expect("ring json")
}

/// The zones of the ingesters that hold `trace` (asked one by one over internal gRPC).
async fn zones_holding(cluster: &Cluster, trace: &str) -> Vec<&'static str> {
    let mut zones = Vec::new();
    for (node, zone) in cluster.ingesters.iter().zip(ZONES) {
        let mut client = cluster.ingester_clients().get(node.grpc_addr());
        let found = client
            .find_trace_by_id(ringtail::rpc::proto::FindTraceRequest {
                tenant: "single-tenant".into(),
                trace_id: hex::decode(trace).expect("hex").into(),
            })
            .await
            .expect("lookup")
            .into_inner();
        if !found.resource_spans.is_empty() {
            zones.push(zone);
        }
    }
    zones
}

#[tokio::test(flavor = "multi_thread")]
async fn every_trace_is_held_in_three_zones_and_a_whole_zone_stopped_under_load_refuses_and_loses_nothing(
) {
    let mut cluster = Cluster::start_in_zones(57, &ZONES, &[]).await;
    let ring = ring_json(&cluster).await;
    assert_eq!(ring["replication"]["zones"], 3, "{ring}");
    let zone_of: HashMap<&str, &str> = ring["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| Some((m["name"].as_str()?, m["zone"].as_str()?)))
        .collect();
    assert_eq!(zone_of.get("ingester-3"), Some(&"zone-b"), "{ring}");

    // Where the pushes landed: each trace's three copies are in three zones.
    let acked = common::push_recorded(&cluster, &["--requests=10", "--batch-spans=200"]);
    assert_eq!(acked.len(), 200);
    for (trace, _) in &acked {
        let zones = zones_holding(&cluster, trace).await;
        let distinct: BTreeSet<&str> = zones.iter().copied().collect();
        assert_eq!(
            (zones.len(), distinct.len()),
            (3, 3),
            "trace {trace} is held in {zones:?}"
        );
    }

    // SIGTERM both ingesters of zone-a under load: every trace keeps two replicas in the
    // other zones, so no write waits or is refused.
    let load = PythonLoad::start(&cluster, 2000);
    wait_for_writes(&cluster, "the exporter's first spans").await;
    for i in [0, 1] {
        cluster.ingesters[i].signal("TERM");
    }
    for i in [0, 1] {
        let code = cluster.ingesters[i].wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(0), "ingester-{} drains and exits 0", i + 1);
    }
    wait_until(
        "the front to see 4 ACTIVE",
        Duration::from_secs(10),
        || async { ring_json(&cluster).await["replication"]["active_ingesters"] == 4 },
    )
    .await;
    let ring = ring_json(&cluster).await;
    assert_eq!(ring["replication"]["zones"], 2, "{ring}");
    assert_eq!(ring["replication"]["writes"], "full", "{ring}");
    wait_for_writes(&cluster, "writes with zone-a down").await;
    let log = std::fs::read_to_string(&cluster.front.log).unwrap_or_default();
    assert!(
        log.contains("fewer zones than the replication factor"),
        "the distributor logs that placement lost a zone"
    );
    for i in [0, 1] {
        cluster.ingesters[i].restart();
    }
    cluster.wait_ready().await;
    wait_for_writes(&cluster, "writes with zone-a back").await;

    let result = load.finish().await;
    assert!(result.ok, "every batch landed:\n{}", result.output);
    assert!(!result.acked.is_empty(), "{}", result.output);
    assert_eq!(
        result.summary["codes"]["UNAVAILABLE"].as_u64().unwrap_or(0),
        0,
        "no write was refused while zone-a was down: {}",
        result.summary
    );
    common::assert_all_complete(&cluster.front.http(), &result.acked, "acked traces").await;
    common::assert_all_complete(&cluster.front.http(), &acked, "traces pushed first").await;
}
