//! The host's end of the frame channel: frames to the agent written by
//! the sending thread itself, and frames from it read by the session's
//! thread when its poll says they are there ([`AgentFrames`]).
//!
//! Neither direction may block the session's thread for long: the agent's
//! stdin is non-blocking and a frame the agent does not take within
//! [`SEND_TIMEOUT`] breaks the link (the session's deadlines then fire and
//! kill the sandbox); frames from it are read one `read` per poll and
//! decoded as they complete, so a frame the agent leaves half-written
//! holds nothing up. No thread hands frames to another: writing in the
//! caller and reading in the session's thread each save a thread hand-off
//! per frame (tens of microseconds on a VM).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
#[cfg(test)]
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::frames::{self, Decoder, Frame, FrameError};

/// How long the agent may leave a frame unread before the link breaks.
/// It reads all the time; only a stuck or hostile agent takes this long.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends frames to the agent, whole and in order, from any thread.
#[derive(Clone)]
pub struct Link {
    to: To,
}

#[derive(Clone)]
enum To {
    /// The agent's stdin; `None` once closed or broken.
    Agent(Arc<Mutex<Option<File>>>),
    /// Frames as values (tests).
    #[cfg(test)]
    Channel(mpsc::Sender<Option<serde_json::Value>>),
}

/// The frames the agent sends, read by the session's thread.
pub struct AgentFrames {
    pipe: std::fs::File,
    decoder: Decoder,
    chunk: Vec<u8>,
    /// The agent closed its end (it exited or died).
    ended: bool,
}

impl AgentFrames {
    /// Frames from `pipe` (the agent's stdout), at most `max_frame` bytes.
    pub(crate) fn new(pipe: std::fs::File, max_frame: usize) -> AgentFrames {
        AgentFrames {
            pipe,
            decoder: Decoder::new(max_frame),
            chunk: vec![0; frames::MAX_CHUNK + 8],
            ended: false,
        }
    }

    /// What to poll for the agent's frames.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// The next whole frame read so far. An error ends the channel: the
    /// host refuses it and reads nothing more.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.decoder.next_frame()
    }

    /// The agent closed its end and every whole frame has been taken; an
    /// end inside a frame is an error.
    pub fn ended(&self) -> Result<bool, FrameError> {
        match (self.ended, self.decoder.in_frame()) {
            (false, _) => Ok(false),
            (true, false) => Ok(true),
            (true, true) => Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }

    /// One read of what the pipe holds: call it when a poll said it is
    /// readable, so it does not block.
    pub fn fill(&mut self) -> Result<(), FrameError> {
        if self.ended {
            return Ok(());
        }
        match self.pipe.read(&mut self.chunk) {
            Ok(0) => self.ended = true,
            Ok(n) => self.decoder.push(&self.chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

impl Link {
    /// Frames to the agent's `stdin` (made non-blocking).
    pub(crate) fn start(stdin: File) -> Link {
        let stdin = set_nonblocking(&stdin).map(|()| stdin).ok();
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
fn write_all_by(pipe: &mut File, mut data: &[u8], deadline: Instant) -> bool {
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
