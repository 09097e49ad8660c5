//! The ingester end to end on real folders: push, find, cut, flush, restart.

use super::push::test_push as push;
use super::*;

fn open_in(dir: &std::path::Path, store: &std::path::Path) -> Arc<Ingester> {
    open_with(dir, store, Some(WalStoreKind::File))
}

fn open_with(
    dir: &std::path::Path,
    store: &std::path::Path,
    wal_store: Option<WalStoreKind>,
) -> Arc<Ingester> {
    try_open_with(dir, store, wal_store).expect("opens")
}

fn try_open_with(
    dir: &std::path::Path,
    store: &std::path::Path,
    wal_store: Option<WalStoreKind>,
) -> Result<Arc<Ingester>, OpenError> {
    open_limited(dir, store, wal_store, 0)
}

fn open_limited(
    dir: &std::path::Path,
    store: &std::path::Path,
    wal_store: Option<WalStoreKind>,
    max_bytes_per_trace: usize,
) -> Result<Arc<Ingester>, OpenError> {
    open_budgeted(dir, store, wal_store, max_bytes_per_trace, 1 << 20, IDLE)
}

/// The tests' `trace_idle_period`: no trace goes idle during a test.
const IDLE: Duration = Duration::from_secs(3600);

fn open_budgeted(
    dir: &std::path::Path,
    store: &std::path::Path,
    wal_store: Option<WalStoreKind>,
    max_bytes_per_trace: usize,
    max_live_bytes: usize,
    trace_idle_period: Duration,
) -> Result<Arc<Ingester>, OpenError> {
    let settings = IngesterSettings {
        data_dir: dir.to_path_buf(),
        wal_sync: WalSync::Always,
        wal_store,
        wal_cache_bytes: 1 << 20,
        cut: CutPolicy {
            max_live_bytes,
            complete_block_timeout: Duration::from_secs(3600),
            overrides: Arc::new(LiveOverrides::fixed(crate::overrides::Overrides::new(
                crate::overrides::Limits {
                    trace_idle_period,
                    max_block_duration: Duration::from_secs(3600),
                    max_block_bytes: 1 << 20,
                    block_retention: Duration::from_secs(3600),
                    ingestion_rate_bytes: 0,
                    ingestion_burst_bytes: 0,
                    max_bytes_per_trace,
                    max_bytes_per_tag_values_query: 1 << 20,
                    compaction_window: Duration::from_secs(3600),
                    max_compacted_block_bytes: 1 << 30,
                },
            ))),
        },
        name: "ingester-a".into(),
    };
    let remote = BlockStore::local(store).expect("a store folder");
    let (ingester, _) = Ingester::open(&settings, remote)?;
    ingester.start_serving();
    Ok(ingester)
}

/// A push is found live, then (after a forced cut and flush) in its local block with
/// the object store holding the block, and again after a restart from the local block
/// alone (the WAL is truncated by then).
#[tokio::test]
async fn a_pushed_trace_is_found_live_then_in_its_local_block_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let tenant = TenantId::parse("t").expect("tenant");
    let id = TraceId([2; 16]);
    let ingester = open_in(dir.path(), store.path());
    ingester.push(push(3).into()).await.expect("accepted");
    let live = ingester.find(&tenant, &id).await.expect("live");
    assert_eq!(ingester.live_trace_count(), 3);
    assert!(ingester
        .find(&TenantId::parse("u").expect("tenant"), &id)
        .await
        .is_none());

    let stats = ingester.cut_and_flush(true).await.expect("a round");
    assert_eq!(
        (
            stats.traces_cut,
            stats.blocks_completed,
            stats.blocks_flushed
        ),
        (3, 1, 1)
    );
    assert_eq!(stats.blocks_pending, 0);
    assert_eq!(ingester.live_trace_count(), 0);
    assert_eq!(ingester.find(&tenant, &id).await, Some(live.clone()));
    let remote = BlockStore::local(store.path()).expect("a store folder");
    let blocks = remote.list_blocks("t").await.expect("listed");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].total_traces, 3);
    assert_eq!(blocks[0].ingester, "ingester-a");

    drop(ingester);
    let reopened = open_in(dir.path(), store.path());
    assert_eq!(reopened.live_trace_count(), 0, "nothing left to replay");
    assert_eq!(reopened.find(&tenant, &id).await, Some(live));
}

