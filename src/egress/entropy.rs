//! High-entropy tokens: Shannon entropy per token, never per output.
//!
//! Like the established secret scanners (detect-secrets, truffleHog), only
//! runs of base64-like or hex-like characters above a minimum length are
//! measured, each class against its own threshold. What random keys have
//! and ordinary output lacks is checked first (length, a mix of character
//! classes), so the logarithms run on few tokens. Data that is long by
//! nature (base64 images, wrapped base64 or hex dumps) and hashes printed
//! as hashes are let through, as configured.

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

/// Base64 (standard and URL-safe) characters, without the `=` padding so
/// that `key=value` splits into two tokens.
const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'_' || c == b'-';
        b += 1;
    }
    t
}
static TOKEN: [bool; 256] = token_table();

const HIGH: u64 = 0x8080_8080_8080_8080;

const fn repeat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each byte of `x` that is a token byte (see [`TOKEN`]),
/// computed for all 8 bytes at once. On 7-bit values a per-byte addition
/// cannot carry into the next byte, so `v + (128 - lo)` has its high bit set
/// exactly when `v >= lo`.
fn token_bytes(x: u64) -> u64 {
    let ascii = !x & HIGH;
    let v = x & !HIGH;
    let at_least = |lo: u8| (v + repeat(128 - lo)) & HIGH;
    let between = |lo: u8, hi: u8| at_least(lo) & !at_least(hi + 1);
    let equal = |c: u8| !((v ^ repeat(c)) + repeat(0x7F)) & HIGH;
    let classes = between(b'/', b'9') | between(b'A', b'Z') | between(b'a', b'z');
    (classes | equal(b'+') | equal(b'-') | equal(b'_')) & ascii
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
    /// Any run of 15 or more token bytes contains a whole aligned 8-byte
    /// word of token bytes, so only such words are looked at closely; the
    /// test classifies 8 bytes at once without branches (SWAR), and prose
    /// and code, whose aligned words mostly hold a space or a dot, pass
    /// through at a fraction of a cycle per byte.
    pub(crate) fn scan(&self, text: &[u8], out: &mut Vec<Hit>) {
        let min = self.base64_min_len.min(self.hex_min_len);
        let n = text.len();
        let words = n / 8;
        let mut k = 0;
        while k < words {
            let p = 8 * k;
            let mut word = [0u8; 8];
            word.copy_from_slice(&text[p..p + 8]);
            if token_bytes(u64::from_le_bytes(word)) != HIGH {
                k += 1;
                continue;
            }
            let mut start = p;
            while start > 0 && TOKEN[text[start - 1] as usize] {
                start -= 1;
            }
            let mut end = p + 8;
            while end < n && TOKEN[text[end] as usize] {
                end += 1;
            }
            if end - start >= min {
                self.check(text, start, end, out);
            }
            // `text[end]` is no token byte: its word cannot be whole.
            k = end / 8 + 1;
        }
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

const DIGIT: u8 = 1;
const UPPER: u8 = 2;
const LOWER: u8 = 4;
const NOT_HEX: u8 = 8;

const fn class_table() -> [u8; 256] {
    let mut t = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_uppercase() {
            UPPER | if c <= b'F' { 0 } else { NOT_HEX }
        } else if c.is_ascii_lowercase() {
            LOWER | if c <= b'f' { 0 } else { NOT_HEX }
        } else {
            NOT_HEX
        };
        b += 1;
    }
    t
}
static CLASS: [u8; 256] = class_table();

/// The character classes present in `token`, in one pass (candidates are
/// frequent in code and logs: paths, ids, long numbers).
fn classes(token: &[u8]) -> u8 {
    token.iter().fold(0, |seen, &b| seen | CLASS[b as usize])
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
                .all(|&b| TOKEN[b as usize] || b == b'=' || b == b'\r')
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

/// Whether `b` can be part of a base64-like token.
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN[b as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_classifier_agrees_with_the_table() {
        for b in 0..=255u8 {
            let word = u64::from_le_bytes([b, b' ', b, b'a', 0x80, b, b'~', b]);
            let mask = token_bytes(word);
            for (i, byte) in word.to_le_bytes().iter().enumerate() {
                let flagged = mask >> (8 * i + 7) & 1 == 1;
                assert_eq!(flagged, TOKEN[*byte as usize], "byte {byte:#x}");
            }
        }
    }
}
