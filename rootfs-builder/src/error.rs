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
    #[error("{problem} in the package list {list:?}; accepted: {form}", form = crate::extra::ACCEPTED_FORM)]
    PackageList { list: String, problem: String },
    #[error("apt-cache knows no package {0:?}. Hint: check the name (`apt-cache search`), or run `apt-get update`")]
    UnknownPackage(String),
    #[error("{0:?} has no installable version: it is a virtual package or one apt knows only by name; name a package that provides it (`apt-cache showpkg {0}` lists them)")]
    VirtualPackage(String),
    #[error("{name:?} is left out of every rootfs: {reason}; leave it out")]
    SkippedPackage { name: String, reason: &'static str },
    #[error("{package} depends on {dependency}, which no package apt knows provides")]
    Unresolvable { package: String, dependency: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Refusal>),
    #[error("the stand-in scan printed {line:?}: {problem}")]
    StandInScan { line: String, problem: String },
    #[error("{problem} in the requirement list {list:?}; accepted: {form}", form = crate::wheels::PIP_ACCEPTED_FORM)]
    PipList { list: String, problem: String },
    #[error(
        "--pip needs pip on the host (`python3 -m pip`: {0}). Hint: apt-get install python3-pip"
    )]
    NoPip(String),
    #[error("PyPI has no binary wheel for {requirement:?} for the rootfs's Python ({target}); --pip installs wheels only, it never builds from source: pin a version that has one, or leave it out")]
    NoWheel { requirement: String, target: String },
    #[error("cannot choose wheels for this rootfs: {0}")]
    NoWheelTarget(String),
    #[error("{build}; cleaning up also failed: {cleanup}")]
    Cleanup {
        build: Box<Error>,
        cleanup: Box<Error>,
    },
}

/// Why the self-check refused an extra package: importing one of its
/// modules in the built tree, as the sandbox user, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub package: String,
    pub module: String,
    pub reason: RefusalReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// The import needs a module the sandbox removes (`subprocess`,
    /// `ctypes`, ...) or a call its audit hook refuses (`os.system`).
    Blocked(String),
    /// Any other failure: the innermost exception, `Type: message`.
    Failed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refusal {
            package, module, ..
        } = self;
        match &self.reason {
            // Audit events have a dot (os.system); blocked modules do not.
            RefusalReason::Blocked(what) if what.contains('.') => write!(
                f,
                "{package}: `import {module}` calls {what}, which the sandbox refuses; leave it out"
            ),
            RefusalReason::Blocked(what) => write!(
                f,
                "{package}: `import {module}` needs {what}, which the sandbox removes; leave it out"
            ),
            RefusalReason::Failed(detail) => write!(
                f,
                "{package}: `import {module}` fails in the sandbox ({detail}); leave it out"
            ),
        }
    }
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
