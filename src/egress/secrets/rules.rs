//! The rule table: every secret format, its regex, where its match starts,
//! what it redacts, and the anchor literals that trigger it.

use std::sync::OnceLock;

use regex::bytes::Regex;

use super::super::literals::Scan::{self, Frequent, Rare};
use super::super::EgressError;

/// What a rule redacts once its regex matched.
#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
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
pub(super) enum Start {
    /// This many bytes before the anchor, after a non-word byte (`\b`).
    Anchor(usize),
    /// This many bytes before the anchor, whatever precedes it: for formats
    /// whose prefix is distinctive and whose alphabet and length decide
    /// where the key ends, so that a key printed glued to other text
    /// (`f"id{key}"`, `'x' * 10 + key`) is still one.
    Glued(usize),
    /// At the start of the identifier holding the anchor (`DB_PASSWORD`,
    /// `https`).
    Identifier,
}

pub(super) struct Rule {
    pub(super) kind: &'static str,
    pattern: String,
    /// Compiled on first use: most outputs trigger no rule at all, and
    /// compiling every rule up front costs milliseconds on every run.
    re: OnceLock<Option<Regex>>,
    pub(super) start: Start,
    pub(super) check: Check,
    /// Bytes after the anchor the window must include: longer than any
    /// match can reach, so a match never ends at an artificial window end.
    pub(super) reach: usize,
}

/// Every anchor literal, how often ordinary output holds it (which literal
/// pass searches it), and the rules it triggers, tried in order; the first
/// rule whose match covers the anchor wins; a rule for the same format
/// glued to the text before it (`Start::Glued`, ids from 21) comes after
/// the one for the format on its own. Every rule has at least one anchor, so rare prefixes (AWS `ABIA`/`ACCA`/`A3T`, every GitLab token
/// prefix, `Basic` auth headers, `API-KEY`) are matched by their own
/// pattern, not left to the entropy detector.
pub(super) const ANCHORS: &[(&str, Scan, &[usize])] = &[
    ("AKIA", Rare, &[0, 21]),
    ("ASIA", Rare, &[0, 21]),
    ("ABIA", Rare, &[0, 21]),
    ("ACCA", Rare, &[0, 21]),
    ("A3T", Rare, &[0, 21]),
    ("ghp_", Rare, &[2, 22]),
    ("gho_", Rare, &[2, 22]),
    ("ghu_", Rare, &[2, 22]),
    ("ghs_", Rare, &[2, 22]),
    ("ghr_", Rare, &[2, 22]),
    ("github_pat_", Rare, &[3]),
    ("glpat-", Rare, &[4]),
    ("gldt-", Rare, &[4]),
    ("glrt-", Rare, &[4]),
    ("glptt-", Rare, &[4]),
    ("glcbt-", Rare, &[4]),
    ("glft-", Rare, &[4]),
    ("glsoat-", Rare, &[4]),
    ("GR1348941", Rare, &[5]),
    ("xox", Rare, &[6, 23]),
    ("xapp-", Rare, &[7]),
    ("hooks.slack.com", Rare, &[8]),
    ("k_live_", Rare, &[9, 24]),
    ("k_test_", Rare, &[9]),
    ("AIza", Rare, &[10]),
    ("sk-", Rare, &[11, 12, 25]),
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

/// The anchor of PEM private key blocks, handled by `values::pem_block` rather
/// than a regex because a block may be long or cut short.
const PEM_ANCHOR: &str = "-----BEGIN";

/// The key side of an assignment: any identifier ending in one of the
/// keywords, optionally quoted (JSON, YAML, env files, Python kwargs).
fn assignment(keywords: &str) -> String {
    format!(
        r#"(?i)[A-Za-z0-9_.\-]*(?:{keywords})["']?[ \t]*(?::=|=>|[:=])[ \t]*(?:"([^"\r\n]{{6,256}})"|'([^'\r\n]{{6,256}})'|([^\s"'`,;&(){{}}\[\]<>]{{6,256}}))"#
    )
}

fn rule_table() -> Vec<(&'static str, String, Start, Check, usize)> {
    use Check::*;
    use Start::{Anchor as At, Glued, Identifier as Ident};
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
        // 3: fine-grained personal access tokens. Glued (as 4, 5, 7, 10
        // and 11): the prefix alone is distinctive.
        ("github_fine_grained_pat", r"(github_pat_[A-Za-z0-9_]{22,255})\b".into(), Glued(0), Token, 300),
        // 4
        (
            "gitlab_token",
            r"((?:glpat|gldt|glrt|glptt|glcbt|glft|glsoat)-[A-Za-z0-9_\-]{20,255})".into(),
            Glued(0),
            Token,
            300,
        ),
        // 5: runner registration tokens.
        ("gitlab_runner_token", r"(GR1348941[A-Za-z0-9_\-]{20,64})".into(), Glued(0), Token, 100),
        // 6
        ("slack_token", r"(xox[abposre]-[A-Za-z0-9\-]{10,250})".into(), At(0), Token, 300),
        // 7
        ("slack_app_token", r"(xapp-\d-[A-Za-z0-9\-]{10,250})".into(), Glued(0), Token, 300),
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
        ("google_api_key", r"(AIza[0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)".into(), Glued(0), Token, 64),
        // 11: tried before OpenAI, whose generic shape it also has.
        (
            "anthropic_api_key",
            r"(sk-ant-(?:api|admin|oat|sid)\d{2}-[A-Za-z0-9_\-]{20,300})".into(),
            Glued(0),
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
        // 21 to 25: formats glued to the text before them, where the rule
        // for the format on its own wants `\b` because its prefix is also
        // the end of ordinary words, or its body alone is too loose.
        // 21: AWS key ids are base32 (`[A-Z2-7]`), 16 after the prefix; a
        // letter or digit after them would make it another token.
        (
            "aws_access_key_id",
            r"((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16})(?:[^A-Z0-9]|$)".into(),
            Glued(0),
            Token,
            64,
        ),
        // 22: `ghs_` ends `laughs_`: a random body mixes digits and cases,
        // an identifier does not.
        (
            "github_token",
            r"((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255})\b".into(),
            Glued(0),
            MixedToken,
            300,
        ),
        // 23: a number after the prefix, as every Slack token has, keeps
        // `xoxo-` (hugs and kisses) out.
        ("slack_token", r"(xox[abposre]-\d+-[A-Za-z0-9\-]{10,250})".into(), Glued(0), Token, 300),
        // 24: live keys only: `network_test_`, `fork_test_` name tests.
        (
            "stripe_key",
            r"((?:sk|rk)_live_[A-Za-z0-9]{16,247})\b".into(),
            Glued(1),
            MixedToken,
            300,
        ),
        // 25: only the prefixes no word ends in, and the legacy format by
        // its `T3BlbkFJ` marker: `desk-`, `task-`, `risk-` are ordinary.
        (
            "openai_api_key",
            r"(sk-(?:proj|svcacct)-[A-Za-z0-9_\-]{40,300}|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b)".into(),
            Glued(0),
            MixedToken,
            340,
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
    pub(super) fn regex(&self) -> Option<&Regex> {
        self.re.get_or_init(|| compile(&self.pattern).ok()).as_ref()
    }
}

/// The rules, built once per process; their regexes compile lazily.
pub(super) fn rules() -> Result<&'static [Rule], EgressError> {
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
