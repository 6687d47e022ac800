//! The Python rootfs a sandbox runs on: the configured one, or the default
//! one, built into the cache on first use.

use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

pub use rootfs_builder::{Manifest, Progress};

#[derive(Debug, Error)]
pub enum RootfsError {
    #[error(
        "rootfs {path} has no Python at {python}; build one with `rlm-sandbox rootfs build \
         --output {path}` or point RLM_ROOTFS at a rootfs"
    )]
    NoPython { path: PathBuf, python: &'static str },
    #[error("cannot lock {path} to build the rootfs: {err}")]
    Lock { path: PathBuf, err: std::io::Error },
    #[error("building the rootfs failed: {0}")]
    Build(#[from] rootfs_builder::Error),
}

/// Whether `rootfs` looks usable: its Python exists.
pub fn has_python(rootfs: &Path) -> bool {
    rootfs
        .join(rootfs_builder::PYTHON.trim_start_matches('/'))
        .exists()
}

/// Whether `rootfs` holds a session agent (the package `_rlm_agent` in its
/// Python's standard library): rootfs builds before sessions, or trees not
/// made by rlm-sandbox, have none.
pub fn has_agent(rootfs: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(rootfs.join("usr/lib")) else {
        return false;
    };
    let module = format!("{}/__main__.py", rootfs_builder::AGENT_MODULE);
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("python3.") && e.path().join(&module).is_file()
    })
}

/// The configured rootfs, checked; or the default one, built (once, under a
/// lock so concurrent first runs do not race) when missing.
pub fn resolve(
    configured: Option<&Path>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf, RootfsError> {
    if let Some(path) = configured {
        return if has_python(path) {
            Ok(path.to_path_buf())
        } else {
            Err(RootfsError::NoPython {
                path: path.to_path_buf(),
                python: rootfs_builder::PYTHON,
            })
        };
    }
    resolve_selected(
        &rootfs_builder::ExtraPackages::default(),
        &rootfs_builder::PipRequirements::default(),
        progress,
    )
}

/// The cache's rootfs with exactly `extra` packages and `pip`
/// requirements (none: the default rootfs), built (once, under a lock)
/// when missing or not this builder's (`rootfs image --with ...`).
pub fn resolve_selected(
    extra: &rootfs_builder::ExtraPackages,
    pip: &rootfs_builder::PipRequirements,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PathBuf, RootfsError> {
    let path = rootfs_builder::default_rootfs_dir_with_pip(extra, pip);
    // A default rootfs from another build of the builder (an older agent,
    // say), or one with extra packages (`rootfs build --with ... --output`
    // this directory), is rebuilt (replaced in place) like a missing one.
    let current = |p: &Path| has_python(p) && rootfs_builder::is_current_for(p, extra, pip);
    if current(&path) {
        return Ok(path);
    }
    let lock_path = path.with_extension("lock");
    let lock_err = |err| RootfsError::Lock {
        path: lock_path.clone(),
        err,
    };
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent).map_err(lock_err)?;
    }
    let file = std::fs::File::create(&lock_path).map_err(lock_err)?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| lock_err(std::io::Error::from(errno)))?;
    // Another driver may have built it while we waited for the lock.
    if !current(&path) {
        rootfs_builder::build(
            &rootfs_builder::BuildOptions {
                output: path.clone(),
                packages: extra.clone(),
                pip: pip.clone(),
            },
            progress,
        )?;
    }
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_looked_for_in_the_pythons_stdlib() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(!has_agent(root), "no usr/lib");
        let lib = root.join("usr/lib/python3.11");
        std::fs::create_dir_all(&lib).unwrap();
        assert!(!has_agent(root), "no module");
        std::fs::create_dir_all(root.join("usr/lib/perl5/_rlm_agent")).unwrap();
        std::fs::write(root.join("usr/lib/perl5/_rlm_agent/__main__.py"), "").unwrap();
        assert!(!has_agent(root), "not under python3.*");
        std::fs::write(lib.join(format!("{}.py", rootfs_builder::AGENT_MODULE)), "").unwrap();
        assert!(!has_agent(root), "a module of that name, not the package");
        let package = lib.join(rootfs_builder::AGENT_MODULE);
        std::fs::create_dir_all(&package).unwrap();
        std::fs::write(package.join("__main__.py"), "").unwrap();
        assert!(has_agent(root));
    }
}
