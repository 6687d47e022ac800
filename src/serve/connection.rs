//! One connection: its peer checked (SO_PEERCRED), its first line read
//! and answered: a session served on the connection, a one-shot run, or
//! stats. Every refusal is one JSON line, then the connection closes.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::as_peer::{self, Credentials};
use super::{allowed, Flags, Opening, PeerCred, Shared, FIRST_LINE_TIMEOUT};
use crate::session::contexts::{Format, Opened, Source};
use crate::session::serve::{serve_with, ContextGate, Output, Peer};
use crate::session::{Handler, SessionError};

/// How long a write to a client that does not read may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes one JSON line (best effort: the client may be gone).
fn line(mut stream: &UnixStream, value: &Value) {
    let mut text = serde_json::to_vec(value).unwrap_or_default();
    text.push(b'\n');
    let _ = stream.write_all(&text);
}

fn error(kind: &str, message: impl Into<String>) -> Value {
    json!({"ok": false, "error": {"kind": kind, "message": message.into()}})
}

/// Refuses a connection beyond the bound.
pub(crate) fn refuse_full(shared: &Shared, stream: UnixStream, max: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let message = format!("connections: {max} open, the most this server takes");
    shared.admission.count_refusal();
    shared.log.event(json!({"event": "busy", "why": message}));
    line(&stream, &error("busy", message));
}

pub(crate) fn serve(shared: &Shared, stream: UnixStream, flags: &Flags) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let peer = match PeerCred::of(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            line(
                &stream,
                &error("forbidden", format!("cannot identify the peer: {e}")),
            );
            return;
        }
    };
    let s = &shared.settings;
    if !allowed(&peer, shared.own_uid, &s.allow_uids, &s.allow_gids) {
        shared.refused_peers.fetch_add(1, Ordering::Relaxed);
        shared.log.event(
            json!({"event": "refused_peer", "uid": peer.uid, "gid": peer.gid, "pid": peer.pid}),
        );
        let message = format!(
            "uid {} (gid {}) may not use this server: it serves uid {} and --allow-uid {:?} / --allow-gid {:?}",
            peer.uid, peer.gid, shared.own_uid, s.allow_uids, s.allow_gids
        );
        line(&stream, &error("forbidden", message));
        return;
    }
    let _ = stream.set_read_timeout(Some(FIRST_LINE_TIMEOUT));
    let first = super::read_line(&stream);
    let _ = stream.set_read_timeout(None);
    let opening = match first {
        Ok(None) => return,
        Ok(Some(first)) => super::parse_opening(&first),
        Err(e) => Err(e),
    };
    match opening {
        Err(message) => line(&stream, &error("bad_request", message)),
        Ok(Opening::Stats) => line(&stream, &shared.stats()),
        Ok(Opening::Run { code, args }) => run(shared, &stream, &peer, &code, &args, flags),
        Ok(Opening::Session { args }) => session(shared, stream, &peer, &args, flags),
    }
}

/// Admits a request for `sandbox`'s memory, or answers busy.
fn admit(
    shared: &Shared,
    stream: &UnixStream,
    peer: &PeerCred,
    op: &str,
    memory: u64,
    wait: Option<Duration>,
) -> Option<super::Permit> {
    let wait = wait.unwrap_or(shared.settings.wait);
    let queued = |why: &str| {
        shared.log.event(
            json!({"event": "queued", "op": op, "uid": peer.uid, "pid": peer.pid,
            "why": why, "wait_s": wait.as_secs_f64()}),
        );
    };
    match shared.admission.admit_or_queue(memory, wait, queued) {
        Ok(permit) => Some(permit),
        Err(busy) => {
            shared
                .log
                .event(json!({"event": "busy", "op": op, "uid": peer.uid, "why": busy.0}));
            let mut answer = error("busy", busy.0);
            if op == "session" {
                answer["event"] = json!("error");
            }
            line(stream, &answer);
            None
        }
    }
}

fn session(shared: &Shared, stream: UnixStream, peer: &PeerCred, args: &[String], flags: &Flags) {
    let since = Instant::now();
    let refuse = |kind: &str, message: String| {
        let mut answer = error(kind, message);
        answer["event"] = json!("error");
        line(&stream, &answer);
    };
    let mut plan = match shared.resolve.session(args) {
        Ok(plan) => plan,
        Err(message) => return refuse("bad_request", message),
    };
    let groups = as_peer::peer_groups(&stream);
    let mut gate = context_gate(shared.own_uid, *peer, groups);
    for (source, format) in &mut plan.options.contexts {
        let path = source.path().to_path_buf();
        match gate(&path) {
            Ok(opened) => {
                *format = format.or(Some(Format::of(&path)));
                *source = opened;
            }
            Err(e) => return refuse(e.kind(), e.to_string()),
        }
    }
    let memory = plan.sandbox.config.limits.memory_bytes;
    let Some(permit) = admit(shared, &stream, peer, "session", memory, plan.wait) else {
        return;
    };
    let (input, output) = match (stream.try_clone(), stream.try_clone()) {
        (Ok(i), Ok(o)) => (OwnedFd::from(i), o),
        _ => return refuse("driver", "cannot duplicate the connection".into()),
    };
    let hangup = match stream.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => return refuse("driver", format!("cannot duplicate the connection: {e}")),
    };
    shared.pool.keep(&plan.sandbox);
    let sandbox = plan.sandbox.clone();
    let options = plan.options;
    let pool = &shared.pool;
    let start = |handler, cancel| pool.claim(&sandbox, options, handler, cancel);
    let served = serve_with(
        start,
        plan.backend,
        input,
        Output::new(output),
        flags.cancel.clone(),
        Peer {
            unread: Box::new(move || hung_up(hangup.as_fd())),
            drain: flags.drain.clone(),
            contexts: gate,
        },
    );
    drop(permit);
    drop(plan.keep);
    shared.log.event(json!({
        "event": "session_ended",
        "uid": peer.uid,
        "pid": peer.pid,
        "exit": served,
        "seconds": since.elapsed().as_secs_f64(),
    }));
}

