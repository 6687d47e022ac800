//! The host's end of the frame channel: a writer thread for frames to the
//! agent and a reader thread for frames from it.
//!
//! Neither direction may block the session's own thread: a sandbox that
//! stops reading its stdin stalls only the writer thread (the session's
//! deadlines still fire and kill the sandbox, which breaks the pipe), and
//! everything read is turned into events on the sandbox's event channel.

use std::io::Write;
use std::process::ChildStdin;
use std::sync::mpsc;

use super::frames::{self, Frame};
use crate::supervise::launch::Event;

/// What the reader thread saw.
#[derive(Debug)]
pub enum Inbound {
    Frame(Frame),
    /// A frame the host refuses; nothing more is read.
    Broken(String),
    /// The agent closed its end (it exited or died).
    Eof,
}

/// Sends frames to the agent, in order, from any thread.
#[derive(Clone)]
pub struct Link {
    /// `None` closes the agent's stdin (the agent then exits).
    tx: mpsc::Sender<Option<serde_json::Value>>,
}

impl Link {
    /// Starts the writer thread on `stdin` and the reader thread on
    /// `frames`, whose events go to `events`.
    pub(crate) fn start(
        stdin: ChildStdin,
        frames: std::fs::File,
        max_frame: usize,
        events: mpsc::Sender<Event>,
    ) -> Link {
        let (tx, rx) = mpsc::channel::<Option<serde_json::Value>>();
        std::thread::spawn(move || write_loop(stdin, rx));
        std::thread::spawn(move || read_loop(frames, max_frame, events));
        Link { tx }
    }

    /// A link whose frames go to the returned receiver (tests).
    #[cfg(test)]
    pub(crate) fn channel() -> (Link, mpsc::Receiver<Option<serde_json::Value>>) {
        let (tx, rx) = mpsc::channel();
        (Link { tx }, rx)
    }

    /// Queues `msg`; false once the agent's stdin is gone.
    pub fn send(&self, msg: serde_json::Value) -> bool {
        self.tx.send(Some(msg)).is_ok()
    }

    /// Closes the agent's stdin once everything queued before is written.
    pub fn close(&self) {
        let _ = self.tx.send(None);
    }
}

fn write_loop(stdin: ChildStdin, rx: mpsc::Receiver<Option<serde_json::Value>>) {
    let mut out = std::io::BufWriter::new(stdin);
    while let Ok(Some(msg)) = rx.recv() {
        let mut ok = frames::write_msg(&mut out, &msg).is_ok();
        // Everything queued meanwhile goes out in the same flush.
        let mut closing = false;
        while ok {
            match rx.try_recv() {
                Ok(Some(msg)) => ok = frames::write_msg(&mut out, &msg).is_ok(),
                Ok(None) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !ok || out.flush().is_err() || closing {
            return;
        }
    }
}

fn read_loop(frames: std::fs::File, max_frame: usize, events: mpsc::Sender<Event>) {
    let mut input = std::io::BufReader::with_capacity(frames::MAX_CHUNK + 8, frames);
    loop {
        let event = match frames::read_frame(&mut input, max_frame) {
            Ok(Some(frame)) => Inbound::Frame(frame),
            Ok(None) => Inbound::Eof,
            Err(e) => Inbound::Broken(e.to_string()),
        };
        let last = !matches!(event, Inbound::Frame(_));
        if events.send(Event::Agent(event)).is_err() || last {
            return;
        }
    }
}
