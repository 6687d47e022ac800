//! One run's directory and the guard that removes everything a run made:
//! processes, runtime state, cgroup, bundle. Cleanup is structural: it runs
//! from `Drop` on every path out of a run, and explicitly (to report its
//! errors) on the normal path.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use crate::cgroup::RunCgroup;
use crate::runtime::Runtime;

/// Prefix of every container id, run directory and cgroup this project
/// makes: how `rlm-sandbox gc` recognises leftovers.
pub const ID_PREFIX: &str = "rlms-";

/// How long a `delete` of leftover runtime state may take before it is killed.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum CleanupError {
    #[error("runtime state of container {id} under {state_root} was not removed: {detail}")]
    RuntimeState {
        id: String,
        state_root: PathBuf,
        detail: String,
    },
    #[error("cgroup of run {id} was not removed: {detail}")]
    Cgroup { id: String, detail: String },
    #[error("run directory {path} was not removed: {err}")]
    RunDir { path: PathBuf, err: std::io::Error },
}

/// A fresh run id: the project prefix, our pid and random bits.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 6];
    // /dev/urandom never blocks after boot; the time fallback only keeps ids
    // distinct within this process if it is unreadable.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ID_PREFIX}{}-{hex}", std::process::id())
}

/// `<state_dir>/<id>/`: input/ (bind-mounted read-only into the sandbox),
/// bundle/config.json, state/ (the runtime's --root), runtime.log.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn input(&self) -> PathBuf {
        self.root.join("input")
    }
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }
    pub fn state_root(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("runtime.log")
    }
}

pub struct RunGuard {
    pub id: String,
    pub dir: RunDir,
    pub runtime: Runtime,
    pub cgroup: Option<RunCgroup>,
    /// Cleans up if the driver dies; disarmed when the guard is dropped,
    /// after its cleanup (fields drop after `Drop::drop`).
    pub watchdog: Option<super::watchdog::Watchdog>,
    /// Held for the whole run: `gc` takes a run directory whose lock it can
    /// get as the leftover of a dead driver.
    _lock: Option<Flock<std::fs::File>>,
    /// Whether something may be mounted in the run directory (a session's
    /// drop directory; unknown for an adopted run): only then does cleanup
    /// read the mount table, which on a host with many containers is long.
    pub mounts: bool,
    done: bool,
}

/// The lock file of a run directory.
pub const LOCK_FILE: &str = "lock";

