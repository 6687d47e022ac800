//! A session's per-claim flags (`ClaimArgs`): what one piece of work
//! brings to a sandbox (its contexts, tools, call limits and who answers
//! the calls), as opposed to what shapes the sandbox (`SandboxArgs`,
//! `EgressArgs`). A cold session takes them on its command line; a
//! standby (`session --standby`) takes them in its `begin` request's
//! `args`, parsed by these same definitions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser};
use rlm_sandbox::config::parse_size;
use rlm_sandbox::session::contexts::Source;
use rlm_sandbox::session::llm_command::CommandHandler;
use rlm_sandbox::session::llm_endpoint::EndpointHandler;
use rlm_sandbox::session::serve::{Backend, Begin};
use rlm_sandbox::session::{CallLimits, Handler, SessionOptions, Tool};

use super::egress::ContextArgs;

/// The most of one answer a host command or endpoint may give.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The flags one claim of a sandbox brings; each flag overrides its RLM_*
/// variable.
#[derive(Debug, Args)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub contexts: ContextArgs,
    /// Answer llm_query prompts with this shell command instead of the
    /// orchestrator: one `sh -c CMD` per prompt, the prompt on its stdin,
    /// the answer its stdout (the model asked for, if any, in RLM_LLM_MODEL)
    #[arg(
        long,
        value_name = "CMD",
        env = "RLM_LLM_COMMAND",
        conflicts_with = "llm_endpoint"
    )]
    llm_command: Option<String>,
    /// Answer llm_query prompts with an OpenAI-compatible chat-completions
    /// endpoint instead of the orchestrator, e.g. http://127.0.0.1:8000/v1
    /// (plain http: a local server, or a local proxy in front of https)
    #[arg(long, value_name = "URL", env = "RLM_LLM_ENDPOINT", value_parser = endpoint_url)]
    llm_endpoint: Option<String>,
    /// The endpoint's model when the code names none
    #[arg(long, value_name = "NAME", env = "RLM_LLM_MODEL")]
    llm_model: Option<String>,
    /// The host environment variable holding the endpoint's API key (sent
    /// as a bearer token; never passed into the sandbox)
    #[arg(long, value_name = "VAR", env = "RLM_LLM_API_KEY_ENV")]
    llm_api_key_env: Option<String>,
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
    /// The client's private directory of temporary context files
    /// (`rlm-sandbox-ctx-*`), removed when the session ends: a client
    /// killed with SIGKILL cannot remove it, and its session sees the end
    /// of its input and exits (the watchdog covers the session itself)
    #[arg(long, value_name = "DIR", hide = true, value_parser = owned_dir)]
    pub owned_context_dir: Option<PathBuf>,
}

impl ClaimArgs {
    /// The session's options these flags describe.
    pub fn options(&self) -> SessionOptions {
        SessionOptions {
            contexts: self
                .contexts
                .context
                .iter()
                .map(|p| (Source::Path(p.clone()), None))
                .collect(),
            tools: self.tools.clone(),
            calls: CallLimits {
                max_calls: self.max_llm_calls,
                max_in_flight: self.llm_max_in_flight,
                max_prompt_bytes: usize::try_from(self.llm_max_prompt_bytes).unwrap_or(usize::MAX),
                timeout: self.llm_timeout,
            },
            rlm_calls: self.rlm_calls,
            max_load_bytes: self.context_load_bytes,
            grace: self.interrupt_grace,
            ..SessionOptions::default()
        }
    }

    /// The claim: options, who answers calls, and the owned context
    /// directory to remove when the session ends.
    pub fn begin(&self) -> anyhow::Result<Begin<OwnedDir>> {
        Ok(Begin {
            options: self.options(),
            backend: self.backend()?,
            keep: OwnedDir(self.owned_context_dir.clone()),
        })
    }

    /// Who answers the session's calls: a host command, an endpoint, or
    /// (the default) the orchestrator on the JSON lines.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        backend(self)
    }

    /// The long names of these flags (`context`, `tool`, ...).
    pub fn names() -> Vec<String> {
        longs(ClaimArgs::augment_args(clap::Command::new("claim")))
    }
}

