//! Deterministic text for tests and benchmarks: shared by the unit tests
//! (`egress::corpus`, test builds only) and `benches/egress.rs` (through
//! `#[path]`), each of which uses part of it.
#![allow(dead_code)]

/// Deterministic pseudo-random numbers (splitmix64).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    pub(crate) fn pick_from(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One CSV line of numbers: ids, 64-bit values, decimals, negatives.
pub(crate) fn csv_line(rng: &mut Rng) -> String {
    format!(
        "{},{},{}.{},{}\n",
        rng.below(1 << 30),
        rng.next(),
        rng.below(1000),
        rng.below(1_000_000),
        rng.next() as i64
    )
}

pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(crate) const HEX: &[u8] = b"0123456789abcdef";

/// Words of ordinary reports, with the filter's keywords ("token",
/// "secret", "password", "key") among them on purpose: prose built from
/// them is keyword-dense.
pub(crate) const WORDS: &[&str] = &[
    "the",
    "model",
    "reads",
    "context",
    "and",
    "prints",
    "a",
    "summary",
    "of",
    "each",
    "chapter",
    "revenue",
    "grew",
    "in",
    "quarter",
    "while",
    "costs",
    "fell",
    "customers",
    "reported",
    "issues",
    "with",
    "login",
    "pages",
    "token",
    "secret",
    "password",
    "key",
    "analysis",
    "shows",
    "that",
    "results",
    "were",
    "consistent",
    "across",
    "regions",
    "north",
    "south",
    "between",
    "because",
    "however",
    "document",
    "section",
    "table",
    "figure",
    "according",
    "authentication",
    "service",
    "configuration",
    "environment",
    "Tuesday",
    "January",
    "London",
    "Paris",
    "the",
    "of",
    "to",
];
