//! The internal gRPC service distributors push to and queriers read from.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::Ingester;
use crate::error::grpc_status;
use crate::rpc::codec::PushBody;
use crate::rpc::ingester_service::ingester_server;
use crate::rpc::proto::{
    FindTraceRequest, FindTraceResponse, PushResponse, SearchRequest, SearchResponse,
    SearchTagsRequest, SearchTagsResponse,
};

/// The ingester, and the largest push it takes (`max_push_bytes`).
pub(crate) struct IngesterService(pub(super) Arc<Ingester>, pub(super) usize);

impl IngesterService {
    async fn store(&self, request: Request<PushBody>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let result = self
            .0
            .push_within(request.into_inner().into_bytes(), self.1)
            .await;
        metrics::histogram!("ringtail_ingester_push_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result
            .map(|too_large| Response::new(PushResponse { too_large }))
            .map_err(|e| grpc_status(&e))
    }
}

#[tonic::async_trait]
impl ingester_server::Ingester for IngesterService {
    async fn push(&self, request: Request<PushBody>) -> Result<Response<PushResponse>, Status> {
        self.store(request).await
    }

    /// A push whose traces are compressed (`compressed_traces`). The body says which it
    /// is, so both methods store it the same way; the method exists so that a distributor
    /// never sends compressed traces to an ingester that would not read them.
    async fn push_compressed(
        &self,
        request: Request<PushBody>,
    ) -> Result<Response<PushResponse>, Status> {
        self.store(request).await
    }

    async fn find_trace_by_id(
        &self,
        request: Request<FindTraceRequest>,
    ) -> Result<Response<FindTraceResponse>, Status> {
        let req = request.into_inner();
        let found = self
            .0
            .find_raw(&req.tenant, &req.trace_id)
            .await
            .map_err(|e| grpc_status(&e))?;
        Ok(Response::new(FindTraceResponse {
            found: found.is_some(),
            resource_spans: found.unwrap_or_default(),
        }))
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let started = Instant::now();
        let result = self.0.search(request.into_inner()).await;
        metrics::histogram!("ringtail_ingester_search_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new).map_err(|e| grpc_status(&e))
    }

    async fn search_tags(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<SearchTagsResponse>, Status> {
        self.0
            .search_tags(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| grpc_status(&e))
    }
}
