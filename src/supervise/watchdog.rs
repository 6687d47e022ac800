//! A sandbox must not outlive its driver. An orchestrator that SIGKILLs its
//! worker, or the host's OOM killer choosing the driver, would otherwise
//! leave untrusted code running with no timeout left to end it: `runc run`
//! or `runsc run` is reparented and waits on, the container (runc) or the
//! Sentry (runsc) runs on.
//!
//! So every run has a watchdog: a small `rlm-sandbox __watchdog` process in
//! its own process group (a kill of the driver's group spares it) that
//! blocks reading a pipe only the driver holds. The driver tells it which
//! run it guards, and writes one byte when the run is cleaned up: the
//! watchdog then exits. If the driver dies first, the kernel closes the
//! pipe, the read returns end-of-file, and the watchdog does the cleanup
//! the driver's guard would have done ([`RunGuard::cleanup`]): it kills the
//! run's cgroup and runtime processes, deletes the runtime state, removes
//! the cgroup and the run directory.
//!
//! The run id travels on the pipe, not in argv: `procs::kill_mentioning`
//! finds a run's processes by the id in their command line, and must not
//! kill the run's own watchdog.
//!
//! A command that starts one local sandbox (`run`, `session`) forks its
//! watchdog early instead ([`prefork`]), while it is still one thread: no
//! exec of this 10 MB binary and no dynamic linking while the runtime
//! starts on the same cores (docs/BENCHMARKS.md). The forked watchdog,
//! named `rlm-watchdog`, waits for its run on the same pipes; the first
//! [`Watchdog::start`] takes it, later ones (and library callers) exec.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{dup2, fork, pipe2, setpgid, ForkResult, Pid};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::guard::RunGuard;
use crate::runtime::Runtime;

/// The hidden subcommand of the `rlm-sandbox` binary that runs a watchdog.
pub const SUBCOMMAND: &str = "__watchdog";
/// The variable that names the `rlm-sandbox` binary for library callers
/// whose own executable is not it.
pub const BINARY_VAR: &str = "RLM_SANDBOX_BIN";
/// The watchdog's answer once it is armed.
const READY: &[u8] = b"armed\n";
/// How long a driver waits for its watchdog to arm.
const ARM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the watchdog of a dead driver waits for the run's lock (held
/// only by a live driver; the kernel drops it with the driver's files).
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum WatchdogError {
    #[error(
        "cannot find the rlm-sandbox binary to start the run's watchdog (looked for {looked}). \
         Hint: set {BINARY_VAR} to its path"
    )]
    NoBinary { looked: String },
    #[error("cannot start the watchdog {}: {err}", path.display())]
    Spawn { path: PathBuf, err: std::io::Error },
    #[error("the watchdog {} did not arm: {detail}", path.display())]
    NotArmed { path: PathBuf, detail: String },
}

/// What a watchdog needs to clean up its run: the first line on its stdin.
/// The runtime comes with its global flags, so the watchdog calls it as the
/// driver would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub state_dir: PathBuf,
    pub id: String,
    pub runtime: Runtime,
}

impl Watched {
    pub fn new(state_dir: &Path, id: &str, runtime: &Runtime) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            id: id.to_string(),
            runtime: runtime.clone(),
        }
    }
}

/// The driver's end: dropping it disarms the watchdog (the run was cleaned
/// up by the driver) and, unless it was forked at the start, reaps it.
pub struct Watchdog {
    pid: Pid,
    disarm: Option<File>,
    answer: Option<File>,
    /// What is named in errors: the binary, or the forked watchdog.
    path: PathBuf,
    /// Whether dropping it reaps it (on a thread). The one forked at the
    /// start is not reaped: its process ends with its run (a CLI `run` or
    /// `session`), and init reaps the watchdog then; at most one such
    /// zombie waits per process, and no thread is started at the end of
    /// the run for it.
    reap: bool,
}

/// A watchdog forked by [`prefork`], waiting for its run.
struct Preforked {
    pid: Pid,
    to: File,
    from: File,
}

/// The process's pre-forked watchdog, until a run takes it.
static PREFORKED: Mutex<Option<Preforked>> = Mutex::new(None);

/// The command name (`/proc/PID/comm`) of a forked watchdog (an exec'd
/// one is `rlm-sandbox __watchdog`).
pub const FORKED_NAME: &std::ffi::CStr = c"rlm-watchdog";

