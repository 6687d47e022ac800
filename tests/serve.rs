//! `rlm-sandbox serve` against the real runtimes, its clients as separate
//! processes: the socket's mode and the peer check (another uid, run under
//! setpriv), concurrent sessions each seeing only its own state,
//! admission (the request beyond --max-live waits and is served, or is
//! busy after its wait), a client killed mid-cell freeing its sandbox,
//! and SIGTERM leaving nothing. Every wait is on an event: a line of the
//! server's --json log or of a client.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;

use serde_json::{json, Value};

/// A running server, its --json log lines on a channel.
struct Server {
    child: Child,
    log: mpsc::Receiver<Value>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(env: &common::Env, flags: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("rlm-serve-test-")
            .tempdir()
            .unwrap();
        // Reachable by other uids: the socket's own mode protects it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("s.sock");
        let mut args = vec!["serve", "--json", "--socket", socket.to_str().unwrap()];
        args.extend_from_slice(flags);
        let mut child = env.command(&args).stderr(Stdio::inherit()).spawn().unwrap();
        let (tx, log) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let server = Server {
            child,
            log,
            socket,
            _dir: dir,
        };
        server.until("listening");
        server
    }

    /// The next log event named `name` (earlier ones skipped).
    fn until(&self, name: &str) -> Value {
        loop {
            let event = self
                .log
                .recv()
                .unwrap_or_else(|_| panic!("the server ended before {name:?}"));
            if event["event"] == name {
                return event;
            }
        }
    }

    fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// The stats answer.
    fn stats(&self) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.write_all(b"{\"op\":\"stats\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// SIGTERM; waits for the exit; nothing of its runs is left.
    fn stop(mut self, env: &common::Env) {
        self.stop_in_place(env);
    }

    fn stop_in_place(&mut self, env: &common::Env) {
        let pid = self.child.id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(!self.socket.exists(), "the socket is left");
        env.assert_clean(pid);
    }
}

impl Drop for Server {
    /// A failed test's server is not left running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `session --server` client process.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn start(env: &common::Env, server: &Server, args: &[&str]) -> Client {
        let mut full = vec!["session", "--server", server.sock()];
        full.extend_from_slice(args);
        let mut child = env.command(&full).stdin(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        Client { child, stdin, out }
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn send(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    fn exec(&mut self, id: u64, code: &str) -> Value {
        self.send(json!({"id": id, "op": "exec", "code": code}));
        self.line()
    }

    /// Closes its input; its exit status.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }
}

fn run_client(env: &common::Env, server: &Server, code: &str, args: &[&str]) -> (Value, i32) {
    let mut full = vec!["run", "--json", "--server", server.sock(), "-c", code];
    full.extend_from_slice(args);
    let out = env.command(&full).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (v, out.status.code().unwrap_or(-1))
}

on_both_runtimes! {
    fn the_socket_is_0600_and_other_uids_are_refused_unless_allowed(env) {
        let server = Server::start(env, &["--pool-size", "0"]);
        let mode = std::fs::metadata(&server.socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let as_nobody = |server: &Server| {
            Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", common::BIN])
                .args(["run", "--json", "--server", server.sock(), "-c", "print(6*7)"])
                .output()
                .unwrap()
        };
        // The mode: another uid cannot even connect.
        let out = as_nobody(&server);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("cannot reach") && err.contains("Permission denied"), "{err}");
        // Opened up by the operator: SO_PEERCRED still refuses uid 65534.
        std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = as_nobody(&server);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["kind"], "forbidden", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("uid 65534"), "{v}");
        let refused = server.until("refused_peer");
        assert_eq!(refused["uid"], 65534);
        assert_eq!(server.stats()["refused_peers"], 1);
        server.stop(env);
        // The negative control: allowed, the same client is served.
        let server = Server::start(env, &["--pool-size", "0", "--allow-uid", "65534"]);
        std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = as_nobody(&server);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!((v["status"].as_str(), v["stdout"].as_str()), (Some("ok"), Some("42\n")), "{v}");
        server.stop(env);
    }

    fn concurrent_sessions_from_separate_processes_see_only_their_own_state(env) {
        const N: usize = 12;
        let server = Server::start(env, &["--pool-size", "2", "--max-live", "16"]);
        let mut clients: Vec<Client> = (0..N)
            .map(|_| Client::start(env, &server, &["--memory", "256m"]))
            .collect();
        for (i, c) in clients.iter_mut().enumerate() {
            let ready = c.line();
            assert_eq!(ready["event"], "ready", "client {i}: {ready}");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.exec(1, &format!("marker = 'M{i}'\nopen('/tmp/M{i}', 'w').write('x')"));
            assert_eq!(r["ok"], true, "client {i}: {r}");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.exec(2, "import os\nprint(marker, sorted(f for f in os.listdir('/tmp') if f.startswith('M')))");
            let want = format!("M{i} ['M{i}']\n");
            assert_eq!(r["cell"]["stdout"], want.as_str(), "client {i}: {r}");
        }
        assert_eq!(server.stats()["live"], N);
        for c in clients {
            assert!(c.finish().success());
        }
        // Each session ends before its client sees the end: all are gone.
        let stats = server.stats();
        assert_eq!((stats["live"].as_u64(), stats["memory_committed"].as_u64()), (Some(0), Some(0)), "{stats}");
        server.stop(env);
    }

    fn beyond_max_live_a_request_waits_and_is_served_or_is_busy_after_its_wait(env) {
        let server = Server::start(env, &["--pool-size", "0", "--max-live", "2"]);
        let mut a = Client::start(env, &server, &[]);
        let mut b = Client::start(env, &server, &[]);
        assert_eq!(a.line()["event"], "ready");
        assert_eq!(b.line()["event"], "ready");
        // Busy after its wait, naming what is full.
        let (v, code) = run_client(env, &server, "print(1)", &["--memory", "256m", "--wait", "0.2"]);
        assert_eq!(code, 2);
        assert_eq!(v["error"]["kind"], "busy", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("--max-live 2"), "{v}");
        // Waits (queued, per the log), then is served once a session ends.
        let waiter = {
            let (sock, state) = (server.sock().to_string(), env.state.path().to_path_buf());
            let runtime = env.runtime.clone();
            std::thread::spawn(move || {
                Command::new(common::BIN)
                    .args(["run", "--json", "--server", &sock, "--wait", "600", "-c", "print(7)"])
                    .env("RLM_DOCKER_RUNTIME", runtime)
                    .env("RLM_STATE_DIR", state)
                    .output()
                    .unwrap()
            })
        };
        let queued = server.until("queued");
        assert!(queued["why"].as_str().unwrap().contains("--max-live 2"), "{queued}");
        assert!(a.finish().success());
        let out = waiter.join().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((v["status"].as_str(), v["stdout"].as_str()), (Some("ok"), Some("7\n")), "{v}");
        assert!(b.finish().success());
        let stats = server.stats();
        assert_eq!((stats["admitted"].as_u64(), stats["refused"].as_u64()), (Some(3), Some(1)), "{stats}");
        server.stop(env);
    }

    fn a_client_killed_mid_cell_frees_its_sandbox_and_sigterm_leaves_nothing(env) {
        let server = Server::start(env, &["--pool-size", "1"]);
        let mut c = Client::start(env, &server, &[]);
        assert_eq!(c.line()["event"], "ready");
        // The cell waits on a call to the client: the call event shows it runs.
        c.send(json!({"id": 1, "op": "exec", "code": "llm_query('are you there?')"}));
        let call = c.line();
        assert_eq!(call["event"], "call", "{call}");
        assert_eq!(server.stats()["live"], 1);
        c.child.kill().unwrap();
        c.child.wait().unwrap();
        let ended = server.until("session_ended");
        assert_eq!(ended["exit"], 130, "{ended}");
        assert_eq!(server.stats()["live"], 0);
        // A session open at SIGTERM is closed between requests.
        let mut d = Client::start(env, &server, &[]);
        assert_eq!(d.line()["event"], "ready");
        assert_eq!(d.exec(1, "x = 1")["ok"], true);
        server.stop(env);
        let last = d.line();
        assert_eq!(last["error"]["kind"], "shutdown", "{last}");
        assert!(d.finish().success());
    }
}
