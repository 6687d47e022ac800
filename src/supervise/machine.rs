//! The one supervision state machine of every unit of work (a one-shot
//! run, a session cell, a local-mode run): deadline → interrupt → grace →
//! kill → escalate. Pure: the caller tells it the time and its own reasons
//! to end (output ceiling, cancel) and does what it answers; the loops
//! around it only wait for events.

use std::time::{Duration, Instant};

use super::EndedBy;

/// What the caller does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing is due: wait for events until [`Supervisor::due`].
    Wait,
    /// Ask the code to stop (a cell's KeyboardInterrupt); the kill follows
    /// after the grace if it has not.
    Interrupt,
    /// Kill the sandbox (everything in its cgroup, or the process group).
    Kill,
    /// The kill has not ended it within the kill grace: kill what runs it
    /// too (the runtime, everything naming the run). Repeats every kill
    /// grace until the caller sees the end.
    Escalate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Interrupted { kill_at: Instant },
    Killed { escalate_at: Instant },
}

/// One unit's supervision.
#[derive(Debug, Clone)]
pub struct Supervisor {
    deadline: Instant,
    /// `None`: no interrupt (a one-shot run is killed straight away).
    grace: Option<Duration>,
    kill_grace: Duration,
    ended_by: Option<EndedBy>,
    phase: Phase,
}

impl Supervisor {
    /// Ends the unit at `deadline`: interrupted first when it has a
    /// `grace`, killed at once otherwise; escalated every `kill_grace`
    /// after the kill.
    pub fn new(deadline: Instant, grace: Option<Duration>, kill_grace: Duration) -> Self {
        Supervisor {
            deadline,
            grace,
            kill_grace,
            ended_by: None,
            phase: Phase::Running,
        }
    }

    /// The caller's own reason to end the unit (the first reason stands).
    /// A cancel skips the interrupt: the driver itself is stopping.
    pub fn end(&mut self, by: EndedBy, now: Instant) -> Action {
        if self.ended_by.is_some() {
            return Action::Wait;
        }
        self.ended_by = Some(by);
        match self.grace {
            Some(grace) if by != EndedBy::Cancelled => {
                self.phase = Phase::Interrupted {
                    kill_at: now + grace,
                };
                Action::Interrupt
            }
            _ => self.kill(now),
        }
    }

    /// What is due at `now`: one step at a time.
    pub fn tick(&mut self, now: Instant) -> Action {
        match self.phase {
            Phase::Running if now >= self.deadline => self.end(EndedBy::Timeout, now),
            Phase::Interrupted { kill_at } if now >= kill_at => self.kill(now),
            Phase::Killed { escalate_at } if now >= escalate_at => {
                self.phase = Phase::Killed {
                    escalate_at: now + self.kill_grace,
                };
                Action::Escalate
            }
            _ => Action::Wait,
        }
    }

    /// When the next step is due.
    pub fn due(&self) -> Instant {
        match self.phase {
            Phase::Running => self.deadline,
            Phase::Interrupted { kill_at } => kill_at,
            Phase::Killed { escalate_at } => escalate_at,
        }
    }

    /// What the supervisor ended the unit for, if it did.
    pub fn ended_by(&self) -> Option<EndedBy> {
        self.ended_by
    }

    fn kill(&mut self, now: Instant) -> Action {
        self.phase = Phase::Killed {
            escalate_at: now + self.kill_grace,
        };
        Action::Kill
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Every step of a supervisor from `t0`, driven by `events` (seconds
    /// after `t0`, and an optional reason to end): the actions taken.
    fn drive(grace: Option<Duration>, events: &[(u32, Option<EndedBy>)]) -> Vec<(u32, Action)> {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(t0 + 10 * S, grace, 3 * S);
        let mut taken = Vec::new();
        for &(at, by) in events {
            let now = t0 + S * at;
            let action = match by {
                Some(by) => sup.end(by, now),
                None => sup.tick(now),
            };
            if action != Action::Wait {
                taken.push((at, action));
            }
        }
        taken
    }

    #[test]
    fn a_run_is_killed_at_its_deadline_then_escalated_every_kill_grace() {
        let ticks: Vec<_> = (0..20).map(|t| (t, None)).collect();
        assert_eq!(
            drive(None, &ticks),
            [
                (10, Action::Kill),
                (13, Action::Escalate),
                (16, Action::Escalate),
                (19, Action::Escalate)
            ]
        );
    }

    #[test]
    fn a_cell_is_interrupted_then_killed_after_its_grace() {
        let ticks: Vec<_> = (0..16).map(|t| (t, None)).collect();
        assert_eq!(
            drive(Some(2 * S), &ticks),
            [
                (10, Action::Interrupt),
                (12, Action::Kill),
                (15, Action::Escalate)
            ]
        );
    }

    #[test]
    fn the_first_reason_stands_and_a_cancel_kills_at_once() {
        // (grace, reason at 1 s, its action, the action at the 10 s
        // deadline: a kill's escalation or an interrupt's kill, both due)
        let table: &[(Option<Duration>, EndedBy, Action, Action)] = &[
            (None, EndedBy::OutputLimit, Action::Kill, Action::Escalate),
            (None, EndedBy::Cancelled, Action::Kill, Action::Escalate),
            (
                Some(S),
                EndedBy::OutputLimit,
                Action::Interrupt,
                Action::Kill,
            ),
            (Some(S), EndedBy::Cancelled, Action::Kill, Action::Escalate),
        ];
        for &(grace, by, first, later) in table {
            let t0 = Instant::now();
            let mut sup = Supervisor::new(t0 + 10 * S, grace, 3 * S);
            assert_eq!(sup.end(by, t0 + S), first, "{grace:?} {by:?}");
            assert_eq!(sup.end(EndedBy::Cancelled, t0 + S), Action::Wait);
            assert_eq!(sup.tick(t0 + 10 * S), later, "{grace:?} {by:?}");
            assert_eq!(sup.ended_by(), Some(by), "the deadline does not replace it");
        }
    }

    #[test]
    fn due_follows_the_phase() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(t0 + 10 * S, Some(2 * S), 3 * S);
        assert_eq!(sup.due(), t0 + 10 * S);
        assert_eq!(sup.tick(t0 + 9 * S), Action::Wait);
        assert_eq!(sup.tick(t0 + 11 * S), Action::Interrupt);
        assert_eq!(sup.due(), t0 + 13 * S);
        assert_eq!(sup.tick(t0 + 13 * S), Action::Kill);
        assert_eq!(sup.due(), t0 + 16 * S);
        assert_eq!(sup.ended_by(), Some(EndedBy::Timeout));
    }
}
