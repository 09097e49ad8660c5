//! TLS on the OTLP receivers with real processes and a real SDK client: the OpenTelemetry
//! Python exporter sends over TLS (gRPC) and its traces read back, as does a request over
//! OTLP/HTTP with TLS; plaintext clients are refused;
//! a certificate replaced on disk is served to new connections without a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::Cluster;

const FRONT_IP: &str = "127.54.0.100";

/// Writes a fresh self-signed certificate for the front node's IP; returns its PEM.
fn write_certificate(dir: &Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![FRONT_IP.to_owned()]).expect("cert");
    // Key first, then the certificate: the server reloads once both changed.
    std::fs::write(dir.join("otlp.key"), cert.signing_key.serialize_pem()).expect("key");
    std::fs::write(dir.join("otlp.pem"), cert.cert.pem()).expect("cert");
    cert.cert.pem()
}

/// True when a TLS handshake with the OTLP gRPC port succeeds trusting only `ca_pem`.
async fn handshake_trusting(ca_pem: &str) -> bool {
    tls_connect(ca_pem, 4317).await.is_some()
}

/// A TLS connection to the front node's `port`, trusting only `ca_pem`.
async fn tls_connect(
    ca_pem: &str,
    port: u16,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?;
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(format!("{FRONT_IP}:{port}"))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from(FRONT_IP.to_owned()).ok()?;
    connector.connect(name, tcp).await.ok()
}

