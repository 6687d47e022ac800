//! Stateful sessions: one long-lived sandbox running the agent
//! (`_rlm_agent`), cells sent to it as frames, calls from it answered by
//! the host. See docs/PROTOCOL.md.
//!
//! A session shares a one-shot run's lifecycle (`Sandbox::launch`, the
//! guard, the watchdog, the cgroup, `Sandbox::finish`); only what happens
//! between launch and finish differs. Starting one needs no code, so a
//! pool can hold started sessions.

pub mod broker;
pub mod calls;
mod cell;
pub mod contexts;
mod echo;
pub mod frames;
mod leaving;
pub mod link;
pub mod llm_command;
pub mod llm_endpoint;
pub mod prelude;
mod requests;
mod script;
pub mod serve;
pub mod standby;
mod start;
pub mod value;
mod wait;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use thiserror::Error;

use crate::egress::ContextEchoIndex;
use crate::result::{ExecResult, RuntimeUsed};
use crate::supervise::{EndedBy, Launched, Sandbox, SuperviseError};
pub use broker::{CallLimits, CallRecord, Handler, Tool};
pub use cell::{Cell, SentCell};
use contexts::{Context, Format, Source};
use frames::{AgentCall, AgentMsg, Frame};
use link::{AgentFrames, Link};
pub use standby::{ClaimError, Claiming, Standby};
pub use wait::Input;

/// Largest frame the host accepts from the agent: a prompt at the default
/// limit plus room for the JSON around it.
pub const MAX_FRAME: usize = (8 << 20) + (64 << 10);

/// How long the agent may take to start (to `standby`, or to `ready` on
/// a cold start) by default.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a session is started with besides the sandbox's settings.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Context files, each with its format (from the extension if `None`).
    pub contexts: Vec<(Source, Option<Format>)>,
    pub tools: Vec<Tool>,
    pub calls: CallLimits,
    /// The handler answers `rlm_query` itself (else it gets `llm_query`).
    pub rlm_calls: bool,
    /// Above this size a context is not loaded into `context_N`.
    pub max_load_bytes: u64,
    /// How long an interrupted cell may take to stop before the sandbox is
    /// killed.
    pub grace: Duration,
    /// Cap of a `get` answer's `repr`.
    pub get_max_bytes: usize,
    /// How long the agent may take to report ready.
    pub start_timeout: Duration,
    /// Run by the agent before it reports `standby` (a cold session's too).
    pub prelude: Option<prelude::Prelude>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            contexts: Vec::new(),
            tools: Vec::new(),
            calls: CallLimits::default(),
            rlm_calls: false,
            max_load_bytes: 64 << 20,
            grace: Duration::from_secs(2),
            get_max_bytes: 64 << 10,
            start_timeout: START_TIMEOUT,
            prelude: None,
        }
    }
}

/// What a started session reports (the `ready` event).
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    pub runtime: RuntimeUsed,
    pub python: String,
    /// The sandbox's own names in the user's globals (`answer`,
    /// `llm_query`, the tools, the contexts' names, ...), as the agent
    /// reported them: what a client must not bind its inputs to.
    pub names: Vec<String>,
    pub contexts: Vec<Context>,
    pub limits: ReadyLimits,
    /// From the start to `ready` (cold), or to `standby` (a claimed
    /// standby: its sandbox's start, before the claim).
    pub startup_ms: u64,
    /// The session is a claimed standby.
    pub standby: bool,
    /// From the claim to `ready`, in milliseconds to the microsecond (a
    /// claimed standby only: a claim takes well under one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_ms: Option<f64>,
}

/// The limits a session enforces, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyLimits {
    pub memory_bytes: u64,
    pub cpus: f64,
    pub pids: u32,
    pub cell_timeout_s: f64,
    pub max_calls: u64,
    pub max_in_flight: usize,
    pub max_prompt_bytes: usize,
    pub call_timeout_s: f64,
    pub max_load_bytes: u64,
}

#[derive(Debug, Error)]
pub enum SessionError {
    /// The sandbox is gone; nothing more can run in it.
    #[error("the session is dead: {0}")]
    Dead(String),
    /// A request the session cannot carry out (the session lives on).
    #[error("{0}")]
    Request(String),
    /// A context its client may not read (a server's client: the session
    /// lives on).
    #[error("{0}")]
    Forbidden(String),
    #[error("the session could not start: {0}")]
    Start(String),
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
}

