//! `gc`: removes what drivers that were killed (SIGKILL, power loss) left
//! behind, recognised by the project's id prefix: run directories whose
//! lock no live driver holds, their processes and runtime state, and cgroups.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::cgroup::{self, CgroupLayout};
use crate::runtime::{find_binary, Runtime, RuntimeKind};
use crate::supervise::{guard, ID_PREFIX};

/// What one `gc` removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Run ids cleaned up.
    pub removed: Vec<String>,
    /// Run ids in use by a live driver, left alone.
    pub in_use: Vec<String>,
    /// Processes killed.
    pub killed_processes: usize,
    /// What could not be removed, one message each.
    pub errors: Vec<String>,
}

pub fn collect(state_dir: &Path, layout: &CgroupLayout) -> GcReport {
    let mut report = GcReport::default();
    let mut ids = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(ID_PREFIX) {
                ids.insert(name);
            }
        }
    }
    ids.extend(cgroup::leftover_runs(layout));
    for id in ids {
        let dir = state_dir.join(&id);
        // A run directory's lock is held by its live driver. A cgroup
        // without a directory here may belong to a driver using another
        // state directory: its id names the driver's pid.
        let _lock = if dir.join(guard::LOCK_FILE).exists() {
            match guard::try_lock(&dir) {
                Some(lock) => Some(lock),
                None => {
                    report.in_use.push(id);
                    continue;
                }
            }
        } else {
            if driver_alive(&id) {
                report.in_use.push(id);
                continue;
            }
            None
        };
        // The sandbox first (a runc container's processes do not name the
        // id), then the runtime's own processes.
        if let Ok(cg) = cgroup::RunCgroup::existing(layout, &id) {
            report.killed_processes += cg.kill_all();
        }
        report.killed_processes += crate::procs::kill_mentioning(&id);
        delete_runtime_state(&dir.join("state"), &id);
        if let Err(e) = cgroup::remove_run(layout, &id) {
            report.errors.push(format!("cgroup of {id}: {e}"));
        }
        if let Err(e) = crate::supervise::drop_dir::unmount_under(&dir) {
            report.errors.push(format!("{}: {e}", dir.display()));
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                report.errors.push(format!("{}: {e}", dir.display()));
            }
        }
        report.removed.push(id);
    }
    report
}

/// Whether the driver whose pid is in `id` (`rlms-<pid>-<random>`) still
/// runs. Ids without a pid (bundles written for the raw runtime) have none.
fn driver_alive(id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

/// Asks each installed runtime to delete the container, in case its state
/// or processes remain (best effort: the directory goes next anyway).
fn delete_runtime_state(state_root: &Path, id: &str) {
    if !guard::has_runtime_state(state_root) {
        return;
    }
    for kind in [RuntimeKind::Runsc, RuntimeKind::Runc] {
        let Some(path) = find_binary(kind.name(), None) else {
            continue;
        };
        let runtime = Runtime {
            kind,
            path,
            extra_flags: Vec::new(),
        };
        let argv = runtime.delete_argv(state_root, Path::new("/dev/null"), id);
        let _ = crate::runtime::command(&argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_a_live_driver_is_in_use() {
        assert!(driver_alive(&format!(
            "{ID_PREFIX}{}-abcdef",
            std::process::id()
        )));
        assert!(!driver_alive(&format!(
            "{ID_PREFIX}{}-abcdef",
            u32::MAX - 1
        )));
        assert!(!driver_alive("rlms-bundle-runc"));
    }
}
