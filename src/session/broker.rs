//! The call broker: every call the sandbox makes passes here, where the
//! limits the sandboxed code cannot change are enforced and prompts are
//! filtered for secrets before a handler sees them.
//!
//! A call never hangs its caller: a call beyond a limit, a handler that
//! fails or one that misses the per-call timeout answers the code with an
//! `"Error: ..."` string (per item of a batch), as the reference library
//! does. Calls run on their own threads; the answer goes straight to the
//! agent and the call's record into the running cell's list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::calls::{CallHandler, CallKind, CallRequest, PromptHandler};
use super::frames::AgentCall;
use super::link::Link;
use crate::egress::{EgressFilter, Finding, Stream};

/// Limits on calls, each a setting (flag and RLM_* variable in the CLI).
#[derive(Debug, Clone, PartialEq)]
pub struct CallLimits {
    /// Sub-calls (prompts and tool calls) per session.
    pub max_calls: u64,
    /// Handler invocations at once; more wait for a slot (the wait counts
    /// against the call's timeout).
    pub max_in_flight: usize,
    /// Bytes of one prompt (UTF-8).
    pub max_prompt_bytes: usize,
    /// From the call's arrival to its answer.
    pub timeout: Duration,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_calls: 1000,
            max_in_flight: 8,
            // The reference library advises ~500K characters per sub-call;
            // 4 MiB holds that in any script.
            max_prompt_bytes: 4 << 20,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Who answers calls.
#[derive(Clone)]
pub enum Handler {
    /// Whole calls, batches as one (the orchestrator, a Rust caller).
    Calls(Arc<dyn CallHandler>),
    /// One prompt at a time (a command, an endpoint); no tools.
    Prompts(Arc<dyn PromptHandler>),
    /// Nobody: every call is an error.
    None,
}

/// A tool the orchestrator offers: its name and parameter names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub params: Vec<String>,
}

/// One call as the cell's result lists it. Never holds the prompts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    pub kind: CallKind,
    /// The tool's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub model: Option<String>,
    /// Prompts in the call (1 unless batched; 0 for tools).
    pub prompts: usize,
    pub prompt_bytes: u64,
    pub answer_bytes: u64,
    pub duration_ms: u64,
    /// The call's error, or the first item's.
    pub error: Option<String>,
    /// `rlm_query` answered as `llm_query` (the handler has no sub-RLMs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// What the egress filter found in the prompts or the tool's args
    /// (spans in the prompt, or in the arg's string).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

pub struct Broker {
    limits: CallLimits,
    handler: Handler,
    /// The handler answers `rlm_query` itself.
    rlm_calls: bool,
    tools: Vec<Tool>,
    made: AtomicU64,
    slots: Arc<Slots>,
    records: Arc<Mutex<Vec<CallRecord>>>,
    link: Link,
}

