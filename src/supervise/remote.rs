//! A sandbox that is elsewhere: the agent is started by an operator's
//! command (`session --agent-command CMD`, for example `kubectl exec -i`
//! or `podman exec -i` into a pod that runs our image) and speaks its
//! frames over that command's stdin and stdout. Nothing runs here but the
//! command: no bundle, no cgroup, no watchdog, no runtime.
//!
//! What the local driver reads from cgroups is unavailable: no memory
//! peak, CPU time or OOM-kill counter, so an out-of-memory kill is not
//! told apart from any other SIGKILL (`podman exec` and `kubectl exec`
//! report the killed process's status as exit code 137 = 128 + 9, the same
//! for an OOM kill, `kill -9` and a deleted pod). Only the command's exit
//! status, its stderr and the agent's frames are known.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::events::Events;
use super::launch::{Event, Launched, Plan, StdioPlan};
use super::{new_run_id, PrepareError, RunGuard, Sandbox, SuperviseError};
use crate::capture::{pipe_file, CapturedStream, Reader};
use crate::cgroup::CgroupLayout;
use crate::config::{Config, RuntimeChoice};
use crate::egress::PendingFilter;
use crate::runtime::{Runtime, RuntimeKind, Selection};

/// The shell that runs an agent command: `/bin/sh -c CMD`, so the
/// operator's quoting, variables and redirections mean what they do in a
/// shell. The command is the operator's (the same trust as the
/// orchestrator itself), never the sandbox's.
pub const SHELL: &str = "/bin/sh";

/// How the agent of a remote sandbox is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// Run as `/bin/sh -c COMMAND`.
    pub command: String,
}

impl AgentCommand {
    /// `command`, refused when empty or holding a NUL byte (which no
    /// argv can carry).
    pub fn new(command: &str) -> Result<AgentCommand, String> {
        if command.trim().is_empty() {
            return Err(
                "--agent-command is empty; expected a shell command that starts the \
                 agent and connects its stdin and stdout, e.g. 'kubectl exec -i -n NS POD -- \
                 python3 -I -B -m _rlm_agent'"
                    .into(),
            );
        }
        if command.contains('\0') {
            return Err("--agent-command holds a NUL byte; expected a shell command".into());
        }
        Ok(AgentCommand {
            command: command.to_string(),
        })
    }

    fn argv(&self) -> [&str; 3] {
        [SHELL, "-c", &self.command]
    }
}

impl Sandbox {
    /// A sandbox whose agent `command` starts elsewhere: the
    /// configuration (limits reported, egress filter, state directory for
    /// the run's own directory) without anything a local run needs (root,
    /// a runtime, the rootfs, cgroups). The runtime reported is the one
    /// the configuration asks for, not one observed: the pod's runtime
    /// class decides it.
    pub fn remote(
        config: Config,
        egress: PendingFilter,
        command: AgentCommand,
    ) -> Result<Sandbox, PrepareError> {
        let kind = match config.runtime {
            RuntimeChoice::Runc => RuntimeKind::Runc,
            _ => RuntimeKind::Runsc,
        };
        let selection = Selection {
            runtime: Runtime {
                kind,
                path: PathBuf::from(format!("{SHELL} -c {}", command.command)),
                extra_flags: Vec::new(),
            },
            fallback: false,
        };
        let layout = CgroupLayout::detect()?;
        let cgroup_caps = layout.capabilities();
        Ok(Sandbox {
            config,
            selection,
            rootfs: PathBuf::new(),
            seccomp: crate::bundle::seccomp::default_profile(),
            layout,
            cgroup_caps,
            egress,
            spec_edit: None,
            agent_command: Some(command),
        })
    }

