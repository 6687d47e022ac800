//! Context echo: does the output reproduce the (possibly private) context
//! verbatim, beyond a threshold?
//!
//! Fingerprints are winnowed rolling hashes (Schleimer, Wilkerson & Aiken,
//! 2003) over the whole context: the hash of every 64-byte shingle is
//! computed with a gear hash (one shift, one add and one table lookup per
//! byte), and of every `window` consecutive hashes the smallest (rightmost
//! on ties) is kept. Any common substring of at least `window + 63` bytes
//! then shares a fingerprint, wherever it lies in the context. The kept
//! fingerprints go into a blocked Bloom filter of about 12 bits each (both
//! bits in one 64-bit word, one cache line per lookup), so the index is a
//! few percent of the context and checking an output is one linear pass.
//!
//! Inside a reproduced region every output fingerprint is in the index; a
//! region is counted when at least `min_run` consecutive fingerprints
//! match, which a Bloom false positive (about 2%) practically never fakes.

use std::path::Path;

use super::{EchoConfig, EgressError};

/// Bytes per shingle: a u64 gear hash holds exactly the last 64 bytes.
pub const SHINGLE: usize = 64;

/// Reproduced spans shorter than this (or than half the context) are not
/// counted.
const MIN_SPAN: usize = 256;

/// Largest winnowing window.
const MAX_WINDOW: usize = 255;

/// Random 64-bit values, one per byte, from splitmix64 (fixed seed, so
/// indexes are reproducible).
const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut state: u64 = 0x005E_ED0F_EC40;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}
static GEAR: [u64; 256] = gear_table();

/// Calls `emit(end, hash)` for every winnowed fingerprint of `data`, where
/// `end` is the index of the last byte of its shingle: for every window of
/// `window` consecutive shingle hashes, its smallest (rightmost on ties),
/// each time that choice moves.
fn winnow(data: &[u8], window: usize, mut emit: impl FnMut(usize, u64)) {
    let w = window.clamp(1, MAX_WINDOW);
    let Some(total) = (data.len() + 1).checked_sub(SHINGLE) else {
        return;
    };
    // Hashes are computed a block at a time into `buf` (a tight loop with
    // no other work), then winnowed from there; the last w - 1 hashes of a
    // block are kept in front of the next one, so every window is one
    // contiguous slice for the rescan.
    const BLOCK: usize = 4096;
    let mut buf = vec![0u64; MAX_WINDOW + BLOCK];
    let mut h: u64 = 0;
    for &b in &data[..SHINGLE - 1] {
        h = (h << 1).wrapping_add(GEAR[b as usize]);
    }
    let (mut min_h, mut min_j) = (u64::MAX, 0usize);
    // When the current minimum leaves the window.
    let mut expires = w;
    let mut len = 0;
    let mut next = 0;
    while next < total {
        let keep = len.min(w - 1);
        buf.copy_within(len - keep..len, 0);
        // `buf[i]` is the hash of shingle `base + i`.
        let base = next - keep;
        let n = BLOCK.min(total - next);
        let bytes = &data[next + SHINGLE - 1..next + SHINGLE - 1 + n];
        for (slot, &b) in buf[keep..keep + n].iter_mut().zip(bytes) {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            *slot = h;
        }
        len = keep + n;
        let mut i = keep;
        while i < len {
            // Eight hashes at once when none of them can change the
            // choice (none is a new minimum, the minimum does not expire
            // among them, the first window is past): the common case.
            let j = base + i;
            if let Some(eight) = buf[i..len].get(..8) {
                if j >= w && j + 8 <= expires {
                    let low = eight.iter().fold(u64::MAX, |a, &b| a.min(b));
                    if low > min_h {
                        i += 8;
                        continue;
                    }
                }
            }
            // j-th shingle hash; the window is hashes j+1-w ..= j.
            let h = buf[i];
            if h <= min_h {
                min_h = h;
                min_j = j;
                expires = j + w;
                if j + 1 >= w {
                    emit(j + SHINGLE - 1, h);
                }
            } else if j == expires {
                // The minimum left the window: find the rightmost minimum,
                // about once per w/2 hashes.
                let first = j + 1 - w;
                let at = rightmost_min(&buf[first - base..=i]);
                min_j = first + at;
                min_h = buf[min_j - base];
                expires = min_j + w;
                emit(min_j + SHINGLE - 1, min_h);
            } else if j + 1 == w {
                // The first full window keeps the minimum found so far.
                emit(min_j + SHINGLE - 1, min_h);
            }
            i += 1;
        }
        next += n;
    }
}

