//! In-memory ingesters for unit tests: no sockets. Each address follows a [`Script`];
//! every push an ingester acks is logged, in the order the acks happened.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use prost::Message;
use tokio::sync::watch;

use super::{IngesterApi, IngesterPool};
use crate::rpc::codec::PushBody;
use crate::rpc::proto::{FindTraceRequest, PushRequest};
use crate::rpc::quorum::CallError;

/// How one fake ingester answers.
#[derive(Clone, Debug, Default)]
pub(crate) enum Script {
    /// Acks pushes, and answers finds with the trace it holds, at once.
    #[default]
    Answer,
    /// Refuses every call with this status.
    Fail { code: tonic::Code, message: String },
    /// Never answers: the caller's timeout decides.
    Hang,
    /// Answers like [`Script::Answer`] once the gate opens.
    Held(Gate),
}

impl Script {
    pub(crate) fn fail(code: tonic::Code, message: &str) -> Self {
        Script::Fail {
            code,
            message: message.to_owned(),
        }
    }

    /// Waits as scripted; `Ok` once the call may be answered.
    async fn play(self) -> Result<(), CallError> {
        match self {
            Script::Answer => Ok(()),
            Script::Fail { code, message } => Err(CallError::Status { code, message }),
            Script::Hang => std::future::pending().await,
            Script::Held(gate) => {
                gate.wait().await;
                Ok(())
            }
        }
    }
}

/// Holds the calls of a [`Script::Held`] ingester until [`Gate::open`].
#[derive(Clone, Debug)]
pub(crate) struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl Gate {
    pub(crate) fn open(&self) {
        self.0.send_replace(true);
    }

    async fn wait(&self) {
        // The sender lives in `self`, so this only returns once the gate is open.
        let _ = self.0.subscribe().wait_for(|open| *open).await;
    }
}

/// A set of fake ingesters keyed by internal gRPC address; an address nobody scripted
/// answers ([`Script::Answer`]) and holds no trace.
#[derive(Clone, Default)]
pub(crate) struct FakeIngesters {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    scripts: Mutex<HashMap<SocketAddr, Script>>,
    traces: Mutex<HashMap<SocketAddr, Bytes>>,
    acked: watch::Sender<Vec<(SocketAddr, PushRequest)>>,
}

impl FakeIngesters {
    pub(crate) fn script(&self, addr: SocketAddr, script: Script) {
        if let Ok(mut scripts) = self.inner.scripts.lock() {
            scripts.insert(addr, script);
        }
    }

    /// What the ingester at `addr` answers to every find, whatever trace is asked for:
    /// encoded `resource_spans`.
    pub(crate) fn hold(&self, addr: SocketAddr, resource_spans: Bytes) {
        if let Ok(mut traces) = self.inner.traces.lock() {
            traces.insert(addr, resource_spans);
        }
    }

    /// Every push acked so far, in the order of the acks.
    pub(crate) fn acked_pushes(&self) -> Vec<(SocketAddr, PushRequest)> {
        self.inner.acked.borrow().clone()
    }

    /// Waits (at most 5 s, then panics) until `n` pushes have been acked.
    pub(crate) async fn wait_for_acked_pushes(&self, n: usize) -> Vec<(SocketAddr, PushRequest)> {
        let mut acked = self.inner.acked.subscribe();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            acked.wait_for(|pushes| pushes.len() >= n),
        )
        .await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "fewer than {n} pushes acked within 5 s: {:?}",
            self.acked_pushes()
        );
        self.acked_pushes()
    }
}

impl IngesterPool for FakeIngesters {
    fn client(&self, addr: SocketAddr) -> Box<dyn IngesterApi> {
        Box::new(FakeIngester {
            addr,
            inner: self.inner.clone(),
        })
    }
}

struct FakeIngester {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeIngester {
    fn script(&self) -> Script {
        self.inner
            .scripts
            .lock()
            .ok()
            .and_then(|s| s.get(&self.addr).cloned())
            .unwrap_or_default()
    }
}

impl IngesterApi for FakeIngester {
    fn push(&self, body: PushBody) -> BoxFuture<'static, Result<Vec<u32>, CallError>> {
        let (script, addr, inner) = (self.script(), self.addr, self.inner.clone());
        async move {
            let malformed = |e: String| CallError::Status {
                code: tonic::Code::InvalidArgument,
                message: format!("malformed push: {e}"),
            };
            let mut push =
                PushRequest::decode(body.into_bytes()).map_err(|e| malformed(e.to_string()))?;
            // Compressed traces are read as an ingester reads them (and the field is
            // kept, so a test sees how the push came).
            crate::rpc::push_frame::expand_traces(
                &mut push,
                crate::rpc::pool::MAX_INTERNAL_MESSAGE,
            )
            .map_err(|e| malformed(e.to_string()))?;
            script.play().await?;
            inner.acked.send_modify(|acked| acked.push((addr, push)));
            Ok(Vec::new())
        }
        .boxed()
    }

    fn find_trace_by_id(
        &self,
        _request: FindTraceRequest,
    ) -> BoxFuture<'static, Result<Option<Bytes>, CallError>> {
        let (script, addr, inner) = (self.script(), self.addr, self.inner.clone());
        async move {
            script.play().await?;
            Ok(inner.traces.lock().ok().and_then(|t| t.get(&addr).cloned()))
        }
        .boxed()
    }

    fn search(
        &self,
        _request: crate::rpc::proto::SearchRequest,
    ) -> BoxFuture<'static, Result<crate::rpc::proto::SearchResponse, CallError>> {
        unsupported()
    }

    fn search_tags(
        &self,
        _request: crate::rpc::proto::SearchTagsRequest,
    ) -> BoxFuture<'static, Result<crate::rpc::proto::SearchTagsResponse, CallError>> {
        unsupported()
    }
}

/// Search is tested against real ingesters (tests/search.rs), not the fake.
fn unsupported<T: Send + 'static>() -> BoxFuture<'static, Result<T, CallError>> {
    async {
        Err(CallError::Status {
            code: tonic::Code::Unimplemented,
            message: "the fake ingester does not search".into(),
        })
    }
    .boxed()
}
