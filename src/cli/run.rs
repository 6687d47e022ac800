//! `rlm-sandbox run`: one-shot code in a fresh sandbox.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rlm_sandbox::code::CodeError;
use rlm_sandbox::config::{ConfigError, ExecutionMode};
use rlm_sandbox::result::{ExecResult, Status};
use rlm_sandbox::supervise::{PrepareError, Sandbox, SuperviseError};

use super::egress::{ContextArgs, EgressArgs};
use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Python code to run (instead of FILE or stdin).
    #[arg(short = 'c', value_name = "CODE", conflicts_with = "file")]
    code: Option<String>,
    /// File with the Python code; "-" or nothing (without -c) reads stdin.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print one JSON result object instead of passing the streams through.
    #[arg(long)]
    json: bool,
    /// Run through this `rlm-sandbox serve` socket instead of starting a
    /// sandbox here (the server's pools and limits apply); an unreachable
    /// server is an error, never a local fallback [RLM_SANDBOX_SERVER]
    #[arg(long, value_name = "PATH", env = "RLM_SANDBOX_SERVER")]
    server: Option<PathBuf>,
    /// With --server: seconds to wait for the server's admission before
    /// it answers busy (else the server's --wait)
    #[arg(long, value_name = "SECONDS", requires = "server")]
    wait: Option<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    egress: EgressArgs,
    #[command(flatten)]
    contexts: ContextArgs,
}

/// With --json a driver error is one JSON object too, `{"error": {"kind",
/// "message", ...}}` on stdout, so a program reading the output always gets
/// JSON; the exit code stays 2.
pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    match run_inner(args) {
        Err(err) if args.json => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, &serde_json::json!({ "error": json_error(&err) }))?;
            writeln!(out)?;
            eprintln!("rlm-sandbox: error: {err:#}");
            Ok(super::EXIT_DRIVER_ERROR)
        }
        other => other,
    }
}

/// The `error` object of a driver error: a stable `kind`, the message, and
/// the facts a program needs (the NUL byte's offset).
fn json_error(err: &anyhow::Error) -> serde_json::Value {
    let code = err
        .downcast_ref::<CodeError>()
        .or_else(|| match err.downcast_ref() {
            Some(SuperviseError::Code(c)) => Some(c),
            _ => None,
        });
    let kind = if let Some(c) = code {
        c.kind()
    } else if err.downcast_ref::<ConfigError>().is_some() {
        "config"
    } else if err.downcast_ref::<PrepareError>().is_some() {
        "prepare"
    } else {
        "driver"
    };
    let mut object = serde_json::json!({ "kind": kind, "message": format!("{err:#}") });
    if let Some(CodeError::NulByte { offset }) = code {
        object["offset"] = (*offset).into();
    }
    object
}

fn run_inner(args: &RunArgs) -> anyhow::Result<i32> {
    if let Some(server) = &args.server {
        return run_on_server(args, server);
    }
    let config = args.sandbox.config()?;
    if config.mode == ExecutionMode::Oci {
        // Before any thread, signal handler or code (see `prefork`).
        rlm_sandbox::supervise::watchdog::prefork();
    }
    let code = read_code(args)?;
    // Refused before anything is prepared (the library checks again).
    rlm_sandbox::code::validate(&code)?;
    let cancel = super::cancel_on_signals()?;
    let outcome = match config.mode {
        ExecutionMode::Local => {
            eprintln!("{}", rlm_sandbox::local::DANGER);
            let egress = args.egress.to_filter(&args.contexts.context)?;
            rlm_sandbox::local::run(&config.limits, &egress, &code, &cancel)
        }
        ExecutionMode::Oci => {
            let egress = args.egress.to_pending(&args.contexts.context)?;
            let sandbox = Sandbox::prepare(config, egress, &mut super::print_progress)?;
            if let Some(warning) = sandbox.selection.warning() {
                eprintln!("{warning}");
            }
            sandbox.run(&code, &cancel)
        }
    };
    let result = match outcome {
        Ok(result) => result,
        Err(SuperviseError::Interrupted) => {
            eprintln!("rlm-sandbox: interrupted; the sandbox was killed and removed");
            return Ok(130);
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &result)?;
        writeln!(out)?;
    } else {
        pass_through(&result)?;
    }
    Ok(exit_code(&result))
}

