//! Builds the hardened Python rootfs for rlm-sandbox from the distribution's
//! packages, without Docker: resolve the dependency closure of the Python
//! packages with apt, download the .deb files, unpack them with dpkg-deb,
//! harden the tree, precompile bytecode, and write a manifest. The build
//! happens in a temporary sibling of the output and is renamed into place
//! only when complete, so a failed build leaves nothing behind.

mod command;
mod compile;
mod error;
mod harden;
mod manifest;
mod packages;
mod staging;
mod tree;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use error::Error;
pub use manifest::{read_manifest, verify, Manifest, PackageInfo, MANIFEST_PATH};

/// The unprivileged user code runs as. In Debian's 65000–65533 range, which
/// is reserved and never allocated, so no host account owns the sandbox's
/// files or processes.
pub const SANDBOX_UID: u32 = 65432;
pub const SANDBOX_GID: u32 = 65432;
/// The interpreter, inside the rootfs.
pub const PYTHON: &str = "/usr/bin/python3";
/// The session agent, a module of the rootfs's stdlib (`python3 -m`).
pub const AGENT_MODULE: &str = "_rlm_agent";

/// Where the driver bind-mounts the run's input (code) read-only.
pub const INPUT_DIR: &str = "/rlm";
/// Bumped when a build's output changes in a way [`content_id`] cannot see
/// from the embedded sources and lists (the package set, the steps).
const CONTENT_VERSION: u32 = 1;

/// An id of what this builder puts into a rootfs besides the packages:
/// sha256 (hex) over [`CONTENT_VERSION`], the embedded Python sources
/// (sitecustomize, the subprocess shim, the agent) and the hardening
/// lists. Written into the manifest; a rootfs whose id differs was built
/// by another version of the builder (an older agent, say).
pub fn content_id() -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("rlm-sandbox rootfs content {CONTENT_VERSION}\n"));
    for (name, text) in harden::embedded_content() {
        // Lengths make the encoding unambiguous.
        hasher.update(format!("{name}\0{}\0", text.len()));
        hasher.update(text.as_bytes());
    }
    packages::hex(&hasher.finalize())
}

/// Whether the rootfs at `rootfs` has a manifest written by a builder with
/// this [`content_id`] (false when unreadable, or from before the field).
/// Says nothing about later changes to the tree: that is [`verify`].
pub fn is_current(rootfs: &Path) -> bool {
    read_manifest(rootfs).is_ok_and(|m| m.content_id == content_id())
}

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
            Progress::Compiling => {
                write!(f, "precompiling bytecode, self-check as the sandbox user")
            }
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

