//! A pool's settings: how many started sandboxes it keeps per
//! configuration, how long an unclaimed configuration keeps them, and the
//! cap across configurations. Each a `RLM_POOL_*` variable; a flag sets
//! the same value through [`PoolSettings::set`].

use std::time::Duration;

use crate::config::table::{self, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Started sandboxes kept per configuration (`RLM_POOL_SIZE`).
    pub size: usize,
    /// A configuration not claimed from for this long has its sandboxes
    /// removed; it refills at its next claim (`RLM_POOL_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Started sandboxes kept across all configurations (`RLM_POOL_MAX`).
    pub max_total: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 2,
            idle_timeout: Duration::from_secs(300),
            max_total: 16,
        }
    }
}

/// One setting: its variable, accepted form and parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Size,
    IdleTimeout,
    Max,
}

impl table::Setting for Setting {
    fn env(self) -> &'static str {
        match self {
            Setting::Size => "RLM_POOL_SIZE",
            Setting::IdleTimeout => "RLM_POOL_IDLE_TIMEOUT",
            Setting::Max => "RLM_POOL_MAX",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Setting::Size => "--pool-size",
            Setting::IdleTimeout => "--pool-idle-timeout",
            Setting::Max => "--pool-max",
        }
    }

    fn accepted(self) -> &'static str {
        match self {
            Setting::Size => "a whole number of sandboxes from 0 to 256 (0 keeps none)",
            Setting::IdleTimeout => "seconds, a number above 0 and at most 86400",
            Setting::Max => "a whole number of sandboxes from 0 to 4096",
        }
    }
}

impl Table for PoolSettings {
    type Key = Setting;
    const KEYS: &'static [Setting] = &[Setting::Size, Setting::IdleTimeout, Setting::Max];

    fn parse(&mut self, key: Setting, raw: &str) -> Option<()> {
        match key {
            Setting::Size => self.size = table::whole(raw, 0..=256)?,
            Setting::Max => self.max_total = table::whole(raw, 0..=4096)?,
            Setting::IdleTimeout => self.idle_timeout = table::seconds(raw, false)?,
        }
        Some(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::table::Setting as _;
    use crate::config::ConfigError;

    fn from(vars: &[(&str, &str)]) -> Result<PoolSettings, ConfigError> {
        PoolSettings::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_then_variables() {
        assert_eq!(from(&[]).unwrap(), PoolSettings::default());
        let s = from(&[
            ("RLM_POOL_SIZE", "4"),
            ("RLM_POOL_IDLE_TIMEOUT", "1.5"),
            ("RLM_POOL_MAX", " 8 "),
        ])
        .unwrap();
        assert_eq!(s.size, 4);
        assert_eq!(s.idle_timeout, Duration::from_millis(1500));
        assert_eq!(s.max_total, 8);
        assert_eq!(from(&[("RLM_POOL_SIZE", "0")]).unwrap().size, 0);
    }

    #[test]
    fn a_bad_value_is_named_with_the_accepted_form() {
        for (name, bad) in [
            ("RLM_POOL_SIZE", "-1"),
            ("RLM_POOL_SIZE", "257"),
            ("RLM_POOL_SIZE", "two"),
            ("RLM_POOL_IDLE_TIMEOUT", "0"),
            ("RLM_POOL_IDLE_TIMEOUT", "nan"),
            ("RLM_POOL_IDLE_TIMEOUT", "5m"),
            ("RLM_POOL_MAX", "4097"),
            ("RLM_POOL_MAX", ""),
        ] {
            let e = from(&[(name, bad)]).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("expected"), "{e}");
        }
        let mut s = PoolSettings::default();
        let e = s.set(Setting::Size, "x", Setting::Size.flag()).unwrap_err();
        assert!(e.to_string().contains("--pool-size"), "{e}");
    }
}