    /// Starts the agent command for a session's `plan` (a channel, no
    /// context files: they cannot be mounted into a sandbox elsewhere).
    /// The run keeps a directory in the state directory (its lock tells
    /// `gc` whether a driver still owns it) and nothing else.
    pub(crate) fn launch_command(
        &self,
        command: &AgentCommand,
        plan: &Plan<'_>,
    ) -> Result<Launched, SuperviseError> {
        let refuse = |what: &str| SuperviseError::Spawn {
            runtime: command.command.clone(),
            err: std::io::Error::other(what.to_string()),
        };
        if plan.stdio != StdioPlan::Channel {
            return Err(refuse("an agent command carries sessions only"));
        }
        let id = new_run_id();
        let state_dir = &self.config.state_dir;
        let mut guard =
            RunGuard::create(state_dir, &id, self.selection.runtime.clone()).map_err(|err| {
                SuperviseError::RunDir {
                    path: state_dir.clone(),
                    err,
                }
            })?;
        if let Some(prepare) = plan.mounts {
            guard.mounts = true;
            let input = guard.dir.input();
            let mounts = prepare(&input).map_err(|err| SuperviseError::Write {
                path: input.clone(),
                err,
            })?;
            if !mounts.is_empty() {
                return Err(refuse(
                    "context files cannot reach an agent started by --agent-command \
                     (they are bind-mounted into a local sandbox); load the data with a \
                     cell or a tool instead",
                ));
            }
        }
        let (tx, events) = Events::channel().map_err(|err| SuperviseError::Spawn {
            runtime: SHELL.to_string(),
            err,
        })?;
        let argv = command.argv();
        let mut child = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, killed whole when the session ends.
            .process_group(0)
            .spawn()
            .map_err(|err| SuperviseError::Spawn {
                runtime: SHELL.to_string(),
                err,
            })?;
        let pgid = Pid::from_raw(child.id() as i32);
        let limits = &self.config.limits;
        let printed = Arc::new(AtomicU64::new(0));
        let stderr = child.stderr.take().map(pipe_file).map(|pipe| {
            let (printed, tx, ceiling) = (printed.clone(), tx.clone(), limits.max_output_bytes);
            Reader::spawn(pipe, limits.max_stdout_bytes, move |n| {
                let before = printed.fetch_add(n as u64, Ordering::Relaxed);
                if before <= ceiling && before + n as u64 > ceiling {
                    tx.send(Event::OutputCeiling);
                }
            })
        });
        let channel = child.stdout.take().map(pipe_file);
        let stdin = child.stdin.take().map(pipe_file);
        let waiter_tx = tx.clone();
        std::thread::spawn(move || {
            waiter_tx.send(Event::Exited(child.wait()));
        });
        Ok(Launched {
            guard,
            id,
            pgid,
            readers: [None, stderr],
            stdin,
            channel,
            events,
        })
    }
}

/// Kills an agent command's process group (the session ended it). The
/// agent itself is elsewhere: it exits when its stdin closes, which the
/// session does first; what it started there lives until its pod or
/// container is removed.
pub(crate) fn kill_command(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// Why an agent command failed, when it exited by itself with a code that
/// is neither success nor a signal's (128 + N, which the exec tools report
/// for a killed process): its code and the last line of its stderr (the
/// tool's own message, "pods \"x\" not found"). `None` otherwise.
pub(crate) fn command_error(status: ExitStatus, stderr: &CapturedStream) -> Option<String> {
    let code = status.code()?;
    if code == 0 || (129..=192).contains(&code) {
        return None;
    }
    let tail = if stderr.tail.is_empty() {
        &stderr.head
    } else {
        &stderr.tail
    };
    let text = String::from_utf8_lossy(tail);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let last: String = last.chars().take(400).collect();
    Some(format!("the agent command exited with code {code}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn stream(text: &str) -> CapturedStream {
        CapturedStream {
            head: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_command_says_its_code_and_last_line() {
        let err = command_error(
            ExitStatus::from_raw(1 << 8),
            &stream("noise\nError from server (NotFound): pods \"p\" not found\n\n"),
        );
        assert_eq!(
            err.as_deref(),
            Some("the agent command exited with code 1: Error from server (NotFound): pods \"p\" not found")
        );
        // Success and a killed process (137 = 128 + SIGKILL) are no
        // command failure: the session says how the agent ended.
        assert_eq!(command_error(ExitStatus::from_raw(0), &stream("x")), None);
        assert_eq!(
            command_error(ExitStatus::from_raw(137 << 8), &stream("x")),
            None
        );
        assert_eq!(command_error(ExitStatus::from_raw(9), &stream("x")), None);
    }

    #[test]
    fn an_empty_command_is_refused_with_the_form() {
        let err = AgentCommand::new("  ").expect_err("an empty command");
        assert!(err.contains("kubectl exec -i"), "{err}");
        assert!(AgentCommand::new("a\0b").is_err());
        assert_eq!(
            AgentCommand::new("x y").expect("a command").argv(),
            [SHELL, "-c", "x y"]
        );
    }
}
