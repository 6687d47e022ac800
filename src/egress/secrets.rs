//! Known secret patterns (cloud keys, tokens, private keys, credential
//! assignments), found by a literal prefilter and confirmed by a regex run
//! only on a small window around each literal hit.
//!
//! Benign text is scanned quickly because the only full pass over it is an
//! Aho–Corasick search for short anchor literals; a
//! regex runs only where an anchor occurs, over a bounded window, so the
//! cost stays linear in the text however many anchors it holds.

use std::sync::OnceLock;

use base64::Engine as _;
use regex::bytes::Regex;

use super::literals::Scan::{self, Frequent, Rare};
use super::{EgressError, Hit};

/// What a rule redacts once its regex matched.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// The whole token (capture group 1) is the secret.
    Token,
    /// Like `Token`, for a token recognised only by the key it is assigned
    /// to (`aws_secret_access_key = ...`): an assignment operator must
    /// follow the key, as for `Assignment`.
    KeyedToken,
    /// Like `Token`, but the token must mix digits and letters of both
    /// cases: real keys do with overwhelming probability, and
    /// identifiers that happen to share the prefix (`sk-some-css-class`)
    /// do not.
    MixedToken,
    /// `key = value`: only the value is redacted, so the model still sees
    /// which setting was hidden. Plain words are accepted as values only
    /// for password keys.
    Assignment { plain_words_ok: bool },
    /// `Basic <base64>`: only when the base64 decodes to `user:password`.
    BasicAuth,
}

/// Where a rule's match begins, so its regex runs anchored (`^`) and
/// stops as soon as the text stops fitting, instead of searching a window.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// This many bytes before the anchor, after a non-word byte (`\b`).
    Anchor(usize),
    /// At the start of the identifier holding the anchor (`DB_PASSWORD`,
    /// `https`).
    Identifier,
}

struct Rule {
    kind: &'static str,
    pattern: String,
    /// Compiled on first use: most outputs trigger no rule at all, and
    /// compiling every rule up front costs milliseconds on every run.
    re: OnceLock<Option<Regex>>,
    start: Start,
    check: Check,
    /// Bytes after the anchor the window must include: longer than any
    /// match can reach, so a match never ends at an artificial window end.
    reach: usize,
}

/// Every anchor literal, how often ordinary output holds it (which literal
/// pass searches it), and the rules it triggers, tried in order; the first
/// rule whose match covers the anchor wins. Every rule has at least one
/// anchor, so rare prefixes (AWS `ABIA`/`ACCA`/`A3T`, every GitLab token
/// prefix, `Basic` auth headers, `API-KEY`) are matched by their own
/// pattern, not left to the entropy detector.
const ANCHORS: &[(&str, Scan, &[usize])] = &[
    ("AKIA", Rare, &[0]),
    ("ASIA", Rare, &[0]),
    ("ABIA", Rare, &[0]),
    ("ACCA", Rare, &[0]),
    ("A3T", Rare, &[0]),
    ("ghp_", Rare, &[2]),
    ("gho_", Rare, &[2]),
    ("ghu_", Rare, &[2]),
    ("ghs_", Rare, &[2]),
    ("ghr_", Rare, &[2]),
    ("github_pat_", Rare, &[3]),
    ("glpat-", Rare, &[4]),
    ("gldt-", Rare, &[4]),
    ("glrt-", Rare, &[4]),
    ("glptt-", Rare, &[4]),
    ("glcbt-", Rare, &[4]),
    ("glft-", Rare, &[4]),
    ("glsoat-", Rare, &[4]),
    ("GR1348941", Rare, &[5]),
    ("xox", Rare, &[6]),
    ("xapp-", Rare, &[7]),
    ("hooks.slack.com", Rare, &[8]),
    ("k_live_", Rare, &[9]),
    ("k_test_", Rare, &[9]),
    ("AIza", Rare, &[10]),
    ("sk-", Rare, &[11, 12]),
    ("eyJ", Rare, &[13]),
    ("earer", Frequent, &[14]),
    ("EARER", Frequent, &[14]),
    // `Authorization: Basic <base64>`; the space or tab keeps the word
    // "basic" in prose from running the rule.
    ("asic ", Frequent, &[15]),
    ("asic\t", Frequent, &[15]),
    ("ASIC ", Frequent, &[15]),
    ("ASIC\t", Frequent, &[15]),
    ("://", Rare, &[16]),
    ("assw", Frequent, &[17]),
    ("ASSW", Frequent, &[17]),
    ("assphrase", Frequent, &[17]),
    ("ASSPHRASE", Frequent, &[17]),
    ("ecret", Frequent, &[1, 18]),
    ("ECRET", Frequent, &[1, 18]),
    ("oken", Frequent, &[19]),
    ("OKEN", Frequent, &[19]),
    // `api_key`, `apiKey`, `API-KEY`, `X-Api-Key`: the spellings in use.
    ("pi_key", Frequent, &[20]),
    ("PI_KEY", Frequent, &[20]),
    ("pi_Key", Frequent, &[20]),
    ("PI_Key", Frequent, &[20]),
    ("pi-key", Frequent, &[20]),
    ("PI-KEY", Frequent, &[20]),
    ("pi-Key", Frequent, &[20]),
    ("PI-Key", Frequent, &[20]),
    ("pikey", Frequent, &[20]),
    ("piKey", Frequent, &[20]),
    ("PIKEY", Frequent, &[20]),
];

