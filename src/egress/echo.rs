//! Context echo: does the output reproduce the (possibly private) context
//! verbatim, beyond a threshold?
//!
//! Fingerprints are winnowed rolling hashes ([`super::winnow`]) over the
//! whole context: the gear hash of every 64-byte shingle, and of every
//! `window` consecutive hashes the smallest (rightmost on ties). Any
//! common substring of at least `window + 63` bytes then shares a
//! fingerprint, wherever it lies in the context. The kept
//! fingerprints go into a blocked Bloom filter of about 12 bits each (both
//! bits in one 64-bit word, one cache line per lookup), so the index is a
//! few percent of the context and checking an output is one linear pass.
//!
//! Inside a reproduced region every output fingerprint is in the index; a
//! region is counted when at least `min_run` consecutive fingerprints
//! match, which a Bloom false positive (about 2%) practically never fakes.
//!
//! Such regions are 256 bytes at least (or half the context): a context
//! of a sentence or a paragraph printed whole would pass. So a context of
//! up to 8 KiB is also kept whole and compared with the output directly
//! ([`super::short_context`]): one region reproducing it whole or nearly
//! (80% of it, or the similarity threshold if higher) is an echo, however
//! short the context, from [`MIN_CONTEXT`] (16) bytes. Shorter contexts
//! are never an echo: `yes` or `42` is an answer, not a leak.
//!
//! A context file is indexed through positioned reads of [`CHUNK`] bytes
//! ([`ContextEchoIndex::from_open`]), each chunk overlapping the previous
//! one by a whole window of shingles: every full window lies in one chunk,
//! winnowing emits for full windows only, and a Bloom insert is
//! idempotent, so the index is bit for bit that of the whole file, in the
//! index's own memory plus one chunk. (Not a memory map: the client owns
//! its context files, and one truncated under a map is a SIGBUS in the
//! driver; a read past a truncation is only a short read, an error here.)

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::short_context::{ShortContext, SHORT_MAX};
use super::winnow::{winnow, MAX_WINDOW, SHINGLE};
use super::{EchoConfig, EgressError};

pub use super::short_context::MIN_CONTEXT;

/// Bytes read at a time when indexing a file.
pub const CHUNK: usize = 1 << 20;

/// Reproduced spans shorter than this (or than half the context) are not
/// counted.
const MIN_SPAN: usize = 256;

/// Spreads a gear hash's bits (its low bits depend on the last few bytes
/// only) before they pick Bloom positions.
fn mix(h: u64) -> u64 {
    let mut z = h ^ (h >> 33);
    z = z.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z ^= z >> 33;
    z = z.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    z ^ (z >> 33)
}

/// The index of one context: a Bloom filter of its winnowed fingerprints,
/// and a short context itself.
#[derive(Clone, Debug)]
pub struct ContextEchoIndex {
    words: Vec<u64>,
    window: usize,
    context_len: usize,
    short: Option<ShortContext>,
}

/// Where an output reproduces the context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoReport {
    /// Reproduced byte ranges of the output, sorted, disjoint.
    pub spans: Vec<(usize, usize)>,
    /// Their total length.
    pub echoed_bytes: usize,
    /// Whether one of them reproduces a short context whole or nearly: an
    /// echo whatever its length.
    pub whole: bool,
}

impl ContextEchoIndex {
    /// Indexes `context`. The window grows with the context (8 below 8 KiB,
    /// up to `cfg.max_window`), so small contexts are fingerprinted densely
    /// and large ones stay a few percent of their size.
    pub fn build(context: &[u8], cfg: &EchoConfig) -> Self {
        let mut index = Self::empty(context.len(), cfg);
        index.insert(context);
        index.short = ShortContext::build(context, cfg.similarity_threshold);
        index
    }

    /// The index of a context of `len` bytes, nothing inserted yet.
    fn empty(len: usize, cfg: &EchoConfig) -> Self {
        let window = (len / 1024).clamp(8, cfg.max_window.clamp(8, MAX_WINDOW));
        let expected = 2 * len / (window + 1) + 1;
        let bits = (expected * cfg.bloom_bits).max(1024);
        ContextEchoIndex {
            words: vec![0u64; bits.div_ceil(64)],
            window,
            context_len: len,
            short: None,
        }
    }

