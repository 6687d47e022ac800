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

use std::path::Path;

use super::short_context::ShortContext;
use super::winnow::{winnow, MAX_WINDOW, SHINGLE};
use super::{EchoConfig, EgressError};

pub use super::short_context::MIN_CONTEXT;

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
        let window = (context.len() / 1024).clamp(8, cfg.max_window.clamp(8, MAX_WINDOW));
        let expected = 2 * context.len() / (window + 1) + 1;
        let bits = (expected * cfg.bloom_bits).max(1024);
        let mut words = vec![0u64; bits.div_ceil(64)];
        let n = words.len() as u64;
        winnow(context, window, |_, h| {
            let (slot, mask) = bloom_slot(h, n);
            words[slot] |= mask;
        });
        ContextEchoIndex {
            words,
            window,
            context_len: context.len(),
            short: ShortContext::build(context, cfg.similarity_threshold),
        }
    }

    /// Reads and indexes the context file at `path`.
    pub fn from_file(path: impl AsRef<Path>, cfg: &EchoConfig) -> Result<Self, EgressError> {
        let path = path.as_ref();
        let context = std::fs::read(path).map_err(|err| EgressError::ReadFile {
            path: path.to_path_buf(),
            err,
        })?;
        Ok(Self::build(&context, cfg))
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
