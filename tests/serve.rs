//! `rlm-sandbox serve` against the real runtimes, its clients as separate
//! processes: the socket's mode and the peer check (another uid, run under
//! setpriv), concurrent sessions each seeing only its own state,
//! admission (the request beyond --max-live waits and is served, or is
//! busy after its wait), a client killed mid-cell freeing its sandbox,
//! SIGTERM during load (running cells finish within the grace, the rest
//! are ended) and SIGKILL during load (the watchdogs end every sandbox;
//! killed with them, `gc` does) leaving nothing. Every wait is on an event: a line of the
//! server's --json log or of a client.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;

use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

use common::server::Server;

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

    /// Closes its input; its exit status and what it wrote on stderr.
    fn finish_with_stderr(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (self.child.wait().unwrap(), err)
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

/// Session `i`'s marker: fixed width, so no marker contains another.
fn marker(i: usize) -> String {
    format!("RLMMARK{i:03}X")
}

/// Defines `leave(m)`: `m` into /tmp, a variable, and a process (the
/// name of a thread that stays; the sandbox runs no other programs).
const LEAVE_MARKER: &str = concat!(
    "import threading\n",
    "def leave(m):\n",
    "    global marker, holder\n",
    "    marker = m\n",
    "    open('/tmp/' + m, 'w').write(m)\n",
    "    named = threading.Event()\n",
    "    def hold():\n",
    "        open('/proc/thread-self/comm', 'w').write(m)\n",
    "        named.set()\n",
    "        threading.Event().wait()\n",
    "    holder = threading.Thread(target=hold, daemon=True)\n",
    "    holder.start()\n",
    "    named.wait()\n",
);

/// Prints the session's marker, then every marker in /tmp, in a global
/// and in the name or argv of any task in the sandbox's /proc.
const FIND_MARKERS: &str = concat!(
    "import os\n",
    "def find_markers():\n",
    "    files = sorted(f for f in os.listdir('/tmp') if f.startswith('RLMMARK'))\n",
    "    names = sorted(v for v in globals().values() if isinstance(v, str) and v.startswith('RLMMARK'))\n",
    "    procs = set()\n",
    "    for p in filter(str.isdigit, os.listdir('/proc')):\n",
    "        try:\n",
    "            seen = open('/proc/%s/cmdline' % p, 'rb').read().decode().split('\\0')\n",
    "            for t in os.listdir('/proc/%s/task' % p):\n",
    "                seen.append(open('/proc/%s/task/%s/comm' % (p, t)).read().strip())\n",
    "        except (OSError, ValueError):\n",
    "            continue\n",
    "        procs.update(a for a in seen if a.startswith('RLMMARK'))\n",
    "    return files, names, sorted(procs)\n",
    "files, names, procs = find_markers()\n",
    "print(marker, 'files', files, 'vars', names, 'procs', procs)\n",
);

/// `run --json --server` in its own thread; its result and exit code.
fn spawn_run_client(
    env: &common::Env,
    server: &Server,
    code: &str,
    args: &[&str],
) -> std::thread::JoinHandle<(Value, i32)> {
    let mut full: Vec<String> = ["run", "--json", "--server", server.sock(), "-c", code]
        .iter()
        .map(|s| s.to_string())
        .collect();
    full.extend(args.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(common::BIN);
    cmd.args(&full)
        .env("RLM_DOCKER_RUNTIME", &env.runtime)
        .env("RLM_STATE_DIR", env.state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::thread::spawn(move || {
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (v, out.status.code().unwrap_or(-1))
    })
}

/// `gc` in the test's state directory succeeds, and finds nothing of the
/// runs named `prefix` (the server's) to remove or fail on; other
/// drivers' leftovers in the shared cgroup tree are not this test's.
fn assert_gc_finds_nothing(env: &common::Env, prefix: &str) {
    let out = env.command(&["gc", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = |key: &str| -> usize {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.as_str().unwrap().contains(prefix))
            .count()
    };
    assert_eq!(
        (ours("removed"), ours("in_use"), ours("errors")),
        (0, 0, 0),
        "{report}"
    );
}

/// The runs named `prefix` with a cgroup (any hierarchy).
fn runs_with_cgroups(prefix: &str) -> usize {
    let mut ids = std::collections::BTreeSet::new();
    for hierarchy in common::cgroup_mounts() {
        if let Ok(d) = std::fs::read_dir(hierarchy.join("rlm-sandbox")) {
            ids.extend(
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix)),
            );
        }
    }
    ids.len()
}

/// How many runs named `prefix` have a process in their cgroup (any
/// hierarchy): the sandboxes running.
fn runs_with_processes(prefix: &str) -> usize {
    fn has_procs(dir: &std::path::Path) -> bool {
        let here =
            std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty());
        here || std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().is_dir() && has_procs(&e.path()))
        })
    }
    let mut ids = std::collections::BTreeSet::new();
    for hierarchy in common::cgroup_mounts() {
        if let Ok(d) = std::fs::read_dir(hierarchy.join("rlm-sandbox")) {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) && has_procs(&e.path()) {
                    ids.insert(name);
                }
            }
        }
    }
    ids.len()
}