impl SessionError {
    /// The stable `error.kind` of the JSON-lines protocol.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Dead(_) => "session_dead",
            SessionError::Request(_) => "bad_request",
            SessionError::Forbidden(_) => "forbidden",
            SessionError::Start(_) => "start",
            SessionError::Supervise(SuperviseError::Interrupted) => "interrupted",
            SessionError::Supervise(_) => "driver",
        }
    }
}

/// A started sandbox running the agent.
pub struct Session {
    /// Shared: a pool holds sandboxes of one configuration across threads.
    sandbox: Arc<Sandbox>,
    options: SessionOptions,
    /// `None` once the sandbox has ended and been removed.
    launched: Option<Launched>,
    link: Link,
    /// The agent's frames, read by this session's thread (wait.rs).
    frames: AgentFrames,
    /// Polled with the agent's frames, when attached (wait.rs).
    input: Option<Box<dyn Input>>,
    broker: broker::Broker,
    contexts: Vec<Context>,
    /// The echo indexes of the session's contexts (its own, not its
    /// sandbox's filter's).
    echo: echo::SessionEcho,
    ready: Ready,
    next_cell: u64,
    next_req: u64,
    /// Why the session is dead, once it is.
    dead: Option<String>,
    /// The sandbox's own end, when it ended by itself or was killed.
    ended: Option<ExecResult>,
    cancel: Arc<AtomicBool>,
    /// When the sandbox was launched (its run's duration counts from it).
    started: Instant,
}

/// What ended a wait for the agent, besides the awaited message.
pub(crate) enum Interrupt {
    /// The agent or the sandbox is gone (the reason).
    Died(String),
    Cancelled,
}

