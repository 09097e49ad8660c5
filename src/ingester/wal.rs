//! The write-ahead log: every push is appended, byte for byte, before it is acked.
//!
//! Durability contract (`wal_sync`):
//! - `always` (default): a push is acked only after the WAL has been flushed to disk.
//!   Concurrent pushes share one flush (group commit): the writer thread takes every
//!   record waiting in its queue, appends them all, flushes once, then acks them all.
//!   An ack survives SIGKILL of the process and a power loss (sled fsyncs on flush).
//! - `periodic`: acked after the append; sled flushes every 500 ms in the background.
//!   A process or machine crash may lose the last ~500 ms of acked pushes on this
//!   replica (the other replicas of an ack still hold them).
//!
//! Records are framed as `crc32(payload) ‖ payload`; replay skips a record whose checksum
//! does not match (a torn or corrupted record), counts it, and goes on.
//!
//! The store is behind [`WalStore`] so sled can be swapped for another log; the measured
//! figures are in BENCHMARKS.md.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

mod file_store;

pub(crate) use file_store::FileStore;

#[derive(Debug, Error)]
pub enum WalError {
    #[error("WAL storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("WAL I/O error: {0}")]
    Io(std::io::Error),
    #[error("WAL record of {bytes} bytes is too large")]
    TooLarge { bytes: usize },
    #[error("WAL writer has stopped")]
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalSync {
    /// Flush before ack (group commit).
    Always,
    /// Ack after append; background flush every 500 ms.
    Periodic,
}

/// Which [`WalStore`] an ingester uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalStoreKind {
    /// sled 0.34 (the design card's choice).
    Sled,
    /// Append-only segment files with `fdatasync` ([`FileStore`]).
    File,
}

/// What a replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayStats {
    pub records: u64,
    pub bytes: u64,
    pub corrupt: u64,
}

/// A log of records with increasing sequence numbers. Blocking; called from the writer
/// thread (appends) or before the node serves (replay).
pub(crate) trait WalStore: Send + 'static {
    /// Appends `records` with sequence numbers `first_seq..`. After it returns the records
    /// survive a crash of the process (they are at least in the OS page cache).
    fn append(&mut self, first_seq: u64, records: &[Bytes]) -> Result<(), WalError>;
    /// Makes every appended record durable.
    fn sync(&mut self) -> Result<(), WalError>;
    /// Visits every record in sequence order; returns the next free sequence number.
    fn replay(&mut self, visit: &mut dyn FnMut(u64, Bytes))
        -> Result<(u64, ReplayStats), WalError>;
    fn size_on_disk(&self) -> u64;
    /// Drops every record with a sequence number below `seq` (they are durable elsewhere).
    /// A store may keep some of them (whole segments are dropped at once).
    fn truncate_before(&mut self, seq: u64) -> Result<(), WalError>;
}

/// sled-backed [`WalStore`]: one tree, key = big-endian sequence number.
pub(crate) struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledStore {
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, WalError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(500))
            .open()?;
        let tree = db.open_tree("wal")?;
        Ok(Self { db, tree })
    }
}

fn frame(record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(record.len() + 4);
    v.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
    v.extend_from_slice(record);
    v
}

/// The payload of a framed record, or `None` if it is torn or corrupt.
fn unframe(value: &[u8]) -> Option<&[u8]> {
    let (crc, payload) = value.split_at_checked(4)?;
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    (crc32fast::hash(payload) == crc).then_some(payload)
}

