//! Tests of the context echo check through the whole filter.
#![allow(clippy::unwrap_used)]

use super::tests::{kinds, prose};
use super::*;

fn echo_filter(context: &[u8], echo: EchoConfig) -> EgressFilter {
    let index = ContextEchoIndex::build(context, &echo);
    EgressFilter::new(EgressConfig {
        echo,
        ..EgressConfig::default()
    })
    .unwrap()
    .with_context(index)
}

#[test]
fn echo_of_a_small_context_is_caught() {
    let context = prose(10, 2000);
    let f = echo_filter(context.as_bytes(), EchoConfig::default());
    let out = f.filter_text(
        Stream::Stdout,
        format!("here it is:\n{context}\n").as_bytes(),
    );
    assert_eq!(kinds(&out), ["context_echo"], "{:?}", out.findings);
    assert!(!out.text.contains(&context[100..200]));
    // A quarter of it passes (the threshold is half).
    let quarter = &context[800..1300];
    assert!(f
        .filter_text(Stream::Stdout, quarter.as_bytes())
        .findings
        .is_empty());
}

#[test]
fn echo_rules_on_a_ten_megabyte_context() {
    let context = prose(11, 10 << 20);
    let f = echo_filter(context.as_bytes(), EchoConfig::default());
    let index = f.context().unwrap();
    assert!(
        index.index_bytes() * 20 < context.len(),
        "index {} bytes",
        index.index_bytes()
    );
    // Peeking at 300 characters passes.
    let peek = &context[5_000_000..5_000_300];
    assert!(f
        .filter_text(Stream::Stdout, peek.as_bytes())
        .findings
        .is_empty());
    // 100 KB from the middle, between ordinary output, is caught and redacted.
    let dump = &context[6_000_000..6_100_000];
    let before = prose(99, 5000);
    let out = f.filter_text(
        Stream::Stdout,
        format!("{before}{dump}\nresult: 42\n").as_bytes(),
    );
    assert_eq!(kinds(&out), ["context_echo"]);
    let [s, e] = out.findings[0].span;
    // Within a window of the true edges, never beyond them.
    assert!(
        s >= before.len() && s < before.len() + index.window(),
        "start {s}"
    );
    let dump_end = before.len() + dump.len();
    assert!(e <= dump_end && e + index.window() > dump_end, "end {e}");
    assert!(
        out.text.starts_with(&before) && out.text.ends_with("result: 42\n"),
        "{}",
        &out.text[..200]
    );
    // Unrelated text in the same style is no echo.
    let other = prose(12, 1 << 20);
    assert!(f
        .filter_text(Stream::Stdout, other.as_bytes())
        .findings
        .is_empty());
    // The notice action replaces the whole stream.
    let notice = EchoConfig {
        action: EchoAction::Notice,
        ..EchoConfig::default()
    };
    let f = EgressFilter::new(EgressConfig {
        echo: notice,
        ..EgressConfig::default()
    })
    .unwrap()
    .with_context(ContextEchoIndex::build(
        context.as_bytes(),
        &EchoConfig::default(),
    ));
    let out = f.filter_text(Stream::Stdout, dump.as_bytes());
    assert!(out.text.contains("search it"), "{}", out.text);
    assert_eq!(out.findings[0].action, Policy::Block);
}

#[test]
fn the_similarity_threshold_scales_with_the_context() {
    let context = prose(13, 20_000);
    let strict = EchoConfig {
        similarity_threshold: 0.1,
        ..EchoConfig::default()
    };
    let f = echo_filter(context.as_bytes(), strict);
    assert_eq!(
        kinds(&f.filter_text(Stream::Stdout, &context.as_bytes()[5000..8000])),
        ["context_echo"]
    );
    let f = echo_filter(context.as_bytes(), EchoConfig::default());
    assert!(f
        .filter_text(Stream::Stdout, &context.as_bytes()[5000..8000])
        .findings
        .is_empty());
}

/// A 54-byte context: one sentence, as a short context file holds.
const SENTENCE: &str = "The quarterly revenue of Acme Corp was 4.2 million USD";

/// Asserts `output` is `before`, the echo of a context, then `after`, and
/// that exactly the echo is redacted.
fn assert_echo_redacted(f: &EgressFilter, before: &str, echo: &str, after: &str) {
    let text = format!("{before}{echo}{after}");
    let out = f.filter_text(Stream::Stdout, text.as_bytes());
    assert_eq!(
        kinds(&out),
        ["context_echo"],
        "{:?}",
        &text[..text.len().min(200)]
    );
    assert_eq!(
        out.findings[0].span,
        [before.len(), before.len() + echo.len()]
    );
    assert_eq!(out.text, format!("{before}[REDACTED:context_echo]{after}"));
}

#[test]
fn a_short_context_printed_whole_is_caught_at_every_size() {
    let contexts = [
        "Project Nightjar".to_string(), // 16 bytes, the shortest checked
        SENTENCE.to_string(),
        prose(21, 1024),
        prose(22, 4096),
    ];
    for context in &contexts {
        let f = echo_filter(context.as_bytes(), EchoConfig::default());
        assert_echo_redacted(&f, "", context, "");
        assert_echo_redacted(&f, "", context, "\n");
        assert_echo_redacted(&f, "Report:\n", context, "\nDone, 3 rows.\n");
        assert_echo_redacted(&f, &prose(23, 5000), context, "\nresult: 42\n");
    }
}

