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
