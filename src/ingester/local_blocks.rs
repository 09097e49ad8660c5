//! Complete blocks on this ingester's disk, `<data_dir>/complete/<tenant>/<block>/`: how they
//! are written (each object fsynced, `meta.json` last), found again at start, and marked
//! flushed or quarantined across restarts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_128;

use crate::model::TenantId;
use crate::storage::block::{self, BlockMeta, EncodedBlock};
use crate::storage::{StoreError, DATA, FILTER, INDEX, META, SEARCH};

/// Marker file written next to a local block once the object store holds it.
pub(super) const FLUSHED_MARKER: &str = "flushed";
/// Marker file (holding the last error) of a block whose upload keeps failing while the
/// store works: it leaves the flush queue and stays here, readable, until an operator
/// acts or a slow retry succeeds.
pub(super) const QUARANTINED_MARKER: &str = "quarantined";

pub(super) struct LocalBlock {
    pub meta: BlockMeta,
    pub state: BlockState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockState {
    Pending,
    Flushed(Instant),
    /// Out of the flush queue; tried again at `retry_at`.
    Quarantined {
        retry_at: Instant,
    },
}

impl BlockState {
    pub(super) fn is_pending(self) -> bool {
        self == BlockState::Pending
    }
    pub(super) fn is_quarantined(self) -> bool {
        matches!(self, BlockState::Quarantined { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalBlockError {
    #[error("local block folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Block(#[from] block::BlockError),
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LocalBlockError + '_ {
    move |source| LocalBlockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A block's ID: fixed by who cut it, for which tenant, from which head, so a retried
/// upload (also after a restart) overwrites rather than duplicates.
pub(super) fn block_id(ingester: &str, tenant: &TenantId, head_seq: u64) -> String {
    format!(
        "{:032x}",
        xxh3_128(format!("{ingester}/{tenant}/{head_seq}").as_bytes())
    )
}

/// The complete blocks under `dir`, per tenant; removes incomplete ones (no `meta.json`:
/// the WAL still holds their traces).
pub(super) fn open(dir: &Path) -> Result<BTreeMap<TenantId, Vec<LocalBlock>>, LocalBlockError> {
    let mut blocks: BTreeMap<TenantId, Vec<LocalBlock>> = BTreeMap::new();
    let now = Instant::now();
    for tenant in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let tenant = tenant.map_err(io_err(dir))?.path();
        let Ok(entries) = std::fs::read_dir(&tenant) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let meta = std::fs::read(dir.join(META))
                .ok()
                .and_then(|b| serde_json::from_slice::<BlockMeta>(&b).ok());
            let Some(meta) = meta else {
                metrics::counter!("ringtail_ingester_incomplete_local_blocks_total").increment(1);
                tracing::warn!(path = %dir.display(), "removing an incomplete local block (its traces are still in the WAL)");
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            let owner = match TenantId::parse(&meta.tenant) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(path = %dir.display(), error = %e, "a local block names an invalid tenant; leaving it on disk, unread");
                    continue;
                }
            };
            let state = if dir.join(FLUSHED_MARKER).exists() {
                BlockState::Flushed(now)
            } else if dir.join(QUARANTINED_MARKER).exists() {
                BlockState::Quarantined { retry_at: now }
            } else {
                BlockState::Pending
            };
            blocks
                .entry(owner)
                .or_default()
                .push(LocalBlock { meta, state });
        }
    }
    Ok(blocks)
}

/// Writes a block's objects into `dir`, `meta.json` last, each fsynced, then the folder.
pub(super) fn write(dir: &Path, block: &EncodedBlock) -> Result<(), LocalBlockError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let meta = serde_json::to_vec_pretty(&block.meta).map_err(|e| LocalBlockError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let search = block.search.as_ref().map(|s| (SEARCH, &s[..]));
    for (name, bytes) in [
        (DATA, &block.data[..]),
        (INDEX, &block.index[..]),
        (FILTER, &block.filter[..]),
    ]
    .into_iter()
    .chain(search)
    .chain([(META, &meta[..])])
    {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(io_err(&path))?;
        f.write_all(bytes).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    Ok(())
}
