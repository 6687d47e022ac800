//! The filter's settings (plain data, validated once) and its errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::KnownSecret;

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
    /// A partial reproduction shorter than this is never an echo (short
    /// quotes). A short context reproduced whole or nearly is one however
    /// short, from `MIN_CONTEXT` (16) bytes (`ContextEchoIndex`).
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
