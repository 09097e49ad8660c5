use std::os::unix::fs::MetadataExt;

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

/// A block in a local folder is linked into a filesystem store: the store's objects are
/// the same files (nothing copied) and read back as the block; linking again (a retried
/// flush) replaces them whole; the store keeps them once the local folder is gone. Links
/// cannot do it for a store without a folder, nor for a block missing an object, and say
/// so (the caller uploads a copy).
#[tokio::test]
async fn a_local_block_is_linked_into_a_filesystem_store_without_a_copy() {
    let local_dir = tempfile::tempdir().expect("tempdir");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let local = BlockStore::local(local_dir.path()).expect("store");
    let store = BlockStore::local(store_dir.path()).expect("store");
    let encoded = block("t1", "b1", &[1, 2, 3]);
    local.upload(&encoded).await.expect("written");
    let from = local_dir.path().join("t1").join("b1");
    for _ in 0..2 {
        assert!(store.link_block(&from, &encoded.meta).await, "linked");
    }
    let inode = |root: &std::path::Path| {
        std::fs::metadata(root.join("t1/b1").join(DATA))
            .expect("data")
            .ino()
    };
    assert_eq!(inode(local_dir.path()), inode(store_dir.path()));
    std::fs::remove_dir_all(&from).expect("removed");
    let read = store.read_block("t1", "b1").await.expect("read");
    assert_eq!(read.data, encoded.data);
    assert_eq!(read.index, encoded.index);
    assert_eq!(read.filter, encoded.filter);
    assert_eq!(read.meta.block_id, "b1");
    let found = store.list_blocks("t1").await.expect("listed");
    assert_eq!(found.len(), 1);

    let mut with_search = encoded.meta.clone();
    with_search.search_version = 1;
    local.upload(&encoded).await.expect("written");
    assert!(
        !store.link_block(&from, &with_search).await,
        "no search object"
    );
    let in_memory = BlockStore::new(Arc::new(object_store::memory::InMemory::new()));
    assert!(!in_memory.link_block(&from, &encoded.meta).await);
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
