//! One run, from bundle to result: create the run's cgroup and bundle,
//! `<runtime> run`, wait with a wall-clock limit while both streams are
//! drained, read the cgroup's counters, clean up, classify, filter.

mod classify;
pub mod drop_dir;
pub(crate) mod events;
pub mod guard;
pub(crate) mod launch;
pub mod machine;
pub mod remote;
pub mod watchdog;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxSeccomp;
use thiserror::Error;

use crate::bundle::spec::{self, Program, SpecInput};
use crate::capture::CapturedStream;
use crate::cgroup::{CgroupError, CgroupLayout, RunCgroup};
use crate::config::Config;
use crate::egress::PendingFilter;
use crate::result::{Ended, ExecResult, RuntimeUsed, Status, Usage};
use crate::runtime::Selection;

pub use classify::{classify, classify_cell, CellEnd, EndedBy, Observed};
pub use guard::{new_run_id, CleanupError, RunDir, RunGuard, ID_PREFIX};
pub use launch::{Launched, Mounts, Plan, StdioPlan};

/// After the driver kills the sandbox, how long the runtime may take to
/// notice before the runtime's own processes are killed too.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for the pipes to close after the runtime exited.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// On cgroup v1, how far below the sandbox's memory limit the driver's
/// parent cgroup is limited (see `Sandbox::run`).
const V1_OOM_MARGIN: u64 = 4 << 20;
/// The longest the supervisor sleeps between checks of the cancel flag.
pub(crate) const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum SuperviseError {
    #[error("cannot prepare run directory under {path}: {err}")]
    RunDir { path: PathBuf, err: std::io::Error },
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Watchdog(#[from] watchdog::WatchdogError),
    #[error("cannot build config.json: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("cannot start {runtime}: {err}")]
    Spawn {
        runtime: String,
        err: std::io::Error,
    },
    #[error("the egress filter could not be built, so no output is released: {0}")]
    Egress(String),
    /// Refused before any sandbox started.
    #[error(transparent)]
    Code(#[from] crate::code::CodeError),
    #[error("interrupted; the sandbox was killed and removed")]
    Interrupted,
    #[error("the run ended ({status}) but cleanup failed: {cleanup}")]
    Cleanup {
        status: &'static str,
        cleanup: CleanupError,
    },
}

/// A run that has ended and been cleaned up: its result and what cleanup
/// could not remove, side by side (a cleanup error never hides how the run
/// ended; the caller decides what fails).
#[derive(Debug)]
pub struct Finished {
    /// `Err` only when no result could be released (the egress filter is
    /// unavailable).
    pub result: Result<ExecResult, SuperviseError>,
    /// The run's status, also when `result` is an error.
    pub status: Status,
    /// What the supervisor ended it for, if it did.
    pub ended_by: Option<EndedBy>,
    pub cleanup: Option<CleanupError>,
}

impl Finished {
    /// A one-shot run's contract: a cleanup error fails the run (naming
    /// how it ended), an interrupted run is [`SuperviseError::Interrupted`].
    pub fn into_result(self) -> Result<ExecResult, SuperviseError> {
        if let Some(cleanup) = self.cleanup {
            return Err(SuperviseError::Cleanup {
                status: self.status.as_str(),
                cleanup,
            });
        }
        if self.ended_by == Some(EndedBy::Cancelled) {
            return Err(SuperviseError::Interrupted);
        }
        self.result
    }
}

/// What every run of one configuration shares: decided once, reused.
pub struct Sandbox {
    pub config: Config,
    pub selection: Selection,
    pub rootfs: PathBuf,
    pub seccomp: LinuxSeccomp,
    pub layout: CgroupLayout,
    pub cgroup_caps: crate::cgroup::Capabilities,
    /// Built on its own thread while the first sandbox runs.
    pub egress: PendingFilter,
    /// A change to every config.json this sandbox writes, made after the
    /// spec is built: only `selftest --controls` sets it (to remove one
    /// layer and watch the rows it protects fail). Crate-private, and no
    /// setting, flag or variable reaches it: a run of user code never
    /// gets it.
    pub(crate) spec_edit: Option<SpecEdit>,
    /// The agent is started elsewhere by this command (a session's only
    /// sandbox then: `Sandbox::remote`); `None` for a local sandbox.
    pub agent_command: Option<remote::AgentCommand>,
}

/// A test-only edit of a sandbox's config.json (as JSON); may write files
/// into the run's input directory (its second argument) for mounts it adds.
pub(crate) type SpecEdit = fn(&mut serde_json::Value, &std::path::Path) -> std::io::Result<()>;

impl Sandbox {
    /// Runs `code` in a fresh sandbox and removes everything afterwards.
    /// `cancel` set from elsewhere (a signal handler) ends the run early.
    /// Code that would not run as written (a NUL byte) is refused before
    /// anything is created.
    pub fn run(&self, code: &[u8], cancel: &AtomicBool) -> Result<ExecResult, SuperviseError> {
        crate::code::validate(code)?;
        self.run_program(Program::Python, code, cancel)
    }

    /// Runs the `rlm-probe` binary (its bytes) as the sandbox's process, for
    /// `selftest`: it calls the syscalls Python cannot reach.
    pub fn run_probe(
        &self,
        probe: &[u8],
        cancel: &AtomicBool,
    ) -> Result<ExecResult, SuperviseError> {
        self.run_program(Program::Probe, probe, cancel)
    }

    /// One run: launch, supervise until it ends, finish. A session (a
    /// later caller) uses the same three steps around its own protocol.
    fn run_program(
        &self,
        program: Program,
        input: &[u8],
        cancel: &AtomicBool,
    ) -> Result<ExecResult, SuperviseError> {
        let start = Instant::now();
        let launched: Launched = self.launch(&Plan::oneshot(program, input))?;
        let (exit, ended_by) = launched.wait(start + self.config.limits.timeout, cancel);
        self.finish(launched, exit, ended_by, start).into_result()
    }

    /// Reads the counters, drains the streams, cleans up and classifies a
    /// run that has ended: its result and any cleanup error, together.
    pub(crate) fn finish(
        &self,
        launched: Launched,
        exit: std::io::Result<ExitStatus>,
        ended_by: Option<EndedBy>,
        start: Instant,
    ) -> Finished {
        let Launched {
            mut guard, readers, ..
        } = launched;
        let dir = guard.dir.clone();
        // Counters first: cleanup removes the cgroup they live in.
        let usage = guard
            .cgroup
            .as_ref()
            .map_or_else(Usage::default, RunCgroup::usage);
        let runtime_error = runtime_log_error(&dir.log());
        let abnormal = ended_by.is_some() || exit.is_err() || runtime_error.is_some();
        // After an abnormal end something may still hold the pipes: it dies
        // now, before the readers are drained. (A runtime that exited by
        // itself took its container with it; cleanup checks again anyway.)
        if abnormal {
            if let Some(cg) = &guard.cgroup {
                cg.kill_all();
            }
        }
        let [stdout, stderr] = readers.map(|r| r.map(|r| r.finish(DRAIN_WAIT)).unwrap_or_default());
        let cleanup = guard.cleanup(abnormal);
        let runtime_error = match (&self.agent_command, &exit) {
            (Some(_), Ok(status)) if ended_by.is_none() => remote::command_error(*status, &stderr),
            _ => runtime_error,
        };

        let (exit_code, runtime_signal) = match &exit {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                (status.code(), status.signal())
            }
            Err(_) => (None, None),
        };
        let observed = Observed {
            exit_code,
            runtime_signal: if ended_by.is_some() {
                None
            } else {
                runtime_signal
            },
            ended_by,
            oom_kills: usage.oom_kills,
            runtime_error: runtime_error.or_else(|| exit.as_ref().err().map(|e| e.to_string())),
        };
        let (status, signal) = classify(&observed);
        let result = self.result(
            status,
            exit_code,
            signal,
            [stdout, stderr],
            usage,
            (status == Status::SandboxError)
                .then_some(observed.runtime_error)
                .flatten(),
            start.elapsed(),
        );
        Finished {
            result,
            status,
            ended_by,
            cleanup: cleanup.err(),
        }
    }

    /// Writes `bundle_dir/config.json` and the program's input (the code as
    /// `input_dir/main.py`, or the probe binary): everything a runtime needs
    /// to run it as this sandbox would. `mounts`, when given, are the files
    /// mounted at `CONTEXTS_DIR/<i>`, their mount points already in the
    /// drop directory `input_dir/contexts` (see [`drop_dir`]).
    pub fn write_bundle(
        &self,
        bundle_dir: &std::path::Path,
        input_dir: &std::path::Path,
        cgroups_path: &str,
        program: Program,
        input: &[u8],
        mounts: Option<&[PathBuf]>,
    ) -> Result<(), SuperviseError> {
        let file = match program {
            Program::Python => Some((spec::CODE_FILE, 0o640)),
            Program::Probe => Some((spec::PROBE_FILE, 0o750)),
            Program::Agent => None,
        };
        if let Some((file, mode)) = file {
            let code_path = input_dir.join(file);
            write(&code_path, input)?;
            guard::share_with_sandbox(&code_path, mode).map_err(|err| SuperviseError::Write {
                path: code_path.clone(),
                err,
            })?;
        }
        let spec = spec::spec(&SpecInput {
            limits: &self.config.limits,
            runtime: self.selection.runtime.kind,
            network_enabled: self.config.network_enabled,
            rootfs: &self.rootfs,
            input_dir,
            cgroups_path,
            seccomp: self.seccomp.clone(),
            program,
            contexts: mounts.unwrap_or_default(),
            drop_dir: mounts.is_some(),
        })?;
        let config_path = bundle_dir.join("config.json");
        let json = match self.spec_edit {
            None => serde_json::to_vec_pretty(&spec),
            Some(edit) => {
                let mut value = serde_json::to_value(&spec).map_err(|e| SuperviseError::Write {
                    path: config_path.clone(),
                    err: e.into(),
                })?;
                edit(&mut value, input_dir).map_err(|err| SuperviseError::Write {
                    path: input_dir.to_path_buf(),
                    err,
                })?;
                serde_json::to_vec_pretty(&value)
            }
        }
        .map_err(|e| SuperviseError::Write {
            path: config_path.clone(),
            err: e.into(),
        })?;
        write(&config_path, &json)
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &self,
        status: Status,
        exit_code: Option<i32>,
        signal: Option<i32>,
        streams: [CapturedStream; 2],
        usage: Usage,
        error: Option<String>,
        elapsed: Duration,
    ) -> Result<ExecResult, SuperviseError> {
        let egress = self.egress.get().map_err(SuperviseError::Egress)?;
        Ok(ExecResult::assemble(
            Ended {
                status,
                exit_code,
                signal,
                error,
            },
            streams,
            egress,
            Some(RuntimeUsed::from(&self.selection)),
            usage,
            elapsed,
        ))
    }
}

fn write(path: &std::path::Path, data: &[u8]) -> Result<(), SuperviseError> {
    std::fs::write(path, data).map_err(|err| SuperviseError::Write {
        path: path.to_path_buf(),
        err,
    })
}

/// The last error-level message of a runtime's JSON log: both runtimes log
/// `{"level":"error","msg":...}` when they fail, and nothing at that level
/// when the container merely exits non-zero.
pub fn runtime_log_error(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    parse_log_errors(&text)
}

fn parse_log_errors(text: &str) -> Option<String> {
    // runsc writes its JSON objects back to back, not one per line.
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(ended_by: Option<EndedBy>, cleanup: bool) -> Finished {
        let result = ExecResult::assemble(
            Ended {
                status: Status::Ok,
                exit_code: Some(0),
                signal: None,
                error: None,
            },
            Default::default(),
            &crate::egress::EgressFilter::new(Default::default()).expect("default filter"),
            None,
            Usage::default(),
            Duration::ZERO,
        );
        Finished {
            result: Ok(result),
            status: Status::Ok,
            ended_by,
            cleanup: cleanup.then(|| CleanupError::Cgroup {
                id: "rlms-x".into(),
                detail: "busy".into(),
            }),
        }
    }

    #[test]
    fn a_cleanup_error_is_reported_beside_the_result() {
        let f = finished(None, true);
        assert!(f.result.is_ok(), "the result survives a cleanup error");
        assert!(f.cleanup.is_some());
        match f.into_result() {
            Err(SuperviseError::Cleanup { status, .. }) => assert_eq!(status, "ok"),
            other => panic!("a one-shot run fails on a cleanup error: {other:?}"),
        }
        let f = finished(Some(EndedBy::Cancelled), false);
        assert!(f.result.is_ok(), "a cancelled run keeps its result");
        assert!(matches!(f.into_result(), Err(SuperviseError::Interrupted)));
        assert!(finished(None, false).into_result().is_ok());
    }

    #[test]
    fn runtime_log_errors() {
        let runc = r#"{"level":"error","msg":"runc run failed: invalid rootfs","time":"x"}
"#;
        assert_eq!(
            parse_log_errors(runc).as_deref(),
            Some("runc run failed: invalid rootfs")
        );
        let runsc = r#"{"msg":"a","level":"error"}{"msg":"b","level":"warning"}{"msg":"c","level":"error"}"#;
        assert_eq!(parse_log_errors(runsc).as_deref(), Some("c"));
        assert_eq!(parse_log_errors(r#"{"msg":"x","level":"info"}"#), None);
        assert_eq!(parse_log_errors(""), None);
    }

    /// The lifecycle is a lower layer: nothing in src/supervise names the
    /// modules built on it (sessions, the CLI, local mode, selftest). The
    /// names are assembled so this test's own text does not match.
    #[test]
    fn supervise_imports_nothing_from_the_layers_above() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/supervise");
        let above = ["session", "cli", "local", "selftest"].map(|m| format!("crate::{m}"));
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("src/supervise") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("source");
            for name in &above {
                assert!(
                    !text.contains(name.as_str()),
                    "{} uses {name}: supervise must not import from the layers above it",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} files under {}", dir.display());
    }
}

/// Why a sandbox could not be prepared (nothing ran).
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Seccomp(#[from] crate::bundle::seccomp::SeccompError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("rlm-sandbox must run as root to start runc or runsc (effective uid is {0})")]
    NotRoot(u32),
}

impl Sandbox {
    /// Decides everything runs of `config` share: runtime, rootfs (built on
    /// first use, reporting `progress`), seccomp profile, cgroup layout.
    pub fn prepare(
        config: Config,
        egress: PendingFilter,
        progress: &mut dyn FnMut(&crate::rootfs::Progress),
    ) -> Result<Sandbox, PrepareError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(PrepareError::NotRoot(euid));
        }
        let selection = crate::runtime::select(&config)?;
        let rootfs = crate::rootfs::resolve(config.rootfs.as_deref(), progress)?;
        let seccomp = match &config.seccomp_profile {
            Some(path) => crate::bundle::seccomp::load(path)?,
            None => crate::bundle::seccomp::default_profile(),
        };
        let layout = CgroupLayout::detect()?;
        let cgroup_caps = layout.capabilities();
        Ok(Sandbox {
            config,
            selection,
            rootfs,
            seccomp,
            layout,
            cgroup_caps,
            egress,
            spec_edit: None,
            agent_command: None,
        })
    }
}
