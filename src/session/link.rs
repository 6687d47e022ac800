//! The host's end of the frame channel: frames to the agent written by
//! the sending thread itself, and a reader thread for frames from it.
//!
//! Neither direction may block the session's thread for long: the agent's
//! stdin is non-blocking and a frame the agent does not take within
//! [`SEND_TIMEOUT`] breaks the link (the session's deadlines then fire and
//! kill the sandbox); everything read becomes events on the sandbox's
//! event channel. Writing in the caller, not in a writer thread, saves a
//! thread hand-off per frame (tens of microseconds on a VM).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::process::ChildStdin;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::frames::{self, Frame};
use crate::supervise::launch::Event;

/// How long the agent may leave a frame unread before the link breaks.
/// Its reader thread reads all the time; only a stuck or hostile agent
/// takes this long.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reader thread saw.
#[derive(Debug)]
pub enum Inbound {
    Frame(Frame),
    /// A frame the host refuses; nothing more is read.
    Broken(String),
    /// The agent closed its end (it exited or died).
    Eof,
}

/// Sends frames to the agent, whole and in order, from any thread.
#[derive(Clone)]
pub struct Link {
    to: To,
}

#[derive(Clone)]
enum To {
    /// The agent's stdin; `None` once closed or broken.
    Agent(Arc<Mutex<Option<ChildStdin>>>),
    /// Frames as values (tests).
    #[cfg(test)]
    Channel(mpsc::Sender<Option<serde_json::Value>>),
}

impl Link {
    /// Makes `stdin` non-blocking and starts the reader thread on
    /// `frames`, whose events go to `events`.
    pub(crate) fn start(
        stdin: ChildStdin,
        frames: std::fs::File,
        max_frame: usize,
        events: mpsc::Sender<Event<Inbound>>,
    ) -> Link {
        let stdin = set_nonblocking(&stdin).map(|()| stdin).ok();
        std::thread::spawn(move || read_loop(frames, max_frame, events));
        Link {
            to: To::Agent(Arc::new(Mutex::new(stdin))),
        }
    }

    /// A link whose frames go to the returned receiver (tests).
    #[cfg(test)]
    pub(crate) fn channel() -> (Link, mpsc::Receiver<Option<serde_json::Value>>) {
        let (tx, rx) = mpsc::channel();
        (
            Link {
                to: To::Channel(tx),
            },
            rx,
        )
    }

    /// Writes `msg` as one frame; false once the agent's stdin is gone
    /// (closed, broken, or a frame not taken within [`SEND_TIMEOUT`]).
    pub fn send(&self, msg: serde_json::Value) -> bool {
        match &self.to {
            To::Agent(stdin) => {
                let mut frame = Vec::new();
                if frames::write_msg(&mut frame, &msg).is_err() {
                    return false;
                }
                let mut guard = stdin.lock().unwrap_or_else(|e| e.into_inner());
                let Some(pipe) = guard.as_mut() else {
                    return false;
                };
                let ok = write_all_by(pipe, &frame, Instant::now() + SEND_TIMEOUT);
                if !ok {
                    *guard = None;
                }
                ok
            }
            #[cfg(test)]
            To::Channel(tx) => tx.send(Some(msg)).is_ok(),
        }
    }

    /// Closes the agent's stdin (after any frame being written); the agent
    /// then exits.
    pub fn close(&self) {
        match &self.to {
            To::Agent(stdin) => drop(stdin.lock().unwrap_or_else(|e| e.into_inner()).take()),
            #[cfg(test)]
            To::Channel(tx) => drop(tx.send(None)),
        }
    }
}

fn set_nonblocking(fd: &impl AsRawFd) -> nix::Result<()> {
    let fd = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// Writes all of `data` to the non-blocking `pipe`, waiting for room until
/// `deadline`; false on an error or at the deadline.
fn write_all_by(pipe: &mut ChildStdin, mut data: &[u8], deadline: Instant) -> bool {
    while !data.is_empty() {
        match pipe.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        }
    }
    true
}

fn read_loop(frames: std::fs::File, max_frame: usize, events: mpsc::Sender<Event<Inbound>>) {
    let mut input = std::io::BufReader::with_capacity(frames::MAX_CHUNK + 8, frames);
    loop {
        let event = match frames::read_frame(&mut input, max_frame) {
            Ok(Some(frame)) => Inbound::Frame(frame),
            Ok(None) => Inbound::Eof,
            Err(e) => Inbound::Broken(e.to_string()),
        };
        let last = !matches!(event, Inbound::Frame(_));
        if events.send(Event::Caller(event)).is_err() || last {
            return;
        }
    }
}
