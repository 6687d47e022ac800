//! A run's events (the runtime exited, the output ceiling), from the
//! threads that see them to the thread supervising the run:
//! a channel, and a pipe that becomes readable whenever an event is sent,
//! so that thread can wait for events and for its own descriptors (a
//! session's frames and requests) in one `poll`, without a thread per
//! descriptor handing it what it read (a hand-off costs tens of
//! microseconds on a VM).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::fcntl::OFlag;

pub(crate) enum Event {
    Exited(std::io::Result<ExitStatus>),
    OutputCeiling,
}

/// Sends events, from any thread.
#[derive(Clone)]
pub(crate) struct EventSender {
    tx: mpsc::Sender<Event>,
    wake: Arc<OwnedFd>,
}

impl EventSender {
    /// Sends `event` and makes the wake pipe readable; false when nobody
    /// receives any more.
    pub(crate) fn send(&self, event: Event) -> bool {
        if self.tx.send(event).is_err() {
            return false;
        }
        // A full pipe (the receiver drains it only when it polls) is
        // readable already: a failed write loses nothing.
        let _ = nix::unistd::write(self.wake.as_fd(), b"e");
        true
    }
}

/// The supervising thread's end.
pub(crate) struct Events {
    rx: mpsc::Receiver<Event>,
    wake: OwnedFd,
}

impl Events {
    /// A new channel and its wake pipe (both ends non-blocking).
    pub(crate) fn channel() -> std::io::Result<(EventSender, Events)> {
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (tx, rx) = mpsc::channel();
        Ok((
            EventSender {
                tx,
                wake: Arc::new(wake_w),
            },
            Events { rx, wake: wake_r },
        ))
    }

    /// Waits up to `timeout` for the next event.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<Event, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The next event if one was sent, without waiting. Empties the wake
    /// pipe first, so an event sent after this returned `Empty` leaves it
    /// readable: poll [`Self::wake_fd`] with the caller's descriptors,
    /// then call this again.
    pub(crate) fn try_recv(&self) -> Result<Event, mpsc::TryRecvError> {
        let mut sink = [0u8; 64];
        while matches!(nix::unistd::read(self.wake.as_raw_fd(), &mut sink), Ok(n) if n > 0) {}
        self.rx.try_recv()
    }

    /// Readable when an event may be waiting (see [`Self::try_recv`]).
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn readable(events: &Events) -> bool {
        let mut fds = [PollFd::new(events.wake_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    #[test]
    fn an_event_from_another_thread_makes_the_wake_pipe_readable() {
        let (tx, events) = Events::channel().unwrap();
        assert!(matches!(events.try_recv(), Err(mpsc::TryRecvError::Empty)));
        assert!(!readable(&events));
        let sender = tx.clone();
        std::thread::spawn(move || assert!(sender.send(Event::OutputCeiling)))
            .join()
            .unwrap();
        assert!(readable(&events));
        assert!(matches!(events.try_recv(), Ok(Event::OutputCeiling)));
        // Drained by the receive: nothing more is signalled.
        assert!(!readable(&events));
        // With every sender gone the pipe is at its end (readable for
        // good), and the channel says so.
        drop(tx);
        assert!(readable(&events));
        assert!(matches!(
            events.try_recv(),
            Err(mpsc::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn many_events_fill_the_pipe_without_blocking_or_loss() {
        let (tx, events) = Events::channel().unwrap();
        for _ in 0..100_000 {
            assert!(tx.send(Event::OutputCeiling));
        }
        let mut n = 0;
        while let Ok(Event::OutputCeiling) = events.try_recv() {
            n += 1;
        }
        assert_eq!(n, 100_000);
    }
}
