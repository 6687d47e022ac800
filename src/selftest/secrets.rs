//! The secret-leakage attack: secrets printed on both streams and a whole
//! context file printed back must not leave the sandbox. The values are
//! assembled from pieces so that this source file itself carries no
//! credential-shaped string for scanners to flag.

use crate::result::Status;

use super::{Attack, Fixture, Outcome, Verdict};

/// AWS's documented example access key id.
fn aws_key() -> String {
    ["AKIA", "IOSFODNN7", "EXAMPLE"].concat()
}

fn jwt() -> String {
    [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0",
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ]
    .concat()
}

fn pem_body() -> String {
    [
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
    ]
    .join("\n")
}

fn pem() -> String {
    let kind = ["RSA PRIVATE", " KEY"].concat();
    format!(
        "-----BEGIN {kind}-----\n{}\n-----END {kind}-----",
        pem_body()
    )
}

fn token() -> String {
    ["Zx9qL2vR8tWm", "4KpY7nB3cJ5h", "F1dG6sA0eU"].concat()
}

/// A deterministic context of about 6 KiB: numbered records of words.
pub fn context() -> String {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut state: u32 = 0x2545_f491;
    let mut text = String::new();
    for record in 0..120 {
        text.push_str(&format!("record {record:04}:"));
        for _ in 0..7 {
            // A linear congruential generator: varied text, same every time.
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            text.push(' ');
            text.push_str(WORDS[(state >> 16) as usize % WORDS.len()]);
        }
        text.push('\n');
    }
    text
}

pub fn attack() -> Attack {
    let code = format!(
        r#"{prelude}secrets = [{aws:?}, {jwt:?}, {pem:?}, {token:?}]
for s in secrets:
    print("leak:", s, flush=True)
    print("leak:", s, file=sys.stderr, flush=True)
context = """{context}"""
result(printed=len(secrets), context_bytes=len(context))
sys.stdout.write(context)
"#,
        prelude = super::catalogue::PRELUDE,
        aws = aws_key(),
        jwt = jwt(),
        pem = pem(),
        token = token(),
        context = context(),
    );
    Attack {
        name: "secret_leakage",
        threat: "secret leakage",
        code,
        expected: "an AWS key, a JWT, a PEM private key and a high-entropy token (stdout and \
                   stderr) and the whole context are redacted, each reported as a finding",
        limits: |_| {},
        context: Some(context()),
        fixture: Fixture::None,
        check,
        probe: false,
    }
}

fn check(o: &Outcome) -> Verdict {
    let r = o.result;
    let baseline = format!("RESULT printed=4 context_bytes={}", context().len());
    if r.status != Status::Ok || !r.stdout.contains(&baseline) {
        return Err(o.describe("the attack did not run to its end"));
    }
    let ctx = context();
    // Any 64-byte window of the context is a leak (the echo detector works
    // on shingles; a whole line surviving would be one too).
    let ctx_leaked = ctx
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .any(|c| r.stdout.contains(c) || r.stderr.contains(c));
    let secrets = [aws_key(), jwt(), pem_body(), token()];
    let names = ["aws_key", "jwt", "pem_private_key", "token"];
    let leaked: Vec<&str> = secrets
        .iter()
        .zip(names)
        .filter(|(s, _)| {
            let probe = s.lines().next().unwrap_or(s);
            r.stdout.contains(probe) || r.stderr.contains(probe)
        })
        .map(|(_, n)| n)
        .collect();
    let mut kinds: Vec<String> = r
        .findings
        .iter()
        .map(|f| format!("{}:{}", f.stream.name(), f.kind))
        .collect();
    kinds.sort();
    kinds.dedup();
    let want: Vec<String> = ["stdout", "stderr"]
        .iter()
        .flat_map(|s| {
            [
                "aws_access_key_id",
                "jwt",
                "private_key",
                "high_entropy_base64",
            ]
            .map(|k| format!("{s}:{k}"))
        })
        .chain(["stdout:context_echo".to_string()])
        .collect();
    let missing: Vec<&String> = want.iter().filter(|k| !kinds.contains(k)).collect();
    let observed = format!(
        "leaked={leaked:?} context_leaked={ctx_leaked} findings={}",
        kinds.join(",")
    );
    if leaked.is_empty() && !ctx_leaked && missing.is_empty() {
        Ok(observed)
    } else {
        Err(format!("{observed} missing_findings={missing:?}"))
    }
}
