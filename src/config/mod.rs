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

mod keys;
pub mod table;

pub use keys::Key;

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
mod tests;
