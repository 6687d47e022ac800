//! The JSON-lines protocol of `rlm-sandbox session` (docs/PROTOCOL.md,
//! "Session protocol"): requests on one stream, responses and events on
//! another, one object per line, over a [`Session`].
//!
//! The session's thread reads the lines itself ([`RequestInput`]): between
//! requests the serve loop polls them, during one the session's wait polls
//! them with the agent's frames (wait.rs), so no reader thread hands it
//! each request. Every line is parsed as it arrives: `call_result` goes
//! straight to the call waiting for it (a cell may be running), everything
//! else is queued, and the session's thread answers each request with
//! exactly one response. A bad line gets an error response and the
//! session lives on.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::calls::{CallHandler, CallKind, CallOutcome, CallRequest};
use super::contexts::{Format, Source};
use super::leaving::kind_of;
use super::{Handler, SentCell, Session, SessionError, SessionOptions};
use crate::supervise::Sandbox;

mod exec;
mod requests;
mod standby;

use exec::{send_ahead, Ahead, ExecRequest};
use requests::{bad, stdout_unread, Ended, RequestInput};
pub use standby::{serve_standby, Begin, BEGIN_FORM};

/// Longest request line read; a longer one is refused (and skipped).
pub const MAX_LINE: usize = 64 << 20;

/// The session's output: responses and events, one line each, written
/// whole under a lock (calls and responses come from several threads).
#[derive(Clone)]
pub struct Output(Arc<Mutex<Box<dyn Write + Send>>>);

impl Output {
    pub fn new(w: impl Write + Send + 'static) -> Output {
        Output(Arc::new(Mutex::new(Box::new(w))))
    }

    /// Writes `value` as one line; false when the reader is gone.
    pub fn line(&self, value: &Value) -> bool {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&line).and_then(|_| out.flush()).is_ok()
    }
}

/// Calls answered by the orchestrator: a `call` event out, a
/// `call_result` request back.
pub struct Orchestrator {
    out: Output,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::Sender<CallOutcome>>>,
    closed: AtomicBool,
}

impl Orchestrator {
    pub fn new(out: Output) -> Orchestrator {
        Orchestrator {
            out,
            next: AtomicU64::new(1),
            pending: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Hands `outcome` to call `id`; an error when no such call waits.
    pub fn answer(&self, id: u64, outcome: CallOutcome) -> Result<(), String> {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(outcome);
                Ok(())
            }
            None => Err(format!("no call {id} is waiting for a result")),
        }
    }

    /// Fails every waiting call, and every later one: nobody will answer.
    pub fn close(&self, why: &str) {
        self.closed.store(true, Ordering::Relaxed);
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, tx) in pending {
            let _ = tx.send(Err(why.to_string()));
        }
    }
}

impl CallHandler for Orchestrator {
    fn call(&self, request: &CallRequest, deadline: Instant) -> CallOutcome {
        if self.closed.load(Ordering::Relaxed) {
            return Err("the orchestrator closed its input".into());
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut event = json!({
            "event": "call",
            "call": id,
            "kind": request.kind.as_str(),
            "model": request.model,
        });
        if request.kind == CallKind::Tool {
            event["name"] = json!(request.name);
            event["args"] = json!(request.args);
        } else {
            event["prompts"] = json!(request.prompts);
        }
        if !self.out.line(&event) {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err("the orchestrator's output is closed".into());
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let outcome = rx.recv_timeout(wait);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err("the orchestrator did not answer in time (RLM_LLM_TIMEOUT)".into()),
        }
    }
}

/// Who answers the session's calls.
pub enum Backend {
    /// The orchestrator on the other end of the JSON lines.
    Orchestrator,
    /// A handler of the host's, with the name the `ready` event gives it
    /// (`command`, `endpoint`).
    Handler(Handler, &'static str),
}

impl Backend {
    /// Who answers calls, as the `ready` event's `calls_answered_by` says.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Orchestrator => "orchestrator",
            Backend::Handler(_, name) => name,
        }
    }
}

/// A request for the session's thread.
struct Request {
    id: Value,
    op: String,
    body: Map<String, Value>,
}

