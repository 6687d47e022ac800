//! Helpers for integration tests that run the real `rlm-sandbox` binary
//! against real runtimes, as root. A missing prerequisite is a printed skip
//! locally and a failure when CI=true.

#![allow(dead_code)]

pub mod repl;
pub mod server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rlm-sandbox");

/// Returns false (after printing why) when `runtime` cannot be tested here;
/// panics instead when CI=true.
pub fn prerequisites(runtime: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges".to_string());
    }
    if rlm_sandbox::runtime::find_binary(runtime, None).is_none() {
        missing.push(format!("{runtime} (apt-get install {runtime})"));
    }
    let rootfs = std::env::var_os("RLM_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(rootfs_builder::default_rootfs_dir);
    if !rlm_sandbox::rootfs::has_python(&rootfs) {
        missing.push(format!(
            "the rootfs at {} (scripts/setup builds it)",
            rootfs.display()
        ));
    }
    present(missing, "")
}

/// True when nothing is `missing`; else prints why `what` is skipped and
/// returns false, or panics when CI=true.
pub fn present(missing: Vec<String>, what: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    let why = format!("missing {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        if what.is_empty() {
            panic!("CI=true and {why}");
        }
        panic!("CI=true and {what} cannot run: {why}");
    }
    if what.is_empty() {
        eprintln!("SKIPPED: {why}");
    } else {
        eprintln!("SKIPPED {what}: {why}");
    }
    false
}

/// The gVisor 2022 build (Debian 12's `runsc` package, unpacked beside the
/// default one by `scripts/runsc-2022`), from RLM_RUNSC_2022. `None` (after
/// printing why) when it is not given; a failure when CI=true.
pub fn runsc_2022() -> Option<PathBuf> {
    let path = std::env::var_os("RLM_RUNSC_2022").map(PathBuf::from);
    if let Some(p) = path.filter(|p| rlm_sandbox::runtime::find_binary("runsc", Some(p)).is_some())
    {
        return Some(p);
    }
    let why = "RLM_RUNSC_2022 names no executable (RLM_RUNSC_2022=$(scripts/runsc-2022))";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// A private state directory per test, checked empty at the end.
pub struct Env {
    pub state: tempfile::TempDir,
    pub runtime: String,
}

impl Env {
    pub fn new(runtime: &str) -> Env {
        Env {
            state: tempfile::Builder::new()
                .prefix("rlm-test-state-")
                .tempdir()
                .expect("state tempdir"),
            runtime: runtime.to_string(),
        }
    }

    /// `rlm-sandbox <args...>` with this test's runtime and state dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("RLM_DOCKER_RUNTIME", &self.runtime)
            .env("RLM_STATE_DIR", self.state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `rlm-sandbox run --json <args>` with `code` on stdin; returns
    /// the parsed result and the driver's pid.
    pub fn run_json(&self, code: &[u8], args: &[&str]) -> (serde_json::Value, Output) {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        let mut child = self
            .command(&full)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        feed(&mut child, code);
        let out = child.wait_with_output().expect("wait");
        self.assert_clean(pid);
        let text = String::from_utf8_lossy(&out.stdout);
        let value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "not a JSON result ({e}): stdout={text:?} stderr={:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (value, out)
    }

    /// Nothing of the driver `pid`'s runs is left: no run directory, no
    /// runtime state, no cgroup, no process.
    pub fn assert_clean(&self, pid: u32) {
        assert_clean_runs(self.state.path(), &format!("rlms-{pid}-"));
    }
}

pub fn feed(child: &mut Child, data: &[u8]) {
    let mut stdin = child.stdin.take().expect("stdin piped");
    let data = data.to_vec();
    // A writer thread: the driver may exit (e.g. on a bad flag) before
    // reading everything, and a large write must not deadlock the test.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
}

/// Checks the state directory, every cgroup hierarchy and /proc for runs
/// whose id starts with `prefix`.
pub fn assert_clean_runs(state_dir: &Path, prefix: &str) {
    let leftovers: Vec<String> = std::fs::read_dir(state_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|n| !n.starts_with(prefix)),
        "run directories left in {}: {leftovers:?}",
        state_dir.display()
    );
    let mut cgroups = Vec::new();
    for hierarchy in cgroup_mounts() {
        let parent = hierarchy.join("rlm-sandbox");
        if let Ok(d) = std::fs::read_dir(&parent) {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) {
                    cgroups.push(parent.join(name));
                }
            }
        }
    }
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    let mounts = mounts_of_runs(state_dir, prefix);
    assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    // Processes can take a moment to be reaped after SIGKILL (a failure
    // deadline: the loop ends as soon as none is left).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let procs = rlm_sandbox::procs::pids_mentioning(Path::new("/proc"), prefix);
        if procs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What is left of runs whose id starts with `prefix`: run directories,
/// cgroups (with the processes still in them), and processes naming the id.
pub fn leftovers(state_dir: &Path, prefix: &str) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(state_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .map(|n| format!("run directory {n}"))
                .collect()
        })
        .unwrap_or_default();
    for hierarchy in cgroup_mounts() {
        let Ok(runs) = std::fs::read_dir(hierarchy.join("rlm-sandbox")) else {
            continue;
        };
        for run in runs.flatten() {
            if run.file_name().to_string_lossy().starts_with(prefix) {
                let procs = procs_below(&run.path());
                left.push(format!(
                    "cgroup {} with processes {procs:?}",
                    run.path().display()
                ));
            }
        }
    }
    let procs = rlm_sandbox::procs::pids_mentioning(Path::new("/proc"), prefix);
    if !procs.is_empty() {
        left.push(format!("processes naming the run: {procs:?}"));
    }
    left.extend(
        mounts_of_runs(state_dir, prefix)
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    left
}