impl Broker {
    pub fn new(
        limits: CallLimits,
        handler: Handler,
        rlm_calls: bool,
        tools: Vec<Tool>,
        link: Link,
    ) -> Broker {
        Broker {
            slots: Arc::new(Slots::new(limits.max_in_flight.max(1))),
            limits,
            handler,
            rlm_calls,
            tools,
            made: AtomicU64::new(0),
            records: Arc::default(),
            link,
        }
    }

    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// The records of calls finished since the last take.
    pub fn take_records(&self) -> Vec<CallRecord> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks `call` against the limits, filters its prompts with `egress`
    /// and starts answering it on its own thread.
    pub fn submit(&self, egress: &EgressFilter, mut call: AgentCall) {
        let started = Instant::now();
        // The model name is the code's too, and goes to the handler.
        let model = call
            .model
            .take()
            .map(|m| egress.filter_secrets(Stream::Model, m));
        call.model = model.as_ref().map(|m| m.text.clone());
        let deadline = started + self.limits.timeout;
        let fallback = call.kind == CallKind::RlmQuery && !self.rlm_calls;
        let mut record = CallRecord {
            kind: call.kind,
            name: call.name.clone(),
            model: call.model.clone(),
            prompts: 0,
            prompt_bytes: 0,
            answer_bytes: 0,
            duration_ms: 0,
            error: None,
            fallback,
            findings: model.map(|m| m.findings).unwrap_or_default(),
        };
        let items = match self.admit(egress, &call, &mut record) {
            Ok(items) => items,
            Err(error) => {
                record.error = Some(error.clone());
                self.answer(call.call, Err(error), record, started);
                return;
            }
        };
        // Tool args reach the host's callable: filtered for secrets first.
        let args = call.args.map(|args| {
            let (args, findings) = super::leaving::tool_args(egress, args);
            record.findings.extend(findings);
            args
        });
        let request = CallRequest {
            kind: if fallback {
                CallKind::LlmQuery
            } else {
                call.kind
            },
            name: call.name,
            model: call.model,
            prompts: Vec::new(),
            args,
        };
        let (handler, slots) = (self.handler.clone(), self.slots.clone());
        let (records, link) = (self.records.clone(), self.link.clone());
        let id = call.call;
        std::thread::spawn(move || {
            let outcome = run(&handler, &slots, request, items, deadline);
            finish(&records, &link, id, outcome, record, started);
        });
    }

    /// The call's items after the checks that need no handler: each a
    /// prompt to send, or its error already.
    fn admit(
        &self,
        egress: &EgressFilter,
        call: &AgentCall,
        record: &mut CallRecord,
    ) -> Result<Vec<Result<String, String>>, String> {
        if call.kind == CallKind::Tool {
            let name = call.name.as_deref().ok_or("a tool call without a name")?;
            if !self.tools.iter().any(|t| t.name == name) {
                return Err(format!("no tool named {name:?} was declared"));
            }
            if call.args.is_none() {
                return Err(format!("tool call {name:?} without args"));
            }
            self.count(1)?;
            return Ok(Vec::new());
        }
        let prompts = call.prompts.as_ref().ok_or("a query without prompts")?;
        record.prompts = prompts.len();
        let budget = self.count(prompts.len() as u64);
        let max = self.limits.max_prompt_bytes;
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| {
                record.prompt_bytes += prompt.len() as u64;
                if (i as u64) >= *budget.as_ref().unwrap_or(&0) {
                    return Err(format!(
                        "call limit reached ({} calls per session; RLM_MAX_LLM_CALLS)",
                        self.limits.max_calls
                    ));
                }
                if prompt.len() > max {
                    return Err(format!(
                        "prompt of {} bytes is above the limit of {max} (RLM_LLM_MAX_PROMPT_BYTES)",
                        prompt.len()
                    ));
                }
                let filtered = egress.filter_prompt(prompt.clone());
                record.findings.extend(filtered.findings);
                Ok(filtered.text)
            })
            .collect())
    }

    /// Takes up to `n` calls from the session's budget; returns how many
    /// were granted, or the error when none was.
    fn count(&self, n: u64) -> Result<u64, String> {
        let max = self.limits.max_calls;
        let before = self.made.fetch_add(n, Ordering::Relaxed).min(max);
        let granted = (max - before).min(n);
        if granted == 0 && n > 0 {
            return Err(format!(
                "call limit reached ({max} calls per session; RLM_MAX_LLM_CALLS)"
            ));
        }
        Ok(granted)
    }

    fn answer(
        &self,
        id: u64,
        outcome: Result<Vec<Value>, String>,
        record: CallRecord,
        started: Instant,
    ) {
        finish(&self.records, &self.link, id, outcome, record, started);
    }
}

