//! `rlm-sandbox session`: one sandbox running the agent, driven by JSON
//! lines on stdin and stdout (docs/PROTOCOL.md). With `--standby` the
//! sandbox starts before its work is known, which a `begin` request
//! brings (src/cli/claim.rs).

use std::sync::Arc;

use anyhow::bail;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use rlm_sandbox::config::ExecutionMode;
use rlm_sandbox::session::prelude::Prelude;
use rlm_sandbox::session::serve::{serve, serve_standby, Output, BEGIN_FORM};
use rlm_sandbox::supervise::remote::AgentCommand;
use rlm_sandbox::supervise::Sandbox;

use super::claim::{longs, parse_begin, ClaimArgs, OwnedDir};
use super::egress::EgressArgs;
use super::k8s_claim::K8sClaimArgs;
use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(flatten)]
    claim: ClaimArgs,
    /// Start the sandbox and its agent now, before the work is known:
    /// print a `standby` event, then take the claim's flags (--context,
    /// --tool, ...) from the first request, {"id":..,"op":"begin",
    /// "args":[...]}, and go on as a session started with them
    /// (docs/PROTOCOL.md, "Standby")
    #[arg(long)]
    standby: bool,
    /// Python source the agent runs in the user's namespace before the
    /// session starts (with --standby: before the `standby` event, so a
    /// claim finds its imports and definitions done); each sandbox runs it
    /// on its own. At most 1 MiB; an exception in it fails the start
    #[arg(long, value_name = "FILE", conflicts_with = "agent_command")]
    prelude_file: Option<std::path::PathBuf>,
    /// Run no local sandbox: start the agent with this shell command
    /// (`/bin/sh -c CMD`) and speak its frames over the command's stdin
    /// and stdout, e.g. 'podman exec -i CTR python3 -I -B -m _rlm_agent'
    /// or 'kubectl exec -i -n NS POD -- python3 -I -B -m _rlm_agent'
    /// (docs/KUBERNETES.md, "Sessions over a command")
    #[arg(long, value_name = "CMD", conflicts_with = "standby")]
    agent_command: Option<String>,
    /// Run the session on this `rlm-sandbox serve` socket instead of
    /// starting a sandbox here: this process relays stdin and stdout; an
    /// unreachable server is an error, never a local fallback
    /// [RLM_SANDBOX_SERVER]
    #[arg(long, value_name = "PATH", env = "RLM_SANDBOX_SERVER")]
    server: Option<std::path::PathBuf>,
    /// With --server: seconds to wait for the server's admission before
    /// it answers busy (else the server's --wait)
    #[arg(long, value_name = "SECONDS", requires = "server")]
    wait: Option<String>,
    #[command(flatten)]
    k8s: K8sClaimArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    egress: EgressArgs,
}

pub fn run(args: &SessionArgs, matches: Option<&ArgMatches>) -> anyhow::Result<i32> {
    if let Some(server) = &args.server {
        // The command line after `session`, as the server parses it.
        let argv: Vec<String> = std::env::args().skip(2).collect();
        let forwarded = super::server_client::session_args(&argv)?;
        return super::server_client::session(server, forwarded);
    }
    if args.standby {
        return run_standby(args, matches);
    }
    let _owned = OwnedDir(args.claim.owned_context_dir.clone());
    if args.k8s.k8s_claim.is_some() && !args.claim.contexts.context.is_empty() {
        bail!(
            "--context: context files cannot reach a claimed pod (they are bind-mounted \
             into a local sandbox); load the data with a cell or a tool instead"
        );
    }
    if args.k8s.dry_run {
        return args.k8s.print_plan();
    }
    let config = args.sandbox.config()?;
    if config.mode == ExecutionMode::Local {
        bail!("a session needs a sandbox: --mode local (no isolation) offers no sessions");
    }
    if args.agent_command.is_none() && args.k8s.k8s_claim.is_none() {
        // A local sandbox: before any thread, signal handler or secret
        // (see `prefork`).
        rlm_sandbox::supervise::watchdog::prefork();
    }
    let (mut options, backend) = (args.claim.options(), args.claim.backend()?);
    options.prelude = prelude(args)?;
    let cancel = super::cancel_on_signals()?;
    // The session indexes its contexts' echo itself (they are its own).
    let egress = args
        .egress
        .to_pending_without_contexts(&args.claim.contexts.context)?;
    // Deleted when dropped: after the session ends, however it ends.
    let mut claimed = None;
    let agent_command = match (&args.agent_command, args.k8s.k8s_claim.is_some()) {
        (Some(command), _) => Some(command.clone()),
        (None, true) => {
            let made = args.k8s.claim(&cancel)?;
            let command = made.agent_command.clone();
            claimed = Some(made);
            Some(command)
        }
        (None, false) => None,
    };
    let sandbox = match &agent_command {
        Some(command) => {
            let command = AgentCommand::new(command).map_err(anyhow::Error::msg)?;
            Sandbox::remote(config, egress, command)?
        }
        None => Sandbox::prepare(config, egress, &mut super::print_progress)?,
    };
    let sandbox = Arc::new(sandbox);
    if let Some(warning) = sandbox.selection.warning() {
        eprintln!("{warning}");
    }
    // Read by the session's thread when a poll finds it readable.
    let input = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned()?;
    let code = serve(
        sandbox,
        options,
        backend,
        input,
        Output::new(std::io::stdout()),
        cancel,
    );
    drop(claimed);
    Ok(code)
}

