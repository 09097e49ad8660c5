//! The accept loop and connection handling of both HTTP servers (the API/admin server on
//! `http_listen` and OTLP/HTTP on `otlp_http_listen`): HTTP/1.1 with keep-alive and
//! HTTP/2 (h2c, prior knowledge) on one port, with the limits of [`HttpLimits`].
//!
//! What a client can no longer hold forever, and who enforces it:
//! - **The request head** must arrive within `header_read_timeout`, counted from the
//!   connection's opening for its first request (HTTP/1 and HTTP/2), and for each later
//!   HTTP/1 request from its first byte. The connection's watchdog enforces it and drops
//!   the connection. hyper's own `http1().header_read_timeout` is not used: since hyper 1.6
//!   its timer also runs while a keep-alive connection sits idle, so it would close idle
//!   connections after the (short) header timeout instead of `idle_timeout`, below the
//!   idle timeouts of the load balancers in front (AWS ALB: 60 s), which then race our close
//!   and answer 502.
//! - **A request body** that delivers no data for `body_timeout` fails with
//!   [`tower_http::timeout::TimeoutError`] (the gap between frames is timed, not the
//!   whole upload); OTLP answers it with 408 and a `google.rpc.Status`
//!   (`PushError::BodyTimeout`).
//! - **An idle connection** (no request in flight) is shut down gracefully after
//!   `idle_timeout`: HTTP/1 closes, HTTP/2 sends GOAWAY. HTTP/2 connections are also pinged
//!   every [`H2_PING_INTERVAL`] and closed when a ping goes unanswered for
//!   [`H2_PING_TIMEOUT`] (a vanished peer with a stream open).
//! - **Connections** per server are capped at `max_connections`: see [`serve`] for why a
//!   connection beyond the cap waits rather than being refused.
//!
//! Handler time is not limited here: a request in flight (head read, response not yet
//! produced) has no deadline, so long queries and slow ingesters keep their own timeouts.
//!
//! Shutdown: when `stop` is cancelled the listener closes, every connection is shut down
//! gracefully (in-flight requests finish) and [`serve`] returns when all have closed.
//!
//! Metrics: `ringtail_http_connections{server}` (open connections) and
//! `ringtail_http_connections_closed_total{server,reason}` with `reason` one of
//! [`CloseReason::as_str`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::tls::ReloadingTls;

/// HTTP/2 keep-alive pings: how often, and how long an answer may take.
pub(crate) const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
pub(crate) const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits every HTTP server applies (from `http_*` config fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// The whole request head must arrive within this (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest gap between two pieces of a request body (default 30 s).
    pub body_timeout: Duration,
    /// A connection with no request in flight is closed after this (default 120 s).
    pub idle_timeout: Duration,
    /// Open connections per server (default 4096).
    pub max_connections: usize,
}

/// One server: its metric label and whether handlers get the peer's `ConnectInfo`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerSpec {
    pub name: &'static str,
    pub connect_info: bool,
}

/// Why a connection ended: the `reason` label of `ringtail_http_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The request head did not arrive within `header_read_timeout`.
    HeaderTimeout,
    /// No request in flight for `idle_timeout`.
    Idle,
    /// The node is shutting down.
    Shutdown,
    /// The connection ended cleanly: the client closed it, or a response closed it
    /// (`Connection: close`, or a request whose body was not read, e.g. after a body
    /// timeout).
    Closed,
    /// A protocol or I/O error, or an HTTP/2 ping that went unanswered.
    Error,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Idle => "idle",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Closed => "closed",
            CloseReason::Error => "error",
        }
    }
}

/// What the watchdog knows about a connection; times since the connection opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshot {
    in_flight: u32,
    requests_seen: bool,
    /// The first byte of a request head read while the connection was idle.
    head_started: Option<Duration>,
    /// When the last request finished (zero before the first one).
    idle_since: Duration,
}

/// The next moment the watchdog acts on, and what it does then; `None` while a request
/// is in flight. Pure: the rules of the module doc, without a clock.
fn next_deadline(s: &Snapshot, limits: &HttpLimits) -> Option<(Duration, CloseReason)> {
    if s.in_flight > 0 {
        return None;
    }
    if !s.requests_seen {
        return Some((limits.header_read_timeout, CloseReason::HeaderTimeout));
    }
    match s.head_started {
        Some(t) => Some((t + limits.header_read_timeout, CloseReason::HeaderTimeout)),
        None => Some((s.idle_since + limits.idle_timeout, CloseReason::Idle)),
    }
}

