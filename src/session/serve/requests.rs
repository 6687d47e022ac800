//! The orchestrator's request lines, read by the session's thread itself
//! (no reader thread hands them over): bounded lines, parsed strictly,
//! `call_result`s routed to the waiting call.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Orchestrator, Output, Request, MAX_LINE};
use crate::session::calls::CallOutcome;
use crate::session::leaving::kind_of;
use crate::session::Input;

/// Whether this process's stdout is a pipe whose reading end is closed.
pub(super) fn stdout_unread() -> bool {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let mut fds = [nix::poll::PollFd::new(
        stdout.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(nix::poll::PollFlags::POLLERR))
}

/// The orchestrator's request lines, read by the session's thread (the
/// serve loop between requests, the session's wait during one); clones
/// share one reader.
#[derive(Clone)]
pub(super) struct RequestInput {
    fd: Arc<OwnedFd>,
    requests: Arc<Mutex<Requests>>,
}

/// The input has ended and every request read was taken.
pub(super) struct Ended;

pub(super) struct Requests {
    lines: Lines,
    chunk: Vec<u8>,
    queue: VecDeque<Request>,
    ended: bool,
    out: Output,
    orchestrator: Arc<Orchestrator>,
    cancel: Arc<AtomicBool>,
    /// True when nobody reads `out` any more.
    unread: Box<dyn Fn() -> bool + Send>,
}

impl RequestInput {
    pub(super) fn new(
        fd: OwnedFd,
        out: Output,
        orchestrator: Arc<Orchestrator>,
        cancel: Arc<AtomicBool>,
        unread: Box<dyn Fn() -> bool + Send>,
    ) -> RequestInput {
        RequestInput {
            fd: Arc::new(fd),
            requests: Arc::new(Mutex::new(Requests {
                lines: Lines::new(MAX_LINE),
                chunk: vec![0; 1 << 16],
                queue: VecDeque::new(),
                ended: false,
                out,
                orchestrator,
                cancel,
                unread,
            })),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next request read, `Err(Ended)` after the last one, `None`
    /// while more may come.
    pub(super) fn next(&self) -> Option<Result<Request, Ended>> {
        let mut requests = self.lock();
        match requests.queue.pop_front() {
            Some(r) => Some(Ok(r)),
            None if requests.ended => Some(Err(Ended)),
            None => None,
        }
    }

    /// The next request read when `take` accepts it (see [`Self::next`]).
    pub(super) fn next_if(&self, take: impl FnOnce(&Request) -> bool) -> Option<Request> {
        let mut requests = self.lock();
        if take(requests.queue.front()?) {
            requests.queue.pop_front()
        } else {
            None
        }
    }

    /// Puts a request taken back where it was: first.
    pub(super) fn push_front(&self, request: Request) {
        self.lock().queue.push_front(request);
    }

    /// Waits up to `wait` for input, and reads it.
    pub(super) fn wait(&mut self, wait: Duration) {
        let Some(fd) = self.fd() else { return };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).is_ok()
            && fds[0].revents().is_some_and(|r| !r.is_empty());
        if ready {
            self.readable();
        }
    }
}

impl Input for RequestInput {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.lock().ended).then(|| self.fd.as_fd())
    }

    fn readable(&mut self) {
        self.lock().read(self.fd.as_fd());
    }
}