impl Session {
    /// The `ready` report.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// Why the session is dead, if it is.
    pub fn dead(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// How the sandbox ended (status, usage, the agent's own stderr), once
    /// it has.
    pub fn ended(&self) -> Option<&ExecResult> {
        self.ended.as_ref()
    }

    pub fn contexts(&self) -> &[Context] {
        &self.contexts
    }

    fn alive(&self) -> Result<(), SessionError> {
        match &self.dead {
            Some(why) => Err(SessionError::Dead(why.clone())),
            None => Ok(()),
        }
    }

    /// What the sandbox's cgroup has measured so far (memory peak, CPU
    /// time, OOM kills), or at its end.
    pub fn usage(&self) -> crate::result::Usage {
        match (&self.launched, &self.ended) {
            (Some(l), _) => l
                .guard
                .cgroup
                .as_ref()
                .map_or_else(Default::default, crate::cgroup::RunCgroup::usage),
            (None, Some(ended)) => ended.usage,
            (None, None) => Default::default(),
        }
    }

    /// The filter and the session's own echo indexes that everything
    /// leaving the sandbox passes (output, values, answers, `get`, `vars`);
    /// an error, and nothing released, when either could not be built.
    pub(crate) fn leaving_filters(
        &mut self,
    ) -> Result<(&crate::egress::EgressFilter, &[ContextEchoIndex]), SessionError> {
        let unavailable = |e: String| {
            SessionError::Request(format!(
                "the egress filter is unavailable, so no output is released: {e}"
            ))
        };
        let egress = self.sandbox.egress.get().map_err(unavailable)?;
        let echo = self.echo.get().map_err(unavailable)?;
        Ok((egress, echo))
    }

    /// Waits until `deadline` for the agent's next message other than
    /// output and calls (output outside a cell is dropped; calls go to the
    /// broker). `Ok(None)` at the deadline.
    pub(crate) fn next(&mut self, deadline: Instant) -> Result<Option<AgentMsg>, Interrupt> {
        loop {
            match self.next_event(deadline)? {
                None => return Ok(None),
                Some(Frame::Msg(msg)) => return Ok(Some(msg)),
                Some(_) => {}
            }
        }
    }

    fn submit(&mut self, call: AgentCall) {
        match self.sandbox.egress.get() {
            Ok(egress) => self.broker.submit(egress, call),
            Err(e) => {
                // No filter, no prompt leaves: the call fails.
                self.link.send(json!({"t": "call_result", "call": call.call,
                    "error": format!("the egress filter is unavailable: {e}")}));
            }
        }
    }

    /// Kills the sandbox (if it still runs), removes it and marks the
    /// session dead; returns the reason given, with how the sandbox ended.
    pub(crate) fn die(&mut self, why: String, ended_by: Option<EndedBy>) -> String {
        self.finish(None, ended_by, why)
    }

    /// Waits for the runtime's exit (given, or from the events), finishes
    /// the run (counters, cleanup, classification) and marks the session
    /// dead.
    fn finish(
        &mut self,
        exit: Option<std::io::Result<std::process::ExitStatus>>,
        ended_by: Option<EndedBy>,
        why: String,
    ) -> String {
        let Some(launched) = self.launched.take() else {
            return self.dead.clone().unwrap_or(why);
        };
        let (reason, ended) = end_run(
            &self.sandbox,
            launched,
            &self.link,
            exit,
            ended_by,
            &why,
            self.started,
        );
        self.ended = ended;
        self.dead = Some(reason.clone());
        reason
    }

    fn cancelled(&mut self) -> SessionError {
        self.die("interrupted".into(), Some(EndedBy::Cancelled));
        SessionError::Supervise(SuperviseError::Interrupted)
    }

    /// Ends the session: the agent's stdin is closed, the sandbox stops
    /// (killed if it has not within a second) and everything is removed.
    pub fn close(mut self) -> Result<(), SessionError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), SessionError> {
        let Some(launched) = self.launched.take() else {
            return Ok(());
        };
        self.link.close();
        let never = AtomicBool::new(false);
        let (exit, _) = launched.wait(Instant::now() + Duration::from_secs(1), &never);
        self.dead = Some("the session was closed".into());
        let finished = self.sandbox.finish(launched, exit, None, self.started);
        let outcome = match finished.result {
            Ok(result) => {
                self.ended = Some(result);
                Ok(())
            }
            Err(e) => Err(e.into()),
        };
        match finished.cleanup {
            Some(cleanup) => Err(SuperviseError::Cleanup {
                status: finished.status.as_str(),
                cleanup,
            }
            .into()),
            None => outcome,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.launched.is_some() {
            let _ = self.die("the session was dropped".into(), None);
        }
    }
}

/// What a session is assembled from: its launched sandbox, the link to
/// its agent, its contexts (placed) and their echo indexes.
pub(crate) struct Parts {
    pub(crate) launched: Launched,
    pub(crate) link: Link,
    pub(crate) frames: AgentFrames,
    pub(crate) contexts: Vec<Context>,
    pub(crate) echo: echo::SessionEcho,
    pub(crate) started: Instant,
}

/// Ends a launched agent's sandbox: closes the link, kills it unless it
/// has exited (`exit`), finishes the run (counters, cleanup,
/// classification). Returns `why` with how it ended (and any cleanup
/// error), and the run's result when there is one.
fn end_run(
    sandbox: &Sandbox,
    launched: Launched,
    link: &Link,
    exit: Option<std::io::Result<std::process::ExitStatus>>,
    ended_by: Option<EndedBy>,
    why: &str,
    started: Instant,
) -> (String, Option<ExecResult>) {
    link.close();
    let never = AtomicBool::new(false);
    let exit = match exit {
        Some(exit) => exit,
        None => {
            if let Some(cg) = &launched.guard.cgroup {
                cg.kill_all();
            }
            // At a past deadline `wait` kills and says "timeout"; what
            // ended the sandbox is `ended_by`, ours to say.
            launched.wait(Instant::now(), &never).0
        }
    };
    let finished = sandbox.finish(launched, exit, ended_by, started);
    let (mut reason, ended) = match finished.result {
        Ok(result) => (with_status(why, &result), Some(result)),
        Err(e) => (format!("{why} (and: {e})"), None),
    };
    if let Some(cleanup) = finished.cleanup {
        reason = format!("{reason} (and cleanup failed: {cleanup})");
    }
    (reason, ended)
}

/// A context as the agent's `hello` and `add_context` carry it.
fn agent_context(c: &Context) -> Value {
    json!({"index": c.index, "path": c.path, "format": c.format, "size": c.size})
}

/// A message's `t`, for errors (never its contents).
fn describe(msg: &AgentMsg) -> &'static str {
    match msg {
        AgentMsg::Standby => "standby",
        AgentMsg::Ready { .. } => "ready",
        AgentMsg::Done { .. } => "done",
        AgentMsg::Call(_) => "call",
        AgentMsg::Reply { .. } => "reply",
        AgentMsg::OutputLimit { .. } => "output_limit",
    }
}

/// `why`, with the sandbox's end where it adds something (OOM, a signal).
fn with_status(why: &str, result: &ExecResult) -> String {
    use crate::result::Status;
    match result.status {
        Status::Oom => format!("{why}: out of memory (memory limit)"),
        Status::Killed => format!("{why}: killed by signal {}", result.signal.unwrap_or(9)),
        Status::SandboxError => format!(
            "{why}: {}",
            result.error.as_deref().unwrap_or("the runtime failed")
        ),
        _ => why.to_string(),
    }
}
