//! The server's settings: its admission limits (live sandboxes, the
//! memory their limits commit, requests waiting), the default wait of a
//! request, the shutdown grace, and who may connect besides the server's
//! own uid. Each a `RLM_SERVE_*` variable; a flag sets the same value
//! through [`ServeSettings::set`].

use std::time::Duration;

use crate::config::parse_size;
use crate::config::table::{self, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// Sandboxes serving clients at once (claimed from the pool or cold;
    /// the pool's unclaimed standbys are bounded by `RLM_POOL_MAX`).
    pub max_live: usize,
    /// The sum of the memory limits of the sandboxes serving clients.
    pub max_memory: u64,
    /// Requests waiting for admission; one more is refused at once.
    pub max_waiting: usize,
    /// How long a request waits for admission unless it says (`--wait`).
    pub wait: Duration,
    /// How long running cells may go on after SIGTERM.
    pub grace: Duration,
    /// Peers admitted besides the server's own uid: by uid, by (primary) gid.
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            max_live: 16,
            max_memory: default_memory(),
            max_waiting: 64,
            wait: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
        }
    }
}

/// Half the host's memory (or 8 GiB when /proc/meminfo cannot be read):
/// room for the host and the pool's standbys beside the live sandboxes.
fn default_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    total.map_or(8 << 30, |t| t / 2)
}

/// One setting: its variable, flag, accepted form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    MaxLive,
    MaxMemory,
    MaxWaiting,
    Wait,
    Grace,
    AllowUid,
    AllowGid,
}

impl table::Setting for Setting {
    fn env(self) -> &'static str {
        match self {
            Setting::MaxLive => "RLM_SERVE_MAX_LIVE",
            Setting::MaxMemory => "RLM_SERVE_MAX_MEMORY",
            Setting::MaxWaiting => "RLM_SERVE_MAX_WAITING",
            Setting::Wait => "RLM_SERVE_WAIT",
            Setting::Grace => "RLM_SERVE_GRACE",
            Setting::AllowUid => "RLM_SERVE_ALLOW_UID",
            Setting::AllowGid => "RLM_SERVE_ALLOW_GID",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Setting::MaxLive => "--max-live",
            Setting::MaxMemory => "--max-memory",
            Setting::MaxWaiting => "--max-waiting",
            Setting::Wait => "--wait",
            Setting::Grace => "--grace",
            Setting::AllowUid => "--allow-uid",
            Setting::AllowGid => "--allow-gid",
        }
    }

    fn accepted(self) -> &'static str {
        match self {
            Setting::MaxLive => "a whole number of sandboxes from 1 to 4096",
            Setting::MaxMemory => "a size such as 8g or 512m, at least 1m",
            Setting::MaxWaiting => "a whole number of requests from 0 to 65536",
            Setting::Wait | Setting::Grace => "seconds, a number from 0 to 86400",
            Setting::AllowUid => "numeric uids, comma-separated, e.g. 1000,1001",
            Setting::AllowGid => "numeric gids, comma-separated, e.g. 100",
        }
    }
}

impl Table for ServeSettings {
    type Key = Setting;
    const KEYS: &'static [Setting] = &[
        Setting::MaxLive,
        Setting::MaxMemory,
        Setting::MaxWaiting,
        Setting::Wait,
        Setting::Grace,
        Setting::AllowUid,
        Setting::AllowGid,
    ];

    /// The uid and gid lists are replaced, not extended.
    fn parse(&mut self, key: Setting, raw: &str) -> Option<()> {
        match key {
            Setting::MaxLive => self.max_live = table::whole(raw, 1..=4096)?,
            Setting::MaxMemory => self.max_memory = parse_size(raw).filter(|n| *n >= 1 << 20)?,
            Setting::MaxWaiting => self.max_waiting = table::whole(raw, 0..=65536)?,
            Setting::Wait => self.wait = seconds(raw)?,
            Setting::Grace => self.grace = seconds(raw)?,
            Setting::AllowUid => self.allow_uids = table::ids(raw)?,
            Setting::AllowGid => self.allow_gids = table::ids(raw)?,
        }
        Some(())
    }
}

/// Seconds in [0, 86400].
pub fn seconds(raw: &str) -> Option<Duration> {
    table::seconds(raw, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    fn from(vars: &[(&str, &str)]) -> Result<ServeSettings, ConfigError> {
        ServeSettings::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_then_variables() {
        let d = from(&[]).unwrap();
        assert_eq!(d, ServeSettings::default());
        assert!(d.max_memory >= 1 << 20 && d.allow_uids.is_empty());
        let s = from(&[
            ("RLM_SERVE_MAX_LIVE", "4"),
            ("RLM_SERVE_MAX_MEMORY", "2g"),
            ("RLM_SERVE_MAX_WAITING", "0"),
            ("RLM_SERVE_WAIT", "0.5"),
            ("RLM_SERVE_GRACE", "0"),
            ("RLM_SERVE_ALLOW_UID", "1000, 65534"),
            ("RLM_SERVE_ALLOW_GID", "100"),
        ])
        .unwrap();
        assert_eq!((s.max_live, s.max_memory, s.max_waiting), (4, 2 << 30, 0));
        assert_eq!(
            (s.wait, s.grace),
            (Duration::from_millis(500), Duration::ZERO)
        );
        assert_eq!((s.allow_uids, s.allow_gids), (vec![1000, 65534], vec![100]));
    }

    #[test]
    fn a_bad_value_is_named_with_the_accepted_form() {
        for (name, bad) in [
            ("RLM_SERVE_MAX_LIVE", "0"),
            ("RLM_SERVE_MAX_LIVE", "many"),
            ("RLM_SERVE_MAX_MEMORY", "1k"),
            ("RLM_SERVE_MAX_WAITING", "-1"),
            ("RLM_SERVE_WAIT", "nan"),
            ("RLM_SERVE_GRACE", "1h"),
            ("RLM_SERVE_ALLOW_UID", "root"),
            ("RLM_SERVE_ALLOW_GID", ""),
        ] {
            let e = from(&[(name, bad)]).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("expected"), "{e}");
        }
    }
}
