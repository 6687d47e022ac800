//! Echoes of a short context (16 bytes to 8 KiB), checked against the
//! context itself.
//!
//! The winnowed index ([`super::echo`]) sees only common substrings of a
//! shingle and a window (71 bytes at least) and counts only regions of 256
//! bytes or half the context, so a one-sentence context printed whole
//! passes it, and the edges of a small one printed whole are left in the
//! output. A short context is therefore also kept whole, and an output is
//! an echo of it where one region reproduces the context whole or nearly:
//! at least `max(16, share · len)` of its bytes, in order, `share` being
//! the similarity threshold but at least [`WHOLE_SHARE`]. A few words of a
//! sentence are a mention, not an echo.
//!
//! Seeds: the output's 8-byte grams every `stride` bytes (an eighth of
//! the context's length, from 8 to 64), looked up among the
//! context's grams, a two-bit filter first, so an unrelated output costs
//! one load, multiply and bit test per seed. A reproduced stretch of
//! `stride + 7` bytes holds a seed. From a seed the match is extended
//! exactly both ways; one of at least [`MIN_BLOCK`] bytes is then extended
//! over small edits (up to 4 bytes replaced, inserted or dropped, picked
//! up again on 8 equal bytes), and matches at most [`GAP`] bytes apart in
//! both texts, in order, chain into one region. Seeds inside a region are
//! skipped and no extension reaches back before the previous one, so the
//! check stays linear in the output.
//!
//! Contexts shorter than [`MIN_CONTEXT`] are not checked: a context of
//! `yes`, `42` or `Paris` is indistinguishable from an answer that happens
//! to be the same word, and printing the answer is what the code is for.

/// Contexts up to this size are kept whole and checked directly; larger
/// ones rely on the winnowed index alone, whose 256-byte regions are then
/// a small part of them.
pub(crate) const SHORT_MAX: usize = 8 * 1024;

/// Shorter contexts are never an echo: too short to tell from ordinary
/// output (see the module doc).
pub const MIN_CONTEXT: usize = 16;

/// The least share of a short context one region must reproduce, whatever
/// the (lower) similarity threshold: nearly all of it.
pub(crate) const WHOLE_SHARE: f64 = 0.8;

/// Bytes per gram (one `u64`, compared whole).
const GRAM: usize = 8;

/// An exact match shorter than this is a common phrase, not the start of
/// an echo: not extended over edits.
const MIN_BLOCK: usize = 16;

/// Largest gap between two matches of one region, in the output and in
/// the context (a changed word or figure).
const GAP: usize = 32;

/// Largest edit stepped over inside a match (bytes on each side), and the
/// equal bytes after it that pick the match up again: 8, so that texts of
/// few symbols (digits, DNA) do not resynchronize by chance at every step.
const EDIT: usize = 4;
const SYNC: usize = 8;

/// A gram occurring more often in the context (indentation, separators)
/// is no seed: it would seed in every output.
const MAX_POSITIONS: usize = 4;

/// A short context, its grams, and what an echo of it must reproduce.
#[derive(Clone)]
pub(crate) struct ShortContext {
    bytes: Vec<u8>,
    /// `(gram, position)` for every gram occurring at most
    /// `MAX_POSITIONS` times, sorted.
    grams: Vec<(u64, u32)>,
    /// Two bits per gram, in one word.
    filter: Vec<u64>,
    stride: usize,
    need: usize,
}

impl std::fmt::Debug for ShortContext {
    // The context may be private: never its bytes in a Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShortContext({} bytes, need {})",
            self.bytes.len(),
            self.need
        )
    }
}

fn gram(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..)?.first_chunk::<GRAM>()?;
    Some(u64::from_le_bytes(*chunk))
}

/// One word and two bits in it for `g` (a Fibonacci hash).
fn filter_slot(g: u64, words: usize) -> (usize, u64) {
    let z = g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let slot = (((z >> 32) * words as u64) >> 32) as usize;
    (slot, (1u64 << (z & 63)) | (1u64 << ((z >> 6) & 63)))
}

