//! The builder's errors: each names the path, package or command involved
//! and what was expected.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        /// The last lines of its stderr.
        stderr: String,
    },
    #[error("cannot run `{command}`: {err}. Hint: the rootfs builder needs apt-get, apt-cache, dpkg-deb and chroot (Debian or Ubuntu)")]
    Spawn {
        command: String,
        err: std::io::Error,
    },
    #[error("cannot {action} {path}: {err}")]
    Io {
        action: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("cannot find the distribution's Python: {0}. Hint: run `apt-get update`")]
    NoPython(String),
    #[error(
        "apt-get download fetched {got} of {expected} packages into {dir}; missing: {missing}"
    )]
    Download {
        dir: PathBuf,
        expected: usize,
        got: usize,
        missing: String,
    },
    #[error("host account {name:?} in {file} uses id {id}, the sandbox's; files and processes of the sandbox would be that account's. Hint: move that account out of Debian's reserved range 65000-65533")]
    IdTaken {
        file: PathBuf,
        name: String,
        id: u32,
    },
    #[error("refusing to write through a symbolic link: {path} (a package ships it as a link; writing would change the file it points to, possibly on the host)")]
    Symlink { path: PathBuf },
    #[error("{path}: expected {expected}")]
    Unexpected { path: PathBuf, expected: String },
    #[error("manifest {path}: {err}")]
    Manifest { path: PathBuf, err: String },
    #[error("the built rootfs at {path} failed its self-check: {detail}")]
    SelfCheck { path: PathBuf, detail: String },
    #[error("building the rootfs needs root (to chroot into it for bytecode and the self-check, and to own its files as root); effective uid is {0}. Hint: run `sudo rlm-sandbox rootfs build`")]
    NotRoot(u32),
    #[error("{build}; cleaning up also failed: {cleanup}")]
    Cleanup {
        build: Box<Error>,
        cleanup: Box<Error>,
    },
}

/// `.ctx("read", path)?` turns an `io::Error` into an [`Error::Io`] naming
/// the path, so call sites stay one line.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T, Error> {
        self.map_err(|err| Error::Io {
            action,
            path: path.to_path_buf(),
            err,
        })
    }
}
