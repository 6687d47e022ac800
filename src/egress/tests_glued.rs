//! Keys glued to the text before them, as code that builds strings without
//! separators prints them (`f"id{key}"`, `'x' * 10 + key`): found by their
//! distinctive prefix, and redacted without the text they are glued to.
#![allow(clippy::unwrap_used)]

use super::corpus::{Rng, ALNUM};
use super::tests::{filter, kinds};
use super::*;

/// AWS key ids: base32 after the prefix.
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// What precedes a glued key: letters, digits, an underscore, punctuation.
const GLUES: &[&str] = &[
    "xxxxxxxxxx",
    "id",
    "user",
    "123",
    "0",
    "key_",
    "v2_",
    "'",
    ":",
];

/// Asserts that `key` right after each glue is found as `kind` by its exact
/// span, and that only the key is redacted.
fn assert_glued_key_redacted(key: &str, kind: &str) {
    for glue in GLUES {
        for after in ["\n", " ok", "\")"] {
            let line = format!("{glue}{key}{after}");
            let out = filter().filter_text(Stream::Stdout, line.as_bytes());
            assert_eq!(kinds(&out), [kind], "{line:?}: {:?}", out.findings);
            let at = glue.len();
            assert_eq!(out.findings[0].span, [at, at + key.len()], "{line:?}");
            assert_eq!(out.text, format!("{glue}[REDACTED:{kind}]{after}"));
        }
    }
}

#[test]
fn the_example_key_glued_to_ten_letters_is_redacted() {
    let out = filter().filter_text(Stream::Stdout, b"xxxxxxxxxxAKIAIOSFODNN7EXAMPLE\n");
    assert_eq!(out.text, "xxxxxxxxxx[REDACTED:aws_access_key_id]\n");
}

#[test]
fn glued_keys_of_every_distinctive_prefix_are_redacted() {
    let mut rng = Rng(31);
    let mut cases = Vec::new();
    for prefix in ["AKIA", "ASIA", "ABIA", "ACCA", "A3TX"] {
        let key = format!("{prefix}{}", rng.pick_from(BASE32, 16));
        cases.push((key, "aws_access_key_id"));
    }
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        cases.push((
            format!("{prefix}{}", rng.pick_from(ALNUM, 36)),
            "github_token",
        ));
    }
    cases.push((
        format!(
            "github_pat_11{}_{}",
            rng.pick_from(ALNUM, 20),
            rng.pick_from(ALNUM, 59)
        ),
        "github_fine_grained_pat",
    ));
    for prefix in [
        "glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glft-", "glsoat-",
    ] {
        cases.push((
            format!("{prefix}{}", rng.pick_from(ALNUM, 20)),
            "gitlab_token",
        ));
    }
    cases.push((
        format!("GR1348941{}", rng.pick_from(ALNUM, 20)),
        "gitlab_runner_token",
    ));
    for prefix in ["xoxb-", "xoxp-", "xoxa-", "xoxe-"] {
        cases.push((
            format!(
                "{prefix}1234567890-9876543210123-{}",
                rng.pick_from(ALNUM, 24)
            ),
            "slack_token",
        ));
    }
    cases.push((
        format!("xapp-1-A0123456789-{}", rng.pick_from(ALNUM, 30)),
        "slack_app_token",
    ));
    for prefix in ["sk_live_", "rk_live_"] {
        cases.push((
            format!("{prefix}{}", rng.pick_from(ALNUM, 24)),
            "stripe_key",
        ));
    }
    cases.push((
        format!("sk-ant-api03-{}", rng.pick_from(ALNUM, 93)),
        "anthropic_api_key",
    ));
    for prefix in ["sk-proj-", "sk-svcacct-"] {
        cases.push((
            format!("{prefix}{}", rng.pick_from(ALNUM, 100)),
            "openai_api_key",
        ));
    }
    // The legacy OpenAI format: its `T3BlbkFJ` marker makes it distinctive.
    cases.push((
        format!(
            "sk-{}T3BlbkFJ{}",
            rng.pick_from(ALNUM, 20),
            rng.pick_from(ALNUM, 20)
        ),
        "openai_api_key",
    ));
    let google: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    cases.push((
        format!("AIzaSy{}", rng.pick_from(google, 33)),
        "google_api_key",
    ));
    for (key, kind) in &cases {
        assert_glued_key_redacted(key, kind);
    }
}

/// What a key is glued to stays, unless it looks like a secret itself.
#[test]
fn only_the_key_is_redacted_unless_its_glue_is_a_secret_too() {
    let key = "AKIAIOSFODNN7EXAMPLE";
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let out = filter().filter_text(Stream::Stdout, format!("{secret}{key}\n").as_bytes());
    assert_eq!(kinds(&out), ["high_entropy_base64", "aws_access_key_id"]);
    // Adjacent spans are redacted as one.
    assert_eq!(out.text, "[REDACTED:high_entropy_base64]\n");
    let mut rng = Rng(32);
    let token = format!("ghp_{}", rng.pick_from(ALNUM, 36));
    let out = filter().filter_text(Stream::Stdout, format!("user_id_{token}").as_bytes());
    assert_eq!(out.text, "user_id_[REDACTED:github_token]");
}

/// Words and identifiers that contain a prefix, glued or not, but not a
/// key's length and alphabet after it.
#[test]
fn words_holding_a_prefix_are_not_keys() {
    let text = "\
the desk-lamp and the task-force met at the disk-Partition2-Primary-Boot-Sector
desk-Partition2-Primary-Boot-Sector-Alpha9 risk-management-Policy2024-v3-final
TASKAKIA EURASIA SAUDIARABIAN ACCADEMIA2 WORKAKIAPPLICATIONS12345678
laughs_TotalCountOfAllLaughsRecordedInTheSession coughs_x
network_test_ConnectionTimeoutHandling fork_test_Http2ConnectionReuseCase
bookmark_live_UpdatesFromTheServerQueue stock_live_pricefeedupdatesfromtheexchange
bigxoxo-gossip-girl-fan-club-members detoxoxa-weekend-retreat-signup-form
AIzaThisIsTooShort and xAIzaSyTooShortToBeAKey1234567
def fetch_task_ghp_mapping(self): return self.task_ghp_mapping_for_user_id
";
    let out = filter().filter_text(Stream::Stdout, text.as_bytes());
    assert!(
        out.findings.is_empty(),
        "{:?}",
        out.findings
            .iter()
            .map(|f| (&f.kind, &text[f.span[0]..f.span[1]]))
            .collect::<Vec<_>>()
    );
}
