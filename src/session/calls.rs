//! Calls from the sandbox to the host (`llm_query*`, `rlm_query*`, tools):
//! what a call is, and the handlers that answer one.
//!
//! A session's broker (see `broker.rs`) enforces the limits the sandboxed
//! code cannot change (calls per session, in flight, prompt bytes, per-call
//! timeout) and filters prompts for secrets before any handler sees them;
//! handlers only answer.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What kind of call the sandbox made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    LlmQuery,
    RlmQuery,
    Tool,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::LlmQuery => "llm_query",
            CallKind::RlmQuery => "rlm_query",
            CallKind::Tool => "tool",
        }
    }
}

/// One call, after the broker's checks and the prompts' egress filter.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    pub kind: CallKind,
    /// The tool's name (tools only).
    pub name: Option<String>,
    /// The model the code asked for, if any.
    pub model: Option<String>,
    /// The prompts (`llm_query`/`rlm_query`; one unless batched).
    pub prompts: Vec<String>,
    /// The tool's arguments by parameter name (tools only).
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A handler's answer to a whole call: for queries one string per prompt
/// (a failed item is an `"Error: ..."` string), for a tool one JSON value;
/// or the call's error.
pub type CallOutcome = Result<Vec<serde_json::Value>, String>;

/// Answers whole calls (batches as one): the orchestrator, or a Rust
/// caller of the library.
pub trait CallHandler: Send + Sync {
    /// Answers `request` by `deadline`; an answer after it is discarded.
    fn call(&self, request: &CallRequest, deadline: Instant) -> CallOutcome;
}

/// Answers one prompt at a time (a command, an HTTP endpoint); the broker
/// runs a batch's prompts concurrently up to the in-flight limit.
pub trait PromptHandler: Send + Sync {
    /// The answer to `prompt` for `model`, or why there is none. Must give
    /// up (and stop what it started) at `deadline`.
    fn answer(
        &self,
        model: Option<&str>,
        prompt: &str,
        deadline: Instant,
    ) -> Result<String, String>;
}
