//! The end of a run's cgroup: its members, killing them, removing it
//! (at once when the runtime left it empty), and the runs a crashed
//! driver left behind (`rlm-sandbox gc`).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{subtree, validate_id, write_file, CgroupError, CgroupLayout, RunCgroup, ROOT_DIR};

/// How long `remove` retries a cgroup whose processes are still exiting.
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

impl RunCgroup {
    /// Every pid below the run's cgroup in any hierarchy, sorted, once each.
    /// (runsc leaves the unified tree empty in hybrid mode; runc joins it.)
    pub fn pids(&self) -> Vec<i32> {
        let pids: BTreeSet<i32> = self.dirs.iter().flat_map(|d| procs_below(d)).collect();
        pids.into_iter().collect()
    }

    /// SIGKILLs everything in the run (sandbox, gofer, stubs, guest);
    /// returns how many distinct pids were signalled. v2 `cgroup.kill`
    /// when present; on v1 the freezer stops a fork loop from outrunning us.
    pub fn kill_all(&self) -> usize {
        let mut killed = BTreeSet::new();
        if let Some(u) = &self.unified {
            let knob = u.join("cgroup.kill");
            // v2 kills the whole subtree atomically, fork loops included.
            // Members of v1 hierarchies only (runsc in hybrid mode) are
            // left for the loop below.
            let members = procs_below(u);
            if knob.exists() && write_file(&knob, "1").is_ok() {
                killed.extend(members);
            }
        }
        // Nothing left (the normal end of a run): no freezing, no waiting.
        if self.pids().is_empty() {
            return killed.len();
        }
        let freezer = self.freezer.as_ref().map(|f| f.join("freezer.state"));
        for _round in 0..5 {
            let frozen = freezer
                .as_ref()
                .is_some_and(|f| write_file(f, "FROZEN").is_ok());
            let pids = self.pids();
            for &pid in &pids {
                if pid > 0 && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    killed.insert(pid);
                }
            }
            if let (true, Some(f)) = (frozen, &freezer) {
                // Killed tasks only die once thawed.
                let _ = write_file(f, "THAWED");
            }
            if pids.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        killed.len()
    }

    /// Removes the run's cgroup at once if nothing is left in it (the
    /// normal end of a run: the runtime took its container with it), with
    /// none of [`Self::kill_all`]'s reads of every hierarchy's members.
    /// `Ok(false)`, with nothing waited for, when a hierarchy still holds
    /// processes: then kill them and [`Self::remove`]. The hierarchies
    /// found empty before the busy one are already gone then; no process
    /// of the run can join them afterwards, and `remove` skips them.
    pub fn remove_if_empty(&self) -> Result<bool, CgroupError> {
        for dir in self.dirs.iter().rev() {
            // Normally one rmdir: the runtime took its leaf with it. A leaf
            // still there keeps its parent busy as members do: then the
            // subtree is listed and removed depth first.
            if rmdir_unless_busy(dir)? {
                continue;
            }
            for d in subtree(dir).iter().rev() {
                if !rmdir_unless_busy(d)? {
                    return Ok(false);
                }
            }
        }
        self.removed.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Removes the run's cgroup in every hierarchy (depth first).
    pub fn remove(self) -> Result<(), CgroupError> {
        self.remove_ref()
    }

    /// As [`Self::remove`], for a guard's `Drop`. Every hierarchy is tried;
    /// the first error is returned. Idempotent.
    pub fn remove_ref(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs.iter().rev() {
            if let Err(e) = remove_tree(dir) {
                first.get_or_insert(e);
            }
        }
        match first {
            None => {
                self.removed.store(true, Ordering::Relaxed);
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

/// Ids of runs whose cgroup is still there, in any hierarchy.
pub fn leftover_runs(layout: &CgroupLayout) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for mount in layout.mounts() {
        let Ok(entries) = std::fs::read_dir(mount.join(ROOT_DIR)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && validate_id(&name).is_ok() {
                ids.insert(name);
            }
        }
    }
    ids.into_iter().collect()
}

/// Removes a leftover run's cgroup in every hierarchy. Kill its processes
/// first (they keep a cgroup busy).
pub fn remove_run(layout: &CgroupLayout, run_id: &str) -> Result<(), CgroupError> {
    validate_id(run_id)?;
    let mut first = None;
    for mount in layout.mounts() {
        if let Err(e) = remove_tree(&mount.join(ROOT_DIR).join(run_id)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Pids in `dir`'s `cgroup.procs` and every descendant's.
fn procs_below(dir: &Path) -> BTreeSet<i32> {
    subtree(dir)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// rmdir of one cgroup: `Ok(false)` when it is busy (members, or a child
/// cgroup), `Ok(true)` when it is gone (or was already).
fn rmdir_unless_busy(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(err) => Err(CgroupError::Remove {
            path: dir.to_path_buf(),
            err,
        }),
    }
}

/// rmdir depth first; retries EBUSY while processes finish exiting.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for d in subtree(dir).iter().rev() {
        let deadline = Instant::now() + REMOVE_PATIENCE;
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => {
                    return Err(CgroupError::Remove {
                        path: d.clone(),
                        err,
                    })
                }
            }
        }
    }
    Ok(())
}
