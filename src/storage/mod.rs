//! Object storage for blocks, through the `object_store` crate.
//!
//! Layout: `<tenant>/<block id>/{data,index,filter,search,meta.json}`, and `compacted` once
//! a merge replaced the block. Uploads write `meta.json` last, so a half-uploaded block is
//! never visible; block IDs are deterministic per cut (and per merge), so a retried upload
//! overwrites instead of duplicating.
//!
//! Missing or partial files are normal states: a block without `meta.json` is not listed;
//! a `meta.json` whose data is gone is skipped with a warning and
//! `ringtail_storage_unreadable_blocks_total`; nothing here panics or stalls a loop.

pub mod block;
mod link;
pub mod retention;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use thiserror::Error;

use crate::model::TraceId;
use block::{BlockError, BlockMeta, EncodedBlock, PageIndex, TraceFilter};
pub use settings::{S3Config, StorageConfig};

pub const DATA: &str = "data";
pub const INDEX: &str = "index";
pub const FILTER: &str = "filter";
pub const META: &str = "meta.json";
pub const SEARCH: &str = "search";
/// A block's mark that a merge replaced it (`BlockStore::mark_replaced`).
pub const COMPACTED: &str = "compacted";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("meta.json of {path} is malformed: {why}")]
    Meta { path: String, why: String },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::ObjectStore(object_store::Error::NotFound { .. })
        )
    }
}

/// One of a block's objects being streamed to the store ([`BlockStore::begin_object`]).
pub struct ObjectUpload {
    upload: object_store::WriteMultipart,
}

impl ObjectUpload {
    /// Appends `bytes`, waiting while two parts are still in flight (memory stays at a
    /// few parts whatever the block's size).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.upload.wait_for_capacity(2).await?;
        self.upload.write(bytes);
        Ok(())
    }

    /// Completes the object.
    pub async fn finish(self) -> Result<(), StoreError> {
        self.upload.finish().await?;
        Ok(())
    }

    /// Gives the upload up (its parts are discarded).
    pub async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(error = %e, "aborting a block object's upload failed");
        }
    }
}

/// A tenant's folder name, in object keys and in local block folders alike: the object
/// store's encoding of a path segment (`*` → `%2A`). Every path that holds a tenant is
/// built from this, so files written by hand and objects written through the store
/// agree.
pub fn tenant_segment(tenant: &str) -> String {
    object_store::path::PathPart::from(tenant)
        .as_ref()
        .to_owned()
}

/// The tenant a folder name stands for (the inverse of [`tenant_segment`]).
fn tenant_from_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn object(tenant: &str, block_id: &str, name: &str) -> Path {
    Path::from_iter([tenant, block_id, name])
}

/// A block store on top of any `ObjectStore`, with caches for filters and indexes.
#[derive(Clone)]
pub struct BlockStore {
    store: Arc<dyn ObjectStore>,
    /// The folder of a filesystem store (for what its listings do not show).
    local_root: Option<Arc<std::path::Path>>,
    filters: Arc<Mutex<HashMap<String, Arc<TraceFilter>>>>,
    indexes: Arc<Mutex<HashMap<String, Arc<PageIndex>>>>,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockStore({})", self.store)
    }
}