/// Forks the watchdog of this process's next run now, if the process is
/// still a single thread (a fork of a threaded process may copy a lock
/// another thread holds). Otherwise, when the fork fails, or when
/// `RLM_SANDBOX_BIN` names another binary (its watchdog is wanted), the
/// run execs its watchdog as before. Call it before anything starts a
/// thread or installs a signal handler, and before reading any secret
/// (the child keeps a copy of this process's memory).
pub fn prefork() {
    if thread_count() != Some(1) || another_binary_named() {
        return;
    }
    let (Ok((child_in, to)), Ok((from, child_out))) =
        (pipe2(OFlag::O_CLOEXEC), pipe2(OFlag::O_CLOEXEC))
    else {
        return;
    };
    // SAFETY: the process has one thread (checked above; nothing here can
    // start another before the fork), so the child's copy holds no lock
    // some other thread owned, and it may run any code until it exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop((to, from));
            let code = as_watchdog(File::from(child_in), File::from(child_out));
            // SAFETY: `_exit` ends this process at once, without running
            // the parent's atexit handlers or flushing the parent's copied
            // stdio buffers in it.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            let preforked = Preforked {
                pid: child,
                to: File::from(to),
                from: File::from(from),
            };
            *PREFORKED.lock().unwrap_or_else(|e| e.into_inner()) = Some(preforked);
        }
        Err(_) => {}
    }
}

/// The threads of this process (from /proc), if it can be read.
fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

/// Whether `RLM_SANDBOX_BIN` names a file other than this executable.
fn another_binary_named() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(named) = std::env::var_os(BINARY_VAR).filter(|p| !p.is_empty()) else {
        return false;
    };
    let id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let this = std::env::current_exe().ok().and_then(|e| id(&e));
    this.is_none() || this != id(Path::new(&named))
}

/// The forked child becomes a watchdog as the exec'd one is made: its own
/// process group, the signal dispositions an exec gives (the driver's
/// handlers are not its own), /dev/null for stdio (it must not hold the
/// driver's caller's pipes open), a name of its own; then [`serve_on`]
/// its two pipes.
fn as_watchdog(input: File, output: File) -> i32 {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for signal in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: SIG_DFL installs no handler code; this process is one
        // thread, and only its own dispositions change.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = nix::sys::prctl::set_name(FORKED_NAME);
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = dup2(null.as_raw_fd(), fd);
        }
    }
    serve_on(input, output)
}

impl Watchdog {
    /// Starts the watchdog of `watched` without waiting for it to arm (it
    /// starts while the driver writes the bundle and the runtime starts):
    /// call [`Self::armed`] once the runtime is spawned. The run is in the
    /// watchdog's pipe before this returns, so it is watched from here on
    /// even if the driver dies before the watchdog has read it.
    pub fn start(watched: &Watched) -> Result<Self, WatchdogError> {
        let mut line = serde_json::to_vec(watched).map_err(|e| WatchdogError::Spawn {
            path: PathBuf::from(SUBCOMMAND),
            err: e.into(),
        })?;
        line.push(b'\n');
        let preforked = PREFORKED.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Preforked { pid, mut to, from }) = preforked {
            let path = PathBuf::from(format!("forked at start (pid {pid})"));
            to.write_all(&line).map_err(|err| WatchdogError::Spawn {
                path: path.clone(),
                err,
            })?;
            return Ok(Self {
                pid,
                disarm: Some(to),
                answer: Some(from),
                path,
                reap: false,
            });
        }
        let path = binary()?;
        let spawn_err = |err| WatchdogError::Spawn {
            path: path.clone(),
            err,
        };
        let mut child = Command::new(&path)
            .arg(SUBCOMMAND)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own group: an orchestrator killing the driver's process
            // group, or a Ctrl-C at the terminal, does not reach it.
            .process_group(0)
            .spawn()
            .map_err(spawn_err)?;
        let pid = Pid::from_raw(child.id() as i32);
        let mut disarm = child.stdin.take().map(|p| File::from(OwnedFd::from(p)));
        let answer = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
        // Dropping a `Child` neither waits nor kills: the pid is ours to reap.
        drop(child);
        if let Some(pipe) = disarm.as_mut() {
            pipe.write_all(&line).map_err(spawn_err)?;
        }
        Ok(Self {
            pid,
            disarm,
            answer,
            path,
            reap: true,
        })
    }

    /// Waits until the watchdog has read its run and armed.
    pub fn armed(&mut self) -> Result<(), WatchdogError> {
        let not_armed = |detail: String| WatchdogError::NotArmed {
            path: self.path.clone(),
            detail,
        };
        let Some(mut out) = self.answer.take() else {
            return Ok(());
        };
        // A watchdog that starts cannot take long; one that hangs is
        // killed, and the run refused. (Its answer is one short write:
        // readable at once is readable whole.)
        let timeout = PollTimeout::try_from(ARM_TIMEOUT).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let ready = loop {
            match poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.unwrap_or(0),
            }
        };
        if ready == 0 {
            let _ = kill(self.pid, Signal::SIGKILL);
            return Err(not_armed(format!("no answer within {ARM_TIMEOUT:?}")));
        }
        let mut answer = [0u8; READY.len()];
        match out.read_exact(&mut answer) {
            Ok(()) if answer == READY => Ok(()),
            Ok(()) => Err(not_armed(format!(
                "it answered {:?}",
                String::from_utf8_lossy(&answer)
            ))),
            Err(e) => Err(not_armed(format!(
                "it exited ({e}; status {:?}): an rlm-sandbox binary without {SUBCOMMAND}?",
                waitpid(self.pid, Some(WaitPidFlag::WNOHANG)).ok()
            ))),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.disarm.take() {
            // Any byte disarms it; if it is gone already, so be it.
            let _ = pipe.write_all(b"x");
        }
        // It exits at once; reaping it (a few hundred microseconds of
        // address-space teardown) is kept off the run's latency.
        // (Dropping a `Child` neither waits nor kills; only this waits.)
        if !self.reap {
            return;
        }
        let pid = self.pid;
        std::thread::spawn(move || {
            let _ = waitpid(pid, None);
        });
    }
}