/// The mount points (this test's mount namespace, the driver's) in the
/// run directories of `state_dir` whose id starts with `prefix`: a drop
/// directory and the contexts mounted into it.
pub fn mounts_of_runs(state_dir: &Path, prefix: &str) -> Vec<String> {
    let state = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let runs = format!("{}/{prefix}", state.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|point| point.starts_with(&runs))
        .map(String::from)
        .collect()
}

/// A tmpfs mounted on a directory for one test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "16m") on the existing directory `dir`.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0711").as_str()),
        )
        .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", dir.display()));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn procs_below(dir: &Path) -> Vec<String> {
    let mut procs: Vec<String> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if sub.file_type().is_ok_and(|t| t.is_dir()) {
            procs.extend(procs_below(&sub.path()));
        }
    }
    procs
}

/// How long a test lets the watchdog take to remove a sandbox whose driver
/// was killed: a failure deadline (the loop returns as soon as nothing is
/// left), far above the reaction `scripts/bench_watchdog.py` measures
/// (docs/BENCHMARKS.md) so that a loaded machine cannot fail it.
pub const WATCHDOG_BOUND: Duration = Duration::from_secs(10);

/// Prefix for code whose start a test waits on ([`wait_for_code`]): the
/// code first holds 96 MiB, which neither runtime's own processes nor an
/// idle interpreter or session agent reach (measured on runc ~3 MiB, on
/// runsc ~18 MiB, before user code runs), so the sandbox's memory counter
/// crossing [`STARTED_BYTES`] means the code is running. An event, not a
/// guess at how long start-up takes on this machine.
pub const MARK_STARTED: &str = "_rlm_test_started = b'\\x01' * (96 << 20)\n";
/// What the run's cgroup holds once [`MARK_STARTED`] has run.
pub const STARTED_BYTES: u64 = 80 << 20;

/// Waits until code of the driver `pid` that began with [`MARK_STARTED`]
/// runs: the run's cgroup (memory controller, v1 or v2) holds at least
/// [`STARTED_BYTES`]. The deadline only ends a test that would hang.
pub fn wait_for_code(pid: u32) {
    let prefix = format!("rlms-{pid}-");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        for hierarchy in cgroup_mounts() {
            let Ok(runs) = std::fs::read_dir(hierarchy.join("rlm-sandbox")) else {
                continue;
            };
            for run in runs.flatten() {
                if !run.file_name().to_string_lossy().starts_with(&prefix) {
                    continue;
                }
                let used = ["memory.current", "memory.usage_in_bytes"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(run.path().join(f)).ok())
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if used >= STARTED_BYTES {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the code of driver {pid} did not start within 120 s");
}

/// The pid of the watchdog the driver `pid` started (see `watchdogs_of`).
pub fn watchdog_of(pid: u32) -> Option<u32> {
    watchdogs_of(pid).into_iter().next()
}

/// The watchdogs of `pid`: its `rlm-sandbox __watchdog` children, or
/// the one it forked (named `rlm-watchdog`); one per sandbox a driver or
/// a server started.
pub fn watchdogs_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let forked = std::fs::read(e.path().join("comm")).ok()? == b"rlm-watchdog\n";
            let is_watchdog = forked || cmdline.split(|&b| b == 0).any(|a| a == b"__watchdog");
            (ppid == pid && is_watchdog).then_some(child)
        })
        .collect()
}

/// Mount points of every cgroup hierarchy (v1 controllers and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .collect()
}

/// Declares one test per runtime: `name_runsc` and `name_runc`.
#[macro_export]
macro_rules! on_both_runtimes {
    ($(fn $name:ident($env:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn body($env: &common::Env) $body
                #[test]
                fn runsc() {
                    if common::prerequisites("runsc") {
                        body(&common::Env::new("runsc"));
                    }
                }
                #[test]
                fn runc() {
                    if common::prerequisites("runc") {
                        body(&common::Env::new("runc"));
                    }
                }
            }
        )*
    };
}

/// One module per name with a test per runtime, `<name>::runsc` and
/// `<name>::runc`, each calling `$run(name, runtime)`; and the test
/// `$whole`, which requires the names listed to be exactly `$all` (the
/// library's list), so a test file cannot drift from it.
#[macro_export]
macro_rules! per_runtime_rows {
    ($run:ident, $whole:ident, $all:expr, $file:literal, [$($name:ident),* $(,)?]) => {
        $(
            mod $name {
                #[test]
                fn runsc() {
                    super::$run(stringify!($name), rlm_sandbox::runtime::RuntimeKind::Runsc);
                }
                #[test]
                fn runc() {
                    super::$run(stringify!($name), rlm_sandbox::runtime::RuntimeKind::Runc);
                }
            }
        )*

        #[test]
        fn $whole() {
            let mut listed = vec![$(stringify!($name)),*];
            let mut all: Vec<&str> = $all;
            listed.sort_unstable();
            all.sort_unstable();
            assert_eq!(listed, all, concat!($file, " must list every one once"));
        }
    };
}
