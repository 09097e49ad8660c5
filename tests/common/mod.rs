//! A cluster of real `ringtail` processes on loopback for end-to-end tests.
//!
//! Each test gets its own address range: node `i` of subnet `s` listens on `127.s.0.i`
//! with the default ports, so tests run in parallel without port clashes. Every wait is a
//! condition polled against a deadline.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringtail");

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Node {
    pub name: String,
    pub ip: IpAddr,
    pub args: Vec<String>,
    pub log: PathBuf,
    child: Option<Child>,
    /// When the node's HTTP API speaks TLS (`--http-tls-server-name` and
    /// `--http-tls-ca-file` among its flags): the certificate's name and a client that
    /// trusts the CA and resolves that name to this node.
    https: Option<(String, reqwest::Client)>,
    /// A node started beside a [`Cluster`] (`spawn_extra*`), whose log the cluster's own
    /// dump on a failure does not show: it shows it itself when dropped by a failing test.
    dump_on_panic: bool,
}

impl Node {
    /// The base URL of the node's HTTP API (for [`Node::client`]).
    pub fn http(&self) -> String {
        match &self.https {
            Some((name, _)) => format!("https://{name}:3200"),
            None => format!("http://{}:3200", self.ip),
        }
    }

    /// A client for [`Node::http`] URLs.
    pub fn client(&self) -> reqwest::Client {
        match &self.https {
            Some((_, client)) => client.clone(),
            None => reqwest::Client::new(),
        }
    }

    pub fn otlp_grpc(&self) -> String {
        format!("http://{}:4317", self.ip)
    }

    pub fn otlp_grpc_addr(&self) -> String {
        format!("{}:4317", self.ip)
    }

