//! The attack catalogue: each row of the threat model (docs/SECURITY.md) as
//! Python code run in a real sandbox and a check of its exact outcome.
//!
//! One list serves three callers: `rlm-sandbox selftest` (a table for the
//! current host), `cargo test --test security` (one test per row and
//! runtime) and `pytest tests/security/` (the rows of `selftest --json`).
//!
//! Every attack prints one machine-readable line, `RESULT key=value ...`,
//! and its check compares the values with the exact outcome expected on
//! each runtime. Where an errno alone could be met by accident, the attack
//! carries a baseline (the code ran, the threads really spun, the host
//! fixture really existed), so every check can fail.

mod catalogue;
mod fixture;
mod kernel_files;
pub mod layers;
mod namespaces;
mod resources;
mod secrets;
mod spec_edits;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::config::{Config, Limits, RuntimeChoice};
use crate::egress::{ContextEchoIndex, EgressConfig, EgressFilter, PendingFilter};
use crate::result::ExecResult;
use crate::runtime::RuntimeKind;
use crate::supervise::Sandbox;

pub use catalogue::catalogue;
pub use fixture::{Fixture, HostFacts};
pub use layers::{controls, Control, Layer};

/// The tag that starts the one line every attack prints.
pub const RESULT_TAG: &str = "RESULT ";

/// What an attack observed: the observed text, or the observed text of a
/// failure. An `Ok` text that starts with [`NOT_APPLICABLE`] (made by
/// [`not_applicable`]) is neither: the row has nothing to prove here.
pub type Verdict = Result<String, String>;

/// How an observed text starts when the host lacks what the row would
/// prove (the file a mask would hide does not exist on this host).
pub const NOT_APPLICABLE: &str = "not applicable on this host: ";

/// The verdict of a row with nothing to prove on this host.
pub fn not_applicable(why: &str) -> Verdict {
    Ok(format!("{NOT_APPLICABLE}{why}"))
}

/// A row's result: proven, not proven, or nothing to prove on this host.
/// `NotApplicable` is never counted as a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RowOutcome {
    #[serde(rename = "pass")]
    Pass,
    #[serde(rename = "fail")]
    Fail,
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl RowOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RowOutcome::Pass => "PASS",
            RowOutcome::Fail => "FAIL",
            RowOutcome::NotApplicable => "N/A",
        }
    }

    fn of(verdict: &Verdict) -> RowOutcome {
        match verdict {
            Ok(text) if text.starts_with(NOT_APPLICABLE) => RowOutcome::NotApplicable,
            Ok(_) => RowOutcome::Pass,
            Err(_) => RowOutcome::Fail,
        }
    }
}

/// One attack of the threat model.
pub struct Attack {
    /// Stable identifier: the test name and the row key in `--json`.
    pub name: &'static str,
    /// The threat-model row it belongs to.
    pub threat: &'static str,
    /// The Python the sandbox runs; `@PORT@` and `@CANARY@` are replaced
    /// by the fixture's values.
    pub code: String,
    /// The expected outcome, for people.
    pub expected: &'static str,
    /// Changes to the default limits this attack needs.
    pub limits: fn(&mut Limits),
    /// A context for the egress filter's echo detector.
    pub context: Option<String>,
    /// Something set up on the host before the run and inspected after it.
    pub fixture: Fixture,
    /// Compares what happened with what must happen.
    pub check: fn(&Outcome) -> Verdict,
    /// Run the `rlm-probe` binary instead of `code` (syscalls Python
    /// cannot reach).
    pub probe: bool,
}

/// Everything a check may look at.
pub struct Outcome<'a> {
    /// The attack's name (rows that share one check tell themselves apart).
    pub attack: &'a str,
    pub runtime: RuntimeKind,
    /// The first line of the runtime binary's `--version`, where it printed
    /// one: rows that a runtime build observes differently name the build.
    pub runtime_version: Option<&'a str>,
    pub result: &'a ExecResult,
    pub host: &'a HostFacts,
    pub limits: &'a Limits,
}

