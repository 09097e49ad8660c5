//! The HTTP servers' connection limits, against real processes: a stalled head, a stalled
//! body and an idle keep-alive connection are closed (each timeout on its own), the
//! connection cap holds extra connections back without touching the other server, and
//! HTTP/2 and HTTP/1.1 keep-alive still work.

mod common;

use std::time::{Duration, Instant};

use common::{spans_via_query, wait_until, Cluster, Node};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short limits for subnet 62: every timeout a test waits for is about a second.
const SHORT_LIMITS: [&str; 3] = [
    "--http-header-read-timeout-ms=1000",
    "--http-body-timeout-ms=1000",
    "--http-idle-timeout-ms=1500",
];

/// How long a test waits for the server to act on a limit of about a second.
const CLOSE_DEADLINE: Duration = Duration::from_secs(8);

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

async fn connect(url: &str) -> TcpStream {
    TcpStream::connect(host_port(url)).await.expect("connect")
}

/// Reads until the peer closes the connection (or an error) and returns what it sent;
/// panics if it is still open at `deadline`.
async fn read_until_closed(stream: &mut TcpStream, what: &str, deadline: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let until = Instant::now() + deadline;
    loop {
        let mut buf = [0u8; 4096];
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("{what}: connection still open after {deadline:?}"),
        }
    }
}

/// Reads one HTTP/1.1 response with a Content-Length; returns (status, body).
async fn read_response(stream: &mut TcpStream, deadline: Duration) -> (u16, Vec<u8>) {
    let mut got = Vec::new();
    let until = Instant::now() + deadline;
    loop {
        if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
            let status = head[9..12].parse().expect("status");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("length"))
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return (status, got[head_end + 4..head_end + 4 + length].to_vec());
            }
        }
        let mut buf = [0u8; 4096];
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => panic!("closed before a full response: {got:?}"),
            Err(_) => panic!("no full response within {deadline:?}: {got:?}"),
        }
    }
}

