//! Configuration: defaults < preset < config file < `RLM_*` environment < flags.
//!
//! Every setting is known by three names (flag, environment variable, config
//! file key); every layer supplies plain strings, and one parser per setting
//! turns the winning string into a typed value. A bad value is refused with
//! the name of the layer that supplied it, the value, and the accepted form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// How code is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// In an OCI sandbox under runsc or runc (`docker` is accepted as an alias).
    Oci,
    /// The host's python, with no isolation at all. Development only.
    Local,
}

/// Which OCI runtime to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// runsc, falling back to runc with a warning when runsc is missing.
    Auto,
    Runsc,
    Runc,
}

/// A named starting point for the limits and the runtime policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// runsc required; default limits.
    Maximum,
    /// runsc preferred, runc allowed as a reported fallback; default limits.
    Standard,
    /// Same isolation, generous limits for interactive work.
    Development,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Maximum, Preset::Standard, Preset::Development];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Maximum => "maximum",
            Preset::Standard => "standard",
            Preset::Development => "development",
        }
    }

    /// The configuration this preset starts from, before any override.
    pub fn config(self) -> Config {
        let base = Config::default();
        match self {
            Preset::Maximum => Config {
                preset: self,
                runtime: RuntimeChoice::Runsc,
                ..base
            },
            Preset::Standard => base,
            Preset::Development => Config {
                preset: self,
                limits: Limits {
                    memory_bytes: 2 << 30,
                    cpus: 2.0,
                    pids: 256,
                    timeout: Duration::from_secs(300),
                    tmp_bytes: 512 << 20,
                    ..Limits::default()
                },
                ..base
            },
        }
    }
}

/// Resource limits of one sandbox.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Limits {
    /// Memory limit; swap is set equal to it, so no swap is used.
    pub memory_bytes: u64,
    /// CPU quota in cores (fractional).
    pub cpus: f64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u32,
    /// Wall-clock limit of one run.
    #[serde(serialize_with = "serialize_secs")]
    pub timeout: Duration,
    /// Bytes kept per output stream (head and tail), `RLM_MAX_STDOUT_BYTES`.
    pub max_stdout_bytes: usize,
    /// Bytes printed in all (both streams) after which the sandbox is killed.
    pub max_output_bytes: u64,
    /// Size of the sandbox's /tmp (a tmpfs, charged to its memory).
    pub tmp_bytes: u64,
    /// RLIMIT_NOFILE inside the sandbox.
    pub open_files: u64,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 << 20,
            cpus: 1.0,
            pids: 50,
            timeout: Duration::from_secs(30),
            max_stdout_bytes: 1 << 20,
            max_output_bytes: 256 << 20,
            tmp_bytes: 64 << 20,
            open_files: 256,
        }
    }
}

/// Everything a run needs to know, after all layers are merged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Config {
    pub preset: Preset,
    pub mode: ExecutionMode,
    pub runtime: RuntimeChoice,
    /// Allow runc when runsc was asked for by name and is missing.
    pub allow_unsafe_runtime: bool,
    /// Share the host's network. Off by default; refused by `maximum`.
    pub network_enabled: bool,
    pub limits: Limits,
    /// Python rootfs; `None` means the default one, built on first use.
    pub rootfs: Option<PathBuf>,
    /// seccomp profile (OCI `linux.seccomp` JSON); `None` means the built-in one.
    pub seccomp_profile: Option<PathBuf>,
    /// Where the driver keeps bundles and runtime state, one directory per run.
    pub state_dir: PathBuf,
    pub runsc_path: Option<PathBuf>,
    pub runc_path: Option<PathBuf>,
    /// Extra global flags for runsc (e.g. `--platform=systrap`).
    pub runsc_flags: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            preset: Preset::Standard,
            mode: ExecutionMode::Oci,
            runtime: RuntimeChoice::Auto,
            allow_unsafe_runtime: false,
            network_enabled: false,
            limits: Limits::default(),
            rootfs: None,
            seccomp_profile: None,
            state_dir: PathBuf::from("/run/rlm-sandbox"),
            runsc_path: None,
            runc_path: None,
            runsc_flags: Vec::new(),
        }
    }
}