/// The `rlm-sandbox` binary: `RLM_SANDBOX_BIN`; this executable if it is
/// `rlm-sandbox`; beside it or one directory up (cargo's test binaries in
/// target/*/deps); else PATH.
pub fn binary() -> Result<PathBuf, WatchdogError> {
    // Set but empty is unset, as for the shell's other path variables.
    if let Some(path) = std::env::var_os(BINARY_VAR).filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().ok();
    if let Some(exe) = exe
        .as_ref()
        .filter(|e| e.file_name() == Some("rlm-sandbox".as_ref()))
    {
        return Ok(exe.clone());
    }
    let beside: Vec<PathBuf> = exe
        .iter()
        .filter_map(|e| e.parent())
        .flat_map(|dir| [dir.join("rlm-sandbox"), dir.join("../rlm-sandbox")])
        .collect();
    beside
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .or_else(|| crate::runtime::find_binary("rlm-sandbox", None))
        .ok_or_else(|| WatchdogError::NoBinary {
            looked: format!("${BINARY_VAR}, {beside:?}, PATH"),
        })
}

/// The watchdog process itself (`rlm-sandbox __watchdog`): reads its run,
/// arms, and waits. Returns the exit code.
pub fn serve() -> i32 {
    serve_on(std::io::stdin().lock(), std::io::stdout().lock())
}

/// A watchdog on its two pipes (exec'd or forked): reads its run, arms,
/// and waits.
fn serve_on(input: impl Read, mut out: impl Write) -> i32 {
    // Only the pipe decides: a hangup or Ctrl-C meant for the driver's
    // terminal must not end the watchdog first.
    for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: SIG_IGN installs no handler code; `signal` only changes
        // this process's disposition.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // The host's OOM killer may pick the driver: the watchdog, a few MB,
    // must survive to clean up (best effort: needs root, as runs do).
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    let watched: Watched = match input.read_until(b'\n', &mut line) {
        Ok(n) if n > 0 => match serde_json::from_slice(&line) {
            Ok(w) => w,
            Err(_) => return 2,
        },
        _ => return 2,
    };
    // A driver that died before it read this is seen at the read below.
    let _ = out.write_all(READY).and_then(|()| out.flush());
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(1..) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // End of file (or a broken pipe): the driver died.
            _ => break,
        }
    }
    clean_up_after_dead_driver(&watched);
    0
}

/// What the driver's guard would have done, for a run whose driver died.
fn clean_up_after_dead_driver(watched: &Watched) {
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut guard = loop {
        match RunGuard::adopt(&watched.state_dir, &watched.id, watched.runtime.clone()) {
            Ok(Some(guard)) => break guard,
            // Cleaned up already (the driver died after its cleanup).
            Err(_) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            // Still locked: a live driver holds the run; not ours to end.
            Ok(None) => return,
        }
    };
    let _ = guard.cleanup(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeKind;

    #[test]
    fn the_watched_run_round_trips_as_one_json_line() {
        let runtime = Runtime {
            kind: RuntimeKind::Runsc,
            path: "/usr/bin/runsc".into(),
            extra_flags: vec!["--platform=systrap".into()],
        };
        let w = Watched::new(Path::new("/run/rlm-sandbox"), "rlms-1-abc", &runtime);
        let line = serde_json::to_string(&w).expect("serialises");
        assert!(!line.contains('\n'));
        let back: Watched = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, w);
        assert_eq!(back.runtime.extra_flags, ["--platform=systrap"]);
        // A runtime this build does not drive is refused, not guessed.
        let crun = line.replace("\"runsc\"", "\"crun\"");
        assert!(serde_json::from_str::<Watched>(&crun).is_err());
    }
}