/// A segment that would take its live trace past `max_bytes_per_trace` is refused (its
/// index returned), the rest of the push is stored, and the WAL keeps only what was
/// stored: a restart replays no refused segment.
#[tokio::test]
async fn segments_past_max_bytes_per_trace_are_refused_and_never_reach_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let tenant = TenantId::parse("t").expect("tenant");
    let (_, one) = decode_push(push(1).into(), Check::Strict).expect("valid");
    let segment = one[0].data.len();
    let limit = segment + segment / 2;
    let open = || open_limited(dir.path(), store.path(), Some(WalStoreKind::File), limit);
    let ingester = open().expect("opens");
    assert_eq!(
        ingester.push(push(2).into()).await.expect("stored"),
        Vec::<u32>::new()
    );
    // Traces 1 and 2 would double: refused; trace 3 is new: stored.
    assert_eq!(
        ingester.push(push(3).into()).await.expect("stored"),
        vec![0, 1]
    );
    // A push of nothing but refused segments is answered without a WAL record.
    assert_eq!(
        ingester.push(push(1).into()).await.expect("answered"),
        vec![0]
    );
    for t in 1..=3u8 {
        let held = ingester
            .find(&tenant, &TraceId([t; 16]))
            .await
            .expect("live");
        assert_eq!(held.len(), segment, "trace {t} holds one segment");
    }
    drop(ingester);
    let reopened = open().expect("reopens");
    for t in 1..=3u8 {
        let held = reopened
            .find(&tenant, &TraceId([t; 16]))
            .await
            .expect("replayed");
        assert_eq!(held.len(), segment, "trace {t} replays one segment");
    }
}

#[tokio::test]
async fn a_push_is_refused_until_serving_and_after_the_drain_begins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let ingester = open_in(dir.path(), store.path());
    ingester.refuse_pushes().await;
    let refused = ingester.push(push(1).into()).await.expect_err("leaving");
    assert_eq!(refused.error_code(), ErrorCode::Unavailable);
    assert!(matches!(refused, IngesterError::Leaving));
    let malformed = ingester
        .push(Bytes::from_static(b"\xff\xff"))
        .await
        .expect_err("malformed");
    assert_eq!(malformed.error_code(), ErrorCode::BadRequest);
}

