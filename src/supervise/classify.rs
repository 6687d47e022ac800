//! Turning what was observed into a status (pure, unit-tested).

use crate::result::Status;

/// Why the driver ended the sandbox, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Timeout,
    OutputLimit,
    /// The driver itself was interrupted (SIGINT/SIGTERM/SIGHUP).
    Cancelled,
}

/// Everything the status depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The runtime's exit code; `None` when the runtime itself died by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed the runtime process itself.
    pub runtime_signal: Option<i32>,
    pub ended_by: Option<EndedBy>,
    /// The cgroup's OOM-kill counter; `None` when unreadable.
    pub oom_kills: Option<u64>,
    /// An error-level message from the runtime's log.
    pub runtime_error: Option<String>,
}

/// Both runtimes report a container killed by signal N as exit 128 + N.
const SIGNAL_EXIT_BASE: i32 = 128;

/// `(status, signal)`. The driver's own reason wins (it knows what it did);
/// then the OOM counter (the only thing that tells an OOM kill from any
/// other SIGKILL, since both exit 137); then a runtime failure; then the
/// exit code.
pub fn classify(o: &Observed) -> (Status, Option<i32>) {
    let signal_from_code = o
        .exit_code
        .filter(|c| (SIGNAL_EXIT_BASE + 1..=SIGNAL_EXIT_BASE + 64).contains(c))
        .map(|c| c - SIGNAL_EXIT_BASE);
    let signal = signal_from_code.or(o.runtime_signal);
    let status = match o.ended_by {
        Some(EndedBy::Timeout) => Status::Timeout,
        Some(EndedBy::OutputLimit) => Status::OutputLimit,
        Some(EndedBy::Cancelled) => Status::Killed,
        None if o.oom_kills.is_some_and(|n| n > 0) => Status::Oom,
        None if o.runtime_error.is_some() || o.runtime_signal.is_some() => Status::SandboxError,
        None => match o.exit_code {
            Some(0) => Status::Ok,
            _ if signal_from_code.is_some() => Status::Killed,
            _ => Status::Error,
        },
    };
    (status, signal)
}

/// How a session cell ended, as the session saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellEnd {
    /// The agent reported the cell done; `ok` unless it raised.
    Done { ok: bool },
    /// The sandbox ended during the cell; how it ended, when known.
    Died { sandbox: Option<Status> },
}

