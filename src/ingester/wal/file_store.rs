//! [`WalStore`] on segment files, synced with `fdatasync`.
//!
//! Layout: `<dir>/<first seq, 20 digits>.seg`. A record is
//! `len: u32 LE ‖ crc32(seq ‖ payload): u32 LE ‖ seq: u64 LE ‖ payload`, and the records of a
//! segment have consecutive sequence numbers from the one in its name. A group commit is one
//! vectored `write` of all its records (headers and payloads as they are, no staging copy),
//! then one `fdatasync`. A segment is closed at [`SEGMENT_BYTES`]; every open starts a new
//! segment.
//!
//! Segments are recycled: a segment no longer needed is renamed `<end seq>.spare` (up to
//! [`SPARES`] of them) and the next new segment overwrites one from its start. Overwriting
//! blocks the file already has changes neither its size nor its extents, so the `fdatasync`
//! of a group commit writes data only and never waits for an ext4 journal commit, which
//! would also wait for whatever the block writer has dirtied on the same disk. Sequence
//! numbers never go back (an open starts past every spare's end), so the old records in a
//! recycled file's tail can never be taken for new ones: replay stops at the first record
//! whose sequence number is not the next one.
//!
//! Replay reads segments in order. A segment that ends before the next one begins is
//! corrupt: the rest of it is skipped, counted and logged, and replay goes on with the next
//! segment. In the last segment, a record whose header has the next sequence number but
//! whose payload is cut short or fails its checksum is a torn write (the process died
//! mid-append, so it was never acked): the segment is truncated there. A header there whose
//! sequence number is not the next one ends the replay uncounted: a recycled tail looks
//! the same, so a damaged sequence number in the last segment's last records cannot be
//! told from one. Segments written by earlier versions (appended, never recycled) replay
//! the same way.

use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{ReplayStats, WalError, WalStore};

/// Size at which a segment is closed and a new one started.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// Most segments kept for reuse (each about [`SEGMENT_BYTES`] on disk).
const SPARES: usize = 3;
const HEADER: usize = 16;

pub(crate) struct FileStore {
    dir: PathBuf,
    /// The segment being written: file, first sequence number, bytes written.
    current: Option<(File, u64, u64)>,
    /// Closed segments: first sequence number, path, length. Sorted.
    closed: Vec<(u64, PathBuf, u64)>,
    /// Segment files waiting to be overwritten.
    spares: Vec<PathBuf>,
    /// One past the last record written (or replayed).
    next: u64,
    headers: Vec<[u8; HEADER]>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn spare_path(dir: &Path, end_seq: u64) -> PathBuf {
    dir.join(format!("{end_seq:020}.spare"))
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn header(seq: u64, payload: &[u8]) -> Result<[u8; HEADER], WalError> {
    let len = u32::try_from(payload.len()).map_err(|_| WalError::TooLarge {
        bytes: payload.len(),
    })?;
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&checksum(seq, payload).to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    Ok(h)
}

/// Writes every byte of `slices`, in as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The files of `dir` named `<20 digits>.<suffix>`, sorted by their number.
fn numbered_files(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(WalError::Io)? {
        let path = entry.map_err(WalError::Io)?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            files.push((number, path));
        }
    }
    files.sort();
    Ok(files)
}

impl FileStore {
    pub(crate) fn open(dir: &Path) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(WalError::Io)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: None,
            closed: Vec::new(),
            spares: Vec::new(),
            next: 0,
            headers: Vec::new(),
        })
    }

    fn new_segment(&mut self, first_seq: u64) -> Result<(), WalError> {
        if let Some((file, first, len)) = self.current.take() {
            file.sync_data().map_err(WalError::Io)?;
            self.closed
                .push((first, segment_path(&self.dir, first), len));
        }
        // A segment replayed with no record in it (created just before a crash) has this
        // name: it is this segment, not a closed one.
        if self
            .closed
            .last()
            .is_some_and(|(first, _, _)| *first == first_seq)
        {
            self.closed.pop();
        }
        let path = segment_path(&self.dir, first_seq);
        if let Some(spare) = self.spares.pop() {
            fs::rename(&spare, &path).map_err(WalError::Io)?;
        }
        // Written from the start: a recycled file keeps its size and blocks.
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(WalError::Io)?;
        // Make the segment's name durable before anything in it is acked.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(WalError::Io)?;
        self.current = Some((file, first_seq, 0));
        Ok(())
    }

    /// Deletes a segment no longer needed whose records end before `end_seq`, or keeps it
    /// for reuse.
    fn retire(&mut self, path: &Path, end_seq: u64) -> Result<(), WalError> {
        let result = if self.spares.len() < SPARES {
            let spare = spare_path(&self.dir, end_seq);
            fs::rename(path, &spare).map(|()| self.spares.push(spare))
        } else {
            fs::remove_file(path)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WalError::Io(e)),
        }
    }
}