/// The index of the last smallest value of `window` (not empty): the
/// minimum with four independent accumulators (no serial compare chain),
/// then its last occurrence.
fn rightmost_min(window: &[u64]) -> usize {
    let mut lows = [u64::MAX; 4];
    let mut quads = window.chunks_exact(4);
    for quad in &mut quads {
        for (low, &v) in lows.iter_mut().zip(quad) {
            *low = (*low).min(v);
        }
    }
    let low = quads
        .remainder()
        .iter()
        .fold(lows.iter().fold(u64::MAX, |a, &b| a.min(b)), |a, &b| {
            a.min(b)
        });
    window.iter().rposition(|&v| v == low).unwrap_or(0)
}

/// Spreads a gear hash's bits (its low bits depend on the last few bytes
/// only) before they pick Bloom positions.
fn mix(h: u64) -> u64 {
    let mut z = h ^ (h >> 33);
    z = z.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z ^= z >> 33;
    z = z.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    z ^ (z >> 33)
}

/// The index of one context: a Bloom filter of its winnowed fingerprints.
#[derive(Clone, Debug)]
pub struct ContextEchoIndex {
    words: Vec<u64>,
    window: usize,
    context_len: usize,
}

/// Where an output reproduces the context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoReport {
    /// Reproduced byte ranges of the output, sorted, disjoint.
    pub spans: Vec<(usize, usize)>,
    /// Their total length.
    pub echoed_bytes: usize,
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
        self.words.len() * 8 + std::mem::size_of::<Self>()
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
            tracker.close(run, self.window);
        }
        let mut report = tracker.report;
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
                    tracker.close(run, self.window);
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
    fn close(&mut self, (first, last, count): (usize, usize, usize), window: usize) {
        if count < self.min_run.max(1) {
            return;
        }
        let _ = window;
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
    /// at least `min_bytes`, and either `max_bytes` or the fraction
    /// `similarity_threshold` of the context.
    pub fn is_echo(&self, report: &EchoReport, context_len: usize) -> bool {
        let n = report.echoed_bytes;
        let share = self.similarity_threshold * context_len as f64;
        n >= self.min_bytes && (n >= self.max_bytes || n as f64 >= share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Winnowing by definition: the rightmost minimum of every window,
    /// emitted when it moves.
    fn winnow_reference(data: &[u8], w: usize) -> Vec<(usize, u64)> {
        let mut hashes = Vec::new();
        let mut h: u64 = 0;
        for (i, &b) in data.iter().enumerate() {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            if i + 1 >= SHINGLE {
                hashes.push(h);
            }
        }
        let mut out: Vec<(usize, u64)> = Vec::new();
        for end in w..=hashes.len() {
            let win = &hashes[end - w..end];
            let low = win.iter().copied().min().unwrap_or(u64::MAX);
            let at = end - w + win.iter().rposition(|&v| v == low).unwrap_or(0);
            if out.last().map(|&(e, _)| e) != Some(at + SHINGLE - 1) {
                out.push((at + SHINGLE - 1, low));
            }
        }
        out
    }

    #[test]
    fn winnowing_matches_its_definition() {
        let mut state = 7u64;
        let random: Vec<u8> = (0..20_000)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        // Repetitive data: equal hashes, where the rightmost rule matters.
        let mut repetitive = vec![b' '; 3000];
        repetitive.extend(b"abcabcabc".repeat(400));
        repetitive.extend(random[..2000].iter());
        for data in [&random[..], &repetitive[..], &random[..100], &random[..63]] {
            for w in [1, 8, 9, 100, 255] {
                let mut got = Vec::new();
                winnow(data, w, |end, h| got.push((end, h)));
                assert_eq!(got, winnow_reference(data, w), "w {w}, len {}", data.len());
            }
        }
    }
}
