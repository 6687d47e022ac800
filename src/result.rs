//! The result contract of one execution (DESIGN.md): what the CLI prints
//! with `--json` and what the library returns. A value that could not be
//! measured is `None` (null), never a default.

use serde::Serialize;

use crate::capture::CapturedStream;
use crate::egress::{ContextEchoIndex, EgressFilter, Finding, Stream};
use crate::runtime::{RuntimeKind, Selection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exit 0.
    Ok,
    /// Non-zero exit.
    Error,
    /// Killed by the driver at the wall-clock limit.
    Timeout,
    /// Killed by the kernel's OOM killer (the cgroup's counter moved).
    Oom,
    /// Ended by a signal the driver did not send.
    Killed,
    /// Killed by the driver for printing more than the output ceiling.
    OutputLimit,
    /// The runtime failed: the code did not run (or not to its end).
    SandboxError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Oom => "oom",
            Status::Killed => "killed",
            Status::OutputLimit => "output_limit",
            Status::SandboxError => "sandbox_error",
        }
    }
}

/// Bytes dropped between head and tail, per stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Truncated {
    pub stdout: u64,
    pub stderr: u64,
}

/// Which runtime ran the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeUsed {
    pub name: RuntimeKind,
    pub path: String,
    /// runc ran because runsc was wanted and missing.
    pub fallback: bool,
}

impl From<&Selection> for RuntimeUsed {
    fn from(s: &Selection) -> Self {
        RuntimeUsed {
            name: s.runtime.kind,
            path: s.runtime.path.display().to_string(),
            fallback: s.fallback,
        }
    }
}

/// What the cgroup measured; each `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub memory_peak_bytes: Option<u64>,
    pub cpu_time_ms: Option<u64>,
    /// The OOM-kill counter of the run's cgroup.
    pub oom_kills: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecResult {
    pub status: Status,
    /// The exit code the runtime reported (128 + signal for a signal death).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: Truncated,
    pub findings: Vec<Finding>,
    /// `None` in local mode (no sandbox).
    pub runtime: Option<RuntimeUsed>,
    pub duration_ms: u64,
    pub usage: Usage,
    /// For `sandbox_error`: what the runtime said.
    pub error: Option<String>,
}

/// How a run ended, before its output is filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
}

/// Both captured streams of a run or a session cell, through the egress
/// filter: nothing leaves unfiltered.
pub struct FilteredOutput {
    pub stdout: String,
    pub stderr: String,
    pub truncated: Truncated,
    pub findings: Vec<Finding>,
}

impl FilteredOutput {
    /// `extra`: contexts checked for echoes beside the filter's own.
    pub fn new(
        [stdout, stderr]: [CapturedStream; 2],
        egress: &EgressFilter,
        extra: &[ContextEchoIndex],
    ) -> FilteredOutput {
        let truncated = Truncated {
            stdout: stdout.dropped,
            stderr: stderr.dropped,
        };
        let out = egress.filter_with_contexts(Stream::Stdout, stdout, extra);
        let err = egress.filter_with_contexts(Stream::Stderr, stderr, extra);
        let mut findings = out.findings;
        findings.extend(err.findings);
        FilteredOutput {
            stdout: out.text,
            stderr: err.text,
            truncated,
            findings,
        }
    }
}

impl ExecResult {
    /// Filters both captured streams through `egress` (nothing leaves
    /// unfiltered) and assembles the result.
    pub fn assemble(
        ended: Ended,
        streams: [CapturedStream; 2],
        egress: &EgressFilter,
        runtime: Option<RuntimeUsed>,
        usage: Usage,
        elapsed: std::time::Duration,
    ) -> ExecResult {
        let out = FilteredOutput::new(streams, egress, &[]);
        ExecResult {
            status: ended.status,
            exit_code: ended.exit_code,
            signal: ended.signal,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
            findings: out.findings,
            runtime,
            duration_ms: elapsed.as_millis() as u64,
            usage,
            error: ended.error,
        }
    }
}
