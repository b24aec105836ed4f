//! Cuts replay input into items without copying them one by one.
//!
//! The input is read in large chunks (a few MiB); each line or
//! length-delimited message that lies inside a chunk is handed out as a
//! [`Bytes`] slice of it, sharing the chunk. Only an item that straddles two
//! chunks is copied, once, into the next chunk. Every byte is therefore
//! copied out of the reader once. Chunk buffers go back to a pool when the
//! last item cut from them is dropped, so the same few buffers are used
//! over and over: a fresh buffer for every chunk would cost a page fault
//! and a page zeroed by the kernel for every 4 KiB of input.

use std::io::{BufRead, ErrorKind};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::input::MAX_MESSAGE_BYTES;

/// Bytes read from the input at a time.
const CHUNK_BYTES: usize = 4 << 20;

/// Chunk buffers kept for reuse at most (items in flight hold a few).
const POOLED: usize = 16;

/// Chunk buffers of `CHUNK_BYTES` that are free again.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A chunk buffer that returns to its pool when the last item cut from it
/// is dropped.
struct Chunk {
    buffer: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.buffer.len() != CHUNK_BYTES {
            return;
        }
        // A poisoned pool only means a panic elsewhere: the buffer is freed.
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < POOLED {
                pool.push(std::mem::take(&mut self.buffer));
            }
        }
    }
}

/// Items cut from a reader.
pub(crate) struct Chunks<'a> {
    input: &'a mut dyn BufRead,
    /// What is left of the last chunk.
    rest: Bytes,
    /// Whether the input has ended.
    ended: bool,
    pool: Pool,
}

impl<'a> Chunks<'a> {
    pub(crate) fn new(input: &'a mut dyn BufRead) -> Self {
        Chunks {
            input,
            rest: Bytes::new(),
            ended: false,
            pool: Pool::default(),
        }
    }

    /// A buffer of `size` bytes: from the pool when it has one of that size.
    fn buffer(&self, size: usize) -> Vec<u8> {
        let pooled = if size == CHUNK_BYTES {
            self.pool.lock().ok().and_then(|mut pool| pool.pop())
        } else {
            None
        };
        pooled.unwrap_or_else(|| vec![0; size])
    }

    /// Makes at least `wanted` bytes available in `rest` unless the input
    /// ends first; keeps what was left.
    fn fill(&mut self, wanted: usize) -> std::io::Result<()> {
        if self.rest.len() >= wanted || self.ended {
            return Ok(());
        }
        // A chunk, or past what is wanted by a chunk when that is more (a
        // line longer than a chunk still makes progress).
        let size = if wanted <= CHUNK_BYTES {
            CHUNK_BYTES
        } else {
            wanted + CHUNK_BYTES
        };
        let mut buffer = self.buffer(size);
        let mut filled = self.rest.len();
        buffer[..filled].copy_from_slice(&self.rest);
        while filled < size {
            match self.input.read(&mut buffer[filled..]) {
                Ok(0) => {
                    self.ended = true;
                    break;
                }
                Ok(read) => filled += read,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        let chunk = Chunk {
            buffer,
            pool: Arc::clone(&self.pool),
        };
        self.rest = Bytes::from_owner(chunk).slice(..filled);
        Ok(())
    }

    /// The next line, with its newline (the last line may lack one);
    /// `None` at the end of the input.
    pub(crate) fn line(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut searched = 0;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.rest[searched..]) {
                return Ok(Some(self.rest.split_to(searched + at + 1)));
            }
            if self.ended {
                return Ok((!self.rest.is_empty()).then(|| std::mem::take(&mut self.rest)));
            }
            searched = self.rest.len();
            self.fill(self.rest.len() + 1)?;
        }
    }

    /// The next length-delimited message: `Ok(None)` at a clean end, an
    /// error for a truncated or oversized one (the same as
    /// [`super::input::read_message`]).
    pub(crate) fn message(&mut self) -> std::io::Result<Option<Bytes>> {
        self.fill(4)?;
        if self.rest.is_empty() {
            return Ok(None);
        }
        let Some(prefix) = self.rest.get(..4) else {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "input ends inside a length prefix",
            ));
        };
        let mut length = [0u8; 4];
        length.copy_from_slice(prefix);
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit \
                     (is this really length-delimited OTLP protobuf?)"
                ),
            ));
        }
        self.fill(4 + length)?;
        if self.rest.len() < 4 + length {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("input ends inside a message of {length} bytes"),
            ));
        }
        let mut message = self.rest.split_to(4 + length);
        Ok(Some(message.split_off(4)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_messages_across_chunk_boundaries() {
        // Lines longer than a chunk, and one without a final newline.
        let long = "x".repeat(CHUNK_BYTES + 10);
        let text = format!("a\n{long}\n\nb");
        let mut reader = std::io::BufReader::new(text.as_bytes());
        let mut chunks = Chunks::new(&mut reader);
        let mut lines = Vec::new();
        while let Some(line) = chunks.line().expect("reads") {
            lines.push(line);
        }
        assert_eq!(lines.len(), 4);
        assert_eq!(&lines[0][..], b"a\n");
        assert_eq!(lines[1].len(), long.len() + 1);
        assert_eq!(&lines[2][..], b"\n");
        assert_eq!(&lines[3][..], b"b");

        let mut input = Vec::new();
        let sizes = [3usize, CHUNK_BYTES - 5, 0, CHUNK_BYTES * 2];
        for (i, size) in sizes.iter().enumerate() {
            input.extend_from_slice(&(*size as u32).to_be_bytes());
            input.extend(std::iter::repeat_n(i as u8, *size));
        }
        let mut reader = std::io::BufReader::new(&input[..]);
        let mut chunks = Chunks::new(&mut reader);
        for (i, size) in sizes.iter().enumerate() {
            let message = chunks.message().expect("reads").expect("a message");
            assert_eq!(message.len(), *size);
            assert!(message.iter().all(|byte| *byte == i as u8));
        }
        assert!(chunks.message().expect("clean end").is_none());

        let truncated = &input[..input.len() - 1];
        let mut reader = std::io::BufReader::new(truncated);
        let mut chunks = Chunks::new(&mut reader);
        for _ in 0..3 {
            chunks.message().expect("reads");
        }
        let error = chunks.message().expect_err("truncated");
        assert!(
            error.to_string().contains("ends inside a message"),
            "{error}"
        );
        let mut reader = std::io::BufReader::new(&[0u8, 0][..]);
        let error = Chunks::new(&mut reader).message().expect_err("short");
        assert!(error.to_string().contains("length prefix"), "{error}");
    }
}