/// Serves one session over `input`/`out` until `close`, the end of
/// `input`, or `cancel`. Returns the process's exit code: 0, or 130 when
/// cancelled. The first line written is the `ready` event (or an `error`
/// event when the session could not start, then exit code 1). `input` is
/// read with one `read` each time a poll finds it readable: it needs not be
/// non-blocking (a terminal's stdin stays as it is).
pub fn serve(
    sandbox: Arc<Sandbox>,
    options: SessionOptions,
    backend: Backend,
    input: OwnedFd,
    out: Output,
    cancel: Arc<AtomicBool>,
) -> i32 {
    let start = |handler, cancel| Session::start(sandbox, options, handler, cancel);
    serve_with(start, backend, input, out, cancel, Peer::stdio())
}

/// Who is on the other end besides its two streams: how to tell that
/// nobody reads the output any more (asked when the input ends: a peer
/// that only closed its input still reads what was queued), and a flag
/// asking the session to end between requests (a server shutting down).
pub struct Peer {
    pub unread: Box<dyn Fn() -> bool + Send>,
    pub drain: Arc<AtomicBool>,
    /// Turns an `add_context` path into the context's source, or refuses
    /// it (a server opens it with its client's credentials).
    pub contexts: ContextGate,
}

/// See [`Peer::contexts`].
pub type ContextGate = Box<dyn FnMut(&std::path::Path) -> Result<Source, SessionError> + Send>;

impl Peer {
    /// Its unread check (for the requests' reader) and what it adds to
    /// each request (the gate `drive` takes).
    fn split(self) -> (Box<dyn Fn() -> bool + Send>, Gate) {
        let gate = Gate {
            drain: self.drain,
            contexts: self.contexts,
        };
        (self.unread, gate)
    }

    /// This process's stdin and stdout (`rlm-sandbox session`).
    pub fn stdio() -> Peer {
        Peer {
            unread: Box::new(stdout_unread),
            drain: Arc::new(AtomicBool::new(false)),
            contexts: Box::new(|p| Ok(Source::Path(p.to_path_buf()))),
        }
    }
}

/// [`serve`] of a session `start` gives (with its call handler and
/// cancel flag): a cold start, or a claim from a pool.
pub fn serve_with(
    start: impl FnOnce(Handler, Arc<AtomicBool>) -> Result<Session, SessionError>,
    backend: Backend,
    input: OwnedFd,
    out: Output,
    cancel: Arc<AtomicBool>,
    peer: Peer,
) -> i32 {
    let orchestrator = Arc::new(Orchestrator::new(out.clone()));
    let answered_by = backend.name();
    let handler = backend.handler(&orchestrator);
    let session = match start(handler, cancel.clone()) {
        Ok(session) => session,
        Err(e) => return start_failed(&out, &e, None),
    };
    out.line(&ready_event(&session, answered_by, None));
    let (unread, gate) = peer.split();
    let requests = RequestInput::new(
        input,
        out.clone(),
        orchestrator.clone(),
        cancel.clone(),
        unread,
    );
    drive(session, requests, &out, &orchestrator, &cancel, gate, None)
}

impl Backend {
    /// The handler the session's calls go to.
    fn handler(self, orchestrator: &Arc<Orchestrator>) -> Handler {
        match self {
            Backend::Orchestrator => Handler::Calls(orchestrator.clone()),
            Backend::Handler(h, _) => h,
        }
    }
}

/// Writes the `error` event of a session that could not start (with the
/// `id` of the request that started it, if any); the exit code.
fn start_failed(out: &Output, e: &SessionError, id: Option<&Value>) -> i32 {
    let mut event = json!({"event": "error", "error": error_object(e)});
    if let Some(id) = id {
        event["id"] = id.clone();
    }
    out.line(&event);
    if matches!(e.kind(), "interrupted") {
        130
    } else {
        1
    }
}

/// The `ready` event: the session's report, who answers its calls, and
/// the `id` of the request that started it (a standby's `begin`).
fn ready_event(session: &Session, answered_by: &str, id: Option<&Value>) -> Value {
    let mut ready = serde_json::to_value(session.ready()).unwrap_or_default();
    ready["event"] = json!("ready");
    ready["calls_answered_by"] = json!(answered_by);
    if let Some(id) = id {
        ready["id"] = id.clone();
    }
    ready
}

/// What a served session's peer adds to its requests: the drain flag
/// and the gate of its `add_context` paths (see [`Peer`]).
struct Gate {
    drain: Arc<AtomicBool>,
    contexts: ContextGate,
}