/// POSTs an OTLP/HTTP protobuf request over TLS (HTTP/1.1); returns the status line.
async fn post_over_tls(ca_pem: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(ca_pem, 4318).await.expect("TLS to 4318");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {FRONT_IP}:4318\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write head");
    tls.write_all(body).await.expect("write body");
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// An encoded OTLP request of `spans` spans (span IDs 1, 2, ...) of `trace`, named `name`.
fn spans_request(trace: &str, name: &str, spans: u8) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (1..=spans)
                    .map(|i| Span {
                        trace_id: hex::decode(trace).expect("hex"),
                        span_id: vec![i; 8],
                        name: name.into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    prost::Message::encode_to_vec(&request)
}

/// A node's `/ring` JSON (`Null` when it does not answer).
async fn ring_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    match client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

fn python_export(cluster: &Cluster, ca: &Path, traces: &str) -> (bool, String) {
    let ca = ca.display().to_string();
    common::python_export_and_verify(
        cluster,
        &[
            "--traces",
            traces,
            "--spans-per-trace",
            "5",
            "--ca-file",
            &ca,
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_exporter_sends_over_tls_and_a_renewed_certificate_is_served_without_a_restart()
{
    let certs = tempfile::tempdir().expect("tempdir");
    let first = write_certificate(certs.path());
    let cert_flag = format!(
        "--otlp-tls-cert-file={}",
        certs.path().join("otlp.pem").display()
    );
    let key_flag = format!(
        "--otlp-tls-key-file={}",
        certs.path().join("otlp.key").display()
    );
    let cluster = Cluster::start(54, 3, &[&cert_flag, &key_flag]).await;

    let ca = certs.path().join("first-ca.pem");
    std::fs::write(&ca, &first).expect("ca");
    let (ok, text) = python_export(&cluster, &ca, "200");
    assert!(ok, "python exporter over TLS failed:\n{text}");
    assert!(text.contains("verified 200 complete"), "{text}");

    // OTLP/HTTP speaks TLS too.
    let trace = "54545454545454545454545454545454";
    let request = spans_request(trace, "over-tls", 1);
    let status = post_over_tls(&first, &request).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        common::spans_via_query(&cluster.front.http(), trace).await,
        Ok(1)
    );
    let plain = reqwest::Client::new()
        .post(format!("{}/v1/traces", cluster.front.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(request.clone())
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plaintext OTLP/HTTP was answered: {plain:?}"
    );

    // A plaintext client gets nowhere: the port speaks TLS only.
    let plaintext = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        cluster.front.otlp_grpc(),
    )
    .await;
    if let Ok(mut client) = plaintext {
        let sent = client
            .export(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default())
            .await;
        assert!(sent.is_err(), "a plaintext export was answered: {sent:?}");
    }

    // Renew: a new key and certificate on disk. New connections get it within the
    // watcher's period; the old one is no longer trusted by a client of the new CA only.
    let second = write_certificate(certs.path());
    let c = &second;
    common::wait_until(
        "the renewed certificate to be served",
        Duration::from_secs(30),
        || async move { handshake_trusting(c).await },
    )
    .await;
    assert!(
        !handshake_trusting(&first).await,
        "the old certificate is still served"
    );
    let ca = certs.path().join("second-ca.pem");
    std::fs::write(&ca, &second).expect("ca");
    let (ok, text) = python_export(&cluster, &ca, "50");
    assert!(ok, "python exporter after the renewal failed:\n{text}");
    let metrics = common::get_text(format!("{}/metrics", cluster.front.http())).await;
    assert!(
        metrics.contains("ringtail_tls_reloads_total{server=\"otlp\"}"),
        "{metrics}"
    );
}

/// A CA, and a node certificate it signed for `name`, written to `dir` as
/// `<prefix>-ca.pem`, `<prefix>.pem` and `<prefix>.key`.
fn write_ca_and_node(dir: &Path, prefix: &str, name: &str) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let node_key = rcgen::KeyPair::generate().expect("node key");
    let node = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("params")
        .signed_by(&node_key, &ca)
        .expect("node cert");
    std::fs::write(dir.join(format!("{prefix}-ca.pem")), ca.pem()).expect("ca");
    std::fs::write(dir.join(format!("{prefix}.pem")), node.pem()).expect("cert");
    std::fs::write(dir.join(format!("{prefix}.key")), node_key.serialize_pem()).expect("key");
}

fn internal_tls(dir: &Path, prefix: &str, ca_prefix: &str) -> ringtail::tls::InternalTls {
    ringtail::tls::InternalTls {
        cert: dir.join(format!("{prefix}.pem")),
        key: dir.join(format!("{prefix}.key")),
        ca: dir.join(format!("{ca_prefix}-ca.pem")),
        server_name: "ringtail-internal".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_grpc_is_mutual_tls_and_refuses_clients_without_a_certificate_of_the_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.path();
    write_ca_and_node(dir, "node", "ringtail-internal");
    write_ca_and_node(dir, "stranger", "ringtail-internal");
    let flags = [
        format!(
            "--internal-tls-cert-file={}",
            dir.join("node.pem").display()
        ),
        format!("--internal-tls-key-file={}", dir.join("node.key").display()),
        format!(
            "--internal-tls-ca-file={}",
            dir.join("node-ca.pem").display()
        ),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(55, 3, &flags).await;

    // Distributor → ingesters and querier → ingesters run over mutual TLS.
    let trace = "55555555555555555555555555555555";
    let (status, _) = common::post_protobuf(&cluster.front, spans_request(trace, "mtls", 2)).await;
    assert_eq!(status, 200);
    assert_eq!(
        common::spans_via_query(&cluster.front.http(), trace).await,
        Ok(2)
    );

    let keys =
        ringtail::cluster_keys::ClusterKeys::new(&[common::cluster_secret(55)], "").expect("keys");
    let find = || ringtail::rpc::proto::FindTraceRequest {
        tenant: "single-tenant".into(),
        trace_id: hex::decode(trace).expect("hex").into(),
    };
    let addr = cluster.ingesters[0].grpc_addr();
    let client = |tls: Option<ringtail::tls::InternalTls>| {
        ringtail::rpc::IngesterClients::new(ringtail::rpc::auth::Credential::new(Some(&keys)), tls)
            .get(addr)
    };
    // A node certificate of the cluster's CA, and the token: found.
    let found = client(Some(internal_tls(dir, "node", "node")))
        .find_trace_by_id(find())
        .await
        .expect("mutual TLS with the cluster's certificate")
        .into_inner();
    assert!(found.found);
    // Plaintext, or a certificate another CA signed (trusting the server's CA): refused,
    // whatever the token.
    for (what, tls) in [
        ("plaintext", None),
        (
            "another CA's certificate",
            Some(internal_tls(dir, "stranger", "node")),
        ),
    ] {
        let refused = client(tls).find_trace_by_id(find()).await;
        assert!(refused.is_err(), "{what}: {refused:?}");
    }
    // A client that trusts another CA does not accept the ingester either.
    let refused = client(Some(internal_tls(dir, "node", "stranger")))
        .find_trace_by_id(find())
        .await;
    assert!(
        refused.is_err(),
        "a server outside the client's CA: {refused:?}"
    );
}

/// The name the test's HTTP certificate carries: a Service name, as a certificate issued
/// in a deployment would, not the nodes' addresses.
const HTTP_NAME: &str = "ringtail-http.test";

/// `ringtail <command> <args>` for the node at `ip` with the HTTP TLS settings (or not),
/// read from the environment as the chart's probes do; returns (exit code, output).
fn probe(
    command: &str,
    ip: std::net::IpAddr,
    tls: &[(&str, String)],
    args: &[&str],
) -> (i32, String) {
    let out = Command::new(common::BIN)
        .arg(command)
        .args(args)
        .env("RINGTAIL_HTTP_LISTEN", format!("{ip}:3200"))
        .envs(tls.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run ringtail");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_api_speaks_tls_to_users_probes_and_peers_with_a_certificate_for_a_service_name() {
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.path();
    write_ca_and_node(dir, "http", HTTP_NAME);
    let tls = [
        (
            "RINGTAIL_HTTP_TLS_CERT_FILE",
            dir.join("http.pem").display().to_string(),
        ),
        (
            "RINGTAIL_HTTP_TLS_KEY_FILE",
            dir.join("http.key").display().to_string(),
        ),
        (
            "RINGTAIL_HTTP_TLS_CA_FILE",
            dir.join("http-ca.pem").display().to_string(),
        ),
        ("RINGTAIL_HTTP_TLS_SERVER_NAME", HTTP_NAME.to_owned()),
    ];
    let flags: Vec<String> = tls
        .iter()
        .map(|(env, value)| {
            let flag = env
                .trim_start_matches("RINGTAIL_")
                .to_lowercase()
                .replace('_', "-");
            format!("--{flag}={value}")
        })
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Ready and with every ingester in its ring, as seen over HTTPS.
    let mut cluster = Cluster::start(56, 3, &flags).await;
    let front = cluster.front.client();

    // A user reads a trace over HTTPS, trusting the CA and checking the name.
    let trace = "56565656565656565656565656565656";
    let request = spans_request(trace, "over https", 1);
    common::otlp_grpc_client(&cluster.front)
        .await
        .export(ringtail::rpc::codec::RawBytes(request.into()))
        .await
        .expect("export");
    let read = front
        .get(format!("{}/api/traces/{trace}", cluster.front.http()))
        .send()
        .await
        .expect("query over TLS");
    assert_eq!(read.status(), 200);
    let body = read.text().await.expect("body");
    assert!(body.contains("over https"), "{body}");
    // Plain HTTP to the same port gets no answer.
    let plain = reqwest::get(format!("http://{}:3200/ready", cluster.front.ip)).await;
    assert!(plain.is_err(), "plaintext answered: {plain:?}");

    // The probes call the node the way its peers do; without the TLS settings they cannot.
    let ip = cluster.ingesters[0].ip;
    let (code, out) = probe("healthcheck", ip, &tls, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("https://{ip}:3200/ready: 200")),
        "{out}"
    );
    let (code, out) = probe("healthcheck", ip, &[], &[]);
    assert_eq!(code, 1, "{out}");

    // Nodes call each other's HTTPS API: a node that starts after a crash learns the
    // absent ingester from its peers' `/ring`...
    cluster.ingester("ingester-3").kill();
    let absent = |client: reqwest::Client, url: String| async move {
        ring_json(&client, &url).await["absent_ingesters"]
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m["name"] == "ingester-3"))
    };
    let front_ring = format!("{}/ring", cluster.front.http());
    common::wait_until(
        "the front to list ingester-3 as absent",
        Duration::from_secs(15),
        || absent(front.clone(), front_ring.clone()),
    )
    .await;
    let late = cluster.spawn_extra("late-querier", 101, "querier").await;
    let late_ring = format!("{}/ring", late.http());
    common::wait_until(
        "the late querier to learn ingester-3 is absent",
        Duration::from_secs(15),
        || absent(late.client(), late_ring.clone()),
    )
    .await;
    // ...and a forget on one node reaches every other member (once the front knows the
    // late querier: gossip brings it to the front a moment after it joined).
    common::wait_until(
        "the front to list the late querier",
        Duration::from_secs(15),
        || async {
            ring_json(&front, &front_ring).await["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == "late-querier"))
        },
    )
    .await;
    let forgot = front
        .post(format!("{}/ring/forget/ingester-3", cluster.front.http()))
        .send()
        .await
        .expect("forget");
    assert_eq!(forgot.status(), 200);
    let text = forgot.text().await.expect("body");
    assert!(text.contains("on 3 of 3 other members"), "{text}");
    assert!(!absent(late.client(), late_ring).await);

    // `ringtail shutdown` over HTTPS: the ingester drains and stops.
    let ip = cluster.ingesters[1].ip;
    let (code, out) = probe("shutdown", ip, &tls, &["--wait-ms", "30000"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the node stopped answering"), "{out}");
}