impl WalStore for SledStore {
    fn append(&mut self, first_seq: u64, records: &[Bytes]) -> Result<(), WalError> {
        for (seq, record) in (first_seq..).zip(records) {
            self.tree.insert(seq.to_be_bytes(), frame(record))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.db.flush()?;
        Ok(())
    }

    fn replay(
        &mut self,
        visit: &mut dyn FnMut(u64, Bytes),
    ) -> Result<(u64, ReplayStats), WalError> {
        let mut stats = ReplayStats::default();
        let mut next = 0;
        for item in self.tree.iter() {
            let (key, value) = item?;
            let seq = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or_default();
            next = next.max(seq + 1);
            match unframe(&value) {
                Some(payload) => {
                    stats.records += 1;
                    stats.bytes += payload.len() as u64;
                    visit(seq, Bytes::copy_from_slice(payload));
                }
                None => {
                    stats.corrupt += 1;
                    metrics::counter!("ringtail_ingester_wal_corrupt_records_total").increment(1);
                    tracing::warn!(seq, "skipping a torn or corrupt WAL record");
                }
            }
        }
        Ok((next, stats))
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn truncate_before(&mut self, seq: u64) -> Result<(), WalError> {
        let mut batch = sled::Batch::default();
        for key in self.tree.range(..seq.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

type Pending = (Bytes, oneshot::Sender<Result<u64, String>>);

enum Op {
    Append(Pending),
    TruncateBefore(u64),
}

/// The WAL: a writer thread that owns the store and acks appends by group commit.
#[derive(Clone)]
pub(crate) struct Wal {
    tx: mpsc::Sender<Op>,
    size_on_disk: Arc<AtomicU64>,
    next_seq: Arc<AtomicU64>,
}

/// With `wal_sync: periodic`, the longest time between two syncs while writes arrive.
const PERIODIC_SYNC: std::time::Duration = std::time::Duration::from_millis(500);

/// Most bytes one group commit takes from the queue.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

impl Wal {
    /// Replays `store` into `visit`, then starts the writer thread.
    pub(crate) fn start(
        mut store: Box<dyn WalStore>,
        sync: WalSync,
        visit: &mut dyn FnMut(u64, Bytes),
    ) -> Result<(Self, ReplayStats), WalError> {
        let (first_free, stats) = store.replay(visit)?;
        let (tx, rx) = mpsc::channel::<Op>(4096);
        let size_on_disk = Arc::new(AtomicU64::new(store.size_on_disk()));
        let next_seq = Arc::new(AtomicU64::new(first_free));
        let (size, next) = (size_on_disk.clone(), next_seq.clone());
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer(store, sync, rx, size, next))
            .map_err(|_| WalError::Closed)?;
        Ok((
            Self {
                tx,
                size_on_disk,
                next_seq,
            },
            stats,
        ))
    }

    /// Appends a record; resolves with its sequence number when it is durable as
    /// `wal_sync` promises.
    pub(crate) async fn append(&self, record: Bytes) -> Result<u64, WalError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Op::Append((record, done)))
            .await
            .map_err(|_| WalError::Closed)?;
        match rx.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "WAL append failed");
                Err(WalError::Closed)
            }
            Err(_) => Err(WalError::Closed),
        }
    }

    pub(crate) fn size_on_disk(&self) -> u64 {
        self.size_on_disk.load(Ordering::Relaxed)
    }

    /// The sequence number the next record will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// Asks the writer to drop records below `seq` (done in order with appends).
    pub(crate) async fn truncate_before(&self, seq: u64) -> Result<(), WalError> {
        self.tx
            .send(Op::TruncateBefore(seq))
            .await
            .map_err(|_| WalError::Closed)
    }
}