/// Why [`parse_segment`] stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// At the end of the data.
    End,
    /// At a header that does not carry the next sequence number: the tail of a recycled
    /// file, or corruption if the segment should go on.
    Foreign,
    /// At a record with the next sequence number that is cut short or fails its checksum.
    Bad,
}

/// Parses the records of one segment, numbered from `*next`; returns the byte length of
/// its valid prefix and why it ends there.
fn parse_segment(
    data: &Bytes,
    visit: &mut dyn FnMut(u64, Bytes),
    stats: &mut ReplayStats,
    next: &mut u64,
) -> (usize, Stop) {
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        if rest.is_empty() {
            return (pos, Stop::End);
        }
        let Some(h) = rest.first_chunk::<HEADER>() else {
            return (pos, Stop::Bad);
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let seq = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        if seq != *next {
            return (pos, Stop::Foreign);
        }
        let end = pos + HEADER + len;
        if end > data.len() || checksum(seq, &data[pos + HEADER..end]) != crc {
            return (pos, Stop::Bad);
        }
        stats.records += 1;
        stats.bytes += len as u64;
        *next = seq + 1;
        visit(seq, data.slice(pos + HEADER..end));
        pos = end;
    }
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
        self.headers.clear();
        for (seq, r) in (first_seq..).zip(records) {
            self.headers.push(header(seq, r)?);
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(records.len() * 2);
        for (h, r) in self.headers.iter().zip(records) {
            slices.push(IoSlice::new(h));
            slices.push(IoSlice::new(r));
        }
        let bytes = (records.len() * HEADER + records.iter().map(Bytes::len).sum::<usize>()) as u64;
        let Some((file, _, len)) = self.current.as_mut() else {
            return Err(WalError::Closed);
        };
        write_all_vectored(file, &mut slices).map_err(WalError::Io)?;
        *len += bytes;
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
        let spares = numbered_files(&self.dir, "spare")?;
        // Past every record a spare may still hold.
        let mut next = spares.last().map_or(0, |(end, _)| *end);
        self.spares = spares.into_iter().map(|(_, path)| path).collect();
        let segments = numbered_files(&self.dir, "seg")?;
        for (i, (first, path)) in segments.iter().enumerate() {
            next = next.max(*first);
            let mut expected = *first;
            let data = match fs::read(path) {
                Ok(d) => Bytes::from(d),
                Err(e) => {
                    count_corrupt(&mut stats);
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable WAL segment");
                    continue;
                }
            };
            let (valid, stop) = parse_segment(&data, visit, &mut stats, &mut expected);
            next = next.max(expected);
            match segments.get(i + 1) {
                Some((following, _)) if expected < *following => {
                    count_corrupt(&mut stats);
                    tracing::warn!(path = %path.display(), offset = valid, "skipping the corrupt rest of a WAL segment");
                }
                None if stop == Stop::Bad => {
                    count_corrupt(&mut stats);
                    tracing::warn!(path = %path.display(), offset = valid, "truncating a torn record at the end of the WAL");
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(valid as u64).and_then(|()| f.sync_all()))
                        .map_err(WalError::Io)?;
                }
                _ => {}
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

    /// Retires every segment whose records all lie below `seq`: a segment ends where the
    /// next one begins, the newest one at the next sequence number. The current segment
    /// goes too when nothing in it is needed; the next append starts a new one.
    fn truncate_before(&mut self, seq: u64) -> Result<(), WalError> {
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
            let path = self.closed[i].1.clone();
            self.retire(&path, end)?;
            keep_from = i + 1;
        }
        self.closed.drain(..keep_from);
        if self.closed.is_empty() && self.next <= seq {
            if let Some((_, first, _)) = self.current.take() {
                self.retire(&segment_path(&self.dir, first), self.next)?;
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
            next, 9,
            "sequence numbers never go back, even once every segment is retired"
        );
    }

    fn files(dir: &Path, suffix: &str) -> Vec<(u64, u64)> {
        numbered_files(dir, suffix)
            .expect("list")
            .into_iter()
            .map(|(n, path)| (n, fs::metadata(path).expect("stat").len()))
            .collect()
    }

    /// Opens the store in `dir`, replays it and appends `range`: the next append of a
    /// running ingester after a restart.
    fn reopen_and_append(dir: &Path, range: std::ops::Range<u64>) -> FileStore {
        let mut store = FileStore::open(dir).expect("open");
        let (next, _) = store.replay(&mut |_, _| {}).expect("replay");
        assert_eq!(next, range.start);
        store.append(range.start, &records(range)).expect("append");
        store.sync().expect("sync");
        store
    }

    #[test]
    fn a_retired_segment_is_overwritten_by_the_next_and_its_old_records_never_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(reopen_and_append(dir.path(), 0..50));
        let mut store = reopen_and_append(dir.path(), 50..52);
        store.truncate_before(50).expect("truncate");
        let old_len = files(dir.path(), "spare")[0].1;
        assert_eq!(files(dir.path(), "spare"), vec![(50, old_len)]);
        drop(store);

        // The next segment is the spare, renamed and written from its start; its tail
        // still holds records 3.. of the old segment, with valid checksums.
        drop(reopen_and_append(dir.path(), 52..55));
        assert!(files(dir.path(), "spare").is_empty());
        assert_eq!(
            files(dir.path(), "seg"),
            vec![(50, 2 * (HEADER as u64 + 9)), (52, old_len)]
        );
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen, records(50..55));
        assert_eq!(next, 55);
        assert_eq!(stats.corrupt, 0, "a recycled tail is not corruption");
    }

    #[test]
    fn a_torn_record_in_a_recycled_segment_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(reopen_and_append(dir.path(), 0..50));
        let mut store = reopen_and_append(dir.path(), 50..51);
        store.truncate_before(50).expect("truncate");
        drop(store);
        drop(reopen_and_append(dir.path(), 51..54));
        // The last write was torn: record 53's payload did not all reach the disk.
        let seg = segment_path(dir.path(), 51);
        let mut data = fs::read(&seg).expect("read");
        let torn = 3 * (HEADER + 9) - 1;
        data[torn] ^= 0xff;
        fs::write(&seg, &data).expect("write");
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen, records(50..53));
        assert_eq!(next, 53);
        assert_eq!(stats.corrupt, 1);
        assert_eq!(
            fs::metadata(&seg).expect("stat").len(),
            2 * (HEADER as u64 + 9),
            "the segment ends where the torn record began"
        );
    }

    #[test]
    fn a_segment_left_empty_by_a_crash_is_written_and_kept_as_the_current_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(reopen_and_append(dir.path(), 0..3));
        // The process died right after creating the next segment.
        fs::write(segment_path(dir.path(), 3), b"").expect("create");
        let mut store = reopen_and_append(dir.path(), 3..5);
        store.truncate_before(3).expect("truncate");
        drop(store);
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen, records(3..5));
        assert_eq!((next, stats.corrupt), (5, 0));
    }

    /// The layout written before segments were recycled (appended files, one group after
    /// another, written here by hand) replays unchanged.
    #[test]
    fn segments_written_by_appending_replay_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (first, range) in [(0u64, 0..4u64), (4, 4..7)] {
            let mut bytes = Vec::new();
            for (seq, r) in range.clone().zip(records(range)) {
                bytes.extend_from_slice(&(r.len() as u32).to_le_bytes());
                bytes.extend_from_slice(&checksum(seq, &r).to_le_bytes());
                bytes.extend_from_slice(&seq.to_le_bytes());
                bytes.extend_from_slice(&r);
            }
            fs::write(segment_path(dir.path(), first), bytes).expect("write");
        }
        let (seen, next, stats) = replay(dir.path());
        assert_eq!(seen, records(0..7));
        assert_eq!((next, stats.corrupt), (7, 0));
    }

    #[test]
    fn at_most_a_few_segments_are_kept_for_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..6 {
            drop(reopen_and_append(dir.path(), i..i + 1));
        }
        let mut store = reopen_and_append(dir.path(), 6..7);
        store.truncate_before(7).expect("truncate");
        assert_eq!(files(dir.path(), "spare").len(), SPARES);
        assert!(files(dir.path(), "seg").is_empty());
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
