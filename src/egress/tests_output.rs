//! Tests of the filter's output: known host secrets, both streams, the
//! three policies and the capture boundary.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;

use super::tests::{filter, kinds};
use super::*;

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
    let out = filter().filter(Stream::Stdout, captured.clone());
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
    let out = filter().filter(Stream::Stderr, captured.clone());
    assert_eq!(kinds(&out), ["split_secret_fragment"]);
    assert!(!out.text.contains("ghp_0123"), "{}", out.text);
    // A private key whose END line landed in the tail.
    let captured = CapturedStream {
        head: b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC".to_vec(),
        tail: b"Xq9z\n-----END PRIVATE KEY-----\nok\n".to_vec(),
        dropped: 1500,
    };
    let out = filter().filter(Stream::Stdout, captured.clone());
    assert!(
        !out.text.contains("MIIEvQ") && !out.text.contains("Xq9z"),
        "{}",
        out.text
    );
    assert!(out.text.ends_with("\nok\n") && out.text.contains("bytes dropped"));
}
