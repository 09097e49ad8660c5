//! Search and tags on the querier: every readable ingester (ACTIVE or LEAVING) is asked
//! at once, with `search_timeout`; with a time range, the object store's blocks in the
//! range are scanned here at the same time. Answers are merged (one hit per trace ID,
//! most recent first, at most `limit`). An ingester that fails or times out does not fail
//! the request: the answer says which parts are missing (`partial`).

use std::time::Instant;

use futures::future::join_all;

use super::Querier;
use crate::model::TenantId;
use crate::rpc::proto::{SearchRequest, SearchTagsRequest};
use crate::search::{
    self, merge_hits, NameScan, ScanStats, Search, SearchParams, TagNames, TagParams, TagValue,
    TagValues, TimeRange, TraceHit, ValueScan,
};
use crate::traceql::ast::Field;

/// Tempo's `SearchMetrics`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SearchMetrics {
    pub inspected_traces: u64,
    #[serde(serialize_with = "as_string")]
    pub inspected_bytes: u64,
    pub total_blocks: u64,
    pub completed_jobs: u64,
    pub total_jobs: u64,
}

fn as_string<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

pub(crate) struct SearchOutcome {
    pub traces: Vec<TraceHit>,
    pub metrics: SearchMetrics,
    /// What could not be searched ("ingester-2: timed out after 10000 ms").
    pub partial: Vec<String>,
}

pub(crate) struct TagsOutcome<T> {
    pub found: T,
    pub partial: Vec<String>,
}

fn nanos(range: Option<TimeRange>) -> (u64, u64) {
    range.map_or((0, 0), |r| (r.start, r.end))
}

impl Querier {
    /// The tenant's `max_bytes_per_tag_values_query`.
    fn tag_bytes_cap(&self, tenant: &TenantId) -> usize {
        self.settings
            .overrides
            .get(tenant.as_str())
            .max_bytes_per_tag_values_query
    }

    /// Scans `blocks` as jobs (`search::jobs`) with this querier's limits.
    async fn scan_jobs<S: search::Scanner>(
        &self,
        blocks: Vec<crate::storage::block::BlockMeta>,
        scanner: S,
    ) -> (S, search::jobs::JobStats) {
        let limits = self.settings.search_jobs;
        let jobs = search::jobs::plan(blocks, limits.target_bytes);
        search::jobs::run(&self.store, jobs, scanner, limits.concurrency).await
    }

    /// The tenant's blocks in the store (as last listed) that may hold `range`.
    fn blocks_in(
        &self,
        tenant: &TenantId,
        range: TimeRange,
    ) -> Vec<crate::storage::block::BlockMeta> {
        self.blocklists
            .read()
            .ok()
            .and_then(|l| l.get(tenant.as_str()).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|m| search::may_hold(Some(range), m.start_unix_nano, m.end_unix_nano))
            .collect()
    }

    pub(crate) async fn search(&self, tenant: &TenantId, p: &SearchParams) -> SearchOutcome {
        let started = Instant::now();
        let (start, end) = nanos(p.range);
        let request = SearchRequest {
            tenant: tenant.as_str().to_owned(),
            query: p.query_text.clone(),
            start_unix_nano: start,
            end_unix_nano: end,
            limit: u32::try_from(p.limit).unwrap_or(u32::MAX),
            spans_per_span_set: u32::try_from(p.spans_per_set).unwrap_or(u32::MAX),
        };
        let blocks = p
            .range
            .map(|r| self.blocks_in(tenant, r))
            .unwrap_or_default();
        let total_blocks = blocks.len() as u64;
        let scanner = Search::new(p.query.clone(), p.range, p.limit, p.spans_per_set);
        let (answers, (from_blocks, jobs)) = tokio::join!(
            self.ask_ingesters(|c| c.search(request.clone())),
            self.scan_jobs(blocks, scanner),
        );
        // A job per ingester and per group of blocks (`search::jobs`).
        let mut metrics = SearchMetrics {
            total_blocks,
            total_jobs: answers.len() as u64 + jobs.total,
            completed_jobs: jobs.completed,
            inspected_traces: jobs.scan.traces,
            inspected_bytes: jobs.scan.bytes,
        };
        let mut partial = failed_blocks(&jobs.scan);
        let mut hits = from_blocks.hits;
        for (name, answer) in answers {
            match answer {
                Ok(r) => {
                    metrics.completed_jobs += 1;
                    metrics.inspected_traces += r.inspected_traces;
                    metrics.inspected_bytes += r.inspected_bytes;
                    for json in r.traces {
                        match serde_json::from_str::<TraceHit>(&json) {
                            Ok(hit) => hits.push(hit),
                            Err(e) => partial.push(format!("{name}: unreadable result: {e}")),
                        }
                    }
                }
                Err(e) => partial.push(format!("{name}: {e}")),
            }
        }
        metrics::histogram!("ringtail_querier_search_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if !partial.is_empty() {
            metrics::counter!("ringtail_querier_partial_searches_total").increment(1);
        }
        SearchOutcome {
            traces: merge_hits(hits, p.limit, p.spans_per_set),
            metrics,
            partial,
        }
    }

