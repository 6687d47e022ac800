//! Starting a run's sandbox, and supervising it until it ends: the steps
//! every run shares, between `Sandbox::run_program`'s preparation and its
//! finish.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

pub(crate) use super::events::Event;
use super::events::Events;
use super::machine::{Action, Supervisor};
use super::{
    new_run_id, watchdog, EndedBy, RunGuard, Sandbox, SuperviseError, KILL_GRACE, TICK,
    V1_OOM_MARGIN,
};
use crate::bundle::spec::{agent_channel_fds, Program};
use crate::capture::{pipe_file, Reader};
use crate::cgroup::RunCgroup;

/// A started sandbox: what removes it, the runtime's process group, the
/// readers of its streams and the events that end it. With
/// [`StdioPlan::Channel`] the caller has its stdin, and its stdout as a
/// raw channel. A caller that polls its own descriptors polls the events'
/// wake pipe with them ([`Events::wake_fd`]).
pub struct Launched {
    pub(crate) guard: RunGuard,
    pub(crate) id: String,
    pub(crate) pgid: Pid,
    pub(crate) readers: [Option<Reader>; 2],
    pub(crate) stdin: Option<std::fs::File>,
    pub(crate) channel: Option<std::fs::File>,
    pub(crate) events: Events,
}

/// How the sandbox's standard streams are wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioPlan {
    /// No stdin; stdout and stderr captured (bounded) for the result.
    Captured,
    /// stdin a pipe and stdout a raw channel, both the caller's
    /// ([`Launched::stdin`], [`Launched::channel`]); stderr captured.
    Channel,
}

/// Prepares the run's drop directory (`input/contexts`, created by it) for
/// the files the caller mounts (mount points, copies) and returns the file
/// to mount at each `CONTEXTS_DIR/<i>`. The drop directory then becomes a
/// shared mount point: files mounted there later reach the running sandbox
/// ([`super::drop_dir`]).
pub type Mounts<'a> = &'a dyn Fn(&Path) -> std::io::Result<Vec<PathBuf>>;

/// What to start: the program and its input, how its streams are wired,
/// and the files the caller mounts into it.
pub struct Plan<'a> {
    pub program: Program,
    pub input: &'a [u8],
    pub stdio: StdioPlan,
    pub mounts: Option<Mounts<'a>>,
}

impl<'a> Plan<'a> {
    /// A one-shot run of `program` on `input`: streams captured, nothing
    /// mounted.
    pub fn oneshot(program: Program, input: &'a [u8]) -> Self {
        Plan {
            program,
            input,
            stdio: StdioPlan::Captured,
            mounts: None,
        }
    }
}

impl Sandbox {
    /// Creates the run (directory, watchdog, cgroup, bundle) and starts the
    /// runtime on it, its streams read on their own threads.
    pub(crate) fn launch(&self, plan: &Plan<'_>) -> Result<Launched, SuperviseError> {
        if let Some(command) = &self.agent_command {
            return self.launch_command(command, plan);
        }
        let id = new_run_id();
        let runtime = &self.selection.runtime;
        let state_dir = &self.config.state_dir;
        let mut guard = RunGuard::create(state_dir, &id, runtime.clone()).map_err(|err| {
            SuperviseError::RunDir {
                path: state_dir.clone(),
                err,
            }
        })?;
        let dir = guard.dir.clone();
        // Started first: it starts while we write the cgroup and bundle.
        guard.watchdog = Some(watchdog::Watchdog::start(&watchdog::Watched::new(
            state_dir, &id, runtime,
        ))?);
        // In the guard before anything else can fail: it removes the cgroup.
        let cgroup = guard.cgroup.insert(RunCgroup::create(&self.layout, &id)?);
        if !self.cgroup_caps.hierarchical_oom_counter {
            // v1 counts an OOM kill only in the runtime's leaf, which the
            // runtime deletes on exit; an OOM taken at our parent's limit is
            // heard by the parent's eventfd. The margin below the leaf's
            // limit exceeds the largest single charge (a 2 MiB huge page),
            // so the parent's limit is always the one hit.
            let limit = self.config.limits.memory_bytes;
            cgroup.limit_memory(limit.saturating_sub(V1_OOM_MARGIN))?;
        }
        let cgroups_path = cgroup.container_path();
        let input_dir = dir.input();
        let mounts = match plan.mounts {
            Some(prepare) => {
                guard.mounts = true;
                let drop = input_dir.join(crate::bundle::spec::CONTEXTS_SUBDIR);
                let err = |err| SuperviseError::Write {
                    path: drop.clone(),
                    err,
                };
                let files = prepare(&input_dir).map_err(err)?;
                // Before the runtime starts: what is mounted there later
                // propagates into the sandbox (the guard unmounts it).
                super::drop_dir::make_shared(&drop).map_err(err)?;
                Some(files)
            }
            None => None,
        };
        self.write_bundle(
            &dir.bundle(),
            &input_dir,
            &cgroups_path,
            plan.program,
            plan.input,
            mounts.as_deref(),
        )?;

        let channel = plan.stdio == StdioPlan::Channel;
        // The agent's channel past the runtime's stdio relay, if it has one.
        let direct = channel
            .then(|| agent_channel_fds(plan.program, runtime.kind))
            .flatten();
        let argv = runtime.run_argv(
            &dir.state_root(),
            &dir.log(),
            &dir.bundle(),
            &id,
            self.config.network_enabled,
            direct.map_or(0, |fds| fds.len()),
        );
        let spawn_err = |err| SuperviseError::Spawn {
            runtime: runtime.path.display().to_string(),
            err,
        };
        let mut command = crate::runtime::command(&argv);
        // The host's ends of a channel passed past the relay.
        let mut host_ends = None;
        match direct {
            Some(fds) => {
                let (agent_in, to_agent) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
                let (from_agent, agent_out) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
                pass_fds(&mut command, [(agent_in, fds[0]), (agent_out, fds[1])]);
                // The agent's fd 1 is /dev/null from its first line.
                command.stdout(Stdio::null());
                host_ends = Some((to_agent, from_agent));
            }
            None => {
                if channel {
                    command.stdin(Stdio::piped());
                }
                command.stdout(Stdio::piped());
            }
        }
        let spawned = command
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches the
            // driver only, which then ends the run in order; and the whole
            // group can be killed if the runtime hangs.
            .process_group(0)
            .spawn();
        // The command holds the agent's ends of a passed channel: closed
        // here, so each end's only other holder is the sandbox.
        drop(command);
        let mut child = spawned.map_err(spawn_err)?;
        let pgid = Pid::from_raw(child.id() as i32);
        // The watchdog has been starting since the run began; checking it
        // only now keeps its start off the run's latency. Its run is in its
        // pipe already, so a driver that dies before this line is cleaned
        // up too; a watchdog that failed ends the run before any output.
        if let Err(err) = guard.watchdog.as_mut().map_or(Ok(()), |w| w.armed()) {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            let _ = guard.cleanup(true);
            return Err(err.into());
        }

        let (tx, events) = match Events::channel() {
            Ok(channel) => channel,
            Err(err) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                let _ = guard.cleanup(true);
                return Err(SuperviseError::Spawn {
                    runtime: runtime.path.display().to_string(),
                    err,
                });
            }
        };
        let limits = &self.config.limits;
        let printed = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().map(pipe_file);
        let (stdout, channel, stdin) = match host_ends {
            Some((to_agent, from_agent)) => (None, Some(from_agent.into()), Some(to_agent.into())),
            None if channel => (None, stdout, child.stdin.take().map(pipe_file)),
            None => (stdout, None, None),
        };
        let readers = [stdout, child.stderr.take().map(pipe_file)].map(|pipe| {
            let (printed, tx, ceiling) = (printed.clone(), tx.clone(), limits.max_output_bytes);
            pipe.map(|pipe| {
                Reader::spawn(pipe, limits.max_stdout_bytes, move |n| {
                    let before = printed.fetch_add(n as u64, Ordering::Relaxed);
                    if before <= ceiling && before + n as u64 > ceiling {
                        tx.send(Event::OutputCeiling);
                    }
                })
            })
        });
        std::thread::spawn(move || {
            tx.send(Event::Exited(child.wait()));
        });

