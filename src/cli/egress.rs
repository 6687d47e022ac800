//! The egress filter's flags and RLM_* variables, shared by every
//! subcommand whose output leaves through the filter (`run`, `filter`,
//! `session`), and the context files (`--context`), whose echo it flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rlm_sandbox::egress::{
    known_secrets, EchoAction, EchoConfig, EgressConfig, EgressFilter, FilterSpec, PendingFilter,
    Policy,
};

/// Egress filter settings; each flag overrides its RLM_* variable.
#[derive(Args, Debug, Clone)]
pub struct EgressArgs {
    /// redact (default) | block (replace the stream with a notice) | warn (pass, report)
    #[arg(long, value_name = "POLICY", env = "RLM_EGRESS_POLICY", default_value = "redact", value_parser = parse_policy)]
    pub policy: Policy,
    /// Redact the value of this environment variable wherever it appears,
    /// also base64- and hex-encoded (repeatable)
    #[arg(
        long = "redact-env",
        value_name = "NAME",
        env = "RLM_REDACT_ENV",
        value_delimiter = ','
    )]
    pub redact_env: Vec<String>,
    /// Redact the contents of this file likewise (repeatable)
    #[arg(long = "redact-file", value_name = "PATH")]
    pub redact_file: Vec<PathBuf>,
    /// Bits per character above which a base64-like token is a secret
    #[arg(long, value_name = "BITS", env = "RLM_ENTROPY_THRESHOLD", default_value_t = 4.5, value_parser = parse_entropy)]
    pub entropy_threshold: f64,
    /// The same for hex-like tokens (at most 4 bits per character)
    #[arg(long, value_name = "BITS", env = "RLM_HEX_ENTROPY_THRESHOLD", default_value_t = 3.0, value_parser = parse_hex_entropy)]
    pub hex_entropy_threshold: f64,
    /// Let hex digests (md5, sha1, sha256, sha512 lengths) pass the entropy check
    #[arg(long, value_name = "BOOL", env = "RLM_ALLOW_HASHES", default_value = "true",
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = parse_bool)]
    pub allow_hashes: bool,
    /// Turn off the entropy detector
    #[arg(long)]
    pub no_entropy: bool,
    /// Fraction of the context (0, 1] an output may reproduce
    #[arg(long, value_name = "FRACTION", env = "RLM_SIMILARITY_THRESHOLD", default_value_t = 0.5, value_parser = parse_similarity)]
    pub similarity_threshold: f64,
    /// Bytes of the context an output may reproduce, whatever its size
    #[arg(long, value_name = "BYTES", env = "RLM_ECHO_MAX_BYTES", default_value_t = 32 * 1024, value_parser = parse_echo_bytes)]
    pub echo_max_bytes: usize,
    /// redact (the echoed spans) | notice (replace the output with a notice to search the context)
    #[arg(long, value_name = "ACTION", env = "RLM_ECHO_ACTION", default_value = "redact", value_parser = parse_echo_action)]
    pub echo_action: EchoAction,
}

/// Context files: `run` and `filter` flag their echo; a session also
/// gives each to the sandbox's code (at start, or with a standby's
/// `begin`).
#[derive(Args, Debug, Clone, Default)]
pub struct ContextArgs {
    /// Context file whose verbatim echo in the output is flagged
    /// (repeatable; `session` also gives each one to the code, as
    /// `context_N`)
    #[arg(long, value_name = "FILE", env = "RLM_CONTEXT_FILE")]
    pub context: Vec<PathBuf>,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse().map_err(|_| {
        format!("expected redact, block or warn (flag --policy or RLM_EGRESS_POLICY), got {s:?}")
    })
}

fn parse_echo_action(s: &str) -> Result<EchoAction, String> {
    s.parse().map_err(|_| {
        format!("expected redact or notice (flag --echo-action or RLM_ECHO_ACTION), got {s:?}")
    })
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "expected true or false (flag --allow-hashes or RLM_ALLOW_HASHES), got {s:?}"
        )),
    }
}

fn parse_fraction(s: &str, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > lo && v <= hi => Ok(v),
        _ => Err(format!("expected {what}, got {s:?}")),
    }
}

fn parse_entropy(s: &str) -> Result<f64, String> {
    parse_fraction(s, 0.0, 8.0, "bits per character in (0, 8], e.g. 4.5 (flag --entropy-threshold or RLM_ENTROPY_THRESHOLD)")
}

fn parse_hex_entropy(s: &str) -> Result<f64, String> {
    parse_fraction(s, 0.0, 4.0, "bits per character in (0, 4], e.g. 3.0 (flag --hex-entropy-threshold or RLM_HEX_ENTROPY_THRESHOLD)")
}

fn parse_similarity(s: &str) -> Result<f64, String> {
    parse_fraction(s, 0.0, 1.0, "a fraction of the context in (0, 1], e.g. 0.5 (flag --similarity-threshold or RLM_SIMILARITY_THRESHOLD)")
}

fn parse_echo_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 64 => Ok(n),
        _ => Err(format!("expected a byte count of at least 64, e.g. 32768 (flag --echo-max-bytes or RLM_ECHO_MAX_BYTES), got {s:?}")),
    }
}

impl EgressArgs {
    /// The configuration these flags describe (the host's secrets read).
    pub fn to_config(&self) -> anyhow::Result<EgressConfig> {
        let known_secrets = known_secrets(&self.redact_env, &self.redact_file)
            .context("--redact-env / --redact-file")?;
        Ok(EgressConfig {
            policy: self.policy,
            entropy: !self.no_entropy,
            base64_entropy_threshold: self.entropy_threshold,
            hex_entropy_threshold: self.hex_entropy_threshold,
            allow_hex_hashes: self.allow_hashes,
            known_secrets,
            echo: EchoConfig {
                similarity_threshold: self.similarity_threshold,
                max_bytes: self.echo_max_bytes,
                action: self.echo_action,
                ..EchoConfig::default()
            },
            ..EgressConfig::default()
        })
    }

    /// The filter these flags describe, echo of `contexts` included.
    fn spec(&self, contexts: &[PathBuf]) -> anyhow::Result<FilterSpec> {
        Ok(FilterSpec {
            config: self.to_config()?,
            contexts: contexts.to_vec(),
        })
    }

    /// The filter of one run, built on another thread while the sandbox
    /// runs; every setting is checked now (a bad value is refused before
    /// anything runs).
    pub fn to_pending(&self, contexts: &[PathBuf]) -> anyhow::Result<PendingFilter> {
        let spec = self.spec(contexts)?;
        spec.config.validate()?;
        spec.pending().context("--context / RLM_CONTEXT_FILE")
    }

    /// A session's sandbox filter: the same settings, without the
    /// contexts (checked here), whose echo indexes the session builds and
    /// owns itself.
    pub fn to_pending_without_contexts(
        &self,
        contexts: &[PathBuf],
    ) -> anyhow::Result<PendingFilter> {
        let spec = self.spec(contexts)?;
        spec.config.validate()?;
        // Refused before anything runs, as for `run`.
        spec.check().context("--context / RLM_CONTEXT_FILE")?;
        let spec = FilterSpec {
            contexts: Vec::new(),
            ..spec
        };
        Ok(spec.pending()?)
    }

    pub fn to_filter(&self, contexts: &[PathBuf]) -> anyhow::Result<EgressFilter> {
        let spec = self.spec(contexts)?;
        spec.config.validate()?;
        spec.check().context("--context / RLM_CONTEXT_FILE")?;
        Ok(spec.build()?)
    }
}
