//! OTLP/gRPC receiver (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{Distributor, PushError, PushOutcome};
use crate::model::{TenantError, TenantId, TENANT_HEADER};
use crate::rpc::codec::RawBytes;
use crate::rpc::otlp_service::trace_service_server::{TraceService, TraceServiceServer};

pub(crate) struct OtlpGrpc(Arc<Distributor>);

pub(crate) fn server(distributor: Arc<Distributor>) -> TraceServiceServer<OtlpGrpc> {
    // tonic refuses messages above its own limit with OUT_OF_RANGE before we see them;
    // keep its limit above ours so oversized requests get RESOURCE_EXHAUSTED from us.
    let limit = distributor.settings().max_recv_msg_size.saturating_mul(4);
    // Responses go uncompressed: they are empty unless spans were rejected, and gzip
    // would turn 0 bytes into 20 at the cost of a deflate context per request.
    TraceServiceServer::new(OtlpGrpc(distributor))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit)
}

/// tonic refuses a message above its decoding limit before the handler runs, with
/// OUT_OF_RANGE, which OTLP exporters retry forever. Such a request can never succeed:
/// answer RESOURCE_EXHAUSTED without RetryInfo (not retryable), as our own limit does.
/// tonic puts the status of a refused request in the response headers (trailers-only).
pub(crate) fn refuse_oversized_for_good<B>(mut response: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &str = "11";
    if response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
    {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

pub(crate) fn tenant_from_metadata(
    meta: &MetadataMap,
    multitenancy: bool,
) -> Result<TenantId, TenantError> {
    TenantId::from_header(meta.get(TENANT_HEADER).map(|v| v.as_bytes()), multitenancy)
}

pub(crate) fn export_response(outcome: &PushOutcome) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: outcome.rejection_message.as_ref().map(|message| {
            ExportTracePartialSuccess {
                rejected_spans: outcome.rejected_spans as i64,
                error_message: message.clone(),
            }
        }),
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<RawBytes>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant =
            tenant_from_metadata(request.metadata(), self.0.settings().multitenancy_enabled)
                .map_err(PushError::from)?;
        let body = request.into_inner().0;
        let outcome = self.0.push(&tenant, &body).await?;
        Ok(Response::new(export_response(&outcome)))
    }
}
