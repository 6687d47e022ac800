//! A session's requests besides cells: `vars`, `get`, `reset`,
//! `add_context`, and the request/reply exchange with the agent they share.

use std::time::Instant;

use serde_json::{json, Value};

use super::contexts::{self, Context, Format, Placement, Source};
use super::frames::AgentMsg;
use super::{agent_context, describe, leaving, Interrupt, Session, SessionError};
use crate::supervise::EndedBy;

impl Session {
    /// Names, types and sizes of the user's globals.
    pub fn vars(&mut self) -> Result<Value, SessionError> {
        self.vars_filtered().map(|(vars, _)| vars)
    }

    /// [`Self::vars`], names and types filtered as output is
    /// (`leaving.rs`), with the findings.
    pub fn vars_filtered(&mut self) -> Result<(Value, Vec<crate::egress::Finding>), SessionError> {
        let mut reply = self.request(json!({"t": "vars"}))?;
        let (egress, echo) = self.leaving_filters()?;
        let (vars, findings) = leaving::vars_reply(egress, echo, reply.remove("vars"))
            .map_err(SessionError::Request)?;
        Ok((serde_json::to_value(vars).unwrap_or_default(), findings))
    }

    /// The type and capped `repr` of the global `name`, filtered as output
    /// is (`leaving.rs`), with the findings.
    pub fn get(&mut self, name: &str) -> Result<serde_json::Map<String, Value>, SessionError> {
        let max = self.options.get_max_bytes;
        let reply = self.request(json!({"t": "get", "name": name, "max_bytes": max}))?;
        let (egress, echo) = self.leaving_filters()?;
        leaving::get_reply(egress, echo, reply).map_err(SessionError::Request)
    }

    /// Fresh interpreter state; the contexts stay.
    pub fn reset(&mut self) -> Result<(), SessionError> {
        self.request(json!({"t": "reset"})).map(|_| ())
    }

    /// Adds the context file of `source` to the live session.
    pub fn add_context(
        &mut self,
        source: &Source,
        format: Option<Format>,
    ) -> Result<Context, SessionError> {
        self.alive()?;
        let index = self.contexts.len();
        let mut context = contexts::describe(index, source, format, Placement::Mount)
            .map_err(|e| SessionError::Request(e.to_string()))?;
        let input = match &self.launched {
            Some(l) => l.guard.dir.input(),
            None => return Err(SessionError::Dead("the sandbox is gone".into())),
        };
        let placed = contexts::place(&input, &mut context, source)
            .map_err(|e| SessionError::Request(e.to_string()))?;
        // Its output echo is checked like the first contexts': indexed
        // from the file the sandbox sees, on its own thread; no output
        // leaves before the index is built (`leaving_filters`).
        let echo_config = self.sandbox.egress.echo_config().clone();
        self.echo
            .add(vec![(context.host_path.clone(), placed)], echo_config);
        let reply = self.request(json!({"t": "add_context", "context": agent_context(&context)}));
        if let Err(e) = reply {
            let _ = contexts::unplace(&input, index);
            return Err(e);
        }
        self.contexts.push(context.clone());
        Ok(context)
    }

    /// Sends a `req` operation and waits for its reply.
    fn request(&mut self, mut msg: Value) -> Result<serde_json::Map<String, Value>, SessionError> {
        self.alive()?;
        let req = self.next_req;
        self.next_req += 1;
        msg["req"] = req.into();
        self.link.send(msg);
        let deadline = Instant::now() + self.sandbox.config.limits.timeout;
        match self.next(deadline) {
            Ok(Some(AgentMsg::Reply {
                req: r,
                ok,
                error,
                fields,
            })) if r == req => {
                if ok {
                    Ok(fields)
                } else {
                    Err(SessionError::Request(
                        error.unwrap_or_else(|| "the agent refused the request".into()),
                    ))
                }
            }
            Ok(Some(other)) => {
                let why = format!(
                    "protocol error: the agent sent {} while a request was pending",
                    describe(&other)
                );
                Err(SessionError::Dead(self.die(why, None)))
            }
            Ok(None) => {
                let why = "the agent did not answer a request in time; the sandbox was killed";
                Err(SessionError::Dead(
                    self.die(why.into(), Some(EndedBy::Timeout)),
                ))
            }
            Err(Interrupt::Died(why)) => Err(SessionError::Dead(why)),
            Err(Interrupt::Cancelled) => Err(self.cancelled()),
        }
    }
}
