//! The driver's own per-run cgroup, `/rlm-sandbox/<id>`, in every mounted
//! hierarchy. The runtime creates and deletes the leaf below it
//! (`linux.cgroupsPath = /rlm-sandbox/<id>/ctr`); the driver reads the
//! parent's counters after the runtime exits, then removes the parent.
//!
//! What survives the leaf (measured on Linux 6.18, hybrid, runc 1.1.5 and
//! runsc 20221219):
//! - cpu usage (v1 `cpuacct.usage`, v2 `cpu.stat`) and memory peak (v1
//!   `memory.max_usage_in_bytes`, v2 `memory.peak`) aggregate upward.
//! - The OOM-kill counter does only on v2: `memcg_memory_event()` stops at
//!   the victim's own memcg unless the memory controller is on the unified
//!   hierarchy (and `memory_localevents` is off). On v1 the parent's
//!   `memory.oom_control` stays `oom_kill 0` after a child's OOM kill.
//!   So on v1 the count is read from the leaf while it exists (`runc run
//!   --keep`), or the run holds its memory limit on the parent
//!   ([`RunCgroup::limit_memory`]): then the eventfd armed on the parent's
//!   `memory.oom_control` at creation counts the OOMs that hit it.

mod counters;
mod end;
mod layout;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use counters::{
    parse_cpu_stat_ns, parse_keyed, parse_memory_events, parse_oom_control, parse_single,
};
pub use end::{leftover_runs, remove_run};
pub use layout::{Capabilities, CgroupLayout, CgroupMode, V1Hierarchy};

/// Directory below each hierarchy's root that holds every run's cgroup.
pub const ROOT_DIR: &str = "rlm-sandbox";
/// The runtime's leaf below the run's cgroup.
pub const LEAF_DIR: &str = "ctr";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read {}: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    #[error("no cgroup hierarchy with root \"/\" is mounted (read {}). Hint: mount cgroup2 at /sys/fs/cgroup", path.display())]
    NoCgroupMounts { path: PathBuf },
    #[error("invalid run id {id:?}: use 1-64 characters from [A-Za-z0-9._-], not \".\" or \"..\"")]
    InvalidRunId { id: String },
    #[error("failed to create cgroup {}: {err}{}", path.display(), rollback_note(rollback))]
    Create {
        path: PathBuf,
        err: std::io::Error,
        /// Removing what was already created also failed.
        rollback: Option<Box<CgroupError>>,
    },
    #[error("failed to write {data:?} to {}: {err}", path.display())]
    Write {
        path: PathBuf,
        data: String,
        err: std::io::Error,
    },
    #[error("failed to remove cgroup {}: {err}. Hint: processes still in it? see its cgroup.procs", path.display())]
    Remove { path: PathBuf, err: std::io::Error },
}

fn rollback_note(rollback: &Option<Box<CgroupError>>) -> String {
    rollback
        .as_ref()
        .map(|e| format!(" (and cleaning up: {e})"))
        .unwrap_or_default()
}

/// Where the run's memory counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MemoryDir {
    V1(PathBuf),
    V2 { dir: PathBuf, hierarchical: bool },
}

/// The per-run parent cgroup the driver owns: created before the runtime
/// starts, removed after. Counter getters return `None` when unreadable.
#[derive(Debug)]
pub struct RunCgroup {
    id: String,
    /// `<mount>/rlm-sandbox/<id>` in every hierarchy, in creation order.
    dirs: Vec<PathBuf>,
    memory: Option<MemoryDir>,
    /// v1 `cpuacct` dir, else the unified dir (`cpu.stat`).
    cpu: Option<(PathBuf, bool /*v1*/)>,
    unified: Option<PathBuf>,
    freezer: Option<PathBuf>,
    oom_watch: Option<OomWatch>,
    /// The run's memory limit is set on this parent (v1 OOM detection).
    parent_limited: bool,
    removed: AtomicBool,
}

impl RunCgroup {
    /// mkdir `/rlm-sandbox/<id>` in each hierarchy. On v2 also enables the
    /// limited controllers in the subtree on the way down, so the runtime
    /// can set limits on its leaf. A failure removes what was created.
    pub fn create(layout: &CgroupLayout, run_id: &str) -> Result<Self, CgroupError> {
        let mut cg = Self::empty(run_id)?;
        if let Err(err) = cg.populate(layout) {
            let rollback = cg.remove_ref().err().map(Box::new);
            return Err(match err {
                CgroupError::Create { path, err, .. } => CgroupError::Create {
                    path,
                    err,
                    rollback,
                },
                other => {
                    if let Some(r) = rollback {
                        eprintln!("rlm-sandbox: cgroup: {r}");
                    }
                    other
                }
            });
        }
        Ok(cg)
    }