fn run(
    shared: &Shared,
    stream: &UnixStream,
    peer: &PeerCred,
    code: &str,
    args: &[String],
    flags: &Flags,
) {
    let since = Instant::now();
    let plan = match shared.resolve.run(args) {
        Ok(plan) => plan,
        Err(message) => return line(stream, &error("bad_request", message)),
    };
    let memory = plan.sandbox.config.limits.memory_bytes;
    let Some(permit) = admit(shared, stream, peer, "run", memory, plan.wait) else {
        return;
    };
    shared.pool.keep(&plan.sandbox);
    // Ends the run when the client hangs up or the grace is over.
    let cancel = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = stream.as_fd().try_clone_to_owned().ok().map(|fd| {
        let (cancel, done, server) = (cancel.clone(), done.clone(), flags.cancel.clone());
        std::thread::spawn(move || watch(fd, &cancel, &done, &server))
    });
    let outcome = shared
        .pool
        .claim(
            &plan.sandbox,
            Default::default(),
            Handler::None,
            cancel.clone(),
        )
        .map(|mut session| (session.run_script(code, None), session));
    let status = match outcome {
        Ok((Ok(result), session)) => {
            // Answered before the sandbox is removed; the permit is held
            // until it is.
            line(stream, &json!({"ok": true, "result": result}));
            let _ = session.close();
            format!("{:?}", result.status).to_lowercase()
        }
        Ok((Err(e), session)) => {
            line(stream, &error(e.kind(), e.to_string()));
            drop(session);
            e.kind().to_string()
        }
        Err(e) => {
            line(stream, &error(e.kind(), e.to_string()));
            e.kind().to_string()
        }
    };
    done.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    drop(permit);
    shared.log.event(json!({
        "event": "run",
        "uid": peer.uid,
        "pid": peer.pid,
        "status": status,
        "seconds": since.elapsed().as_secs_f64(),
    }));
}

/// Sets `cancel` when the peer of `fd` hangs up or `server` is set,
/// until `done`.
fn watch(fd: OwnedFd, cancel: &AtomicBool, done: &AtomicBool, server: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        if server.load(Ordering::Relaxed) || hung_up(fd.as_fd()) {
            cancel.store(true, Ordering::Relaxed);
            return;
        }
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::empty(),
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
    }
}

/// Whether the peer of a connection is gone (both directions closed):
/// a peer that only closed its sending side still reads.
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok()
        && fds[0].revents().is_some_and(|r| {
            r.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)
        })
}

/// The gate of a peer's context paths: each is opened with the peer's
/// credentials (uid, gid and groups as of its connect: as_peer.rs), or
/// with the server's own for a peer of the server's uid (it could read
/// what the server reads anyway); the session gets the open file, never
/// the path. A refusal names the path, the errno and whose credentials.
fn context_gate(own_uid: u32, peer: PeerCred, groups: std::io::Result<Vec<u32>>) -> ContextGate {
    let who = match groups {
        _ if peer.uid == own_uid => Ok(None),
        Ok(groups) => Ok(Some(Credentials {
            uid: peer.uid,
            gid: peer.gid,
            groups,
        })),
        Err(e) => Err(format!(
            "cannot read the peer's groups (SO_PEERGROUPS): {e}"
        )),
    };
    Box::new(move |path: &Path| -> Result<Source, SessionError> {
        let refused = |why: String| {
            let whose = match &who {
                Ok(Some(c)) => format!(
                    "uid {} (gid {}, groups {:?}), the client's credentials",
                    c.uid, c.gid, c.groups
                ),
                _ => format!("uid {own_uid}, the server's and the client's"),
            };
            SessionError::Forbidden(format!(
                "context {}: {why}, opened as {whose}; a context is opened with its client's \
                 credentials (an absolute path to a regular file the client may read)",
                path.display()
            ))
        };
        let who = who.as_ref().map_err(|e| refused(e.clone()))?;
        match as_peer::open(path, who.as_ref()) {
            Ok(file) => Ok(Source::Opened(Arc::new(Opened {
                path: path.to_path_buf(),
                file,
            }))),
            Err(e) => Err(refused(e.to_string())),
        }
    })
}
