//! An egress filter built on another thread while the sandbox runs:
//! compiling the patterns (and indexing a context) takes milliseconds, and
//! nothing needs the filter before the sandbox's output is complete.

use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use super::{EchoConfig, EgressFilter};

type Built = Result<EgressFilter, String>;

pub struct PendingFilter {
    /// Known before the build ends: a session indexes its own contexts
    /// with it while the filter is still being built.
    echo: EchoConfig,
    building: Mutex<Option<JoinHandle<Built>>>,
    ready: OnceLock<Built>,
    /// What the filter is built from, as a stable text (a pool's key):
    /// `None` when unknown (then no pool shares sandboxes of it).
    identity: Option<String>,
}

impl PendingFilter {
    /// Starts `build` (of a filter whose echo settings are `echo`) on its
    /// own thread.
    pub fn spawn(echo: EchoConfig, build: impl FnOnce() -> Built + Send + 'static) -> Self {
        PendingFilter {
            echo,
            building: Mutex::new(Some(std::thread::spawn(build))),
            ready: OnceLock::new(),
            identity: None,
        }
    }

    /// A filter that is already built.
    pub fn ready(filter: EgressFilter) -> Self {
        let echo = filter.config().echo.clone();
        let ready = OnceLock::new();
        let _ = ready.set(Ok(filter));
        PendingFilter {
            echo,
            building: Mutex::new(None),
            ready,
            identity: None,
        }
    }

    /// The filter, saying what it is built from (`identity`).
    pub fn with_identity(mut self, identity: String) -> Self {
        self.identity = Some(identity);
        self
    }

    /// What the filter is built from, when known.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The filter's context echo settings (without waiting for it).
    pub fn echo_config(&self) -> &EchoConfig {
        &self.echo
    }

    /// The filter, waiting for its build if needed; the build's error
    /// otherwise (then no output may leave unfiltered).
    pub fn get(&self) -> Result<&EgressFilter, String> {
        let built = self.ready.get_or_init(|| {
            let handle = match self.building.lock() {
                Ok(mut guard) => guard.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            match handle.map(JoinHandle::join) {
                Some(Ok(built)) => built,
                Some(Err(_)) => Err("the egress filter's build panicked".into()),
                None => Err("the egress filter was never built".into()),
            }
        });
        built.as_ref().map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_build_and_reports_its_error() {
        let p = PendingFilter::spawn(EchoConfig::default(), || {
            EgressFilter::new(Default::default()).map_err(|e| e.to_string())
        });
        assert!(p.get().is_ok());
        assert!(p.get().is_ok(), "a second get reuses the filter");
        let failed = PendingFilter::spawn(EchoConfig::default(), || Err("no context".into()));
        assert_eq!(failed.get().err().as_deref(), Some("no context"));
    }
}