/// A cell's status. A cell that finished: the driver's reason wins, as
/// for a run (an interrupted cell stopped because we asked it to). A cell
/// whose sandbox died: an OOM kill first (the sandbox's own end explains
/// the death better than the interrupt that preceded it), then the
/// driver's reason, then a kill by signal; anything else is the sandbox
/// failing.
pub fn classify_cell(ended_by: Option<EndedBy>, end: CellEnd) -> Status {
    match end {
        CellEnd::Done { ok } => match ended_by {
            Some(EndedBy::OutputLimit) => Status::OutputLimit,
            Some(_) => Status::Timeout,
            None if ok => Status::Ok,
            None => Status::Error,
        },
        CellEnd::Died { sandbox } => match (ended_by, sandbox) {
            (_, Some(Status::Oom)) => Status::Oom,
            (Some(EndedBy::OutputLimit), _) => Status::OutputLimit,
            (Some(_), _) => Status::Timeout,
            (None, Some(Status::Killed)) => Status::Killed,
            (None, _) => Status::SandboxError,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(exit_code: i32) -> Observed {
        Observed {
            exit_code: Some(exit_code),
            oom_kills: Some(0),
            ..Observed::default()
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(classify(&obs(0)), (Status::Ok, None));
        assert_eq!(classify(&obs(3)), (Status::Error, None));
        assert_eq!(classify(&obs(137)), (Status::Killed, Some(9)));
        assert_eq!(classify(&obs(143)), (Status::Killed, Some(15)));
    }

    #[test]
    fn oom_is_told_apart_from_sigkill_by_the_counter_only() {
        let oom = Observed {
            oom_kills: Some(1),
            ..obs(137)
        };
        assert_eq!(classify(&oom), (Status::Oom, Some(9)));
        let unknown = Observed {
            oom_kills: None,
            ..obs(137)
        };
        assert_eq!(classify(&unknown), (Status::Killed, Some(9)));
    }

    #[test]
    fn the_drivers_reason_wins() {
        for (by, status) in [
            (EndedBy::Timeout, Status::Timeout),
            (EndedBy::OutputLimit, Status::OutputLimit),
            (EndedBy::Cancelled, Status::Killed),
        ] {
            let o = Observed {
                ended_by: Some(by),
                oom_kills: Some(1),
                runtime_error: Some("x".into()),
                ..obs(137)
            };
            assert_eq!(classify(&o).0, status);
        }
    }

    #[test]
    fn runtime_failures() {
        let o = Observed {
            runtime_error: Some("invalid rootfs".into()),
            ..obs(1)
        };
        assert_eq!(classify(&o), (Status::SandboxError, None));
        let o = Observed {
            exit_code: None,
            runtime_signal: Some(11),
            ..Observed::default()
        };
        assert_eq!(classify(&o), (Status::SandboxError, Some(11)));
    }

    #[test]
    fn cells() {
        use CellEnd::{Died, Done};
        use EndedBy::{Cancelled, OutputLimit, Timeout};
        let table: &[(Option<EndedBy>, CellEnd, Status)] = &[
            (None, Done { ok: true }, Status::Ok),
            (None, Done { ok: false }, Status::Error),
            (Some(Timeout), Done { ok: false }, Status::Timeout),
            (Some(Timeout), Done { ok: true }, Status::Timeout),
            (Some(OutputLimit), Done { ok: false }, Status::OutputLimit),
            (Some(Cancelled), Done { ok: true }, Status::Timeout),
            (
                None,
                Died {
                    sandbox: Some(Status::Oom),
                },
                Status::Oom,
            ),
            (
                Some(Timeout),
                Died {
                    sandbox: Some(Status::Oom),
                },
                Status::Oom,
            ),
            (
                Some(OutputLimit),
                Died {
                    sandbox: Some(Status::Killed),
                },
                Status::OutputLimit,
            ),
            (
                Some(Timeout),
                Died {
                    sandbox: Some(Status::Timeout),
                },
                Status::Timeout,
            ),
            (Some(Timeout), Died { sandbox: None }, Status::Timeout),
            (
                None,
                Died {
                    sandbox: Some(Status::Killed),
                },
                Status::Killed,
            ),
            (
                None,
                Died {
                    sandbox: Some(Status::Ok),
                },
                Status::SandboxError,
            ),
            (
                None,
                Died {
                    sandbox: Some(Status::SandboxError),
                },
                Status::SandboxError,
            ),
            (None, Died { sandbox: None }, Status::SandboxError),
        ];
        for &(by, end, status) in table {
            assert_eq!(classify_cell(by, end), status, "{by:?} {end:?}");
        }
    }

    #[test]
    fn runs() {
        use EndedBy::{Cancelled, OutputLimit, Timeout};
        // (exit code, runtime signal, reason, OOM kills, runtime error) → (status, signal)
        type Row = (
            Option<i32>,
            Option<i32>,
            Option<EndedBy>,
            Option<u64>,
            bool,
            Status,
            Option<i32>,
        );
        let table: &[Row] = &[
            (Some(0), None, None, Some(0), false, Status::Ok, None),
            (Some(1), None, None, Some(0), false, Status::Error, None),
            (
                Some(137),
                None,
                None,
                Some(0),
                false,
                Status::Killed,
                Some(9),
            ),
            (Some(137), None, None, Some(1), false, Status::Oom, Some(9)),
            (Some(137), None, None, None, false, Status::Killed, Some(9)),
            (
                Some(137),
                None,
                Some(Timeout),
                Some(1),
                true,
                Status::Timeout,
                Some(9),
            ),
            (
                Some(137),
                None,
                Some(OutputLimit),
                Some(0),
                false,
                Status::OutputLimit,
                Some(9),
            ),
            (
                Some(137),
                None,
                Some(Cancelled),
                Some(0),
                false,
                Status::Killed,
                Some(9),
            ),
            (
                Some(1),
                None,
                None,
                Some(0),
                true,
                Status::SandboxError,
                None,
            ),
            (
                None,
                Some(11),
                None,
                None,
                false,
                Status::SandboxError,
                Some(11),
            ),
            (Some(200), None, None, Some(0), false, Status::Error, None),
        ];
        for &(exit_code, runtime_signal, ended_by, oom_kills, failed, status, signal) in table {
            let o = Observed {
                exit_code,
                runtime_signal,
                ended_by,
                oom_kills,
                runtime_error: failed.then(|| "invalid rootfs".to_string()),
            };
            assert_eq!(classify(&o), (status, signal), "{o:?}");
        }
    }
}