        Ok(Launched {
            guard,
            id,
            pgid,
            readers,
            stdin,
            channel,
            events,
        })
    }
}

impl Launched {
    /// Waits until the runtime exits, killing the sandbox at `deadline`,
    /// at the output ceiling or when `cancel` is set, and the runtime too
    /// if it hangs after that. Returns how it exited and what ended it.
    pub(crate) fn wait(
        &self,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> (std::io::Result<ExitStatus>, Option<EndedBy>) {
        let mut sup = Supervisor::new(deadline, None, KILL_GRACE);
        let exit: std::io::Result<ExitStatus> = loop {
            let now = Instant::now();
            let wait = sup.due().saturating_duration_since(now).min(TICK);
            match self.events.recv_timeout(wait) {
                Ok(Event::Exited(status)) => break status,
                Ok(Event::OutputCeiling) => {
                    self.act(sup.end(EndedBy::OutputLimit, Instant::now()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if cancel.load(Ordering::Relaxed) {
                        self.act(sup.end(EndedBy::Cancelled, now));
                    }
                    self.act(sup.tick(now));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(std::io::Error::other("runtime waiter thread vanished"))
                }
            }
        };
        (exit, sup.ended_by())
    }

    /// Does what the supervisor says to the sandbox and its runtime.
    fn act(&self, action: Action) {
        match action {
            Action::Wait | Action::Interrupt => {}
            Action::Kill => {
                match &self.guard.cgroup {
                    Some(cg) => drop(cg.kill_all()),
                    // An agent command (src/supervise/remote.rs).
                    None => super::remote::kill_command(self.pgid),
                }
            }
            Action::Escalate => {
                // The runtime did not exit after its sandbox was killed:
                // it hangs. Kill it and everything it started.
                let _ = killpg(self.pgid, Signal::SIGKILL);
                crate::procs::kill_mentioning(&self.id);
            }
        }
    }
}

/// Gives the runtime `fds`, each at its target number (below 10); std
/// makes every other descriptor close-on-exec.
fn pass_fds(command: &mut Command, fds: [(OwnedFd, RawFd); 2]) {
    debug_assert!(fds.iter().all(|(_, to)| (3..10).contains(to)));
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe calls (fcntl, dup2) on descriptors the closure
    // owns; it allocates nothing (an io::Error from an errno does not).
    unsafe {
        command.pre_exec(move || {
            // Each source first out of the way of every target (one may
            // sit on the other's target), then onto its target: dup2's
            // copy is not close-on-exec, the moved ones are.
            let mut moved = [-1; 2];
            for (slot, (fd, _)) in moved.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (from, (_, to)) in moved.iter().zip(&fds) {
                if libc::dup2(*from, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
