//! Retention, orphan cleanup and tenant deletion: all driven by what the object store
//! lists, never by what a node happens to know, and safe when several nodes run them at
//! once (deleting an object that is already gone is success).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{BlockStore, StoreError, DATA, FILTER, INDEX, META};
use crate::overrides::LiveOverrides;

/// Retention settings.
#[derive(Clone, Debug)]
pub struct RetentionPolicy {
    /// Each tenant's retention: blocks whose newest span ended longer ago are deleted.
    pub(crate) overrides: Arc<LiveOverrides>,
    /// Objects of a block without `meta.json` (an upload in progress or abandoned), or a
    /// block whose data is gone, are deleted once their newest object is this old.
    pub orphan_grace: Duration,
}

impl RetentionPolicy {
    pub fn retention_for(&self, tenant: &str) -> Duration {
        self.overrides.get(tenant).block_retention
    }
}

/// What a pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RetentionStats {
    pub expired_blocks: usize,
    pub orphaned_blocks: usize,
    pub objects_deleted: usize,
    /// Staging files of multipart uploads a killed process left in a filesystem store.
    pub staged_uploads_deleted: usize,
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// One pass over every tenant: deletes expired blocks and orphans past their grace.
pub async fn run_pass(
    store: &BlockStore,
    policy: &RetentionPolicy,
    now: SystemTime,
) -> Result<RetentionStats, StoreError> {
    let mut stats = RetentionStats::default();
    for tenant in store.tenants().await? {
        let retention = policy.retention_for(&tenant);
        let cutoff = since_epoch(now).saturating_sub(retention);
        // Group every object by block folder: what has a meta, and how old it is.
        let mut folders: BTreeMap<String, (bool, Vec<Path>, SystemTime)> = BTreeMap::new();
        for o in store.list_objects(&tenant).await? {
            let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_owned()).collect();
            let Some(block_id) = parts.get(1).cloned() else {
                continue;
            };
            let entry = folders
                .entry(block_id)
                .or_insert((false, Vec::new(), UNIX_EPOCH));
            entry.0 |= o.location.filename() == Some(META);
            entry.1.push(o.location.clone());
            entry.2 = entry.2.max(o.last_modified.into());
        }
        for (block_id, (has_meta, objects, newest)) in folders {
            let age = now.duration_since(newest).unwrap_or_default();
            if has_meta {
                let meta = match store.read_meta(&tenant, &block_id).await {
                    Ok(m) => m,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => {
                        // An unreadable meta is garbage once past the grace period.
                        if age >= policy.orphan_grace {
                            tracing::warn!(tenant, block_id, error = %e, "deleting a block with an unreadable meta.json");
                            stats.orphaned_blocks += 1;
                            stats.objects_deleted += objects.len();
                            store.delete_block(&tenant, &block_id).await?;
                        }
                        continue;
                    }
                };
                let ended = if meta.end_unix_nano > 0 {
                    Duration::from_nanos(meta.end_unix_nano)
                } else {
                    Duration::from_secs(meta.created_unix_secs)
                };
                // The objects that hold its traces (a missing search section only makes
                // searches read the data instead).
                let has = |name: &str| objects.iter().any(|o| o.filename() == Some(name));
                let complete = [DATA, INDEX, FILTER].iter().all(|n| has(n));
                if ended < cutoff {
                    tracing::info!(tenant, block_id, "deleting a block past its retention");
                    stats.expired_blocks += 1;
                    stats.objects_deleted += objects.len();
                    store.delete_block(&tenant, &block_id).await?;
                } else if !complete && age >= policy.orphan_grace {
                    metrics::counter!("ringtail_storage_unreadable_blocks_total").increment(1);
                    tracing::warn!(
                        tenant,
                        block_id,
                        objects = objects.len(),
                        "deleting a block whose data is gone"
                    );
                    stats.orphaned_blocks += 1;
                    stats.objects_deleted += objects.len();
                    store.delete_block(&tenant, &block_id).await?;
                }
            } else if age >= policy.orphan_grace {
                tracing::warn!(
                    tenant,
                    block_id,
                    "deleting the objects of an upload that never completed"
                );
                stats.orphaned_blocks += 1;
                for path in &objects {
                    delete_quietly(store, path).await?;
                    stats.objects_deleted += 1;
                }
            }
        }
    }
    stats.staged_uploads_deleted = sweep_local(store, policy.orphan_grace, now).await;
    metrics::counter!("ringtail_retention_deleted_blocks_total", "reason" => "expired")
        .increment(stats.expired_blocks as u64);
    metrics::counter!("ringtail_retention_deleted_blocks_total", "reason" => "orphaned")
        .increment(stats.orphaned_blocks as u64);
    Ok(stats)
}