/// Answers the requests read from `requests` over the started `session`
/// until `close`, the end of input or `cancel`; the exit code. The
/// session's waits read the requests too (a `call_result` during a cell).
fn drive(
    mut session: Session,
    mut requests: RequestInput,
    out: &Output,
    orchestrator: &Orchestrator,
    cancel: &AtomicBool,
    mut gate: Gate,
    mut ahead: Option<Ahead>,
) -> i32 {
    session.attach_input(Box::new(requests.clone()));
    loop {
        if cancel.load(Ordering::Relaxed) {
            drop(session);
            return 130;
        }
        // A cell sent ahead is running or about to: answered first, as a
        // cell under way is.
        if ahead.is_none() && gate.drain.load(Ordering::Relaxed) {
            orchestrator.close("the session is ending: its server is shutting down");
            let _ = session.close();
            out.line(&json!({"event": "error", "error": {
                "kind": "shutdown",
                "message": "the server is shutting down; the session was closed between requests",
            }}));
            return 130;
        }
        let (request, sent) = match ahead.take() {
            Some(Ahead {
                request,
                exec,
                sent,
            }) => (request, Some((exec, sent))),
            None => match requests.next() {
                Some(Ok(r)) => (r, None),
                Some(Err(Ended)) => break,
                None => {
                    requests.wait(crate::supervise::TICK);
                    continue;
                }
            },
        };
        let closing = request.op == "close";
        let answered = match sent {
            Some((exec, sent)) => {
                run_exec(&mut session, &mut requests, &exec, Some(sent), &mut ahead)
            }
            None if request.op == "exec" => ExecRequest::parse(&request.body)
                .and_then(|exec| run_exec(&mut session, &mut requests, &exec, None, &mut ahead)),
            None => handle(&mut session, &request, &mut gate.contexts),
        };
        let response = match answered {
            Ok(mut fields) => {
                fields.insert("id".into(), request.id);
                fields.insert("ok".into(), json!(true));
                Value::Object(fields)
            }
            Err(e) => {
                if e.kind() == "interrupted" {
                    // Ended by the server's shutdown (the grace is over,
                    // drain came first): the request is answered, so the
                    // client is not left with an end and no word why. A
                    // peer that hung up gets nothing: it is gone.
                    if gate.drain.load(Ordering::Relaxed) {
                        out.line(&json!({"id": request.id, "ok": false, "error": {
                            "kind": "shutdown",
                            "message": "the server is shutting down; the request did not end within its grace period (serve --grace) and the session was ended",
                        }}));
                    }
                    return 130;
                }
                json!({"id": request.id, "ok": false, "error": error_object(&e)})
            }
        };
        if closing {
            // Removed before the answer, so "ok" means gone.
            let closed = session.close();
            let response = match closed {
                Ok(()) => response,
                Err(e) => json!({"id": response["id"], "ok": false, "error": error_object(&e)}),
            };
            out.line(&response);
            return 0;
        }
        out.line(&response);
    }
    orchestrator.close("the orchestrator closed its input");
    let _ = session.close();
    0
}

/// One `exec`: sent (unless it went ahead), the next `exec` read sent
/// behind it (not behind a script, whose end may end the session), then
/// its end read.
fn run_exec(
    session: &mut Session,
    requests: &mut RequestInput,
    exec: &ExecRequest,
    sent: Option<SentCell>,
    ahead: &mut Option<Ahead>,
) -> Result<Map<String, Value>, SessionError> {
    let sent = match sent {
        Some(sent) => sent,
        None => exec.send(session)?,
    };
    if !exec.script() {
        *ahead = send_ahead(session, requests);
    }
    exec.finish(session, sent)
}

fn error_object(e: &SessionError) -> Value {
    json!({"kind": e.kind(), "message": e.to_string()})
}

/// Carries out one request; its fields beside `id` and `ok`.
fn handle(
    session: &mut Session,
    r: &Request,
    contexts: &mut ContextGate,
) -> Result<Map<String, Value>, SessionError> {
    let mut out = Map::new();
    match r.op.as_str() {
        "vars" => {
            let (vars, findings) = session.vars_filtered()?;
            out.insert("vars".into(), vars);
            out.insert("findings".into(), json!(findings));
        }
        "get" => out = session.get(str_field(&r.body, "name")?)?,
        "add_context" => {
            let path = PathBuf::from(str_field(&r.body, "path")?);
            let format = match r.body.get("format") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Format::parse(s).map_err(SessionError::Request)?),
                Some(other) => {
                    return Err(SessionError::Request(format!(
                        "field \"format\" must be \"text\" or \"json\", got {other}"
                    )))
                }
            };
            // The format comes from the path asked for, not the one opened.
            let format = format.or(Some(Format::of(&path)));
            let source = contexts(&path)?;
            let context = session.add_context(&source, format)?;
            out.insert("context".into(), serde_json::to_value(context).unwrap_or_default());
        }
        "reset" => session.reset()?,
        "stats" => {
            out.insert("usage".into(), serde_json::to_value(session.usage()).unwrap_or_default());
            out.insert("alive".into(), json!(session.dead().is_none()));
        }
        "close" => {}
        other => {
            return Err(SessionError::Request(format!(
                "unknown op {other:?}; expected exec, vars, get, add_context, reset, stats, close or call_result"
            )))
        }
    }
    Ok(out)
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, SessionError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        None => Err(SessionError::Request(format!("missing field {name:?}"))),
        Some(other) => Err(SessionError::Request(format!(
            "field {name:?} must be a string, got {}",
            kind_of(other)
        ))),
    }
}