/// `session --standby`: the claim's flags come with `begin`; on the
/// command line (not from RLM_* variables) they are refused.
fn run_standby(args: &SessionArgs, matches: Option<&ArgMatches>) -> anyhow::Result<i32> {
    if let Some(matches) = matches {
        // The owned context directory may come with the standby: a pool
        // makes it before the claim (off its path), and the standby
        // removes it at its end, claimed or not.
        for (id, long) in claim_ids()
            .into_iter()
            .filter(|(_, l)| l != "owned-context-dir")
        {
            if matches.value_source(&id) == Some(ValueSource::CommandLine) {
                bail!(
                    "--{long}: with --standby the claim's flags come in the begin request's \
                     args, not on the command line ({BEGIN_FORM})"
                );
            }
        }
    }
    let config = args.sandbox.config()?;
    if config.mode == ExecutionMode::Local {
        bail!("a session needs a sandbox: --mode local (no isolation) offers no sessions");
    }
    let _owned = OwnedDir(args.claim.owned_context_dir.clone());
    let prelude = prelude(args)?;
    // Before any thread or signal handler (see `prefork`).
    rlm_sandbox::supervise::watchdog::prefork();
    let cancel = super::cancel_on_signals()?;
    let egress = args.egress.to_pending_without_contexts(&[])?;
    let sandbox = Arc::new(Sandbox::prepare(
        config,
        egress,
        &mut super::print_progress,
    )?);
    if let Some(warning) = sandbox.selection.warning() {
        eprintln!("{warning}");
    }
    // Every flag of the session but the claim's: set at standby.
    let claim = ClaimArgs::names();
    let standby: Vec<String> = longs(SessionArgs::augment_args(clap::Command::new("session")))
        .into_iter()
        .filter(|n| !claim.contains(n))
        .collect();
    // Once, before the sandbox starts: the parser's first run costs more
    // than the next (its code paged in), and the claim's is on a claim's
    // time to interactive. These args have no side effects.
    let _ = parse_begin(&["--tool".into(), "warm:a".into()], &standby);
    let input = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned()?;
    Ok(serve_standby(
        sandbox,
        prelude,
        |begin_args: &[String]| parse_begin(begin_args, &standby),
        input,
        Output::new(std::io::stdout()),
        cancel,
    ))
}

/// `--prelude-file`, read and checked before any sandbox starts.
fn prelude(args: &SessionArgs) -> anyhow::Result<Option<Prelude>> {
    match &args.prelude_file {
        Some(path) => Ok(Some(Prelude::read(path).map_err(anyhow::Error::msg)?)),
        None => Ok(None),
    }
}

/// The claim's arguments: (clap id, long name).
fn claim_ids() -> Vec<(String, String)> {
    ClaimArgs::augment_args(clap::Command::new("claim"))
        .get_arguments()
        .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_string())))
        .collect()
}
