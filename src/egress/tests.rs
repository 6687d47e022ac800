//! Tests of the whole filter: each detector with true positives and true
//! negatives, policies, streams, the capture boundary and context echo.
#![allow(clippy::unwrap_used)]

use super::*;

/// Deterministic pseudo-random bytes (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick_from(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8] = b"0123456789abcdef";

const WORDS: &[&str] = &[
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
];

/// Prose-like text with numbers: never repeats a long passage.
fn prose(seed: u64, len: usize) -> String {
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

fn filter() -> EgressFilter {
    EgressFilter::new(EgressConfig::default()).unwrap()
}

fn kinds(f: &FilteredStream) -> Vec<&str> {
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
    let csv: String = (0..5000)
        .map(|_| {
            format!(
                "{},{},{}.{},{}\n",
                rng.below(1 << 30),
                rng.next(),
                rng.below(1000),
                rng.below(1_000_000),
                rng.next() as i64
            )
        })
        .collect();
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
fn known_host_secrets_are_redacted_raw_base64_and_hex() {
    let value = "Q9v-internal-db-pass-7731";
    let secret = KnownSecret::new("DB_PASS", value.as_bytes().to_vec()).unwrap();
    let f = EgressFilter::new(EgressConfig {
        known_secrets: vec![secret],
        ..EgressConfig::default()
    })
    .unwrap();
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{{\"p\":\"{value}\"}}"));
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    for text in [
        format!("conn {value} ok"),
        format!("blob {encoded} end"),
        format!("hex {hex}"),
    ] {
        let out = f.filter_text(Stream::Stdout, text.as_bytes());
        assert!(
            kinds(&out).contains(&"known_secret:DB_PASS"),
            "{text}: {:?}",
            out.findings
        );
        assert!(
            !out.text.contains(value) && !out.text.contains(&hex),
            "{}",
            out.text
        );
    }
}

#[test]
fn stderr_is_filtered_like_stdout() {
    let line = "Traceback: auth failed for ghp_0123456789abcdefghijABCDEFGHIJ012345\n";
    let out = filter().filter_text(Stream::Stderr, line.as_bytes());
    assert_eq!(out.findings.len(), 1);
    assert_eq!(out.findings[0].stream, Stream::Stderr);
    assert!(out.text.contains("[REDACTED:github_token]"));
}

#[test]
fn policies_block_warn_and_redact() {
    let line = "key AKIAIOSFODNN7EXAMPLE\n";
    let with = |policy| {
        EgressFilter::new(EgressConfig {
            policy,
            ..EgressConfig::default()
        })
        .unwrap()
    };
    let warn = with(Policy::Warn).filter_text(Stream::Stdout, line.as_bytes());
    assert_eq!(
        (warn.text.as_str(), warn.findings[0].action),
        (line, Policy::Warn)
    );
    let block = with(Policy::Block).filter_text(Stream::Stdout, line.as_bytes());
    assert!(
        block.text.starts_with("[rlm-sandbox: stdout withheld") && !block.text.contains("AKIA")
    );
    assert_eq!(block.findings[0].action, Policy::Block);
    let redact = with(Policy::Redact).filter_text(Stream::Stdout, line.as_bytes());
    assert_eq!(redact.text, "key [REDACTED:aws_access_key_id]\n");
    let json = serde_json::to_string(&redact.findings).unwrap();
    assert_eq!(
        json,
        r#"[{"kind":"aws_access_key_id","stream":"stdout","span":[4,24],"action":"redact"}]"#
    );
}

#[test]
fn a_secret_split_by_the_capture_marker_is_still_caught() {
    let captured = CapturedStream {
        head: b"start\nkey AKIAIOSFOD".to_vec(),
        tail: b"NN7EXAMPLE\nend\n".to_vec(),
        dropped: 4096,
    };
    let out = filter().filter(Stream::Stdout, &captured);
    let rendered = captured.render();
    assert_eq!(kinds(&out), ["aws_access_key_id"]);
    let [s, e] = out.findings[0].span;
    assert_eq!(&rendered[s..s + 10], "AKIAIOSFOD");
    assert_eq!(&rendered[e - 10..e], "NN7EXAMPLE");
    assert_eq!(
        out.text,
        format!(
            "start\nkey [REDACTED:aws_access_key_id]{}[REDACTED:aws_access_key_id]\nend\n",
            CapturedStream::marker(4096)
        )
    );
    // Only a fragment survived the cut: still redacted.
    let captured = CapturedStream {
        head: b"token ghp_0123456789abcdef".to_vec(),
        tail: b"\nlater output\n".to_vec(),
        dropped: 10,
    };
    let out = filter().filter(Stream::Stderr, &captured);
    assert_eq!(kinds(&out), ["split_secret_fragment"]);
    assert!(!out.text.contains("ghp_0123"), "{}", out.text);
    // A private key whose END line landed in the tail.
    let captured = CapturedStream {
        head: b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC".to_vec(),
        tail: b"Xq9z\n-----END PRIVATE KEY-----\nok\n".to_vec(),
        dropped: 1500,
    };
    let out = filter().filter(Stream::Stdout, &captured);
    assert!(
        !out.text.contains("MIIEvQ") && !out.text.contains("Xq9z"),
        "{}",
        out.text
    );
    assert!(out.text.ends_with("\nok\n") && out.text.contains("bytes dropped"));
}

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