/// One configurable setting and its three names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Preset,
    ExecutionMode,
    Runtime,
    AllowUnsafeRuntime,
    NetworkEnabled,
    MemoryLimit,
    CpuLimit,
    PidsLimit,
    ExecutionTimeout,
    MaxStdoutBytes,
    MaxOutputBytes,
    TmpSize,
    Rootfs,
    SeccompProfile,
    StateDir,
    RunscPath,
    RuncPath,
    RunscFlags,
}

impl Key {
    pub const ALL: [Key; 18] = [
        Key::Preset,
        Key::ExecutionMode,
        Key::Runtime,
        Key::AllowUnsafeRuntime,
        Key::NetworkEnabled,
        Key::MemoryLimit,
        Key::CpuLimit,
        Key::PidsLimit,
        Key::ExecutionTimeout,
        Key::MaxStdoutBytes,
        Key::MaxOutputBytes,
        Key::TmpSize,
        Key::Rootfs,
        Key::SeccompProfile,
        Key::StateDir,
        Key::RunscPath,
        Key::RuncPath,
        Key::RunscFlags,
    ];

    /// The environment variable (the names of the system this replaces).
    pub fn env(self) -> &'static str {
        match self {
            Key::Preset => "RLM_PRESET",
            Key::ExecutionMode => "RLM_EXECUTION_MODE",
            Key::Runtime => "RLM_DOCKER_RUNTIME",
            Key::AllowUnsafeRuntime => "RLM_ALLOW_UNSAFE_RUNTIME",
            Key::NetworkEnabled => "RLM_NETWORK_ENABLED",
            Key::MemoryLimit => "RLM_MEMORY_LIMIT",
            Key::CpuLimit => "RLM_CPU_LIMIT",
            Key::PidsLimit => "RLM_PIDS_LIMIT",
            Key::ExecutionTimeout => "RLM_EXECUTION_TIMEOUT",
            Key::MaxStdoutBytes => "RLM_MAX_STDOUT_BYTES",
            Key::MaxOutputBytes => "RLM_MAX_OUTPUT_BYTES",
            Key::TmpSize => "RLM_TMP_SIZE",
            Key::Rootfs => "RLM_ROOTFS",
            Key::SeccompProfile => "RLM_SECCOMP_PROFILE",
            Key::StateDir => "RLM_STATE_DIR",
            Key::RunscPath => "RLM_RUNSC_PATH",
            Key::RuncPath => "RLM_RUNC_PATH",
            Key::RunscFlags => "RLM_RUNSC_FLAGS",
        }
    }

    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Key::Preset => "--preset",
            Key::ExecutionMode => "--mode",
            Key::Runtime => "--runtime",
            Key::AllowUnsafeRuntime => "--allow-unsafe-runtime",
            Key::NetworkEnabled => "--network",
            Key::MemoryLimit => "--memory",
            Key::CpuLimit => "--cpus",
            Key::PidsLimit => "--pids",
            Key::ExecutionTimeout => "--timeout",
            Key::MaxStdoutBytes => "--max-stdout-bytes",
            Key::MaxOutputBytes => "--max-output-bytes",
            Key::TmpSize => "--tmp-size",
            Key::Rootfs => "--rootfs",
            Key::SeccompProfile => "--seccomp-profile",
            Key::StateDir => "--state-dir",
            Key::RunscPath => "--runsc-path",
            Key::RuncPath => "--runc-path",
            Key::RunscFlags => "--runsc-flags",
        }
    }

    /// The key in a JSON config file: the variable's name without `RLM_`, lower case.
    pub fn file_key(self) -> String {
        self.env().trim_start_matches("RLM_").to_ascii_lowercase()
    }

    fn from_file_key(key: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.file_key() == key)
    }

    /// The accepted form, for error messages and `--help`.
    pub fn accepted(self) -> &'static str {
        match self {
            Key::Preset => "one of maximum, standard, development",
            Key::ExecutionMode => "one of oci, docker (alias of oci), local",
            Key::Runtime => "one of auto, runsc, runc",
            Key::AllowUnsafeRuntime | Key::NetworkEnabled => {
                "a boolean: true/false, 1/0, yes/no, on/off"
            }
            Key::MemoryLimit | Key::TmpSize => {
                "a size: a byte count or a number with k, m or g (binary units), e.g. 512m"
            }
            Key::MaxStdoutBytes | Key::MaxOutputBytes => {
                "a size: a byte count or a number with k, m or g, at least 1k"
            }
            Key::CpuLimit => "a number of cores greater than 0, e.g. 1 or 0.5",
            Key::PidsLimit => "a whole number of tasks from 8 to 1000000",
            Key::ExecutionTimeout => "seconds, greater than 0 and at most 86400, e.g. 30 or 2.5",
            Key::Rootfs | Key::SeccompProfile | Key::StateDir => "an absolute path",
            Key::RunscPath | Key::RuncPath => "a path to the runtime's executable",
            Key::RunscFlags => "space-separated runsc global flags, each starting with --",
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File(PathBuf),
}

