//! Tests of the whole filter: each detector with true positives and true
//! negatives, policies, streams, the capture boundary and context echo.
#![allow(clippy::unwrap_used)]

use super::*;

use super::corpus::{csv_line, Rng, ALNUM, B64, HEX, WORDS};

/// Prose-like text with numbers: never repeats a long passage.
pub(super) fn prose(seed: u64, len: usize) -> String {
    let mut rng = Rng(seed);
    let mut s = String::with_capacity(len + 32);
    while s.len() < len {
        s.push_str(WORDS[rng.below(WORDS.len())]);
        match rng.below(12) {
            0 => s.push_str(&format!(" {} ", rng.below(100_000))),
            1 => s.push_str(".\n"),
            2 => s.push_str(", "),
            _ => s.push(' '),
        }
    }
    s.truncate(len);
    s
}

pub(super) fn filter() -> EgressFilter {
    EgressFilter::new(EgressConfig::default()).unwrap()
}

pub(super) fn kinds(f: &FilteredStream) -> Vec<&str> {
    f.findings.iter().map(|f| f.kind.as_str()).collect()
}

/// Asserts `secret` inside `line` is found as `kind` and redacted exactly.
fn assert_redacted(line: &str, secret: &str, kind: &str) {
    let out = filter().filter_text(Stream::Stdout, line.as_bytes());
    let at = line.find(secret).unwrap();
    assert!(
        out.findings
            .iter()
            .any(|f| f.kind == kind && f.span == [at, at + secret.len()]),
        "{kind} not found at {at}..{} in {line:?}: {:?}",
        at + secret.len(),
        out.findings
    );
    assert!(
        !out.text.contains(secret),
        "{secret} left in {:?}",
        out.text
    );
    assert!(
        out.text.contains(&format!("[REDACTED:{kind}]")),
        "{:?}",
        out.text
    );
}

fn assert_clean(name: &str, text: &str) {
    let out = filter().filter_text(Stream::Stdout, text.as_bytes());
    assert!(
        out.findings.is_empty(),
        "{name}: false positives {:?}",
        out.findings
            .iter()
            .map(|f| (&f.kind, &text[f.span[0]..f.span[1].min(f.span[0] + 80)]))
            .collect::<Vec<_>>()
    );
    assert_eq!(out.text, text);
}

#[test]
fn known_patterns_are_redacted_by_their_exact_span() {
    let mut rng = Rng(1);
    let cases = [
        (
            format!(
                "AKIA{}",
                rng.pick_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
            ),
            "aws_access_key_id",
        ),
        (format!("ghp_{}", rng.pick_from(ALNUM, 36)), "github_token"),
        (format!("ghs_{}", rng.pick_from(ALNUM, 36)), "github_token"),
        (
            format!(
                "github_pat_11{}_{}",
                rng.pick_from(ALNUM, 20),
                rng.pick_from(ALNUM, 59)
            ),
            "github_fine_grained_pat",
        ),
        (
            format!("glpat-{}", rng.pick_from(ALNUM, 20)),
            "gitlab_token",
        ),
        (
            format!(
                "xoxb-{}-{}-{}",
                1234567890,
                9876543210123u64,
                rng.pick_from(ALNUM, 24)
            ),
            "slack_token",
        ),
        (
            format!("sk_live_{}", rng.pick_from(ALNUM, 24)),
            "stripe_key",
        ),
        (
            format!("AIza{}", rng.pick_from(ALNUM, 35)),
            "google_api_key",
        ),
        (
            format!("sk-proj-{}", rng.pick_from(ALNUM, 100)),
            "openai_api_key",
        ),
        (
            format!(
                "sk-{}T3BlbkFJ{}",
                rng.pick_from(ALNUM, 20),
                rng.pick_from(ALNUM, 20)
            ),
            "openai_api_key",
        ),
        (
            format!("sk-ant-api03-{}", rng.pick_from(ALNUM, 93)),
            "anthropic_api_key",
        ),
        (
            format!(
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{}",
                rng.pick_from(ALNUM, 43)
            ),
            "jwt",
        ),
    ];
    for (secret, kind) in &cases {
        assert_redacted(&format!("value: {secret}\n"), secret, kind);
        assert_redacted(&format!("{{\"key\": \"{secret}\"}}"), secret, kind);
    }
}

