//! The egress filter: the last layer before anything the sandbox printed
//! reaches a language model or a log. It finds known secret patterns,
//! high-entropy tokens, the operator's own secrets and echoes of the
//! context, on stdout and stderr alike, and applies one policy: redact
//! (default), block the stream, or warn (pass and report).
//!
//! Two literal passes (Teddy, SIMD) find the anchors of every secret
//! pattern and every known secret: one for rare token prefixes and known
//! secrets, one for the words ordinary output is full of (`literals.rs`);
//! a scan of SIMD byte-class masks finds long base64/hex runs; the context
//! index is checked in one rolling-hash pass (`winnow.rs`), and a context
//! of up to 8 KiB also directly, so that one printed whole is caught
//! however short, from 16 bytes (`short_context.rs`). All are linear
//! in the output, and benign text costs little more than reading it
//! (docs/BENCHMARKS.md).

mod build;
mod classify;
mod config;
mod echo;
mod entropy;
mod known;
mod literals;
mod pending;
mod render;
mod secrets;
mod short_context;
mod winnow;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::capture::CapturedStream;
use literals::Scan;
use render::{block_notice, echo_notice, redact, snap_to_chars};

pub use build::{echo_indexes, known_secrets, FilterSpec};
pub use config::{EchoAction, EchoConfig, EgressConfig, EgressError, Policy};
pub use echo::{ContextEchoIndex, EchoReport, MIN_CONTEXT};
pub use known::{KnownSecret, MIN_KNOWN_SECRET_LEN};
pub use pending::PendingFilter;
pub use winnow::SHINGLE;

#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// A prompt on its way from the sandbox to a model (`llm_query`).
    Prompt,
    /// A session cell's value (its trailing expression's repr and JSON).
    Value,
    /// A session cell's final answer (`FINAL`, `FINAL_VAR`, `answer`).
    #[serde(rename = "final_answer")]
    FinalAnswer,
    /// The repr (and type name) a session's `get` returns.
    Get,
    /// A tool call's arguments on their way to the host's callable.
    #[serde(rename = "tool_args")]
    ToolArgs,
    /// The names and type names of a session's user globals (`vars`).
    Vars,
    /// The model a session's code names in a query (`llm_query(p, model=...)`).
    Model,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Prompt => "prompt",
            Stream::Value => "value",
            Stream::FinalAnswer => "final_answer",
            Stream::Get => "get",
            Stream::ToolArgs => "tool_args",
            Stream::Vars => "vars",
            Stream::Model => "model",
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
    literals: Option<literals::LiteralSet>,
    anchor_count: usize,
    /// For each known-secret form, its finding kind.
    known_kinds: Vec<String>,
    /// One index per context; an output echoing any of them is flagged.
    contexts: Vec<ContextEchoIndex>,
}

