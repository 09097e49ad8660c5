//! TLS on the OTLP receivers with real processes and a real SDK client: the OpenTelemetry
//! Python exporter sends over TLS and its traces read back; a plaintext client is refused;
//! a certificate replaced on disk is served to new connections without a restart.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{python, Cluster};

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
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(builder) =
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let Ok(tcp) = tokio::net::TcpStream::connect(format!("{FRONT_IP}:4317")).await else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(FRONT_IP.to_owned()) else {
        return false;
    };
    connector.connect(name, tcp).await.is_ok()
}

fn python_export(cluster: &Cluster, ca: &Path, traces: &str) -> (bool, String) {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/export_and_verify.py"
        ))
        .args(["--endpoint", &cluster.front.otlp_grpc_addr()])
        .args(["--query-url", &cluster.front.http()])
        .args(["--traces", traces, "--spans-per-trace", "5"])
        .arg("--ca-file")
        .arg(ca)
        .output()
        .expect("run python exporter");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
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
