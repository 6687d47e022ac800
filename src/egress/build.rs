//! Building a filter from its settings: the one library call behind every
//! caller's filter (the CLI's flags and variables, a session's contexts),
//! so no caller assembles secrets and echo indexes itself.

use std::path::PathBuf;

use super::{ContextEchoIndex, EchoConfig, EgressConfig, EgressError, EgressFilter};
use super::{KnownSecret, PendingFilter};

/// The host's secrets to redact: environment variables by name, files by
/// path (each read now; an unset variable or unreadable file is an error
/// naming it).
pub fn known_secrets(env: &[String], files: &[PathBuf]) -> Result<Vec<KnownSecret>, EgressError> {
    let mut known = Vec::with_capacity(env.len() + files.len());
    for name in env {
        known.push(KnownSecret::from_env(name)?);
    }
    for path in files {
        known.push(KnownSecret::from_file(path)?);
    }
    Ok(known)
}

/// The echo indexes of `contexts`, one per file, in order.
pub fn echo_indexes(
    contexts: &[PathBuf],
    echo: &EchoConfig,
) -> Result<Vec<ContextEchoIndex>, EgressError> {
    contexts
        .iter()
        .map(|path| ContextEchoIndex::from_file(path, echo))
        .collect()
}

/// Everything one filter is built from.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub config: EgressConfig,
    /// Files whose verbatim echo in the output is flagged: a one-shot
    /// run's. (A session indexes its own contexts, see `Session`.)
    pub contexts: Vec<PathBuf>,
}

impl FilterSpec {
    /// Checks every setting and that each context exists, now: a bad value
    /// is refused before anything runs.
    pub fn check(&self) -> Result<(), EgressError> {
        self.config.validate()?;
        for path in &self.contexts {
            std::fs::metadata(path).map_err(|err| EgressError::ReadFile {
                path: path.clone(),
                err,
            })?;
        }
        Ok(())
    }

    /// The filter: patterns compiled, contexts indexed.
    pub fn build(&self) -> Result<EgressFilter, EgressError> {
        let mut filter = EgressFilter::new(self.config.clone())?;
        for index in echo_indexes(&self.contexts, &self.config.echo)? {
            filter = filter.with_context(index);
        }
        Ok(filter)
    }

    /// [`Self::check`] now, then [`Self::build`] on its own thread while
    /// the sandbox starts.
    pub fn pending(self) -> Result<PendingFilter, EgressError> {
        self.check()?;
        let echo = self.config.echo.clone();
        // Every setting and context path, as one text: the same spec
        // gives the same identity within a build of this crate.
        let identity = format!("{:?}", self);
        Ok(
            PendingFilter::spawn(echo, move || self.build().map_err(|e| e.to_string()))
                .with_identity(identity),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_indexes_its_contexts_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let context = dir.path().join("ctx.txt");
        let text = "The quarterly figures were reviewed by the board in March. ".repeat(20);
        std::fs::write(&context, &text).unwrap();
        let spec = FilterSpec {
            contexts: vec![context.clone()],
            ..FilterSpec::default()
        };
        let filter = spec.clone().pending().unwrap();
        let out = filter
            .get()
            .unwrap()
            .filter_text(super::super::Stream::Stdout, text.as_bytes());
        assert!(
            out.findings.iter().any(|f| f.kind == "context_echo"),
            "the context's echo is flagged: {:?}",
            out.findings
        );
        let missing = FilterSpec {
            contexts: vec![dir.path().join("nope")],
            ..FilterSpec::default()
        };
        let err = missing.pending().err().unwrap().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn known_secrets_name_what_is_missing() {
        let err = known_secrets(&["RLM_TEST_SURELY_UNSET_VARIABLE".into()], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("RLM_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        let err = known_secrets(&[], &[PathBuf::from("/nonexistent/secret")])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/secret"), "{err}");
    }
}
