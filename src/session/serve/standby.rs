//! `rlm-sandbox session --standby`: the sandbox and its agent started
//! before the work is known, then one `begin` request, whose `args` are
//! the claim's flags, turns the standby into the session
//! (docs/PROTOCOL.md, "Standby").
//!
//! Until `begin` the standby answers nothing else: any other request, or
//! a `begin` that is refused (its args, a missing context file), gets an
//! error response and the standby lives on, untouched, for the next
//! `begin`. A claim that fails once the sandbox was touched ends it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{
    bad, drive, ready_event, start_failed, Backend, Ended, Orchestrator, Output, Request,
    RequestInput,
};
use crate::session::prelude::Prelude;
use crate::session::{ClaimError, SessionError, SessionOptions, Standby};
use crate::supervise::{Sandbox, TICK};

/// What a `begin` request's `args` gave: the claim's options, who answers
/// its calls, and what the caller keeps until the session ends (say, a
/// directory removed then).
pub struct Begin<K> {
    pub options: SessionOptions,
    pub backend: Backend,
    pub keep: K,
}

/// The accepted form of `begin`, for errors.
pub const BEGIN_FORM: &str =
    r#"{"id": ..., "op": "begin", "args": ["--context", "FILE", "--tool", "NAME:PARAMS", ...]}"#;

/// Starts a standby (running `prelude` before it reports: the prelude
/// is the standby's, not the claim's), writes the `standby` event, waits for `begin`
/// (`parse` turns its `args` into the claim), claims the standby and
/// serves the session as [`super::serve`] does. The exit code: 0, 130
/// when cancelled, 1 when the sandbox could not start or failed.
pub fn serve_standby<K>(
    sandbox: Arc<Sandbox>,
    prelude: Option<Prelude>,
    parse: impl Fn(&[String]) -> Result<Begin<K>, String>,
    input: OwnedFd,
    out: Output,
    cancel: Arc<AtomicBool>,
) -> i32 {
    let standby = match Standby::launch(sandbox, prelude.as_ref(), &cancel) {
        Ok(standby) => standby,
        Err(e) => return start_failed(&out, &e, None),
    };
    // Before `standby` is said: a claim may come at once.
    standby.warm_filters();
    out.line(&json!({
        "event": "standby",
        "runtime": standby.runtime(),
        "startup_ms": standby.startup().as_millis() as u64,
    }));
    let orchestrator = Arc::new(Orchestrator::new(out.clone()));
    let (unread, gate) = super::Peer::stdio().split();
    let mut requests = RequestInput::new(
        input,
        out.clone(),
        orchestrator.clone(),
        cancel.clone(),
        unread,
    );
    // Every parsed begin's keep, held until the session ends (a refused
    // claim's too: what it named is the client's to the end).
    let mut kept = Vec::new();
    let mut standby = standby;
    let (session, ahead) = loop {
        if cancel.load(Ordering::Relaxed) {
            drop(standby);
            return 130;
        }
        if let Err(e) = standby.check() {
            let why = match e {
                SessionError::Dead(why) => why,
                other => other.to_string(),
            };
            return start_failed(&out, &SessionError::Start(why), None);
        }
        let request = match requests.next() {
            Some(Ok(request)) => request,
            // The end of input in standby: the sandbox is removed.
            Some(Err(Ended)) => return 0,
            None => {
                requests.wait(TICK);
                continue;
            }
        };
        let begin = match begin_args(&request).and_then(|args| parse(&args)) {
            Ok(begin) => begin,
            Err(message) => {
                out.line(&bad(request.id, message));
                continue;
            }
        };
        kept.push(begin.keep);
        let answered_by = begin.backend.name();
        let handler = begin.backend.handler(&orchestrator);
        match standby.begin_claim(begin.options, handler, cancel.clone()) {
            Ok(mut claiming) => {
                // The request read behind the begin (a client's first
                // cell, written with it) goes out behind `hello`.
                let ahead = super::send_ahead(claiming.session(), &mut requests);
                match claiming.ready() {
                    Ok(session) => {
                        out.line(&ready_event(&session, answered_by, Some(&request.id)));
                        break (session, ahead);
                    }
                    Err(e) => return start_failed(&out, &e, Some(&request.id)),
                }
            }
            Err(ClaimError::Refused(back, e)) => {
                let message = format!("begin refused, still on standby: {e}");
                let error = json!({"kind": e.kind(), "message": message});
                out.line(&json!({"id": request.id, "ok": false, "error": error}));
                standby = *back;
            }
            Err(ClaimError::Failed(e)) => return start_failed(&out, &e, Some(&request.id)),
        }
    };
    let code = drive(session, requests, &out, &orchestrator, &cancel, gate, ahead);
    drop(kept);
    code
}

/// The `args` of a `begin` request, strictly; the error names what is
/// wrong and the accepted form.
fn begin_args(request: &Request) -> Result<Vec<String>, String> {
    if request.op != "begin" {
        return Err(format!(
            "op {:?} before begin: a standby session takes one begin first, {BEGIN_FORM}",
            request.op
        ));
    }
    let extra: Vec<&String> = request.body.keys().filter(|k| *k != "args").collect();
    if let Some(field) = extra.first() {
        return Err(format!(
            "begin has no field {field:?}; expected {BEGIN_FORM}"
        ));
    }
    match request.body.get("args") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "begin's args must be strings, got {}; expected {BEGIN_FORM}",
                    super::kind_of(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "begin's args must be a list of strings, got {}; expected {BEGIN_FORM}",
            super::kind_of(other)
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(op: &str, body: Value) -> Request {
        let Value::Object(body) = body else { panic!() };
        Request {
            id: json!(1),
            op: op.into(),
            body,
        }
    }

    #[test]
    fn begin_takes_a_list_of_strings_and_nothing_else() {
        let ok = begin_args(&request("begin", json!({"args": ["--tool", "f:x"]}))).unwrap();
        assert_eq!(ok, ["--tool", "f:x"]);
        assert!(begin_args(&request("begin", json!({}))).unwrap().is_empty());
        for (op, body, want) in [
            ("exec", json!({"code": "1"}), "op \"exec\" before begin"),
            ("begin", json!({"args": "--tool f"}), "got a string"),
            ("begin", json!({"args": ["--tool", 1]}), "got a number"),
            (
                "begin",
                json!({"args": [], "code": "x"}),
                "no field \"code\"",
            ),
        ] {
            let err = begin_args(&request(op, body)).unwrap_err();
            assert!(
                err.contains(want) && err.contains(r#""op": "begin""#),
                "{err}"
            );
        }
    }
}
