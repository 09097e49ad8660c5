//! How a node calls another node's HTTP API (a peer's `/ring`, a forwarded forget, the
//! departure check at shutdown), and how `ringtail healthcheck` and `ringtail shutdown`
//! call the local one: plain HTTP, or HTTPS checked as [`HttpTls`] says when the HTTP API
//! speaks TLS.

use std::fmt::Display;
use std::time::Duration;

use crate::tls::{HttpTls, TlsError};

#[derive(Clone, Debug)]
pub struct PeerHttp {
    client: reqwest::Client,
    scheme: &'static str,
}

impl PeerHttp {
    /// A client giving up after `timeout`, speaking TLS when `tls` is set. No proxy: an
    /// `HTTP_PROXY` in the environment must not catch a call between nodes.
    pub fn new(tls: Option<&HttpTls>, timeout: Duration) -> Result<Self, PeerHttpError> {
        let builder = reqwest::Client::builder().timeout(timeout).no_proxy();
        let (builder, scheme) = match tls {
            Some(tls) => (builder.use_preconfigured_tls(tls.client_config()?), "https"),
            None => (builder, "http"),
        };
        Ok(Self {
            client: builder.build().map_err(PeerHttpError::Client)?,
            scheme,
        })
    }

    /// `<scheme>://<addr><path>`; `path` starts with `/`.
    pub fn url(&self, addr: impl Display, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerHttpError {
    #[error("the HTTP API's TLS settings: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot build an HTTP client: {0}")]
    Client(reqwest::Error),
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::http_server::{self, HttpLimits, ServerSpec};
    use crate::tls::{ReloadingTls, TlsFiles};

    /// A self-signed certificate for `name` in `dir`: (certificate, key).
    fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let (pem, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&pem, cert.cert.pem()).expect("cert");
        std::fs::write(&key, cert.signing_key.serialize_pem()).expect("key");
        (pem, key)
    }

    /// An HTTPS server on loopback answering `/ring` with a certificate for `name`.
    async fn serve_https(files: TlsFiles) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = ReloadingTls::load(files, &[b"http/1.1"]).expect("tls");
        let router = axum::Router::new().route("/ring", axum::routing::get(|| async { "ring" }));
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 8,
        };
        let spec = ServerSpec {
            name: "test",
            connect_info: false,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(http_server::serve(
            listener,
            router,
            spec,
            limits,
            Some(tls),
            stop,
        ));
        addr
    }

    async fn answers(http: &PeerHttp, addr: std::net::SocketAddr) -> Result<String, String> {
        let resp = http
            .client()
            .get(http.url(addr, "/ring"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        resp.text().await.map_err(|e| e.to_string())
    }

    /// Nodes dial each other's IP; the certificate names a Service. The fixed name is
    /// checked instead of the IP, and everything else about the certificate still is.
    #[tokio::test]
    async fn a_certificate_for_a_name_is_checked_against_that_name_whatever_address_is_dialed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = certificate(dir.path(), "ringtail.example");
        let (stranger, _) = certificate(dir.path(), "stranger.example");
        let server = TlsFiles {
            cert: cert.clone(),
            key,
            client_ca: None,
        };
        let addr = serve_https(server.clone()).await;
        let client = |ca: &Path, name: Option<&str>| {
            let tls = HttpTls {
                server: server.clone(),
                ca: Some(ca.to_path_buf()),
                server_name: name.map(str::to_owned),
            };
            PeerHttp::new(Some(&tls), Duration::from_secs(5)).expect("client")
        };
        let named = client(&cert, Some("ringtail.example"));
        assert_eq!(named.url(addr, "/ring"), format!("https://{addr}/ring"));
        assert_eq!(answers(&named, addr).await.as_deref(), Ok("ring"));
        // Checked against the dialed IP, which the certificate does not name.
        assert!(answers(&client(&cert, None), addr).await.is_err());
        // Another name than the certificate's.
        assert!(answers(&client(&cert, Some("other.example")), addr)
            .await
            .is_err());
        // The right name, but a CA that did not issue the certificate.
        assert!(answers(&client(&stranger, Some("ringtail.example")), addr)
            .await
            .is_err());
        // Plain HTTP to an HTTPS API gets no answer.
        let plain = PeerHttp::new(None, Duration::from_secs(5)).expect("client");
        assert_eq!(plain.url(addr, "/ring"), format!("http://{addr}/ring"));
        assert!(answers(&plain, addr).await.is_err());
    }
}
