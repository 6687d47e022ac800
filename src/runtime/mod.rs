//! The OCI runtimes: which one a run uses, and the exact argv of each call.
//!
//! The argv builders are pure so tests compare them whole; the supervisor
//! spawns what they return.

mod detect;
pub mod gvisor;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{Config, RuntimeChoice};

pub use detect::{find_binary, version_of};

/// The two runtimes rlm-sandbox drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// gVisor: a user-space kernel between the sandbox and the host.
    Runsc,
    /// Plain namespaces and cgroups on the host kernel.
    Runc,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Runsc => "runsc",
            RuntimeKind::Runc => "runc",
        }
    }

    /// Whether `run` (not detached, no terminal) copies the container's
    /// stdio through pipes of its own: runc does, from goroutines of its
    /// waiting process, a hop through one more process each way (a round
    /// trip into an idle sandbox: scripts/bench_runc_relay.py); runsc hands
    /// the descriptors to its sandbox. Descriptors passed with
    /// `--preserve-fds` reach runc's container as they are.
    pub fn relays_stdio(self) -> bool {
        self == RuntimeKind::Runc
    }
}

/// A runtime binary ready to be called.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Runtime {
    pub kind: RuntimeKind,
    pub path: PathBuf,
    /// Extra global flags (runsc only), after the ones we always pass.
    pub extra_flags: Vec<String>,
}

/// The runtime a run will use and whether it is a fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub runtime: Runtime,
    /// runc was used because runsc was wanted but missing.
    pub fallback: bool,
}

impl Selection {
    /// The warning printed on stderr for a fallback.
    pub fn warning(&self) -> Option<String> {
        self.fallback.then(|| {
            format!(
                "rlm-sandbox: WARNING: runsc (gVisor) not found; falling back to runc at {}. \
                 The sandbox shares the host kernel. Install runsc (scripts/setup installs the current gVisor) \
                 or set RLM_DOCKER_RUNTIME=runc to silence this warning.",
                self.runtime.path.display()
            )
        })
    }
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(
        "runsc (gVisor) not found{where_}; install it (scripts/setup installs the current gVisor), set RLM_RUNSC_PATH, \
         or allow the unsafe fallback to runc with RLM_ALLOW_UNSAFE_RUNTIME=true"
    )]
    RunscMissing { where_: String },
    #[error("runc not found{where_}; install it (apt-get install runc) or set RLM_RUNC_PATH")]
    RuncMissing { where_: String },
    #[error(
        "no OCI runtime found: neither runsc nor runc is installed; scripts/setup installs both"
    )]
    NoneFound,
}

fn where_(configured: Option<&Path>) -> String {
    match configured {
        Some(p) => format!(" at {} (configured)", p.display()),
        None => " in PATH, /usr/sbin, /usr/bin or /usr/local/bin".to_string(),
    }
}

/// Picks the runtime for `config`: `auto` prefers runsc and falls back to
/// runc; an explicit runsc that is missing is an error unless the unsafe
/// fallback is allowed.
pub fn select(config: &Config) -> Result<Selection, RuntimeError> {
    let runsc = find_binary("runsc", config.runsc_path.as_deref());
    let runc = find_binary("runc", config.runc_path.as_deref());
    select_with(config, runsc, runc)
}

/// The decision of [`select`], given what was found (pure).
pub fn select_with(
    config: &Config,
    runsc: Option<PathBuf>,
    runc: Option<PathBuf>,
) -> Result<Selection, RuntimeError> {
    let make = |kind, path, fallback| Selection {
        runtime: Runtime {
            kind,
            path,
            extra_flags: if kind == RuntimeKind::Runsc {
                config.runsc_flags.clone()
            } else {
                Vec::new()
            },
        },
        fallback,
    };
    match (config.runtime, runsc, runc) {
        (RuntimeChoice::Runc, _, Some(runc)) => Ok(make(RuntimeKind::Runc, runc, false)),
        (RuntimeChoice::Runc, _, None) => Err(RuntimeError::RuncMissing {
            where_: where_(config.runc_path.as_deref()),
        }),
        (_, Some(runsc), _) => Ok(make(RuntimeKind::Runsc, runsc, false)),
        (RuntimeChoice::Auto, None, Some(runc)) => Ok(make(RuntimeKind::Runc, runc, true)),
        (RuntimeChoice::Auto, None, None) => Err(RuntimeError::NoneFound),
        (RuntimeChoice::Runsc, None, Some(runc)) if config.allow_unsafe_runtime => {
            Ok(make(RuntimeKind::Runc, runc, true))
        }
        (RuntimeChoice::Runsc, None, _) => Err(RuntimeError::RunscMissing {
            where_: where_(config.runsc_path.as_deref()),
        }),
    }
}

/// A `Command` for an argv from the builders below: an environment of
/// nothing but a fixed PATH (the runtime inherits none of the driver's
/// variables, secrets included), stdin closed.
pub fn command(argv: &[OsString]) -> std::process::Command {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::null());
    cmd
}

impl Runtime {
    /// Global flags, before the subcommand. Each run has its own state root.
    fn global(&self, state_root: &Path, log: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            self.path.clone().into(),
            "--root".into(),
            state_root.into(),
            "--log".into(),
            log.into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.kind == RuntimeKind::Runsc {
            // Without --oci-seccomp runsc silently ignores linux.seccomp.
            argv.push("--oci-seccomp".into());
            argv.extend(self.extra_flags.iter().map(OsString::from));
        }
        argv
    }