/// A connection's activity, shared by its socket wrapper, its service and its watchdog.
/// Updated with relaxed atomics: a few per request, one load per socket read.
struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    requests_seen: AtomicBool,
    http2: AtomicBool,
    /// Milliseconds since `opened`, plus one; 0 for none.
    head_started_ms: AtomicU64,
    idle_since_ms: AtomicU64,
    /// Wakes the watchdog when a deadline may have moved earlier or appeared.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests_seen: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            head_started_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Bytes arrived. On an idle HTTP/1 connection they start the next request's head.
    fn on_read(&self) {
        if self.in_flight.load(Relaxed) == 0
            && self.requests_seen.load(Relaxed)
            && !self.http2.load(Relaxed)
            && self.head_started_ms.load(Relaxed) == 0
        {
            self.head_started_ms.store(self.elapsed_ms() + 1, Relaxed);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>, version: http::Version) -> InFlight {
        if version == http::Version::HTTP_2 {
            self.http2.store(true, Relaxed);
        }
        self.in_flight.fetch_add(1, Relaxed);
        self.requests_seen.store(true, Relaxed);
        self.head_started_ms.store(0, Relaxed);
        InFlight(self.clone())
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_flight: self.in_flight.load(Relaxed),
            requests_seen: self.requests_seen.load(Relaxed),
            head_started: match self.head_started_ms.load(Relaxed) {
                0 => None,
                ms => Some(Duration::from_millis(ms - 1)),
            },
            idle_since: Duration::from_millis(self.idle_since_ms.load(Relaxed)),
        }
    }
}

/// A request in flight; dropped when its response (head) is ready or it is abandoned.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.elapsed_ms(), Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.changed.notify_one();
    }
}

pin_project! {
    /// A request's future, holding its [`InFlight`] mark.
    struct Tracked<F> {
        #[pin]
        inner: F,
        mark: InFlight,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// The TCP stream, telling [`Activity`] when bytes arrive.
struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The per-connection service: marks requests in flight, adds `ConnectInfo` where the
/// server wants it and the body timeout, then calls the router.
#[derive(Clone)]
struct ConnService {
    router: Router,
    activity: Arc<Activity>,
    peer: Option<SocketAddr>,
    body_timeout: Duration,
}

type RouterFuture = Oneshot<Router, http::Request<TimeoutBody<Incoming>>>;

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Tracked<RouterFuture>;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        let mark = self.activity.request_started(req.version());
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let req = req.map(|body| TimeoutBody::new(self.body_timeout, body));
        Tracked {
            inner: self.router.clone().oneshot(req),
            mark,
        }
    }
}

type Conn<'a, S> = auto::Connection<'a, TokioIo<Watched<S>>, ConnService, TokioExecutor>;

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Heads are timed by the watchdog (see the module doc), not by hyper.
    builder.http1().keep_alive(true).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Serves `router` on `listener` until `stop`, then waits for every connection to close.
