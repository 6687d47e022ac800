//! One configuration's shelf: its started standbys, how many are being
//! started, its counters, and the pure decisions about it (is it idle,
//! does it want another, when is it due), with the clock passed in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::PoolSettings;
use crate::session::Standby;
use crate::supervise::Sandbox;

/// The first wait after a failed start; doubled per failure in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between failed starts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Shelf {
    pub sandbox: Arc<Sandbox>,
    pub ready: VecDeque<Standby>,
    pub starting: usize,
    /// The last claim (or `keep`): the idle timeout counts from it.
    pub last_used: Instant,
    /// Shrunk to zero for idleness: starts nothing until the next claim.
    pub idle: bool,
    /// No start before this (after failures).
    pub not_before: Option<Instant>,
    pub failures_in_a_row: u32,
    pub stats: ShelfStats,
}

/// What `Pool::stats` reports per configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShelfStats {
    /// Started standbys waiting for a claim.
    pub ready: usize,
    /// Standbys being started.
    pub starting: usize,
    /// Claims served by a standby.
    pub claimed: u64,
    /// Claims of this configuration that started cold (empty shelf).
    pub cold: u64,
    /// Standbys that failed to start.
    pub refill_failures: u64,
    /// The last start failure, if any.
    pub last_failure: Option<String>,
    /// Standbys found dead at a claim (discarded).
    pub discarded: u64,
}

impl Shelf {
    pub fn new(sandbox: Arc<Sandbox>, now: Instant) -> Shelf {
        Shelf {
            sandbox,
            ready: VecDeque::new(),
            starting: 0,
            last_used: now,
            idle: false,
            not_before: None,
            failures_in_a_row: 0,
            stats: ShelfStats::default(),
        }
    }

    /// Whether the shelf has been unclaimed for the idle timeout.
    pub fn idle_at(&self, now: Instant, settings: &PoolSettings) -> bool {
        idle_since(self.last_used, now, settings.idle_timeout)
    }

    /// Whether it wants one more standby started now, given how many the
    /// whole pool holds or starts (`total`).
    pub fn wants(&self, now: Instant, total: usize, settings: &PoolSettings) -> bool {
        !self.idle
            && self.ready.len() + self.starting < settings.size
            && total < settings.max_total
            && self.not_before.map_or(true, |t| now >= t)
    }

    /// A start failed: count it and wait before the next.
    pub fn failed(&mut self, now: Instant, why: String) {
        self.stats.refill_failures += 1;
        self.stats.last_failure = Some(why);
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.not_before = Some(now + backoff(self.failures_in_a_row));
    }

    pub fn started(&mut self) {
        self.failures_in_a_row = 0;
        self.not_before = None;
    }

    /// Whether the shelf holds its size.
    pub fn full(&self, settings: &PoolSettings) -> bool {
        self.ready.len() >= settings.size
    }

    pub fn snapshot(&self) -> ShelfStats {
        ShelfStats {
            ready: self.ready.len(),
            starting: self.starting,
            ..self.stats.clone()
        }
    }
}

/// Idle: no claim since `last_used` for `timeout`.
pub fn idle_since(last_used: Instant, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(last_used) >= timeout
}

/// The wait after `failures` failed starts in a row (≥ 1).
pub fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_after_the_timeout_since_the_last_claim() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(300);
        assert!(!idle_since(t0, t0, timeout));
        assert!(!idle_since(t0, t0 + Duration::from_secs(299), timeout));
        assert!(idle_since(t0, t0 + timeout, timeout));
        // A clock read before the claim is not idle.
        assert!(!idle_since(t0 + timeout, t0, timeout));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), BACKOFF_FIRST);
        assert_eq!(backoff(2), BACKOFF_FIRST * 2);
        assert_eq!(backoff(3), BACKOFF_FIRST * 4);
        assert_eq!(backoff(40), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
