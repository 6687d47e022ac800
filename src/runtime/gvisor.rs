//! What a runsc binary is: its gVisor release and the platform (how the
//! Sentry intercepts syscalls) a run with the configured flags will use.
//!
//! The platform decides the cost of every syscall inside the sandbox:
//! systrap (upstream's default since mid-2023) is about 30× cheaper than
//! ptrace, the default of gVisor 2022 that Debian 12 ships.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

/// Where the platform of a run comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformSource {
    /// `--platform=` in RLM_RUNSC_FLAGS (or `--runsc-flags`).
    Flags,
    /// The binary's own default, as `runsc flags` reports it.
    RunscDefault,
}

/// The platform a run will use and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub name: String,
    pub source: PlatformSource,
}

/// The release date (`20240729`) in a runsc version line: the first run of
/// eight digits (`runsc version 0.0~20240729.0` as Debian builds it,
/// `runsc version release-20240729.0` upstream).
pub fn release(version: &str) -> Option<u32> {
    let bytes = version.as_bytes();
    (0..bytes.len().saturating_sub(7))
        .map(|i| &bytes[i..i + 8])
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .and_then(|w| std::str::from_utf8(w).ok()?.parse().ok())
}

/// The platform named by `--platform=X` among runsc global flags; the
/// last one wins, as with Go's flag package. (Configured flags are all of
/// the `--name=value` form: a separate value word is refused earlier.)
pub fn platform_in_flags(flags: &[String]) -> Option<&str> {
    flags
        .iter()
        .rev()
        .find_map(|f| f.strip_prefix("--platform="))
}

/// The default platform in the output of `runsc flags`: the line after
/// `-platform string` ends with `(default "systrap")`.
pub fn default_platform_in(flags_help: &str) -> Option<String> {
    let mut lines = flags_help.lines();
    lines.find(|l| l.split_whitespace().next() == Some("-platform"))?;
    let help = lines.next()?;
    let (_, tail) = help.rsplit_once("(default \"")?;
    let (name, _) = tail.split_once('"')?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The platform a run of `binary` with `flags` uses; `None` when no flag
/// names one and the binary's default cannot be read. Runs `runsc flags`
/// (which starts no sandbox and prints its help on stderr).
pub fn platform(binary: &Path, flags: &[String]) -> Option<Platform> {
    if let Some(name) = platform_in_flags(flags) {
        return Some(Platform {
            name: name.to_string(),
            source: PlatformSource::Flags,
        });
    }
    let out = Command::new(binary)
        .arg("flags")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let help = [out.stderr, out.stdout].concat();
    Some(Platform {
        name: default_platform_in(&String::from_utf8_lossy(&help))?,
        source: PlatformSource::RunscDefault,
    })
}

/// What `check` says when a run would use ptrace: it works, but upstream
/// no longer supports it and syscalls cost ~30× more.
pub fn ptrace_warning(platform: &Platform) -> String {
    let how = match platform.source {
        PlatformSource::Flags => {
            "RLM_RUNSC_FLAGS selects it: drop --platform=ptrace to use the binary's default"
        }
        PlatformSource::RunscDefault => {
            "this runsc is too old to default to systrap (Debian 12's package is gVisor \
             2022-12-19): install the current one with scripts/setup, or \
             apt-get install -t bookworm-backports runsc"
        }
    };
    format!(
        "runsc platform is ptrace: upstream no longer supports it and syscalls in the sandbox \
         are ~30x slower than with systrap; {how}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates_from_version_lines() {
        assert_eq!(release("runsc version 0.0~20240729.0"), Some(20240729));
        assert_eq!(release("runsc version release-20221219.0"), Some(20221219));
        assert_eq!(release("runsc version 0.0~2024"), None);
        assert_eq!(release(""), None);
    }

    #[test]
    fn the_last_platform_flag_wins() {
        let flags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(platform_in_flags(&flags(&[])), None);
        assert_eq!(platform_in_flags(&flags(&["--debug"])), None);
        assert_eq!(
            platform_in_flags(&flags(&[
                "--platform=ptrace",
                "--debug",
                "--platform=systrap"
            ])),
            Some("systrap")
        );
        assert_eq!(
            platform_in_flags(&flags(&["--platform_device_path=/dev/x"])),
            None
        );
    }

    #[test]
    fn default_platform_from_both_builds_flag_help() {
        let y2024 = "  -overlay2 string\n    \tspecifies...\n  -platform string\n    \t\
                     specifies which platform to use: systrap (default), ptrace, kvm. \
                     (default \"systrap\")\n  -platform_device_path string\n    \tpath\n";
        let y2022 = "  -platform string\n    \tspecifies which platform to use: ptrace \
                     (default), kvm. (default \"ptrace\")\n";
        assert_eq!(default_platform_in(y2024).as_deref(), Some("systrap"));
        assert_eq!(default_platform_in(y2022).as_deref(), Some("ptrace"));
        assert_eq!(
            default_platform_in("  -platform_device_path string\n x\n"),
            None
        );
        assert_eq!(default_platform_in(""), None);
    }
}
