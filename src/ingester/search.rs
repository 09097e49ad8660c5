//! Search on an ingester: the tenant's live traces, head and sealed heads (decoded on the
//! query, off the async threads), then its local blocks.

use super::{Ingester, IngesterError};
use crate::model::TenantId;
use crate::rpc::proto::{
    SearchRequest, SearchResponse, SearchTagsRequest, SearchTagsResponse, TagValue,
};
use crate::search::{
    self, tags::parse_tag, NameScan, ScanStats, Scanner, Search, TagNames, TagValues, TimeRange,
    ValueScan,
};
use crate::traceql;

/// Local blocks fetched ahead while one is evaluated.
const BLOCKS_AHEAD: usize = 2;

fn range_of(start: u64, end: u64) -> Option<TimeRange> {
    (start != 0 || end != 0).then_some(TimeRange { start, end })
}

impl Ingester {
    pub(crate) async fn search(&self, req: SearchRequest) -> Result<SearchResponse, IngesterError> {
        if !self.is_serving() {
            return Err(IngesterError::Starting);
        }
        let tenant = TenantId::parse(&req.tenant)?;
        let query = traceql::parse(&req.query)?;
        let limit = (req.limit as usize).max(1);
        let spss = (req.spans_per_span_set as usize).max(1);
        let scanner = Search::new(
            query,
            range_of(req.start_unix_nano, req.end_unix_nano),
            limit,
            spss,
        );
        let (found, stats) = self.scan(&tenant, scanner).await;
        let traces = found
            .hits
            .iter()
            .filter_map(|h| serde_json::to_string(h).ok())
            .collect();
        Ok(SearchResponse {
            traces,
            inspected_traces: stats.traces,
            inspected_bytes: stats.bytes,
        })
    }

    pub(crate) async fn search_tags(
        &self,
        req: SearchTagsRequest,
    ) -> Result<SearchTagsResponse, IngesterError> {
        if !self.is_serving() {
            return Err(IngesterError::Starting);
        }
        let tenant = TenantId::parse(&req.tenant)?;
        let range = range_of(req.start_unix_nano, req.end_unix_nano);
        let cap = self
            .policy
            .overrides
            .get(tenant.as_str())
            .max_bytes_per_tag_values_query;
        if req.tag.is_empty() {
            let scan = NameScan {
                range,
                names: TagNames::new(cap),
            };
            let (scan, _) = self.scan(&tenant, scan).await;
            return Ok(SearchTagsResponse {
                truncated: scan.names.truncated,
                resource_tags: scan.names.resource.into_iter().collect(),
                span_tags: scan.names.span.into_iter().collect(),
                values: Vec::new(),
            });
        }
        let field =
            parse_tag(&req.tag, true).ok_or_else(|| IngesterError::BadTag(req.tag.clone()))?;
        let filter = match req.query.trim() {
            "" | "{}" => None,
            q => Some(traceql::parse(q)?),
        };
        let scan = ValueScan {
            range,
            filter,
            values: TagValues::new(field, cap),
        };
        let (scan, _) = self.scan(&tenant, scan).await;
        Ok(SearchTagsResponse {
            truncated: scan.values.truncated,
            values: scan
                .values
                .values
                .into_iter()
                .map(|v| TagValue {
                    r#type: v.kind,
                    value: v.value,
                })
                .collect(),
            ..SearchTagsResponse::default()
        })
    }

    /// Offers every trace of the tenant in the scanner's range: memory first, then the
    /// local blocks.
    async fn scan<S: Scanner>(&self, tenant: &TenantId, scanner: S) -> (S, ScanStats) {
        let Some(instance) = self.existing_instance(tenant.as_str()) else {
            return (scanner, ScanStats::default());
        };
        let (memory, blocks) = instance.search_snapshot();
        let joined = tokio::task::spawn_blocking(move || {
            let mut scanner = scanner;
            let mut stats = ScanStats::default();
            for (id, records, start, end) in &memory {
                if scanner.is_full() {
                    break;
                }
                // Traces in memory know their span times without decoding.
                if !scanner.wants(*start, *end) {
                    continue;
                }
                stats.traces += 1;
                stats.bytes +=
                    search::offer_records(&mut scanner, *id, records.iter().map(|b| &b[..]));
            }
            (scanner, stats)
        })
        .await;
        let (scanner, memory_stats) = match joined {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        metrics::counter!("ringtail_ingester_search_traces_inspected_total")
            .increment(memory_stats.traces);
        if scanner.is_full() {
            return (scanner, memory_stats);
        }
        let (scanner, block_stats) =
            search::scan_blocks(&self.local, blocks, scanner, BLOCKS_AHEAD).await;
        metrics::counter!("ringtail_ingester_search_traces_inspected_total")
            .increment(block_stats.traces);
        let mut stats = memory_stats;
        stats.add(&block_stats);
        (scanner, stats)
    }
}