impl Outcome<'_> {
    /// The gVisor release date (`20240729`) of a runsc build, from its
    /// version line (`runsc version 0.0~20240729.0` as Debian builds it,
    /// `runsc version release-20240729.0` upstream); `None` for runc or a
    /// version line of another shape.
    pub fn gvisor_release(&self) -> Option<u32> {
        if self.runtime != RuntimeKind::Runsc {
            return None;
        }
        crate::runtime::gvisor::release(self.runtime_version?)
    }

    /// The `key=value` pairs of the attack's `RESULT` line.
    pub fn values(&self) -> Result<BTreeMap<String, String>, String> {
        parse_result_line(&self.result.stdout).ok_or_else(|| self.describe("no RESULT line"))
    }

    /// A failure message that carries what was observed.
    pub fn describe(&self, what: &str) -> String {
        let r = self.result;
        format!(
            "{what}: status={} exit={:?} stdout={:?} stderr={:?}",
            r.status.as_str(),
            r.exit_code,
            tail(&r.stdout, 600),
            tail(&r.stderr, 600)
        )
    }
}

/// The first `RESULT` line of `stdout`, as ordered `key=value` pairs.
pub fn parse_result_line(stdout: &str) -> Option<BTreeMap<String, String>> {
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_TAG))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// One line of the selftest table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub attack: String,
    pub threat: String,
    pub runtime: RuntimeKind,
    pub expected: String,
    pub observed: String,
    /// True only for [`RowOutcome::Pass`].
    pub pass: bool,
    pub outcome: RowOutcome,
    /// The layer removed for this run (`selftest --controls`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without: Option<Layer>,
}

/// The configuration one attack runs with on `runtime`: `base` with the
/// runtime forced (no fallback) and the attack's limits applied.
pub fn attack_config(base: &Config, runtime: RuntimeKind, attack: &Attack) -> Config {
    let mut config = base.clone();
    config.runtime = match runtime {
        RuntimeKind::Runsc => RuntimeChoice::Runsc,
        RuntimeKind::Runc => RuntimeChoice::Runc,
    };
    // A row must prove the runtime it names, never a fallback.
    config.allow_unsafe_runtime = false;
    (attack.limits)(&mut config.limits);
    config
}

/// Runs `attack` on `runtime` and checks it. Every failure, including a
/// sandbox that could not be prepared, is a failing row, never a skip.
pub fn run_attack(base: &Config, runtime: RuntimeKind, attack: &Attack) -> Row {
    run_with(base, runtime, attack, None)
}

/// Runs `attack` on `runtime` with exactly one layer removed (a negative
/// control): the test-only settings of [`layers`]. Only the catalogue's
/// own attacks ever run this way.
pub fn run_controlled(base: &Config, runtime: RuntimeKind, attack: &Attack, without: Layer) -> Row {
    run_with(base, runtime, attack, Some(without))
}

fn run_with(base: &Config, runtime: RuntimeKind, attack: &Attack, without: Option<Layer>) -> Row {
    let mut config = attack_config(base, runtime, attack);
    if let Some(layer) = without {
        layer.adjust_config(&mut config);
    }
    let limits = config.limits.clone();
    let verdict = execute(config, runtime, attack, &limits, without);
    let outcome = RowOutcome::of(&verdict);
    Row {
        attack: attack.name.to_string(),
        threat: attack.threat.to_string(),
        runtime,
        expected: attack.expected.to_string(),
        observed: verdict.unwrap_or_else(|e| e),
        pass: outcome == RowOutcome::Pass,
        outcome,
        without,
    }
}

