//! The persistent queue on disk: one directory per exporter, holding
//! segment files of queued requests.
//!
//! The writer takes every request staged since its last write and writes
//! them as one new segment: `<sequence>.seg.tmp`, fsynced, renamed to
//! `<sequence>.seg`, and the directory fsynced, before any of them is
//! offered to a sender. So a request is on disk before it can be sent, and
//! a crash leaves either a whole segment or a `.tmp` file that the next
//! start deletes (its requests were never sent; they are the only ones a
//! crash can lose: the milliseconds between the answer to the client and
//! the write).
//!
//! A segment is deleted when every request in it is done: accepted by the
//! upstream, or dropped for good (a permanent error, retries exhausted). A
//! request sent in a batch is done when the whole batch is, so a segment
//! outlives every batch that holds one of its requests.
//! After a restart the segments left are read back in sequence order and
//! sent again, whole: requests of a partly sent segment may reach the
//! upstream twice, which OTLP allows (duplicates after retries).
//!
//! Segment format: the 8-byte magic `TRQSEG01`, then records of
//! `len: u32 LE, signal: u8, format: u8, items: u64 LE, crc32(body): u32 LE,
//! body`. Reading stops at the first record that is short, too long or
//! fails its checksum (logged); the records before it are kept.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::queue::Item;
use crate::receiver::{BodyFormat, Signal};

const MAGIC: &[u8; 8] = b"TRQSEG01";
const RECORD_HEADER: usize = 4 + 1 + 1 + 8 + 4;
const SEGMENT_SUFFIX: &str = ".seg";
const TEMP_SUFFIX: &str = ".seg.tmp";
/// The largest record body read back: the largest request a receiver
/// accepts is far below it.
const MAX_RECORD: usize = 1 << 30;

/// One exporter's queue directory.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    /// The sequence number of the next segment.
    next: AtomicU64,
}

/// A segment file with requests still to send.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    /// Requests of this segment not done yet.
    remaining: AtomicUsize,
}

impl Segment {
    /// Marks one of its requests done; the last one deletes the file.
    pub fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Err(error) = fs::remove_file(&self.path) {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), %error, "cannot delete a sent segment of the forwarding queue");
                }
            }
        }
    }
}

impl Disk {
    /// Opens (creating) `dir`, deletes unfinished `.tmp` segments, and
    /// returns the segments left by an earlier run, oldest first.
    pub fn open(dir: &Path) -> io::Result<(Disk, Vec<PathBuf>)> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        let mut last = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(entry.path())?;
                continue;
            }
            let Some(number) = name.strip_suffix(SEGMENT_SUFFIX) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            last = last.max(number);
            segments.push((number, entry.path()));
        }
        segments.sort();
        let disk = Disk {
            dir: dir.to_owned(),
            next: AtomicU64::new(last + 1),
        };
        // Writable? Better to learn it at start-up than at the first write.
        let probe = dir.join(format!(".probe{TEMP_SUFFIX}"));
        File::create(&probe)?;
        fs::remove_file(&probe)?;
        Ok((disk, segments.into_iter().map(|(_, path)| path).collect()))
    }

    /// Writes `items` as one new segment and points each at it. On error
    /// nothing is left on disk and the items are unchanged.
    pub fn write(&self, items: &mut [Item]) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{number:020}{SEGMENT_SUFFIX}"));
        let temp = self.dir.join(format!("{number:020}{TEMP_SUFFIX}"));
        let written = (|| {
            let mut file = BufWriter::new(File::create(&temp)?);
            file.write_all(MAGIC)?;
            for item in items.iter() {
                let len = u32::try_from(item.body.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "request too large")
                })?;
                file.write_all(&len.to_le_bytes())?;
                file.write_all(&[signal_code(item.signal), format_code(item.format)])?;
                file.write_all(&item.items.to_le_bytes())?;
                file.write_all(&crc(&item.body).to_le_bytes())?;
                file.write_all(&item.body)?;
            }
            let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        let segment = Arc::new(Segment {
            path,
            remaining: AtomicUsize::new(items.len()),
        });
        for item in items.iter_mut() {
            item.segment = Some(Arc::clone(&segment));
        }
        Ok(())
    }

    /// Reads a segment back; its requests point at it. A segment with no
    /// readable request is deleted.
    pub fn load(&self, path: &Path) -> io::Result<Vec<Item>> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let (mut items, problem) = parse(&bytes);
        if let Some(problem) = problem {
            tracing::warn!(path = %path.display(), kept = items.len(), problem, "a segment of the forwarding queue is damaged; the requests before the damage are sent");
        }
        if items.is_empty() {
            fs::remove_file(path)?;
            return Ok(items);
        }
        let segment = Arc::new(Segment {
            path: path.to_owned(),
            remaining: AtomicUsize::new(items.len()),
        });
        for item in &mut items {
            item.segment = Some(Arc::clone(&segment));
        }
        Ok(items)
    }
}