    /// Adds the fingerprints of the full windows of `bytes`.
    fn insert(&mut self, bytes: &[u8]) {
        let n = self.words.len() as u64;
        let words = &mut self.words;
        winnow(bytes, self.window, |_, h| {
            let (slot, mask) = bloom_slot(h, n);
            words[slot] |= mask;
        });
    }

    /// Opens and indexes the context file at `path` (see
    /// [`Self::from_open`]).
    pub fn from_file(path: impl AsRef<Path>, cfg: &EchoConfig) -> Result<Self, EgressError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|err| EgressError::ReadFile {
            path: path.to_path_buf(),
            err,
        })?;
        Self::from_open(&file, path, cfg)
    }

    /// Indexes the open context `file` (`path` names it in errors) by
    /// positioned reads of [`CHUNK`] bytes: memory is the index's own and
    /// one chunk, whatever the file's size. A file that shrinks while it
    /// is read is an error (the bytes the sandbox may have seen are not
    /// all indexed).
    pub fn from_open(file: &File, path: &Path, cfg: &EchoConfig) -> Result<Self, EgressError> {
        let size = file.metadata().map_err(|err| EgressError::ReadFile {
            path: path.to_path_buf(),
            err,
        })?;
        Self::from_open_in(file, path, size.len(), cfg, CHUNK)
    }

    /// [`Self::from_open`] of a file of `size` bytes, read `chunk` bytes
    /// at a time.
    pub(super) fn from_open_in(
        file: &File,
        path: &Path,
        size: u64,
        cfg: &EchoConfig,
        chunk: usize,
    ) -> Result<Self, EgressError> {
        let io = |err| EgressError::ReadFile {
            path: path.to_path_buf(),
            err,
        };
        let len = usize::try_from(size).map_err(|_| {
            io(std::io::Error::other(format!(
                "{size} bytes do not fit this machine's address space"
            )))
        })?;
        let read_at = |buf: &mut [u8], offset: usize| {
            file.read_exact_at(buf, offset as u64).map_err(|err| {
                io(match err.kind() {
                    std::io::ErrorKind::UnexpectedEof => std::io::Error::other(format!(
                        "the file shrank while it was indexed (it had {len} bytes)"
                    )),
                    _ => err,
                })
            })
        };
        if len <= SHORT_MAX {
            let mut context = vec![0u8; len];
            read_at(&mut context, 0)?;
            return Ok(Self::build(&context, cfg));
        }
        let mut index = Self::empty(len, cfg);
        // Bytes of one window of shingles, less one: what the next chunk
        // repeats of the last so that no full window straddles two.
        let overlap = SHINGLE + index.window - 2;
        let mut buf = vec![0u8; chunk.max(overlap + 1) + overlap];
        // `buf[..filled]` holds the file from `start`.
        let (mut start, mut filled) = (0usize, 0usize);
        loop {
            let want = (buf.len() - filled).min(len - start - filled);
            read_at(&mut buf[filled..filled + want], start + filled)?;
            filled += want;
            index.insert(&buf[..filled]);
            if start + filled == len {
                return Ok(index);
            }
            buf.copy_within(filled - overlap..filled, 0);
            start += filled - overlap;
            filled = overlap;
        }
    }

    /// The Bloom filter's words, to compare two builds.
    #[cfg(test)]
    pub(super) fn bloom_words(&self) -> &[u64] {
        &self.words
    }

    /// Memory held by the index.
    pub fn index_bytes(&self) -> usize {
        self.words.len() * 8
            + self.short.as_ref().map_or(0, ShortContext::heap_bytes)
            + std::mem::size_of::<Self>()
    }

    pub fn context_len(&self) -> usize {
        self.context_len
    }

    pub fn window(&self) -> usize {
        self.window
    }

    fn contains(&self, h: u64) -> bool {
        let (slot, mask) = bloom_slot(h, self.words.len() as u64);
        self.words[slot] & mask == mask
    }

    /// The regions of `output` reproduced from the context.
    pub fn check(&self, output: &[u8], min_run: usize) -> EchoReport {
        // Short common passages (boilerplate lines, repeated JSON keys)
        // are shared by unrelated texts; a dump is made of long spans.
        let min_span = MIN_SPAN.min(self.context_len / 2);
        let mut tracker = RunTracker {
            run: None,
            min_run,
            min_span,
            len: output.len(),
            report: EchoReport::default(),
        };
        // Fingerprints are looked up in batches: independent loads overlap
        // their cache misses instead of waiting one by one.
        const BATCH: usize = 4096;
        let mut batch: Vec<(usize, u64)> = Vec::with_capacity(BATCH);
        winnow(output, self.window, |end, h| {
            batch.push((end, h));
            if batch.len() == BATCH {
                self.lookup(&batch, &mut tracker);
                batch.clear();
            }
        });
        self.lookup(&batch, &mut tracker);
        if let Some(run) = tracker.run.take() {
            tracker.close(run);
        }
        let mut report = tracker.report;
        if let Some(short) = &self.short {
            let mut whole = Vec::new();
            short.find(output, &mut whole);
            report.whole = !whole.is_empty();
            whole.extend_from_slice(&report.spans);
            report.spans = merge_spans(whole);
        }
        report.echoed_bytes = report.spans.iter().map(|(s, e)| e - s).sum();
        report
    }

    fn lookup(&self, batch: &[(usize, u64)], tracker: &mut RunTracker) {
        let mut hits = [false; 4096];
        for (hit, &(_, h)) in hits.iter_mut().zip(batch) {
            *hit = self.contains(h);
        }
        for (&(end, _), &hit) in batch.iter().zip(hits.iter()) {
            tracker.run = match (hit, tracker.run) {
                (true, Some((first, _, count))) => Some((first, end, count + 1)),
                (true, None) => Some((end, end, 1)),
                (false, Some(run)) => {
                    tracker.close(run);
                    None
                }
                (false, None) => None,
            };
        }
    }
}