/// A setting's raw value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub value: String,
    pub source: Source,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid {origin} value {value:?}: expected {accepted}")]
    Invalid {
        origin: String,
        value: String,
        accepted: &'static str,
    },
    #[error("cannot read config file {path}: {err}")]
    ReadFile { path: PathBuf, err: std::io::Error },
    #[error("config file {path} is not a JSON object of settings: {err}")]
    ParseFile { path: PathBuf, err: String },
    #[error("config file {path}: unknown setting {key:?}; known settings: {known}")]
    UnknownFileKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("{0}")]
    Conflict(String),
}

fn origin(key: Key, source: &Source) -> String {
    match source {
        Source::Flag => key.flag().to_string(),
        Source::Env => key.env().to_string(),
        Source::File(path) => format!("{} in {}", key.file_key(), path.display()),
    }
}

/// The raw settings of every layer above the preset, before parsing.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    values: BTreeMap<Key, Raw>,
}

impl Layers {
    /// Collects file < environment < flags. `env` is a lookup so tests need
    /// not touch the process environment.
    pub fn collect(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &BTreeMap<Key, String>,
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers::default();
        if let Some(path) = file {
            for (key, value) in read_file(path)? {
                layers.set(key, value, Source::File(path.to_path_buf()));
            }
        }
        for key in Key::ALL {
            if let Some(value) = env(key.env()) {
                layers.set(key, value, Source::Env);
            }
        }
        for (key, value) in flags {
            layers.set(*key, value.clone(), Source::Flag);
        }
        Ok(layers)
    }

    pub fn set(&mut self, key: Key, value: String, source: Source) {
        self.values.insert(key, Raw { value, source });
    }

    pub fn get(&self, key: Key) -> Option<&Raw> {
        self.values.get(&key)
    }

    /// Applies the layers to the chosen preset's configuration.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let preset = match self.get(Key::Preset) {
            Some(raw) => parse(Key::Preset, raw, parse_preset)?,
            None => Preset::Standard,
        };
        let mut config = preset.config();
        for (&key, raw) in &self.values {
            apply(&mut config, key, raw)?;
        }
        if config.preset == Preset::Maximum && config.runtime != RuntimeChoice::Runsc {
            return Err(ConfigError::Conflict(format!(
                "preset maximum requires runtime runsc, but the runtime is {:?}; \
                 use preset standard to allow runc",
                config.runtime
            )));
        }
        if config.preset == Preset::Maximum && config.network_enabled {
            return Err(ConfigError::Conflict(
                "preset maximum does not allow a network (RLM_NETWORK_ENABLED / --network)".into(),
            ));
        }
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<Vec<(Key, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::ReadFile {
        path: path.to_path_buf(),
        err,
    })?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|err| ConfigError::ParseFile {
            path: path.to_path_buf(),
            err: err.to_string(),
        })?;
    let mut out = Vec::new();
    for (name, value) in object {
        let key = Key::from_file_key(&name).ok_or_else(|| ConfigError::UnknownFileKey {
            path: path.to_path_buf(),
            key: name.clone(),
            known: Key::ALL.map(|k| k.file_key()).join(", "),
        })?;
        let value = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.push((key, value));
    }
    Ok(out)
}

fn parse<T>(key: Key, raw: &Raw, f: impl Fn(&str) -> Option<T>) -> Result<T, ConfigError> {
    f(raw.value.trim()).ok_or_else(|| ConfigError::Invalid {
        origin: origin(key, &raw.source),
        value: raw.value.clone(),
        accepted: key.accepted(),
    })
}

