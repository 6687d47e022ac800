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
    let config = args.sandbox.config()?;
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