    pub fn otlp_http(&self) -> String {
        format!("http://{}:4318", self.ip)
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 9095)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(BIN)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ringtail");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown sequence, no final flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (e.g. SIGHUP) and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &c.id().to_string()])
                .status();
        }
    }

    /// Sends a signal (e.g. SIGTERM/SIGINT) and waits for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<i32> {
        self.signal(signal);
        self.wait_exit(timeout)
    }

    /// Waits for the process to exit (killing it past `timeout`); its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces (or adds) `--{flag}=...` for the next start.
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        let prefix = format!("--{flag}=");
        self.args.retain(|a| !a.starts_with(&prefix));
        self.args.push(format!("{prefix}{value}"));
    }

    /// Drops `--{flag}=...` for the next start.
    pub fn remove_flag(&mut self, flag: &str) {
        let prefix = format!("--{flag}=");
        self.args.retain(|a| !a.starts_with(&prefix));
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, delete its data folder (WAL, local blocks), start again.
    pub fn restart_empty(&mut self, data_dir: &Path) {
        self.kill();
        let _ = std::fs::remove_dir_all(data_dir.join(&self.name));
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub async fn is_ready(&self) -> bool {
        matches!(
            self.client().get(format!("{}/ready", self.http())).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.dump_on_panic && std::thread::panicking() {
            eprintln!("----- {} -----\n{}", self.name, self.log_tail());
        }
        self.kill();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub front: Node,
    pub ingesters: Vec<Node>,
    /// Arguments every node of this cluster shares (seeds, store, extra flags).
    common_args: Vec<String>,
    subnet: u8,
}

fn ip(subnet: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, subnet, 0, host))
}

impl Cluster {
    /// Starts `ingesters` ingester processes and one distributor+querier process, and
    /// waits until every one is ready and the front node sees every ingester ACTIVE.
    pub async fn start(subnet: u8, ingesters: usize, extra: &[&str]) -> Self {
        Self::launch(subnet, &vec![None; ingesters], extra).await
    }

    /// [`Cluster::start`] with one ingester per entry of `zones`, in that zone (`--zone`).
    pub async fn start_in_zones(subnet: u8, zones: &[&str], extra: &[&str]) -> Self {
        let zones: Vec<Option<&str>> = zones.iter().copied().map(Some).collect();
        Self::launch(subnet, &zones, extra).await
    }

    async fn launch(subnet: u8, zones: &[Option<&str>], extra: &[&str]) -> Self {
        let ingesters = zones.len();
        let dir = tempfile::tempdir().expect("tempdir");
        // Every node lists every ingester as a seed, as a deployment would (a single seed
        // that restarts would found a cluster of its own).
        let seeds: Vec<String> = (1..=ingesters as u8)
            .map(|h| format!("{}:7946", ip(subnet, h)))
            .collect();
        let seed = seeds.join(",");
        let mut common_args = vec![
            format!("--gossip-join={seed}"),
            // One object store for the cluster, and a pipeline that moves fast enough
            // that every test reads across live traces, head blocks, local and
            // flushed blocks.
            format!("--storage-path={}", dir.path().join("blocks").display()),
            "--trace-idle-period-ms=1000".to_owned(),
            "--max-block-duration-ms=3000".to_owned(),
            "--blocklist-poll-ms=500".to_owned(),
            "--complete-block-timeout-ms=3000".to_owned(),
        ];
        // Every test cluster authenticates its gossip and internal calls, as a deployment
        // must, unless the test says otherwise.
        if !extra
            .iter()
            .any(|a| a.starts_with("--cluster-secret") || a.starts_with("--insecure-cluster"))
        {
            common_args.push(format!("--cluster-secret={}", cluster_secret(subnet)));
        }
        common_args.extend(extra.iter().map(|s| s.to_string()));
        let mut ingester_nodes: Vec<Node> = (0..ingesters)
            .map(|i| {
                node_spec(
                    &dir,
                    subnet,
                    &common_args,
                    &format!("ingester-{}", i + 1),
                    i as u8 + 1,
                    "ingester",
                )
            })
            .collect();
        for (node, zone) in ingester_nodes.iter_mut().zip(zones) {
            if let Some(zone) = zone {
                node.set_flag("zone", zone);
            }
        }
        let mut front = node_spec(
            &dir,
            subnet,
            &common_args,
            "front",
            100,
            "distributor,querier",
        );
        for n in &mut ingester_nodes {
            n.spawn();
        }
        front.spawn();
        let cluster = Self {
            dir,
            front,
            ingesters: ingester_nodes,
            common_args,
            subnet,
        };
        cluster.wait_ready().await;
        cluster
    }

    /// Starts one more node (e.g. a querier that never receives data) and waits for it.
    pub async fn spawn_extra(&self, name: &str, host: u8, target: &str) -> Node {
        self.spawn_extra_with(name, host, target, &[]).await
    }

    /// [`Cluster::spawn_extra`] with flags of its own (e.g. fault injection).
    pub async fn spawn_extra_with(
        &self,
        name: &str,
        host: u8,
        target: &str,
        flags: &[&str],
    ) -> Node {
        let mut node = self.extra_node(name, host, target);
        node.args.extend(flags.iter().map(|f| f.to_string()));
        node.spawn();
        let n = &node;
        wait_until(&format!("{name} ready"), Duration::from_secs(30), || {
            n.is_ready()
        })
        .await;
        node
    }

    /// A node of this cluster (its flags), not started.
    fn extra_node(&self, name: &str, host: u8, target: &str) -> Node {
        let mut node = node_spec(
            &self.dir,
            self.subnet,
            &self.common_args,
            name,
            host,
            target,
        );
        node.dump_on_panic = true;
        node
    }

    /// Starts one more node with some of the cluster's flags replaced (`(flag, value)`;
    /// value `None` drops the flag) and does not wait for it: it may never join.
    pub fn spawn_extra_unready(
        &self,
        name: &str,
        host: u8,
        target: &str,
        flags: &[(&str, Option<&str>)],
    ) -> Node {
        let mut node = self.extra_node(name, host, target);
        for (flag, value) in flags {
            match value {
                Some(v) => node.set_flag(flag, v),
                None => node.remove_flag(flag),
            }
        }
        node.spawn();
        node
    }

    /// Internal gRPC clients that carry this cluster's token (as a distributor's do).
    pub fn ingester_clients(&self) -> ringtail::rpc::IngesterClients {
        let keys = ringtail::cluster_keys::ClusterKeys::new(&[cluster_secret(self.subnet)], "")
            .expect("the test secret is valid");
        ringtail::rpc::IngesterClients::new(ringtail::rpc::auth::Credential::new(Some(&keys)), None)
    }

    pub async fn wait_ready(&self) {
        for n in self.ingesters.iter().chain([&self.front]) {
            let name = n.name.clone();
            wait_until(&format!("{name} ready"), Duration::from_secs(30), || {
                n.is_ready()
            })
            .await;
        }
        let expected = self.ingesters.len();
        self.wait_active_ingesters(expected, Duration::from_secs(30))
            .await;
    }

    /// Waits until the front node's write ring has exactly `n` ingesters. On timeout,
    /// fails with the front's view of the ring (and every node's log tail, see `Drop`).
    pub async fn wait_active_ingesters(&self, n: usize, timeout: Duration) {
        let url = format!("{}/ring", self.front.http());
        let client = self.front.client();
        let deadline = Instant::now() + timeout;
        while ring_writers(&client, &url).await != Some(n) {
            if Instant::now() >= deadline {
                let view = client
                    .get(&url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map(|r| r.text());
                let view = match view {
                    Ok(text) => text.await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                panic!("timed out after {timeout:?} waiting for {n} ACTIVE ingesters; the front sees: {view}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ingester(&mut self, name: &str) -> &mut Node {
        self.ingesters
            .iter_mut()
            .find(|n| n.name == name)
            .expect("known ingester")
    }

    pub fn dump_logs(&self) {
        for n in self.ingesters.iter().chain([&self.front]) {
            eprintln!("----- {} -----\n{}", n.name, n.log_tail());
        }
    }
}

impl Drop for Cluster {
    /// A failing test shows what the nodes logged (CI keeps nothing else of them).
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// The cluster secret [`Cluster::start`] gives the cluster on `subnet`.
pub fn cluster_secret(subnet: u8) -> String {
    format!("test-cluster-secret-of-subnet-{subnet}")
}

fn node_spec(
    dir: &tempfile::TempDir,
    subnet: u8,
    common: &[String],
    name: &str,
    host: u8,
    target: &str,
) -> Node {
    let ip = ip(subnet, host);
    let mut args = vec![
        format!("--target={target}"),
        format!("--node-name={name}"),
        format!("--data-dir={}", dir.path().join(name).display()),
        format!("--http-listen={ip}:3200"),
        format!("--grpc-listen={ip}:9095"),
        format!("--otlp-grpc-listen={ip}:4317"),
        format!("--otlp-http-listen={ip}:4318"),
        format!("--gossip-listen={ip}:7946"),
    ];
    args.extend(common.iter().cloned());
    let https = https_client(&args, SocketAddr::new(ip, 3200));
    Node {
        name: name.to_owned(),
        ip,
        args,
        log: dir.path().join(format!("{name}.log")),
        child: None,
        https,
        dump_on_panic: false,
    }
}

/// See [`Node::client`].
fn https_client(args: &[String], addr: SocketAddr) -> Option<(String, reqwest::Client)> {
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
    };
    let server_name = flag("--http-tls-server-name")?;
    let ca = std::fs::read(flag("--http-tls-ca-file")?).expect("read the HTTP CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .resolve(&server_name, addr)
        .build()
        .expect("client");
    Some((server_name, client))
}

async fn ring_writers(client: &reqwest::Client, url: &str) -> Option<usize> {
    let resp = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .ok()?;
    let json: serde_json::Value = resp.json().await.ok()?;
    json["write_ring_ingesters"].as_array().map(|a| a.len())
}

/// Runs `ringtail bench` against the cluster; returns (exit success, stdout).
pub fn bench(args: &[String]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run bench");
    let stdout =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), stdout)
}

/// Reads `<hex> <spans>` lines written by `bench --record`.
pub fn read_record(path: &Path) -> Vec<(String, usize)> {
    std::fs::read_to_string(path)
        .expect("record file")
        .lines()
        .filter_map(|l| {
            let (id, n) = l.split_once(' ')?;
            Some((id.to_owned(), n.parse().ok()?))
        })
        .collect()
}

/// Number of spans the querier returns for `trace` (0 when not found).
pub async fn spans_via_query(query: &str, trace: &str) -> Result<usize, String> {
    use prost::Message;
    let resp = reqwest::Client::new()
        .get(format!("{query}/api/traces/{trace}"))
        .header("accept", "application/protobuf")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200 => {
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            let data = opentelemetry_proto::tonic::trace::v1::TracesData::decode(body)
                .map_err(|e| e.to_string())?;
            Ok(ringtail::span_count(&data))
        }
        404 => Ok(0),
        s => Err(format!(
            "HTTP {s}: {}",
            resp.text().await.unwrap_or_default()
        )),
    }
}

/// GET `url` and return the body as text (panics on transport errors).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    reqwest::get(url)
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

/// An OTLP gRPC client of a node's receiver (no client-side size limit: tests send
/// oversized requests on purpose).
pub async fn otlp_grpc_client(
    node: &Node,
) -> ringtail::rpc::otlp_service::trace_service_client::TraceServiceClient<tonic::transport::Channel>
{
    let channel = tonic::transport::Endpoint::from_shared(node.otlp_grpc())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    ringtail::rpc::otlp_service::trace_service_client::TraceServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
}

/// `POST /flush` on a node (with its `--admin-token`, if it has one); returns the JSON stats.
pub async fn flush(node: &Node) -> serde_json::Value {
    let mut request = reqwest::Client::new().post(format!("{}/flush", node.http()));
    if let Some(token) = node
        .args
        .iter()
        .find_map(|a| a.strip_prefix("--admin-token="))
    {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("flush");
    assert!(
        resp.status().is_success(),
        "flush on {}: {}",
        node.name,
        resp.status()
    );
    resp.json().await.expect("flush stats")
}

/// Visible blocks (folders with a meta.json) per tenant in the cluster's object store.
pub fn visible_blocks(store: &Path, tenant: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(store.join(tenant)) else {
        return Vec::new();
    };
    let mut blocks: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("meta.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    blocks.sort();
    blocks
}

/// A real S3-protocol HTTP server (moto's `moto_server`, installed into `.venv` by
/// scripts/setup-python.sh) on its own loopback address, with one bucket.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl S3Server {
    pub async fn start(subnet: u8, bucket: &str) -> Self {
        let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server");
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: run scripts/setup-python.sh (the README's test command does)"
        );
        let host = ip(subnet, 200).to_string();
        let child = Command::new(bin)
            .args(["-H", &host, "-p", "5000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://{host}:5000");
        let url = endpoint.clone();
        wait_until("the S3 server to answer", Duration::from_secs(30), || {
            let url = url.clone();
            async move { reqwest::get(&url).await.is_ok() }
        })
        .await;
        let resp = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
        Self {
            child,
            endpoint,
            bucket: bucket.to_owned(),
        }
    }

    /// Flags that point a node at this server.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--storage-backend=s3".into(),
            format!("--s3-bucket={}", self.bucket),
            format!("--s3-endpoint={}", self.endpoint),
            "--s3-path-style=true".into(),
            "--s3-access-key-id=testing".into(),
            "--s3-secret-access-key=testing".into(),
        ]
    }

    /// Ringtail's own view of the bucket (signed requests, as nodes make them).
    pub fn block_store(&self) -> ringtail::storage::BlockStore {
        ringtail::storage::BlockStore::s3(&ringtail::config::S3Config {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: None,
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            path_style: true,
        })
        .expect("s3 store")
    }

    /// Freezes the server (SIGSTOP): connections hang, as with a store that is down.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }

    /// Keys of every object under `prefix`, listed through the S3 API.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let body = reqwest::get(format!(
            "{}/{}?list-type=2&prefix={prefix}",
            self.endpoint, self.bucket
        ))
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next().map(str::to_owned))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a metric line (summed over its label sets) on a node.
pub async fn metric(node: &Node, name: &str) -> f64 {
    get_text(format!("{}/metrics", node.http()))
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads every recorded trace through the querier (16 at a time) and returns those that
/// are missing or incomplete, with what was wrong.
pub async fn incomplete_traces(query: &str, record: &[(String, usize)]) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(record.iter().map(|(id, expected)| async move {
        match spans_via_query(query, id).await {
            Ok(n) if n == *expected => None,
            Ok(n) => Some(format!("{id}: {n} of {expected} spans")),
            Err(e) => Some(format!("{id}: {e}")),
        }
    }))
    .buffer_unordered(16)
    .filter_map(|bad| async move { bad })
    .collect()
    .await
}

/// Fails with a few examples unless every recorded trace reads back complete.
pub async fn assert_all_complete(query: &str, record: &[(String, usize)], what: &str) {
    let bad = incomplete_traces(query, record).await;
    assert!(
        bad.is_empty(),
        "{what}: {} of {} acked traces missing or incomplete, e.g. {:?}",
        bad.len(),
        record.len(),
        &bad[..bad.len().min(5)]
    );
}

/// Pushes with the load tool (`args` after the endpoint and record file), asserts that
/// every push was acked, and returns the acked traces.
pub fn push_recorded(cluster: &Cluster, args: &[&str]) -> Vec<(String, usize)> {
    let record = cluster
        .dir
        .path()
        .join(format!("acked-{}.txt", rand_suffix()));
    let mut all = vec![
        format!("--endpoint={}", cluster.front.otlp_grpc()),
        format!("--record={}", record.display()),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let (ok, out) = bench(&all);
    assert!(ok && out.contains("errors: none"), "{out}");
    read_record(&record)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs `tests/python/export_and_verify.py` (the OpenTelemetry Python SDK's exporter, then
/// a read-back of every trace) against the cluster's front with `args`; returns whether it
/// succeeded and its output.
pub fn python_export_and_verify(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/export_and_verify.py"
        ))
        .args(["--endpoint", &cluster.front.otlp_grpc_addr()])
        .args(["--query-url", &cluster.front.http()])
        .args(args)
        .output()
        .expect("run python exporter");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The repo venv's Python (scripts/setup-python.sh installs the OpenTelemetry SDK there).
pub fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(
        Path::new(venv).exists(),
        "{venv} is missing: run scripts/setup-python.sh (the README's test command does)"
    );
    venv.to_owned()
}

/// A steady load from the OpenTelemetry Python SDK's OTLP exporter, with its own retries
/// (tests/python/steady_export.py), until [`PythonLoad::finish`].
pub struct PythonLoad {
    child: Child,
    stop_file: PathBuf,
    record: PathBuf,
    summary: PathBuf,
}

/// What the Python exporter saw.
pub struct PythonLoadResult {
    /// Every span acked and no non-retryable status code seen.
    pub ok: bool,
    pub summary: serde_json::Value,
    pub output: String,
    /// The traces whose every span was acked.
    pub acked: Vec<(String, usize)>,
}

impl PythonLoad {
    pub fn start(cluster: &Cluster, rate: u32) -> Self {
        let n = rand_suffix();
        let dir = cluster.dir.path();
        let stop_file = dir.join(format!("stop-{n}"));
        let record = dir.join(format!("python-acked-{n}.txt"));
        let summary = dir.join(format!("python-summary-{n}.json"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/steady_export.py");
        let child = Command::new(python())
            .arg(script)
            .arg(format!("--endpoint={}", cluster.front.otlp_grpc_addr()))
            .arg(format!("--rate={rate}"))
            .arg(format!("--stop-file={}", stop_file.display()))
            .arg(format!("--record={}", record.display()))
            .arg(format!("--summary={}", summary.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Python exporter");
        Self {
            child,
            stop_file,
            record,
            summary,
        }
    }

    /// Stops the load, waits for every batch to be exported or given up (retries
    /// included), and returns what was acked.
    pub async fn finish(self) -> PythonLoadResult {
        std::fs::write(&self.stop_file, b"").expect("stop file");
        let Self {
            child,
            record,
            summary,
            ..
        } = self;
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("Python exporter output");
        let output = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let summary = std::fs::read_to_string(&summary)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_else(|| panic!("no summary from the Python exporter:\n{output}"));
        PythonLoadResult {
            ok: out.status.success(),
            summary,
            output,
            acked: read_record(&record),
        }
    }
}

/// An encoded OTLP `ExportTraceServiceRequest` holding `spans` in one resource and scope
/// (also the `TracesData.resource_spans` records a push segment carries).
pub fn export_request(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Waits until the front has accepted another 2,000 spans (a second of the Python load).
pub async fn wait_for_writes(cluster: &Cluster, what: &str) {
    let name = "ringtail_distributor_spans_received_total";
    let before = metric(&cluster.front, name).await;
    wait_until(what, Duration::from_secs(30), || async {
        metric(&cluster.front, name).await >= before + 2000.0
    })
    .await;
}

/// POSTs an OTLP/HTTP protobuf body to `node`; returns (status, body).
pub async fn post_protobuf(node: &Node, body: Vec<u8>) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", node.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
}

/// Seconds since the epoch, now.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `{}` over `[start, now + 60 s]` through the querier (limit 10,000): the trace IDs
/// found, sorted, and the whole response.
pub async fn search_everything_since(front: &Node, start: u64) -> (Vec<String>, serde_json::Value) {
    let range = [
        ("q", "{}".to_owned()),
        ("limit", "10000".to_owned()),
        ("start", start.to_string()),
        ("end", (unix_secs() + 60).to_string()),
    ];
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/search", front.http()))
        .query(&range)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let mut found: Vec<String> = body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|t| t["traceID"].as_str().map(str::to_owned))
        .collect();
    found.sort();
    (found, body)
}

/// The recorded trace IDs, sorted.
pub fn sorted_ids(record: &[(String, usize)]) -> Vec<String> {
    let mut ids: Vec<String> = record.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids
}

/// `name`'s entry in a node's `GET /status/workers` (`Null` while not listed).
pub async fn worker_status(node: &Node, name: &str) -> serde_json::Value {
    let status: serde_json::Value = match node
        .client()
        .get(format!("{}/status/workers", node.http()))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return serde_json::Value::Null,
    };
    status["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == name).cloned())
        .unwrap_or_default()
}