    pub(crate) async fn tag_names(
        &self,
        tenant: &TenantId,
        p: &TagParams,
    ) -> TagsOutcome<TagNames> {
        let (start, end) = nanos(p.range);
        let request = SearchTagsRequest {
            tenant: tenant.as_str().to_owned(),
            start_unix_nano: start,
            end_unix_nano: end,
            ..SearchTagsRequest::default()
        };
        let blocks = p
            .range
            .map(|r| self.blocks_in(tenant, r))
            .unwrap_or_default();
        let scan = NameScan {
            range: p.range,
            names: TagNames::new(self.tag_bytes_cap(tenant)),
        };
        let (answers, (scan, stats)) = tokio::join!(
            self.ask_ingesters(|c| c.search_tags(request.clone())),
            self.scan_jobs(blocks, scan),
        );
        let mut names = scan.names;
        let mut partial = failed_blocks(&stats.scan);
        for (name, answer) in answers {
            match answer {
                Ok(r) => names.absorb(r.resource_tags, r.span_tags, r.truncated),
                Err(e) => partial.push(format!("{name}: {e}")),
            }
        }
        TagsOutcome {
            found: names,
            partial,
        }
    }

    pub(crate) async fn tag_values(
        &self,
        tenant: &TenantId,
        tag: &str,
        field: Field,
        p: &TagParams,
    ) -> TagsOutcome<TagValues> {
        let (start, end) = nanos(p.range);
        let request = SearchTagsRequest {
            tenant: tenant.as_str().to_owned(),
            start_unix_nano: start,
            end_unix_nano: end,
            tag: tag.to_owned(),
            query: p.filter_text.clone().unwrap_or_default(),
        };
        let blocks = p
            .range
            .map(|r| self.blocks_in(tenant, r))
            .unwrap_or_default();
        let scan = ValueScan {
            range: p.range,
            filter: p.filter.clone(),
            values: TagValues::new(field, self.tag_bytes_cap(tenant)),
        };
        let (answers, (scan, stats)) = tokio::join!(
            self.ask_ingesters(|c| c.search_tags(request.clone())),
            self.scan_jobs(blocks, scan),
        );
        let mut values = scan.values;
        let mut partial = failed_blocks(&stats.scan);
        for (name, answer) in answers {
            match answer {
                Ok(r) => values.absorb(
                    r.values.into_iter().map(|v| TagValue {
                        kind: v.r#type,
                        value: v.value,
                    }),
                    r.truncated,
                ),
                Err(e) => partial.push(format!("{name}: {e}")),
            }
        }
        TagsOutcome {
            found: values,
            partial,
        }
    }

    /// Calls every readable ingester at once, each within the search timeout; returns each
    /// one's name and answer.
    async fn ask_ingesters<T, F>(
        &self,
        call: F,
    ) -> Vec<(String, Result<T, crate::rpc::quorum::CallError>)>
    where
        F: Fn(
            &dyn crate::rpc::IngesterApi,
        )
            -> futures::future::BoxFuture<'static, Result<T, crate::rpc::quorum::CallError>>,
    {
        let view = self.membership.view();
        let timeout = self.settings.search_timeout;
        let calls = view.readers.iter().map(|reader| {
            let client = self.clients.client(reader.grpc);
            let name = reader.name.clone();
            let fut = call(&*client);
            async move {
                let result = tokio::time::timeout(timeout, fut)
                    .await
                    .unwrap_or(Err(crate::rpc::quorum::CallError::TimedOut(timeout)));
                (name, result)
            }
        });
        join_all(calls).await
    }
}

fn failed_blocks(stats: &ScanStats) -> Vec<String> {
    if stats.failed_blocks == 0 {
        Vec::new()
    } else {
        vec![format!(
            "{} blocks in the store could not be read",
            stats.failed_blocks
        )]
    }
}
