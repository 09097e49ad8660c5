//! [`WalStore`] on append-only segment files, synced with `fdatasync`.
//!
//! Layout: `<dir>/<first seq, 20 digits>.seg`. A record is
//! `len: u32 LE ‖ crc32(seq ‖ payload): u32 LE ‖ seq: u64 LE ‖ payload`. A group commit is
//! one `write` of all its records, then one `fdatasync`. A segment is closed at
//! [`SEGMENT_BYTES`]; every open starts a new segment.
//!
//! Replay reads segments in order. A bad record at the end of the last segment is a torn
//! write (the process died mid-append, so it was never acked): the segment is truncated
//! there. A bad record anywhere else is corruption: the rest of that segment is skipped,
//! counted and logged, and replay goes on with the next segment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ReplayStats, WalError, WalStore};

/// Size at which a segment is closed and a new one started.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 16;

pub(crate) struct FileStore {
    dir: PathBuf,
    /// The segment being appended to: file, first sequence number, length.
    current: Option<(File, u64, u64)>,
    /// Closed segments: first sequence number, path, length. Sorted.
    closed: Vec<(u64, PathBuf, u64)>,
    /// One past the last record written (or replayed).
    next: u64,
    buf: Vec<u8>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

impl FileStore {
    pub(crate) fn open(dir: &Path) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(WalError::Io)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: None,
            closed: Vec::new(),
            next: 0,
            buf: Vec::new(),
        })
    }

    /// Segment files, sorted by their first sequence number.
    fn segments(&self) -> Result<Vec<(u64, PathBuf)>, WalError> {
        let mut segs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(WalError::Io)? {
            let path = entry.map_err(WalError::Io)?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segs.push((first, path));
            }
        }
        segs.sort();
        Ok(segs)
    }

    fn new_segment(&mut self, first_seq: u64) -> Result<(), WalError> {
        if let Some((file, first, len)) = self.current.take() {
            file.sync_data().map_err(WalError::Io)?;
            self.closed
                .push((first, segment_path(&self.dir, first), len));
        }
        let path = segment_path(&self.dir, first_seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(WalError::Io)?;
        // Make the new file's directory entry durable too.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(WalError::Io)?;
        self.current = Some((file, first_seq, 0));
        Ok(())
    }
}