///
/// The connection cap: a permit is taken *before* `accept`, so a connection beyond the cap
/// waits in the kernel's listen backlog (its TCP handshake completes; its request is read
/// once a slot frees) instead of being accepted and closed. For an OTLP endpoint behind
/// load balancers and collectors with retries this is the better failure: a refused
/// connection is an error every client logs and retries at once (more connections under
/// overload), while waiting is backpressure the clients' and balancers' own connect and
/// request timeouts already bound, and the idle and header timeouts keep slots turning
/// over. Nothing already accepted is affected.
///
/// With `tls`, every connection speaks TLS (the handshake holds a slot, for at most the
/// handshake timeout).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    spec: ServerSpec,
    limits: HttpLimits,
    tls: Option<Arc<ReloadingTls>>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder());
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(server = spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = ConnService {
            router: router.clone(),
            activity: Arc::new(Activity::new()),
            peer: spec.connect_info.then_some(peer),
            body_timeout: limits.body_timeout,
        };
        let (builder, stop, tls) = (builder.clone(), stop.clone(), tls.clone());
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(&builder, stream, service, spec, limits, stop).await,
                Some(tls) => match crate::tls::handshake(&tls, stream).await {
                    Ok(stream) => {
                        serve_connection(&builder, stream, service, spec, limits, stop).await
                    }
                    Err(e) => {
                        metrics::counter!("ringtail_tls_handshake_failures_total", "server" => spec.name)
                            .increment(1);
                        tracing::debug!(server = spec.name, %peer, error = %e, "TLS handshake failed");
                    }
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    service: ConnService,
    spec: ServerSpec,
    limits: HttpLimits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = service.activity.clone();
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let conn = std::pin::pin!(builder.serve_connection(io, service));
    let open = metrics::gauge!("ringtail_http_connections", "server" => spec.name);
    open.increment(1.0);
    let reason = drive(conn, &activity, &limits, &stop).await;
    open.decrement(1.0);
    metrics::counter!(
        "ringtail_http_connections_closed_total",
        "server" => spec.name,
        "reason" => reason.as_str()
    )
    .increment(1);
    tracing::debug!(
        server = spec.name,
        reason = reason.as_str(),
        "connection closed"
    );
}

/// Runs a connection to its end, applying the header and idle deadlines and `stop`.
async fn drive<S>(
    mut conn: Pin<&mut Conn<'_, S>>,
    activity: &Activity,
    limits: &HttpLimits,
    stop: &CancellationToken,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining: Option<CloseReason> = None;
    loop {
        let next = match draining {
            None => next_deadline(&activity.snapshot(), limits),
            Some(_) => None,
        };
        let at = next.map(|(after, _)| activity.opened + after);
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                return match (ended, draining) {
                    (Ok(()), Some(reason)) => reason,
                    (Ok(()), None) => CloseReason::Closed,
                    (Err(_), _) => CloseReason::Error,
                };
            }
            _ = stop.cancelled(), if draining.is_none() => {
                conn.as_mut().graceful_shutdown();
                draining = Some(CloseReason::Shutdown);
            }
            _ = activity.changed.notified() => {}
            _ = sleep_until(at) => {
                // Act only if the deadline still holds (a request may just have started).
                match next_deadline(&activity.snapshot(), limits) {
                    Some((after, reason)) if activity.opened + after <= Instant::now() => {
                        if reason == CloseReason::HeaderTimeout {
                            return reason; // dropping the connection closes it
                        }
                        conn.as_mut().graceful_shutdown();
                        draining = Some(reason);
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(120),
        max_connections: 4,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_new_connection_must_send_its_first_head_within_the_header_timeout() {
        let s = Snapshot {
            in_flight: 0,
            requests_seen: false,
            head_started: None,
            idle_since: Duration::ZERO,
        };
        assert_eq!(
            next_deadline(&s, &LIMITS),
            Some((secs(10), CloseReason::HeaderTimeout))
        );
    }

    #[test]
    fn a_request_in_flight_has_no_deadline() {
        let s = Snapshot {
            in_flight: 1,
            requests_seen: true,
            head_started: None,
            idle_since: secs(5),
        };
        assert_eq!(next_deadline(&s, &LIMITS), None);
    }

    #[test]
    fn an_idle_keep_alive_connection_gets_the_idle_timeout_not_the_header_timeout() {
        let s = Snapshot {
            in_flight: 0,
            requests_seen: true,
            head_started: None,
            idle_since: secs(5),
        };
        assert_eq!(
            next_deadline(&s, &LIMITS),
            Some((secs(125), CloseReason::Idle))
        );
    }

    #[test]
    fn the_next_head_is_timed_from_its_first_byte() {
        let s = Snapshot {
            in_flight: 0,
            requests_seen: true,
            head_started: Some(secs(50)),
            idle_since: secs(5),
        };
        assert_eq!(
            next_deadline(&s, &LIMITS),
            Some((secs(60), CloseReason::HeaderTimeout))
        );
    }

    #[test]
    fn bytes_on_an_idle_http1_connection_start_a_head_but_not_on_http2() {
        let a = Arc::new(Activity::new());
        a.on_read(); // before the first request: the opening's deadline applies
        assert_eq!(a.snapshot().head_started, None);
        drop(a.request_started(http::Version::HTTP_11));
        a.on_read();
        assert!(a.snapshot().head_started.is_some());
        let mark = a.request_started(http::Version::HTTP_11);
        assert_eq!(a.snapshot().head_started, None);
        a.on_read(); // body bytes of the request in flight
        assert_eq!(a.snapshot().head_started, None);
        drop(mark);

        let h2 = Arc::new(Activity::new());
        drop(h2.request_started(http::Version::HTTP_2));
        h2.on_read(); // pings, SETTINGS: not a head
        assert_eq!(h2.snapshot().head_started, None);
        assert_eq!(h2.snapshot().in_flight, 0);
    }
}
