//! A one-shot run in a session's sandbox: the code run as `rlm-sandbox
//! run` runs it (the agent's `"namespace": "script"`), its result the
//! run's contract ([`ExecResult`]). What a one-shot run drawn from a
//! standby (a pool's) gives.

use std::time::Duration;

use super::frames::{CellNamespace, CellOptions};
use super::{SentCell, Session, SessionError};
use crate::result::{ExecResult, RuntimeUsed, Status};
use crate::supervise::{classify, Observed};

/// SIGKILL, and the exit status the runtimes report for a death by it.
const KILL_SIGNAL: i32 = 9;
const KILLED_EXIT: i32 = 128 + KILL_SIGNAL;

impl Session {
    /// Runs `code` as `rlm-sandbox run` would (a fresh `__main__`, the
    /// file name `rlm-sandbox run` gives it, `SystemExit` as the exit
    /// status) by `timeout` (the sandbox's if `None`), and returns what
    /// `run` returns. A script the driver stopped (timeout, output
    /// ceiling) or whose sandbox died leaves the session dead, its
    /// sandbox killed and removed as a run's is; its exit code and signal
    /// are then the sandbox's.
    pub fn run_script(
        &mut self,
        code: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecResult, SessionError> {
        let sent = self.send_script(code)?;
        self.finish_script(sent, timeout)
    }

    /// Sends a script (its code checked first) without waiting for it, as
    /// [`Session::send_exec`] sends a cell.
    pub fn send_script(&mut self, code: &str) -> Result<SentCell, SessionError> {
        crate::code::validate(code.as_bytes()).map_err(|e| SessionError::Request(e.to_string()))?;
        let options = CellOptions {
            namespace: CellNamespace::Script,
            ..CellOptions::default()
        };
        self.send_exec(code, &options)
    }

    /// Waits for a sent script's end: its result, as [`Session::run_script`].
    pub fn finish_script(
        &mut self,
        sent: SentCell,
        timeout: Option<Duration>,
    ) -> Result<ExecResult, SessionError> {
        let cell = self.finish_exec(sent, timeout)?;
        let mut result = ExecResult {
            status: cell.status,
            exit_code: cell.exit_code,
            signal: None,
            stdout: cell.stdout,
            stderr: cell.stderr,
            truncated: cell.truncated,
            findings: cell.findings,
            runtime: Some(RuntimeUsed::from(&self.sandbox.selection)),
            duration_ms: cell.duration_ms,
            usage: self.usage(),
            error: None,
        };
        match cell.status {
            Status::Ok | Status::Error if !cell.session_dead => {
                let (status, signal) = classify(&Observed {
                    // A done without one: the agent failed to run it.
                    exit_code: Some(cell.exit_code.unwrap_or(1)),
                    oom_kills: Some(0),
                    ..Observed::default()
                });
                result.status = status;
                result.signal = signal;
                result.exit_code = Some(cell.exit_code.unwrap_or(1));
            }
            _ => {
                let stopped = !cell.session_dead;
                if stopped {
                    self.die(format!("the script ended: {}", cell.status.as_str()), None);
                }
                if let Some(ended) = &self.ended {
                    result.exit_code = ended.exit_code;
                    result.signal = ended.signal;
                    result.usage = ended.usage;
                }
                if stopped {
                    // Stopped by the driver (timeout, output ceiling) and
                    // then killed, as a run is: a run reports the kill.
                    // (The agent may exit by itself first, once its pipe
                    // closes: that exit is not the script's.)
                    result.exit_code = Some(KILLED_EXIT);
                    result.signal = Some(KILL_SIGNAL);
                }
                result.error = cell.error.filter(|_| cell.status == Status::SandboxError);
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use crate::bundle::spec::{CODE_FILE, INPUT_DIR};

    /// The agent names a script's code as `rlm-sandbox run` names its
    /// file, so tracebacks read the same.
    #[test]
    fn the_agent_names_a_script_as_run_names_its_file() {
        let agent = include_str!("../../rootfs-builder/python/_rlm_agent/script.py");
        let line = format!("SCRIPT_FILE = \"{INPUT_DIR}/{CODE_FILE}\"");
        assert!(agent.contains(&line), "script.py lacks {line}");
    }
}
