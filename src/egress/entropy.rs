//! High-entropy tokens: Shannon entropy per token, never per output.
//!
//! Like the established secret scanners (detect-secrets, truffleHog), only
//! runs of base64-like or hex-like characters above a minimum length are
//! measured, each class against its own threshold. What random keys have
//! and ordinary output lacks is checked first (length, a mix of character
//! classes), so the logarithms run on few tokens. Data that is long by
//! nature (base64 images, wrapped base64 or hex dumps) and hashes printed
//! as hashes are let through, as configured.

use super::classify::{
    classes, is_token_byte, token_mask, token_mask_partial, DIGIT, LOWER, NOT_HEX, UPPER,
};
use super::Hit;

/// Thresholds and lengths of the entropy detector (from `EgressConfig`).
#[derive(Clone, Debug)]
pub(crate) struct EntropyRules {
    pub base64_threshold: f64,
    pub hex_threshold: f64,
    pub base64_min_len: usize,
    pub hex_min_len: usize,
    /// Longer runs are data (images, archives), not credentials.
    pub max_len: usize,
    pub allow_hex_hashes: bool,
}

/// Bit `i` set when bits `i ..= i + 15` of `bits` are all set.
fn runs_of_16(bits: u128) -> u128 {
    let mut r = bits & (bits >> 1);
    r &= r >> 2;
    r &= r >> 4;
    r & (r >> 8)
}

/// Lengths of the hex digests code commonly prints: MD5, SHA-1, SHA-224,
/// SHA-256, SHA-384, SHA-512.
const HASH_LENGTHS: &[usize] = &[32, 40, 56, 64, 96, 128];

/// Prefixes of base64-encoded file formats (PNG, JPEG, GIF, WebP/RIFF, PDF,
/// gzip, zip): data, not a credential.
const DATA_MAGIC: &[&[u8]] = &[
    b"iVBORw0KGgo",
    b"/9j/",
    b"R0lGOD",
    b"UklGR",
    b"JVBERi0",
    b"H4sI",
    b"UEsDB",
];

impl EntropyRules {
    /// Appends a hit for every high-entropy token of `text`.
    ///
    /// The text is classified 64 bytes at a time into a bit mask of token
    /// bytes (SIMD compares); a shift-and cascade over two consecutive
    /// masks marks where 16 token bytes in a row begin, the shortest run
    /// the configuration allows (`validate`). Prose, code and most log
    /// lines have no such run in a chunk and cost only the classification;
    /// a run's end is read off the masks, not byte by byte.
    pub(crate) fn scan(&self, text: &[u8], out: &mut Vec<Hit>) {
        let min = self.base64_min_len.min(self.hex_min_len);
        let n = text.len();
        let chunks = n.div_ceil(64);
        let mask_of = |c: usize| -> u64 {
            let rest = text.get(64 * c..).unwrap_or_default();
            match rest.first_chunk::<64>() {
                Some(chunk) => token_mask(chunk),
                None => token_mask_partial(rest),
            }
        };
        // Positions before `resume` belong to a run already handled.
        let mut resume = 0;
        let mut next = mask_of(0);
        for c in 0..chunks {
            let cur = next;
            next = if c + 1 < chunks { mask_of(c + 1) } else { 0 };
            let pair = u128::from(cur) | (u128::from(next) << 64);
            let mut starts = runs_of_16(pair) as u64;
            let base = 64 * c;
            if resume > base {
                let skip = resume - base;
                starts = if skip >= 64 {
                    0
                } else {
                    starts & (!0u64 << skip)
                };
            }
            while starts != 0 {
                let p = base + starts.trailing_zeros() as usize;
                // A run reaching back before `p` began in an earlier
                // chunk, where it was handled; this is a safety net.
                let mut start = p;
                while start > resume && is_token_byte(text[start - 1]) {
                    start -= 1;
                }
                let gaps = !(pair >> (p - base));
                let mut end = if gaps != 0 {
                    p + gaps.trailing_zeros() as usize
                } else {
                    base + 128
                };
                while end < n && is_token_byte(text[end]) {
                    end += 1;
                }
                let end = end.min(n);
                if end - start >= min {
                    self.check(text, start, end, out);
                }
                // `text[end]` is no token byte.
                resume = end + 1;
                let skip = resume - base;
                starts = if skip >= 64 {
                    0
                } else {
                    starts & (!0u64 << skip)
                };
            }
        }
    }

    /// Cuts the entropy hits around a secret pattern's hit down to what is
    /// left of them outside it, where that still is high-entropy on its
    /// own. A key glued to the text before it (`idghp_...`) is one token
    /// with that text: the pattern knows where the key begins, and the
    /// rest is redacted only if it too looks like a secret
    /// (`f"{secret}{key_id}"`). Known secrets are left alone: their base64
    /// forms stop short of characters that mix their bits with the rest.
    pub(crate) fn trim_around_patterns(&self, text: &[u8], hits: &mut Vec<Hit>) {
        let is_entropy = |h: &Hit| h.kind.starts_with("high_entropy");
        let is_pattern =
            |h: &Hit| !is_entropy(h) && !h.is_echo() && !h.kind.starts_with("known_secret:");
        if !hits.iter().any(is_entropy) || !hits.iter().any(is_pattern) {
            return;
        }
        // The patterns' spans, merged: sorted by start and by end.
        let merged = super::echo::merge_spans(
            hits.iter()
                .filter(|h| is_pattern(h))
                .map(|h| (h.start, h.end))
                .collect(),
        );
        let min = self.base64_min_len.min(self.hex_min_len);
        let mut trimmed = Vec::new();
        hits.retain(|h| {
            if !is_entropy(h) {
                return true;
            }
            let first = merged.partition_point(|&(_, e)| e <= h.start);
            let inside = merged[first..].iter().take_while(|&&(s, _)| s < h.end);
            let mut from = h.start;
            let mut any = false;
            for &(s, e) in inside {
                any = true;
                if s >= from + min {
                    self.check(text, from, s, &mut trimmed);
                }
                from = from.max(e);
            }
            if !any {
                return true;
            }
            // Without its padding, which `check` adds back.
            let mut end = h.end;
            while end > from && text[end - 1] == b'=' {
                end -= 1;
            }
            if end >= from + min {
                self.check(text, from, end, &mut trimmed);
            }
            false
        });
        hits.append(&mut trimmed);
    }