    /// The cgroup of a run another process created (the watchdog of a
    /// driver that died, `gc`): its directories that exist, for
    /// [`Self::kill_all`] and [`Self::remove`]. Nothing is created.
    pub fn existing(layout: &CgroupLayout, run_id: &str) -> Result<Self, CgroupError> {
        let mut cg = Self::empty(run_id)?;
        cg.dirs = layout
            .mounts()
            .map(|mount| mount.join(ROOT_DIR).join(run_id))
            .filter(|dir| dir.is_dir())
            .collect();
        let unified = layout
            .unified_mount()
            .map(|u| u.join(ROOT_DIR).join(run_id));
        cg.unified = unified.filter(|dir| dir.is_dir());
        let freezer = layout
            .v1_mount("freezer")
            .map(|f| f.join(ROOT_DIR).join(run_id));
        cg.freezer = freezer.filter(|dir| dir.is_dir());
        Ok(cg)
    }

    fn empty(run_id: &str) -> Result<Self, CgroupError> {
        validate_id(run_id)?;
        Ok(Self {
            id: run_id.to_owned(),
            dirs: Vec::new(),
            memory: None,
            cpu: None,
            unified: None,
            freezer: None,
            oom_watch: None,
            parent_limited: false,
            removed: AtomicBool::new(false),
        })
    }

    fn populate(&mut self, layout: &CgroupLayout) -> Result<(), CgroupError> {
        let run_dir = |mount: &Path| mount.join(ROOT_DIR).join(&self.id);
        for mount in layout.mounts() {
            let base = mount.join(ROOT_DIR);
            let dir = base.join(&self.id);
            // The parent exists after a hierarchy's first run: one mkdir.
            if std::fs::create_dir(&dir).is_err() {
                mkdir(&base, true)?;
                mkdir(&dir, false)?;
            }
            self.dirs.push(dir);
        }
        if let Some(cpuset) = layout.v1_mount("cpuset") {
            // A new v1 cpuset starts with no cpus and no mems, and no task
            // can join it then: inherit the parent's.
            copy_cpuset(cpuset, &cpuset.join(ROOT_DIR))?;
            copy_cpuset(&cpuset.join(ROOT_DIR), &run_dir(cpuset))?;
        }
        if let Some(unified) = layout.unified_mount() {
            let base = unified.join(ROOT_DIR);
            for level in [unified.to_path_buf(), base.clone(), base.join(&self.id)] {
                enable_controllers(&level)?;
            }
            self.unified = Some(run_dir(unified));
        }
        self.memory = match (
            layout.mode(),
            layout.v1_mount("memory"),
            layout.unified_mount(),
        ) {
            (CgroupMode::V2, _, Some(u)) => Some(MemoryDir::V2 {
                dir: run_dir(u),
                hierarchical: !layout.local_events(),
            }),
            (_, Some(m), _) => Some(MemoryDir::V1(run_dir(m))),
            _ => None,
        };
        self.cpu = match (layout.v1_mount("cpuacct"), layout.unified_mount()) {
            (Some(m), _) => Some((run_dir(m), true)),
            (None, Some(u)) => Some((run_dir(u), false)),
            _ => None,
        };
        self.freezer = layout.v1_mount("freezer").map(run_dir);
        if let Some(MemoryDir::V1(dir)) = &self.memory {
            // Best effort: without it, v1 OOM detection needs the leaf.
            self.oom_watch = OomWatch::arm(dir).ok();
        }
        Ok(())
    }

    /// `linux.cgroupsPath` for config.json.
    pub fn container_path(&self) -> String {
        format!("/{ROOT_DIR}/{}/{LEAF_DIR}", self.id)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The run's directory in every hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Enforces `bytes` (memory, no swap) on this parent cgroup. On v1 this
    /// is what makes [`Self::oom_kills`] work after the runtime deleted its
    /// leaf: give the leaf no lower limit, or its OOMs are not the parent's.
    pub fn limit_memory(&mut self, bytes: u64) -> Result<(), CgroupError> {
        let value = bytes.to_string();
        match &self.memory {
            Some(MemoryDir::V1(dir)) => {
                // memsw must stay ≥ memory: lower memory first.
                write_file(&dir.join("memory.limit_in_bytes"), &value)?;
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write_file(&memsw, &value)?;
                }
                self.parent_limited = true;
            }
            Some(MemoryDir::V2 { dir, .. }) => {
                write_file(&dir.join("memory.max"), &value)?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_file(&swap, "0")?;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Every counter at once, as a result reports them.
    pub fn usage(&self) -> crate::result::Usage {
        crate::result::Usage {
            memory_peak_bytes: self.memory_peak_bytes(),
            cpu_time_ms: self.cpu_usage_ns().map(|ns| ns / 1_000_000),
            oom_kills: self.oom_kills(),
        }
    }

    /// OOM kills in the run. `None` when they cannot be known: removed, no
    /// memory controller, or v1 with the leaf gone and no parent limit.
    pub fn oom_kills(&self) -> Option<u64> {
        if self.removed.load(Ordering::Relaxed) {
            return None;
        }
        match self.memory.as_ref()? {
            MemoryDir::V2 {
                dir,
                hierarchical: true,
            } => read_parsed(&dir.join("memory.events"), parse_memory_events),
            MemoryDir::V2 {
                dir,
                hierarchical: false,
            } => sum_if_leaves(dir, "memory.events", parse_memory_events),
            MemoryDir::V1(dir) => sum_if_leaves(dir, "memory.oom_control", parse_oom_control)
                .or_else(|| {
                    let watch = self.oom_watch.as_ref().filter(|_| self.parent_limited)?;
                    let own = read_parsed(&dir.join("memory.oom_control"), parse_oom_control)?;
                    Some(watch.events().max(own))
                }),
        }
    }

    /// Peak memory of the whole run (hierarchical on v1 and v2).
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        match self.memory.as_ref()? {
            MemoryDir::V1(dir) => read_parsed(&dir.join("memory.max_usage_in_bytes"), parse_single),
            MemoryDir::V2 { dir, .. } => read_parsed(&dir.join("memory.peak"), parse_single),
        }
    }

    /// CPU time of the whole run, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match self.cpu.as_ref()? {
            (dir, true) => read_parsed(&dir.join("cpuacct.usage"), parse_single),
            (dir, false) => read_parsed(&dir.join("cpu.stat"), parse_cpu_stat_ns),
        }
    }
}