fn apply(config: &mut Config, key: Key, raw: &Raw) -> Result<(), ConfigError> {
    let limits = &mut config.limits;
    match key {
        Key::Preset => {} // chose the starting point in `resolve`
        Key::ExecutionMode => config.mode = parse(key, raw, parse_mode)?,
        Key::Runtime => config.runtime = parse(key, raw, parse_runtime)?,
        Key::AllowUnsafeRuntime => config.allow_unsafe_runtime = parse(key, raw, parse_bool)?,
        Key::NetworkEnabled => config.network_enabled = parse(key, raw, parse_bool)?,
        Key::MemoryLimit => {
            limits.memory_bytes = parse(key, raw, |s| parse_size(s).filter(|&n| n >= 16 << 20))?
        }
        Key::TmpSize => limits.tmp_bytes = parse(key, raw, parse_size)?,
        Key::MaxStdoutBytes => {
            limits.max_stdout_bytes = parse(key, raw, |s| {
                parse_size(s)
                    .filter(|&n| n >= 1024)
                    .and_then(|n| usize::try_from(n).ok())
            })?
        }
        Key::MaxOutputBytes => {
            limits.max_output_bytes = parse(key, raw, |s| parse_size(s).filter(|&n| n >= 1024))?
        }
        Key::CpuLimit => {
            limits.cpus = parse(key, raw, |s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c > 0.0 && *c <= 1024.0)
            })?
        }
        Key::PidsLimit => {
            limits.pids = parse(key, raw, |s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| (8..=1_000_000).contains(n))
            })?
        }
        Key::ExecutionTimeout => {
            limits.timeout = parse(key, raw, |s| {
                s.parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t > 0.0 && *t <= 86_400.0)
                    .map(Duration::from_secs_f64)
            })?
        }
        Key::Rootfs => config.rootfs = Some(parse(key, raw, parse_abs_path)?),
        Key::SeccompProfile => config.seccomp_profile = Some(parse(key, raw, parse_abs_path)?),
        Key::StateDir => config.state_dir = parse(key, raw, parse_abs_path)?,
        Key::RunscPath => config.runsc_path = Some(parse(key, raw, parse_path)?),
        Key::RuncPath => config.runc_path = Some(parse(key, raw, parse_path)?),
        Key::RunscFlags => {
            config.runsc_flags = parse(key, raw, |s| {
                let flags: Vec<String> = s.split_whitespace().map(String::from).collect();
                flags.iter().all(|f| f.starts_with("--")).then_some(flags)
            })?
        }
    }
    Ok(())
}

fn parse_preset(s: &str) -> Option<Preset> {
    Preset::ALL
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(s))
}

fn parse_mode(s: &str) -> Option<ExecutionMode> {
    match s.to_ascii_lowercase().as_str() {
        "oci" | "docker" => Some(ExecutionMode::Oci),
        "local" => Some(ExecutionMode::Local),
        _ => None,
    }
}

fn parse_runtime(s: &str) -> Option<RuntimeChoice> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Some(RuntimeChoice::Auto),
        "runsc" | "gvisor" => Some(RuntimeChoice::Runsc),
        "runc" => Some(RuntimeChoice::Runc),
        _ => None,
    }
}

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses sizes the way Docker's `--memory` does: a byte count, or a number
/// with a binary unit suffix (`k`, `m`, `g`, optionally followed by `b`/`ib`).
pub fn parse_size(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let trimmed = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match trimmed.chars().last()? {
        'k' => (&trimmed[..trimmed.len() - 1], 10),
        'm' => (&trimmed[..trimmed.len() - 1], 20),
        'g' => (&trimmed[..trimmed.len() - 1], 30),
        c if c.is_ascii_digit() => (trimmed, 0),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift).filter(|&n| n > 0)
}

fn parse_abs_path(s: &str) -> Option<PathBuf> {
    let p = PathBuf::from(s);
    p.is_absolute().then_some(p)
}

