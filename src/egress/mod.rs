//! The egress filter: the last layer before anything the sandbox printed
//! reaches a language model or a log. It finds known secret patterns,
//! high-entropy tokens, the operator's own secrets and echoes of the
//! context, on stdout and stderr alike, and applies one policy: redact
//! (default), block the stream, or warn (pass and report).
//!
//! One literal pass (Aho–Corasick, SIMD) finds the anchors of every secret
//! pattern and every known secret at once; a probing scan finds long
//! base64/hex runs; the context index is checked in one rolling-hash pass.
//! All three are linear in the output, and benign text costs little more
//! than reading it (docs/BENCHMARKS.md).

mod echo;
mod entropy;
mod known;
mod pending;
mod secrets;

use std::borrow::Cow;
use std::path::PathBuf;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use serde::{Deserialize, Serialize};

use crate::capture::CapturedStream;

pub use echo::{ContextEchoIndex, EchoReport, SHINGLE};
pub use known::{KnownSecret, MIN_KNOWN_SECRET_LEN};
pub use pending::PendingFilter;

#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What happens to a stream with findings.
#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Each finding's span is replaced by `[REDACTED:<kind>]`.
    #[default]
    Redact,
    /// The whole stream is replaced by a notice.
    Block,
    /// The stream passes unchanged; findings are still reported.
    Warn,
}

impl std::str::FromStr for Policy {
    type Err = EgressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "redact" => Ok(Policy::Redact),
            "block" => Ok(Policy::Block),
            "warn" => Ok(Policy::Warn),
            _ => Err(EgressError::invalid(
                "egress policy",
                s,
                "redact, block or warn",
            )),
        }
    }
}

/// What the `redact` policy does with a context echo.
#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum EchoAction {
    /// The echoed spans are replaced by `[REDACTED:context_echo]`.
    #[default]
    Redact,
    /// The whole stream is replaced by a notice telling the model to
    /// search the context instead of printing it.
    Notice,
}

impl std::str::FromStr for EchoAction {
    type Err = EgressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "redact" => Ok(EchoAction::Redact),
            "notice" => Ok(EchoAction::Notice),
            _ => Err(EgressError::invalid("echo action", s, "redact or notice")),
        }
    }
}

/// Context echo settings: the index shape (used by
/// [`ContextEchoIndex::build`]) and the rule deciding what is an echo.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    /// Fraction of the context (0, 1] an output may reproduce before it is
    /// an echo (`RLM_SIMILARITY_THRESHOLD`); `max_bytes` caps it for large
    /// contexts.
    pub similarity_threshold: f64,
    /// Reproducing this many bytes is an echo whatever the context size.
    pub max_bytes: usize,
    /// Never an echo below this many bytes (tiny contexts, short quotes).
    pub min_bytes: usize,
    /// Consecutive matching fingerprints needed to count a region.
    pub min_run: usize,
    pub action: EchoAction,
    /// Largest winnowing window (index density about 2 / (window + 1)).
    pub max_window: usize,
    /// Bloom filter bits per fingerprint (about 2% false positives at 12).
    pub bloom_bits: usize,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            similarity_threshold: 0.5,
            max_bytes: 32 * 1024,
            min_bytes: 64,
            min_run: 3,
            action: EchoAction::Redact,
            max_window: 100,
            bloom_bits: 12,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EgressConfig {
    pub policy: Policy,
    /// Known secret patterns (keys, tokens, private keys, assignments).
    pub secret_patterns: bool,
    /// High-entropy token detection.
    pub entropy: bool,
    /// Bits per character above which a base64-like token is a secret
    /// (`RLM_ENTROPY_THRESHOLD`).
    pub base64_entropy_threshold: f64,
    /// The same for hex-like tokens (at most 4 bits per character).
    pub hex_entropy_threshold: f64,
    pub base64_min_len: usize,
    pub hex_min_len: usize,
    /// Longer tokens are data (images, archives), not credentials.
    pub entropy_max_len: usize,
    /// Hex tokens of digest lengths (32, 40, 56, 64, 96, 128) pass.
    pub allow_hex_hashes: bool,
    pub known_secrets: Vec<KnownSecret>,
    pub echo: EchoConfig,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            policy: Policy::Redact,
            secret_patterns: true,
            entropy: true,
            base64_entropy_threshold: 4.5,
            hex_entropy_threshold: 3.0,
            base64_min_len: 20,
            hex_min_len: 32,
            entropy_max_len: 256,
            allow_hex_hashes: true,
            known_secrets: Vec::new(),
            echo: EchoConfig::default(),
        }
    }
}

