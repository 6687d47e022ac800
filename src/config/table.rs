//! Small tables of settings beside the sandbox's own (the pool's, the
//! server's): each setting one `RLM_*` variable and one flag with the
//! same accepted form. The defaults, then the variables, then the flags;
//! one parser per setting, a bad value refused naming where it came
//! from, the value and the accepted form.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::ConfigError;

/// One setting of a table: its names and accepted form.
pub trait Setting: Copy + 'static {
    fn env(self) -> &'static str;
    fn flag(self) -> &'static str;
    fn accepted(self) -> &'static str;
}

/// A table of settings with defaults.
pub trait Table: Default {
    type Key: Setting;
    /// Every setting, in the order variables are read.
    const KEYS: &'static [Self::Key];

    /// Sets `key` from its trimmed value; `None` when the value is not
    /// of the accepted form (nothing is changed then).
    fn parse(&mut self, key: Self::Key, raw: &str) -> Option<()>;

    /// Sets `key` from `value`, which came from `origin` (a variable or
    /// a flag).
    fn set(&mut self, key: Self::Key, value: &str, origin: &str) -> Result<(), ConfigError> {
        self.parse(key, value.trim())
            .ok_or_else(|| ConfigError::Invalid {
                origin: origin.to_string(),
                value: value.to_string(),
                accepted: key.accepted(),
            })
    }

    /// The defaults, then every variable `get` returns.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut table = Self::default();
        for &key in Self::KEYS {
            if let Some(value) = get(key.env()) {
                table.set(key, &value, key.env())?;
            }
        }
        Ok(table)
    }

    /// [`Table::from_vars`] of the process's environment, then the flags
    /// given (`None`: not on the command line).
    fn from_env_and_flags(flags: &[(Self::Key, &Option<String>)]) -> Result<Self, ConfigError> {
        let mut table = Self::from_vars(|name| std::env::var(name).ok())?;
        for (key, value) in flags {
            if let Some(v) = value {
                table.set(*key, v, key.flag())?;
            }
        }
        Ok(table)
    }
}

/// A whole number within `range`.
pub fn whole(raw: &str, range: RangeInclusive<usize>) -> Option<usize> {
    raw.parse().ok().filter(|n| range.contains(n))
}

/// Seconds, a finite number in [0, 86400] (above 0 unless `zero`).
pub fn seconds(raw: &str, zero: bool) -> Option<Duration> {
    let secs: f64 = raw.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs) && (zero || secs > 0.0))
        .then(|| Duration::from_secs_f64(secs))
}

/// Numeric ids, comma-separated, at least one.
pub fn ids(raw: &str) -> Option<Vec<u32>> {
    raw.split(',')
        .map(|s| s.trim().parse::<u32>().ok())
        .collect::<Option<Vec<u32>>>()
        .filter(|v| !v.is_empty())
}
