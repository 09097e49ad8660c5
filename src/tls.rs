//! TLS from PEM files that are reloaded when they change (a renewed certificate is used
//! for new connections without a restart): for the OTLP receivers, and mutual TLS for
//! internal gRPC ([`InternalTls`]), and for the HTTP API with the client side nodes use to
//! call one another's ([`HttpTls`]).
//!
//! [`ReloadingTls`] holds the current `rustls::ServerConfig`; a watcher task looks at the
//! files' modification time and size every few seconds and builds a new config when they
//! change. A file that does not parse keeps the previous config (logged, counted in
//! `ringtail_tls_reload_failures_total`): a half-written renewal never takes a receiver
//! down. [`incoming`] turns a TCP listener into a stream of connections for tonic (TLS
//! ones with the handshakes run concurrently and bounded in time, or plain ones).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the certificate and key do not make a TLS config: {0}")]
    Config(#[from] rustls::Error),
}

/// Where a server's certificate chain and key are, and for mutual TLS the CA that signs
/// the clients' certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, a client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// Mutual TLS between nodes (internal gRPC): every node presents `cert` and trusts only
/// certificates `ca` signed, and servers must present `server_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub server_name: String,
}

impl InternalTls {
    /// The server side: the node's own certificate, clients verified against the CA.
    pub fn server_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: Some(self.ca.clone()),
        }
    }

    /// The client side, read from the files at each new connection (so a renewal is
    /// picked up by the next connection; connections are long-lived HTTP/2 channels).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let (chain, key) = read_pair(&self.cert, &self.key)?;
        let roots = read_roots(&self.ca)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// TLS on the HTTP API (`http_listen`: queries, `/ring`, admin): the server's files, and
/// how nodes, `ringtail healthcheck` and `ringtail shutdown` check a node's certificate
/// when they call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTls {
    pub server: TlsFiles,
    /// The CA callers trust; `None`: Mozilla's roots (a publicly issued certificate).
    pub ca: Option<PathBuf>,
    /// The name callers check in the certificate, whatever address they dial (a
    /// certificate issued for a Service name, not for each pod's IP); `None`: the host
    /// of the URL.
    pub server_name: Option<String>,
}

impl HttpTls {
    /// The client side, for calls to a node's HTTP API.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = match &self.ca {
            Some(ca) => read_roots(ca)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = match &self.server_name {
            None => builder.with_root_certificates(roots).with_no_client_auth(),
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(FixedName { inner, name }))
                    .with_no_client_auth()
            }
        };
        Ok(config)
    }
}

/// Verifies a server's certificate as the standard verifier does, but for one fixed name
/// instead of the dialed address (chain, validity, signatures are all still checked).
#[derive(Debug)]
struct FixedName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialed: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the files looked like when they were loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    cert: (Option<SystemTime>, u64),
    key: (Option<SystemTime>, u64),
    ca: (Option<SystemTime>, u64),
}

impl Stamp {
    fn of(files: &TlsFiles) -> Self {
        Self {
            cert: stamp_of(&files.cert),
            key: stamp_of(&files.key),
            ca: files.client_ca.as_deref().map_or((None, 0), stamp_of),
        }
    }
}

fn stamp_of(path: &Path) -> (Option<SystemTime>, u64) {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

/// A server config that follows its files.
pub struct ReloadingTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Stamp>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key.
fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certificates(cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::NoKey {
        path: key.to_path_buf(),
    })?;
    Ok((chain, key))
}

fn read_roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certificates(ca)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The server config for `files`, offering the `alpn` protocols.
fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let (chain, key) = read_pair(&files.cert, &files.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(read_roots(ca)?),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

impl ReloadingTls {
    /// Loads `files` now (an error here stops the node from starting).
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = Stamp::of(&files);
        let config = build(&files, &alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn,
            current: RwLock::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
        }))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rebuilds the config if a file changed since the last load; `Ok(true)` if it did.
    /// On an error the previous config stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Stamp::of(&self.files);
        let Ok(mut stamp) = self.stamp.lock() else {
            return Ok(false);
        };
        if *stamp == now {
            return Ok(false);
        }
        // Looked at once per change: a file that does not parse is retried when it
        // changes again, not every few seconds.
        *stamp = now;
        let config = build(&self.files, &self.alpn)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(config);
        }
        Ok(true)
    }

    /// Watches the files until `stop`.
    pub fn spawn_watcher(self: &Arc<Self>, what: &'static str, stop: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match tls.reload_if_changed() {
                    Ok(true) => {
                        metrics::counter!("ringtail_tls_reloads_total", "server" => what)
                            .increment(1);
                        tracing::info!(server = what, cert = %tls.files.cert.display(), "reloaded the TLS certificate");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        metrics::counter!("ringtail_tls_reload_failures_total", "server" => what)
                            .increment(1);
                        tracing::error!(server = what, error = %e, "cannot reload the TLS certificate; keeping the previous one");
                    }
                }
            }
        });
    }
}

/// A connection accepted by [`incoming`]: TLS when the server has a certificate.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(tcp) => tcp.connect_info(),
            Conn::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Handshakes one accepted connection with the current config.
pub async fn handshake(
    tls: &ReloadingTls,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    let acceptor = TlsAcceptor::from(tls.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The connections of `listener`, for tonic's `serve_with_incoming`: TLS ones when `tls`
/// is set (each handshake on a task of its own, so a slow client never holds up the
/// others; failed handshakes are logged at debug level, counted, and dropped), plain
/// ones otherwise.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    what: &'static str,
) -> impl Stream<Item = io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let Some(tls) = tls.clone() else {
                let _ = tcp.set_nodelay(true);
                if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                    break;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match handshake(&tls, tcp).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                    }
                    Err(e) => {
                        metrics::counter!("ringtail_tls_handshake_failures_total", "server" => what)
                            .increment(1);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.cert.pem()).expect("write cert");
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write key");
        files
    }

    #[test]
    fn a_changed_certificate_is_picked_up_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_pair(dir.path(), "first.example");
        let tls = ReloadingTls::load(files.clone(), &[b"h2"]).expect("load");
        let first = tls.current();
        assert_eq!(first.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!tls.reload_if_changed().expect("unchanged"));
        write_pair(dir.path(), "second.example.with.a.longer.name");
        assert!(tls.reload_if_changed().expect("reloaded"));
        assert!(!Arc::ptr_eq(&first, &tls.current()));
        let second = tls.current();
        std::fs::write(&files.key, b"not a key, a little longer than before").expect("write");
        assert!(matches!(
            tls.reload_if_changed(),
            Err(TlsError::NoKey { .. })
        ));
        assert!(
            Arc::ptr_eq(&second, &tls.current()),
            "the previous config stays"
        );
    }

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            cert: dir.path().join("none.pem"),
            key: dir.path().join("none.key"),
            client_ca: None,
        };
        let err = ReloadingTls::load(files.clone(), &[]).expect_err("missing");
        assert!(err.to_string().contains("none.pem"), "{err}");
        std::fs::write(&files.cert, b"").expect("write");
        assert!(matches!(
            ReloadingTls::load(files, &[]),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