fn execute(
    config: Config,
    runtime: RuntimeKind,
    attack: &Attack,
    limits: &Limits,
    without: Option<Layer>,
) -> Verdict {
    let egress =
        egress_filter(attack.context.as_deref(), without).map_err(|e| format!("egress: {e}"))?;
    let mut sandbox = Sandbox::prepare(config, PendingFilter::ready(egress), &mut |_| {})
        .map_err(|e| format!("cannot prepare the sandbox: {e}"))?;
    sandbox.spec_edit = without.and_then(Layer::spec_edit);
    if sandbox.selection.runtime.kind != runtime {
        return Err(format!(
            "asked for {} but {} was selected",
            runtime.name(),
            sandbox.selection.runtime.kind.name()
        ));
    }
    let fixture = attack
        .fixture
        .set_up()
        .map_err(|e| format!("fixture: {e}"))?;
    let cancel = AtomicBool::new(false);
    let result = if attack.probe {
        let probe = probe_binary()?;
        let bytes =
            std::fs::read(&probe).map_err(|e| format!("cannot read {}: {e}", probe.display()))?;
        sandbox.run_probe(&bytes, &cancel)
    } else {
        sandbox.run(fixture.substitute(&attack.code).as_bytes(), &cancel)
    }
    .map_err(|e| format!("the run failed: {e}"))?;
    let host = fixture.observe();
    let version = crate::runtime::version_of(&sandbox.selection.runtime.path);
    (attack.check)(&Outcome {
        attack: attack.name,
        runtime,
        runtime_version: version.as_deref(),
        result: &result,
        host: &host,
        limits,
    })
}

/// The `rlm-probe` binary: `RLM_PROBE_BIN`, or beside this executable (or
/// one directory up, for cargo's test binaries in target/*/deps).
pub fn probe_binary() -> Result<std::path::PathBuf, String> {
    if let Some(path) = std::env::var_os("RLM_PROBE_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("/"));
    [dir.join("rlm-probe"), dir.join("../rlm-probe")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "rlm-probe not found beside {} (cargo build --release builds it; or set RLM_PROBE_BIN)",
                exe.display()
            )
        })
}

/// The default egress filter (or a control's), with `context` indexed for
/// echo detection.
fn egress_filter(
    context: Option<&str>,
    without: Option<Layer>,
) -> Result<EgressFilter, crate::egress::EgressError> {
    let config = match without {
        Some(layer) => layer.egress(EgressConfig::default()),
        None => EgressConfig::default(),
    };
    let echo = config.echo.clone();
    let filter = EgressFilter::new(config)?;
    Ok(match context {
        Some(text) => filter.with_context(ContextEchoIndex::build(text.as_bytes(), &echo)),
        None => filter,
    })
}

/// Runs the whole catalogue on each runtime in turn.
pub fn run_all(base: &Config, runtimes: &[RuntimeKind]) -> Vec<Row> {
    let attacks = catalogue();
    runtimes
        .iter()
        .flat_map(|&rt| attacks.iter().map(move |a| (rt, a)))
        .map(|(rt, a)| run_attack(base, rt, a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_parsed_in_order() {
        let v = parse_result_line("noise\nRESULT a=1 b=x/y\nRESULT c=2\n").expect("line");
        assert_eq!(v.get("a").map(String::as_str), Some("1"));
        assert_eq!(v.get("b").map(String::as_str), Some("x/y"));
        assert!(!v.contains_key("c"));
        assert!(parse_result_line("nothing here").is_none());
    }

    #[test]
    fn not_applicable_is_neither_pass_nor_fail() {
        assert_eq!(
            RowOutcome::of(&not_applicable("no /proc/kcore")),
            RowOutcome::NotApplicable
        );
        assert_eq!(RowOutcome::of(&Ok("x=1".into())), RowOutcome::Pass);
        assert_eq!(RowOutcome::of(&Err("x=2".into())), RowOutcome::Fail);
        let json = serde_json::to_string(&RowOutcome::NotApplicable).expect("json");
        assert_eq!(json, "\"n/a\"");
    }

    #[test]
    fn catalogue_names_are_unique_identifiers() {
        let attacks = catalogue();
        let mut names: Vec<&str> = attacks.iter().map(|a| a.name).collect();
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), attacks.len());
        for a in attacks.iter().filter(|a| !a.probe) {
            assert!(
                a.code.contains(RESULT_TAG.trim()),
                "{} prints no RESULT",
                a.name
            );
        }
    }
}
