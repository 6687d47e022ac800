//! Builds the hardened Python rootfs for rlm-sandbox from the distribution's
//! packages, without Docker: resolve the dependency closure of the Python
//! packages with apt, download the .deb files, unpack them with dpkg-deb,
//! harden the tree, precompile bytecode, and write a manifest. The build
//! happens in a temporary sibling of the output and is renamed into place
//! only when complete, so a failed build leaves nothing behind.

mod harden;
mod manifest;
mod packages;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use manifest::{read_manifest, verify, Manifest, PackageInfo, MANIFEST_PATH};

/// The unprivileged user code runs as. In Debian's 65000–65533 range, which
/// is reserved and never allocated, so no host account owns the sandbox's
/// files or processes.
pub const SANDBOX_UID: u32 = 65432;
pub const SANDBOX_GID: u32 = 65432;
/// The interpreter, inside the rootfs.
pub const PYTHON: &str = "/usr/bin/python3";
/// Where the driver bind-mounts the run's input (code) read-only.
pub const INPUT_DIR: &str = "/rlm";

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub output: PathBuf,
}

/// Steps of a build, one human line each.
#[derive(Debug, Clone)]
pub enum Progress {
    Resolving,
    Downloading {
        packages: usize,
    },
    Unpacking {
        done: usize,
        total: usize,
    },
    Hardening,
    Compiling,
    Hashing,
    Done {
        path: PathBuf,
        bytes: u64,
        elapsed: Duration,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Resolving => write!(f, "resolving the Python packages' dependencies"),
            Progress::Downloading { packages } => write!(f, "downloading {packages} packages"),
            Progress::Unpacking { done, total } => write!(f, "unpacked {done}/{total} packages"),
            Progress::Hardening => write!(f, "hardening (users, blocked modules, audit hook)"),
            Progress::Compiling => write!(f, "precompiling bytecode"),
            Progress::Hashing => write!(f, "hashing the tree for the manifest"),
            Progress::Done {
                path,
                bytes,
                elapsed,
            } => write!(
                f,
                "built {} ({} MB) in {:.1} s",
                path.display(),
                bytes / 1_000_000,
                elapsed.as_secs_f64()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {err}; the rootfs builder needs apt-get, apt-cache and dpkg-deb (Debian or Ubuntu)")]
    Spawn {
        command: String,
        err: std::io::Error,
    },
    #[error("{action} {path}: {err}")]
    Io {
        action: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("no Python package found: {0}")]
    NoPython(String),
    #[error("host account {name:?} uses uid {uid}, the sandbox's uid; the sandbox's files and processes would be that account's")]
    UidTaken { name: String, uid: u32 },
    #[error("manifest {path}: {err}")]
    Manifest { path: PathBuf, err: String },
    #[error("building the rootfs needs root (to chroot for bytecode and to own files as root); effective uid is {0}")]
    NotRoot(u32),
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |err| Error::Io {
        action,
        path: path.to_path_buf(),
        err,
    }
}

/// Runs a command; its stdout on success, an error naming it otherwise.
pub(crate) fn run(cmd: &mut Command) -> Result<String, Error> {
    let command = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|err| Error::Spawn {
        command: command.clone(),
        err,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where `rlm-sandbox run` keeps the default rootfs: `$RLM_CACHE_DIR/rootfs`,
/// else `/var/cache/rlm-sandbox/rootfs` for root, else the user's cache.
pub fn default_rootfs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RLM_CACHE_DIR") {
        return PathBuf::from(dir).join("rootfs");
    }
    // SAFETY-free: geteuid via the environment-independent /proc view.
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/cache/rlm-sandbox/rootfs");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("rlm-sandbox/rootfs")
}

/// Builds the rootfs at `opts.output`, replacing what is there only on
/// success.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&Progress)) -> Result<Manifest, Error> {
    let start = Instant::now();
    let euid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Err(Error::NotRoot(euid));
    }
    harden::check_uid_free(Path::new("/etc/passwd"))?;
    let output = &opts.output;
    let parent = output.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rootfs".into());
    // Same filesystem as the output, so the final rename is atomic.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.building-"))
        .tempdir_in(parent)
        .map_err(io_err("cannot create a staging directory in", parent))?;
    let tree = staging.path().join("rootfs");
    let debs = staging.path().join("debs");
    std::fs::create_dir_all(&tree).map_err(io_err("cannot create", &tree))?;
    std::fs::create_dir_all(&debs).map_err(io_err("cannot create", &debs))?;

    progress(&Progress::Resolving);
    let (python_version, names) = packages::resolve()?;
    progress(&Progress::Downloading {
        packages: names.len(),
    });
    let downloaded = packages::download(&names, &debs)?;
    let total = downloaded.len();
    let mut infos = Vec::with_capacity(total);
    for (i, deb) in downloaded.iter().enumerate() {
        infos.push(packages::unpack(deb, &tree)?);
        if (i + 1) % 10 == 0 || i + 1 == total {
            progress(&Progress::Unpacking { done: i + 1, total });
        }
    }
    progress(&Progress::Hardening);
    harden::harden(&tree, &python_version)?;
    progress(&Progress::Compiling);
    harden::compile_bytecode(&tree, &python_version)?;
    progress(&Progress::Hashing);
    let manifest = manifest::write(&tree, &python_version, infos)?;

    // Swap into place: the old rootfs (if any) goes only after the new one
    // is complete.
    let old = staging.path().join("old");
    if output.exists() {
        std::fs::rename(output, &old).map_err(io_err("cannot move aside", output))?;
    }
    std::fs::rename(&tree, output).map_err(io_err("cannot move into place", output))?;
    // The staging directory (debs, old tree) is removed on drop.
    drop(staging);
    progress(&Progress::Done {
        path: output.clone(),
        bytes: manifest.bytes,
        elapsed: start.elapsed(),
    });
    Ok(manifest)
}