fn validate_id(id: &str) -> Result<(), CgroupError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if (1..=64).contains(&id.len()) && id.chars().all(ok_char) && id != "." && id != ".." {
        Ok(())
    } else {
        Err(CgroupError::InvalidRunId { id: id.to_owned() })
    }
}

fn mkdir(path: &Path, may_exist: bool) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Err(err) if !(may_exist && err.kind() == ErrorKind::AlreadyExists) => {
            Err(CgroupError::Create {
                path: path.to_path_buf(),
                err,
                rollback: None,
            })
        }
        _ => Ok(()),
    }
}

/// Writes to an existing control file; never creates one. (cgroupfs
/// ignores O_TRUNC, as for a shell's `>`; it matters for fake trees.)
fn write_file(path: &Path, data: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(data.as_bytes()))
        .map_err(|err| CgroupError::Write {
            path: path.to_path_buf(),
            data: data.to_owned(),
            err,
        })
}

fn read_parsed(path: &Path, parse: fn(&str) -> Option<u64>) -> Option<u64> {
    parse(&std::fs::read_to_string(path).ok()?)
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while let Some(d) = out.get(i).cloned() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    out
}

/// Sum of a non-hierarchical counter over `dir` and its children, only
/// while children exist (the leaf's count dies with the leaf).
fn sum_if_leaves(dir: &Path, file: &str, parse: fn(&str) -> Option<u64>) -> Option<u64> {
    let all = subtree(dir);
    if all.len() < 2 {
        return None;
    }
    all.iter().map(|d| read_parsed(&d.join(file), parse)).sum()
}

fn copy_cpuset(from: &Path, to: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        // `from` is read only when `to` is empty (a new cgroup).
        let Ok(current) = std::fs::read_to_string(to.join(file)) else {
            continue;
        };
        if !current.trim().is_empty() {
            continue;
        }
        let Ok(value) = std::fs::read_to_string(from.join(file)) else {
            continue;
        };
        if !value.trim().is_empty() {
            write_file(&to.join(file), value.trim())?;
        }
    }
    Ok(())
}

/// Enables memory, pids and cpu for `level`'s children where `level` offers
/// them and they are not on yet (one write, as the kernel accepts a list).
fn enable_controllers(level: &Path) -> Result<(), CgroupError> {
    let Ok(available) = std::fs::read_to_string(level.join("cgroup.controllers")) else {
        return Ok(());
    };
    let enabled = std::fs::read_to_string(level.join("cgroup.subtree_control")).unwrap_or_default();
    let has = |text: &str, c: &str| text.split_whitespace().any(|x| x == c);
    let missing: Vec<String> = layout::LIMITED_CONTROLLERS
        .iter()
        .filter(|c| has(&available, c) && !has(&enabled, c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&level.join("cgroup.subtree_control"), &missing.join(" "))
}

/// An eventfd registered on a v1 `memory.oom_control` through
/// `cgroup.event_control`: it counts OOM situations at that cgroup's own
/// limit (not at a child's). Note the kernel also signals it once when the
/// cgroup is removed, so read it before removal.
#[derive(Debug)]
struct OomWatch {
    eventfd: File,
    total: AtomicU64,
}

impl OomWatch {
    fn arm(dir: &Path) -> std::io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // The kernel keeps its own reference to the event; this control
        // file may be closed once registered.
        let control = File::open(dir.join("memory.oom_control"))?;
        let line = format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd());
        write_file(&dir.join("cgroup.event_control"), &line).map_err(std::io::Error::other)?;
        Ok(Self {
            eventfd,
            total: AtomicU64::new(0),
        })
    }

    /// OOM events so far (reading resets the eventfd, so keep a total).
    fn events(&self) -> u64 {
        let mut buf = [0u8; 8];
        if let Ok(8) = (&self.eventfd).read(&mut buf) {
            self.total
                .fetch_add(u64::from_ne_bytes(buf), Ordering::Relaxed);
        }
        self.total.load(Ordering::Relaxed)
    }
}