/// A valid OTLP request with `n` spans of `trace`.
fn otlp_request(trace: &str, n: u8) -> Vec<u8> {
    let spans = (1..=n)
        .map(|i| Span {
            trace_id: hex::decode(trace).expect("hex"),
            span_id: vec![i; 8],
            name: format!("span-{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_001_000_000,
            ..Default::default()
        })
        .collect();
    common::export_request(spans)
}

/// A metric's value for one label set (e.g. `reason="idle"`), summed over the others.
async fn metric_with(node: &Node, name: &str, label: &str) -> f64 {
    common::get_text(format!("{}/metrics", node.http()))
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn a_stalled_request_head_is_closed_on_both_servers(cluster: &Cluster) {
    for url in [cluster.front.otlp_http(), cluster.front.http()] {
        let mut stream = connect(&url).await;
        stream
            .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: ringtail\r\nContent-Type: appl")
            .await
            .expect("write");
        let got = read_until_closed(
            &mut stream,
            &format!("stalled head on {url}"),
            CLOSE_DEADLINE,
        )
        .await;
        assert!(got.is_empty(), "no response to half a head: {got:?}");
    }
    // A connection that sends nothing at all gets the same limit.
    let mut silent = connect(&cluster.front.otlp_http()).await;
    read_until_closed(&mut silent, "silent connection", CLOSE_DEADLINE).await;
    let closed = metric_with(
        &cluster.front,
        "ringtail_http_connections_closed_total",
        "reason=\"header_timeout\"",
    )
    .await;
    assert!(closed >= 3.0, "header timeouts counted: {closed}");
}

async fn a_stalled_body_gets_408_and_the_next_request_is_stored(cluster: &Cluster) {
    let mut stream = connect(&cluster.front.otlp_http()).await;
    stream
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: ringtail\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .await
        .expect("write");
    let (status, body) = read_response(&mut stream, CLOSE_DEADLINE).await;
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    let rpc = ringtail::rpc::proto::RpcStatus::decode(&body[..]).expect("google.rpc.Status");
    assert_eq!(
        rpc.code,
        tonic::Code::DeadlineExceeded as i32,
        "{}",
        rpc.message
    );
    read_until_closed(&mut stream, "connection after 408", CLOSE_DEADLINE).await;

    let trace = "6200000000000000000000000000a408";
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(otlp_request(trace, 3))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let query = cluster.front.http();
    wait_until("the trace reads back", Duration::from_secs(20), || async {
        spans_via_query(&query, trace).await == Ok(3)
    })
    .await;
}

async fn an_idle_keep_alive_connection_is_closed_after_a_served_request(cluster: &Cluster) {
    for url in [cluster.front.http(), cluster.front.otlp_http()] {
        let mut stream = connect(&url).await;
        for _ in 0..2 {
            // Keep-alive works: two requests on one connection.
            stream
                .write_all(b"GET /ready HTTP/1.1\r\nHost: ringtail\r\n\r\n")
                .await
                .expect("write");
            let (status, _) = read_response(&mut stream, CLOSE_DEADLINE).await;
            assert!(status == 200 || status == 404, "{url}: {status}");
        }
        let got = read_until_closed(&mut stream, &format!("idle on {url}"), CLOSE_DEADLINE).await;
        assert!(got.is_empty(), "nothing more after the response: {got:?}");
    }
    let idle = metric_with(
        &cluster.front,
        "ringtail_http_connections_closed_total",
        "reason=\"idle\"",
    )
    .await;
    assert!(idle >= 2.0, "idle closes counted: {idle}");
}

async fn http2_with_prior_knowledge_works_on_both_servers(cluster: &Cluster) {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let ready = client
        .get(format!("{}/ready", cluster.front.http()))
        .send()
        .await
        .expect("h2 /ready");
    assert_eq!(ready.version(), reqwest::Version::HTTP_2);
    assert_eq!(ready.status(), 200);
    let trace = "620000000000000000000000000000b2";
    let push = client
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(otlp_request(trace, 2))
        .send()
        .await
        .expect("h2 push");
    assert_eq!(push.version(), reqwest::Version::HTTP_2);
    assert_eq!(push.status(), 200);
    let query = cluster.front.http();
    wait_until(
        "the h2 trace reads back",
        Duration::from_secs(20),
        || async { spans_via_query(&query, trace).await == Ok(2) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_heads_stalled_bodies_and_idle_connections_are_closed_and_http2_works() {
    let cluster = Cluster::start(62, 3, &SHORT_LIMITS).await;
    a_stalled_request_head_is_closed_on_both_servers(&cluster).await;
    a_stalled_body_gets_408_and_the_next_request_is_stored(&cluster).await;
    an_idle_keep_alive_connection_is_closed_after_a_served_request(&cluster).await;
    http2_with_prior_knowledge_works_on_both_servers(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_cap_wait_until_one_closes_and_the_other_server_is_unaffected() {
    let cluster = Cluster::start(
        63,
        1,
        &[
            "--replication-factor=1",
            "--write-quorum=1",
            "--read-quorum=1",
            "--http-max-connections=4",
            "--http-header-read-timeout-ms=60000",
        ],
    )
    .await;
    let otlp = cluster.front.otlp_http();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(&otlp).await;
        stream.write_all(b"GET /v1/tr").await.expect("write");
        held.push(stream);
    }
    wait_until(
        "4 OTLP connections open",
        Duration::from_secs(10),
        || async {
            common::metric(
                &cluster.front,
                "ringtail_http_connections{server=\"otlp_http\"}",
            )
            .await
                == 4.0
        },
    )
    .await;

    // The fifth connects (the kernel's backlog) but is not served while the cap is full.
    let mut fifth = connect(&otlp).await;
    fifth
        .write_all(b"GET /v1/traces HTTP/1.1\r\nHost: ringtail\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_secs(1), fifth.read(&mut buf)).await;
    assert!(early.is_err(), "served over the cap: {early:?}");

    // The other server has its own cap.
    let ready = reqwest::get(format!("{}/ready", cluster.front.http()))
        .await
        .expect("/ready");
    assert_eq!(ready.status(), 200);

    drop(held.pop());
    let (status, _) = read_response(&mut fifth, CLOSE_DEADLINE).await;
    assert_eq!(
        status, 405,
        "GET on the OTLP route, served once a slot freed"
    );
}
