//! A pool of started sandboxes (issue 20): per configuration (its
//! [`PoolKey`]), `size` standbys started before their work is known, each
//! handed out once by [`Pool::claim`]; a used sandbox is removed by the
//! reaper thread, and the refill thread starts the next in the
//! background. A configuration the pool does not hold, or an empty shelf,
//! starts cold: a claim never waits for a refill (a start takes as long
//! cold as from the refill thread, and waiting would add the queue ahead
//! of it).

mod key;
mod refill;
mod settings;
mod shelf;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

pub use key::PoolKey;
pub use settings::{PoolSettings, Setting};
use shelf::Shelf;
pub use shelf::ShelfStats;

use crate::result::ExecResult;
use crate::session::{ClaimError, Handler, Session, SessionError, SessionOptions, Standby};
use crate::supervise::Sandbox;

/// Started sandboxes kept ready per configuration. Dropping it removes
/// everything it holds (and waits for that).
pub struct Pool {
    inner: Arc<Inner>,
    refill: Option<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    settings: PoolSettings,
    state: Mutex<State>,
    /// Signalled on every change of a shelf (a standby started, claimed,
    /// removed; a new shelf; closing).
    changed: Condvar,
    /// Set when the pool closes: a standby being started is removed.
    cancel: AtomicBool,
    reap: Mutex<Option<mpsc::Sender<Reap>>>,
}

pub(crate) struct State {
    shelves: HashMap<PoolKey, Shelf>,
    closing: bool,
}

impl State {
    /// Standbys held or being started, across shelves.
    fn total(&self) -> usize {
        self.shelves
            .values()
            .map(|s| s.ready.len() + s.starting)
            .sum()
    }
}