/// The long flag names of `command`'s arguments.
pub fn longs(command: clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// `begin`'s args as a command line of their own.
#[derive(Debug, Parser)]
#[command(
    name = "begin",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct BeginLine {
    #[command(flatten)]
    claim: ClaimArgs,
}

/// Parses a standby's `begin` args: the per-claim flags only, by the
/// same definitions (and RLM_* defaults) as the command line. `standby`
/// names the session's other flags (set at standby): one of them is
/// refused by name. The error names what is wrong and what is accepted.
pub fn parse_begin(args: &[String], standby: &[String]) -> Result<Begin<OwnedDir>, String> {
    let accepted = || {
        let names: Vec<String> = ClaimArgs::names()
            .into_iter()
            .filter(|n| n != "owned-context-dir")
            .map(|n| format!("--{n}"))
            .collect();
        format!(
            "begin's args take the per-claim flags only: {}",
            names.join(", ")
        )
    };
    let claim = match BeginLine::try_parse_from(args) {
        Ok(line) => line.claim,
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if e.kind() == ErrorKind::UnknownArgument {
                let arg = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(s)) => s.clone(),
                    _ => String::new(),
                };
                let name = arg.trim_start_matches('-');
                let name = name.split_once('=').map_or(name, |(n, _)| n);
                if arg.starts_with("--") && standby.iter().any(|s| s == name) {
                    return Err(format!(
                        "--{name} is set at standby, not at begin (it shapes the sandbox \
                         already started); {}",
                        accepted()
                    ));
                }
                return Err(format!(
                    "unknown flag {arg:?} in begin's args; {}",
                    accepted()
                ));
            }
            return Err(format!("begin's args: {}", first_line(&e)));
        }
    };
    claim.begin().map_err(|e| format!("begin's args: {e:#}"))
}

/// A clap error's message, without its `error: ` prefix, usage and hints.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_string()
}

/// The prefix of the directories `--owned-context-dir` accepts: a session
/// runs as root and removes the directory whole, so only the client's own
/// temporary directories qualify (never `/` or a typo).
const OWNED_DIR_PREFIX: &str = "rlm-sandbox-ctx-";

fn owned_dir(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(OWNED_DIR_PREFIX) && n.len() > OWNED_DIR_PREFIX.len());
    if !path.is_absolute() || !named || s.contains("/../") {
        return Err(format!(
            "expected an absolute path to a directory named {OWNED_DIR_PREFIX}*, got {s:?}"
        ));
    }
    Ok(path)
}

/// Removes the owned context directory when the session ends, whichever
/// way `run` returns.
pub struct OwnedDir(pub Option<PathBuf>);

impl Drop for OwnedDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("rlm-sandbox: could not remove {}: {e}", dir.display());
                }
            }
        }
    }
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

fn endpoint_url(s: &str) -> Result<String, String> {
    let lower = s.trim().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "{s:?}: this build speaks plain HTTP only (no TLS); use an http:// URL \
             (a local server, or a local proxy in front of the https service)"
        ));
    }
    match lower.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(s.trim().to_string()),
        _ => Err(format!(
            "expected an http://HOST[:PORT][/PATH] URL such as http://127.0.0.1:8000/v1, got {s:?}"
        )),
    }
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