/// The anchor of PEM private key blocks, handled by [`pem_block`] rather
/// than a regex because a block may be long or cut short.
pub(crate) const PEM_ANCHOR: &str = "-----BEGIN";

/// The key side of an assignment: any identifier ending in one of the
/// keywords, optionally quoted (JSON, YAML, env files, Python kwargs).
fn assignment(keywords: &str) -> String {
    format!(
        r#"(?i)[A-Za-z0-9_.\-]*(?:{keywords})["']?[ \t]*(?::=|=>|[:=])[ \t]*(?:"([^"\r\n]{{6,256}})"|'([^'\r\n]{{6,256}})'|([^\s"'`,;&(){{}}\[\]<>]{{6,256}}))"#
    )
}

fn rule_table() -> Vec<(&'static str, String, Start, Check, usize)> {
    use Check::*;
    use Start::{Anchor as At, Identifier as Ident};
    vec![
        // 0
        (
            "aws_access_key_id",
            r"((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16})\b".into(),
            At(0),
            Token,
            64,
        ),
        // 1: the 40-character secret is only recognisable by its key name.
        (
            "aws_secret_access_key",
            r#"(?i)aws_?secret_?(?:access_?)?key["']?[ \t]*[:=][ \t]*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#.into(),
            Ident,
            KeyedToken,
            128,
        ),
        // 2
        ("github_token", r"((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255})\b".into(), At(0), Token, 300),
        // 3: fine-grained personal access tokens.
        ("github_fine_grained_pat", r"(github_pat_[A-Za-z0-9_]{22,255})\b".into(), At(0), Token, 300),
        // 4
        (
            "gitlab_token",
            r"((?:glpat|gldt|glrt|glptt|glcbt|glft|glsoat)-[A-Za-z0-9_\-]{20,255})".into(),
            At(0),
            Token,
            300,
        ),
        // 5: runner registration tokens.
        ("gitlab_runner_token", r"(GR1348941[A-Za-z0-9_\-]{20,64})".into(), At(0), Token, 100),
        // 6
        ("slack_token", r"(xox[abposre]-[A-Za-z0-9\-]{10,250})".into(), At(0), Token, 300),
        // 7
        ("slack_app_token", r"(xapp-\d-[A-Za-z0-9\-]{10,250})".into(), At(0), Token, 300),
        // 8
        (
            "slack_webhook",
            r"(hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,250})".into(),
            At(0),
            Token,
            300,
        ),
        // 9: secret and restricted keys; publishable `pk_` keys are public.
        ("stripe_key", r"((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247})\b".into(), At(1), Token, 300),
        // 10
        ("google_api_key", r"(AIza[0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)".into(), At(0), Token, 64),
        // 11: tried before OpenAI, whose generic shape it also has.
        (
            "anthropic_api_key",
            r"(sk-ant-(?:api|admin|oat|sid)\d{2}-[A-Za-z0-9_\-]{20,300})".into(),
            At(0),
            Token,
            340,
        ),
        // 12
        (
            "openai_api_key",
            r"(sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,300})".into(),
            At(0),
            MixedToken,
            340,
        ),
        // 13: header.payload.signature, both JSON parts base64url of `{"`.
        (
            "jwt",
            r"(eyJ[A-Za-z0-9_\-]{5,2000}\.eyJ[A-Za-z0-9_\-]{5,8000}\.[A-Za-z0-9_\-]{0,2000})".into(),
            At(0),
            Token,
            12_100,
        ),
        // 14
        (
            "bearer_token",
            r"(?i)bearer[ \t]+([A-Za-z0-9\-._~+/]{16,4096}=*)".into(),
            At(1),
            MixedToken,
            4200,
        ),
        // 15
        ("basic_auth", r"(?i)basic[ \t]+([A-Za-z0-9+/]{8,1024}={0,2})".into(), At(1), BasicAuth, 1100),
        // 16: scheme://user:password@host; only the password is redacted.
        (
            "url_credentials",
            r#"[A-Za-z][A-Za-z0-9+._\-]{0,40}://[^\s/?#@:"'<>]{1,128}:([^\s/?#@"'<>]{1,256})@"#.into(),
            Ident,
            Token,
            420,
        ),
        // 17
        (
            "password_assignment",
            assignment("password|passwd|passphrase"),
            Ident,
            Assignment { plain_words_ok: true },
            300,
        ),
        // 18
        (
            "secret_assignment",
            assignment("secret|secret[_-]?key"),
            Ident,
            Assignment { plain_words_ok: false },
            300,
        ),
        // 19
        ("token_assignment", assignment("token"), Ident, Assignment { plain_words_ok: false }, 300),
        // 20
        (
            "api_key_assignment",
            assignment("api[_-]?key"),
            Ident,
            Assignment { plain_words_ok: false },
            300,
        ),
    ]
}

