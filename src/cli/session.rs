//! `rlm-sandbox session`: one sandbox running the agent, driven by JSON
//! lines on stdin and stdout (docs/PROTOCOL.md).

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use rlm_sandbox::config::{parse_size, ExecutionMode};
use rlm_sandbox::session::serve::{serve, Backend, Output};
use rlm_sandbox::session::{CallLimits, SessionOptions, Tool};
use rlm_sandbox::supervise::Sandbox;

use super::egress::EgressArgs;
use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Sub-calls (prompts and tool calls) per session
    #[arg(long, value_name = "N", env = "RLM_MAX_LLM_CALLS", default_value_t = CallLimits::default().max_calls)]
    max_llm_calls: u64,
    /// Calls answered at once; a batch runs concurrently up to it
    #[arg(long, value_name = "N", env = "RLM_LLM_MAX_IN_FLIGHT", default_value_t = CallLimits::default().max_in_flight,
          value_parser = in_flight)]
    llm_max_in_flight: usize,
    /// Bytes of one prompt, e.g. 4m
    #[arg(long, value_name = "SIZE", env = "RLM_LLM_MAX_PROMPT_BYTES", default_value = "4m", value_parser = size)]
    llm_max_prompt_bytes: u64,
    /// Seconds a call may take, from the code's call to its answer
    #[arg(long, value_name = "SECONDS", env = "RLM_LLM_TIMEOUT", default_value = "300", value_parser = seconds)]
    llm_timeout: Duration,
    /// The orchestrator answers rlm_query itself (else rlm_query is sent as llm_query)
    #[arg(long)]
    rlm_calls: bool,
    /// A host function the code may call, NAME or NAME:PARAM,PARAM
    /// (repeatable); answered by the orchestrator as a "tool" call
    #[arg(long = "tool", value_name = "NAME[:PARAMS]", value_parser = tool)]
    tools: Vec<Tool>,
    /// Contexts above this size are not loaded into `context`; the code
    /// reads them through `ctx`
    #[arg(long, value_name = "SIZE", env = "RLM_CONTEXT_LOAD_BYTES", default_value = "64m", value_parser = size)]
    context_load_bytes: u64,
    /// Seconds an interrupted cell (timeout, output ceiling) may take to
    /// stop before the sandbox is killed
    #[arg(long, value_name = "SECONDS", env = "RLM_INTERRUPT_GRACE", default_value = "2", value_parser = seconds)]
    interrupt_grace: Duration,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    egress: EgressArgs,
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("expected a size such as 4m, 512k or 1048576, got {s:?}"))
}

fn in_flight(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| format!("expected a number of calls from 1 to 1024, got {s:?}"))
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds in (0, 86400], got {s:?}"))
}

fn tool(s: &str) -> Result<Tool, String> {
    let (name, params) = s.split_once(':').unwrap_or((s, ""));
    let ident = |x: &str| {
        !x.is_empty()
            && !x.starts_with(|c: char| c.is_ascii_digit())
            && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let params: Vec<String> = params
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if !ident(name) || !params.iter().all(|p| ident(p)) {
        return Err(format!(
            "expected NAME or NAME:PARAM,PARAM with Python identifiers, got {s:?}"
        ));
    }
    Ok(Tool {
        name: name.to_string(),
        params,
    })
}

pub fn run(args: &SessionArgs) -> anyhow::Result<i32> {
    let config = args.sandbox.config()?;
    if config.mode == ExecutionMode::Local {
        bail!("a session needs a sandbox: --mode local (no isolation) offers no sessions");
    }
    let options = SessionOptions {
        contexts: args
            .egress
            .context
            .iter()
            .map(|p| (p.clone(), None))
            .collect(),
        tools: args.tools.clone(),
        calls: CallLimits {
            max_calls: args.max_llm_calls,
            max_in_flight: args.llm_max_in_flight,
            max_prompt_bytes: usize::try_from(args.llm_max_prompt_bytes).unwrap_or(usize::MAX),
            timeout: args.llm_timeout,
        },
        rlm_calls: args.rlm_calls,
        max_load_bytes: args.context_load_bytes,
        grace: args.interrupt_grace,
        ..SessionOptions::default()
    };
    let cancel = super::cancel_on_signals()?;
    let egress = args.egress.to_pending()?;
    let sandbox = Sandbox::prepare(config, egress, &mut super::print_progress)?;
    if let Some(warning) = sandbox.selection.warning() {
        eprintln!("{warning}");
    }
    let input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin());
    Ok(serve(
        &sandbox,
        options,
        Backend::Orchestrator,
        input,
        Output::new(std::io::stdout()),
        cancel,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_names_with_parameter_names() {
        assert_eq!(
            tool("search:query,limit").unwrap(),
            Tool {
                name: "search".into(),
                params: vec!["query".into(), "limit".into()]
            }
        );
        assert_eq!(tool("now").unwrap().params, Vec::<String>::new());
        for bad in ["", "1x", "a-b", "f:x y", "f:1"] {
            assert!(
                tool(bad).unwrap_err().contains(&format!("{bad:?}")),
                "{bad}"
            );
        }
    }
}