/// When block completions fall behind (here: they fail, the local disk refusing the
/// tenant's folder) so that more than one sealed head holding more than `max_live_bytes`
/// waits, pushes are held back, and answered UNAVAILABLE after a second, so memory stays
/// bounded (as are the pushes held: past `cut::may_hold`, a push is refused at once);
/// nothing refused reaches the WAL, and a push held back goes on as soon as the
/// completions catch up.
#[tokio::test]
async fn pushes_wait_while_sealed_heads_pile_up_and_go_on_once_completions_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let tenant = TenantId::parse("t").expect("tenant");
    let segment = push(1).len();
    let open = || {
        open_budgeted(
            dir.path(),
            store.path(),
            Some(WalStoreKind::File),
            0,
            segment,
            IDLE,
        )
    };
    let ingester = open().expect("opens");
    let blocked = dir.path().join("complete/t");
    std::fs::create_dir_all(dir.path().join("complete")).expect("mkdir");
    std::fs::write(&blocked, b"not a folder").expect("write");
    for _ in 0..2 {
        ingester.push(push(3).into()).await.expect("accepted");
        ingester.run_cut(CutScope::All).await;
        ingester
            .run_complete()
            .await
            .expect_err("the tenant's folder is a file");
    }
    let refused = ingester.push(push(4).into()).await.expect_err("behind");
    assert!(
        matches!(refused, IngesterError::Behind { heads: 2, .. }),
        "{refused}"
    );
    assert_eq!(refused.error_code(), ErrorCode::Unavailable);
    assert!(ingester.find(&tenant, &TraceId([4; 16])).await.is_none());

    let held_back = tokio::spawn({
        let ingester = ingester.clone();
        async move { ingester.push(push(4).into()).await }
    });
    // While one push is held (all that a budget this small allows), the next is refused
    // at once rather than held in memory too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ingester.held_bytes.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = ingester.push(push(5).into()).await.expect_err("behind");
    assert!(matches!(refused, IngesterError::Behind { .. }), "{refused}");
    assert!(
        !held_back.is_finished(),
        "refused while the first is still held"
    );
    std::fs::remove_file(&blocked).expect("remove");
    ingester.run_complete().await.expect("completes");
    held_back
        .await
        .expect("joins")
        .expect("accepted once the completions caught up");
    drop(ingester);
    let reopened = open().expect("reopens");
    assert!(
        reopened.find(&tenant, &TraceId([4; 16])).await.is_some(),
        "the push accepted after the wait is in the WAL"
    );
    assert!(reopened.find(&tenant, &TraceId([5; 16])).await.is_none());
}

/// Unset, `wal_store` is the file store; a data folder that already holds a sled WAL
/// (sled was the default) keeps it, with its acked traces, instead of refusing to start.
#[tokio::test]
async fn an_unset_wal_store_is_the_file_store_and_keeps_an_existing_sled_wal() {
    let store = tempfile::tempdir().expect("tempdir");
    let fresh = tempfile::tempdir().expect("tempdir");
    let ingester = open_with(fresh.path(), store.path(), None);
    ingester.push(push(1).into()).await.expect("accepted");
    assert!(fresh
        .path()
        .join("wal-segments")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    assert!(!fresh.path().join("wal").exists());

    let old = tempfile::tempdir().expect("tempdir");
    let sled = open_with(old.path(), store.path(), Some(WalStoreKind::Sled));
    sled.push(push(2).into()).await.expect("accepted");
    drop(sled);
    // The WAL's writer thread releases sled's folder lock shortly after the drop.
    let mut reopened = try_open_with(old.path(), store.path(), None);
    for _ in 0..50 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reopened = try_open_with(old.path(), store.path(), None);
    }
    let reopened = reopened.expect("reopens on its sled WAL");
    let tenant = TenantId::parse("t").expect("tenant");
    assert!(reopened.find(&tenant, &TraceId([2; 16])).await.is_some());
    assert!(!old.path().join("wal-segments").exists());
}