/// Who answers the session's calls: a host command, an endpoint, or (the
/// default) the orchestrator on the JSON lines.
fn backend(args: &ClaimArgs) -> anyhow::Result<Backend> {
    let host = if let Some(command) = &args.llm_command {
        let handler = CommandHandler::new(command.clone(), MAX_ANSWER_BYTES);
        Some((Handler::Prompts(Arc::new(handler)), "command"))
    } else if let Some(url) = &args.llm_endpoint {
        let api_key = match &args.llm_api_key_env {
            Some(var) => Some(std::env::var(var).with_context(|| {
                format!("--llm-api-key-env {var}: the variable {var} is not set (or not UTF-8)")
            })?),
            None => None,
        };
        let handler = EndpointHandler::new(url, args.llm_model.clone(), api_key, MAX_ANSWER_BYTES);
        Some((Handler::Prompts(Arc::new(handler)), "endpoint"))
    } else {
        None
    };
    let Some((handler, name)) = host else {
        return Ok(Backend::Orchestrator);
    };
    if let Some(tool) = args.tools.first() {
        bail!(
            "--tool {}: tools are answered by the orchestrator, and --llm-{name} replaces it",
            tool.name
        );
    }
    if args.rlm_calls {
        bail!(
            "--rlm-calls: rlm_query is answered by the orchestrator, and --llm-{name} replaces it"
        );
    }
    Ok(Backend::Handler(handler, name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn begin(args: &[&str]) -> Result<Begin<OwnedDir>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_begin(&args, &["memory".to_string(), "runtime".to_string()])
    }

    #[test]
    fn begin_takes_the_claim_flags_of_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        let path = path.to_str().unwrap();
        let b = begin(&[
            "--context",
            path,
            "--tool",
            "f:x",
            "--rlm-calls",
            "--max-llm-calls",
            "7",
            "--llm-max-in-flight=3",
            "--llm-timeout",
            "2.5",
            "--context-load-bytes",
            "1k",
        ])
        .unwrap();
        let o = &b.options;
        assert_eq!(o.contexts, vec![(Source::Path(PathBuf::from(path)), None)]);
        assert_eq!(
            o.tools,
            vec![Tool {
                name: "f".into(),
                params: vec!["x".into()]
            }]
        );
        assert!(o.rlm_calls);
        assert_eq!((o.calls.max_calls, o.calls.max_in_flight), (7, 3));
        assert_eq!(o.calls.timeout, Duration::from_millis(2500));
        assert_eq!(o.max_load_bytes, 1024);
        assert_eq!(b.backend.name(), "orchestrator");
        // Nothing given: a cold session's defaults.
        let d = begin(&[]).unwrap().options;
        let cold = SessionOptions::default();
        assert!(d.contexts.is_empty() && d.tools.is_empty() && !d.rlm_calls);
        assert_eq!(d.calls.max_calls, cold.calls.max_calls);
        assert_eq!(d.max_load_bytes, cold.max_load_bytes);
        let cmd = begin(&["--llm-command", "cat"]).unwrap();
        assert_eq!(cmd.backend.name(), "command");
    }

    #[test]
    fn begin_refuses_sandbox_flags_unknown_flags_and_bad_values_by_name() {
        let err = begin(&["--memory", "1g"]).err().unwrap();
        assert!(
            err.contains("--memory is set at standby, not at begin"),
            "{err}"
        );
        assert!(err.contains("--context") && err.contains("--tool"), "{err}");
        let err = begin(&["--runtime=runc"]).err().unwrap();
        assert!(err.contains("--runtime is set at standby"), "{err}");
        let err = begin(&["--frobnicate"]).err().unwrap();
        assert!(
            err.contains("unknown flag \"--frobnicate\"") && err.contains("--rlm-calls"),
            "{err}"
        );
        let err = begin(&["--max-llm-calls", "many"]).err().unwrap();
        assert!(
            err.contains("'many'") && err.contains("--max-llm-calls"),
            "{err}"
        );
        let err = begin(&["--tool", "a-b"]).err().unwrap();
        assert!(
            err.contains("\"a-b\"") && err.contains("NAME:PARAM"),
            "{err}"
        );
        let err = begin(&["--llm-command", "cat", "--tool", "f"])
            .err()
            .unwrap();
        assert!(
            err.contains("--tool f") && err.contains("orchestrator"),
            "{err}"
        );
        assert!(begin(&["stray"]).is_err());
    }

    #[test]
    fn only_client_context_directories_are_owned() {
        assert_eq!(
            owned_dir("/tmp/rlm-sandbox-ctx-ab12").unwrap(),
            PathBuf::from("/tmp/rlm-sandbox-ctx-ab12")
        );
        for bad in [
            "/",
            "/tmp",
            "tmp/rlm-sandbox-ctx-ab12",
            "/tmp/rlm-sandbox-ctx-",
            "/tmp/rlm-sandbox-ctx-a/../..",
            "/tmp/rlm-sandbox-ctx-a/../x",
            "/home/user",
        ] {
            let err = owned_dir(bad).unwrap_err();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains("rlm-sandbox-ctx-*"),
                "{err}"
            );
        }
    }

    #[test]
    fn endpoints_are_plain_http_urls() {
        assert_eq!(
            endpoint_url(" http://127.0.0.1:8000/v1 ").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        assert!(endpoint_url("https://api.openai.com/v1")
            .unwrap_err()
            .contains("no TLS"));
        for bad in ["", "127.0.0.1:8000", "http://", "http:///v1", "ftp://x"] {
            assert!(
                endpoint_url(bad).unwrap_err().contains(&format!("{bad:?}")),
                "{bad}"
            );
        }
    }

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
