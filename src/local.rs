//! `ringtail local`: the embedded local cluster. One process runs a distributor + querier
//! node and three ingester nodes, each ingester with its own data folder, joined by real
//! foca gossip over UDP on loopback.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RawConfig;
use crate::node::{self, NodeError, RunningNode};

/// Options of `ringtail local`.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Parent folder of the ingesters' data folders
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Number of ingesters
    #[arg(long, default_value_t = 3)]
    pub ingesters: u16,
    /// WAL store of the ingesters: file or sled [default: file, or sled where a data
    /// folder already holds a sled WAL]
    #[arg(long)]
    pub wal_store: Option<String>,
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(LOOPBACK, port)
}

/// Starts the local cluster; returns the running nodes (front node first).
pub async fn start(
    args: &LocalArgs,
    shutdown: CancellationToken,
) -> Result<Vec<RunningNode>, Box<dyn std::error::Error>> {
    // Every node lists every other node as a seed, so any of them can restart and rejoin.
    let seeds: Vec<String> = (0..=args.ingesters)
        .map(|i| addr(7946 + i).to_string())
        .collect();
    // The nodes share a secret nobody else knows: nothing else on this host joins them.
    let secret = Some(vec![crate::cluster_keys::random_secret()]);
    let front = RawConfig {
        target: Some(vec![
            "distributor".into(),
            "querier".into(),
            "compactor".into(),
        ]),
        node_name: Some("front".into()),
        http_listen: Some(addr(3200)),
        otlp_grpc_listen: Some(addr(4317)),
        otlp_http_listen: Some(addr(4318)),
        gossip_listen: Some(addr(7946)),
        gossip_join: Some(seeds.clone()),
        cluster_secret: secret.clone(),
        ..Default::default()
    }
    .validate()?;
    // Each node gets a token of its own, a child of the cluster's: Ctrl-C stops every node,
    // `POST /shutdown` on one node stops that node only.
    let mut nodes = vec![node::start(front, shutdown.child_token()).await?];
    for i in 1..=args.ingesters {
        let name = format!("ingester-{i}");
        let config = RawConfig {
            target: Some(vec!["ingester".into()]),
            node_name: Some(name.clone()),
            data_dir: Some(args.data_dir.join(&name)),
            http_listen: Some(addr(3200 + i)),
            grpc_listen: Some(addr(9094 + i)),
            gossip_listen: Some(addr(7946 + i)),
            gossip_join: Some(seeds.clone()),
            wal_store: args.wal_store.clone(),
            cluster_secret: secret.clone(),
            ..Default::default()
        }
        .validate()?;
        let n = node::start(config, shutdown.child_token())
            .await
            .map_err(|e: NodeError| format!("{name}: {e}"))?;
        nodes.push(n);
    }
    Ok(nodes)
}

/// Waits (at most `timeout`) until the front node sees every ingester ACTIVE, so that what
/// the banner offers works when it is printed: writes at full replication, and reads.
/// Returns whether it did.
pub async fn wait_until_serving(
    nodes: &[RunningNode],
    ingesters: usize,
    timeout: Duration,
) -> bool {
    let Some(front) = nodes.first() else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if front.membership.view().writers.len() >= ingesters {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn banner(args: &LocalArgs) -> String {
    format!(
        "Ringtail local cluster: 1 distributor + querier, {} ingesters (data in {})\n\
         \x20 send OTLP:   gRPC 127.0.0.1:4317   HTTP http://127.0.0.1:4318/v1/traces\n\
         \x20 query:       http://127.0.0.1:3200/api/traces/<trace id>\n\
         \x20 ring:        http://127.0.0.1:3200/ring    metrics: http://127.0.0.1:3200/metrics\n\
         \x20 ingesters:   admin on http://127.0.0.1:3201..{}\n\
         Press Ctrl-C to stop.",
        args.ingesters,
        args.data_dir.display(),
        3200 + args.ingesters,
    )
}
