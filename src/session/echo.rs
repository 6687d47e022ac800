//! A session's own context echo indexes: the contexts it started with
//! and those added since, each batch indexed on its own thread (while the
//! sandbox starts, or after `add_context` has answered). Everything that
//! leaves the sandbox waits for every build ([`SessionEcho::get`]). They
//! belong to the session, not to its sandbox's filter, so a sandbox's
//! filter never holds another session's contexts.
//!
//! Each context is indexed through the descriptor the session opened (the
//! file the sandbox sees), never its path again: a client may remove its
//! file once the session has answered.

use std::fs::File;
use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::egress::{ContextEchoIndex, EchoConfig};

type Built = Result<Vec<ContextEchoIndex>, String>;

/// A context file opened by the session, and its path for errors.
pub(crate) type OpenContext = (PathBuf, File);

pub(crate) struct SessionEcho {
    /// Builds not yet joined, in the order their contexts came.
    building: Vec<JoinHandle<Built>>,
    /// The indexes built; the first build error otherwise (then no output
    /// is released).
    indexes: Built,
}

impl SessionEcho {
    /// Starts indexing `contexts` with `echo`'s settings.
    pub(crate) fn spawn(contexts: Vec<OpenContext>, echo: EchoConfig) -> Self {
        let mut this = SessionEcho {
            building: Vec::new(),
            indexes: Ok(Vec::new()),
        };
        this.add(contexts, echo);
        this
    }

    /// Starts indexing `contexts` (added to the live session) beside the
    /// builds already running.
    pub(crate) fn add(&mut self, contexts: Vec<OpenContext>, echo: EchoConfig) {
        if contexts.is_empty() {
            return;
        }
        self.building.push(std::thread::spawn(move || {
            contexts
                .iter()
                .map(|(path, file)| ContextEchoIndex::from_open(file, path, &echo))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("context echo index: {e}"))
        }));
    }

    /// Every index, waiting for the builds still running.
    pub(crate) fn get(&mut self) -> Result<&[ContextEchoIndex], String> {
        for handle in self.building.drain(..) {
            let built = handle
                .join()
                .unwrap_or_else(|_| Err("the context echo index build panicked".into()));
            match (&mut self.indexes, built) {
                (Ok(indexes), Ok(new)) => indexes.extend(new),
                (Ok(_), Err(e)) => self.indexes = Err(e),
                (Err(_), _) => {}
            }
        }
        self.indexes.as_deref().map_err(Clone::clone)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> OpenContext {
        (path.to_path_buf(), File::open(path).unwrap())
    }

    #[test]
    fn indexes_the_sessions_contexts_and_those_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, "a context of the session's own, ".repeat(40)).unwrap();
        let cfg = EchoConfig::default();
        let mut echo = SessionEcho::spawn(vec![open(&path)], cfg.clone());
        assert_eq!(echo.get().unwrap().len(), 1);
        echo.add(vec![open(&path)], cfg.clone());
        assert_eq!(echo.get().unwrap().len(), 2);
        assert!(SessionEcho::spawn(Vec::new(), cfg.clone())
            .get()
            .unwrap()
            .is_empty());
    }

    // Opened, then removed by its client: the index reads the open file.
    #[test]
    fn a_context_removed_once_opened_is_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.txt");
        std::fs::write(&path, "a context its client removed early, ".repeat(40)).unwrap();
        let opened = open(&path);
        std::fs::remove_file(&path).unwrap();
        let mut echo = SessionEcho::spawn(vec![opened], EchoConfig::default());
        assert_eq!(echo.get().unwrap().len(), 1);
    }

    // A build that fails (here a file open for writing only: its reads
    // fail) fails every later `get`: no output is released.
    #[test]
    fn a_failed_build_holds_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unreadable.txt");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        let cfg = EchoConfig::default();
        let mut echo = SessionEcho::spawn(vec![open(&path)], cfg.clone());
        assert_eq!(echo.get().unwrap().len(), 1);
        let write_only = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        echo.add(vec![(path.clone(), write_only)], cfg.clone());
        let err = echo.get().unwrap_err();
        assert!(
            err.contains("context echo index") && err.contains("unreadable.txt"),
            "{err}"
        );
        echo.add(vec![open(&path)], cfg);
        assert!(echo.get().is_err());
    }
}