/// A process watched through a pidfd: its exit is an event to wait on,
/// whoever its parent is.
struct Exit(std::os::fd::OwnedFd);

impl Exit {
    fn watch(pid: u32) -> Exit {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd
        // (or -1); the fd is owned by nothing else.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        assert!(
            fd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just returned by pidfd_open, open and unowned.
        Exit(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
    }

    /// Blocks until the process has exited.
    fn wait_exit(&self) {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self.0.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
    }
}

/// Waits until the server's pools are full and nothing is starting, with
/// `total` watchdogs; their exits to wait on. The deadline only ends a
/// test that would hang (the server logs no event for a refill).
fn wait_for_pool_full(server: &Server, pid: u32, total: usize) -> Vec<Exit> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let stats = server.stats();
        let pools = stats["pools"].as_object().unwrap();
        let full = pools.values().all(|p| p["starting"] == 0)
            && pools
                .values()
                .map(|p| p["ready"].as_u64().unwrap())
                .sum::<u64>()
                == 2;
        let watchdogs = common::watchdogs_of(pid);
        if full && watchdogs.len() == total {
            return watchdogs.into_iter().map(Exit::watch).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not refill: {stats}, watchdogs {watchdogs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
        server.open_to_all();
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
        server.open_to_all();
        let out = as_nobody(&server);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!((v["status"].as_str(), v["stdout"].as_str()), (Some("ok"), Some("42\n")), "{v}");
        server.stop(env);
    }

    fn fifty_concurrent_sessions_from_separate_processes_see_only_their_own_state(env) {
        // All 50 live at once (--max-live 50, nothing queues): each client
        // is its own `session --server` process. Every session leaves its
        // marker in /tmp, in a variable and in a process (a thread's name),
        // then each looks for every marker in all three: it must find its
        // own (the search works) and no other.
        const N: usize = 50;
        let server = Server::start(env, &["--pool-size", "2", "--max-live", "50", "--max-memory", "16g"]);
        let mut clients: Vec<Client> = (0..N)
            .map(|_| Client::start(env, &server, &["--memory", "256m"]))
            .collect();
        for (i, c) in clients.iter_mut().enumerate() {
            let ready = c.line();
            assert_eq!(ready["event"], "ready", "client {i}: {ready}");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.exec(1, &format!("{LEAVE_MARKER}leave('{}')", marker(i)));
            assert_eq!(r["ok"], true, "client {i}: {r}");
            assert_eq!(r["cell"]["status"], "ok", "client {i}: {r}");
        }
        assert_eq!(server.stats()["live"], N);
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.exec(2, FIND_MARKERS);
            let m = marker(i);
            let want = format!("{m} files ['{m}'] vars ['{m}'] procs ['{m}']\n");
            assert_eq!(r["cell"]["stdout"], want.as_str(), "client {i}: {r}");
        }
        for (i, c) in clients.into_iter().enumerate() {
            assert!(c.finish().success(), "client {i}");
        }
        // Each session ends before its client sees the end: all are gone.
        let stats = server.stats();
        assert_eq!((stats["live"].as_u64(), stats["memory_committed"].as_u64()), (Some(0), Some(0)), "{stats}");
        assert_eq!(stats["admitted"], N, "{stats}");
        let pid = server.child.id();
        server.stop(env);
        assert_gc_finds_nothing(env, &format!("rlms-{pid}-"));
    }

