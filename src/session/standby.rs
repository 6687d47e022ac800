//! A standby: a sandbox started before its work is known, its agent up
//! and waiting for `hello`, handed out once.
//!
//! It holds nothing of any claim: its contexts directory (the drop
//! directory of [`super::contexts`]) is empty, no tool, limit or context
//! has reached the agent. [`Standby::claim`] consumes it: the claim's
//! contexts are placed in the drop directory (as `add_context` places
//! them), then `hello` and `ready` as for a cold session. A standby that
//! is dropped, or whose claim fails after anything was placed, is killed
//! and removed: a sandbox that saw a claim is never offered again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::time::{Duration, Instant};

use super::frames::FrameError;
use super::frames::{AgentMsg, Frame};
use super::link::{AgentFrames, Link};
use super::prelude::Prelude;
use super::start::{check_agent, describe_contexts, launch_agent};
use super::{
    contexts, echo, end_run, Handler, Parts, Session, SessionError, SessionOptions, START_TIMEOUT,
};
use crate::result::RuntimeUsed;
use crate::supervise::launch::Event;
use crate::supervise::{EndedBy, Launched, Sandbox, SuperviseError, TICK};
use contexts::Placement;

/// A started sandbox whose agent waits for its first claim.
pub struct Standby {
    sandbox: Arc<Sandbox>,
    /// `None` once the sandbox has been handed to a session or removed.
    launched: Option<Launched>,
    link: Link,
    /// The agent's frames: nothing may come between `standby` and `hello`.
    frames: Option<AgentFrames>,
    started: Instant,
    /// From the launch to the agent's `standby`.
    startup: Duration,
}

/// A claimed standby whose `hello` was sent ([`Standby::begin_claim`]).
pub struct Claiming {
    session: Session,
    since: Instant,
}

impl Claiming {
    /// The session, to send the claim's first cells behind `hello`
    /// ([`Session::send_exec`]); only `send_*` before [`Self::ready`].
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Waits for the agent's `ready`: the claimed session (an error
    /// removed the sandbox).
    pub fn ready(mut self) -> Result<Session, SessionError> {
        self.session.await_ready(self.since, false)?;
        self.session.ready.claim_ms = Some(self.since.elapsed().as_micros() as f64 / 1000.0);
        Ok(self.session)
    }
}

/// Why a claim did not give a session.
#[derive(Debug)]
pub enum ClaimError {
    /// Refused before the sandbox was touched (a context file that is
    /// missing or not a regular file): the standby is handed back unused.
    Refused(Box<Standby>, SessionError),
    /// The sandbox failed during the claim; it has been removed.
    Failed(SessionError),
}

impl ClaimError {
    pub fn error(&self) -> &SessionError {
        match self {
            ClaimError::Refused(_, e) | ClaimError::Failed(e) => e,
        }
    }
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.launched.as_ref().map(|l| l.id.as_str());
        f.debug_struct("Standby").field("run", &id).finish()
    }
}

impl Standby {
    /// Starts a sandbox running the agent, with no contexts, and waits
    /// (at most [`START_TIMEOUT`]) until the agent says it waits for
    /// `hello`. `cancel` (a signal flag) ends it. `prelude`, when given,
    /// runs in the agent before it reports standby ([`super::prelude`]).
    pub fn launch(
        sandbox: Arc<Sandbox>,
        prelude: Option<&Prelude>,
        cancel: &AtomicBool,
    ) -> Result<Standby, SessionError> {
        let started = Instant::now();
        check_agent(&sandbox)?;
        // The drop directory, empty: contexts come with the claim.
        let (launched, link, frames) = launch_agent(&sandbox, prelude, &[])?;
        let mut standby = Standby {
            sandbox,
            launched: Some(launched),
            link,
            frames: Some(frames),
            started,
            startup: Duration::ZERO,
        };
        standby.wait_for_standby(started + START_TIMEOUT, cancel)?;
        standby.startup = started.elapsed();
        Ok(standby)
    }

    /// How long the sandbox took to reach standby.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The runtime the sandbox runs on.
    pub fn runtime(&self) -> RuntimeUsed {
        RuntimeUsed::from(&self.sandbox.selection)
    }

