//! The server's settings: its admission limits (live sandboxes, the
//! memory their limits commit, requests waiting), the default wait of a
//! request, the shutdown grace, and who may connect besides the server's
//! own uid. Each a `RLM_SERVE_*` variable; a flag sets the same value
//! through [`ServeSettings::set`].

use std::time::Duration;

use crate::config::{parse_size, ConfigError};

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

impl Setting {
    pub const ALL: [Setting; 7] = [
        Setting::MaxLive,
        Setting::MaxMemory,
        Setting::MaxWaiting,
        Setting::Wait,
        Setting::Grace,
        Setting::AllowUid,
        Setting::AllowGid,
    ];

    pub fn env(self) -> &'static str {
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

    pub fn flag(self) -> &'static str {
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

    pub fn accepted(self) -> &'static str {
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

impl ServeSettings {
    /// The defaults, then every `RLM_SERVE_*` variable `get` returns.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut settings = ServeSettings::default();
        for key in Setting::ALL {
            if let Some(value) = get(key.env()) {
                settings.set(key, &value, key.env())?;
            }
        }
        Ok(settings)
    }

    /// Sets `key` from `value` (from `origin`: a variable or a flag). The
    /// uid and gid lists are replaced, not extended.
    pub fn set(&mut self, key: Setting, value: &str, origin: &str) -> Result<(), ConfigError> {
        let invalid = || ConfigError::Invalid {
            origin: origin.to_string(),
            value: value.to_string(),
            accepted: key.accepted(),
        };
        let raw = value.trim();
        match key {
            Setting::MaxLive => {
                self.max_live = raw
                    .parse()
                    .ok()
                    .filter(|n| (1..=4096).contains(n))
                    .ok_or_else(invalid)?
            }
            Setting::MaxMemory => {
                self.max_memory = parse_size(raw)
                    .filter(|n| *n >= 1 << 20)
                    .ok_or_else(invalid)?
            }
            Setting::MaxWaiting => {
                self.max_waiting = raw
                    .parse()
                    .ok()
                    .filter(|n| *n <= 65536)
                    .ok_or_else(invalid)?
            }
            Setting::Wait | Setting::Grace => {
                let d = seconds(raw).ok_or_else(invalid)?;
                if key == Setting::Wait {
                    self.wait = d;
                } else {
                    self.grace = d;
                }
            }
            Setting::AllowUid | Setting::AllowGid => {
                let ids = raw
                    .split(',')
                    .map(|s| s.trim().parse::<u32>().ok())
                    .collect::<Option<Vec<u32>>>()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(invalid)?;
                if key == Setting::AllowUid {
                    self.allow_uids = ids;
                } else {
                    self.allow_gids = ids;
                }
            }
        }
        Ok(())
    }
}

/// Seconds in [0, 86400].
pub fn seconds(raw: &str) -> Option<Duration> {
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