/// `run --server`: the code and limits go to the server; its result is
/// printed and exits as a local run's would.
fn run_on_server(args: &RunArgs, server: &std::path::Path) -> anyhow::Result<i32> {
    if !args.contexts.context.is_empty() {
        anyhow::bail!(
            "--context cannot be used with run --server (a run's contexts only flag echo; \
             use session --server --context FILE)"
        );
    }
    let code = String::from_utf8(read_code(args)?).map_err(|e| {
        anyhow::anyhow!(
            "the code is not UTF-8 (byte {}); the server takes text",
            e.utf8_error().valid_up_to()
        )
    })?;
    let mut forwarded = args.sandbox.cli_args();
    forwarded.extend(args.wait.iter().map(|w| format!("--wait={w}")));
    let result = match super::server_client::run(server, &code, forwarded)? {
        Ok(result) => result,
        Err(error) => {
            let kind = error["kind"].as_str().unwrap_or("driver");
            let message = error["message"].as_str().unwrap_or("no message");
            if args.json {
                let mut out = std::io::stdout().lock();
                serde_json::to_writer(&mut out, &serde_json::json!({ "error": error }))?;
                writeln!(out)?;
            }
            eprintln!("rlm-sandbox: error: the server refused the run ({kind}): {message}");
            return Ok(super::EXIT_DRIVER_ERROR);
        }
    };
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &result)?;
        writeln!(out)?;
    } else {
        let text = |k: &str| result[k].as_str().unwrap_or_default().to_string();
        std::io::stdout().write_all(text("stdout").as_bytes())?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(text("stderr").as_bytes())?;
    }
    Ok(exit_code_of(&result))
}

/// [`exit_code`] of a result as JSON.
fn exit_code_of(result: &serde_json::Value) -> i32 {
    let n = |k: &str| result[k].as_i64().map(|v| v as i32);
    match result["status"].as_str().unwrap_or("sandbox_error") {
        "ok" => 0,
        "error" => n("exit_code").unwrap_or(1),
        "timeout" => 124,
        "oom" => 137,
        "killed" => 128 + n("signal").unwrap_or(9),
        "output_limit" => 123,
        _ => 125,
    }
}

fn read_code(args: &RunArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(code) = &args.code {
        return Ok(code.clone().into_bytes());
    }
    match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).with_context(|| format!("cannot read code file {}", path.display()))
        }
        _ => {
            let mut code = Vec::new();
            std::io::stdin()
                .read_to_end(&mut code)
                .context("cannot read code from stdin")?;
            Ok(code)
        }
    }
}

fn pass_through(result: &ExecResult) -> anyhow::Result<()> {
    std::io::stdout().write_all(result.stdout.as_bytes())?;
    std::io::stdout().flush()?;
    let mut err = std::io::stderr().lock();
    err.write_all(result.stderr.as_bytes())?;
    let note = match result.status {
        Status::Ok | Status::Error => None,
        Status::Timeout => Some("timed out; the sandbox was killed".to_string()),
        Status::Oom => Some("killed by the out-of-memory killer (memory limit)".to_string()),
        Status::Killed => Some(format!("killed by signal {}", result.signal.unwrap_or(0))),
        Status::OutputLimit => Some("printed more than the output ceiling; killed".to_string()),
        Status::SandboxError => Some(format!(
            "the sandbox failed: {}",
            result.error.as_deref().unwrap_or("unknown runtime error")
        )),
    };
    if let Some(note) = note {
        writeln!(err, "rlm-sandbox: {note}")?;
    }
    for (stream, dropped) in [
        ("stdout", result.truncated.stdout),
        ("stderr", result.truncated.stderr),
    ] {
        if dropped > 0 {
            writeln!(
                err,
                "rlm-sandbox: {stream}: {dropped} bytes dropped between head and tail"
            )?;
        }
    }
    for f in &result.findings {
        writeln!(
            err,
            "rlm-sandbox: egress: {} on {:?} at bytes {}..{}: {:?}",
            f.kind, f.stream, f.span[0], f.span[1], f.action
        )?;
    }
    Ok(())
}

/// The documented exit code of each status (see `rlm-sandbox run --help`).
pub fn exit_code(result: &ExecResult) -> i32 {
    match result.status {
        Status::Ok => 0,
        Status::Error => result.exit_code.unwrap_or(1),
        Status::Timeout => 124,
        Status::Oom => 137,
        Status::Killed => 128 + result.signal.unwrap_or(9),
        Status::OutputLimit => 123,
        Status::SandboxError => 125,
    }
}