#[test]
fn assignments_bearer_and_url_credentials_redact_the_value() {
    assert_redacted(
        "DB_PASSWORD=hunter2xyz\n",
        "hunter2xyz",
        "password_assignment",
    );
    assert_redacted(
        "password: correcthorse\n",
        "correcthorse",
        "password_assignment",
    );
    assert_redacted(
        "GPG_PASSPHRASE=tr0ub4dor.3x\n",
        "tr0ub4dor.3x",
        "password_assignment",
    );
    assert_redacted(
        "{\"passphrase\": \"plainwordsonly\"}",
        "plainwordsonly",
        "password_assignment",
    );
    assert_redacted(
        "client_secret = \"s3cr3t-V4lue\"",
        "s3cr3t-V4lue",
        "secret_assignment",
    );
    assert_redacted(
        "{\"access_token\": \"ya29.a0AfH6SMBx1\"}",
        "ya29.a0AfH6SMBx1",
        "token_assignment",
    );
    assert_redacted(
        "api_key='ab12cd34ef56'",
        "ab12cd34ef56",
        "api_key_assignment",
    );
    assert_redacted(
        "OPENAI_API_KEY=Zx9Yw8Vu7Ts6",
        "Zx9Yw8Vu7Ts6",
        "api_key_assignment",
    );
    assert_redacted(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key",
    );
    assert_redacted(
        "Authorization: Bearer Ab3dEf6hIj9kLm2nOp5q\n",
        "Ab3dEf6hIj9kLm2nOp5q",
        "bearer_token",
    );
    assert_redacted(
        "postgres://admin:pa55w0rd@db.internal:5432/app",
        "pa55w0rd",
        "url_credentials",
    );
}

/// Prefixes that once had a rule but no anchor literal of their own, so
/// only the entropy detector (if anything) saw them.
#[test]
fn every_rule_has_an_anchor() {
    let mut rng = Rng(7);
    const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    for prefix in ["ABIA", "ACCA", "A3TX"] {
        let key = format!("{prefix}{}", rng.pick_from(UPPER_DIGITS, 16));
        assert_redacted(&format!("id: {key}\n"), &key, "aws_access_key_id");
    }
    for prefix in [
        "glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glft-", "glsoat-",
    ] {
        let token = format!("{prefix}{}", rng.pick_from(ALNUM, 20));
        assert_redacted(&format!("token {token} ok\n"), &token, "gitlab_token");
    }
    let basic = base64::engine::general_purpose::STANDARD.encode("admin:hunter2-xyz");
    for header in [
        "Authorization: Basic ",
        "AUTHORIZATION: BASIC ",
        "authorization: basic\t",
    ] {
        assert_redacted(&format!("{header}{basic}\n"), &basic, "basic_auth");
    }
    for key in ["API-KEY", "APIKEY", "X-Api-Key", "api-key", "x_api_Key"] {
        assert_redacted(
            &format!("{key}: Zx9Yw8Vu7Ts6\n"),
            "Zx9Yw8Vu7Ts6",
            "api_key_assignment",
        );
    }
}

#[test]
fn a_private_key_block_is_redacted_whole() {
    let mut rng = Rng(2);
    let body: Vec<String> = (0..10).map(|_| rng.pick_from(B64, 64)).collect();
    let key = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        body.join("\n")
    );
    assert_redacted(&format!("key follows\n{key}\ndone\n"), &key, "private_key");
    // Cut short (no END line): redacted through its body.
    let cut = format!("-----BEGIN PRIVATE KEY-----\n{}\n{}", body[0], body[1]);
    let out = filter().filter_text(Stream::Stdout, format!("{cut}\n").as_bytes());
    assert!(!out.text.contains(&body[1][..20]), "{:?}", out.text);
}

#[test]
fn code_and_prose_near_keywords_are_not_secrets() {
    assert_clean(
        "python",
        "password = getpass.getpass()\ntoken = tokens[i]\nsecret = os.environ['SECRET']\n\
         def get_api_key(self):\n    return self.api_key\napi_key = None\n\
         token_count = 12\nif token == 'the':\n    pass\nPASSWORD = \"${DB_PASSWORD}\"\n\
         print('the task-specific rule was broken by spoken tokens')\n",
    );
    assert_clean(
        "prose",
        "Reset your password: click the link. The secret to good soup is salt. Bearer bonds \
         were common. Basic usage is simple. See https://example.com/docs/page for details.\n",
    );
}

