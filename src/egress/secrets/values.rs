//! What a rule's match must also satisfy to count (mixed character
//! classes, real assignment values, decodable Basic credentials), and the
//! extent of PEM private key blocks.

use std::sync::OnceLock;

use base64::Engine as _;
use regex::bytes::Regex;

use super::rules::Check;

/// The post-regex checks that keep code and prose from matching.
pub(super) fn accept(check: Check, value: &[u8], after: Option<u8>) -> bool {
    match check {
        Check::Token | Check::KeyedToken => true,
        Check::MixedToken => {
            let has = |f: fn(&u8) -> bool| value.iter().any(f);
            has(u8::is_ascii_digit) && has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase)
        }
        Check::Assignment { plain_words_ok } => assignment_value_ok(value, after, plain_words_ok),
        Check::BasicAuth => base64::engine::general_purpose::STANDARD
            .decode(value)
            .map(|raw| {
                raw.contains(&b':') && raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
            })
            .unwrap_or(false),
    }
}

/// Placeholders that often follow `password =` and are no secret.
const PLACEHOLDERS: &[&str] = &[
    "none",
    "null",
    "nil",
    "true",
    "false",
    "undefined",
    "redacted",
    "password",
    "secret",
    "required",
    "optional",
    "string",
    "example",
];

/// Code that reads a secret rather than holding one.
const CODE_PREFIXES: &[&str] = &[
    "os.environ",
    "os.getenv",
    "getenv",
    "process.env",
    "self.",
    "env.",
];

fn assignment_value_ok(value: &[u8], after: Option<u8>, plain_words_ok: bool) -> bool {
    if after == Some(b'(') || after == Some(b'[') {
        return false; // a call or an index: `token = next_token()`
    }
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|w| lower == w.as_bytes())
        || CODE_PREFIXES
            .iter()
            .any(|w| lower.starts_with(w.as_bytes()))
    {
        return false;
    }
    let first = value.first().copied().unwrap_or(b'*');
    // Templates, references and masks: `${DB_PASS}`, `<password>`, `%s`, `****`.
    if matches!(first, b'$' | b'{' | b'<' | b'%' | b'*' | b'[' | b'(' | b'#')
        || value.iter().all(|&b| b == first)
    {
        return false;
    }
    let digits = value.iter().any(u8::is_ascii_digit);
    let lower_case = value.iter().any(u8::is_ascii_lowercase);
    let inner_upper = value.iter().skip(1).any(u8::is_ascii_uppercase);
    let symbol = value
        .iter()
        .any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'_' | b'.' | b'-' | b' '));
    if digits || symbol || (lower_case && inner_upper) {
        return true;
    }
    // Plain words: a password may be one, a token or key practically never
    // is, while identifiers (`token = current_token`) often are.
    plain_words_ok && !value.contains(&b' ') && !value.contains(&b'.')
}

/// The largest private key block searched for its END line.
const PEM_MAX: usize = 64 * 1024;

/// A PEM private key block starting at `at`: through its END line, or, when
/// cut short (by the capture limit or a partial print), through the end of
/// its base64 body.
pub(super) fn pem_block(text: &[u8], at: usize) -> Option<(usize, usize)> {
    static HEADER: OnceLock<Option<Regex>> = OnceLock::new();
    let header = HEADER
        .get_or_init(|| Regex::new(r"^-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").ok())
        .as_ref()?;
    let head = header.find(&text[at..text.len().min(at + 80)])?;
    let body = at + head.end();
    let limit = text.len().min(at + PEM_MAX);
    if let Some(end_at) = memchr::memmem::find(&text[body..limit], b"-----END ") {
        let end_line = body + end_at + 9;
        if let Some(close) = memchr::memmem::find(&text[end_line..limit], b"-----") {
            return Some((at, end_line + close + 5));
        }
    }
    // No END line: the body runs while bytes look like base64, line breaks
    // (also escaped ones, as in JSON) or PEM headers.
    let mut end = body;
    while end < limit
        && (text[end].is_ascii_alphanumeric()
            || matches!(
                text[end],
                b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ' | b'\\' | b':' | b','
            ))
    {
        end += 1;
    }
    Some((at, end))
}