    /// The sandbox's configuration, shared with every standby of it.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Waits for the agent's `standby`; anything else, the agent's or the
    /// sandbox's end, the deadline or `cancel` removes the sandbox.
    fn wait_for_standby(
        &mut self,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<(), SessionError> {
        loop {
            if cancel.load(Ordering::Relaxed) {
                self.end(None, Some(EndedBy::Cancelled), "interrupted");
                return Err(SessionError::Supervise(SuperviseError::Interrupted));
            }
            let now = Instant::now();
            if now >= deadline {
                let why = format!("the agent did not report standby within {START_TIMEOUT:?}");
                return Err(SessionError::Start(self.end(None, None, &why)));
            }
            match self.agent_frames()?.next_frame() {
                Ok(Some(Frame::Msg(AgentMsg::Standby))) => return Ok(()),
                Ok(Some(frame)) => return Err(SessionError::Start(self.unexpected(&frame))),
                Ok(None) => {}
                Err(e) => return Err(SessionError::Start(self.refused(e))),
            }
            if let Some(why) = self.gone() {
                return Err(SessionError::Start(why));
            }
            if self.wait_readable((deadline - now).min(TICK)) {
                if let Err(e) = self.agent_frames()?.fill() {
                    return Err(SessionError::Start(self.refused(e)));
                }
            }
        }
    }

    /// Whether the standby is still good: reads what the sandbox reported
    /// since (without waiting). The agent sends nothing between `standby`
    /// and `hello`, so any frame, its end or the sandbox's removes it.
    pub fn check(&mut self) -> Result<(), SessionError> {
        if self.launched.is_none() {
            return Err(SessionError::Dead("the standby sandbox is gone".into()));
        }
        if self.wait_readable(Duration::ZERO) {
            if let Err(e) = self.agent_frames()?.fill() {
                return Err(SessionError::Dead(self.refused(e)));
            }
        }
        match self.agent_frames()?.next_frame() {
            Ok(Some(frame)) => return Err(SessionError::Dead(self.unexpected(&frame))),
            Ok(None) => {}
            Err(e) => return Err(SessionError::Dead(self.refused(e))),
        }
        match self.gone() {
            Some(why) => Err(SessionError::Dead(why)),
            None => Ok(()),
        }
    }

    /// The agent's frames, while the standby holds the sandbox.
    fn agent_frames(&mut self) -> Result<&mut AgentFrames, SessionError> {
        self.frames
            .as_mut()
            .ok_or_else(|| SessionError::Dead("the standby sandbox is gone".into()))
    }

    /// Whether the agent's frames became readable within `wait` (the
    /// sandbox's events wake the poll too; `gone` reads them).
    fn wait_readable(&self, wait: Duration) -> bool {
        let (Some(launched), Some(frames)) = (&self.launched, &self.frames) else {
            return false;
        };
        let mut fds = [
            PollFd::new(frames.fd(), PollFlags::POLLIN),
            PollFd::new(launched.events.wake_fd(), PollFlags::POLLIN),
        ];
        // Whole milliseconds, rounded up: never spun on.
        let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => fds[0].revents().is_some_and(|r| !r.is_empty()),
            // A signal (the caller checks its cancel flag) or ENOMEM: the
            // next round tries again.
            Err(_) => false,
        }
    }

    /// The agent's or the sandbox's end, seen while no claim holds it:
    /// the sandbox is removed and the reason returned.
    fn gone(&mut self) -> Option<String> {
        let Some(frames) = &self.frames else {
            return Some("the standby sandbox is gone".into());
        };
        match frames.ended() {
            Ok(false) => {}
            Ok(true) => return Some(self.end(None, None, "the agent exited")),
            Err(e) => return Some(self.refused(e)),
        }
        let event = self.launched.as_ref()?.events.try_recv();
        let (exit, why) = match event {
            Ok(Event::OutputCeiling) | Err(mpsc::TryRecvError::Empty) => return None,
            Ok(Event::Exited(exit)) => {
                let why = match &exit {
                    Ok(status) => format!("the agent's sandbox exited ({status})"),
                    Err(e) => format!("the agent's sandbox ended: {e}"),
                };
                (Some(exit), why)
            }
            Err(mpsc::TryRecvError::Disconnected) => (None, "the sandbox's events stopped".into()),
        };
        Some(self.end(exit, None, &why))
    }