impl EgressFilter {
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        config.validate()?;
        let anchors = if config.secret_patterns {
            secrets::anchor_literals()
        } else {
            Vec::new()
        };
        let anchor_count = anchors.len();
        let mut rare = Vec::new();
        let mut frequent = Vec::new();
        for (id, (literal, scan)) in anchors.into_iter().enumerate() {
            let group = match scan {
                Scan::Rare => &mut rare,
                Scan::Frequent => &mut frequent,
            };
            group.push((id, literal.as_bytes().to_vec()));
        }
        let mut known = Vec::new();
        let mut known_kinds = Vec::new();
        for secret in &config.known_secrets {
            for form in secret.forms() {
                known.push((anchor_count + known.len(), form));
                known_kinds.push(format!("known_secret:{}", secret.name));
            }
        }
        // Known secrets join the rare anchors while both fit one Teddy
        // searcher; hundreds of forms get a pass of their own, so they
        // never cost the anchors their SIMD search.
        let mut groups = vec![(Scan::Frequent, frequent)];
        if rare.len() + known.len() <= literals::TEDDY_MAX {
            rare.extend(known);
            groups.push((Scan::Rare, rare));
        } else {
            groups.push((Scan::Rare, rare));
            groups.push((Scan::Rare, known));
        }
        let literals = if groups.iter().all(|(_, g)| g.is_empty()) {
            None
        } else {
            Some(literals::LiteralSet::new(&groups)?)
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
            contexts: Vec::new(),
            config,
        })
    }

    /// Adds the context echo check against `index` (one more context).
    pub fn with_context(mut self, index: ContextEchoIndex) -> Self {
        self.contexts.push(index);
        self
    }

    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// The first context's index.
    pub fn context(&self) -> Option<&ContextEchoIndex> {
        self.contexts.first()
    }

    /// Filters a prompt leaving the sandbox for a model: every secret
    /// detector, no context echo (quoting the context is what prompts are
    /// for).
    pub fn filter_prompt(&self, prompt: String) -> FilteredStream {
        self.filter_secrets(Stream::Prompt, prompt)
    }

    /// Filters `text` leaving for `stream` with every secret detector and
    /// no context echo check, as a prompt is (tool call arguments: the
    /// host's callable may be given the context's parts, as a model is).
    pub fn filter_secrets(&self, stream: Stream, text: String) -> FilteredStream {
        let hits = self.detect(text.as_bytes(), false, &[]);
        self.finish(stream, text, hits, None)
    }

    /// Filters a session cell's final answer: as output, except that a
    /// context reproduced whole is an echo only from `echo.min_bytes`
    /// (64) bytes, as a partial reproduction is. An answer may repeat a
    /// one-line context ("The fruit is a kiwi."); printing it is still an
    /// echo, and a longer context in the answer is one as in output.
    pub fn filter_answer(
        &self,
        stream: Stream,
        text: String,
        extra: &[ContextEchoIndex],
    ) -> FilteredStream {
        let mut hits = self.detect(text.as_bytes(), false, &[]);
        let echo = &self.config.echo;
        for index in self.contexts.iter().chain(extra) {
            let report = index.check(text.as_bytes(), echo.min_run);
            if report.echoed_bytes >= echo.min_bytes && echo.is_echo(&report, index.context_len()) {
                hits.extend(
                    report
                        .spans
                        .iter()
                        .map(|&(s, e)| Hit::new(s, e, "context_echo")),
                );
            }
        }
        self.finish(stream, text, hits, None)
    }

    /// Runs every detector once over text like a cell's output, on this
    /// thread, and drops the result: a detector's automaton builds its
    /// states lazily, per thread, on its first searches, so a caller whose
    /// first filtering is latency-sensitive (a claimed standby's first
    /// cells) warms it before it waits.
    pub fn warm(&self) {
        let sample = "print(40 + 2)\n42\n[\"FINAL\", \"FINAL_VAR\", \"answer\", \"llm_query\"]\n\
                      Traceback (most recent call last):\n  File \"<cell 1>\", line 1, in <module>\n\
                      NameError: name 'x' is not defined\n{'a': 1, 'b': [2.5, None]}\n";
        let _ = self.filter_text(Stream::Stdout, sample.as_bytes());
        let _ = self.filter_answer(Stream::FinalAnswer, sample.to_string(), &[]);
    }

    /// Filters arbitrary bytes (invalid UTF-8 is replaced first; spans
    /// refer to the replaced text). Copies `text`; [`Self::filter_bytes`]
    /// filters a buffer the caller gives up.
    pub fn filter_text(&self, stream: Stream, text: &[u8]) -> FilteredStream {
        self.filter_bytes(stream, text.to_vec())
    }

    /// Like [`Self::filter_text`], in place: valid UTF-8 with nothing found
    /// is returned without a copy.
    pub fn filter_bytes(&self, stream: Stream, bytes: Vec<u8>) -> FilteredStream {
        self.filter_bytes_with(stream, bytes, &[])
    }

    fn filter_bytes_with(
        &self,
        stream: Stream,
        bytes: Vec<u8>,
        extra: &[ContextEchoIndex],
    ) -> FilteredStream {
        let text = into_string(bytes);
        let hits = self.detect(text.as_bytes(), true, extra);
        self.finish(stream, text, hits, None)
    }

    /// Filters a captured stream as rendered (head, marker, tail). The scan
    /// runs on head and tail joined without the marker, so a secret whose
    /// halves sit on both sides of it is still one match; its span then
    /// covers the marker, and redaction keeps the marker in place.
    pub fn filter(&self, stream: Stream, captured: CapturedStream) -> FilteredStream {
        self.filter_with_contexts(stream, captured, &[])
    }

    /// [`filter`](Self::filter), with `extra` contexts checked for echoes
    /// beside the filter's own (contexts added to a running session).
    pub fn filter_with_contexts(
        &self,
        stream: Stream,
        captured: CapturedStream,
        extra: &[ContextEchoIndex],
    ) -> FilteredStream {
        let CapturedStream {
            mut head,
            tail,
            dropped,
        } = captured;
        if dropped == 0 {
            head.extend_from_slice(&tail);
            return self.filter_bytes_with(stream, head, extra);
        }
        let marker = CapturedStream::marker(dropped);
        let tail = utf8(&tail);
        let mut joined = into_string(head);
        let cut = joined.len();
        // Room for the marker too: it goes in after the scan.
        joined.reserve_exact(tail.len() + marker.len());
        joined.push_str(&tail);
        let mut hits = self.detect(joined.as_bytes(), true, extra);
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
        joined.insert_str(cut, &marker);
        self.finish(stream, joined, hits, Some((cut, cut + m)))
    }

    /// Every detector's hits on `text`, unsorted and possibly overlapping;
    /// the context echo check (the filter's contexts and `extra`) only
    /// with `echo`.
    fn detect(&self, text: &[u8], echo: bool, extra: &[ContextEchoIndex]) -> Vec<Hit> {
        let mut hits = Vec::new();
        if let Some(literals) = &self.literals {
            literals.for_each(text, |id, start, end| {
                if id < self.anchor_count {
                    self.secrets.confirm(text, id, start, &mut hits);
                } else if let Some(kind) = self.known_kinds.get(id - self.anchor_count) {
                    hits.push(Hit::new(start, absorb_padding(text, end), kind.clone()));
                }
            });
        }
        if self.config.entropy {
            self.entropy.scan(text, &mut hits);
            self.entropy.trim_around_patterns(text, &mut hits);
        }
        for index in self.contexts.iter().chain(extra).filter(|_| echo) {
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
        rendered: String,
        mut hits: Vec<Hit>,
        keep: Option<(usize, usize)>,
    ) -> FilteredStream {
        if hits.is_empty() {
            return FilteredStream {
                text: rendered,
                findings: Vec::new(),
            };
        }
        for hit in &mut hits {
            snap_to_chars(&rendered, hit);
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
            Policy::Warn => rendered,
            Policy::Block => block_notice(stream, &findings),
            Policy::Redact if notice_for_echo => {
                let echoed: usize = echoes.iter().map(|h| h.end - h.start).sum();
                echo_notice(stream, echoed)
            }
            Policy::Redact => redact(&rendered, &hits, keep),
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

/// `bytes` as UTF-8, in place when valid, invalid sequences replaced as
/// `render()` does otherwise.
fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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

/// Boundary fragments: the token ending the head and the one starting the
/// tail are what is left of anything cut by the capture. When the joined
/// scan did not already flag them, a fragment that looks like part of a
/// key (a secret prefix, or digits and letters of both cases) is redacted.
fn split_fragments(joined: &[u8], cut: usize, hits: &mut Vec<Hit>) {
    let mut start = cut;
    while start > 0 && classify::is_token_byte(joined[start - 1]) {
        start -= 1;
    }
    let mut end = cut;
    while end < joined.len() && classify::is_token_byte(joined[end]) {
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
            .any(|(a, _)| fragment.starts_with(a.as_bytes()))
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_echo;
#[cfg(test)]
mod tests_glued;
#[cfg(test)]
mod tests_output;
