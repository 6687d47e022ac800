//! One cell: code sent to the agent, its output captured (bounded, head
//! and tail) until the agent says it is done, its timeout and output
//! ceiling enforced, and its result filtered like a run's.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::frames::{AgentMsg, CellOptions, DoneStatus, Frame, VarInfo};
use super::value::CellValue;
use super::{CallRecord, Interrupt, Session, SessionError};
use crate::capture::BoundedCapture;
use crate::egress::Finding;
use crate::result::{FilteredOutput, Status, Truncated, Usage};
use crate::supervise::machine::{Action, Supervisor};
use crate::supervise::{classify_cell, CellEnd, EndedBy, KILL_GRACE};

/// A cell sent to the agent whose end is still to be read
/// ([`Session::send_exec`], [`Session::finish_exec`]).
#[must_use = "a sent cell's end must be read before any other request"]
#[derive(Debug)]
pub struct SentCell {
    cell: u64,
    /// The cell had a setup: its `done` may say how it ended.
    setup: bool,
}

/// The result of one cell (`exec`'s `cell`).
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub status: Status,
    pub stdout: String,
    pub stderr: String,
    pub truncated: Truncated,
    pub findings: Vec<Finding>,
    pub duration_ms: u64,
    /// Set when the cell set `answer["ready"]`, or called FINAL/FINAL_VAR.
    pub final_answer: Option<String>,
    /// Every call the cell's code made (finished while it ran).
    pub calls: Vec<CallRecord>,
    /// A KeyboardInterrupt was raised in the cell's code (timeout, output
    /// ceiling) and the cell stopped by itself.
    pub interrupted: bool,
    /// The sandbox ended during this cell (killed after an interrupt it
    /// ignored, out of memory, the agent died): every later request fails
    /// with `session_dead`.
    pub session_dead: bool,
    /// What the cgroup measured, when the sandbox ended in this cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why the session died, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The user's globals after the cell (as `vars`), when asked for:
    /// saves an orchestrator that shows them every turn a round trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vars: Option<Vec<VarInfo>>,
    /// The value of the cell's trailing expression when it is not None
    /// (its repr, and its JSON form), filtered like the output.
    pub value: Option<CellValue>,
    /// A script cell's exit status (`"namespace": "script"`), as the
    /// agent reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How the cell's setup ended (`ok`, `error`, `interrupted`), when it
    /// had one that ran; the code ran only after an `ok` one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<DoneStatus>,
}

impl Session {
    /// Runs `code` in the session's interpreter, by `timeout` (the
    /// sandbox's configured timeout if `None`).
    pub fn exec(&mut self, code: &str, timeout: Option<Duration>) -> Result<Cell, SessionError> {
        self.exec_with(code, timeout, &CellOptions::default())
    }

    /// [`Self::exec`] with `options`: with `vars` the user's globals after
    /// the cell in [`Cell::vars`] (the agent lists them in its `done`);
    /// `namespace` says which of the cell's bindings outlive it; `keep`
    /// and `restore` name globals the agent keeps after it / binds to
    /// their kept values before it.
    pub fn exec_with(
        &mut self,
        code: &str,
        timeout: Option<Duration>,
        options: &CellOptions,
    ) -> Result<Cell, SessionError> {
        let sent = self.send_exec(code, options)?;
        self.finish_exec(sent, timeout)
    }

    /// Sends a cell to the agent without waiting for it: the agent runs
    /// cells in the order they were sent, so a cell sent while another
    /// runs (or behind a claim's `hello`) starts as soon as that one ends,
    /// without a round trip through this process. Every sent cell must be
    /// finished ([`Self::finish_exec`]) in the order sent, before any
    /// other request.
    pub fn send_exec(
        &mut self,
        code: &str,
        options: &CellOptions,
    ) -> Result<SentCell, SessionError> {
        self.alive()?;
        let cell = self.next_cell;
        self.next_cell += 1;
        let mut exec = json!({"t": "exec", "cell": cell, "code": code, "vars": options.vars,
            "namespace": options.namespace.as_str()});
        if !options.keep.is_empty() {
            exec["keep"] = json!(options.keep);
        }
        if !options.restore.is_empty() {
            exec["restore"] = json!(options.restore);
        }
        if let Some(setup) = &options.setup {
            exec["setup"] = json!(setup);
        }
        self.link.send(exec);
        Ok(SentCell {
            cell,
            setup: options.setup.is_some(),
        })
    }