    /// A frame the agent sent while on standby (it sends none): the
    /// sandbox is removed.
    fn unexpected(&mut self, frame: &Frame) -> String {
        let what = match frame {
            Frame::Msg(msg) => super::describe(msg),
            Frame::Stdout(_) | Frame::Stderr(_) => "output",
        };
        let why = format!("protocol error: the agent sent {what} while on standby");
        self.end(None, None, &why)
    }

    /// A frame the host refuses: the sandbox is removed.
    fn refused(&mut self, e: FrameError) -> String {
        self.end(None, None, &format!("protocol error: {e}"))
    }

    /// Warms the egress filter on this thread, the one that will filter
    /// the claim's cells ([`crate::egress::EgressFilter::warm`]), before
    /// the standby is reported: off any claim's path.
    pub fn warm_filters(&self) {
        if let Ok(egress) = self.sandbox.egress.get() {
            egress.warm();
        }
    }

    /// Hands the standby to one claim: `options`' contexts are placed in
    /// the drop directory (a read-only bind mount of each file, or a copy
    /// when the sandbox user may not read it: `contexts::place`), then `hello` and `ready` as for a
    /// cold [`Session::start`]. Consumed: a standby serves one claim.
    pub fn claim(
        self,
        options: SessionOptions,
        handler: Handler,
        cancel: Arc<AtomicBool>,
    ) -> Result<Session, ClaimError> {
        self.begin_claim(options, handler, cancel)?
            .ready()
            .map_err(ClaimError::Failed)
    }

    /// [`Self::claim`] up to `hello`, sent but not answered: the claim's
    /// first cells may be sent behind it ([`Claiming::session`]) before
    /// [`Claiming::ready`] waits.
    pub fn begin_claim(
        mut self,
        options: SessionOptions,
        handler: Handler,
        cancel: Arc<AtomicBool>,
    ) -> Result<Claiming, ClaimError> {
        let since = Instant::now();
        let mut contexts = match describe_contexts(&options, Placement::Mount) {
            Ok(contexts) => contexts,
            Err(e) => return Err(ClaimError::Refused(Box::new(self), e)),
        };
        self.check().map_err(ClaimError::Failed)?;
        let Some(input) = self.launched.as_ref().map(|l| l.guard.dir.input()) else {
            return Err(ClaimError::Failed(SessionError::Dead(
                "the standby sandbox is gone".into(),
            )));
        };
        // From here a failure removes the sandbox: it has seen the claim.
        let mut opened = Vec::with_capacity(contexts.len());
        for (context, (source, _)) in contexts.iter_mut().zip(&options.contexts) {
            match contexts::place(&input, context, source) {
                // Indexed from the file the sandbox sees.
                Ok(file) => opened.push((context.host_path.clone(), file)),
                Err(e) => {
                    let why = format!("the claim's contexts could not be placed: {e}");
                    return Err(ClaimError::Failed(SessionError::Start(
                        self.end(None, None, &why),
                    )));
                }
            }
        }
        let echo = echo::SessionEcho::spawn(opened, self.sandbox.egress.echo_config().clone());
        let (Some(launched), Some(frames)) = (self.launched.take(), self.frames.take()) else {
            return Err(ClaimError::Failed(SessionError::Dead(
                "the standby sandbox is gone".into(),
            )));
        };
        let parts = Parts {
            launched,
            link: self.link.clone(),
            frames,
            contexts,
            echo,
            started: self.started,
        };
        let mut session = Session::assemble(self.sandbox.clone(), options, handler, cancel, parts);
        session.send_hello();
        session.ready.startup_ms = self.startup.as_millis() as u64;
        session.ready.standby = true;
        Ok(Claiming { session, since })
    }

    /// Removes the sandbox (killed unless it exited: `exit`); returns `why`
    /// with how it ended.
    fn end(
        &mut self,
        exit: Option<std::io::Result<std::process::ExitStatus>>,
        ended_by: Option<EndedBy>,
        why: &str,
    ) -> String {
        let Some(launched) = self.launched.take() else {
            return why.to_string();
        };
        let sandbox = self.sandbox.clone();
        end_run(
            &sandbox,
            launched,
            &self.link,
            exit,
            ended_by,
            why,
            self.started,
        )
        .0
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.end(None, None, "the standby was dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool hands standbys and sessions between threads.
    #[test]
    fn standbys_and_sessions_move_between_threads() {
        fn send<T: Send>() {}
        send::<Standby>();
        send::<Session>();
        send::<ClaimError>();
    }
}
