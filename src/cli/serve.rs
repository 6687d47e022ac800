//! `rlm-sandbox serve`: the server of src/serve/ on a Unix socket, and
//! the parsing of its requests' `args` by the command line's own flag
//! definitions. A client chooses its sandbox's limits (`--memory`,
//! `--cpus`, ...) and its claim's flags (`--context`, `--tool`, ...);
//! everything else that shapes a sandbox (runtime, rootfs, seccomp,
//! network, the egress filter) is the server's, set on its command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, Parser};
use rlm_sandbox::config::table::Table;
use rlm_sandbox::config::{ExecutionMode, Key, Layers};
use rlm_sandbox::pool::{Pool, PoolSettings};
use rlm_sandbox::serve::{Listener, Log, Resolve, RunPlan, ServeSettings, SessionPlan, Setting};
use rlm_sandbox::supervise::Sandbox;

use super::claim::ClaimArgs;
use super::egress::EgressArgs;
use super::limits::LimitArgs;
use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Unix socket to listen on (created with mode 0600; a stale one
    /// is replaced, anything else there refused) [RLM_SANDBOX_SERVER]
    #[arg(long, value_name = "PATH", env = "RLM_SANDBOX_SERVER")]
    socket: PathBuf,
    /// Log one JSON line per event on stdout (else human lines on stderr)
    #[arg(long)]
    json: bool,
    /// Sandboxes serving clients at once [RLM_SERVE_MAX_LIVE, default 16]
    #[arg(long, value_name = "N")]
    max_live: Option<String>,
    /// The sum of the memory limits of the sandboxes serving clients, e.g.
    /// 8g [RLM_SERVE_MAX_MEMORY, default half the host's memory]
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Requests waiting for admission; one more is refused as busy
    /// [RLM_SERVE_MAX_WAITING, default 64]
    #[arg(long, value_name = "N")]
    max_waiting: Option<String>,
    /// Seconds a request waits for admission unless it says (its own
    /// --wait) [RLM_SERVE_WAIT, default 30]
    #[arg(long, value_name = "SECONDS")]
    wait: Option<String>,
    /// Seconds running cells may go on after SIGTERM [RLM_SERVE_GRACE, default 10]
    #[arg(long, value_name = "SECONDS")]
    grace: Option<String>,
    /// Also serve these uids, comma-separated [RLM_SERVE_ALLOW_UID]
    #[arg(long, value_name = "UIDS")]
    allow_uid: Option<String>,
    /// Also serve peers of these primary gids [RLM_SERVE_ALLOW_GID]
    #[arg(long, value_name = "GIDS")]
    allow_gid: Option<String>,
    /// Started sandboxes kept per configuration [RLM_POOL_SIZE, default 2]
    #[arg(long, value_name = "N")]
    pool_size: Option<String>,
    /// Seconds an unclaimed configuration keeps its sandboxes [RLM_POOL_IDLE_TIMEOUT]
    #[arg(long, value_name = "SECONDS")]
    pool_idle_timeout: Option<String>,
    /// Started sandboxes kept across configurations [RLM_POOL_MAX, default 16]
    #[arg(long, value_name = "N")]
    pool_max: Option<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    egress: EgressArgs,
}