/// Anchored (the match begins where `start` says), ASCII classes: every
/// pattern is an ASCII token format, and Unicode \w, \s and \d would cost
/// ~15 MB and milliseconds of compilation.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})"))
        .unicode(false)
        .build()
}

impl Rule {
    /// The rule's regex, compiled the first time an anchor triggers it.
    /// Every pattern compiles (`every_rule_compiles`); a `None` here would
    /// only skip the rule.
    fn regex(&self) -> Option<&Regex> {
        self.re.get_or_init(|| compile(&self.pattern).ok()).as_ref()
    }
}

/// The rules, built once per process; their regexes compile lazily.
fn rules() -> Result<&'static [Rule], EgressError> {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    Ok(RULES.get_or_init(|| {
        rule_table()
            .into_iter()
            .map(|(kind, pattern, start, check, reach)| Rule {
                kind,
                pattern,
                re: OnceLock::new(),
                start,
                check,
                reach,
            })
            .collect()
    }))
}

/// The anchor literals, in id order (the ids `confirm` takes), each with
/// the pass that searches it; the PEM anchor comes last.
pub(crate) fn anchor_literals() -> Vec<(&'static str, Scan)> {
    ANCHORS
        .iter()
        .map(|(lit, scan, _)| (*lit, *scan))
        .chain([(PEM_ANCHOR, Rare)])
        .collect()
}

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

/// The post-regex checks that keep code and prose from matching.
fn accept(check: Check, value: &[u8], after: Option<u8>) -> bool {
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
pub(crate) fn pem_block(text: &[u8], at: usize) -> Option<(usize, usize)> {
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

#[cfg(test)]
mod compile_tests {
    /// Regexes compile lazily, so a broken pattern must fail here.
    #[test]
    fn every_rule_compiles() {
        for (kind, pattern, ..) in super::rule_table() {
            if let Err(e) = super::compile(&pattern) {
                panic!("{kind}: {e}");
            }
        }
    }
}