impl BlockStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            filters: Arc::default(),
            indexes: Arc::default(),
        }
    }

    /// A store in a local folder (created if needed).
    /// The store `settings` name.
    pub fn open(settings: &StorageConfig) -> Result<Self, StoreError> {
        match settings {
            StorageConfig::Filesystem { path } => Self::local(path),
            StorageConfig::S3(s3) => Self::s3(s3),
        }
    }

    pub fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true);
        Ok(Self {
            local_root: Some(Arc::from(dir)),
            ..Self::new(Arc::new(fs))
        })
    }

    /// The folder of a filesystem store; `None` for S3.
    pub(crate) fn local_root(&self) -> Option<Arc<std::path::Path>> {
        self.local_root.clone()
    }

    /// An S3 (or S3-compatible) bucket. Requests time out after 10 s and are retried a
    /// few times here; the flusher retries uploads on its own schedule after that.
    pub fn s3(cfg: &S3Config) -> Result<Self, StoreError> {
        use object_store::aws::AmazonS3Builder;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(std::time::Duration::from_secs(10))
                    .with_connect_timeout(std::time::Duration::from_secs(3)),
            )
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(15),
                ..Default::default()
            });
        if std::env::var_os("AWS_REGION").is_none() && cfg.region.is_none() {
            b = b.with_region("us-east-1");
        }
        if let Some(region) = &cfg.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &cfg.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key) = &cfg.access_key_id {
            b = b.with_access_key_id(key);
        }
        if let Some(secret) = &cfg.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        Ok(Self::new(Arc::new(b.build()?)))
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Uploads a block: data, index and filter, then `meta.json`.
    pub async fn upload(&self, block: &EncodedBlock) -> Result<(), StoreError> {
        let m = &block.meta;
        self.store
            .put(
                &object(&m.tenant, &m.block_id, DATA),
                PutPayload::from(block.data.clone()),
            )
            .await?;
        self.finish_block(
            block.index.clone(),
            block.filter.clone(),
            block.search.clone(),
            m,
        )
        .await
    }

    /// Starts one of a block's objects (`DATA`, `SEARCH`) as a stream (a multipart
    /// upload): a merge's output, written a page at a time.
    pub async fn begin_object(
        &self,
        tenant: &str,
        block_id: &str,
        name: &str,
    ) -> Result<ObjectUpload, StoreError> {
        let upload = self
            .store
            .put_multipart(&object(tenant, block_id, name))
            .await?;
        Ok(ObjectUpload {
            upload: object_store::WriteMultipart::new(upload),
        })
    }

    /// Uploads what follows a block's data: index, filter, search section, and
    /// `meta.json` last (the block is visible from then on).
    pub async fn finish_block(
        &self,
        index: Bytes,
        filter: Bytes,
        search: Option<Bytes>,
        m: &BlockMeta,
    ) -> Result<(), StoreError> {
        for (name, bytes) in [(INDEX, index), (FILTER, filter)]
            .into_iter()
            .chain(search.map(|s| (SEARCH, s)))
        {
            self.store
                .put(
                    &object(&m.tenant, &m.block_id, name),
                    PutPayload::from(bytes),
                )
                .await?;
        }
        let meta = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Meta {
            path: m.block_id.clone(),
            why: e.to_string(),
        })?;
        self.store
            .put(
                &object(&m.tenant, &m.block_id, META),
                PutPayload::from(meta),
            )
            .await?;
        Ok(())
    }

    /// Marks a block replaced by block `by` (a small `compacted` object beside its meta;
    /// its time tells when the block may be deleted).
    pub async fn mark_replaced(
        &self,
        tenant: &str,
        block_id: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        let body = serde_json::json!({ "replaced_by": by }).to_string();
        self.store
            .put(
                &object(tenant, block_id, COMPACTED),
                PutPayload::from(body.into_bytes()),
            )
            .await?;
        Ok(())
    }

    /// Reads back every object of a block (to copy it to another store).
    pub async fn read_block(
        &self,
        tenant: &str,
        block_id: &str,
    ) -> Result<EncodedBlock, StoreError> {
        let get = |name: &'static str| async move {
            self.store
                .get(&object(tenant, block_id, name))
                .await?
                .bytes()
                .await
        };
        let meta_bytes = get(META).await?;
        let mut meta = parse_meta(&meta_bytes, tenant, block_id)?;
        // A lost search section is no reason to hold the traces back: the copy goes
        // without one (and says so), and searches read its data.
        let search = match meta.search_version {
            0 => None,
            _ => match get(SEARCH).await {
                Ok(s) => Some(s),
                Err(object_store::Error::NotFound { .. }) => {
                    tracing::warn!(
                        tenant,
                        block_id,
                        "a block's search section is missing; copying the block without it"
                    );
                    meta.search_version = 0;
                    meta.search_bytes = 0;
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        Ok(EncodedBlock {
            data: get(DATA).await?,
            index: get(INDEX).await?,
            filter: get(FILTER).await?,
            search,
            meta,
        })
    }

    /// Tenants that have objects in the store.
    pub async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let listing = self.store.list_with_delimiter(None).await?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(tenant_from_segment))
            .collect())
    }

    /// The visible blocks of a tenant: every `<block>/meta.json` that parses. A meta that
    /// does not parse is skipped with a warning.
    pub async fn list_blocks(&self, tenant: &str) -> Result<Vec<BlockMeta>, StoreError> {
        Ok(self
            .list_marked(tenant)
            .await?
            .into_iter()
            .map(|(meta, _)| meta)
            .collect())
    }

    /// [`Self::list_blocks`], with when each block was marked replaced (its `compacted`
    /// object's time), from the same listing.
    pub async fn list_marked(
        &self,
        tenant: &str,
    ) -> Result<Vec<(BlockMeta, Option<std::time::SystemTime>)>, StoreError> {
        let prefix = Path::from(tenant);
        let objects: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let block_of =
            |o: &object_store::ObjectMeta| o.location.parts().nth(1).map(|p| p.as_ref().to_owned());
        let marks: HashMap<String, std::time::SystemTime> = objects
            .iter()
            .filter(|o| o.location.filename() == Some(COMPACTED))
            .filter_map(|o| Some((block_of(o)?, o.last_modified.into())))
            .collect();
        let mut metas = Vec::new();
        for o in objects
            .iter()
            .filter(|o| o.location.filename() == Some(META))
        {
            let Some(block_id) = block_of(o) else {
                continue;
            };
            match self.read_meta(tenant, &block_id).await {
                Ok(m) => {
                    let mark = marks.get(&block_id).copied();
                    metas.push((m, mark));
                }
                Err(e) if e.is_not_found() => {} // deleted since the listing
                Err(e) => {
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(tenant, block_id, error = %e, "skipping a block with an unreadable meta.json");
                }
            }
        }
        Ok(metas)
    }

    pub async fn read_meta(&self, tenant: &str, block_id: &str) -> Result<BlockMeta, StoreError> {
        let bytes = self
            .store
            .get(&object(tenant, block_id, META))
            .await?
            .bytes()
            .await?;
        parse_meta(&bytes, tenant, block_id)
    }

    /// Every object of a tenant, visible block or not (for cleanup and deletion).
    pub async fn list_objects(
        &self,
        tenant: &str,
    ) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        Ok(self
            .store
            .list(Some(&Path::from(tenant)))
            .try_collect()
            .await?)
    }

    /// Deletes a block: `meta.json` first (the block stops being visible), then the rest.
    /// Objects already gone are fine.
    pub async fn delete_block(&self, tenant: &str, block_id: &str) -> Result<(), StoreError> {
        for name in [META, DATA, INDEX, FILTER, SEARCH, COMPACTED] {
            match self.store.delete(&object(tenant, block_id, name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let key = format!("{tenant}/{block_id}");
        self.forget(&key);
        Ok(())
    }

    /// Drops cached filters and indexes of blocks for which `keep("<tenant>/<block id>")`
    /// is false (blocks retired or deleted elsewhere).
    pub fn retain_cached(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut f) = self.filters.lock() {
            f.retain(|k, _| keep(k));
        }
        if let Ok(mut i) = self.indexes.lock() {
            i.retain(|k, _| keep(k));
        }
    }

    /// Drops the cached filter and index of one block.
    pub fn forget(&self, key: &str) {
        if let Ok(mut f) = self.filters.lock() {
            f.remove(key);
        }
        if let Ok(mut i) = self.indexes.lock() {
            i.remove(key);
        }
    }

    /// A block's decoded `name` object, from `cache` or fetched and decoded once.
    async fn cached<T>(
        &self,
        cache: &Mutex<HashMap<String, Arc<T>>>,
        meta: &BlockMeta,
        name: &str,
        decode: fn(&[u8]) -> Result<T, BlockError>,
    ) -> Result<Arc<T>, StoreError> {
        let key = format!("{}/{}", meta.tenant, meta.block_id);
        if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let bytes = self
            .store
            .get(&object(&meta.tenant, &meta.block_id, name))
            .await?
            .bytes()
            .await?;
        let value = Arc::new(decode(&bytes)?);
        if let Ok(mut c) = cache.lock() {
            c.insert(key, value.clone());
        }
        Ok(value)
    }

    /// A block's index and whole data object, for a search to read every trace
    /// (`block::decode_all`, off the async threads: it decompresses every page).
    pub async fn whole_block(
        &self,
        meta: &BlockMeta,
    ) -> Result<(Arc<PageIndex>, Bytes), StoreError> {
        let index = self
            .cached(&self.indexes, meta, INDEX, PageIndex::decode)
            .await?;
        let data = self
            .store
            .get(&object(&meta.tenant, &meta.block_id, DATA))
            .await?
            .bytes()
            .await?;
        Ok((index, data))
    }

    /// A block's page index (cached).
    pub async fn page_index(&self, meta: &BlockMeta) -> Result<Arc<PageIndex>, StoreError> {
        self.cached(&self.indexes, meta, INDEX, PageIndex::decode)
            .await
    }

    /// One page of a block's data, as stored (compressed).
    pub async fn data_page(
        &self,
        meta: &BlockMeta,
        page: block::PageRange,
    ) -> Result<Bytes, StoreError> {
        Ok(self
            .store
            .get_range(
                &object(&meta.tenant, &meta.block_id, DATA),
                page.offset..page.offset + u64::from(page.len),
            )
            .await?)
    }

    /// A block's search section (`meta.search_version` > 0).
    pub async fn search_section(&self, meta: &BlockMeta) -> Result<Bytes, StoreError> {
        Ok(self
            .store
            .get(&object(&meta.tenant, &meta.block_id, SEARCH))
            .await?
            .bytes()
            .await?)
    }

    /// Byte ranges of a block's search section (adjacent ones fetched together).
    pub async fn search_section_ranges(
        &self,
        meta: &BlockMeta,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, StoreError> {
        Ok(self
            .store
            .get_ranges(&object(&meta.tenant, &meta.block_id, SEARCH), ranges)
            .await?)
    }

    /// The trace's bytes in this block: ID range → filter → index → one page.
    pub async fn find_trace(
        &self,
        meta: &BlockMeta,
        id: &TraceId,
    ) -> Result<Option<Bytes>, StoreError> {
        let hex = id.to_hex();
        if hex < meta.min_trace_id || hex > meta.max_trace_id {
            return Ok(None);
        }
        let filter = self
            .cached(&self.filters, meta, FILTER, TraceFilter::decode)
            .await?;
        if !filter.may_contain(id) {
            return Ok(None);
        }
        let index = self
            .cached(&self.indexes, meta, INDEX, PageIndex::decode)
            .await?;
        let Some(page) = index.find(id) else {
            return Ok(None);
        };
        let range = page.offset..page.offset + u64::from(page.len);
        let bytes = self
            .store
            .get_range(&object(&meta.tenant, &meta.block_id, DATA), range)
            .await?;
        Ok(block::find_in_page(&bytes, id)?)
    }
}

fn parse_meta(bytes: &[u8], tenant: &str, block_id: &str) -> Result<BlockMeta, StoreError> {
    let meta: BlockMeta = serde_json::from_slice(bytes).map_err(|e| StoreError::Meta {
        path: format!("{tenant}/{block_id}"),
        why: e.to_string(),
    })?;
    if meta.format_version != block::FORMAT_VERSION {
        return Err(BlockError::Version(meta.format_version).into());
    }
    if meta.tenant != tenant || meta.block_id != block_id {
        return Err(StoreError::Meta {
            path: format!("{tenant}/{block_id}"),
            why: format!("names {}/{}", meta.tenant, meta.block_id),
        });
    }
    Ok(meta)
}

#[cfg(test)]
mod tests;
