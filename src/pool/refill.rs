//! The pool's two threads: the refill thread starts standbys for shelves
//! below their size (one at a time: a start is CPU-bound and the machine
//! may have two cores), shrinks idle shelves and backs off after
//! failures; the reaper removes used and unwanted sandboxes off the
//! claim's latency path.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, Reap};
use crate::session::Standby;

/// The longest the refill thread sleeps with nothing due (it wakes on
/// every change anyway).
const IDLE_WAKE: Duration = Duration::from_secs(1);

pub(super) fn refill_loop(inner: Arc<Inner>) {
    loop {
        let Some((key, sandbox)) = next_start(&inner) else {
            return;
        };
        let launched = Standby::launch(sandbox, None, &inner.cancel);
        let mut state = inner.lock();
        let now = Instant::now();
        let keep = !state.closing;
        match state.shelves.get_mut(&key) {
            Some(shelf) => {
                shelf.starting -= 1;
                match launched {
                    Ok(standby) if keep && !shelf.idle => {
                        shelf.started();
                        shelf.ready.push_back(standby);
                    }
                    Ok(standby) => inner.reap(Reap::Standby(Box::new(standby))),
                    Err(e) => shelf.failed(now, e.to_string()),
                }
            }
            None => {
                if let Ok(standby) = launched {
                    inner.reap(Reap::Standby(Box::new(standby)));
                }
            }
        }
        drop(state);
        inner.changed.notify_all();
    }
}

/// Waits until a shelf wants a standby (shrinking idle shelves meanwhile)
/// and marks it starting; `None` once the pool closes.
fn next_start(inner: &Inner) -> Option<(super::PoolKey, Arc<crate::supervise::Sandbox>)> {
    let mut state = inner.lock();
    loop {
        if state.closing {
            return None;
        }
        let now = Instant::now();
        let settings = inner.settings;
        let mut total = state.total();
        let mut due = now + IDLE_WAKE;
        let mut pick = None;
        for (key, shelf) in state.shelves.iter_mut() {
            if !shelf.idle && shelf.idle_at(now, &settings) {
                shelf.idle = true;
                total -= shelf.ready.len();
                for standby in shelf.ready.drain(..) {
                    inner.reap(Reap::Standby(Box::new(standby)));
                }
            }
            if pick.is_none() && shelf.wants(now, total, &settings) {
                pick = Some(key.clone());
            }
            if let Some(t) = shelf.not_before.filter(|t| *t > now) {
                due = due.min(t);
            }
            if !shelf.idle {
                due = due.min(shelf.last_used + settings.idle_timeout);
            }
        }
        if let Some(key) = pick {
            if let Some(shelf) = state.shelves.get_mut(&key) {
                shelf.starting += 1;
                return Some((key, shelf.sandbox.clone()));
            }
        }
        let wait = due
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        state = match inner.changed.wait_timeout(state, wait) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Removes what it is handed until the pool's sender is dropped.
pub(super) fn reaper_loop(rx: mpsc::Receiver<Reap>) {
    for item in rx {
        match item {
            Reap::Standby(standby) => drop(standby),
            Reap::Session(session) => {
                let _ = session.close();
            }
        }
    }
}
