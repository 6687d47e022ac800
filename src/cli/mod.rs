//! Command-line interface: one file per subcommand, no logic beyond
//! turning arguments into library calls and results into output.

mod bundle;
mod check;
mod claim;
mod controls;
mod egress;
mod filter;
mod gc;
mod k8s;
mod k8s_claim;
mod k8s_gc;
mod limits;
mod rootfs;
mod rootfs_image;
mod run;
mod selftest;
mod serve;
mod server_client;
mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rlm_sandbox::config::{Config, Key, Layers};

/// Run untrusted Python in a gVisor (runsc) or runc sandbox, without a
/// Docker daemon.
///
/// Configuration: defaults < preset < config file (--config / RLM_CONFIG,
/// a JSON object whose keys are the RLM_* names without the prefix, in lower
/// case) < RLM_* environment variables < flags.
#[derive(Debug, Parser)]
#[command(name = "rlm-sandbox", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked
// (a one-shot run does not build the parsers of the nine others).
#[command(defer = true)]
enum Command {
    /// Run Python code once in a fresh sandbox and remove it afterwards.
    ///
    /// Code comes from -c CODE, a FILE, or stdin. By default the sandbox's
    /// stdout and stderr pass through and the exit code is the code's own;
    /// when the driver ended the run it exits 124 (timeout), 137 (out of
    /// memory), 128+N (killed by signal N), 123 (output ceiling), 125 (the
    /// sandbox failed to run) or 130 (interrupted). --json prints one result
    /// object instead (see the README's result contract).
    Run(run::RunArgs),
    /// Start a stateful sandboxed Python REPL driven by JSON lines.
    ///
    /// One request per line on stdin ({"id", "op": exec | vars | get |
    /// add_context | reset | stats | close}), one response per request on
    /// stdout, plus events: "ready" first, and "call" when the code calls
    /// llm_query, rlm_query or a --tool (answered with {"op":
    /// "call_result"}). Each --context FILE is mounted read-only and
    /// defined as `context_N` and `ctxs[N]`. End of stdin, close, SIGTERM
    /// or SIGINT remove the sandbox. With --standby the sandbox starts
    /// before its work is known: a "standby" event first, then one
    /// {"op": "begin", "args": [...]} request brings the --context, --tool
    /// and call flags. The protocol is docs/PROTOCOL.md.
    Session(Box<session::SessionArgs>),
    /// Serve sessions and runs to every orchestrator process on this host
    /// from one set of pools, on a Unix socket, with admission limits.
    ///
    /// Each connection opens with one JSON line: {"op": "session", "args":
    /// [...]} then the session protocol on the same connection, {"op":
    /// "run", "code": "...", "args": [...]} answered with run's result, or
    /// {"op": "stats"}. Beyond the limits a request waits up to its --wait,
    /// then gets {"ok": false, "error": {"kind": "busy", ...}}. Clients:
    /// `run --server PATH`, `session --server PATH`. See docs/SERVE.md.
    Serve(Box<serve::ServeArgs>),
    /// Show this host's security posture: runtimes, cgroups, limits, seccomp,
    /// rootfs. Exits 1 when the configured policy cannot be met.
    Check(check::CheckArgs),
    /// Remove what killed drivers left behind: containers, processes,
    /// cgroups and run directories with the rlms- prefix; with --k8s, the
    /// SandboxClaims of killed `session --k8s-claim` orchestrators.
    Gc(gc::GcArgs),
    /// Build or inspect the Python rootfs.
    #[command(subcommand)]
    Rootfs(rootfs::RootfsCommand),
    /// Write the OCI bundle a run would use, without running it.
    Bundle(bundle::BundleArgs),
    /// Kubernetes (agent-sandbox under gVisor): render this configuration's
    /// policy as manifests, or check a set of them (docs/KUBERNETES.md).
    #[command(subcommand)]
    K8s(k8s::K8sCommand),
    /// Apply the egress filter (secrets, entropy, context echo) to stdin.
    Filter(filter::FilterArgs),
    /// Run the attack catalogue of the threat model (docs/SECURITY.md) on
    /// this host, on every installed runtime (or --runtime runsc|runc|both),
    /// and print attack, runtime, expected, observed, PASS/FAIL. Exits 1 on
    /// any failure.
    Selftest(selftest::SelftestArgs),
}