impl Requests {
    /// One read of `fd` (readable: it does not block), its lines handled.
    fn read(&mut self, fd: BorrowedFd<'_>) {
        if self.ended {
            return;
        }
        use std::os::fd::AsRawFd;
        match nix::unistd::read(fd.as_raw_fd(), &mut self.chunk) {
            Ok(0) => self.end(),
            Ok(n) => {
                let mut lines = Vec::new();
                self.lines.push(&self.chunk[..n], |line| lines.push(line));
                for line in lines {
                    self.line(line);
                }
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(_) => self.end(),
        }
    }

    /// The end of input: a last line without its newline is a line.
    fn end(&mut self) {
        if let Some(line) = self.lines.finish() {
            self.line(line);
        }
        self.ended = true;
        // Nobody can answer a call any more: fail them now, not at their
        // timeout, so a cell waiting on one ends.
        self.orchestrator.close("the orchestrator closed its input");
        // Input ended and nobody reads the output either: the orchestrator
        // is gone (killed), so the running cell's result has no reader.
        // End it and the sandbox now rather than at the cell's timeout.
        // (Input ended with output still read, as in `printf ... |
        // rlm-sandbox session`, runs what was queued.)
        if (self.unread)() {
            self.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// One line: a bad one answered at once, a `call_result` handed to its
    /// call, a request queued.
    fn line(&mut self, line: Line) {
        let line = match line {
            Line::TooLong(n) => {
                self.out.line(&bad(
                    Value::Null,
                    format!(
                        "a request line of more than {n} bytes was skipped (the limit is {MAX_LINE})"
                    ),
                ));
                return;
            }
            Line::Full(line) => line,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match parse_request(&line) {
            Ok(Parsed::Request(r)) => self.queue.push_back(r),
            Ok(Parsed::CallResult { call, outcome }) => {
                if let Err(e) = self.orchestrator.answer(call, outcome) {
                    self.out.line(&bad(Value::Null, e));
                }
            }
            Err((id, message)) => {
                self.out.line(&bad(id, message));
            }
        }
    }
}

pub(super) fn bad(id: Value, message: String) -> Value {
    json!({"id": id, "ok": false, "error": {"kind": "bad_request", "message": message}})
}

pub(super) enum Parsed {
    Request(Request),
    CallResult { call: u64, outcome: CallOutcome },
}

/// One request line, strictly: an object with `op` (and `id` except for
/// `call_result`); the error names what is wrong, with the id when known.
pub(super) fn parse_request(line: &[u8]) -> Result<Parsed, (Value, String)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, format!("the line is not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err((
            Value::Null,
            format!("a request must be a JSON object, got {}", kind_of(&value)),
        ));
    };
    let op = match body.remove("op") {
        Some(Value::String(op)) => op,
        None => {
            let id = body.remove("id").unwrap_or(Value::Null);
            return Err((id, "missing field \"op\"".into()));
        }
        Some(other) => {
            let id = body.remove("id").unwrap_or(Value::Null);
            return Err((
                id,
                format!("field \"op\" must be a string, got {}", kind_of(&other)),
            ));
        }
    };
    if op == "call_result" {
        let call = body.get("call").and_then(Value::as_u64).ok_or_else(|| {
            (
                Value::Null,
                "call_result needs \"call\": the call's number".to_string(),
            )
        })?;
        let outcome = match (body.remove("results"), body.remove("error")) {
            (Some(Value::Array(results)), None) => Ok(results),
            (None, Some(Value::String(error))) => Err(error),
            _ => {
                return Err((
                    Value::Null,
                    format!("call_result {call} needs either \"results\" (an array) or \"error\" (a string)"),
                ))
            }
        };
        return Ok(Parsed::CallResult { call, outcome });
    }
    let Some(id) = body.remove("id") else {
        return Err((
            Value::Null,
            format!("request {op:?} is missing field \"id\""),
        ));
    };
    Ok(Parsed::Request(Request { id, op, body }))
}

pub(super) enum Line {
    Full(Vec<u8>),
    TooLong(usize),
}

/// Lines from bytes as they are read, each at most `max` bytes (without
/// its newline): a longer one is consumed to its end and reported, and
/// never held.
pub(super) struct Lines {
    buf: Vec<u8>,
    too_long: bool,
    max: usize,
}

impl Lines {
    pub(super) fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            too_long: false,
            max,
        }
    }

    /// Gives `each` every line `bytes` completes.
    pub(super) fn push(&mut self, mut bytes: &[u8], mut each: impl FnMut(Line)) {
        while !bytes.is_empty() {
            let (chunk, used) = match memchr::memchr(b'\n', bytes) {
                Some(i) => (&bytes[..i], Some(i + 1)),
                None => (bytes, None),
            };
            if !self.too_long && self.buf.len() + chunk.len() <= self.max {
                self.buf.extend_from_slice(chunk);
            } else {
                self.too_long = true;
                self.buf = Vec::new();
            }
            let Some(used) = used else { return };
            bytes = &bytes[used..];
            each(self.take());
        }
    }

    /// At the end of input: the last line, if it had no newline.
    pub(super) fn finish(&mut self) -> Option<Line> {
        (self.too_long || !self.buf.is_empty()).then(|| self.take())
    }

    pub(super) fn take(&mut self) -> Line {
        if std::mem::take(&mut self.too_long) {
            self.buf = Vec::new();
            Line::TooLong(self.max)
        } else {
            Line::Full(std::mem::take(&mut self.buf))
        }
    }
}
