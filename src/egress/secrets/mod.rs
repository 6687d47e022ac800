//! Known secret patterns (cloud keys, tokens, private keys, credential
//! assignments), found by a literal prefilter and confirmed by a regex run
//! only on a small window around each literal hit.
//!
//! Benign text is scanned quickly because the only full passes over it are
//! SIMD searches for short anchor literals (`rules.rs`); a regex runs only
//! where an anchor occurs, anchored and over a bounded window, so the cost
//! stays linear in the text however many anchors it holds.

mod rules;
mod values;

use super::{EgressError, Hit};
use rules::{rules, Check, Rule, Start, ANCHORS};
use values::{accept, pem_block};

pub(crate) use rules::anchor_literals;

/// Confirms secret patterns around the anchors found by the prefilter.
pub(crate) struct SecretMatcher {
    rules: &'static [Rule],
}

/// Bytes that may precede an anchor within the same match (identifier
/// characters and URL scheme characters): the window starts where they end.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+')
}

/// How far back from an anchor a match may start.
const MAX_LOOKBACK: usize = 128;

impl SecretMatcher {
    pub(crate) fn new() -> Result<Self, EgressError> {
        Ok(SecretMatcher { rules: rules()? })
    }

    /// Checks the rules of anchor `anchor_id` found at `at` in `text`.
    pub(crate) fn confirm(&self, text: &[u8], anchor_id: usize, at: usize, out: &mut Vec<Hit>) {
        if anchor_id == ANCHORS.len() {
            if let Some((start, end)) = pem_block(text, at) {
                out.push(Hit::new(start, end, "private_key"));
            }
            return;
        }
        let Some((_, _, rule_ids)) = ANCHORS.get(anchor_id) else {
            return;
        };
        // Whether an assignment operator follows (most keyword hits in
        // prose and code end here), then the identifier holding the
        // anchor, where `Identifier` rules start: each found once, when a
        // rule first needs it.
        let mut operator_follows = None;
        let mut ident = None;
        for &id in *rule_ids {
            let Some(rule) = self.rules.get(id) else {
                continue;
            };
            if matches!(rule.check, Check::Assignment { .. } | Check::KeyedToken)
                && !*operator_follows.get_or_insert_with(|| assignment_may_follow(text, at))
            {
                continue;
            }
            let start = match rule.start {
                Start::Identifier => *ident.get_or_insert_with(|| {
                    let floor = at.saturating_sub(MAX_LOOKBACK);
                    let mut ident = at;
                    while ident > floor && is_key_byte(text[ident - 1]) {
                        ident -= 1;
                    }
                    ident
                }),
                Start::Anchor(back) => match at.checked_sub(back) {
                    // `\b`: a token does not begin inside a word.
                    Some(s) if s == 0 || !is_word_byte(text[s - 1]) => s,
                    _ => continue,
                },
                Start::Glued(back) => match at.checked_sub(back) {
                    Some(s) => s,
                    None => continue,
                },
            };
            let end = text.len().min(at + rule.reach);
            let window = &text[start..end];
            let Some(caps) = rule.regex().and_then(|re| re.captures(window)) else {
                continue;
            };
            let Some(whole) = caps.get(0) else { continue };
            if start + whole.end() <= at {
                continue;
            }
            // The first group that took part is the secret.
            let Some(secret) = (1..caps.len()).find_map(|g| caps.get(g)) else {
                continue;
            };
            let after = window.get(secret.end()).copied();
            if accept(rule.check, secret.as_bytes(), after) {
                out.push(Hit::new(
                    start + secret.start(),
                    start + secret.end(),
                    rule.kind,
                ));
                return;
            }
        }
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether an assignment operator and a value the assignment regex could
/// accept (quoted, or at least 6 value bytes) follow the identifier
/// holding `at`. Most keyword hits are prose (`the token is`) or short
/// values (`"tokens": 1234`) and end here, without running the regex.
/// Never rejects what an assignment regex (or the AWS secret key's) would
/// match: their key side is made of key bytes, so their operator is the
/// one found here, and their values are quoted or at least 6 such bytes.
fn assignment_may_follow(text: &[u8], at: usize) -> bool {
    let mut i = at;
    while i < text.len() && is_key_byte(text[i]) {
        i += 1;
    }
    if i < text.len() && matches!(text[i], b'"' | b'\'') {
        i += 1;
    }
    while i < text.len() && matches!(text[i], b' ' | b'\t') {
        i += 1;
    }
    let Some(&op) = text.get(i) else {
        return false;
    };
    if !matches!(op, b':' | b'=') {
        return false;
    }
    // The value starts after `:`/`=` or after a two-byte `:=`/`=>`.
    let two_byte = matches!(
        (op, text.get(i + 1)),
        (b':', Some(b'=')) | (b'=', Some(b'>'))
    );
    value_may_start(text, i + 1) || (two_byte && value_may_start(text, i + 2))
}

/// A quote, or at least 6 bytes of an unquoted value, after blanks.
fn value_may_start(text: &[u8], mut i: usize) -> bool {
    while i < text.len() && matches!(text[i], b' ' | b'\t') {
        i += 1;
    }
    if matches!(text.get(i), Some(b'"' | b'\'')) {
        return true;
    }
    let unquoted = |b: u8| {
        !b.is_ascii_whitespace()
            && b != 0x0B
            && !matches!(
                b,
                b'"' | b'\''
                    | b'`'
                    | b','
                    | b';'
                    | b'&'
                    | b'('
                    | b')'
                    | b'{'
                    | b'}'
                    | b'['
                    | b']'
                    | b'<'
                    | b'>'
            )
    };
    text.get(i..i + 6)
        .is_some_and(|value| value.iter().all(|&b| unquoted(b)))
}