fn parse_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(env: &[(&str, &str)], flags: &[(Key, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags = flags.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Layers::collect(None, |name| env.get(name).cloned(), &flags)?.resolve()
    }

    #[test]
    fn defaults_are_the_threat_model() {
        let c = resolve(&[], &[]).expect("defaults resolve");
        assert_eq!(c.preset, Preset::Standard);
        assert_eq!(c.mode, ExecutionMode::Oci);
        assert_eq!(c.runtime, RuntimeChoice::Auto);
        assert!(!c.network_enabled);
        assert!(!c.allow_unsafe_runtime);
        assert_eq!(c.limits.memory_bytes, 536_870_912);
        assert_eq!(c.limits.cpus, 1.0);
        assert_eq!(c.limits.pids, 50);
        assert_eq!(c.limits.timeout, Duration::from_secs(30));
    }

    #[test]
    fn env_overrides_preset_and_flags_override_env() {
        let c = resolve(
            &[("RLM_MEMORY_LIMIT", "1g"), ("RLM_DOCKER_RUNTIME", "runc")],
            &[(Key::MemoryLimit, "256m")],
        )
        .expect("valid");
        assert_eq!(c.limits.memory_bytes, 256 << 20);
        assert_eq!(c.runtime, RuntimeChoice::Runc);
    }

    #[test]
    fn docker_is_an_alias_of_oci() {
        let c = resolve(&[("RLM_EXECUTION_MODE", "docker")], &[]).expect("valid");
        assert_eq!(c.mode, ExecutionMode::Oci);
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_the_form() {
        let err = resolve(&[("RLM_MEMORY_LIMIT", "lots")], &[]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid RLM_MEMORY_LIMIT value \"lots\": expected a size: a byte count or a \
             number with k, m or g (binary units), e.g. 512m"
        );
        let err = resolve(&[], &[(Key::ExecutionTimeout, "-3")]).expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("invalid --timeout value \"-3\""),
            "{err}"
        );
        let err = resolve(&[("RLM_DOCKER_RUNTIME", "kata")], &[]).expect_err("refused");
        assert!(
            err.to_string().contains("one of auto, runsc, runc"),
            "{err}"
        );
        let err = resolve(&[("RLM_NETWORK_ENABLED", "maybe")], &[]).expect_err("refused");
        assert!(err.to_string().contains("RLM_NETWORK_ENABLED"), "{err}");
        let err = resolve(&[("RLM_CPU_LIMIT", "0")], &[]).expect_err("refused");
        assert!(err.to_string().contains("RLM_CPU_LIMIT"), "{err}");
        let err = resolve(&[("RLM_PIDS_LIMIT", "2")], &[]).expect_err("refused");
        assert!(err.to_string().contains("from 8 to"), "{err}");
    }

    #[test]
    fn maximum_refuses_runc_and_network() {
        assert!(resolve(&[("RLM_PRESET", "maximum")], &[]).is_ok());
        let err = resolve(
            &[("RLM_PRESET", "maximum"), ("RLM_DOCKER_RUNTIME", "runc")],
            &[],
        )
        .expect_err("refused");
        assert!(err.to_string().contains("requires runtime runsc"), "{err}");
        assert!(resolve(
            &[("RLM_PRESET", "maximum"), ("RLM_NETWORK_ENABLED", "true")],
            &[]
        )
        .is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("536870912"), Some(536_870_912));
        assert_eq!(parse_size("100b"), Some(100));
        for bad in ["", "m", "1.5g", "-1m", "12x", "0", "99999999999999999999g"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_file_is_the_lowest_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"memory_limit": "128m", "pids_limit": 64, "cpu_limit": 0.5}"#,
        )
        .expect("write");
        let env = [("RLM_PIDS_LIMIT".to_string(), "100".to_string())];
        let c = Layers::collect(
            Some(&path),
            |n| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
            &BTreeMap::new(),
        )
        .and_then(|l| l.resolve())
        .expect("valid");
        assert_eq!(c.limits.memory_bytes, 128 << 20);
        assert_eq!(c.limits.pids, 100);
        assert_eq!(c.limits.cpus, 0.5);

        std::fs::write(&path, r#"{"memory_limit": "huge"}"#).expect("write");
        let err = Layers::collect(Some(&path), |_| None, &BTreeMap::new())
            .and_then(|l| l.resolve())
            .expect_err("refused");
        assert!(
            err.to_string().starts_with("invalid memory_limit in "),
            "{err}"
        );

        std::fs::write(&path, r#"{"memroy_limit": "1g"}"#).expect("write");
        let err = Layers::collect(Some(&path), |_| None, &BTreeMap::new()).expect_err("refused");
        assert!(
            err.to_string().contains("unknown setting \"memroy_limit\""),
            "{err}"
        );
    }
}