impl EgressConfig {
    /// Refuses values outside their meaningful range, naming the setting,
    /// the value and the accepted form.
    pub fn validate(&self) -> Result<(), EgressError> {
        let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && v > lo && v <= hi;
        let checks: [(bool, &'static str, String, &'static str); 8] = [
            (
                in_range(self.base64_entropy_threshold, 0.0, 8.0),
                "base64 entropy threshold (RLM_ENTROPY_THRESHOLD)",
                self.base64_entropy_threshold.to_string(),
                "bits per character in (0, 8], e.g. 4.5",
            ),
            (
                in_range(self.hex_entropy_threshold, 0.0, 4.0),
                "hex entropy threshold",
                self.hex_entropy_threshold.to_string(),
                "bits per character in (0, 4], e.g. 3.0",
            ),
            (
                in_range(self.echo.similarity_threshold, 0.0, 1.0),
                "similarity threshold (RLM_SIMILARITY_THRESHOLD)",
                self.echo.similarity_threshold.to_string(),
                "a fraction of the context in (0, 1], e.g. 0.5",
            ),
            (
                // The scan relies on it (entropy.rs); shorter tokens cannot
                // reach a meaningful entropy anyway.
                self.base64_min_len >= 16 && self.hex_min_len >= 16,
                "entropy minimum token length",
                format!("{}/{}", self.base64_min_len, self.hex_min_len),
                "at least 16 characters",
            ),
            (
                self.entropy_max_len >= self.base64_min_len.max(self.hex_min_len),
                "entropy maximum token length",
                self.entropy_max_len.to_string(),
                "at least the minimum token lengths",
            ),
            (
                self.echo.min_run >= 1,
                "echo minimum run",
                self.echo.min_run.to_string(),
                "at least 1",
            ),
            (
                (8..=255).contains(&self.echo.max_window),
                "echo window",
                self.echo.max_window.to_string(),
                "8 to 255 fingerprints",
            ),
            (
                (4..=64).contains(&self.echo.bloom_bits),
                "echo bloom bits",
                self.echo.bloom_bits.to_string(),
                "4 to 64 bits per fingerprint",
            ),
        ];
        for (ok, setting, value, accepted) in checks {
            if !ok {
                return Err(EgressError::Invalid {
                    setting,
                    value,
                    accepted,
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("invalid {setting} {value:?}: expected {accepted}")]
    Invalid {
        setting: &'static str,
        value: String,
        accepted: &'static str,
    },
    #[error("environment variable {name} (to redact) is unset or empty")]
    EnvUnset { name: String },
    #[error("known secret {source_name} is {len} bytes; values shorter than {min} would match ordinary text")]
    SecretTooShort {
        source_name: String,
        len: usize,
        min: usize,
    },
    // `err`, not `source`: the message already carries it, and a source
    // would print it twice in an error chain.
    #[error("cannot read {}: {err}", path.display())]
    ReadFile { path: PathBuf, err: std::io::Error },
    #[error("built-in secret pattern failed to compile (a bug): {0}")]
    Pattern(String),
    #[error("cannot build the literal matcher: {0}")]
    Automaton(String),
}

impl EgressError {
    fn invalid(setting: &'static str, value: &str, accepted: &'static str) -> Self {
        EgressError::Invalid {
            setting,
            value: value.to_string(),
            accepted,
        }
    }
}

/// One thing the filter found. Never holds the secret itself.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Finding {
    /// e.g. `aws_access_key_id`, `high_entropy_base64`,
    /// `known_secret:OPENAI_API_KEY`, `context_echo`.
    pub kind: String,
    pub stream: Stream,
    /// Byte span in the original rendered stream (head, marker, tail).
    pub span: [usize; 2],
    pub action: Policy,
}

#[derive(Serialize, Clone, Debug)]
pub struct FilteredStream {
    pub text: String,
    pub findings: Vec<Finding>,
}

/// A detector's raw result, in the coordinates of the scanned text.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    start: usize,
    end: usize,
    kind: Cow<'static, str>,
}

impl Hit {
    pub(crate) fn new(start: usize, end: usize, kind: impl Into<Cow<'static, str>>) -> Self {
        Hit {
            start,
            end,
            kind: kind.into(),
        }
    }
    fn is_echo(&self) -> bool {
        self.kind == "context_echo"
    }
}

/// The filter of one run: patterns compiled and context indexed once,
/// shared by both streams (`Send + Sync`).
pub struct EgressFilter {
    config: EgressConfig,
    secrets: secrets::SecretMatcher,
    entropy: entropy::EntropyRules,
    /// Secret anchors (ids below `anchor_count`), then known secret forms.
    literals: Option<AhoCorasick>,
    anchor_count: usize,
    /// For each known-secret form, its finding kind.
    known_kinds: Vec<String>,
    context: Option<ContextEchoIndex>,
}

impl EgressFilter {
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        config.validate()?;
        let mut literals: Vec<Vec<u8>> = Vec::new();
        if config.secret_patterns {
            literals.extend(
                secrets::anchor_literals()
                    .iter()
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        let anchor_count = literals.len();
        let mut known_kinds = Vec::new();
        for secret in &config.known_secrets {
            for form in secret.forms() {
                literals.push(form);
                known_kinds.push(format!("known_secret:{}", secret.name));
            }
        }
        let literals = if literals.is_empty() {
            None
        } else {
            // A DFA: a few hundred states at most, the fastest search.
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&literals)
                .map_err(|e| EgressError::Automaton(e.to_string()))?;
            Some(ac)
        };
        let entropy = entropy::EntropyRules {
            base64_threshold: config.base64_entropy_threshold,
            hex_threshold: config.hex_entropy_threshold,
            base64_min_len: config.base64_min_len,
            hex_min_len: config.hex_min_len,
            max_len: config.entropy_max_len,
            allow_hex_hashes: config.allow_hex_hashes,
        };
        Ok(EgressFilter {
            secrets: secrets::SecretMatcher::new()?,
            entropy,
            literals,
            anchor_count,
            known_kinds,
            context: None,
            config,
        })
    }

    /// Adds the context echo check against `index`.
    pub fn with_context(mut self, index: ContextEchoIndex) -> Self {
        self.context = Some(index);
        self
    }

    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    pub fn context(&self) -> Option<&ContextEchoIndex> {
        self.context.as_ref()
    }

    /// Filters arbitrary bytes (invalid UTF-8 is replaced first; spans
    /// refer to the replaced text).
    pub fn filter_text(&self, stream: Stream, text: &[u8]) -> FilteredStream {
        let text = utf8(text);
        let hits = self.detect(text.as_bytes());
        self.finish(stream, &text, hits, None)
    }

    /// Filters a captured stream as rendered (head, marker, tail). The scan
    /// runs on head and tail joined without the marker, so a secret whose
    /// halves sit on both sides of it is still one match; its span then
    /// covers the marker, and redaction keeps the marker in place.
    pub fn filter(&self, stream: Stream, captured: &CapturedStream) -> FilteredStream {
        if captured.dropped == 0 {
            let mut joined = captured.head.clone();
            joined.extend_from_slice(&captured.tail);
            return self.filter_text(stream, &joined);
        }
        let head = utf8(&captured.head);
        let tail = utf8(&captured.tail);
        let marker = CapturedStream::marker(captured.dropped);
        let cut = head.len();
        let mut joined = String::with_capacity(head.len() + tail.len());
        joined.push_str(&head);
        joined.push_str(&tail);
        let mut hits = self.detect(joined.as_bytes());
        split_fragments(joined.as_bytes(), cut, &mut hits);
        let m = marker.len();
        for hit in &mut hits {
            if hit.start >= cut {
                hit.start += m;
            }
            if hit.end > cut {
                hit.end += m;
            }
        }
        let mut rendered = String::with_capacity(joined.len() + m);
        rendered.push_str(&head);
        rendered.push_str(&marker);
        rendered.push_str(&tail);
        self.finish(stream, &rendered, hits, Some((cut, cut + m)))
    }

    /// Every detector's hits on `text`, unsorted and possibly overlapping.
    fn detect(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        if let Some(ac) = &self.literals {
            let mut pos = 0;
            // Every start position is visited, so an anchor inside another
            // literal's match is still seen.
            while let Some(m) = ac.find(Input::new(text).span(pos..text.len())) {
                let id = m.pattern().as_usize();
                if id < self.anchor_count {
                    self.secrets.confirm(text, id, m.start(), &mut hits);
                } else if let Some(kind) = self.known_kinds.get(id - self.anchor_count) {
                    hits.push(Hit::new(
                        m.start(),
                        absorb_padding(text, m.end()),
                        kind.clone(),
                    ));
                }
                pos = m.start() + 1;
            }
        }
        if self.config.entropy {
            self.entropy.scan(text, &mut hits);
        }
        if let Some(index) = &self.context {
            let report = index.check(text, self.config.echo.min_run);
            if self.config.echo.is_echo(&report, index.context_len()) {
                hits.extend(
                    report
                        .spans
                        .iter()
                        .map(|&(s, e)| Hit::new(s, e, "context_echo")),
                );
            }
        }
        hits
    }

    /// Applies the policy to `rendered` given its hits (rendered
    /// coordinates); `keep` is the capture marker, never redacted.
    fn finish(
        &self,
        stream: Stream,
        rendered: &str,
        mut hits: Vec<Hit>,
        keep: Option<(usize, usize)>,
    ) -> FilteredStream {
        if hits.is_empty() {
            return FilteredStream {
                text: rendered.to_string(),
                findings: Vec::new(),
            };
        }
        for hit in &mut hits {
            snap_to_chars(rendered, hit);
        }
        // Longest first at each start, so contained duplicates (an entropy
        // hit inside a pattern hit) are dropped from the findings.
        hits.sort_by(|a, b| (a.start, b.end, a.is_echo()).cmp(&(b.start, a.end, b.is_echo())));
        // Specific findings first; an entropy hit is reported only where
        // no specific one overlaps it (its span is redacted either way).
        let is_entropy = |h: &Hit| h.kind.starts_with("high_entropy");
        let mut reported: Vec<&Hit> = Vec::new();
        let mut reach = 0;
        for hit in hits.iter().filter(|h| !h.is_echo() && !is_entropy(h)) {
            if hit.end > reach || reported.is_empty() {
                reach = reach.max(hit.end);
                reported.push(hit);
            }
        }
        let specific = reported.len();
        for hit in hits.iter().filter(|h| is_entropy(h)) {
            if !reported[..specific]
                .iter()
                .any(|r| r.start < hit.end && hit.start < r.end)
            {
                reported.push(hit);
            }
        }
        let echoes: Vec<&Hit> = hits.iter().filter(|h| h.is_echo()).collect();
        let notice_for_echo = self.config.policy == Policy::Redact
            && self.config.echo.action == EchoAction::Notice
            && !echoes.is_empty();
        let action_of = |hit: &Hit| match self.config.policy {
            Policy::Redact if hit.is_echo() && notice_for_echo => Policy::Block,
            policy => policy,
        };
        let mut findings: Vec<Finding> = reported
            .iter()
            .chain(echoes.iter())
            .map(|hit| Finding {
                kind: hit.kind.to_string(),
                stream,
                span: [hit.start, hit.end],
                action: action_of(hit),
            })
            .collect();
        findings.sort_by_key(|f| f.span);
        let text = match self.config.policy {
            Policy::Warn => rendered.to_string(),
            Policy::Block => block_notice(stream, &findings),
            Policy::Redact if notice_for_echo => {
                let echoed: usize = echoes.iter().map(|h| h.end - h.start).sum();
                echo_notice(stream, echoed)
            }
            Policy::Redact => redact(rendered, &hits, keep),
        };
        FilteredStream { text, findings }
    }
}

/// The text as UTF-8, invalid sequences replaced as `render()` does;
/// `from_utf8` validates ASCII far faster than the lossy decoder.
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(valid) => Cow::Borrowed(valid),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A base64 form of a known secret stops before the characters that mix
/// its last bits with what follows; when only padding follows them, they
/// belong to the secret too (`...QA==`).
fn absorb_padding(text: &[u8], end: usize) -> usize {
    let pad_from = match text.get(end..) {
        Some([b, b'=', ..]) if b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/' => end + 1,
        Some([b'=', ..]) => end,
        _ => return end,
    };
    let mut stop = pad_from;
    while stop < text.len() && stop - pad_from < 2 && text[stop] == b'=' {
        stop += 1;
    }
    stop
}

/// Widens a hit to whole UTF-8 characters (echo spans are byte-granular).
fn snap_to_chars(text: &str, hit: &mut Hit) {
    hit.end = hit.end.min(text.len());
    hit.start = hit.start.min(hit.end);
    while !text.is_char_boundary(hit.start) {
        hit.start -= 1;
    }
    while !text.is_char_boundary(hit.end) {
        hit.end += 1;
    }
}

/// Replaces the union of the hits' spans with `[REDACTED:<kind>]` (the
/// kind of the first hit of each merged region), leaving `keep` intact.
fn redact(text: &str, sorted_hits: &[Hit], keep: Option<(usize, usize)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < sorted_hits.len() {
        let first = &sorted_hits[i];
        let mut end = first.end;
        i += 1;
        while i < sorted_hits.len() && sorted_hits[i].start <= end {
            end = end.max(sorted_hits[i].end);
            i += 1;
        }
        let start = first.start.max(copied);
        if end <= start {
            continue;
        }
        out.push_str(&text[copied..start]);
        let label = format!("[REDACTED:{}]", first.kind);
        match keep {
            Some((ks, ke)) if start <= ks && ke <= end => {
                if start < ks {
                    out.push_str(&label);
                }
                out.push_str(&text[ks..ke]);
                if ke < end {
                    out.push_str(&label);
                }
            }
            _ => out.push_str(&label),
        }
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

fn kinds_of(findings: &[Finding]) -> String {
    let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds.join(", ")
}

fn block_notice(stream: Stream, findings: &[Finding]) -> String {
    format!(
        "[rlm-sandbox: {} withheld by the egress filter (policy block): {} finding(s): {}]\n",
        stream.name(),
        findings.len(),
        kinds_of(findings)
    )
}

fn echo_notice(stream: Stream, echoed: usize) -> String {
    format!(
        "[rlm-sandbox: {} withheld: it reproduced about {echoed} bytes of the context verbatim. \
         The context is already loaded; search it (e.g. re.finditer, str.find) or slice it, \
         and print only the short parts or the results you need.]\n",
        stream.name()
    )
}

/// Boundary fragments: the token ending the head and the one starting the
/// tail are what is left of anything cut by the capture. When the joined
/// scan did not already flag them, a fragment that looks like part of a
/// key (a secret prefix, or digits and letters of both cases) is redacted.
fn split_fragments(joined: &[u8], cut: usize, hits: &mut Vec<Hit>) {
    let mut start = cut;
    while start > 0 && entropy::is_token_byte(joined[start - 1]) {
        start -= 1;
    }
    let mut end = cut;
    while end < joined.len() && entropy::is_token_byte(joined[end]) {
        end += 1;
    }
    for (s, e) in [(start, cut), (cut, end)] {
        let covered = hits.iter().any(|h| h.start <= s && e <= h.end);
        if e > s && !covered && fragment_is_secret_like(&joined[s..e]) {
            hits.push(Hit::new(s, e, "split_secret_fragment"));
        }
    }
}

fn fragment_is_secret_like(fragment: &[u8]) -> bool {
    if fragment.len() < 8 {
        return false;
    }
    let has = |f: fn(&u8) -> bool| fragment.iter().any(f);
    let mixed =
        has(u8::is_ascii_digit) && has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase);
    let hex = fragment.len() >= 16
        && fragment.iter().all(u8::is_ascii_hexdigit)
        && has(u8::is_ascii_digit)
        && has(u8::is_ascii_alphabetic);
    mixed
        || hex
        || secrets::anchor_literals()
            .iter()
            .any(|a| fragment.starts_with(a.as_bytes()))
}

#[cfg(test)]
mod tests;
