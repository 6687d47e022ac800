//! The clients of `rlm-sandbox serve`: `run --server PATH` and `session
//! --server PATH` (or RLM_SANDBOX_SERVER). A client that cannot reach
//! the server fails naming the socket; it never falls back to starting
//! a sandbox itself.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// Connects to the server at `path`.
pub fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach the rlm-sandbox server at {} (is `rlm-sandbox serve --socket {}` \
             running, and may this user open the socket?); no sandbox was started",
            path.display(),
            path.display()
        )
    })
}

/// Sends the opening line. A server that refuses the peer answers and
/// closes before reading it: the write then fails with a broken pipe
/// while the refusal waits in this socket's receive queue, so that
/// error is left to the read that follows (which gets the refusal, or
/// the end of the stream).
fn open(stream: &mut UnixStream, opening: &Value) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(opening)?;
    line.push(b'\n');
    match stream.write_all(&line) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(())
        }
        other => other.context("cannot write to the server"),
    }
}

/// A one-shot run through the server: run's result object, or the
/// server's `error` object (busy, bad_request, ...).
pub fn run(path: &Path, code: &str, args: Vec<String>) -> anyhow::Result<Result<Value, Value>> {
    let mut stream = connect(path)?;
    open(
        &mut stream,
        &json!({"op": "run", "code": code, "args": args}),
    )?;
    let mut line = String::new();
    let n = BufReader::new(&stream)
        .read_line(&mut line)
        .context("cannot read the server's answer")?;
    if n == 0 {
        bail!(
            "the server at {} closed the connection without an answer",
            path.display()
        );
    }
    let mut answer: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the server's answer is not JSON: {:?}", line.trim()))?;
    match answer["ok"].as_bool() {
        Some(true) => Ok(Ok(answer["result"].take())),
        _ => Ok(Err(answer["error"].take())),
    }
}

/// A session through the server: stdin relayed to it, its lines to
/// stdout. The exit code: 1 when the session could not start (its first
/// line an error), or when the server ended it before its input ended
/// and without answering a `close`: shut down (its last line says so) or
/// gone (stopped, killed: an error on stderr names the socket, so a
/// caller never mistakes a dead server for a finished session); else 0.
pub fn session(path: &Path, args: Vec<String>) -> anyhow::Result<i32> {
    let mut stream = connect(path)?;
    open(&mut stream, &json!({"op": "session", "args": args}))?;
    let mut to_server = stream.try_clone()?;
    let input_ended = Arc::new(AtomicBool::new(false));
    let requests: Arc<Mutex<Requests>> = Arc::default();
    // The end of stdin closes the sending side only: the session runs
    // what was sent and its answers are still read.
    {
        let (input_ended, requests) = (input_ended.clone(), requests.clone());
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => {
                        // Set before the server can see the end.
                        input_ended.store(true, Ordering::SeqCst);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
                // Noted before the server can answer it.
                lock(&requests).sent(&line);
                if to_server.write_all(&line).is_err() {
                    return;
                }
            }
            let _ = to_server.shutdown(std::net::Shutdown::Write);
        });
    }
    let mut from_server = BufReader::new(stream);
    let mut out = std::io::stdout().lock();
    let mut first = true;
    let mut code = 0;
    let (mut line, mut last) = (Vec::new(), Vec::new());
    loop {
        line.clear();
        if from_server.read_until(b'\n', &mut line)? == 0 {
            if first {
                bail!(
                    "the server at {} closed the connection without an answer",
                    path.display()
                );
            }
            break;
        }
        if first {
            first = false;
            let v: Value = serde_json::from_slice(&line).unwrap_or_default();
            if v["event"] == "error" || v["ok"] == false {
                code = 1;
            }
        }
        lock(&requests).answered(&line);
        out.write_all(&line)?;
        out.flush()?;
        std::mem::swap(&mut line, &mut last);
    }
    if code == 0 {
        let v: Value = serde_json::from_slice(&last).unwrap_or_default();
        let requests = lock(&requests);
        if v["error"]["kind"] == "shutdown" {
            // The server said it ended the session (its last line says why).
            code = 1;
        } else if !requests.pending.is_empty()
            || (!input_ended.load(Ordering::SeqCst) && !requests.closed)
        {
            code = 1;
            eprintln!(
                "rlm-sandbox: the server at {} ended the session without an answer \
                 (it was stopped or killed); the session's sandbox is gone",
                path.display()
            );
        }
    }
    Ok(code)
}