    fn check(&self, text: &[u8], start: usize, end: usize, out: &mut Vec<Hit>) {
        let mut token = &text[start..end];
        let mut from = start;
        if token.len() > self.max_len {
            return;
        }
        if token.starts_with(b"0x") || token.starts_with(b"0X") {
            token = &token[2..];
            from += 2;
        }
        let seen = classes(token);
        let (digits, upper, lower) = (seen & DIGIT != 0, seen & UPPER != 0, seen & LOWER != 0);
        let hex = seen & NOT_HEX == 0;
        let flagged = if hex {
            token.len() >= self.hex_min_len
                && digits
                && (upper || lower)
                && !(self.allow_hex_hashes && HASH_LENGTHS.contains(&token.len()))
                && shannon(token) >= self.hex_threshold
        } else {
            token.len() >= self.base64_min_len
                && digits
                && upper
                && lower
                && !DATA_MAGIC.iter().any(|m| token.starts_with(m))
                && !after_data_uri(text, start)
                && shannon(token) >= self.base64_threshold
        };
        if flagged && !wrapped_block(text, start, end) {
            let kind = if hex {
                "high_entropy_hex"
            } else {
                "high_entropy_base64"
            };
            // Padding belongs to the token.
            let mut stop = end;
            while stop < text.len() && stop - end < 2 && text[stop] == b'=' {
                stop += 1;
            }
            out.push(Hit::new(from, stop, kind));
        }
    }
}

/// Shannon entropy in bits per character.
pub(crate) fn shannon(token: &[u8]) -> f64 {
    if token.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in token {
        counts[b as usize] += 1;
    }
    let n = token.len() as f64;
    let sum: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let c = f64::from(c);
            c * c.log2()
        })
        .sum();
    n.log2() - sum / n
}

/// `data:image/png;base64,<token>`: an inline file.
fn after_data_uri(text: &[u8], start: usize) -> bool {
    text[..start].ends_with(b";base64,")
}

/// One line of a wrapped base64 or hex dump (MIME wraps at 76, PEM at 64,
/// `xxd -p` at 60): the token fills its line and a neighbouring line is
/// filled by a token too. Private keys in such blocks are caught by their
/// PEM header instead.
fn wrapped_block(text: &[u8], start: usize, end: usize) -> bool {
    let line_start = start == 0 || text[start - 1] == b'\n';
    let mut stop = end;
    while stop < text.len() && text[stop] == b'=' {
        stop += 1;
    }
    if stop < text.len() && text[stop] == b'\r' {
        stop += 1;
    }
    let line_end = stop == text.len() || text[stop] == b'\n';
    if !(line_start && line_end) {
        return false;
    }
    let len = end - start;
    let full_line = |s: usize, e: usize| {
        e > s
            && text[s..e]
                .iter()
                .all(|&b| is_token_byte(b) || b == b'=' || b == b'\r')
    };
    // A full line followed by another: this is not the last line.
    if len >= 48 && stop < text.len() {
        let next = stop + 1;
        let next_end = memchr::memchr(b'\n', &text[next..]).map_or(text.len(), |i| next + i);
        if next_end - next >= 4 && full_line(next, next_end) {
            return true;
        }
    }
    // Preceded by a full line at least as long: this may be the last line.
    if start >= 2 {
        let prev_end = start - 1;
        let prev = memchr::memrchr(b'\n', &text[..prev_end]).map_or(0, |i| i + 1);
        if prev_end - prev >= 48.max(len) && full_line(prev, prev_end) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_at_every_alignment_and_length() {
        let rules = EntropyRules {
            base64_threshold: 0.1,
            hex_threshold: 0.1,
            base64_min_len: 16,
            hex_min_len: 16,
            max_len: 10_000,
            allow_hex_hashes: false,
        };
        // Built here: a literal would be a finding of the test that scans
        // this crate's own source.
        let alphabet: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .collect();
        let token: Vec<u8> = (0..128usize)
            .map(|i| alphabet[(i * 37 + i * i * 11) % alphabet.len()])
            .collect();
        for offset in 0..70 {
            for len in [15, 16, 17, 63, 64, 65, 100, 128] {
                let mut text = vec![b' '; offset];
                text.extend_from_slice(&token[..len]);
                text.extend_from_slice(b" tail words");
                let mut hits = Vec::new();
                rules.scan(&text, &mut hits);
                let spans: Vec<(usize, usize)> = hits.iter().map(|h| (h.start, h.end)).collect();
                let expected = if len >= 16 {
                    vec![(offset, offset + len)]
                } else {
                    vec![]
                };
                assert_eq!(spans, expected, "offset {offset} len {len}");
                // At the very end of the text too.
                text.truncate(offset + len);
                let mut hits = Vec::new();
                rules.scan(&text, &mut hits);
                assert_eq!(
                    hits.len(),
                    usize::from(len >= 16),
                    "end, offset {offset} len {len}"
                );
            }
        }
    }
}