/// What the reaper removes.
pub(crate) enum Reap {
    Standby(Box<Standby>),
    Session(Box<Session>),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `item` to the reaper (or removes it here once it is gone).
    fn reap(&self, item: Reap) {
        let sender = self.reap.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let item = match sender {
            Some(tx) => match tx.send(item) {
                Ok(()) => return,
                Err(mpsc::SendError(item)) => item,
            },
            None => item,
        };
        if let Reap::Session(s) = item {
            let _ = s.close();
        }
    }
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Pool {
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            settings,
            state: Mutex::new(State {
                shelves: HashMap::new(),
                closing: false,
            }),
            changed: Condvar::new(),
            cancel: AtomicBool::new(false),
            reap: Mutex::new(Some(tx)),
        });
        let refill = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("rlm-pool-refill".into())
                .spawn(move || refill::refill_loop(inner))
                .ok()
        };
        let reaper = std::thread::Builder::new()
            .name("rlm-pool-reaper".into())
            .spawn(move || refill::reaper_loop(rx))
            .ok();
        Pool {
            inner,
            refill,
            reaper,
        }
    }

    pub fn settings(&self) -> PoolSettings {
        self.inner.settings
    }

    /// Starts keeping `size` standbys of `sandbox`'s configuration (in the
    /// background). `None` when the configuration cannot be pooled (see
    /// [`PoolKey::of`]): its claims start cold.
    pub fn keep(&self, sandbox: &Arc<Sandbox>) -> Option<PoolKey> {
        let key = PoolKey::of(sandbox)?;
        let mut state = self.inner.lock();
        let now = Instant::now();
        let shelf = state
            .shelves
            .entry(key.clone())
            .or_insert_with(|| Shelf::new(sandbox.clone(), now));
        shelf.last_used = now;
        shelf.idle = false;
        drop(state);
        self.inner.changed.notify_all();
        Some(key)
    }

    /// A session of `sandbox`'s configuration: a held configuration's
    /// standby (checked alive; a dead one is discarded and the next
    /// tried), else a cold start. Either way the shelf refills behind it.
    pub fn claim(
        &self,
        sandbox: &Arc<Sandbox>,
        options: SessionOptions,
        handler: Handler,
        cancel: Arc<AtomicBool>,
    ) -> Result<Session, SessionError> {
        let key = PoolKey::of(sandbox);
        if let Some(key) = &key {
            while let Some(mut standby) = self.take(key) {
                if standby.check().is_err() {
                    self.count(key, |s| s.discarded += 1);
                    self.inner.reap(Reap::Standby(Box::new(standby)));
                    continue;
                }
                return match standby.claim(options, handler, cancel) {
                    Ok(session) => {
                        self.count(key, |s| s.claimed += 1);
                        Ok(session)
                    }
                    Err(ClaimError::Refused(standby, e)) => {
                        // Untouched: it goes back on the shelf.
                        self.put_back(key, *standby);
                        Err(e)
                    }
                    Err(ClaimError::Failed(e)) => Err(e),
                };
            }
            self.count(key, |s| s.cold += 1);
        }
        Session::start(sandbox.clone(), options, handler, cancel)
    }

    /// A one-shot run of `code` as `rlm-sandbox run` runs it (the same
    /// result), in a claimed or cold sandbox, removed afterwards.
    pub fn run(
        &self,
        sandbox: &Arc<Sandbox>,
        code: &str,
        cancel: Arc<AtomicBool>,
    ) -> Result<ExecResult, SessionError> {
        let mut session = self.claim(sandbox, SessionOptions::default(), Handler::None, cancel)?;
        let result = session.run_script(code, None);
        self.release(session);
        result
    }

    /// Hands a used session to the reaper: it is closed and removed off
    /// the caller's path.
    pub fn release(&self, session: Session) {
        self.inner.reap(Reap::Session(Box::new(session)));
    }

    /// Per configuration: ready, starting, claimed, cold, failures.
    pub fn stats(&self) -> BTreeMap<PoolKey, ShelfStats> {
        let state = self.inner.lock();
        state
            .shelves
            .iter()
            .map(|(k, s)| (k.clone(), s.snapshot()))
            .collect()
    }

    /// Waits until `key`'s shelf holds its size, or `until` returns true
    /// for its stats (a failure count, say); returns its stats then. Woken
    /// by every change, never by a clock.
    pub fn wait_for(
        &self,
        key: &PoolKey,
        mut until: impl FnMut(&ShelfStats) -> bool,
    ) -> Option<ShelfStats> {
        let settings = self.inner.settings;
        let mut state = self.inner.lock();
        loop {
            let shelf = state.shelves.get(key)?;
            let stats = shelf.snapshot();
            if shelf.full(&settings) || until(&stats) {
                return Some(stats);
            }
            state = self
                .inner
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Removes everything the pool holds and waits for it.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn take(&self, key: &PoolKey) -> Option<Standby> {
        let mut state = self.inner.lock();
        if state.closing {
            return None;
        }
        let shelf = state.shelves.get_mut(key)?;
        shelf.last_used = Instant::now();
        shelf.idle = false;
        let standby = shelf.ready.pop_front();
        drop(state);
        self.inner.changed.notify_all();
        standby
    }

    fn put_back(&self, key: &PoolKey, standby: Standby) {
        let mut state = self.inner.lock();
        let closing = state.closing;
        match state.shelves.get_mut(key) {
            Some(shelf) if !closing => shelf.ready.push_front(standby),
            _ => {
                drop(state);
                self.inner.reap(Reap::Standby(Box::new(standby)));
                return;
            }
        }
        drop(state);
        self.inner.changed.notify_all();
    }

    fn count(&self, key: &PoolKey, f: impl FnOnce(&mut ShelfStats)) {
        if let Some(shelf) = self.inner.lock().shelves.get_mut(key) {
            f(&mut shelf.stats);
        }
    }

    fn shutdown(&mut self) {
        self.inner.cancel.store(true, Ordering::Relaxed);
        let held: Vec<Standby> = {
            let mut state = self.inner.lock();
            state.closing = true;
            state
                .shelves
                .values_mut()
                .flat_map(|s| s.ready.drain(..).collect::<Vec<_>>())
                .collect()
        };
        self.inner.changed.notify_all();
        if let Some(t) = self.refill.take() {
            let _ = t.join();
        }
        for standby in held {
            self.inner.reap(Reap::Standby(Box::new(standby)));
        }
        // The refill thread is gone: nothing sends any more.
        self.inner
            .reap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = self.reaper.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