fn writer(
    mut store: Box<dyn WalStore>,
    sync: WalSync,
    mut rx: mpsc::Receiver<Op>,
    size_on_disk: Arc<AtomicU64>,
    next_seq: Arc<AtomicU64>,
) {
    let mut seq = next_seq.load(Ordering::SeqCst);
    let mut batch: Vec<Pending> = Vec::new();
    let mut records: Vec<Bytes> = Vec::new();
    let mut truncate: Option<u64> = None;
    let mut last_sync = Instant::now();
    let mut rounds = 0u64;
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Append(p) => {
                    bytes += p.0.len();
                    batch.push(p);
                }
                Op::TruncateBefore(s) => truncate = Some(truncate.map_or(s, |t| t.max(s))),
            }
            if bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let started = Instant::now();
            records.extend(batch.iter().map(|(r, _)| r.clone()));
            let first_seq = seq;
            let mut result = store.append(seq, &records);
            if result.is_ok() {
                seq += records.len() as u64;
                next_seq.store(seq, Ordering::SeqCst);
                let due = match sync {
                    WalSync::Always => true,
                    WalSync::Periodic => last_sync.elapsed() >= PERIODIC_SYNC,
                };
                if due {
                    result = store.sync();
                    last_sync = Instant::now();
                }
            }
            records.clear();
            metrics::histogram!("ringtail_ingester_wal_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("ringtail_ingester_wal_bytes_total").increment(bytes as u64);
            metrics::counter!("ringtail_ingester_wal_records_total").increment(batch.len() as u64);
            for (i, (_, done)) in batch.drain(..).enumerate() {
                let outcome = match &result {
                    Ok(()) => Ok(first_seq + i as u64),
                    Err(e) => Err(e.to_string()),
                };
                let _ = done.send(outcome);
            }
        }
        let truncated = truncate.is_some();
        if let Some(before) = truncate.take() {
            if let Err(e) = store.truncate_before(before) {
                tracing::warn!(error = %e, before, "WAL truncation failed; retried on the next cut");
            }
        }
        rounds += 1;
        if rounds % 64 == 0 || truncated {
            let size = store.size_on_disk();
            size_on_disk.store(size, Ordering::Relaxed);
            metrics::gauge!("ringtail_ingester_wal_disk_bytes").set(size as f64);
        }
    }
    if let Err(e) = store.sync() {
        tracing::error!(error = %e, "final WAL flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(store: Box<dyn WalStore>) -> (Vec<Bytes>, ReplayStats, Wal) {
        let mut seen = Vec::new();
        let (wal, stats) =
            Wal::start(store, WalSync::Always, &mut |_, b| seen.push(b)).expect("start");
        (seen, stats, wal)
    }

    #[tokio::test]
    async fn acked_records_replay_in_order_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path(), 8 << 20).expect("open");
            let (seen, _, wal) = collect(Box::new(store));
            assert!(seen.is_empty());
            for i in 0..100u32 {
                wal.append(Bytes::from(format!("record-{i}")))
                    .await
                    .expect("append");
            }
        }
        // Give the writer thread time to drop the store (it owns the sled handle).
        let mut reopened = None;
        for _ in 0..100 {
            match SledStore::open(dir.path(), 8 << 20) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let (seen, stats, wal) = collect(Box::new(reopened.expect("reopen")));
        assert_eq!(stats.records, 100);
        assert_eq!(stats.corrupt, 0);
        assert_eq!(seen.first().map(|b| b.as_ref()), Some(&b"record-0"[..]));
        assert_eq!(seen.last().map(|b| b.as_ref()), Some(&b"record-99"[..]));
        // New appends continue after the replayed sequence numbers.
        wal.append(Bytes::from_static(b"after"))
            .await
            .expect("append");
    }

    #[test]
    fn sled_a_torn_last_record_is_skipped_and_the_rest_replays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SledStore::open(dir.path(), 8 << 20).expect("open");
        let records: Vec<Bytes> = (0..10)
            .map(|i| Bytes::from(format!("record-{i}")))
            .collect();
        store.append(0, &records).expect("append");
        // A record cut short mid-write: its checksum covers bytes that never arrived.
        let full = frame(b"record-10-with-a-longer-payload");
        store
            .tree
            .insert(10u64.to_be_bytes(), &full[..full.len() - 7])
            .expect("insert");
        store.sync().expect("sync");
        let mut seen = Vec::new();
        let (next, stats) = store.replay(&mut |_, b| seen.push(b)).expect("replay");
        assert_eq!(stats.records, 10);
        assert_eq!(stats.corrupt, 1);
        assert_eq!(
            next, 11,
            "new records must not overwrite the torn one's slot"
        );
        assert_eq!(seen.last().map(|b| b.as_ref()), Some(&b"record-9"[..]));
    }
}
