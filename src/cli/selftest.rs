//! `rlm-sandbox selftest`: the attack catalogue (`rlm_sandbox::selftest`)
//! on this host, as a table or JSON; exits 1 when any attack got through.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use rlm_sandbox::config::RuntimeChoice;
use rlm_sandbox::runtime::{find_binary, RuntimeKind};
use rlm_sandbox::selftest::{self, Layer, Row, RowOutcome};

use super::SandboxArgs;

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Print one JSON object {"rows": [...], "failures": N} instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only the attacks whose name contains this text (or one of
    /// several, comma-separated).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Negative controls: for each layer of the threat model, run the rows
    /// it protects with exactly that layer removed (test-only settings,
    /// never reachable from run or session) and check that they fail;
    /// prints which layer each row depends on. --only filters layers.
    #[arg(long)]
    controls: bool,
    /// Run the whole catalogue (or --only's rows) with this one layer
    /// removed, to measure which rows it protects (a layer name of
    /// --controls).
    #[arg(long, value_name = "LAYER", hide = true, conflicts_with = "controls")]
    without: Option<String>,
    /// The sandbox settings; --runtime also takes `both` here. Without it
    /// (and without RLM_DOCKER_RUNTIME) every installed runtime is tested.
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: &SelftestArgs) -> anyhow::Result<i32> {
    let mut sandbox = args.sandbox.clone();
    // `both` is not a Config value; take the flag out before the layers
    // are merged and decide the list of runtimes here.
    let wanted = sandbox.runtime.take();
    let config = sandbox.config()?;
    let runtimes = runtimes(wanted.as_deref(), config.runtime, |name| {
        find_binary(name, configured_path(&config, name)).is_some()
    })?;
    if args.controls {
        return super::controls::run(&config, &runtimes, args.only.as_deref(), args.json);
    }
    let without = match args.without.as_deref() {
        None => None,
        Some(name) => Some(Layer::from_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "--without: unknown layer {name:?}; expected one of {}",
                selftest::controls()
                    .iter()
                    .map(|c| c.layer.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?),
    };
    let attacks: Vec<_> = selftest::catalogue()
        .into_iter()
        .filter(|a| {
            args.only
                .as_deref()
                .map_or(true, |t| t.split(',').any(|t| a.name.contains(t)))
        })
        .collect();
    if attacks.is_empty() {
        bail!(
            "--only {:?} matches no attack",
            args.only.as_deref().unwrap_or("")
        );
    }
    let mut rows = Vec::new();
    for &runtime in &runtimes {
        for attack in &attacks {
            let row = match without {
                Some(layer) => selftest::run_controlled(&config, runtime, attack, layer),
                None => selftest::run_attack(&config, runtime, attack),
            };
            if !args.json {
                eprintln!(
                    "rlm-sandbox: selftest: {} on {}: {}",
                    row.attack,
                    runtime.name(),
                    row.outcome.label()
                );
            }
            rows.push(row);
        }
    }
    let count = |o: RowOutcome| rows.iter().filter(|r| r.outcome == o).count();
    let (failures, not_applicable) = (count(RowOutcome::Fail), count(RowOutcome::NotApplicable));
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "rows": rows,
                "failures": failures,
                "passed": count(RowOutcome::Pass),
                "not_applicable": not_applicable,
            }),
        )?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &rows)?;
        writeln!(
            out,
            "{} of {} passed, {failures} failed, {not_applicable} not applicable on this host \
             (not counted as passed)",
            count(RowOutcome::Pass),
            rows.len()
        )?;
    }
    // N/A rows prove nothing and fail nothing: the exit status is about
    // failures only; the count above says what was not proven.
    Ok(if failures == 0 { 0 } else { 1 })
}

pub(super) fn configured_path<'a>(
    config: &'a rlm_sandbox::config::Config,
    name: &str,
) -> Option<&'a std::path::Path> {
    match name {
        "runsc" => config.runsc_path.as_deref(),
        _ => config.runc_path.as_deref(),
    }
}

/// The runtimes to test: named ones must exist (a missing one is an
/// error, not a silent skip); `auto` means every installed one.
fn runtimes(
    flag: Option<&str>,
    configured: RuntimeChoice,
    installed: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<RuntimeKind>> {
    let named = match flag {
        Some("both") => vec![RuntimeKind::Runsc, RuntimeKind::Runc],
        Some("runsc") => vec![RuntimeKind::Runsc],
        Some("runc") => vec![RuntimeKind::Runc],
        Some("auto") => Vec::new(),
        Some(other) => {
            bail!("--runtime: expected auto, runsc, runc or both, got {other:?}")
        }
        None => match configured {
            RuntimeChoice::Runsc => vec![RuntimeKind::Runsc],
            RuntimeChoice::Runc => vec![RuntimeKind::Runc],
            RuntimeChoice::Auto => Vec::new(),
        },
    };
    if named.is_empty() {
        let found: Vec<_> = [RuntimeKind::Runsc, RuntimeKind::Runc]
            .into_iter()
            .filter(|k| installed(k.name()))
            .collect();
        if found.is_empty() {
            bail!("neither runsc nor runc is installed (scripts/setup installs both)");
        }
        return Ok(found);
    }
    if let Some(missing) = named.iter().find(|k| !installed(k.name())) {
        bail!(
            "{} is not installed (apt-get install {0}, or --{0}-path)",
            missing.name()
        );
    }
    Ok(named)
}

fn print_table(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let header = ["attack", "runtime", "expected", "observed", "result"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.attack.clone(),
                r.runtime.name().to_string(),
                r.expected.clone(),
                r.observed.clone(),
                r.outcome.label().to_string(),
            ]
        })
        .collect();
    // Only the two short columns are padded: expected and observed are
    // sentences, printed as they are.
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    writeln!(
        out,
        "{:<w0$}  {:<w1$}  {}  {}  {}",
        header[0], header[1], header[4], header[2], header[3]
    )?;
    for c in &cells {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<6}  expected: {}\n{:<w0$}  {:<w1$}  {:<6}  observed: {}",
            c[0], c[1], c[4], c[2], "", "", "", c[3]
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_lists() {
        let all = |_: &str| true;
        let only_runc = |n: &str| n == "runc";
        let got = |flag, choice, inst: &dyn Fn(&str) -> bool| {
            runtimes(flag, choice, inst).map_err(|e| e.to_string())
        };
        assert_eq!(
            got(Some("both"), RuntimeChoice::Auto, &all),
            Ok(vec![RuntimeKind::Runsc, RuntimeKind::Runc])
        );
        assert_eq!(
            got(None, RuntimeChoice::Auto, &only_runc),
            Ok(vec![RuntimeKind::Runc])
        );
        assert_eq!(
            got(None, RuntimeChoice::Runc, &all),
            Ok(vec![RuntimeKind::Runc])
        );
        assert!(got(Some("both"), RuntimeChoice::Auto, &only_runc).is_err());
        assert!(got(Some("docker"), RuntimeChoice::Auto, &all).is_err());
    }
}