/// What a session's client sent and what was answered: a session the
/// server ends leaves requests unanswered, or ends while its client was
/// still sending and had not closed it. Decided from the lines, not from
/// which of two ends was seen first.
#[derive(Default)]
struct Requests {
    /// Ids of requests sent and not yet answered (`call_result` is
    /// answered by nothing; a request without an id is not tracked).
    pending: HashSet<String>,
    /// Ids of `close` requests sent.
    closes: HashSet<String>,
    /// A `close` was answered.
    closed: bool,
}

impl Requests {
    fn sent(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if v["op"] == "call_result" || v["id"].is_null() {
            return;
        }
        let id = v["id"].to_string();
        if v["op"] == "close" {
            self.closes.insert(id.clone());
        }
        self.pending.insert(id);
    }

    fn answered(&mut self, line: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Head {
            id: Option<Value>,
            ok: Option<bool>,
        }
        let Ok(Head {
            id: Some(id),
            ok: Some(_),
        }) = serde_json::from_slice::<Head>(line)
        else {
            return;
        };
        let id = id.to_string();
        self.closed |= self.closes.contains(&id);
        self.pending.remove(&id);
    }
}

fn lock(requests: &Mutex<Requests>) -> std::sync::MutexGuard<'_, Requests> {
    requests.lock().unwrap_or_else(|p| p.into_inner())
}

/// `session`'s own command line, for the server: everything after
/// `session` but `--server`, each `--context` made absolute (the server
/// runs elsewhere). Flags a server does not take are refused by it.
pub fn session_args(argv: &[String]) -> anyhow::Result<Vec<String>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let absolute = |p: &str| -> String {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            p.to_string()
        } else {
            cwd.join(path).display().to_string()
        }
    };
    let mut out = Vec::new();
    let mut items = argv.iter();
    while let Some(a) = items.next() {
        match a.as_str() {
            "--server" => {
                items.next();
            }
            s if s.starts_with("--server=") => {}
            "--standby" | "--agent-command" => {
                bail!("{a} cannot be used with --server: the server starts and claims the sandbox")
            }
            s if s.starts_with("--agent-command=") => {
                bail!("--agent-command cannot be used with --server")
            }
            "--context" => {
                out.push(a.clone());
                if let Some(p) = items.next() {
                    out.push(absolute(p));
                }
            }
            s if s.starts_with("--context=") => {
                out.push(format!("--context={}", absolute(&s["--context=".len()..])));
            }
            _ => out.push(a.clone()),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn session_args_drop_the_server_and_make_contexts_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let got = session_args(&args(&[
            "--server",
            "/s",
            "--memory",
            "1g",
            "--context",
            "a.txt",
            "--context=/b",
            "--server=/t",
        ]))
        .unwrap();
        let a = cwd.join("a.txt").display().to_string();
        assert_eq!(
            got,
            args(&["--memory", "1g", "--context", &a, "--context=/b"])
        );
        assert!(session_args(&args(&["--standby"]))
            .unwrap_err()
            .to_string()
            .contains("--server"));
    }

    #[test]
    fn requests_are_pending_until_answered_and_a_close_is_noted() {
        let mut r = Requests::default();
        r.sent(b"{\"id\": 1, \"op\": \"exec\", \"code\": \"x = 'close'\"}\n");
        r.sent(b"{\"op\": \"call_result\", \"call\": 1, \"results\": [\"a\"]}\n");
        r.sent(b"{\"op\": \"exec\", \"code\": \"1\"}\n");
        r.sent(b"not json");
        assert_eq!(r.pending, HashSet::from(["1".to_string()]));
        r.answered(b"{\"event\": \"call\", \"call\": 1}\n");
        r.answered(b"{\"id\": 1, \"ok\": true, \"cell\": {\"stdout\": \"close\"}}\n");
        assert!(r.pending.is_empty() && !r.closed);
        r.sent(b"{\"id\": \"c\", \"op\": \"close\"}\n");
        assert!(!r.pending.is_empty());
        r.answered(b"{\"id\": \"c\", \"ok\": true}\n");
        assert!(r.pending.is_empty() && r.closed);
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let e = connect(Path::new("/nonexistent/rlm.sock")).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("/nonexistent/rlm.sock") && text.contains("no sandbox was started"),
            "{text}"
        );
    }
}
