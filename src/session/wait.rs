//! The session thread's one wait: the agent's frames, the sandbox's events
//! (its exit, the output ceiling) and, when the caller attached one, its
//! own input (serve.rs: the orchestrator's requests, whose `call_result`s
//! must get through while a cell runs), all in one `poll`. No reader
//! thread hands this thread what it read: on a VM each such hand-off is a
//! wake-up costing tens of microseconds, several per cell.

use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::frames::{AgentMsg, Frame};
use super::{Interrupt, Session};
use crate::supervise::launch::Event;

/// Another source the session's thread waits on beside the agent (the
/// serve loop's request lines), polled with the agent's frames.
pub trait Input: Send {
    /// What to poll; `None` once it has ended.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    /// Its descriptor is readable (or at its end): one read, which then
    /// does not block.
    fn readable(&mut self);
}

impl Session {
    /// Has the session's waits poll `input` too (until it ends).
    pub fn attach_input(&mut self, input: Box<dyn Input>) {
        self.input = Some(input);
    }

    /// The next frame other than a call, until `deadline` (`Ok(None)`).
    /// Calls go to the broker; the attached input is served meanwhile.
    pub(crate) fn next_event(&mut self, deadline: Instant) -> Result<Option<Frame>, Interrupt> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Interrupt::Cancelled);
            }
            if self.launched.is_none() {
                return Err(Interrupt::Died(self.dead.clone().unwrap_or_default()));
            }
            match self.frames.next_frame() {
                Ok(Some(Frame::Msg(AgentMsg::Call(call)))) => {
                    self.submit(call);
                    continue;
                }
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => return Err(self.broken(e)),
            }
            match self.frames.ended() {
                Ok(false) => {}
                Ok(true) => return Err(Interrupt::Died(self.die("the agent exited".into(), None))),
                Err(e) => return Err(self.broken(e)),
            }
            let event = match &self.launched {
                Some(launched) => launched.events.try_recv(),
                None => continue,
            };
            match event {
                Ok(Event::Exited(exit)) => {
                    let why = match &exit {
                        Ok(status) => format!("the agent's sandbox exited ({status})"),
                        Err(e) => format!("the agent's sandbox ended: {e}"),
                    };
                    return Err(Interrupt::Died(self.finish(Some(exit), None, why)));
                }
                Ok(Event::OutputCeiling) => continue,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(Interrupt::Died(
                        self.die("the sandbox's events stopped".into(), None),
                    ))
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let (frames, input) = self.poll((deadline - now).min(crate::supervise::TICK));
            if frames {
                if let Err(e) = self.frames.fill() {
                    return Err(self.broken(e));
                }
            }
            if input {
                if let Some(input) = self.input.as_mut() {
                    input.readable();
                }
            }
        }
    }

    /// Waits up to `wait` for the agent's frames, an event or the input:
    /// whether the frames and the input are readable.
    fn poll(&self, wait: std::time::Duration) -> (bool, bool) {
        let Some(launched) = &self.launched else {
            return (false, false);
        };
        let mut fds = vec![
            PollFd::new(self.frames.fd(), PollFlags::POLLIN),
            PollFd::new(launched.events.wake_fd(), PollFlags::POLLIN),
        ];
        if let Some(fd) = self.input.as_ref().and_then(|i| i.fd()) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        // Whole milliseconds, rounded up: a deadline is never polled past
        // by less than one, and never spun on.
        let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => {}
            // A signal: the loop checks the cancel flag.
            Err(nix::errno::Errno::EINTR) => return (false, false),
            // Not for these descriptors (ENOMEM): wait as asked, then try
            // again, rather than spin.
            Err(_) => {
                std::thread::sleep(wait);
                return (false, false);
            }
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        (ready(&fds[0]), fds.get(2).is_some_and(ready))
    }

    /// A frame the host refuses: the sandbox is killed.
    fn broken(&mut self, e: super::frames::FrameError) -> Interrupt {
        let why = format!("protocol error: {e}; the sandbox was killed");
        Interrupt::Died(self.die(why, None))
    }
}
