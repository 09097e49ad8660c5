//! The two ingester calls the distributor and the querier make, behind a trait, so their
//! quorum logic is unit tested against in-memory ingesters (`fake`) instead of sockets.
//!
//! [`IngesterPool`] hands out the [`IngesterApi`] of an ingester address. The real pool
//! is [`IngesterClients`]: the tonic clients as they are (one lazily connected channel
//! per ingester, TLS, the cluster token). Calls return `'static` futures because
//! [`call_with_quorum`](super::quorum::call_with_quorum) runs each in its own task,
//! which outlives the caller (a slow replica's push is not cancelled); it also applies
//! the timeouts, so nothing here does.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::codec::PushBody;
use super::ingester_service::ingester_client::IngesterClient;
use super::pool::{Client, IngesterClients};
use super::proto::{
    FindTraceRequest, SearchRequest, SearchResponse, SearchTagsRequest, SearchTagsResponse,
};
use super::quorum::CallError;

#[cfg(test)]
pub(crate) mod fake;

/// One ingester, as the distributor and the querier call it.
pub trait IngesterApi: Send + Sync {
    /// Sends one encoded `PushRequest` as it is: the body is not decoded or encoded again.
    /// Returns the indices of the segments refused as too large (see `PushResponse`).
    fn push(&self, body: PushBody) -> BoxFuture<'static, Result<Vec<u32>, CallError>>;

    /// The ingester's copy of a trace: its `resource_spans`, or `None` if it holds none.
    fn find_trace_by_id(
        &self,
        request: FindTraceRequest,
    ) -> BoxFuture<'static, Result<Option<Bytes>, CallError>>;

    /// The traces the ingester holds that match a TraceQL query.
    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, CallError>>;

    /// Tag names, or one tag's values, in what the ingester holds.
    fn search_tags(
        &self,
        request: SearchTagsRequest,
    ) -> BoxFuture<'static, Result<SearchTagsResponse, CallError>>;
}

/// The ingesters by address.
pub trait IngesterPool: Send + Sync {
    /// The client of the ingester whose internal gRPC address is `addr`. Never blocks on
    /// the network.
    fn client(&self, addr: SocketAddr) -> Box<dyn IngesterApi>;
}

/// `body` (compressed) as a plain push, for an ingester without `PushCompressed`.
fn plain_push(body: PushBody) -> Result<PushBody, CallError> {
    metrics::counter!("ringtail_distributor_plain_push_fallbacks_total").increment(1);
    let plain = super::push_frame::plain_of(&body.into_bytes(), super::pool::MAX_INTERNAL_MESSAGE)
        .map_err(|e| CallError::Status {
            code: tonic::Code::Internal,
            message: format!("could not send a plain push: {e}"),
        })?;
    Ok(PushBody {
        shared: plain.into(),
        own: Bytes::new(),
        compressed: false,
    })
}

// The generated methods are called by path: they take `&mut self`, so method syntax
// would pick this trait's `&self` methods first and recurse.
impl IngesterApi for Client {
    fn push(&self, body: PushBody) -> BoxFuture<'static, Result<Vec<u32>, CallError>> {
        let mut client = self.clone();
        async move {
            if !body.compressed {
                let answer = IngesterClient::push(&mut client, body).await?.into_inner();
                return Ok(answer.too_large);
            }
            match IngesterClient::push_compressed(&mut client, body.clone()).await {
                Ok(answer) => Ok(answer.into_inner().too_large),
                // An ingester of an earlier version: the same push, plain.
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    let plain = plain_push(body)?;
                    let answer = IngesterClient::push(&mut client, plain).await?.into_inner();
                    Ok(answer.too_large)
                }
                Err(status) => Err(status.into()),
            }
        }
        .boxed()
    }

    fn find_trace_by_id(
        &self,
        request: FindTraceRequest,
    ) -> BoxFuture<'static, Result<Option<Bytes>, CallError>> {
        let mut client = self.clone();
        async move {
            let found = IngesterClient::find_trace_by_id(&mut client, request)
                .await?
                .into_inner();
            Ok(found.found.then_some(found.resource_spans))
        }
        .boxed()
    }

    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, CallError>> {
        let mut client = self.clone();
        async move {
            Ok(IngesterClient::search(&mut client, request)
                .await?
                .into_inner())
        }
        .boxed()
    }

    fn search_tags(
        &self,
        request: SearchTagsRequest,
    ) -> BoxFuture<'static, Result<SearchTagsResponse, CallError>> {
        let mut client = self.clone();
        async move {
            Ok(IngesterClient::search_tags(&mut client, request)
                .await?
                .into_inner())
        }
        .boxed()
    }
}

impl IngesterPool for IngesterClients {
    fn client(&self, addr: SocketAddr) -> Box<dyn IngesterApi> {
        Box::new(self.get(addr))
    }
}