/// Answers a call's items: a whole-call handler gets the prompts that
/// passed the checks in one request; a per-prompt handler gets each on its
/// own thread, at most `max_in_flight` at once.
fn run(
    handler: &Handler,
    slots: &Arc<Slots>,
    mut request: CallRequest,
    items: Vec<Result<String, String>>,
    deadline: Instant,
) -> Result<Vec<Value>, String> {
    match handler {
        Handler::None => Err("no call handler: the session was started without one".into()),
        Handler::Prompts(_) if request.kind == CallKind::Tool => {
            Err("tools need an orchestrator; this session answers only queries".into())
        }
        Handler::Calls(h) => {
            let is_tool = request.kind == CallKind::Tool;
            request.prompts = items.iter().filter_map(|i| i.clone().ok()).collect();
            let sent = request.prompts.len();
            if sent == 0 && !is_tool {
                return Ok(merge(items, Vec::new()));
            }
            if !slots.acquire(deadline) {
                return Err(timeout_error());
            }
            let h = h.clone();
            let answers = with_deadline(deadline, move || h.call(&request, deadline));
            slots.release();
            let answers = answers?;
            if is_tool {
                return Ok(answers);
            }
            if answers.len() != sent {
                return Err(format!(
                    "the handler gave {} answers for {sent} prompts",
                    answers.len()
                ));
            }
            Ok(merge(items, answers))
        }
        Handler::Prompts(h) => {
            let model = request.model.clone();
            let workers: Vec<_> = items
                .into_iter()
                .map(|item| {
                    let (h, slots, model) = (h.clone(), slots.clone(), model.clone());
                    std::thread::spawn(move || -> Result<String, String> {
                        let prompt = item?;
                        if !slots.acquire(deadline) {
                            return Err(timeout_error());
                        }
                        let answer = with_deadline(deadline, move || {
                            h.answer(model.as_deref(), &prompt, deadline)
                                .map(Value::String)
                        });
                        slots.release();
                        answer.map(|v| v.as_str().unwrap_or_default().to_string())
                    })
                })
                .collect();
            Ok(workers
                .into_iter()
                .map(|w| {
                    let item = w
                        .join()
                        .unwrap_or_else(|_| Err("the handler panicked".into()));
                    Value::String(item.unwrap_or_else(|e| format!("Error: {e}")))
                })
                .collect())
        }
    }
}

/// Each item's answer in order: the handler's for those sent, the error
/// string for those refused before.
fn merge(items: Vec<Result<String, String>>, answers: Vec<Value>) -> Vec<Value> {
    let mut answers = answers.into_iter();
    items
        .into_iter()
        .map(|item| match item {
            Ok(_) => match answers.next() {
                Some(Value::String(s)) => Value::String(s),
                Some(other) => Value::String(format!(
                    "Error: the handler answered with {other} instead of a string"
                )),
                None => Value::String("Error: the handler gave no answer".into()),
            },
            Err(e) => Value::String(format!("Error: {e}")),
        })
        .collect()
}

/// Runs `f` on its own thread and waits for it until `deadline`; a late
/// answer is dropped (handlers stop their own work at the deadline).
fn with_deadline<T: Send + 'static>(
    deadline: Instant,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    // A little slack: a handler that honours the deadline reports its
    // own timeout, which says more.
    let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(200);
    match rx.recv_timeout(wait) {
        Ok(outcome) => outcome,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(timeout_error()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the handler panicked".into()),
    }
}

fn timeout_error() -> String {
    "the call timed out (RLM_LLM_TIMEOUT)".to_string()
}

/// Records the call, then sends the answer to the agent: in that order, so
/// a cell that ends right after its answer arrives finds the record there.
fn finish(
    records: &Mutex<Vec<CallRecord>>,
    link: &Link,
    id: u64,
    outcome: Result<Vec<Value>, String>,
    mut record: CallRecord,
    started: Instant,
) {
    record.duration_ms = started.elapsed().as_millis() as u64;
    let msg = match outcome {
        Ok(results) => {
            record.answer_bytes = results
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string().len(), str::len) as u64)
                .sum();
            if record.error.is_none() {
                record.error = results
                    .iter()
                    .filter_map(Value::as_str)
                    .find_map(|s| s.strip_prefix("Error: "))
                    .map(str::to_string);
            }
            json!({"t": "call_result", "call": id, "results": results})
        }
        Err(error) => {
            record.error = Some(error.clone());
            json!({"t": "call_result", "call": id, "error": error})
        }
    };
    records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(record);
    link.send(msg);
}