/// Takes the lock of the run directory `dir` without waiting: `Some` when no
/// live driver holds it.
pub fn try_lock(dir: &Path) -> Option<Flock<std::fs::File>> {
    let file = std::fs::File::open(dir.join(LOCK_FILE)).ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

impl RunGuard {
    /// Creates the run directory (mode 0700 parents, readable input).
    pub fn create(state_dir: &Path, id: &str, runtime: Runtime) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(state_dir)?;
        let dir = RunDir {
            root: state_dir.join(id),
        };
        std::fs::DirBuilder::new().mode(0o711).create(&dir.root)?;
        let mut guard = RunGuard {
            id: id.to_string(),
            dir: dir.clone(),
            runtime,
            cgroup: None,
            watchdog: None,
            _lock: None,
            mounts: false,
            done: false,
        };
        let lock_file = std::fs::File::create(dir.root.join(LOCK_FILE))?;
        guard._lock = Some(
            Flock::lock(lock_file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| std::io::Error::from(errno))?,
        );
        for sub in [dir.bundle(), dir.state_root()] {
            std::fs::DirBuilder::new().mode(0o700).create(sub)?;
        }
        // The sandbox user reads its code from here, through a read-only
        // bind; other host users cannot (the code and, later, the context
        // may be private).
        std::fs::DirBuilder::new().mode(0o750).create(dir.input())?;
        share_with_sandbox(&dir.input(), 0o750)?;
        Ok(guard)
    }

    /// The guard of a run whose driver died (for its watchdog): `Ok(None)`
    /// while a live driver still holds the run's lock, an error when the
    /// run directory is gone (nothing left to do).
    pub fn adopt(state_dir: &Path, id: &str, runtime: Runtime) -> std::io::Result<Option<Self>> {
        let dir = RunDir {
            root: state_dir.join(id),
        };
        std::fs::metadata(&dir.root)?;
        let lock = match try_lock(&dir.root) {
            Some(lock) => Some(lock),
            None if dir.root.join(LOCK_FILE).exists() => return Ok(None),
            None => None,
        };
        let cgroup = crate::cgroup::CgroupLayout::detect()
            .ok()
            .and_then(|layout| RunCgroup::existing(&layout, id).ok());
        Ok(Some(RunGuard {
            id: id.to_string(),
            dir,
            runtime,
            cgroup,
            watchdog: None,
            _lock: lock,
            mounts: true,
            done: false,
        }))
    }

    /// Kills what is left, removes runtime state, cgroup and directory.
    /// Every step runs even when an earlier one failed; the first error is
    /// returned and the others are printed. `thorough` also searches /proc
    /// for runtime processes outside the cgroup (a hung or killed runtime);
    /// after a runtime that exited by itself there are none, and the search
    /// costs milliseconds on a busy host.
    pub fn cleanup(&mut self, thorough: bool) -> Result<(), CleanupError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut errors = Vec::new();
        let cgroup_error = |e: crate::cgroup::CgroupError| CleanupError::Cgroup {
            id: self.id.clone(),
            detail: e.to_string(),
        };
        let root = &self.dir.root;
        let mounts = self.mounts;
        let remove_dir = || remove_run_dir(root, mounts);
        // After a runtime that exited by itself the cgroup is empty: it
        // goes at once, and only a busy one has its processes killed.
        // (An error here is met again, and reported, by `remove` below.)
        let mut cgroup = self.cgroup.take();
        if !thorough
            && cgroup
                .as_ref()
                .is_some_and(|c| matches!(c.remove_if_empty(), Ok(true)))
        {
            cgroup = None;
        }
        if let Some(cgroup) = &cgroup {
            cgroup.kill_all();
        }
        if thorough {
            crate::procs::kill_mentioning(&self.id);
        }
        if let Err(e) = self.delete_runtime_state() {
            errors.push(e);
        }
        // Nothing runs any more. A cgroup still there (its processes were
        // killed and may take a while to exit) and the run directory are
        // removed side by side (on a disk-backed /run the directory's
        // unlinks cost most of a cleanup); with the cgroup gone already
        // there is nothing to overlap, and no thread to start.
        let dir_errors = match cgroup {
            None => remove_dir(),
            Some(cgroup) => std::thread::scope(|scope| {
                let dir = scope.spawn(remove_dir);
                if let Err(e) = cgroup.remove() {
                    errors.push(cgroup_error(e));
                }
                dir.join().unwrap_or_else(|_| {
                    vec![CleanupError::RunDir {
                        path: root.clone(),
                        err: std::io::Error::other("its removal panicked"),
                    }]
                })
            }),
        };
        errors.extend(dir_errors);
        let mut errors = errors.into_iter();
        let first = errors.next();
        for other in errors {
            eprintln!("rlm-sandbox: cleanup: {other}");
        }
        first.map_or(Ok(()), Err)
    }

    /// `runtime delete --force` when the runtime left state behind (it does
    /// not after a normal `run`; it does after a kill or a crash).
    fn delete_runtime_state(&self) -> Result<(), CleanupError> {
        let state_root = self.dir.state_root();
        if !has_runtime_state(&state_root) {
            return Ok(());
        }
        let err = |detail: String| CleanupError::RuntimeState {
            id: self.id.clone(),
            state_root: state_root.clone(),
            detail,
        };
        let argv = self
            .runtime
            .delete_argv(&state_root, &self.dir.log(), &self.id);
        let mut child = crate::runtime::command(&argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", argv[0].to_string_lossy())))?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() < DELETE_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The state root is ours alone: whatever `delete` could not remove
        // (e.g. after a runtime crash) goes with the run directory.
        crate::procs::kill_mentioning(&self.id);
        Ok(())
    }
}

/// Removes a run's directory: what was mounted into it (its drop
/// directory) first, as a mount point cannot be removed.
/// `mounts`: whether anything may be mounted there at all (else the mount
/// table is not read).
fn remove_run_dir(root: &Path, mounts: bool) -> Vec<CleanupError> {
    let mut errors = Vec::new();
    if mounts {
        if let Err(err) = super::drop_dir::unmount_under(root) {
            errors.push(CleanupError::RunDir {
                path: root.to_path_buf(),
                err,
            });
        }
    }
    if let Err(err) = std::fs::remove_dir_all(root) {
        if err.kind() != std::io::ErrorKind::NotFound {
            errors.push(CleanupError::RunDir {
                path: root.to_path_buf(),
                err,
            });
        }
    }
    errors
}

/// Whether a runtime left anything in its state root (it leaves nothing
/// after a normal `run`; it does after a kill or a crash).
pub fn has_runtime_state(state_root: &Path) -> bool {
    std::fs::read_dir(state_root)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Gives `path` to root and the sandbox's group, with `mode`: readable in
/// the sandbox, by no other host user.
pub fn share_with_sandbox(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(0), Some(rootfs_builder::SANDBOX_GID))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup(true) {
            eprintln!("rlm-sandbox: cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = new_run_id();
        let b = new_run_id();
        assert!(a.starts_with(ID_PREFIX), "{a}");
        assert_ne!(a, b);
        assert!(
            a.len() < 40,
            "ids must fit runtime and cgroup name limits: {a}"
        );
    }
}
