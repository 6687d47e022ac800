//! `exec` requests: their fields checked, the cell sent to the agent, its
//! end read; and the one `exec` sent ahead. The agent runs cells in the
//! order they reach it, so an `exec` already read while the cell before
//! it runs (or behind a claim's `hello`) is sent at once: the agent
//! starts it the moment the one before ends, instead of after a round
//! trip through this process (the response written, the next request
//! taken, its frame sent). Its own answer still comes in its turn.

use std::time::Duration;

use serde_json::{Map, Value};

use super::requests::RequestInput;
use super::{seconds, str_field, Request};
use crate::session::frames::{CellNamespace, CellOptions};
use crate::session::{SentCell, Session, SessionError};

/// An `exec` request's fields, checked.
pub(super) struct ExecRequest {
    code: String,
    timeout: Option<Duration>,
    options: CellOptions,
}

impl ExecRequest {
    pub(super) fn parse(body: &Map<String, Value>) -> Result<ExecRequest, SessionError> {
        let code = str_field(body, "code")?.to_string();
        let timeout = match body.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => Some(seconds(v)?),
        };
        let vars = match body.get("vars") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(SessionError::Request(format!(
                    "field \"vars\" must be true or false, got {other}"
                )))
            }
        };
        let namespace =
            CellNamespace::parse(body.get("namespace")).map_err(SessionError::Request)?;
        let keep =
            CellOptions::parse_names("keep", body.get("keep")).map_err(SessionError::Request)?;
        let restore = CellOptions::parse_names("restore", body.get("restore"))
            .map_err(SessionError::Request)?;
        let setup = match body.get("setup") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(SessionError::Request(format!(
                    "field \"setup\" must be a string of code or null, got {}",
                    super::kind_of(other)
                )))
            }
        };
        if namespace == CellNamespace::Script
            && !(keep.is_empty() && restore.is_empty() && setup.is_none())
        {
            return Err(SessionError::Request(
                "fields \"keep\", \"restore\" and \"setup\" do not apply to \"namespace\": \"script\" (a script has a fresh __main__)".into(),
            ));
        }
        let options = CellOptions {
            vars,
            namespace,
            keep,
            restore,
            setup,
        };
        Ok(ExecRequest {
            code,
            timeout,
            options,
        })
    }

    pub(super) fn script(&self) -> bool {
        self.options.namespace == CellNamespace::Script
    }

    /// Sends the cell (a script's code is checked first).
    pub(super) fn send(&self, session: &mut Session) -> Result<SentCell, SessionError> {
        if self.script() {
            session.send_script(&self.code)
        } else {
            session.send_exec(&self.code, &self.options)
        }
    }

    /// Reads the sent cell's end: the response's fields (`cell`, or a
    /// script's `result`: `run --json`'s result, not a cell).
    pub(super) fn finish(
        &self,
        session: &mut Session,
        sent: SentCell,
    ) -> Result<Map<String, Value>, SessionError> {
        let mut out = Map::new();
        if self.script() {
            let result = session.finish_script(sent, self.timeout)?;
            out.insert(
                "result".into(),
                serde_json::to_value(result).unwrap_or_default(),
            );
        } else {
            let cell = session.finish_exec(sent, self.timeout)?;
            out.insert(
                "cell".into(),
                serde_json::to_value(cell).unwrap_or_default(),
            );
        }
        Ok(out)
    }
}

/// An `exec` request sent to the agent before its turn; it is answered
/// next, before any other request is taken.
pub(super) struct Ahead {
    pub(super) request: Request,
    pub(super) exec: ExecRequest,
    pub(super) sent: SentCell,
}

/// Sends the first request read and not yet taken ahead, when it is an
/// `exec` whose fields are good, and takes it from `requests`; anything
/// else (another op, bad fields, a session that cannot send) is left
/// where it is, to be answered in its turn as before. Reads what input
/// has arrived first, without waiting.
pub(super) fn send_ahead(session: &mut Session, requests: &mut RequestInput) -> Option<Ahead> {
    requests.wait(Duration::ZERO);
    let mut parsed = None;
    let request = requests.next_if(|r| {
        if r.op != "exec" {
            return false;
        }
        parsed = ExecRequest::parse(&r.body).ok();
        parsed.is_some()
    })?;
    let exec = parsed?;
    match exec.send(session) {
        Ok(sent) => Some(Ahead {
            request,
            exec,
            sent,
        }),
        Err(_) => {
            // Not sent (the session is dead, or a script's code is
            // refused): answered in its turn with that error.
            requests.push_front(request);
            None
        }
    }
}