/// [`sweep_staged_uploads`] off the async threads, for a filesystem store.
async fn sweep_local(store: &BlockStore, grace: Duration, now: SystemTime) -> usize {
    let Some(root) = store.local_root() else {
        return 0;
    };
    tokio::task::spawn_blocking(move || sweep_staged_uploads(&root, now, grace))
        .await
        .unwrap_or_default()
}

/// A filesystem store's unfinished multipart uploads: object_store stages each as
/// `<object>#<digits>` beside its destination and never lists it, so a process killed
/// mid-upload (a compactor mid-merge) leaves it behind. Deletes the staging files under
/// `<root>/<tenant>/<block>/` last written at least `grace` before `now`, and the block
/// folders that leaves empty; returns how many files it deleted. Best effort: what cannot
/// be read or deleted waits for the next pass.
fn sweep_staged_uploads(root: &std::path::Path, now: SystemTime, grace: Duration) -> usize {
    let is_staged = |name: &str| {
        name.rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let dirs = |p: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut deleted = 0;
    for block in dirs(root).iter().flat_map(|tenant| dirs(tenant)) {
        let Ok(entries) = std::fs::read_dir(&block) else {
            continue;
        };
        let before = deleted;
        for e in entries.flatten() {
            let old_enough = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= grace);
            if old_enough && e.file_name().to_str().is_some_and(is_staged) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::warn!(file = %e.path().display(), "deleted an unfinished upload's staging file");
                        deleted += 1;
                    }
                    Err(err) => {
                        tracing::warn!(file = %e.path().display(), error = %err, "cannot delete an unfinished upload's staging file")
                    }
                }
            }
        }
        // Only succeeds when empty: a block being written keeps its folder.
        if deleted > before {
            let _ = std::fs::remove_dir(&block);
        }
    }
    deleted
}

