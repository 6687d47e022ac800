//! A session's own context echo indexes: the contexts it started with
//! (indexed on their own thread while the sandbox starts) and those added
//! since. They belong to the session, not to its sandbox's filter, so a
//! sandbox's filter never holds another session's contexts.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::egress::{echo_indexes, ContextEchoIndex, EchoConfig};

type Built = Result<Vec<ContextEchoIndex>, String>;

pub(crate) struct SessionEcho {
    building: Option<JoinHandle<Built>>,
    /// The indexes, once built; the build's error otherwise (then no
    /// output is released).
    indexes: Built,
}

impl SessionEcho {
    /// Starts indexing `contexts` with `echo`'s settings.
    pub(crate) fn spawn(contexts: Vec<PathBuf>, echo: EchoConfig) -> Self {
        let building = (!contexts.is_empty()).then(|| {
            std::thread::spawn(move || {
                echo_indexes(&contexts, &echo).map_err(|e| format!("context echo index: {e}"))
            })
        });
        SessionEcho {
            building,
            indexes: Ok(Vec::new()),
        }
    }

    /// Every index, waiting for the first build if needed.
    pub(crate) fn get(&mut self) -> Result<&[ContextEchoIndex], String> {
        if let Some(handle) = self.building.take() {
            self.indexes = handle
                .join()
                .unwrap_or_else(|_| Err("the context echo index build panicked".into()));
        }
        self.indexes.as_deref().map_err(Clone::clone)
    }

    /// Adds the index of a context added to the live session (after a
    /// [`Self::get`] that succeeded).
    pub(crate) fn push(&mut self, index: ContextEchoIndex) {
        if let Ok(indexes) = &mut self.indexes {
            indexes.push(index);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn indexes_the_sessions_contexts_and_those_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, "a context of the session's own, ".repeat(40)).unwrap();
        let cfg = EchoConfig::default();
        let mut echo = SessionEcho::spawn(vec![path.clone()], cfg.clone());
        assert_eq!(echo.get().unwrap().len(), 1);
        echo.push(ContextEchoIndex::from_file(&path, &cfg).unwrap());
        assert_eq!(echo.get().unwrap().len(), 2);
        assert!(SessionEcho::spawn(Vec::new(), cfg.clone())
            .get()
            .unwrap()
            .is_empty());
        let mut missing = SessionEcho::spawn(vec![dir.path().join("gone")], cfg);
        let err = missing.get().unwrap_err();
        assert!(err.contains("gone"), "{err}");
    }
}