/// A counting semaphore with a deadline.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, deadline: Instant) -> bool {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            free = self
                .freed
                .wait_timeout(free, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *free -= 1;
        true
    }

    fn release(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.freed.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::egress::{EgressConfig, EgressFilter};

    struct Upper;
    impl PromptHandler for Upper {
        fn answer(&self, _: Option<&str>, prompt: &str, _: Instant) -> Result<String, String> {
            std::thread::sleep(Duration::from_millis(50));
            if prompt == "fail" {
                return Err("refused".into());
            }
            Ok(prompt.to_uppercase())
        }
    }

    fn broker(limits: CallLimits) -> (Broker, mpsc::Receiver<Option<Value>>) {
        let (link, rx) = Link::channel();
        let handler = Handler::Prompts(Arc::new(Upper));
        (Broker::new(limits, handler, false, Vec::new(), link), rx)
    }

    fn query(call: u64, prompts: &[&str]) -> AgentCall {
        AgentCall {
            call,
            kind: CallKind::LlmQuery,
            model: None,
            prompts: Some(prompts.iter().map(|p| p.to_string()).collect()),
            name: None,
            args: None,
        }
    }

    fn result(rx: &mpsc::Receiver<Option<Value>>) -> Value {
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap()
    }

    #[test]
    fn batches_keep_order_and_fail_per_item_within_the_limits() {
        let egress = EgressFilter::new(EgressConfig::default()).unwrap();
        let limits = CallLimits {
            max_calls: 4,
            max_in_flight: 2,
            max_prompt_bytes: 10,
            ..CallLimits::default()
        };
        let (b, rx) = broker(limits);
        let started = Instant::now();
        b.submit(
            &egress,
            query(1, &["a", "fail", "way too long prompt", "b", "c"]),
        );
        let msg = result(&rx);
        assert_eq!(msg["call"], 1);
        let results: Vec<&str> = msg["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(results[0], "A");
        assert_eq!(results[1], "Error: refused");
        assert!(
            results[2].starts_with("Error: prompt of 19 bytes"),
            "{}",
            results[2]
        );
        assert_eq!(results[3], "B");
        assert!(
            results[4].starts_with("Error: call limit reached"),
            "{}",
            results[4]
        );
        // Three answers of 50 ms, two at a time: at least 100 ms.
        assert!(started.elapsed() >= Duration::from_millis(100));
        let records = b.take_records();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].prompts, records[0].prompt_bytes), (5, 26));
        assert_eq!(records[0].error.as_deref(), Some("refused"));
        b.submit(&egress, query(2, &["d"]));
        let msg = result(&rx);
        let item = msg["results"][0].as_str().unwrap();
        assert!(item.starts_with("Error: call limit reached"), "{msg}");
    }

    #[test]
    fn tools_need_a_declared_name_and_an_orchestrator() {
        let egress = EgressFilter::new(EgressConfig::default()).unwrap();
        let (b, rx) = broker(CallLimits::default());
        let mut call = query(3, &[]);
        call.kind = CallKind::Tool;
        call.name = Some("search".into());
        call.args = Some(Default::default());
        b.submit(&egress, call);
        assert!(result(&rx)["error"]
            .as_str()
            .unwrap()
            .contains("no tool named \"search\""));
    }

    #[test]
    fn slots_time_out() {
        let slots = Slots::new(1);
        assert!(slots.acquire(Instant::now() + Duration::from_secs(1)));
        assert!(!slots.acquire(Instant::now() + Duration::from_millis(20)));
        slots.release();
        assert!(slots.acquire(Instant::now()));
    }
}