/// Where an output reproduces part of the context, edits included.
#[derive(Clone, Copy, Debug)]
struct Match {
    out: (usize, usize),
    ctx: (usize, usize),
    /// Bytes equal in both (at most the context range's length).
    same: usize,
}

impl ShortContext {
    /// `None` outside `MIN_CONTEXT ..= SHORT_MAX` bytes. `share`: the
    /// similarity threshold.
    pub(crate) fn build(context: &[u8], share: f64) -> Option<Self> {
        let n = context.len();
        if !(MIN_CONTEXT..=SHORT_MAX).contains(&n) {
            return None;
        }
        let mut all: Vec<(u64, u32)> = (0..=n - GRAM)
            .filter_map(|i| Some((gram(context, i)?, i as u32)))
            .collect();
        all.sort_unstable();
        let mut grams = Vec::with_capacity(all.len());
        for run in all.chunk_by(|a, b| a.0 == b.0) {
            if run.len() <= MAX_POSITIONS {
                grams.extend_from_slice(run);
            }
        }
        let words = (grams.len() * 32).div_ceil(64).max(16);
        let mut filter = vec![0u64; words];
        for &(g, _) in &grams {
            let (slot, mask) = filter_slot(g, words);
            filter[slot] |= mask;
        }
        let share = share.clamp(WHOLE_SHARE, 1.0);
        let need = MIN_CONTEXT.max((share * n as f64).ceil() as usize).min(n);
        Some(ShortContext {
            bytes: context.to_vec(),
            grams,
            filter,
            stride: (n / 8).clamp(GRAM, 64),
            need,
        })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.len() + self.grams.len() * 16 + self.filter.len() * 8
    }

    /// Appends the regions of `output` that reproduce the context whole or
    /// nearly, in order.
    pub(crate) fn find(&self, output: &[u8], spans: &mut Vec<(usize, usize)>) {
        let words = self.filter.len();
        // Matches of the current region, summarized: its output and
        // context ranges and the bytes reproduced.
        let mut region: Option<Match> = None;
        let mut done = 0;
        let mut p = 0;
        while let Some(g) = gram(output, p) {
            let (slot, mask) = filter_slot(g, words);
            if self.filter[slot] & mask != mask {
                p += self.stride;
                continue;
            }
            let Some(m) = self.best_match(output, p, g, done) else {
                p += self.stride;
                continue;
            };
            region = match region {
                Some(r)
                    if m.out.0 <= r.out.1 + GAP
                        && m.ctx.0 >= r.ctx.1
                        && m.ctx.0 <= r.ctx.1 + GAP =>
                {
                    Some(Match {
                        out: (r.out.0, m.out.1),
                        ctx: (r.ctx.0, m.ctx.1),
                        same: r.same + m.same,
                    })
                }
                Some(r) => {
                    self.close(r, spans);
                    Some(m)
                }
                None => Some(m),
            };
            done = m.out.1;
            p = done.max(p + 1);
        }
        if let Some(r) = region {
            self.close(r, spans);
        }
    }

    fn close(&self, region: Match, spans: &mut Vec<(usize, usize)>) {
        if region.same >= self.need {
            spans.push(region.out);
        }
    }

    /// The longest match through the seed `g` at `p` (at most
    /// `MAX_POSITIONS` alignments), not reaching back before `floor`;
    /// `None` when every exact match is shorter than `MIN_BLOCK`.
    fn best_match(&self, output: &[u8], p: usize, g: u64, floor: usize) -> Option<Match> {
        let from = self.grams.partition_point(|&(h, _)| h < g);
        self.grams[from..]
            .iter()
            .take_while(|&&(h, _)| h == g)
            .filter_map(|&(_, q)| self.extend(output, p, q as usize, floor))
            .max_by_key(|m| m.same)
    }