async fn delete_quietly(store: &BlockStore, path: &Path) -> Result<(), StoreError> {
    match store.inner().delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every object of `tenant`: each block's `meta.json` first (blocks disappear
/// whole), then everything else the store lists under the tenant, until the listing is
/// empty. Returns how many objects were deleted by this call.
pub async fn delete_tenant(store: &BlockStore, tenant: &str) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for _ in 0..10 {
        let objects = store.list_objects(tenant).await?;
        if objects.is_empty() {
            break;
        }
        let (metas, rest): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|o| o.location.filename() == Some(META));
        for o in metas.iter().chain(rest.iter()) {
            delete_quietly(store, &o.location).await?;
            deleted += 1;
        }
    }
    tracing::info!(tenant, deleted, "deleted a tenant's objects");
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::super::block::{encode, BlockInfo, BlockTrace};
    use super::super::{DATA, FILTER};
    use super::*;
    use crate::model::TraceId;
    use bytes::Bytes;
    use object_store::PutPayload;

    fn block(tenant: &str, id: &str, end_ns: u64) -> super::super::block::EncodedBlock {
        encode(
            vec![BlockTrace {
                id: TraceId([7; 16]),
                data: Bytes::from_static(b"x"),
            }],
            BlockInfo {
                tenant: tenant.into(),
                block_id: id.into(),
                ingester: "i".into(),
                start_unix_nano: end_ns,
                end_unix_nano: end_ns,
                created_unix_secs: 0,
            },
        )
        .expect("encode")
    }

    fn policy(grace: Duration) -> RetentionPolicy {
        let defaults = crate::overrides::Limits {
            trace_idle_period: Duration::from_secs(10),
            max_block_duration: Duration::from_secs(120),
            max_block_bytes: 1 << 20,
            block_retention: Duration::from_secs(14 * 86400),
            ingestion_rate_bytes: 0,
            ingestion_burst_bytes: 0,
            max_bytes_per_trace: 0,
            max_bytes_per_tag_values_query: 1 << 20,
            compaction_window: Duration::from_secs(3600),
            max_compacted_block_bytes: 1 << 30,
        };
        let overrides = crate::overrides::Overrides::parse(
            defaults,
            &["short:block_retention_hours=1".to_owned()],
        )
        .expect("overrides");
        RetentionPolicy {
            overrides: Arc::new(LiveOverrides::fixed(overrides)),
            orphan_grace: grace,
        }
    }

    #[tokio::test]
    async fn old_blocks_go_and_recent_ones_stay_per_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        let now = SystemTime::now();
        let ns = |ago: Duration| since_epoch(now - ago).as_nanos() as u64;
        store
            .upload(&block("t", "old", ns(Duration::from_secs(15 * 86400))))
            .await
            .expect("upload");
        store
            .upload(&block("t", "new", ns(Duration::from_secs(86400))))
            .await
            .expect("upload");
        store
            .upload(&block("short", "day-old", ns(Duration::from_secs(86400))))
            .await
            .expect("upload");
        let stats = run_pass(&store, &policy(Duration::from_secs(3600)), now)
            .await
            .expect("pass");
        assert_eq!(stats.expired_blocks, 2);
        let left: Vec<String> = store
            .list_blocks("t")
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.block_id)
            .collect();
        assert_eq!(left, vec!["new"]);
        assert!(store.list_objects("short").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn orphans_are_kept_during_the_grace_period_and_removed_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        let now = SystemTime::now();
        // An upload in progress: data but no meta.
        store
            .inner()
            .put(
                &Path::from_iter(["t", "partial", DATA]),
                PutPayload::from_static(b"d"),
            )
            .await
            .expect("put");
        // A meta whose data is gone.
        store
            .upload(&block("t", "gutted", since_epoch(now).as_nanos() as u64))
            .await
            .expect("upload");
        store
            .inner()
            .delete(&Path::from_iter(["t", "gutted", FILTER]))
            .await
            .expect("delete");
        let stats = run_pass(&store, &policy(Duration::from_secs(3600)), now)
            .await
            .expect("pass");
        assert_eq!(
            stats,
            RetentionStats::default(),
            "young orphans are left alone"
        );
        let later = now + Duration::from_secs(7200);
        let stats = run_pass(&store, &policy(Duration::from_secs(3600)), later)
            .await
            .expect("pass");
        assert_eq!(stats.orphaned_blocks, 2);
        assert!(store.list_objects("t").await.expect("list").is_empty());
        // A second node running the same pass at once finds nothing left and succeeds.
        run_pass(&store, &policy(Duration::from_secs(3600)), later)
            .await
            .expect("pass");
    }

    #[tokio::test]
    async fn deleting_a_tenant_leaves_none_of_its_objects_and_no_other_tenants_objects_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        for i in 0..5 {
            store
                .upload(&block("doomed", &format!("b{i}"), 1))
                .await
                .expect("upload");
        }
        store
            .inner()
            .put(
                &Path::from_iter(["doomed", "partial", DATA]),
                PutPayload::from_static(b"d"),
            )
            .await
            .expect("put");
        store.upload(&block("kept", "b", 1)).await.expect("upload");
        let (a, b) = tokio::join!(
            delete_tenant(&store, "doomed"),
            delete_tenant(&store, "doomed")
        );
        assert!(a.expect("delete") + b.expect("delete") >= 21);
        assert!(store.list_objects("doomed").await.expect("list").is_empty());
        assert_eq!(store.list_objects("kept").await.expect("list").len(), 4);
    }

    #[tokio::test]
    async fn a_killed_uploads_staging_file_goes_after_the_grace_period_and_its_folder_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlockStore::local(dir.path()).expect("store");
        let now = SystemTime::now();
        // What a process killed during a multipart upload leaves: a staging file that no
        // listing shows, beside a finished block.
        let merging = dir.path().join("t").join("merging");
        std::fs::create_dir_all(&merging).expect("mkdir");
        std::fs::write(merging.join("data#3"), b"half a merge").expect("write");
        store
            .upload(&block("t", "kept", since_epoch(now).as_nanos() as u64))
            .await
            .expect("upload");
        assert!(store
            .list_objects("t")
            .await
            .expect("list")
            .iter()
            .all(|o| !o.location.as_ref().contains("merging")));

        let policy = policy(Duration::from_secs(3600));
        let stats = run_pass(&store, &policy, now).await.expect("pass");
        assert_eq!(
            stats.staged_uploads_deleted, 0,
            "a young one may be in progress"
        );
        assert!(merging.join("data#3").exists());

        let later = now + Duration::from_secs(7200);
        let stats = run_pass(&store, &policy, later).await.expect("pass");
        assert_eq!(stats.staged_uploads_deleted, 1);
        assert!(!merging.exists(), "the empty folder goes too");
        assert_eq!(
            store.list_objects("t").await.expect("list").len(),
            4,
            "the block stays"
        );
    }
}
