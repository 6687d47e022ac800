//! Starting a session: its sandbox launched with the agent, the contexts
//! placed, and the agent's `hello` and `ready` (a cold start, or the
//! second half of a standby's claim, src/session/standby.rs).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::contexts::{self, Context, Placement, Source};
use super::frames::AgentMsg;
use super::link::{AgentFrames, Link};
use super::{
    agent_context, broker, describe, echo, prelude, Handler, Interrupt, Parts, Ready, ReadyLimits,
    Session, SessionError, SessionOptions, MAX_FRAME,
};
use crate::bundle::spec::Program;
use crate::result::RuntimeUsed;
use crate::supervise::{Launched, Plan, Sandbox, StdioPlan};

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
        let reply = self.next(since + self.options.start_timeout);
        self.start_reply(reply, "standby", |m| matches!(m, AgentMsg::Standby))
            .map(drop)
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
    pub(super) fn assemble(
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
            names: Vec::new(),
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
    pub(super) fn send_hello(&mut self) {
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
    pub(super) fn await_ready(&mut self, since: Instant, cold: bool) -> Result<(), SessionError> {
        let deadline = since + self.options.start_timeout;
        let mut reply = self.next(deadline);
        if cold && matches!(reply, Ok(Some(AgentMsg::Standby))) {
            reply = self.next(deadline);
        }
        let is_ready = |m: &AgentMsg| matches!(m, AgentMsg::Ready { .. });
        if let AgentMsg::Ready { python, names } = self.start_reply(reply, "ready", is_ready)? {
            self.ready.python = python;
            self.ready.names = names;
        }
        Ok(())
    }

    /// The start message `want` (`standby`, `ready`) from a wait's `reply`;
    /// anything else, silence by the start timeout or the sandbox's end
    /// fails the start (the sandbox removed).
    fn start_reply(
        &mut self,
        reply: Result<Option<AgentMsg>, Interrupt>,
        want: &str,
        is: fn(&AgentMsg) -> bool,
    ) -> Result<AgentMsg, SessionError> {
        match reply {
            Ok(Some(msg)) if is(&msg) => Ok(msg),
            Ok(Some(other)) => {
                let why = format!("the agent sent {} before {want}", describe(&other));
                Err(SessionError::Start(self.die(why, None)))
            }
            Ok(None) => {
                let why = format!(
                    "the agent did not report {want} within {:?}",
                    self.options.start_timeout
                );
                Err(SessionError::Start(self.die(why, None)))
            }
            Err(Interrupt::Died(why)) => Err(SessionError::Start(why)),
            Err(Interrupt::Cancelled) => Err(self.cancelled()),
        }
    }
}

/// Refuses a rootfs without the agent, naming the way to one with it.
pub(super) fn check_agent(sandbox: &Sandbox) -> Result<(), SessionError> {
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
pub(super) fn describe_contexts(
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
pub(super) fn open_contexts(
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
pub(super) fn launch_agent(
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