    /// The match of `output[p..]` with the context at `q`: exact both
    /// ways, then over small edits when the exact part is long enough.
    fn extend(&self, output: &[u8], p: usize, q: usize, floor: usize) -> Option<Match> {
        let ctx = &self.bytes;
        let right = common_prefix(&output[p..], &ctx[q..]);
        let left = common_suffix(&output[floor..p], &ctx[..q]);
        if left + right < MIN_BLOCK {
            return None;
        }
        let (mut o, mut c, mut same) = (p + right, q + right, left + right);
        while let Some((o2, c2)) = resync(&output[o..], &ctx[c..]) {
            let run = common_prefix(&output[o + o2..], &ctx[c + c2..]);
            (o, c, same) = (o + o2 + run, c + c2 + run, same + run);
        }
        let (mut lo, mut lc) = (p - left, q - left);
        while let Some((o2, c2)) = resync_back(&output[floor..lo], &ctx[..lc]) {
            let run = common_suffix(&output[floor..lo - o2], &ctx[..lc - c2]);
            (lo, lc, same) = (lo - o2 - run, lc - c2 - run, same + run);
        }
        Some(Match {
            out: (lo, o),
            ctx: (lc, c),
            same,
        })
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The smallest edit `(skipped in a, skipped in b)`, at most `EDIT` bytes
/// each, after which `SYNC` bytes of `a` and `b` are equal. `None` at the
/// end of either.
fn resync(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    EDITS.iter().copied().find(
        |&(i, j)| matches!((a.get(i..i + SYNC), b.get(j..j + SYNC)), (Some(x), Some(y)) if x == y),
    )
}

/// [`resync`] backwards: `SYNC` equal bytes before the skipped ends.
fn resync_back(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    fn before(s: &[u8], k: usize) -> Option<&[u8]> {
        let at = s.len().checked_sub(k + SYNC)?;
        s.get(at..at + SYNC)
    }
    EDITS
        .iter()
        .copied()
        .find(|&(i, j)| matches!((before(a, i), before(b, j)), (Some(x), Some(y)) if x == y))
}

/// Every edit of at most `EDIT` bytes on each side, smallest first and, at
/// each size, a replacement before an insertion or a deletion.
const EDITS: [(usize, usize); (EDIT + 1) * (EDIT + 1) - 1] = [
    (1, 0),
    (0, 1),
    (1, 1),
    (2, 0),
    (0, 2),
    (2, 1),
    (1, 2),
    (3, 0),
    (0, 3),
    (2, 2),
    (3, 1),
    (1, 3),
    (4, 0),
    (0, 4),
    (3, 2),
    (2, 3),
    (4, 1),
    (1, 4),
    (3, 3),
    (4, 2),
    (2, 4),
    (4, 3),
    (3, 4),
    (4, 4),
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_edits_are_every_small_edit_smallest_first() {
        let mut all: Vec<(usize, usize)> = (0..=EDIT)
            .flat_map(|i| (0..=EDIT).map(move |j| (i, j)))
            .filter(|&e| e != (0, 0))
            .collect();
        all.sort_by_key(|&(i, j)| (i + j, i.abs_diff(j)));
        let mut listed = EDITS.to_vec();
        assert!(listed
            .windows(2)
            .all(|w| (w[0].0 + w[0].1, w[0].0.abs_diff(w[0].1))
                <= (w[1].0 + w[1].1, w[1].0.abs_diff(w[1].1))));
        listed.sort_by_key(|&(i, j)| (i + j, i.abs_diff(j), j));
        all.sort_by_key(|&(i, j)| (i + j, i.abs_diff(j), j));
        assert_eq!(listed, all);
    }

    #[test]
    fn debug_never_prints_the_context() {
        let short = ShortContext::build(b"The launch code is 0451-ALPHA", 0.5).unwrap();
        assert_eq!(format!("{short:?}"), "ShortContext(29 bytes, need 24)");
    }
}
