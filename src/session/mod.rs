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
mod script;
pub mod serve;
pub mod standby;
pub mod value;
mod wait;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use thiserror::Error;

use crate::bundle::spec::Program;
use crate::egress::ContextEchoIndex;
use crate::result::{ExecResult, RuntimeUsed};
use crate::supervise::{EndedBy, Launched, Plan, Sandbox, StdioPlan, SuperviseError};
pub use broker::{CallLimits, CallRecord, Handler, Tool};
pub use cell::{Cell, SentCell};
use contexts::{Context, Format, Placement, Source};
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
    /// Starts the sandbox and its agent with `options`' contexts
    /// bind-mounted, and waits until the agent is ready. `cancel` (a
    /// signal flag) ends it.
    pub fn start(
        sandbox: Arc<Sandbox>,
        options: SessionOptions,
        handler: Handler,
        cancel: Arc<AtomicBool>,
    ) -> Result<Session, SessionError> {
        let started = Instant::now();
        check_agent(&sandbox)?;
        let mut contexts = describe_contexts(&options, Placement::Mount)?;
        // Paths are mounted by the runtime (or copied). Opened files (a
        // server's) cannot be: then every context is placed in the drop
        // directory once the sandbox has started, as a standby's claim
        // places them, from its descriptor.
        let by_runtime = options
            .contexts
            .iter()
            .all(|(source, _)| matches!(source, Source::Path(_)));
        let mut paths = Vec::new();
        if by_runtime {
            for context in &mut contexts {
                if contexts::needs_copy(&context.host_path) {
                    context.placed = Placement::Copy;
                }
                paths.push(context.host_path.clone());
            }
        }
        // Opened now, indexed while the sandbox starts.
        let opened = open_contexts(&options, &contexts)?;
        let echo = echo::SessionEcho::spawn(opened, sandbox.egress.echo_config().clone());
        let (launched, link, frames) = launch_agent(&sandbox, options.prelude.as_ref(), &paths)?;
        let parts = Parts {
            launched,
            link,
            frames,
            contexts,
            echo,
            started,
        };
        let mut session = Session::assemble(sandbox, options, handler, cancel, parts);
        if !by_runtime {
            // Once the agent runs, the sandbox's view of the drop directory
            // is set up: what is mounted there from now on reaches it.
            // Dropped on an error: the sandbox is removed.
            session.standby(started)?;
            session.place_all()?;
        }
        session.hello(started, by_runtime)?;
        session.ready.startup_ms = started.elapsed().as_millis() as u64;
        Ok(session)
    }

    /// Waits for the agent's `standby` (by `options.start_timeout` from
    /// `since`).
    fn standby(&mut self, since: Instant) -> Result<(), SessionError> {
        let deadline = since + self.options.start_timeout;
        match self.next(deadline) {
            Ok(Some(AgentMsg::Standby)) => Ok(()),
            Ok(Some(other)) => {
                let why = format!("the agent sent {} before standby", describe(&other));
                Err(SessionError::Start(self.die(why, None)))
            }
            Ok(None) => {
                let why = format!(
                    "the agent did not report standby within {:?}",
                    self.options.start_timeout
                );
                Err(SessionError::Start(self.die(why, None)))
            }
            Err(Interrupt::Died(why)) => Err(SessionError::Start(why)),
            Err(Interrupt::Cancelled) => Err(self.cancelled()),
        }
    }

    /// Places every context in the started sandbox's drop directory (a
    /// cold start with opened files: see [`Session::start`]).
    fn place_all(&mut self) -> Result<(), SessionError> {
        let Some(input) = self.launched.as_ref().map(|l| l.guard.dir.input()) else {
            return Err(SessionError::Dead("the sandbox is gone".into()));
        };
        for (context, (source, _)) in self.contexts.iter_mut().zip(&self.options.contexts) {
            contexts::place(&input, context, source).map_err(|e| {
                SessionError::Start(format!("the contexts could not be placed: {e}"))
            })?;
        }
        self.ready.contexts = self.contexts.clone();
        Ok(())
    }

    /// A session over a launched sandbox whose agent has not had `hello`.
    fn assemble(
        sandbox: Arc<Sandbox>,
        options: SessionOptions,
        handler: Handler,
        cancel: Arc<AtomicBool>,
        parts: Parts,
    ) -> Session {
        let Parts {
            launched,
            link,
            frames,
            contexts,
            echo,
            started,
        } = parts;
        let broker = broker::Broker::new(
            options.calls.clone(),
            handler,
            options.rlm_calls,
            options.tools.clone(),
            link.clone(),
        );
        let limits = &sandbox.config.limits;
        let ready = Ready {
            runtime: RuntimeUsed::from(&sandbox.selection),
            python: String::new(),
            contexts: contexts.clone(),
            limits: ReadyLimits {
                memory_bytes: limits.memory_bytes,
                cpus: limits.cpus,
                pids: limits.pids,
                cell_timeout_s: limits.timeout.as_secs_f64(),
                max_calls: options.calls.max_calls,
                max_in_flight: options.calls.max_in_flight,
                max_prompt_bytes: options.calls.max_prompt_bytes,
                call_timeout_s: options.calls.timeout.as_secs_f64(),
                max_load_bytes: options.max_load_bytes,
            },
            startup_ms: 0,
            standby: false,
            claim_ms: None,
        };
        Session {
            sandbox,
            options,
            launched: Some(launched),
            link,
            frames,
            input: None,
            broker,
            contexts,
            ready,
            next_cell: 1,
            next_req: 1,
            dead: None,
            ended: None,
            echo,
            cancel,
            started,
        }
    }

    /// Sends `hello` and waits for `ready`, by `options.start_timeout`
    /// from `since`. On a cold start (`cold`) the agent's `standby` comes
    /// first and is passed over; a claimed standby's was read at launch.
    fn hello(&mut self, since: Instant, cold: bool) -> Result<(), SessionError> {
        self.send_hello();
        self.await_ready(since, cold)
    }

    /// Sends `hello` without waiting for `ready` (a claim may send its
    /// first cell behind it: [`Self::send_exec`]).
    fn send_hello(&mut self) {
        let contexts: Vec<Value> = self.contexts.iter().map(agent_context).collect();
        let tools = serde_json::to_value(&self.options.tools).unwrap_or_default();
        self.link.send(json!({
            "t": "hello",
            "contexts": contexts,
            "tools": tools,
            "max_load_bytes": self.options.max_load_bytes,
            "max_frame": MAX_FRAME,
            "max_prompt_bytes": self.options.calls.max_prompt_bytes,
            "max_output_bytes": self.sandbox.config.limits.max_output_bytes,
        }));
    }

    /// Waits for the `ready` that answers `hello` (see [`Self::hello`]).
    fn await_ready(&mut self, since: Instant, cold: bool) -> Result<(), SessionError> {
        let deadline = since + self.options.start_timeout;
        let mut reply = self.next(deadline);
        if cold && matches!(reply, Ok(Some(AgentMsg::Standby))) {
            reply = self.next(deadline);
        }
        match reply {
            Ok(Some(AgentMsg::Ready { python, .. })) => {
                self.ready.python = python;
                Ok(())
            }
            Ok(Some(other)) => {
                let why = format!("the agent sent {} before ready", describe(&other));
                Err(SessionError::Start(self.die(why, None)))
            }
            Ok(None) => {
                let why = format!(
                    "the agent did not report ready within {:?}",
                    self.options.start_timeout
                );
                Err(SessionError::Start(self.die(why, None)))
            }
            Err(Interrupt::Died(why)) => Err(SessionError::Start(why)),
            Err(Interrupt::Cancelled) => Err(self.cancelled()),
        }
    }

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

    /// Names, types and sizes of the user's globals.
    pub fn vars(&mut self) -> Result<Value, SessionError> {
        self.vars_filtered().map(|(vars, _)| vars)
    }

    /// [`Self::vars`], names and types filtered as output is
    /// (`leaving.rs`), with the findings.
    pub fn vars_filtered(&mut self) -> Result<(Value, Vec<crate::egress::Finding>), SessionError> {
        let mut reply = self.request(json!({"t": "vars"}))?;
        let (egress, echo) = self.leaving_filters()?;
        let (vars, findings) = leaving::vars_reply(egress, echo, reply.remove("vars"))
            .map_err(SessionError::Request)?;
        Ok((serde_json::to_value(vars).unwrap_or_default(), findings))
    }

    /// The type and capped `repr` of the global `name`, filtered as output
    /// is (`leaving.rs`), with the findings.
    pub fn get(&mut self, name: &str) -> Result<serde_json::Map<String, Value>, SessionError> {
        let max = self.options.get_max_bytes;
        let reply = self.request(json!({"t": "get", "name": name, "max_bytes": max}))?;
        let (egress, echo) = self.leaving_filters()?;
        leaving::get_reply(egress, echo, reply).map_err(SessionError::Request)
    }

    /// Fresh interpreter state; the contexts stay.
    pub fn reset(&mut self) -> Result<(), SessionError> {
        self.request(json!({"t": "reset"})).map(|_| ())
    }

    /// Adds the context file of `source` to the live session.
    pub fn add_context(
        &mut self,
        source: &Source,
        format: Option<Format>,
    ) -> Result<Context, SessionError> {
        self.alive()?;
        let index = self.contexts.len();
        let mut context = contexts::describe(index, source, format, Placement::Mount)
            .map_err(|e| SessionError::Request(e.to_string()))?;
        let input = match &self.launched {
            Some(l) => l.guard.dir.input(),
            None => return Err(SessionError::Dead("the sandbox is gone".into())),
        };
        let placed = contexts::place(&input, &mut context, source)
            .map_err(|e| SessionError::Request(e.to_string()))?;
        // Its output echo is checked like the first contexts': indexed
        // from the file the sandbox sees, on its own thread; no output
        // leaves before the index is built (`leaving_filters`).
        let echo_config = self.sandbox.egress.echo_config().clone();
        self.echo
            .add(vec![(context.host_path.clone(), placed)], echo_config);
        let reply = self.request(json!({"t": "add_context", "context": agent_context(&context)}));
        if let Err(e) = reply {
            let _ = contexts::unplace(&input, index);
            return Err(e);
        }
        self.contexts.push(context.clone());
        Ok(context)
    }

    /// Sends a `req` operation and waits for its reply.
    fn request(&mut self, mut msg: Value) -> Result<serde_json::Map<String, Value>, SessionError> {
        self.alive()?;
        let req = self.next_req;
        self.next_req += 1;
        msg["req"] = req.into();
        self.link.send(msg);
        let deadline = Instant::now() + self.sandbox.config.limits.timeout;
        match self.next(deadline) {
            Ok(Some(AgentMsg::Reply {
                req: r,
                ok,
                error,
                fields,
            })) if r == req => {
                if ok {
                    Ok(fields)
                } else {
                    Err(SessionError::Request(
                        error.unwrap_or_else(|| "the agent refused the request".into()),
                    ))
                }
            }
            Ok(Some(other)) => {
                let why = format!(
                    "protocol error: the agent sent {} while a request was pending",
                    describe(&other)
                );
                Err(SessionError::Dead(self.die(why, None)))
            }
            Ok(None) => {
                let why = "the agent did not answer a request in time; the sandbox was killed";
                Err(SessionError::Dead(
                    self.die(why.into(), Some(EndedBy::Timeout)),
                ))
            }
            Err(Interrupt::Died(why)) => Err(SessionError::Dead(why)),
            Err(Interrupt::Cancelled) => Err(self.cancelled()),
        }
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

/// Refuses a rootfs without the agent, naming the way to one with it.
fn check_agent(sandbox: &Sandbox) -> Result<(), SessionError> {
    // An agent started elsewhere is in its image (src/supervise/remote.rs).
    if sandbox.agent_command.is_some() || crate::rootfs::has_agent(&sandbox.rootfs) {
        return Ok(());
    }
    Err(SessionError::Start(format!(
        "the rootfs {} has no session agent ({}): sessions need a rootfs built by this \
         rlm-sandbox (`rlm-sandbox rootfs build --output DIR`), or RLM_ROOTFS unset for \
         the default one",
        sandbox.rootfs.display(),
        rootfs_builder::AGENT_MODULE
    )))
}

/// `options`' context files, checked and described in order.
fn describe_contexts(
    options: &SessionOptions,
    placed: Placement,
) -> Result<Vec<Context>, SessionError> {
    options
        .contexts
        .iter()
        .enumerate()
        .map(|(i, (source, format))| {
            contexts::describe(i, source, *format, placed)
                .map_err(|e| SessionError::Request(e.to_string()))
        })
        .collect()
}

/// Opens `contexts`' files (described from `options`' sources) for their
/// echo indexes (`contexts::open`).
fn open_contexts(
    options: &SessionOptions,
    contexts: &[Context],
) -> Result<Vec<echo::OpenContext>, SessionError> {
    contexts
        .iter()
        .zip(&options.contexts)
        .map(|(c, (source, _))| {
            let file =
                contexts::open(source, c).map_err(|e| SessionError::Request(e.to_string()))?;
            Ok((c.host_path.clone(), file))
        })
        .collect()
}

/// Launches the agent's sandbox with `prelude` and the context files at
/// `paths` in its input directory (none for a standby: its contexts come
/// with the claim; none either when they are placed after the start), and
/// starts the link on its pipes.
fn launch_agent(
    sandbox: &Sandbox,
    prelude: Option<&prelude::Prelude>,
    paths: &[PathBuf],
) -> Result<(Launched, Link, AgentFrames), SessionError> {
    let mounts = |input: &Path| {
        if let Some(prelude) = prelude {
            prelude.place(input)?;
        }
        contexts::prepare_dir(input, paths)
    };
    let mut launched = sandbox.launch(&Plan {
        program: Program::Agent,
        input: b"",
        stdio: StdioPlan::Channel,
        mounts: Some(&mounts),
    })?;
    match (launched.stdin.take(), launched.channel.take()) {
        (Some(stdin), Some(frames)) => Ok((
            launched,
            Link::start(stdin),
            AgentFrames::new(frames, MAX_FRAME),
        )),
        _ => Err(SessionError::Start("the agent's pipes are missing".into())),
    }
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
