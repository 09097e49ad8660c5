//! Object storage for blocks, through the `object_store` crate.
//!
//! Layout: `<tenant>/<block id>/{data,index,filter,meta.json}`. Uploads write `meta.json`
//! last, so a half-uploaded block is never visible; block IDs are deterministic per cut,
//! so a retried upload overwrites instead of duplicating.
//!
//! Missing or partial files are normal states: a block without `meta.json` is not listed;
//! a `meta.json` whose data is gone is skipped with a warning and
//! `ringtail_storage_unreadable_blocks_total`; nothing here panics or stalls a loop.

pub mod block;
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
        Ok(Self::new(Arc::new(fs)))
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
        for (name, bytes) in [
            (DATA, &block.data),
            (INDEX, &block.index),
            (FILTER, &block.filter),
        ]
        .into_iter()
        .chain(block.search.as_ref().map(|s| (SEARCH, s)))
        {
            self.store
                .put(
                    &object(&m.tenant, &m.block_id, name),
                    PutPayload::from(bytes.clone()),
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
        let prefix = Path::from(tenant);
        let objects: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut metas = Vec::new();
        for o in objects
            .iter()
            .filter(|o| o.location.filename() == Some(META))
        {
            let parts: Vec<_> = o.location.parts().collect();
            let Some(block_id) = parts.get(1).map(|p| p.as_ref().to_owned()) else {
                continue;
            };
            match self.read_meta(tenant, &block_id).await {
                Ok(m) => metas.push(m),
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
        for name in [META, DATA, INDEX, FILTER, SEARCH] {
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
mod tests {
    use super::block::{encode, BlockInfo, BlockTrace};
    use super::*;

    fn block(tenant: &str, block_id: &str, ids: &[u8]) -> EncodedBlock {
        let traces = ids
            .iter()
            .map(|&i| BlockTrace {
                id: TraceId([i; 16]),
                data: Bytes::from(vec![i; 100]),
            })
            .collect();
        encode(
            traces,
            BlockInfo {
                tenant: tenant.into(),
                block_id: block_id.into(),
                ingester: "ingester-1".into(),
                start_unix_nano: 0,
                end_unix_nano: 0,
                created_unix_secs: 0,
            },
        )
        .expect("encode")
    }

    #[tokio::test]
    async fn uploaded_blocks_are_listed_and_their_traces_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        assert!(
            store.tenants().await.expect("list").is_empty(),
            "a fresh store is a normal state"
        );
        store
            .upload(&block("t1", "b1", &[1, 2, 3]))
            .await
            .expect("upload");
        store
            .upload(&block("t1", "b1", &[1, 2, 3]))
            .await
            .expect("re-upload overwrites");
        store
            .upload(&block("t2", "b2", &[4]))
            .await
            .expect("upload");
        let metas = store.list_blocks("t1").await.expect("list");
        assert_eq!(metas.len(), 1);
        assert_eq!(store.tenants().await.expect("tenants").len(), 2);
        let found = store
            .find_trace(&metas[0], &TraceId([2; 16]))
            .await
            .expect("find");
        assert_eq!(found, Some(Bytes::from(vec![2; 100])));
        assert_eq!(
            store
                .find_trace(&metas[0], &TraceId([9; 16]))
                .await
                .expect("find"),
            None
        );
    }

    #[tokio::test]
    async fn a_block_whose_search_section_is_lost_is_still_read_whole_without_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        let b = block("t", "b", &[1, 2]).with_search(Bytes::from_static(b"section"), 1);
        store.upload(&b).await.expect("upload");
        let back = store.read_block("t", "b").await.expect("read");
        assert_eq!(back.search.as_deref(), Some(&b"section"[..]));
        assert_eq!(back.meta, b.meta);
        std::fs::remove_file(dir.path().join("t/b/search")).expect("lose it");
        let back = store.read_block("t", "b").await.expect("read");
        assert!(back.search.is_none());
        assert_eq!((back.meta.search_version, back.meta.search_bytes), (0, 0));
        assert_eq!(back.data, b.data);
    }

    #[tokio::test]
    async fn a_block_without_meta_is_invisible_and_a_meta_without_data_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        store
            .upload(&block("t", "whole", &[1]))
            .await
            .expect("upload");
        store
            .upload(&block("t", "half", &[2]))
            .await
            .expect("upload");
        store
            .inner()
            .delete(&object("t", "half", META))
            .await
            .expect("delete meta");
        store
            .upload(&block("t", "gone", &[3]))
            .await
            .expect("upload");
        store
            .inner()
            .delete(&object("t", "gone", DATA))
            .await
            .expect("delete data");
        store
            .inner()
            .delete(&object("t", "gone", FILTER))
            .await
            .expect("delete filter");
        std::fs::write(dir.path().join("t/bad/meta.json").as_path(), b"{").ok();
        std::fs::create_dir_all(dir.path().join("t/bad")).expect("mkdir");
        std::fs::write(dir.path().join("t/bad/meta.json"), b"{").expect("write");
        let metas = store.list_blocks("t").await.expect("list");
        let mut ids: Vec<_> = metas.iter().map(|m| m.block_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec!["gone", "whole"]);
        let gone = metas.iter().find(|m| m.block_id == "gone").expect("gone");
        let err = store
            .find_trace(gone, &TraceId([3; 16]))
            .await
            .expect_err("data is gone");
        assert!(err.is_not_found());
        store.delete_block("t", "gone").await.expect("delete");
        store
            .delete_block("t", "gone")
            .await
            .expect("deleting twice is fine");
    }
}