/// The trace IDs (hex) a search of everything on `ingester` finds.
async fn searched(ingester: &Ingester) -> Vec<String> {
    let found = ingester
        .search(crate::rpc::proto::SearchRequest {
            tenant: "t".into(),
            query: "{}".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("searched");
    let mut ids: Vec<String> = found
        .traces
        .iter()
        .map(|t| {
            let hit: serde_json::Value = serde_json::from_str(t).expect("a hit");
            hit["traceID"].as_str().expect("an ID").to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// `test_push(traces)` naming the segments at `unindexed` as indexed by other replicas.
fn push_unindexed(traces: u8, unindexed: &[u32]) -> Bytes {
    let mut body = push(traces);
    body.extend_from_slice(&crate::rpc::push_frame::encode_unindexed(unindexed));
    body.into()
}

/// A cut round woken because the live traces outgrew their budget cuts them down to it and
/// no further: traces already idle stay live until a round of the one-second tick, which
/// looks for idle traces (walking every live trace) and cuts them.
#[tokio::test]
async fn a_round_woken_over_budget_cuts_to_the_budget_and_leaves_idle_traces_to_the_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let budget = 4096;
    // Every trace is idle as soon as it is appended.
    let ingester = open_budgeted(
        dir.path(),
        store.path(),
        Some(WalStoreKind::File),
        0,
        budget,
        Duration::ZERO,
    )
    .expect("opens");
    let live_bytes = || ingester.live_bytes.load(Ordering::Relaxed);
    ingester.push(push(2).into()).await.expect("accepted");
    assert_eq!(ingester.cut(false).await.traces_cut, 0, "under budget");
    assert_eq!(ingester.live_trace_count(), 2, "idle, under budget: live");

    ingester.push(push(200).into()).await.expect("accepted");
    assert!(live_bytes() > budget, "{} bytes live", live_bytes());
    let woken = ingester.cut(false).await.traces_cut;
    assert!(woken > 0, "over budget: cut");
    assert!(
        live_bytes() <= budget / 4 * 3,
        "{} bytes left",
        live_bytes()
    );
    let left = ingester.live_trace_count();
    assert!(left > 0, "idle, under budget again: live");

    assert_eq!(
        ingester.cut(true).await.traces_cut,
        left,
        "the tick cuts the idle"
    );
    assert_eq!((ingester.live_trace_count(), live_bytes()), (0, 0));
}

/// Traces a push names as unindexed are stored like the others (searchable while in
/// memory, found by ID, in the block's data) but left out of the block's search section,
/// which other replicas' blocks hold them in. The WAL keeps the mark: a replayed push is
/// cut the same way. A block whose traces are all unindexed still gets a section (an empty
/// one), or a search would decode its data and find them after all.
#[tokio::test]
async fn unindexed_traces_are_stored_and_found_by_id_but_left_out_of_the_search_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let tenant = TenantId::parse("t").expect("tenant");
    let hex = |b: u8| crate::model::TraceId([b; 16]).to_hex();
    let ingester = open_in(dir.path(), store.path());
    ingester
        .push(push_unindexed(3, &[0, 2]))
        .await
        .expect("accepted");
    assert_eq!(searched(&ingester).await, [hex(1), hex(2), hex(3)], "live");
    drop(ingester);

    let ingester = open_in(dir.path(), store.path());
    assert_eq!(ingester.live_trace_count(), 3, "replayed");
    let stats = ingester.cut_and_flush(true).await.expect("a round");
    assert_eq!((stats.traces_cut, stats.blocks_flushed), (3, 1));
    assert_eq!(searched(&ingester).await, [hex(2)], "the local block");
    for b in 1..=3 {
        let id = crate::model::TraceId([b; 16]);
        assert!(ingester.find(&tenant, &id).await.is_some(), "trace {b}");
    }
    let remote = BlockStore::local(store.path()).expect("a store folder");
    let blocks = remote.list_blocks("t").await.expect("listed");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].total_traces, 3);

    // Every trace unindexed: an empty section, and a search of the block finds none.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let ingester = open_in(dir.path(), store.path());
    ingester
        .push(push_unindexed(2, &[0, 1]))
        .await
        .expect("accepted");
    ingester.cut_and_flush(true).await.expect("a round");
    assert!(searched(&ingester).await.is_empty());
    let remote = BlockStore::local(store.path()).expect("a store folder");
    let blocks = remote.list_blocks("t").await.expect("listed");
    assert_eq!(blocks[0].total_traces, 2);
    assert!(blocks[0].search_bytes > 0, "an empty section is written");
}

/// An `unindexed` index past the push's segments is a malformed push; in a WAL record
/// (acked already) it is ignored and the segments kept.
#[test]
fn an_unindexed_index_past_the_segments_is_refused_but_replayed() {
    let body = push_unindexed(2, &[1, 2]);
    match decode_push(body.clone(), Check::Strict) {
        Err(e @ push::PushDecodeError::Unindexed { .. }) => {
            assert_eq!(
                e.to_string(),
                "push names segment 2 as unindexed, but has 2 segments"
            )
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("accepted"),
    }
    let (_, segments) = decode_push(body, Check::Replay).expect("replayed");
    let indexed: Vec<bool> = segments.iter().map(|s| s.indexed).collect();
    assert_eq!(indexed, [true, false]);
}

/// A push whose traces came compressed is stored, found, and replayed from the WAL (which
/// keeps it compressed, as it came) after a restart.
#[tokio::test]
async fn a_compressed_push_is_found_and_replays_from_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let tenant = TenantId::parse("t").expect("tenant");
    let ingester = open_in(dir.path(), store.path());
    let compressed = super::push::test_push_compressed(3, &[]);
    ingester.push(compressed).await.expect("accepted");
    let other = tempfile::tempdir().expect("tempdir");
    let plain = open_in(other.path(), store.path());
    plain.push(push(3).into()).await.expect("accepted");
    for t in 1..=3u8 {
        let id = TraceId([t; 16]);
        assert_eq!(
            ingester.find(&tenant, &id).await,
            plain.find(&tenant, &id).await,
            "trace {t} as the plain push stores it"
        );
    }
    drop(ingester);
    let reopened = open_in(dir.path(), store.path());
    assert_eq!(reopened.live_trace_count(), 3, "replayed from the WAL");
    let id = TraceId([2; 16]);
    assert!(reopened.find(&tenant, &id).await.is_some());
    assert_eq!(
        reopened.find(&tenant, &id).await,
        plain.find(&tenant, &id).await
    );
}

/// The internal gRPC service of an ingester of an earlier version, which has no
/// `PushCompressed`: tonic answers a method a service lacks with UNIMPLEMENTED.
/// It counts the calls it refused.
#[derive(Clone)]
struct EarlierVersion<S>(S, Arc<std::sync::atomic::AtomicUsize>);

impl<S> tonic::server::NamedService for EarlierVersion<S> {
    const NAME: &'static str = "ringtail.v1.Ingester";
}

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for EarlierVersion<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Send,
    S::Future: Send + 'static,
    B: Default + Send + 'static,
{
    type Response = http::Response<B>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        use futures::FutureExt;
        if request.uri().path() == "/ringtail.v1.Ingester/PushCompressed" {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let refused = tonic::Status::unimplemented("no such method").into_http();
            return async move { Ok(refused) }.boxed();
        }
        self.0.call(request).boxed()
    }
}