impl ServeArgs {
    fn settings(&self) -> anyhow::Result<(ServeSettings, PoolSettings)> {
        use rlm_sandbox::pool::Setting as P;
        let serve = ServeSettings::from_env_and_flags(&[
            (Setting::MaxLive, &self.max_live),
            (Setting::MaxMemory, &self.max_memory),
            (Setting::MaxWaiting, &self.max_waiting),
            (Setting::Wait, &self.wait),
            (Setting::Grace, &self.grace),
            (Setting::AllowUid, &self.allow_uid),
            (Setting::AllowGid, &self.allow_gid),
        ])?;
        let pool = PoolSettings::from_env_and_flags(&[
            (P::Size, &self.pool_size),
            (P::IdleTimeout, &self.pool_idle_timeout),
            (P::Max, &self.pool_max),
        ])?;
        Ok((serve, pool))
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<i32> {
    let (settings, pool_settings) = args.settings()?;
    let base = Base {
        sandbox: args.sandbox.clone(),
        egress: args.egress.clone(),
    };
    // The server's own configuration, prepared now: a bad setting fails
    // here, and its shelf starts filling before the first client.
    let sandbox = base.prepare(&BTreeMap::new())?;
    if let Some(warning) = sandbox.selection.warning() {
        eprintln!("{warning}");
    }
    let term = super::cancel_on_signals()?;
    let listener = Listener::bind(&args.socket)?;
    let pool = Pool::new(pool_settings);
    pool.keep(&sandbox);
    let resolve = Requests {
        base,
        prepared: Mutex::new(BTreeMap::from([(BTreeMap::new(), sandbox)])),
    };
    Ok(rlm_sandbox::serve::serve(
        listener,
        settings,
        pool,
        Box::new(resolve),
        Log { json: args.json },
        term,
    ))
}

/// The server's own settings, which every request's sandbox starts from.
struct Base {
    sandbox: SandboxArgs,
    egress: EgressArgs,
}

impl Base {
    /// A sandbox of the server's settings with a client's `limits` on top.
    fn prepare(&self, limits: &BTreeMap<Key, String>) -> anyhow::Result<Arc<Sandbox>> {
        let mut flags = self.sandbox.flags();
        flags.extend(limits.iter().map(|(k, v)| (*k, v.clone())));
        let layers = Layers::collect(
            self.sandbox.config_file(),
            |name| std::env::var(name).ok(),
            &flags,
        )?;
        let config = layers.resolve()?;
        if config.mode == ExecutionMode::Local {
            bail!("serve needs a sandbox: --mode local (no isolation) is not served");
        }
        let egress = self.egress.to_pending_without_contexts(&[])?;
        let sandbox = Sandbox::prepare(config, egress, &mut super::print_progress)
            .context("cannot prepare the sandbox")?;
        Ok(Arc::new(sandbox))
    }
}

/// Prepared sandboxes kept per set of client limits, at most this many.
const MAX_PREPARED: usize = 64;

struct Requests {
    base: Base,
    prepared: Mutex<BTreeMap<BTreeMap<Key, String>, Arc<Sandbox>>>,
}

impl Requests {
    fn sandbox(&self, limits: &Limits) -> Result<Arc<Sandbox>, String> {
        let flags = limits.flags();
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = prepared.get(&flags) {
            return Ok(s.clone());
        }
        let sandbox = self.base.prepare(&flags).map_err(|e| format!("{e:#}"))?;
        if prepared.len() < MAX_PREPARED {
            prepared.insert(flags, sandbox.clone());
        }
        Ok(sandbox)
    }
}

/// The sandbox flags a client may choose: its limits, and its wait.
#[derive(Debug, Args, Clone, Default)]
struct Limits {
    #[command(flatten)]
    sandbox: LimitArgs,
    /// Seconds to wait for admission (else the server's --wait)
    #[arg(long, value_name = "SECONDS", value_parser = wait_seconds)]
    wait: Option<Duration>,
}

impl Limits {
    fn flags(&self) -> BTreeMap<Key, String> {
        self.sandbox.flags()
    }
}

fn wait_seconds(s: &str) -> Result<Duration, String> {
    rlm_sandbox::serve::seconds(s)
        .ok_or_else(|| format!("expected seconds in [0, 86400], got {s:?}"))
}

/// A session request's args.
#[derive(Debug, Parser)]
#[command(
    name = "session",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct SessionLine {
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    claim: ClaimArgs,
}

/// A run request's args.
#[derive(Debug, Parser)]
#[command(
    name = "run",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct RunLine {
    #[command(flatten)]
    limits: Limits,
}

/// Claim flags a client may not give: they would run a command, reach a
/// URL or read a variable, or remove a directory, as the server.
const SERVER_ONLY_CLAIM: [&str; 5] = [
    "llm_command",
    "llm_endpoint",
    "llm_model",
    "llm_api_key_env",
    "owned_context_dir",
];

/// The accepted flags of a request, for errors.
fn accepted(command: clap::Command) -> String {
    let names: Vec<String> = super::claim::longs(command)
        .into_iter()
        .filter(|n| !SERVER_ONLY_CLAIM.contains(&n.replace('-', "_").as_str()))
        .map(|n| format!("--{n}"))
        .collect();
    format!("a client sets only {}", names.join(", "))
}

/// Parses `args` as `P`'s flags; the error names the flag and what a
/// client may set (the server's own settings by name).
fn parse<P: Parser>(args: &[String]) -> Result<(P, clap::ArgMatches), String> {
    let command = P::command();
    let matches = command.clone().try_get_matches_from(args).map_err(|e| {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        if e.kind() == ErrorKind::UnknownArgument {
            let arg = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
            return format!(
                "{name} is not a client's to set (the server's own settings shape its sandboxes); {}",
                accepted(P::command())
            );
        }
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    })?;
    let parsed = P::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    Ok((parsed, matches))
}

impl Resolve for Requests {
    fn session(&self, args: &[String]) -> Result<SessionPlan, String> {
        let (line, matches) = parse::<SessionLine>(args)?;
        for id in SERVER_ONLY_CLAIM {
            if matches.value_source(id) == Some(ValueSource::CommandLine) {
                return Err(format!(
                    "--{} is the server's to set, not a client's (it would act as the server); \
                     calls go to the client over the connection; {}",
                    id.replace('_', "-"),
                    accepted(SessionLine::command())
                ));
            }
        }
        let sandbox = self.sandbox(&line.limits)?;
        let begin = line.claim.begin().map_err(|e| format!("{e:#}"))?;
        Ok(SessionPlan {
            sandbox,
            options: begin.options,
            backend: begin.backend,
            wait: line.limits.wait,
            keep: Box::new(begin.keep),
        })
    }

    fn run(&self, args: &[String]) -> Result<RunPlan, String> {
        let (line, _) = parse::<RunLine>(args)?;
        Ok(RunPlan {
            sandbox: self.sandbox(&line.limits)?,
            wait: line.limits.wait,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_client_sets_limits_and_claim_flags_only() {
        let (line, _) = parse::<SessionLine>(&args(&[
            "--memory",
            "256m",
            "--wait",
            "2.5",
            "--tool",
            "f:x",
            "--rlm-calls",
        ]))
        .unwrap();
        assert_eq!(line.limits.sandbox.memory.as_deref(), Some("256m"));
        assert_eq!(line.limits.wait, Some(Duration::from_millis(2500)));
        assert_eq!(line.limits.flags().len(), 1);
        for bad in [
            "--runtime",
            "--rootfs=/x",
            "--network",
            "--runsc-path",
            "--config",
            "--policy",
        ] {
            let e = parse::<SessionLine>(&args(&[bad])).err().unwrap();
            let name = bad.split('=').next().unwrap();
            assert!(e.contains(&format!("{name} is not a client's")), "{e}");
            assert!(e.contains("--memory") && e.contains("--context"), "{e}");
            assert!(!e.contains("--llm-command"), "{e}");
        }
        let e = parse::<RunLine>(&args(&["--context", "/etc/passwd"]))
            .err()
            .unwrap();
        assert!(e.contains("--context is not a client's"), "{e}");
        let e = parse::<RunLine>(&args(&["--wait=-1"])).err().unwrap();
        assert!(e.contains("\"-1\"") || e.contains("'-1'"), "{e}");
    }
}