    /// `run`: create, start and wait in one call; the runtime deletes the
    /// container (and its leaf cgroup) when the process exits.
    pub fn run_argv(
        &self,
        state_root: &Path,
        log: &Path,
        bundle: &Path,
        id: &str,
        network_enabled: bool,
        preserve_fds: usize,
    ) -> Vec<OsString> {
        let mut argv = self.global(state_root, log);
        if self.kind == RuntimeKind::Runsc {
            // An empty netns in config.json alone makes runsc fail; it needs
            // to be told that there is no network.
            argv.push(
                if network_enabled {
                    "--network=host"
                } else {
                    "--network=none"
                }
                .into(),
            );
        }
        argv.push("run".into());
        if preserve_fds > 0 {
            // Only runc has the flag (`runsc run` has none).
            argv.extend(["--preserve-fds".into(), preserve_fds.to_string().into()]);
        }
        argv.extend(["--bundle".into(), bundle.into(), id.into()]);
        argv
    }

    /// `kill <id> KILL` (runc: all processes of the container).
    pub fn kill_argv(&self, state_root: &Path, log: &Path, id: &str) -> Vec<OsString> {
        let mut argv = self.global(state_root, log);
        argv.push("kill".into());
        if self.kind == RuntimeKind::Runc {
            argv.push("--all".into());
        }
        argv.extend([id.into(), "KILL".into()]);
        argv
    }

    /// `delete --force <id>`: stops and removes whatever is left.
    pub fn delete_argv(&self, state_root: &Path, log: &Path, id: &str) -> Vec<OsString> {
        let mut argv = self.global(state_root, log);
        argv.extend(["delete".into(), "--force".into(), id.into()]);
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(runtime: RuntimeChoice, allow_unsafe: bool) -> Config {
        Config {
            runtime,
            allow_unsafe_runtime: allow_unsafe,
            ..Config::default()
        }
    }

    fn found(p: &str) -> Option<PathBuf> {
        Some(PathBuf::from(p))
    }

    #[test]
    fn auto_prefers_runsc_and_falls_back_loudly() {
        let c = config(RuntimeChoice::Auto, false);
        let s = select_with(&c, found("/usr/bin/runsc"), found("/usr/sbin/runc")).expect("runsc");
        assert_eq!((s.runtime.kind, s.fallback), (RuntimeKind::Runsc, false));
        assert_eq!(s.warning(), None);
        let s = select_with(&c, None, found("/usr/sbin/runc")).expect("fallback");
        assert_eq!((s.runtime.kind, s.fallback), (RuntimeKind::Runc, true));
        assert!(s.warning().expect("warns").contains("WARNING"));
        assert!(matches!(
            select_with(&c, None, None),
            Err(RuntimeError::NoneFound)
        ));
    }

    #[test]
    fn explicit_runsc_missing_is_an_error_unless_unsafe_is_allowed() {
        let err = select_with(
            &config(RuntimeChoice::Runsc, false),
            None,
            found("/usr/sbin/runc"),
        )
        .expect_err("refused");
        assert!(
            err.to_string().contains("RLM_ALLOW_UNSAFE_RUNTIME=true"),
            "{err}"
        );
        let s = select_with(
            &config(RuntimeChoice::Runsc, true),
            None,
            found("/usr/sbin/runc"),
        )
        .expect("allowed");
        assert_eq!((s.runtime.kind, s.fallback), (RuntimeKind::Runc, true));
    }

    #[test]
    fn explicit_runc_is_no_fallback() {
        let s = select_with(
            &config(RuntimeChoice::Runc, false),
            found("/r"),
            found("/usr/sbin/runc"),
        )
        .expect("runc");
        assert_eq!((s.runtime.kind, s.fallback), (RuntimeKind::Runc, false));
    }

    fn strings(argv: Vec<OsString>) -> Vec<String> {
        argv.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn runsc_always_gets_network_none_and_oci_seccomp() {
        let rt = Runtime {
            kind: RuntimeKind::Runsc,
            path: "/usr/bin/runsc".into(),
            extra_flags: vec!["--platform=ptrace".into()],
        };
        let argv = rt.run_argv(
            Path::new("/s"),
            Path::new("/l"),
            Path::new("/b"),
            "rlms-1",
            false,
            0,
        );
        assert_eq!(
            strings(argv),
            [
                "/usr/bin/runsc",
                "--root",
                "/s",
                "--log",
                "/l",
                "--log-format",
                "json",
                "--oci-seccomp",
                "--platform=ptrace",
                "--network=none",
                "run",
                "--bundle",
                "/b",
                "rlms-1"
            ]
        );
    }

    #[test]
    fn runc_argv() {
        let rt = Runtime {
            kind: RuntimeKind::Runc,
            path: "/usr/sbin/runc".into(),
            extra_flags: vec![],
        };
        let (s, l) = (Path::new("/s"), Path::new("/l"));
        assert_eq!(
            strings(rt.run_argv(s, l, Path::new("/b"), "rlms-1", false, 0)),
            [
                "/usr/sbin/runc",
                "--root",
                "/s",
                "--log",
                "/l",
                "--log-format",
                "json",
                "run",
                "--bundle",
                "/b",
                "rlms-1"
            ]
        );
        assert_eq!(
            strings(rt.run_argv(s, l, Path::new("/b"), "rlms-1", false, 2))[7..],
            ["run", "--preserve-fds", "2", "--bundle", "/b", "rlms-1"]
        );
        assert_eq!(
            strings(rt.kill_argv(s, l, "rlms-1"))[7..],
            ["kill", "--all", "rlms-1", "KILL"]
        );
        assert_eq!(
            strings(rt.delete_argv(s, l, "rlms-1"))[7..],
            ["delete", "--force", "rlms-1"]
        );
    }
}