#[test]
fn benign_corpora_have_no_findings() {
    let mut rng = Rng(3);
    assert_clean("english", &prose(4, 200_000));
    let json: String = (0..2000)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"user{i}\", \"score\": {}.{}, \"tags\": [\"a\", \"b\"]}}\n", rng.below(1000), rng.below(100)))
        .collect();
    assert_clean("json", &json);
    let csv: String = (0..5000).map(|_| csv_line(&mut rng)).collect();
    assert_clean("csv", &csv);
    let uuids: String = (0..2000)
        .map(|_| {
            let h = rng.pick_from(HEX, 32);
            format!(
                "{}-{}-4{}-a{}-{}\n",
                &h[..8],
                &h[8..12],
                &h[13..16],
                &h[17..20],
                &h[20..]
            )
        })
        .collect();
    assert_clean("uuids", &uuids);
    assert_clean("uppercase uuids", &uuids.to_uppercase());
    let shas: String = (0..2000)
        .map(|_| format!("commit {}\n", rng.pick_from(HEX, 40)))
        .collect();
    assert_clean("git shas", &shas);
    let sha256: String = (0..2000)
        .map(|_| format!("{}  data.bin\n", rng.pick_from(HEX, 64)))
        .collect();
    assert_clean("sha256", &sha256);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend(rng.bytes(30_000));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    assert_clean("image base64", &format!("{b64}\n"));
    assert_clean(
        "image data uri",
        &format!("<img src=\"data:image/png;base64,{}\">", &b64[..200]),
    );
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    assert_clean("wrapped base64", &wrapped);
    let source = include_str!("entropy.rs");
    assert_clean("rust source", source);
}

use base64::Engine as _;

/// A 10 MB log: timestamps, levels, request ids, durations, paths.
pub(crate) fn log_file(len: usize) -> String {
    let mut rng = Rng(5);
    let mut s = String::with_capacity(len + 200);
    let levels = ["INFO", "DEBUG", "WARN", "ERROR"];
    while s.len() < len {
        let id = rng.pick_from(HEX, 32);
        s.push_str(&format!(
            "2024-05-{:02}T{:02}:{:02}:{:02}.{:03}Z {} [worker-{}] request_id={}-{}-{}-{}-{} GET /api/v1/users/{}/orders?page={} status={} duration_ms={} bytes={}\n",
            1 + rng.below(28), rng.below(24), rng.below(60), rng.below(60), rng.below(1000),
            levels[rng.below(4)], rng.below(16), &id[..8], &id[8..12], &id[12..16], &id[16..20], &id[20..],
            rng.below(100_000), rng.below(50), [200, 201, 404, 500][rng.below(4)], rng.below(5000), rng.below(1 << 20)
        ));
    }
    s
}

#[test]
fn a_ten_megabyte_log_is_not_a_secret() {
    assert_clean("10 MB log", &log_file(10 << 20));
}

#[test]
fn random_tokens_are_flagged_by_entropy_alone() {
    let mut rng = Rng(6);
    let b64 = rng.pick_from(B64, 40);
    assert_redacted(
        &format!("the value is {b64} ok"),
        &b64,
        "high_entropy_base64",
    );
    let hex = rng.pick_from(HEX, 48);
    assert_redacted(&format!("key={hex}\n"), &hex, "high_entropy_hex");
    // Hashes pass by default and are flagged when configured.
    let sha = rng.pick_from(HEX, 64);
    let strict = EgressFilter::new(EgressConfig {
        allow_hex_hashes: false,
        ..EgressConfig::default()
    })
    .unwrap();
    assert_eq!(
        kinds(&strict.filter_text(Stream::Stdout, sha.as_bytes())),
        ["high_entropy_hex"]
    );
    assert!(filter()
        .filter_text(Stream::Stdout, sha.as_bytes())
        .findings
        .is_empty());
    // The threshold is the configured one.
    let lax = EgressFilter::new(EgressConfig {
        base64_entropy_threshold: 7.9,
        ..EgressConfig::default()
    })
    .unwrap();
    assert!(lax
        .filter_text(Stream::Stdout, b64.as_bytes())
        .findings
        .is_empty());
}

#[test]
fn entropy_is_per_token_not_per_output() {
    assert!((entropy::shannon(b"aaaa") - 0.0).abs() < 1e-9);
    assert!((entropy::shannon(b"abcd") - 2.0).abs() < 1e-9);
}

#[test]
fn invalid_settings_are_refused_with_the_accepted_form() {
    let bad = EgressConfig {
        base64_entropy_threshold: 9.0,
        ..EgressConfig::default()
    };
    let err = EgressFilter::new(bad).err().unwrap().to_string();
    assert!(
        err.contains("RLM_ENTROPY_THRESHOLD") && err.contains("(0, 8]"),
        "{err}"
    );
    let bad = EgressConfig {
        echo: EchoConfig {
            similarity_threshold: 0.0,
            ..EchoConfig::default()
        },
        ..EgressConfig::default()
    };
    assert!(EgressFilter::new(bad)
        .err()
        .unwrap()
        .to_string()
        .contains("RLM_SIMILARITY_THRESHOLD"));
    assert!("deny"
        .parse::<Policy>()
        .err()
        .unwrap()
        .to_string()
        .contains("redact, block or warn"));
}

#[test]
fn the_filter_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<EgressFilter>();
}
