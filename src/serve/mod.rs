//! `rlm-sandbox serve` (issue 21): one server owning the pools of every
//! orchestrator process on the host, on a Unix socket. Each connection
//! opens with one line (opening.rs): a session, served with the session
//! protocol unchanged on the same connection; a one-shot run; or stats.
//! A request for a sandbox passes admission (admission.rs) first. A
//! thread per connection; connections are bounded (live + waiting +
//! [`SPARE_CONNECTIONS`]).

mod admission;
mod as_peer;
mod connection;
mod log;
mod opening;
mod settings;
mod socket;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

pub use admission::{Admission, AdmissionStats, Busy, Limits, Permit};
pub use log::Log;
pub use opening::{parse as parse_opening, read_line, Opening, FORMS};
pub use settings::{seconds, ServeSettings, Setting};
pub use socket::{allowed, Listener, PeerCred, SocketError};

use crate::pool::Pool;
use crate::session::serve::Backend;
use crate::session::SessionOptions;
use crate::supervise::Sandbox;

/// Connections beyond the live and waiting limits (stats, refusals in
/// flight) before one is refused at once.
pub const SPARE_CONNECTIONS: usize = 32;

/// How long a connection may take to send its first line.
pub const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A session request, resolved by the caller (the command line's flag
/// definitions): its sandbox, its claim, its wait.
pub struct SessionPlan {
    pub sandbox: Arc<Sandbox>,
    pub options: SessionOptions,
    pub backend: Backend,
    /// `None`: the server's default wait.
    pub wait: Option<Duration>,
    /// Held until the session ends.
    pub keep: Box<dyn Send>,
}

/// A run request, resolved likewise.
pub struct RunPlan {
    pub sandbox: Arc<Sandbox>,
    pub wait: Option<Duration>,
}

/// Turns a request's `args` into its plan; the error names the bad flag
/// and what is accepted.
pub trait Resolve: Send + Sync {
    fn session(&self, args: &[String]) -> Result<SessionPlan, String>;
    fn run(&self, args: &[String]) -> Result<RunPlan, String>;
}

/// One connection's flags: end the session between requests (SIGTERM),
/// end it now (the grace is over).
#[derive(Default)]
pub(crate) struct Flags {
    pub drain: Arc<AtomicBool>,
    pub cancel: Arc<AtomicBool>,
}

/// What every connection thread shares.
pub(crate) struct Shared {
    pub settings: ServeSettings,
    pub pool: Pool,
    pub admission: Arc<Admission>,
    pub resolve: Box<dyn Resolve>,
    pub log: Log,
    pub own_uid: u32,
    pub refused_peers: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Flags>>>,
    gone: Condvar,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Flags>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `stats` answer.
    pub fn stats(&self) -> serde_json::Value {
        let a = self.admission.stats();
        let pools: serde_json::Map<String, serde_json::Value> = self
            .pool
            .stats()
            .into_iter()
            .map(|(k, s)| (k.to_string(), serde_json::to_value(s).unwrap_or_default()))
            .collect();
        json!({
            "ok": true,
            "live": a.live,
            "memory_committed": a.memory_committed,
            "waiting": a.waiting,
            "admitted": a.admitted,
            "refused": a.refused,
            "refused_peers": self.refused_peers.load(Ordering::Relaxed),
            "connections": self.conns().len(),
            "limits": {
                "max_live": self.settings.max_live,
                "max_memory": self.settings.max_memory,
                "max_waiting": self.settings.max_waiting,
            },
            "pools": pools,
        })
    }
}

/// Serves `listener` until `term` is set, then shuts down: stops
/// accepting (the socket is removed), refuses the waiting requests, lets
/// running cells finish for the grace period (sessions end between
/// requests), ends the rest, removes the pool. The exit code.
pub fn serve(
    listener: Listener,
    settings: ServeSettings,
    pool: Pool,
    resolve: Box<dyn Resolve>,
    log: Log,
    term: Arc<AtomicBool>,
) -> i32 {
    let admission = Admission::new(Limits {
        max_live: settings.max_live,
        max_memory: settings.max_memory,
        max_waiting: settings.max_waiting,
    });
    let max_conns = settings.max_live + settings.max_waiting + SPARE_CONNECTIONS;
    let grace = settings.grace;
    let shared = Arc::new(Shared {
        settings,
        pool,
        admission,
        resolve,
        log,
        own_uid: nix::unistd::geteuid().as_raw(),
        refused_peers: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
        gone: Condvar::new(),
    });
    log.event(json!({
        "event": "listening",
        "socket": listener.path().display().to_string(),
        "max_live": shared.settings.max_live,
        "max_memory": shared.settings.max_memory,
        "max_waiting": shared.settings.max_waiting,
        "pool": format!("{:?}", shared.pool.settings()),
    }));
    let mut next_id = 0u64;
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !term.load(Ordering::Relaxed) {
        threads.retain(|t| !t.is_finished());
        let mut fds = [nix::poll::PollFd::new(
            listener.listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready =
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).is_ok_and(|n| n > 0);
        if !ready {
            continue;
        }
        let stream = match listener.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                log.event(json!({"event": "accept_failed", "error": e.to_string()}));
                continue;
            }
        };
        next_id += 1;
        let flags = Arc::new(Flags::default());
        let full = {
            let mut conns = shared.conns();
            let full = conns.len() >= max_conns;
            if !full {
                conns.insert(next_id, flags.clone());
            }
            full
        };
        if full {
            connection::refuse_full(&shared, stream, max_conns);
            continue;
        }
        let (shared2, id) = (shared.clone(), next_id);
        let spawned = std::thread::Builder::new()
            .name(format!("rlm-serve-{id}"))
            .spawn(move || {
                connection::serve(&shared2, stream, &flags);
                shared2.conns().remove(&id);
                shared2.gone.notify_all();
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                shared.conns().remove(&next_id);
            }
        }
    }
    shutdown(listener, shared, grace, threads)
}

fn shutdown(
    listener: Listener,
    shared: Arc<Shared>,
    grace: Duration,
    threads: Vec<std::thread::JoinHandle<()>>,
) -> i32 {
    drop(listener);
    let running = shared.conns().len();
    shared.log.event(
        json!({"event": "shutdown", "connections": running, "grace_s": grace.as_secs_f64()}),
    );
    shared.admission.close();
    for flags in shared.conns().values() {
        flags.drain.store(true, Ordering::Relaxed);
    }
    let deadline = Instant::now() + grace;
    let mut conns = shared.conns();
    while !conns.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        conns = shared
            .gone
            .wait_timeout(conns, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let ended = conns.len();
    for flags in conns.values() {
        flags.cancel.store(true, Ordering::Relaxed);
    }
    while !conns.is_empty() {
        conns = shared.gone.wait(conns).unwrap_or_else(|p| p.into_inner());
    }
    drop(conns);
    for t in threads {
        let _ = t.join();
    }
    shared
        .log
        .event(json!({"event": "stopped", "ended_after_grace": ended}));
    // The last reference: dropping it removes the pool's standbys.
    match Arc::try_unwrap(shared) {
        Ok(shared) => shared.pool.close(),
        Err(_) => return 1,
    }
    0
}