    /// Waits for a sent cell's end, by `timeout` from now (the sandbox's
    /// configured timeout if `None`): its output captured and filtered,
    /// interrupted at the deadline or the output ceiling. A session that
    /// died in an earlier cell answers `Dead`.
    pub fn finish_exec(
        &mut self,
        sent: SentCell,
        timeout: Option<Duration>,
    ) -> Result<Cell, SessionError> {
        self.alive()?;
        let SentCell {
            cell,
            setup: had_setup,
        } = sent;
        let start = Instant::now();
        let limits = &self.sandbox.config.limits;
        let timeout = timeout.unwrap_or(limits.timeout);
        let (keep, ceiling) = (limits.max_stdout_bytes, limits.max_output_bytes);
        let mut streams = [BoundedCapture::new(keep), BoundedCapture::new(keep)];
        let mut printed = 0u64;
        // Interrupted at the deadline or the output ceiling, killed after
        // the grace (the kill's own escalation is `die`'s).
        let mut sup = Supervisor::new(start + timeout, Some(self.options.grace), KILL_GRACE);
        let outcome = loop {
            match sup.tick(Instant::now()) {
                Action::Interrupt => self.interrupt(cell),
                Action::Kill | Action::Escalate => {
                    break Err(Interrupt::Died(self.die(
                        "the cell ignored its interrupt; the sandbox was killed".into(),
                        sup.ended_by(),
                    )));
                }
                Action::Wait => {}
            }
            match self.next_event(sup.due()) {
                Ok(None) => {}
                Ok(Some(Frame::Stdout(b))) | Ok(Some(Frame::Stderr(b))) if b.is_empty() => {}
                Ok(Some(frame @ (Frame::Stdout(_) | Frame::Stderr(_)))) => {
                    let (i, bytes) = match frame {
                        Frame::Stdout(b) => (0, b),
                        Frame::Stderr(b) => (1, b),
                        Frame::Msg(_) => unreachable!(),
                    };
                    printed += bytes.len() as u64;
                    streams[i].push(&bytes);
                    if printed > ceiling
                        && sup.end(EndedBy::OutputLimit, Instant::now()) == Action::Interrupt
                    {
                        self.interrupt(cell);
                    }
                }
                Ok(Some(Frame::Msg(AgentMsg::OutputLimit { cell: c, .. }))) if c == cell => {
                    // The agent keeps a cell's output until the cell ends
                    // and stopped at the ceiling: the same end as above.
                    if sup.end(EndedBy::OutputLimit, Instant::now()) == Action::Interrupt {
                        self.interrupt(cell);
                    }
                }
                Ok(Some(Frame::Msg(AgentMsg::Done {
                    cell: c,
                    status,
                    final_answer,
                    vars,
                    value,
                    exit_code,
                    setup,
                }))) if c == cell => {
                    if setup.is_some() && !had_setup {
                        let why = format!(
                            "protocol error: the agent reported a setup for cell {cell}, which had none; \
                             the sandbox was killed"
                        );
                        break Err(Interrupt::Died(self.die(why, None)));
                    }
                    break Ok((status, final_answer, vars, value, exit_code, setup));
                }
                Ok(Some(Frame::Msg(other))) => {
                    let why = format!(
                        "protocol error: the agent sent {} during cell {cell}; the sandbox was killed",
                        super::describe(&other)
                    );
                    break Err(Interrupt::Died(self.die(why, None)));
                }
                Err(e) => break Err(e),
            }
        };
        let ended_by = sup.ended_by();
        let (status, final_answer, dead, vars, value, exit_code, setup) = match outcome {
            Ok((done, final_answer, vars, value, exit_code, setup)) => {
                let ok = done == DoneStatus::Ok;
                let status = classify_cell(ended_by, CellEnd::Done { ok });
                (status, final_answer, None, vars, value, exit_code, setup)
            }
            Err(Interrupt::Cancelled) => return Err(self.cancelled()),
            Err(Interrupt::Died(why)) => {
                let sandbox = self.ended.as_ref().map(|r| r.status);
                let status = classify_cell(ended_by, CellEnd::Died { sandbox });
                (status, None, Some(why), None, None, None, None)
            }
        };
        let (egress, echo) = self.leaving_filters()?;
        let mut out = FilteredOutput::new(streams.map(BoundedCapture::finish), egress, echo);
        let value = value.map(|v| {
            let (v, findings) = v.filter(egress, echo);
            out.findings.extend(findings);
            v
        });
        let (final_answer, found) = super::leaving::final_answer(egress, echo, final_answer);
        out.findings.extend(found);
        let vars = vars.map(|v| {
            let (v, found) = super::leaving::var_list(egress, echo, v);
            out.findings.extend(found);
            v
        });
        Ok(Cell {
            status,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
            findings: out.findings,
            duration_ms: start.elapsed().as_millis() as u64,
            final_answer,
            calls: self.broker.take_records(),
            interrupted: ended_by.is_some() && dead.is_none(),
            session_dead: dead.is_some(),
            usage: dead.as_ref().and(self.ended.as_ref()).map(|r| r.usage),
            error: dead,
            vars,
            value,
            exit_code,
            setup,
        })
    }

    /// Asks the agent to interrupt `cell` (the supervisor kills the
    /// sandbox if it has not stopped within the grace).
    fn interrupt(&self, cell: u64) {
        self.link.send(json!({"t": "interrupt", "cell": cell}));
    }
}
