//! Admission: a request for a sandbox is let in while the live sandboxes
//! and the memory their limits commit stay within the server's limits;
//! else it waits in a bounded queue for at most its wait time, then is
//! refused as busy with what is full. Waiters are served first come,
//! first served: a later small request never overtakes an earlier one.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The limits admission enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_live: usize,
    pub max_memory: u64,
    pub max_waiting: usize,
}

/// Why a request was not admitted: what is full, for the `busy` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy(pub String);

/// Counts for `stats`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AdmissionStats {
    pub live: usize,
    pub memory_committed: u64,
    pub waiting: usize,
    pub admitted: u64,
    pub refused: u64,
}

pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    stats: AdmissionStats,
    /// Tickets of the waiting requests, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
    closed: bool,
}

/// One admitted request's share; dropping it gives the share back.
pub struct Permit {
    admission: Arc<Admission>,
    memory: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.stats.live -= 1;
        state.stats.memory_committed -= self.memory;
        drop(state);
        self.admission.changed.notify_all();
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State {
                stats: AdmissionStats::default(),
                queue: VecDeque::new(),
                next_ticket: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> AdmissionStats {
        self.lock().stats
    }

    /// Refuses every waiting and later request (the server is stopping).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// What keeps a request of `memory` out now, if anything.
    fn full(&self, state: &State, memory: u64) -> Option<String> {
        let s = &state.stats;
        if s.live >= self.limits.max_live {
            return Some(format!(
                "live sandboxes: {} of --max-live {}",
                s.live, self.limits.max_live
            ));
        }
        if s.memory_committed + memory > self.limits.max_memory {
            return Some(format!(
                "memory: {} bytes committed + {memory} asked > --max-memory {}",
                s.memory_committed, self.limits.max_memory
            ));
        }
        None
    }

    /// Admits a request for a sandbox with a `memory` limit, waiting up to
    /// `wait` behind earlier waiters; else what was full.
    pub fn admit(self: &Arc<Self>, memory: u64, wait: Duration) -> Result<Permit, Busy> {
        self.admit_or_queue(memory, wait, |_| {})
    }

    /// [`Self::admit`], calling `queued` with what is full when the
    /// request starts to wait (the server logs it).
    pub fn admit_or_queue(
        self: &Arc<Self>,
        memory: u64,
        wait: Duration,
        queued: impl FnOnce(&str),
    ) -> Result<Permit, Busy> {
        if memory > self.limits.max_memory {
            return Err(self.refuse(format!(
                "the sandbox's memory limit ({memory} bytes) exceeds --max-memory {}: \
                 it can never be admitted",
                self.limits.max_memory
            )));
        }
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        if state.closed {
            return Err(Busy("the server is shutting down".into()));
        }
        let now = if state.queue.is_empty() {
            self.full(&state, memory)
        } else {
            Some("earlier requests are waiting".into())
        };
        let Some(mut why) = now else {
            return Ok(self.take(state, memory));
        };
        if state.queue.len() >= self.limits.max_waiting {
            drop(state);
            return Err(self.refuse(format!(
                "{why}; and the queue is full ({} of --max-waiting {})",
                self.limits.max_waiting, self.limits.max_waiting
            )));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        state.stats.waiting = state.queue.len();
        self.changed.notify_all();
        queued(&why);
        loop {
            let first = state.queue.front() == Some(&ticket);
            if first && !state.closed {
                match self.full(&state, memory) {
                    None => {
                        state.queue.pop_front();
                        state.stats.waiting = state.queue.len();
                        // The next waiter may fit too.
                        self.changed.notify_all();
                        return Ok(self.take(state, memory));
                    }
                    Some(now) => why = now,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                state.queue.retain(|t| *t != ticket);
                state.stats.waiting = state.queue.len();
                let closed = state.closed;
                drop(state);
                self.changed.notify_all();
                if closed {
                    return Err(Busy("the server is shutting down".into()));
                }
                return Err(self.refuse(format!(
                    "{why}; waited {:.1} s (--wait)",
                    wait.as_secs_f64()
                )));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn take(self: &Arc<Self>, mut state: MutexGuard<'_, State>, memory: u64) -> Permit {
        state.stats.live += 1;
        state.stats.memory_committed += memory;
        state.stats.admitted += 1;
        Permit {
            admission: self.clone(),
            memory,
        }
    }

    /// Counts a request refused before it reached admission (too many
    /// connections).
    pub fn count_refusal(&self) {
        self.lock().stats.refused += 1;
    }

    fn refuse(&self, why: String) -> Busy {
        self.lock().stats.refused += 1;
        Busy(why)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(max_live: usize, max_memory: u64, max_waiting: usize) -> Arc<Admission> {
        Admission::new(Limits {
            max_live,
            max_memory,
            max_waiting,
        })
    }

    #[test]
    fn live_and_memory_limits_refuse_with_what_is_full() {
        let a = limits(2, 100, 0);
        let p1 = a.admit(40, Duration::ZERO).unwrap();
        let _p2 = a.admit(40, Duration::ZERO).unwrap();
        let e = a.admit(1, Duration::ZERO).err().unwrap();
        assert!(e.0.contains("live sandboxes: 2 of --max-live 2"), "{e:?}");
        drop(p1);
        let e = a.admit(61, Duration::ZERO).err().unwrap();
        assert!(e.0.contains("--max-memory 100"), "{e:?}");
        let e = a.admit(101, Duration::from_secs(60)).err().unwrap();
        assert!(e.0.contains("never be admitted"), "{e:?}");
        let s = a.stats();
        assert_eq!(
            (s.live, s.memory_committed, s.admitted, s.refused),
            (1, 40, 2, 3)
        );
    }

    #[test]
    fn a_waiter_is_admitted_when_a_permit_is_dropped_and_the_queue_is_bounded() {
        let a = limits(1, 100, 1);
        let held = a.admit(10, Duration::ZERO).unwrap();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.admit(10, Duration::from_secs(600)).map(|_| ()))
        };
        // Waits for the waiter to be queued (an event, not a clock).
        let mut state = a.lock();
        while state.queue.is_empty() {
            state = a.changed.wait(state).unwrap();
        }
        drop(state);
        let e = a.admit(10, Duration::from_secs(600)).err().unwrap();
        assert!(e.0.contains("queue is full"), "{e:?}");
        drop(held);
        waiter.join().unwrap().unwrap();
        assert_eq!(a.stats().live, 0);
    }

    #[test]
    fn closing_refuses_the_waiters() {
        let a = limits(1, 100, 4);
        let _held = a.admit(10, Duration::ZERO).unwrap();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.admit(10, Duration::from_secs(600)).err())
        };
        let mut state = a.lock();
        while state.queue.is_empty() {
            state = a.changed.wait(state).unwrap();
        }
        drop(state);
        a.close();
        let e = waiter.join().unwrap().unwrap();
        assert!(e.0.contains("shutting down"), "{e:?}");
    }
}