/// The sandbox settings every subcommand that runs or checks a sandbox
/// takes. Each flag overrides its RLM_* variable.
#[derive(Debug, Args, Clone, Default)]
pub struct SandboxArgs {
    /// JSON config file (lowest layer above the preset).
    #[arg(long, value_name = "FILE", env = "RLM_CONFIG")]
    config: Option<PathBuf>,
    /// maximum (runsc required) | standard (runsc, runc fallback) | development [RLM_PRESET]
    #[arg(long, value_name = "PRESET")]
    preset: Option<String>,
    /// oci (alias docker) | local (NO isolation) [RLM_EXECUTION_MODE]
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    /// auto | runsc | runc [RLM_DOCKER_RUNTIME]
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<String>,
    /// Allow runc when runsc was asked for and is missing [RLM_ALLOW_UNSAFE_RUNTIME]
    #[arg(long)]
    allow_unsafe_runtime: bool,
    /// Share the host's network (off by default; refused by --preset maximum) [RLM_NETWORK_ENABLED]
    #[arg(long)]
    network: bool,
    #[command(flatten)]
    limits: limits::LimitArgs,
    /// Python rootfs directory (default: built into the cache on first use) [RLM_ROOTFS]
    #[arg(long, value_name = "DIR")]
    rootfs: Option<String>,
    /// seccomp profile, OCI linux.seccomp JSON (default: built in) [RLM_SECCOMP_PROFILE]
    #[arg(long, value_name = "FILE")]
    seccomp_profile: Option<String>,
    /// Directory for run bundles and runtime state [RLM_STATE_DIR]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// runsc binary [RLM_RUNSC_PATH]
    #[arg(long, value_name = "PATH")]
    runsc_path: Option<String>,
    /// runc binary [RLM_RUNC_PATH]
    #[arg(long, value_name = "PATH")]
    runc_path: Option<String>,
    /// Extra runsc global flags, e.g. "--platform=systrap" [RLM_RUNSC_FLAGS]
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    runsc_flags: Option<String>,
}

impl SandboxArgs {
    fn flags(&self) -> BTreeMap<Key, String> {
        let mut flags = self.limits.flags();
        let mut put = |key, value: &Option<String>| {
            if let Some(v) = value {
                flags.insert(key, v.clone());
            }
        };
        put(Key::Preset, &self.preset);
        put(Key::ExecutionMode, &self.mode);
        put(Key::Runtime, &self.runtime);
        put(Key::Rootfs, &self.rootfs);
        put(Key::SeccompProfile, &self.seccomp_profile);
        put(Key::StateDir, &self.state_dir);
        put(Key::RunscPath, &self.runsc_path);
        put(Key::RuncPath, &self.runc_path);
        put(Key::RunscFlags, &self.runsc_flags);
        if self.allow_unsafe_runtime {
            flags.insert(Key::AllowUnsafeRuntime, "true".into());
        }
        if self.network {
            flags.insert(Key::NetworkEnabled, "true".into());
        }
        flags
    }

    /// These flags as a command line (for `run --server`: the server
    /// takes the limits and refuses the rest by name).
    pub fn cli_args(&self) -> Vec<String> {
        let mut out = self.limits.cli_args();
        for (flag, value) in [
            (
                "--config",
                &self.config.as_ref().map(|p| p.display().to_string()),
            ),
            ("--preset", &self.preset),
            ("--mode", &self.mode),
            ("--runtime", &self.runtime),
            ("--rootfs", &self.rootfs),
            ("--seccomp-profile", &self.seccomp_profile),
            ("--state-dir", &self.state_dir),
            ("--runsc-path", &self.runsc_path),
            ("--runc-path", &self.runc_path),
            ("--runsc-flags", &self.runsc_flags),
        ] {
            if let Some(v) = value {
                out.push(format!("{flag}={v}"));
            }
        }
        for (flag, set) in [
            ("--allow-unsafe-runtime", self.allow_unsafe_runtime),
            ("--network", self.network),
        ] {
            if set {
                out.push(flag.to_string());
            }
        }
        out
    }

    /// The config file given (--config or RLM_CONFIG).
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// The merged configuration of every layer.
    pub fn config(&self) -> anyhow::Result<Config> {
        let layers = Layers::collect(
            self.config.as_deref(),
            |name| std::env::var(name).ok(),
            &self.flags(),
        )?;
        Ok(layers.resolve()?)
    }
}

/// Exit code for a driver failure (bad configuration, missing runtime...).
pub const EXIT_DRIVER_ERROR: i32 = 2;

pub fn main() -> i32 {
    // Internal: the watchdog every run starts (`rlm-sandbox __watchdog`,
    // its name its only argument), which cleans the run up if its driver
    // dies (src/supervise/watchdog.rs). It starts while the runtime starts
    // on the same cores, so it is not a subcommand of the parser below:
    // building that whole parser is work it does not need.
    let mut args = std::env::args_os().skip(1);
    if let (Some(name), None) = (args.next(), args.next()) {
        if name == rlm_sandbox::supervise::watchdog::SUBCOMMAND {
            return rlm_sandbox::supervise::watchdog::serve();
        }
    }
    // The matches are kept: `session --standby` asks where a value came
    // from (the command line, or an RLM_* variable).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let outcome = match &cli.command {
        Command::Run(args) => run::run(args),
        Command::Session(args) => session::run(args, matches.subcommand_matches("session")),
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Rootfs(cmd) => rootfs::run(cmd),
        Command::Filter(args) => filter::run(args),
        Command::Bundle(args) => bundle::run(args),
        Command::K8s(cmd) => k8s::run(cmd),
        Command::Selftest(args) => selftest::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rlm-sandbox: error: {err:#}");
            EXIT_DRIVER_ERROR
        }
    }
}

/// A flag set by SIGINT, SIGTERM or SIGHUP: the driver then ends its
/// sandbox in order (killed, removed) instead of dying with it.
pub fn cancel_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use anyhow::Context;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, cancel.clone())
            .context("cannot install the signal handler")?;
    }
    Ok(cancel)
}

/// Progress of a rootfs build, one line each on stderr.
pub fn print_progress(p: &rlm_sandbox::rootfs::Progress) {
    eprintln!("rlm-sandbox: rootfs: {p}");
}
