//! A running `rlm-sandbox serve` for the server's tests: its `--json` log
//! read on a thread and waited on by event name, SIGTERM with the checks
//! that nothing of its runs was left.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;

use serde_json::{json, Value};

use super::Env;

/// A running server, its --json log lines on a channel.
pub struct Server {
    pub child: Child,
    pub log: mpsc::Receiver<Value>,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `serve --json --socket DIR/s.sock FLAGS`, returned once listening.
    pub fn start(env: &Env, flags: &[&str]) -> Server {
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

    /// Opens the socket to every uid (as an operator would with a group):
    /// SO_PEERCRED and --allow-uid are then what admits a peer.
    pub fn open_to_all(&self) {
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    }

    /// The next log event named `name` (earlier ones skipped).
    pub fn until(&self, name: &str) -> Value {
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

    pub fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// The stats answer.
    pub fn stats(&self) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.write_all(b"{\"op\":\"stats\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// SIGTERM; waits for the exit; nothing of its runs is left.
    pub fn stop(mut self, env: &Env) {
        self.stop_in_place(env);
    }

    pub fn stop_in_place(&mut self, env: &Env) {
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
