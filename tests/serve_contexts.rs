//! `rlm-sandbox serve`'s contexts are opened with the client's
//! credentials (issue 21): a client must not get the server (root) to
//! mount a file it could not read itself. The client runs as uid 65534
//! under setpriv; the files are root's. Each refusal has its baseline (the
//! same uid's `cat` of the file fails) and its negative control (the
//! server's own uid gets the same file mounted and read in the sandbox).
//! Every wait is on an event: a line of the server's --json log or of a
//! client.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

use common::server::Server;

/// The group of the 0640 file: no user's primary group.
const GROUP: &str = "4242";

/// Who the client runs as.
#[derive(Clone, Copy)]
enum As {
    /// uid 65534 with no supplementary group.
    Nobody,
    /// uid 65534 in [`GROUP`].
    NobodyInGroup,
    /// The server's own uid (root).
    Root,
}

impl As {
    fn command(self, program: &str) -> Command {
        let groups: &[&str] = match self {
            As::Root => return Command::new(program),
            As::Nobody => &["--clear-groups"],
            As::NobodyInGroup => &["--groups", GROUP],
        };
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534"])
            .args(groups)
            .arg(program);
        cmd
    }
}

/// A `session --server` client process.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn start(env: &common::Env, server: &Server, who: As, contexts: &[&Path]) -> Client {
        let mut cmd = who.command(common::BIN);
        cmd.args(["session", "--server", server.socket.to_str().unwrap()]);
        for c in contexts {
            cmd.arg("--context").arg(c);
        }
        let mut child = cmd
            .env("RLM_DOCKER_RUNTIME", &env.runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        Client { child, stdin, out }
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn request(&mut self, v: Value) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }

    /// The stdout of a cell that must end ok.
    fn stdout(&mut self, id: u64, code: &str) -> String {
        let r = self.request(json!({"id": id, "op": "exec", "code": code}));
        assert_eq!(r["cell"]["status"], "ok", "{r}");
        r["cell"]["stdout"].as_str().unwrap().to_string()
    }

    fn add_context(&mut self, id: u64, path: &Path) -> Value {
        self.request(json!({"id": id, "op": "add_context", "path": path}))
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// Root's files for the clients: a 0600 file, a 0644 file inside a 0700
/// directory, a 0644 file in a 0755 one, a 0640 file of [`GROUP`], and a
/// symbolic link owned by uid 65534 to the 0600 file.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::Builder::new()
            .prefix("rlm-ctx-files-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let file = |name: &str, mode: u32, gid: u32| {
            let path = d.join(name);
            std::fs::write(&path, name.to_uppercase()).unwrap();
            std::os::unix::fs::chown(&path, Some(0), Some(gid)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        std::fs::create_dir(d.join("closed")).unwrap();
        file("secret-0600", 0o600, 0);
        file("closed/inner-0644", 0o644, 0);
        file("open-0644", 0o644, 0);
        file("group-0640", 0o640, GROUP.parse().unwrap());
        std::os::unix::fs::symlink(d.join("secret-0600"), d.join("link")).unwrap();
        std::os::unix::fs::lchown(d.join("link"), Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(d.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The bytes the sandbox prints (reversed: no verbatim echo of a
    /// context for the egress filter to flag).
    fn printed(name: &str) -> String {
        format!(
            "{}\n",
            name.to_uppercase().chars().rev().collect::<String>()
        )
    }
}

/// Whether `who` can read `path` itself (`cat`): the baseline of each
/// refusal.
fn can_read(who: As, path: &Path) -> bool {
    who.command("cat")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The `forbidden` refusal of a session opening with `path`: the error
/// event names the path and `errno`.
fn refused_at_opening(env: &common::Env, server: &Server, who: As, path: &Path, errno: &str) {
    let mut c = Client::start(env, server, who, &[path]);
    let first = c.line();
    assert_eq!(
        (first["event"].as_str(), first["error"]["kind"].as_str()),
        (Some("error"), Some("forbidden")),
        "{}: {first}",
        path.display()
    );
    let message = first["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(path.to_str().unwrap()) && message.contains(errno),
        "{message}"
    );
    assert_eq!(c.child.wait().unwrap().code(), Some(1));
}

/// An `add_context` refused as `forbidden` naming `errno`; nothing placed.
fn refused_mid_session(c: &mut Client, id: u64, path: &Path, errno: &str) {
    let r = c.add_context(id, path);
    assert_eq!(
        (r["ok"].as_bool(), r["error"]["kind"].as_str()),
        (Some(false), Some("forbidden")),
        "{}: {r}",
        path.display()
    );
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(path.to_str().unwrap()) && message.contains(errno),
        "{message}"
    );
}

on_both_runtimes! {
    fn a_client_cannot_mount_a_file_it_could_not_read(env) {
        let files = Files::new();
        let (secret, inner, open, group, link) = (
            files.path("secret-0600"),
            files.path("closed/inner-0644"),
            files.path("open-0644"),
            files.path("group-0640"),
            files.path("link"),
        );
        // The baselines: uid 65534 cannot read these itself...
        for path in [&secret, &inner, &group, &link] {
            assert!(!can_read(As::Nobody, path), "{}", path.display());
        }
        // ...but these.
        assert!(can_read(As::Nobody, &open));
        assert!(can_read(As::NobodyInGroup, &group));
        let server = Server::start(env, &["--pool-size", "0", "--allow-uid", "65534"]);
        server.open_to_all();

        // Refused at the opening: nothing started, one forbidden line.
        refused_at_opening(env, &server, As::Nobody, &secret, "EACCES");
        refused_at_opening(env, &server, As::Nobody, &inner, "EACCES");
        refused_at_opening(env, &server, As::Nobody, &link, "EACCES");
        refused_at_opening(env, &server, As::Nobody, &group, "EACCES");
        refused_at_opening(env, &server, As::Nobody, &files.path("missing"), "ENOENT");

        // What it may read is served (a cold start placing the open file),
        // and its bytes are read in the sandbox.
        let mut c = Client::start(env, &server, As::Nobody, &[&open]);
        let ready = c.line();
        assert_eq!(ready["event"], "ready", "{ready}");
        assert_eq!(c.stdout(1, "print(context_0[::-1])"), Files::printed("open-0644"));
        // Mid-session: each refusal is an error response, nothing is
        // placed, and the session runs on.
        refused_mid_session(&mut c, 2, &secret, "EACCES");
        refused_mid_session(&mut c, 3, &inner, "EACCES");
        refused_mid_session(&mut c, 4, &link, "EACCES");
        refused_mid_session(&mut c, 5, &group, "EACCES");
        // A magic link would name the server's own descriptors.
        refused_mid_session(&mut c, 6, Path::new("/proc/self/fd/0"), "ELOOP");
        let r = c.add_context(7, &open);
        assert_eq!(r["context"]["name"], "context_1", "{r}");
        let listed = c.stdout(8, "import os\nprint(context_1[::-1], sorted(os.listdir('/rlm/contexts')))");
        assert_eq!(listed, format!("{} ['0', '1']\n", Files::printed("open-0644").trim_end()));
        c.finish();

        // Supplementary groups are the client's: in GROUP, the 0640 file
        // is served (refused above without it).
        let mut g = Client::start(env, &server, As::NobodyInGroup, &[&group]);
        let ready = g.line();
        assert_eq!(ready["event"], "ready", "{ready}");
        assert_eq!(g.stdout(1, "print(context_0[::-1])"), Files::printed("group-0640"));
        g.finish();

        // The negative control: the server's own uid gets the same files
        // mounted and read (the server itself can read every one).
        let mut r = Client::start(env, &server, As::Root, &[&secret]);
        let ready = r.line();
        assert_eq!(ready["event"], "ready", "{ready}");
        assert_eq!(r.stdout(1, "print(context_0[::-1])"), Files::printed("secret-0600"));
        let added = r.add_context(2, &inner);
        assert_eq!(added["ok"], true, "{added}");
        assert_eq!(r.stdout(3, "print(context_1[::-1])"), Files::printed("closed/inner-0644"));
        r.finish();
        server.stop(env);
    }
}