/// A distributor's compressed push to an ingester of an earlier version (rolling
/// upgrades) goes through as a plain push: over real gRPC, the ingester stores the traces.
#[tokio::test]
async fn a_compressed_push_to_an_ingester_without_the_method_is_sent_plain() {
    use crate::rpc::ingester_client::IngesterPool;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tempfile::tempdir().expect("tempdir");
    let ingester = open_in(dir.path(), store.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = EarlierVersion(
        crate::rpc::ingester_service::ingester_server::IngesterServer::new(
            super::service::IngesterService(ingester.clone(), 1 << 20),
        ),
        refusals.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                crate::tls::incoming(listener, None, "test"),
                stop.clone().cancelled_owned(),
            ),
    );
    let clients = crate::rpc::pool::IngesterClients::new(Default::default(), None);
    let compressed = super::push::test_push_compressed(3, &[]);
    let body = crate::rpc::codec::PushBody {
        shared: compressed,
        own: Bytes::new(),
        compressed: true,
    };
    let refused = clients.client(addr).push(body).await.expect("stored");
    assert!(refused.is_empty());
    assert_eq!(
        refusals.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "tried compressed once, then sent plain"
    );
    let tenant = TenantId::parse("t").expect("tenant");
    for t in 1..=3u8 {
        assert!(ingester.find(&tenant, &TraceId([t; 16])).await.is_some());
    }
    stop.cancel();
    server.await.expect("joins").expect("served");
}