/// Consecutive matching fingerprints of an output, turned into spans.
struct RunTracker {
    /// End of the first and of the last matching shingle, and their count.
    run: Option<(usize, usize, usize)>,
    min_run: usize,
    min_span: usize,
    len: usize,
    report: EchoReport,
}

impl RunTracker {
    /// Turns a run of matching fingerprints into a span: from the start of
    /// the first matching shingle to the end of the last. The reproduced
    /// region may reach up to `window - 1` bytes further on each side;
    /// those edges are left alone rather than risk hiding the output
    /// printed right after a dump (a few dozen bytes of context are what
    /// any peek shows anyway).
    fn close(&mut self, (first, last, count): (usize, usize, usize)) {
        if count < self.min_run.max(1) {
            return;
        }
        let start = (first + 1).saturating_sub(SHINGLE);
        let end = self.len.min(last + 1);
        if end - start < self.min_span {
            return;
        }
        match self.report.spans.last_mut() {
            Some(prev) if prev.1 >= start => prev.1 = prev.1.max(end),
            _ => self.report.spans.push((start, end)),
        }
    }
}

/// The union of byte spans `(start, end)` in any order: sorted, and
/// overlapping or touching spans merged.
pub(super) fn merge_spans(mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// One word and two bits in it for fingerprint `h`.
fn bloom_slot(h: u64, words: u64) -> (usize, u64) {
    let z = mix(h);
    // Multiply-shift maps the high half onto 0..words without a division.
    let slot = (((z >> 32) * words) >> 32) as usize;
    let mask = (1u64 << (z & 63)) | (1u64 << ((z >> 6) & 63));
    (slot, mask)
}

impl EchoConfig {
    /// Whether `report` is an echo of a context of `context_len` bytes:
    /// a short context reproduced whole or nearly, or at least `min_bytes`
    /// and either `max_bytes` or the fraction `similarity_threshold` of
    /// the context.
    pub fn is_echo(&self, report: &EchoReport, context_len: usize) -> bool {
        let n = report.echoed_bytes;
        let share = self.similarity_threshold * context_len as f64;
        report.whole || (n >= self.min_bytes && (n >= self.max_bytes || n as f64 >= share))
    }
}