#[test]
fn a_short_context_printed_nearly_whole_is_caught() {
    // A context file ending in a newline, printed stripped.
    let file = format!("{SENTENCE}\n");
    let f = echo_filter(file.as_bytes(), EchoConfig::default());
    assert_echo_redacted(&f, "answer: ", SENTENCE, "");
    let f = echo_filter(SENTENCE.as_bytes(), EchoConfig::default());
    // All but the unit (50 of 54 bytes), and with one figure changed.
    assert_echo_redacted(&f, "", &SENTENCE[..50], ".\n");
    let edited = SENTENCE.replace("4.2", "4.3");
    assert_echo_redacted(&f, "> ", &edited, "\n");
    // A 4 KiB context with three small edits.
    let context = prose(24, 4096);
    let f = echo_filter(context.as_bytes(), EchoConfig::default());
    let mut edited = context.clone().into_bytes();
    for at in [700, 2000, 3300] {
        edited[at] = b'#';
    }
    let edited = String::from_utf8(edited).unwrap();
    assert_echo_redacted(&f, "dump:\n", &edited, "\n");
}

#[test]
fn a_short_context_mentioned_in_part_or_absent_passes() {
    let f = echo_filter(SENTENCE.as_bytes(), EchoConfig::default());
    for text in [
        "Acme Corp revenue was 4.2 million USD this quarter.\n",
        "The quarterly revenue of Acme Corp grew.\n",
        "revenue: 4.2 million USD\n",
        "The quarterly revenue of Acme Corp was ...\n",
    ] {
        let out = f.filter_text(Stream::Stdout, text.as_bytes());
        assert!(out.findings.is_empty(), "{text:?}: {:?}", out.findings);
    }
    // A context of common words, absent from a long output of such words.
    let common = "the analysis shows that results were consistent";
    let output = prose(25, 200_000);
    assert!(!output.contains(common));
    let f = echo_filter(common.as_bytes(), EchoConfig::default());
    let out = f.filter_text(Stream::Stdout, output.as_bytes());
    assert!(out.findings.is_empty(), "{:?}", out.findings);
}

/// Below 16 bytes a context is not told from ordinary output: `yes`,
/// `42` or `Paris` printed by the code may be any answer.
#[test]
fn a_context_shorter_than_sixteen_bytes_is_not_checked() {
    let context = "launch code 7Q2";
    assert_eq!(context.len(), 15);
    let f = echo_filter(context.as_bytes(), EchoConfig::default());
    let out = f.filter_text(Stream::Stdout, format!("{context}\n").as_bytes());
    assert!(out.findings.is_empty(), "{:?}", out.findings);
}

#[test]
fn a_whole_echo_at_similarity_one_means_every_byte() {
    let whole = EchoConfig {
        similarity_threshold: 1.0,
        ..EchoConfig::default()
    };
    let f = echo_filter(SENTENCE.as_bytes(), whole);
    assert_echo_redacted(&f, "", SENTENCE, "\n");
    let out = f.filter_text(Stream::Stdout, &SENTENCE.as_bytes()[..50]);
    assert!(out.findings.is_empty(), "{:?}", out.findings);
}

/// A file of `bytes`, open for reading.
fn context_file(dir: &tempfile::TempDir, bytes: &[u8]) -> (std::path::PathBuf, std::fs::File) {
    let path = dir.path().join("context");
    std::fs::write(&path, bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    (path, file)
}

#[test]
fn a_file_indexed_in_chunks_gives_the_index_of_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EchoConfig::default();
    // Prose (candidates everywhere), one repeated byte (no candidate: the
    // dense path), and both, across chunk sizes down to one window.
    let mut mixed = prose(3, 150_000).into_bytes();
    mixed.extend(std::iter::repeat_n(b'z', 70_000));
    mixed.extend(prose(4, 90_000).into_bytes());
    for context in [prose(2, 300_000).into_bytes(), vec![0u8; 200_000], mixed] {
        let whole = ContextEchoIndex::build(&context, &cfg);
        let (path, file) = context_file(&dir, &context);
        for chunk in [1, 777, 4096, 65_536, 1 << 20] {
            let chunked =
                ContextEchoIndex::from_open_in(&file, &path, context.len() as u64, &cfg, chunk)
                    .unwrap();
            assert_eq!(chunked.window(), whole.window());
            assert_eq!(chunked.context_len(), context.len());
            assert!(
                chunked.bloom_words() == whole.bloom_words(),
                "chunk {chunk}: the Bloom filters differ"
            );
        }
    }
    // A short context is kept whole, as `build` keeps it.
    let short = b"A short context, kept whole and compared directly.";
    let (path, _) = context_file(&dir, short);
    let index = ContextEchoIndex::from_file(&path, &cfg).unwrap();
    assert!(index.check(short, cfg.min_run).whole);
}

#[test]
fn a_file_that_shrinks_while_indexed_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = context_file(&dir, prose(5, 100_000).as_bytes());
    let cfg = EchoConfig::default();
    let build = |size| ContextEchoIndex::from_open_in(&file, &path, size, &cfg, 4096);
    assert_eq!(build(100_000).unwrap().context_len(), 100_000);
    // Its size was 100 kB when taken, 100 bytes fewer by the last chunk.
    let err = build(100_100).unwrap_err().to_string();
    assert!(
        err.contains("shrank") && err.contains("100100 bytes"),
        "{err}"
    );
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}