/// Parses the records of one segment; returns the byte length of its valid prefix.
fn parse_segment(
    data: &Bytes,
    visit: &mut dyn FnMut(u64, Bytes),
    stats: &mut ReplayStats,
    next: &mut u64,
) -> usize {
    let mut pos = 0;
    while data.len() - pos >= HEADER {
        let h = &data[pos..pos + HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let seq = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        let end = pos + HEADER + len;
        if end > data.len() || checksum(seq, &data[pos + HEADER..end]) != crc {
            break;
        }
        stats.records += 1;
        stats.bytes += len as u64;
        *next = (*next).max(seq + 1);
        visit(seq, data.slice(pos + HEADER..end));
        pos = end;
    }
    pos
}

fn count_corrupt(stats: &mut ReplayStats) {
    stats.corrupt += 1;
    metrics::counter!("ringtail_ingester_wal_corrupt_records_total").increment(1);
}

impl WalStore for FileStore {
    fn append(&mut self, first_seq: u64, records: &[Bytes]) -> Result<(), WalError> {
        if self
            .current
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= SEGMENT_BYTES)
        {
            self.new_segment(first_seq)?;
        }
        self.buf.clear();
        for (seq, r) in (first_seq..).zip(records) {
            let len = u32::try_from(r.len()).map_err(|_| WalError::TooLarge { bytes: r.len() })?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&checksum(seq, r).to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            self.buf.extend_from_slice(r);
        }
        let Some((file, _, len)) = self.current.as_mut() else {
            return Err(WalError::Closed);
        };
        file.write_all(&self.buf).map_err(WalError::Io)?;
        *len += self.buf.len() as u64;
        self.next = first_seq + records.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        if let Some((file, _, _)) = &self.current {
            file.sync_data().map_err(WalError::Io)?;
        }
        Ok(())
    }

    fn replay(
        &mut self,
        visit: &mut dyn FnMut(u64, Bytes),
    ) -> Result<(u64, ReplayStats), WalError> {
        let mut stats = ReplayStats::default();
        let mut next = 0;
        let segments = self.segments()?;
        for (i, (first, path)) in segments.iter().enumerate() {
            next = next.max(*first);
            let data = match fs::read(path) {
                Ok(d) => Bytes::from(d),
                Err(e) => {
                    count_corrupt(&mut stats);
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable WAL segment");
                    continue;
                }
            };
            let valid = parse_segment(&data, visit, &mut stats, &mut next);
            if valid < data.len() {
                count_corrupt(&mut stats);
                if i + 1 == segments.len() {
                    tracing::warn!(path = %path.display(), offset = valid, "truncating a torn record at the end of the WAL");
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(valid as u64).and_then(|()| f.sync_all()))
                        .map_err(WalError::Io)?;
                } else {
                    tracing::warn!(path = %path.display(), offset = valid, "skipping the corrupt rest of a WAL segment");
                }
            }
            self.closed.push((*first, path.clone(), valid as u64));
        }
        self.next = next;
        Ok((next, stats))
    }

    fn size_on_disk(&self) -> u64 {
        self.closed.iter().map(|(_, _, len)| len).sum::<u64>()
            + self.current.as_ref().map_or(0, |(_, _, len)| *len)
    }

    /// Deletes every segment whose records all lie below `seq`: a segment ends where the
    /// next one begins, the newest one at the next sequence number. The current segment
    /// goes too when nothing in it is needed; the next append starts a new one.
    fn truncate_before(&mut self, seq: u64) -> Result<(), WalError> {
        let remove = |path: &Path| match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WalError::Io(e)),
        };
        let current_first = self.current.as_ref().map(|(_, first, _)| *first);
        let mut keep_from = 0;
        for i in 0..self.closed.len() {
            let end = self
                .closed
                .get(i + 1)
                .map(|(first, _, _)| *first)
                .or(current_first)
                .unwrap_or(self.next);
            if end > seq {
                break;
            }
            remove(&self.closed[i].1)?;
            keep_from = i + 1;
        }
        self.closed.drain(..keep_from);
        if self.closed.is_empty() && self.next <= seq {
            if let Some((_, first, _)) = self.current.take() {
                remove(&segment_path(&self.dir, first))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(range: std::ops::Range<u64>) -> Vec<Bytes> {
        range.map(|i| Bytes::from(format!("record-{i}"))).collect()
    }

    fn replay(dir: &Path) -> (Vec<Bytes>, u64, ReplayStats) {
        let mut store = FileStore::open(dir).expect("open");
        let mut seen = Vec::new();
        let (next, stats) = store.replay(&mut |_, b| seen.push(b)).expect("replay");
        (seen, next, stats)
    }

    #[test]
    fn records_replay_in_order_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileStore::open(dir.path()).expect("open");
        store.append(0, &records(0..5)).expect("append");
        store.sync().expect("sync");
        drop(store);
        let (seen, next, _) = replay(dir.path());
        assert_eq!(seen, records(0..5));
        let mut store = FileStore::open(dir.path()).expect("open");
        store.replay(&mut |_, _| {}).expect("replay");
        store.append(next, &records(5..8)).expect("append");
        store.sync().expect("sync");
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen, records(0..8));
        assert_eq!(next, 8);
        assert_eq!(stats.corrupt, 0);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_rest_replays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileStore::open(dir.path()).expect("open");
        store.append(0, &records(0..10)).expect("append");
        store.sync().expect("sync");
        drop(store);
        // The process died in the middle of writing the last record.
        let seg = segment_path(dir.path(), 0);
        let len = fs::metadata(&seg).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .and_then(|f| f.set_len(len - 5))
            .expect("truncate");
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen, records(0..9));
        assert_eq!(next, 9);
        assert_eq!(stats.corrupt, 1);
        // The tail was truncated: a second replay is clean, and new records follow.
        let (seen, _, stats) = replay(dir.path());
        assert_eq!((seen.len(), stats.corrupt), (9, 0));
    }

    #[test]
    fn truncation_drops_whole_segments_below_the_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (first, range) in [(0, 0..3), (3, 3..6), (6, 6..9)] {
            let mut store = FileStore::open(dir.path()).expect("open");
            store.replay(&mut |_, _| {}).expect("replay");
            store.append(first, &records(range)).expect("append");
            store.sync().expect("sync");
        }
        let mut store = FileStore::open(dir.path()).expect("open");
        store.replay(&mut |_, _| {}).expect("replay");
        store.truncate_before(5).expect("truncate");
        // Segment [0,3) is gone; [3,6) holds 5, so it stays.
        let (seen, next, _) = replay(dir.path());
        assert_eq!(seen, records(3..9));
        assert_eq!(next, 9);
        store.truncate_before(8).expect("truncate");
        let (seen, _, _) = replay(dir.path());
        assert_eq!(seen, records(6..9), "record 8 is still needed");
        store.truncate_before(9).expect("truncate");
        let (seen, next, _) = replay(dir.path());
        assert!(seen.is_empty(), "nothing is needed any more");
        assert_eq!(
            next, 0,
            "an empty WAL starts over; sequence numbers only order records"
        );
    }

    #[test]
    fn a_corrupt_middle_segment_is_skipped_and_later_segments_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileStore::open(dir.path()).expect("open");
        store.append(0, &records(0..3)).expect("append");
        drop(store);
        let mut store = FileStore::open(dir.path()).expect("open");
        store.append(3, &records(3..6)).expect("append");
        drop(store);
        let seg = segment_path(dir.path(), 0);
        let mut data = fs::read(&seg).expect("read");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&seg, data).expect("write");
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen.len(), 5);
        assert_eq!(next, 6);
        assert_eq!(stats.corrupt, 1);
    }
}
