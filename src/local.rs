//! `local` mode: the host's python with NO isolation, for development only.
//! Same capture, timeout, classification and egress filter as a sandbox, so
//! a caller sees the same result shape; never the default.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::capture::{pipe_file, Reader};
use crate::config::Limits;
use crate::egress::EgressFilter;
use crate::result::{Ended, ExecResult, Usage};
use crate::supervise::machine::{Action, Supervisor};
use crate::supervise::{classify, EndedBy, Observed, SuperviseError, KILL_GRACE};

/// How often the child is polled for its exit.
const POLL: Duration = Duration::from_millis(5);

/// Printed on stderr before every local run.
pub const DANGER: &str = "rlm-sandbox: DANGER: RLM_EXECUTION_MODE=local runs the code on this \
host with NO isolation: no sandbox, no network block, no resource limits beyond the timeout. \
Never use it for untrusted code or in production.";

pub fn run(
    limits: &Limits,
    egress: &EgressFilter,
    code: &[u8],
    cancel: &AtomicBool,
) -> Result<ExecResult, SuperviseError> {
    crate::code::validate(code)?;
    let start = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("rlms-local-")
        .tempdir()
        .map_err(|err| SuperviseError::RunDir {
            path: std::env::temp_dir(),
            err,
        })?;
    let path = dir.path().join("main.py");
    std::fs::write(&path, code).map_err(|err| SuperviseError::Write {
        path: path.clone(),
        err,
    })?;
    let mut child = Command::new("python3")
        .arg("-I")
        .arg("-u")
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|err| SuperviseError::Spawn {
            runtime: "python3".into(),
            err,
        })?;
    let pgid = Pid::from_raw(child.id() as i32);
    let readers = [
        child.stdout.take().map(pipe_file),
        child.stderr.take().map(pipe_file),
    ]
    .map(|p| p.map(|p| Reader::spawn(p, limits.max_stdout_bytes, |_| {})));
    // The same supervision as a sandbox's, on the process group: killed at
    // the deadline or on cancel, killed again every second it lingers.
    let mut sup = Supervisor::new(start + limits.timeout, None, KILL_GRACE);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|err| SuperviseError::Spawn {
            runtime: "python3".into(),
            err,
        })? {
            break status;
        }
        let now = Instant::now();
        if cancel.load(Ordering::Relaxed) {
            kill_on(sup.end(EndedBy::Cancelled, now), pgid);
        }
        kill_on(sup.tick(now), pgid);
        std::thread::sleep(POLL.min(sup.due().saturating_duration_since(now)));
    };
    let ended_by = sup.ended_by();
    let _ = killpg(pgid, Signal::SIGKILL);
    let [stdout, stderr] = readers.map(|r| {
        r.map(|r| r.finish(Duration::from_secs(1)))
            .unwrap_or_default()
    });
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status.code().or_else(|| status.signal().map(|s| 128 + s));
    let (status, signal) = classify(&Observed {
        exit_code,
        ended_by,
        ..Observed::default()
    });
    if ended_by == Some(EndedBy::Cancelled) {
        return Err(SuperviseError::Interrupted);
    }
    Ok(ExecResult::assemble(
        Ended {
            status,
            exit_code,
            signal,
            error: None,
        },
        [stdout, stderr],
        egress,
        None,
        Usage::default(),
        start.elapsed(),
    ))
}

/// A kill (or its repeat) of the local process group.
fn kill_on(action: Action, pgid: Pid) {
    if matches!(action, Action::Kill | Action::Escalate) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}