/// The effective uid, from /proc/self/status (std has no geteuid).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Where `rlm-sandbox run` keeps the default rootfs: `$RLM_CACHE_DIR/rootfs`,
/// else `/var/cache/rlm-sandbox/rootfs` for root, else
/// `$XDG_CACHE_HOME/rlm-sandbox/rootfs` or `~/.cache/rlm-sandbox/rootfs`.
pub fn default_rootfs_dir() -> PathBuf {
    default_rootfs_dir_with(
        std::env::var_os("RLM_CACHE_DIR").map(PathBuf::from),
        effective_uid() == Some(0),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn default_rootfs_dir_with(
    cache_dir: Option<PathBuf>,
    is_root: bool,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    let nonempty = |p: &PathBuf| !p.as_os_str().is_empty();
    if let Some(dir) = cache_dir.filter(nonempty) {
        return dir.join("rootfs");
    }
    if is_root {
        return PathBuf::from("/var/cache/rlm-sandbox/rootfs");
    }
    xdg_cache_home
        .filter(nonempty)
        .or_else(|| home.filter(nonempty).map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("rlm-sandbox/rootfs")
}

/// Builds the rootfs at `opts.output`, replacing what is there only on
/// success. Needs root and apt (Debian or Ubuntu); takes a few seconds.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&Progress)) -> Result<Manifest, Error> {
    let start = Instant::now();
    let euid = effective_uid().unwrap_or(u32::MAX);
    if euid != 0 {
        return Err(Error::NotRoot(euid));
    }
    harden::check_ids_free(Path::new("/etc/passwd"), Path::new("/etc/group"))?;
    let output = &opts.output;
    staging::check_replaceable(output)?;
    // Removed on every early return (drop); renamed into place at the end.
    let staging = staging::Staging::new(output)?;
    let tree = &staging.tree;

    progress(&Progress::Resolving);
    let (python_version, names) = packages::resolve()?;
    progress(&Progress::Downloading {
        packages: names.len(),
    });
    let debs = packages::download(&names, &staging.debs)?;
    let total = debs.len();
    let mut infos = Vec::with_capacity(total);
    for (i, deb) in debs.iter().enumerate() {
        infos.push(packages::unpack(deb, tree)?);
        if (i + 1) % 10 == 0 || i + 1 == total {
            progress(&Progress::Unpacking { done: i + 1, total });
        }
    }
    progress(&Progress::Hardening);
    harden::harden(tree, &python_version)?;
    progress(&Progress::Compiling);
    compile::compile_bytecode(tree, &python_version)?;
    tree::normalize_ownership(tree)?;
    compile::self_check(tree)?;
    progress(&Progress::Hashing);
    let manifest = manifest::write(tree, &python_version, infos)?;
    staging.commit(output)?;
    progress(&Progress::Done {
        path: output.clone(),
        bytes: manifest.bytes,
        elapsed: start.elapsed(),
    });
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rootfs_dir_precedence() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            default_rootfs_dir_with(p("/c"), /*is_root*/ true, p("/x"), p("/h")),
            PathBuf::from("/c/rootfs")
        );
        assert_eq!(
            default_rootfs_dir_with(None, /*is_root*/ true, p("/x"), p("/h")),
            PathBuf::from("/var/cache/rlm-sandbox/rootfs")
        );
        assert_eq!(
            default_rootfs_dir_with(p(""), /*is_root*/ false, p("/x"), p("/h")),
            PathBuf::from("/x/rlm-sandbox/rootfs")
        );
        assert_eq!(
            default_rootfs_dir_with(None, /*is_root*/ false, None, p("/h")),
            PathBuf::from("/h/.cache/rlm-sandbox/rootfs")
        );
    }

    #[test]
    fn content_id_is_a_stable_hash_of_the_embedded_content() {
        let id = content_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, content_id());
        let names: Vec<_> = harden::embedded_content()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.contains(&"__main__.py") && names.contains(&"sitecustomize.py"));
    }

    #[test]
    fn is_current_compares_the_manifests_content_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        assert!(!is_current(t), "no manifest");
        std::fs::write(t.join("a"), "one").expect("write");
        manifest::write(t, "3.11", Vec::new()).expect("manifest");
        assert!(is_current(t));
        // A manifest from before the field (or another build) is not current.
        let path = t.join(MANIFEST_PATH);
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        old.as_object_mut().expect("object").remove("content_id");
        std::fs::write(&path, old.to_string()).expect("write");
        assert_eq!(read_manifest(t).expect("old manifest reads").content_id, "");
        assert!(!is_current(t));
        old["content_id"] = "0".repeat(64).into();
        std::fs::write(&path, old.to_string()).expect("write");
        assert!(!is_current(t));
    }

    #[test]
    fn effective_uid_is_read() {
        assert!(effective_uid().is_some());
    }

    #[test]
    fn progress_lines() {
        let done = Progress::Done {
            path: PathBuf::from("/r"),
            bytes: 48_000_000,
            elapsed: Duration::from_millis(2500),
        };
        assert_eq!(done.to_string(), "built /r (48 MB) in 2.5 s");
        assert_eq!(
            Progress::Unpacking {
                done: 10,
                total: 38
            }
            .to_string(),
            "unpacked 10/38 packages"
        );
    }
}
