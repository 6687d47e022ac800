//! A test's end of `rlm-sandbox session`: JSON lines to its stdin, lines
//! from its stdout parsed on a reader thread.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Env;

/// How long any one answer may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

pub struct Repl {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: u64,
    /// The `ready` event (the `standby` event until a standby's begin).
    pub ready: Value,
    /// Call events seen (in order), for tests of the orchestrator path.
    pub calls: Vec<Value>,
    /// Lines that were neither a response nor a call event.
    pub other: Vec<Value>,
}

/// What the test answers to a call event: `Some(results)` or an error.
pub type Answer = Box<dyn FnMut(&Value) -> Result<Vec<Value>, String>>;

impl Repl {
    /// Starts `rlm-sandbox session <args>` and waits for its `ready` event.
    pub fn start(env: &Env, args: &[&str]) -> Repl {
        Repl::start_with_env(env, args, &[])
    }

    /// The same with extra environment variables for the session process.
    pub fn start_with_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Repl {
        let mut repl = Repl::spawn(env, args, vars);
        let ready = repl.line(WAIT).expect("a first line");
        assert_eq!(ready["event"], "ready", "first line: {ready}");
        repl.ready = ready;
        repl
    }

    /// Starts `rlm-sandbox session --standby <args>` and waits for its
    /// `standby` event (kept in `ready` until [`Self::begin`]).
    pub fn standby(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Repl {
        let mut full = vec!["--standby"];
        full.extend_from_slice(args);
        let mut repl = Repl::spawn(env, &full, vars);
        let standby = repl.line(WAIT).expect("a first line");
        assert_eq!(standby["event"], "standby", "first line: {standby}");
        repl.ready = standby;
        repl
    }

    /// Sends `begin` with `args`; returns its answer (the `ready` event,
    /// then also kept in `ready`, or an error response).
    pub fn begin(&mut self, args: &[&str]) -> Value {
        let answer = self.request("begin", json!({ "args": args }));
        if answer["event"] == "ready" {
            self.ready = answer.clone();
        }
        answer
    }

    /// Starts `rlm-sandbox session <args>` without reading any line.
    pub fn spawn(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Repl {
        let mut full = vec!["session"];
        full.extend_from_slice(args);
        let mut command = env.command(&full);
        command.envs(vars.iter().copied());
        let mut child = command
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn session");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Repl {
            child,
            stdin,
            lines,
            next_id: 1,
            ready: Value::Null,
            calls: Vec::new(),
            other: Vec::new(),
        }
    }

    /// The next line, parsed; `None` at the end of output or after `wait`.
    pub fn line(&mut self, wait: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(wait).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
    }

    /// Writes raw bytes (a line, or anything) to the session's stdin.
    pub fn raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write");
        stdin.flush().expect("flush");
    }

    pub fn send(&mut self, value: &Value) {
        let mut line = serde_json::to_vec(value).expect("a JSON value serializes");
        line.push(b'\n');
        self.raw(&line);
    }

    /// Closes the session's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `{"id", "op", ...fields}` and returns its response; call
    /// events meanwhile are answered by `answer` (none expected if `None`).
    pub fn request_with(
        &mut self,
        op: &str,
        fields: Value,
        mut answer: Option<&mut Answer>,
    ) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = fields;
        msg["id"] = json!(id);
        msg["op"] = json!(op);
        self.send(&msg);
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .line(left)
                .unwrap_or_else(|| panic!("no response to {op} (id {id}) within {WAIT:?}"));
            if line["event"] == "call" {
                self.calls.push(line.clone());
                let answer = answer
                    .as_mut()
                    .unwrap_or_else(|| panic!("unexpected call event {line}"));
                let reply = match answer(&line) {
                    Ok(results) => {
                        json!({"op": "call_result", "call": line["call"], "results": results})
                    }
                    Err(e) => json!({"op": "call_result", "call": line["call"], "error": e}),
                };
                self.send(&reply);
                continue;
            }
            if line.get("id") == Some(&json!(id)) {
                return line;
            }
            self.other.push(line);
        }
    }

    pub fn request(&mut self, op: &str, fields: Value) -> Value {
        self.request_with(op, fields, None)
    }

    /// Runs `code` as a cell and returns the `cell` object (the response
    /// must be ok).
    pub fn exec(&mut self, code: &str) -> Value {
        let r = self.request("exec", json!({ "code": code }));
        assert_eq!(r["ok"], true, "exec failed: {r}");
        r["cell"].clone()
    }

    /// Sends `close`, expects ok and the process to exit 0.
    pub fn close(mut self) -> std::process::ExitStatus {
        let r = self.request("close", json!({}));
        assert_eq!(r["ok"], true, "close: {r}");
        self.close_stdin();
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits for the process to exit (killing it and failing after `wait`).
    pub fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the session did not exit within {wait:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
