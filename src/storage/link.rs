//! A block put into a filesystem store by hard links: the store's objects are the local
//! block's files, so nothing is copied or written a second time.

use std::path::Path;

use super::block::BlockMeta;
use super::{tenant_segment, BlockStore, DATA, FILTER, INDEX, META, SEARCH};

impl BlockStore {
    /// Puts the block in local folder `from` into this filesystem store by hard links,
    /// `meta.json` last as an upload does (the block is visible from then on), each
    /// object linked under a staging name and renamed into place (a block already there
    /// is replaced whole), then the folder fsynced. `from` must be complete and fsynced,
    /// as an ingester's local blocks are, and never changed afterwards.
    ///
    /// `false` when links cannot do it: an S3 store, a store on another filesystem, a
    /// filesystem without hard links, an object missing from `from` (an upload of a copy
    /// then does it, or says what is wrong).
    pub(crate) async fn link_block(&self, from: &Path, m: &BlockMeta) -> bool {
        let Some(root) = self.local_root() else {
            return false;
        };
        let from = from.to_path_buf();
        let to = root.join(tenant_segment(&m.tenant)).join(&m.block_id);
        let mut names = vec![DATA, INDEX, FILTER];
        if m.search_version != 0 {
            names.push(SEARCH);
        }
        names.push(META);
        let linked = tokio::task::spawn_blocking(move || link_all(&from, &to, &names)).await;
        match linked {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(block_id = m.block_id, error = %e, "cannot link a block into the store; copying it");
                false
            }
            Err(_) => false,
        }
    }
}

fn link_all(from: &Path, to: &Path, names: &[&str]) -> std::io::Result<()> {
    for name in names {
        std::fs::metadata(from.join(name))?;
    }
    let new_folder = !to.exists();
    std::fs::create_dir_all(to)?;
    for name in names {
        // A staging name the retention pass sweeps if a crash leaves it behind.
        let staged = to.join(format!("{name}#0"));
        let _ = std::fs::remove_file(&staged);
        std::fs::hard_link(from.join(name), &staged)?;
        std::fs::rename(&staged, to.join(name))?;
    }
    std::fs::File::open(to)?.sync_all()?;
    if new_folder {
        if let Some(parent) = to.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}