fn seconds(v: &Value) -> Result<Duration, SessionError> {
    v.as_f64()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            SessionError::Request(format!(
                "field \"timeout\" must be a number of seconds in (0, 86400], got {v}"
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::requests::{parse_request, Line, Lines, Parsed};
    use super::*;

    fn parse(line: &str) -> Result<Parsed, (Value, String)> {
        parse_request(line.as_bytes())
    }

    #[test]
    fn requests_are_parsed_strictly() {
        match parse(r#"{"id": 7, "op": "exec", "code": "x"}"#) {
            Ok(Parsed::Request(r)) => {
                assert_eq!((r.id, r.op.as_str()), (json!(7), "exec"));
                assert_eq!(r.body["code"], "x");
            }
            _ => panic!(),
        }
        let cases = [
            ("nope", "not JSON"),
            ("[1]", "must be a JSON object, got an array"),
            (r#"{"id": 1}"#, "missing field \"op\""),
            (
                r#"{"id": 1, "op": 3}"#,
                "\"op\" must be a string, got a number",
            ),
            (r#"{"op": "vars"}"#, "missing field \"id\""),
            (r#"{"op": "call_result"}"#, "needs \"call\""),
            (r#"{"op": "call_result", "call": 1}"#, "either \"results\""),
            (
                r#"{"op": "call_result", "call": 1, "results": "x"}"#,
                "either \"results\"",
            ),
        ];
        for (line, want) in cases {
            match parse(line) {
                Err((_, message)) => assert!(message.contains(want), "{line}: {message}"),
                Ok(_) => panic!("{line} was accepted"),
            }
        }
        assert!(matches!(
            parse(r#"{"op": "call_result", "call": 2, "error": "no"}"#),
            Ok(Parsed::CallResult {
                call: 2,
                outcome: Err(_)
            })
        ));
        match parse(r#"{"id": "a", "op": 1}"#) {
            Err((id, _)) => assert_eq!(id, json!("a")),
            Ok(_) => panic!(),
        }
    }

    #[test]
    fn long_lines_are_skipped_whole_in_any_pieces() {
        let text = format!("{}\nshort\n{}\nlast", "x".repeat(100), "y".repeat(51));
        for piece in [1, 7, 16, text.len()] {
            let mut lines = Lines::new(50);
            let mut got = Vec::new();
            for chunk in text.as_bytes().chunks(piece) {
                lines.push(chunk, |line| got.push(line));
            }
            got.extend(lines.finish());
            let got: Vec<String> = got
                .into_iter()
                .map(|line| match line {
                    Line::Full(b) => String::from_utf8(b).unwrap(),
                    Line::TooLong(n) => format!("too long: {n}"),
                })
                .collect();
            assert_eq!(
                got,
                ["too long: 50", "short", "too long: 50", "last"],
                "piece {piece}"
            );
            assert!(lines.finish().is_none());
        }
    }

    #[test]
    fn an_unanswered_call_times_out_and_a_late_answer_is_refused() {
        let sink = Output::new(std::io::sink());
        let orchestrator = Orchestrator::new(sink);
        let request = CallRequest {
            kind: CallKind::LlmQuery,
            name: None,
            model: None,
            prompts: vec!["hi".into()],
            args: None,
        };
        let outcome = orchestrator.call(&request, Instant::now() + Duration::from_millis(20));
        assert!(outcome.unwrap_err().contains("did not answer"));
        assert!(orchestrator.answer(1, Ok(vec![])).is_err());
        orchestrator.close("gone");
        assert!(orchestrator
            .call(&request, Instant::now() + Duration::from_secs(5))
            .unwrap_err()
            .contains("closed"));
    }
}