    fn sigterm_during_load_lets_running_cells_finish_within_grace_and_ends_the_rest(env) {
        // 8 sessions mid-cell (each cell waits on an llm_query its client
        // holds) and a 9th request queued behind --max-live 8.
        const N: usize = 8;
        let mut server = Server::start(env, &["--pool-size", "2", "--max-live", "8", "--grace", "15"]);
        let mut clients: Vec<Client> = (0..N).map(|_| Client::start(env, &server, &[])).collect();
        let mut calls = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.line()["event"], "ready", "client {i}");
            c.send(json!({"id": 1, "op": "exec", "code": "r = llm_query('q')\nprint('answered', r)"}));
            let call = c.line();
            assert_eq!(call["event"], "call", "client {i}: {call}");
            calls.push(call["call"].clone());
        }
        let waiter = spawn_run_client(env, &server, "print(7)", &["--wait", "600"]);
        server.until("queued");
        assert_eq!(server.stats()["live"], N);
        let pid = server.child.id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM).unwrap();
        let shutdown = server.until("shutdown");
        assert_eq!(shutdown["grace_s"], 15.0, "{shutdown}");
        // Accept has stopped: the socket is gone, a new client cannot reach it.
        assert!(std::os::unix::net::UnixStream::connect(&server.socket).is_err());
        let (v, code) = waiter.join().unwrap();
        assert_eq!((code, v["error"]["kind"].as_str()), (2, Some("busy")), "the queued request: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("shutting down"), "{v}");
        // Half the cells are answered within the grace: they finish, and
        // their sessions then end between requests.
        for (i, c) in clients.iter_mut().enumerate().take(N / 2) {
            c.send(json!({"op": "call_result", "call": calls[i], "results": [format!("yes {i}")]}));
            let r = c.line();
            assert_eq!(r["cell"]["stdout"], format!("answered yes {i}\n").as_str(), "client {i}: {r}");
            let last = c.line();
            assert_eq!(last["error"]["kind"], "shutdown", "client {i}: {last}");
        }
        // The other half never are: their sessions are ended after the grace.
        let stopped = server.until("stopped");
        assert_eq!(stopped["ended_after_grace"], N / 2, "{stopped}");
        for (i, c) in clients.iter_mut().enumerate().skip(N / 2) {
            let last = c.line();
            assert_eq!((last["id"].as_u64(), last["error"]["kind"].as_str()), (Some(1), Some("shutdown")), "client {i}: {last}");
            assert!(last["error"]["message"].as_str().unwrap().contains("--grace"), "client {i}: {last}");
        }
        let status = server.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        // Ended by the server, not by their input: each exits 1, and its
        // last line said why (nothing on stderr).
        for (i, c) in clients.into_iter().enumerate() {
            let (status, err) = c.finish_with_stderr();
            assert_eq!((status.code(), err.as_str()), (Some(1), ""), "client {i}");
        }
        env.assert_clean(pid);
        assert_gc_finds_nothing(env, &format!("rlms-{pid}-"));
    }

    fn sigkill_of_the_server_during_load_every_sandbox_ends_by_itself_and_gc_leaves_nothing(env) {
        const N: usize = 8;
        let server = Server::start(env, &["--pool-size", "2", "--max-live", "8"]);
        let mut clients: Vec<Client> = (0..N).map(|_| Client::start(env, &server, &[])).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.line()["event"], "ready", "client {i}");
            c.send(json!({"id": 1, "op": "exec", "code": "llm_query('are you there?')"}));
            assert_eq!(c.line()["event"], "call", "client {i}");
        }
        // The pool refilled behind the claims: every sandbox of the server
        // (8 live, 2 standbys) is started and has its watchdog.
        let pid = server.child.id();
        let watchdogs = wait_for_pool_full(&server, pid, N + 2);
        let prefix = format!("rlms-{pid}-");
        assert_eq!(runs_with_processes(&prefix), N + 2);
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        // The watchdogs, now orphans, end their runs and exit.
        for w in &watchdogs {
            w.wait_exit();
        }
        let left = common::leftovers(env.state.path(), &prefix);
        assert!(left.is_empty(), "left after the watchdogs: {left:?}");
        // The clients see the connection end with no answer: each fails,
        // naming the server.
        for (i, c) in clients.into_iter().enumerate() {
            let (status, err) = c.finish_with_stderr();
            assert_eq!(status.code(), Some(1), "client {i}: {err}");
            assert!(err.contains(server.sock()) && err.contains("without an answer"), "client {i}: {err}");
        }
        assert_gc_finds_nothing(env, &prefix);
        env.assert_clean(pid);
    }

    // The negative control of the test above: the server killed with its
    // watchdogs (a power cut, a kill of the whole tree), its sandboxes run
    // on, and only `gc` removes them.
    fn gc_removes_what_a_killed_server_and_its_watchdogs_left(env) {
        const N: usize = 3;
        let server = Server::start(env, &["--pool-size", "2"]);
        let mut clients: Vec<Client> = (0..N).map(|_| Client::start(env, &server, &[])).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.line()["event"], "ready", "client {i}");
            c.send(json!({"id": 1, "op": "exec", "code": "llm_query('are you there?')"}));
            assert_eq!(c.line()["event"], "call", "client {i}");
        }
        let pid = server.child.id();
        let watchdogs = wait_for_pool_full(&server, pid, N + 2);
        let dogs = common::watchdogs_of(pid);
        for w in &dogs {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*w as i32), nix::sys::signal::SIGKILL).unwrap();
        }
        for w in &watchdogs {
            w.wait_exit();
        }
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let prefix = format!("rlms-{pid}-");
        // Left for gc: every run's cgroup and directory (and whatever of
        // the sandbox still runs: an agent whose input ended with the
        // server exits by itself, so none may be left running).
        assert_eq!(runs_with_cgroups(&prefix), N + 2);
        for c in clients {
            c.finish();
        }
        let out = env.command(&["gc", "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let removed = report["removed"].as_array().unwrap().iter().filter(|id| id.as_str().unwrap().starts_with(&prefix)).count();
        assert_eq!(removed, N + 2, "{report}");
        env.assert_clean(pid);
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
        // Ended by the server before its input: not a success.
        assert_eq!(d.finish().code(), Some(1));
    }
}