/// The records of a segment, and what stopped the reading early, if
/// anything did.
fn parse(bytes: &[u8]) -> (Vec<Item>, Option<&'static str>) {
    let mut items = Vec::new();
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return (items, Some("not a segment (wrong magic)"));
    };
    let shared = Bytes::copy_from_slice(rest);
    let mut offset = 0;
    while !rest.is_empty() {
        let Some((header, after)) = rest.split_at_checked(RECORD_HEADER) else {
            return (items, Some("a record header is cut short"));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let signal = signal_of(header[4]);
        let format = format_of(header[5]);
        let mut count = [0; 8];
        count.copy_from_slice(&header[6..14]);
        let n_items = u64::from_le_bytes(count);
        let sum = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
        let (Some(signal), Some(format)) = (signal, format) else {
            return (items, Some("a record has an unknown signal or format"));
        };
        if len > MAX_RECORD || len > after.len() {
            return (items, Some("a record is cut short"));
        }
        let body = &after[..len];
        if crc(body) != sum {
            return (items, Some("a record fails its checksum"));
        }
        let start = offset + RECORD_HEADER;
        items.push(Item {
            signal,
            format,
            // A slice of one shared buffer: no copy per record.
            body: shared.slice(start..start + len),
            items: n_items,
            queued: tokio::time::Instant::now(),
            segment: None,
        });
        offset = start + len;
        rest = &after[len..];
    }
    (items, None)
}

fn crc(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn signal_code(signal: Signal) -> u8 {
    match signal {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

fn signal_of(code: u8) -> Option<Signal> {
    match code {
        1 => Some(Signal::Traces),
        2 => Some(Signal::Metrics),
        3 => Some(Signal::Logs),
        _ => None,
    }
}

fn format_code(format: BodyFormat) -> u8 {
    match format {
        BodyFormat::Protobuf => 1,
        BodyFormat::Json => 2,
    }
}

fn format_of(code: u8) -> Option<BodyFormat> {
    match code {
        1 => Some(BodyFormat::Protobuf),
        2 => Some(BodyFormat::Json),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(signal: Signal, body: &'static [u8], items: u64) -> Item {
        Item {
            signal,
            format: BodyFormat::Protobuf,
            body: Bytes::from_static(body),
            items,
            queued: tokio::time::Instant::now(),
            segment: None,
        }
    }

    #[test]
    fn segments_round_trip_and_go_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, left) = Disk::open(dir.path()).unwrap();
        assert!(left.is_empty());
        let mut batch = vec![
            item(Signal::Traces, b"spans", 3),
            item(Signal::Logs, b"", 1),
            item(Signal::Metrics, b"points", 7),
        ];
        disk.write(&mut batch).unwrap();
        let mut second = vec![item(Signal::Traces, b"later", 1)];
        disk.write(&mut second).unwrap();
        drop(disk);

        // A crash mid-write leaves a .tmp file, which is not read back.
        fs::write(dir.path().join("00000000000000000099.seg.tmp"), b"junk").unwrap();
        let (disk, left) = Disk::open(dir.path()).unwrap();
        assert_eq!(left.len(), 2);
        assert!(!dir.path().join("00000000000000000099.seg.tmp").exists());
        let loaded = disk.load(&left[0]).unwrap();
        let read: Vec<_> = loaded
            .iter()
            .map(|item| (item.signal, &item.body[..], item.items))
            .collect();
        assert_eq!(
            read,
            [
                (Signal::Traces, &b"spans"[..], 3),
                (Signal::Logs, &b""[..], 1),
                (Signal::Metrics, &b"points"[..], 7)
            ]
        );
        for item in &loaded {
            assert!(left[0].exists(), "kept until every request is done");
            item.segment.as_ref().unwrap().done();
        }
        assert!(!left[0].exists());
        // New segments are numbered after the old ones.
        let mut third = vec![item(Signal::Traces, b"new", 1)];
        disk.write(&mut third).unwrap();
        let (_, left) = Disk::open(dir.path()).unwrap();
        assert_eq!(left.len(), 2);
        assert!(left[0] < left[1]);
    }

    #[test]
    fn damaged_segments_keep_what_precedes_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = Disk::open(dir.path()).unwrap();
        let mut batch = vec![
            item(Signal::Traces, b"first", 1),
            item(Signal::Traces, b"second", 1),
        ];
        disk.write(&mut batch).unwrap();
        let path = batch[0].segment.as_ref().unwrap().path.clone();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let loaded = disk.load(&path).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(&loaded[0].body[..], b"first");
        // Hostile lengths are refused, not allocated.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[1, 1]);
        huge.extend_from_slice(&[0; 12]);
        assert_eq!(parse(&huge).0.len(), 0);
        assert!(parse(&huge).1.is_some());
        assert!(parse(b"garbage").1.is_some());
    }
}
