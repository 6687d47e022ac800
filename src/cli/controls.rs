//! `rlm-sandbox selftest --controls`: every layer's negative control
//! (`rlm_sandbox::selftest::layers`) on this host, and which layer each
//! row of the catalogue depends on. Exits 1 when a control did not break
//! what it protects (or broke what it must not).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::bail;
use rlm_sandbox::config::Config;
use rlm_sandbox::runtime::RuntimeKind;
use rlm_sandbox::selftest::controls;
use rlm_sandbox::selftest::layers::{run_control, ControlRow};

pub fn run(
    config: &Config,
    runtimes: &[RuntimeKind],
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let chosen: Vec<_> = controls()
        .into_iter()
        .filter(|c| only.map_or(true, |t| t.split(',').any(|t| c.layer.name().contains(t))))
        .collect();
    if chosen.is_empty() {
        bail!("--only {:?} matches no layer", only.unwrap_or(""));
    }
    let mut rows: Vec<ControlRow> = Vec::new();
    for &runtime in runtimes {
        for c in &chosen {
            for r in run_control(config, runtime, c) {
                if !json {
                    eprintln!(
                        "rlm-sandbox: selftest: without {}: {} on {}: {} ({})",
                        c.layer.name(),
                        r.row.attack,
                        runtime.name(),
                        r.row.outcome.label(),
                        r.verdict
                    );
                }
                rows.push(r);
            }
        }
    }
    let unconfirmed = rows.iter().filter(|r| r.verdict == "unconfirmed").count();
    let depends = depends_on(&rows);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "controls": rows,
                "unconfirmed": unconfirmed,
                "fails_without": depends,
            }),
        )?;
        writeln!(out)?;
    } else {
        for c in &chosen {
            writeln!(out, "without {}: {}", c.layer.name(), c.removed)?;
            if !c.note.is_empty() {
                writeln!(out, "  note: {}", c.note)?;
            }
            for r in rows.iter().filter(|r| r.layer == c.layer) {
                writeln!(
                    out,
                    "  {:<22} {:<5} must {:<4}  got {:<4}  {:<11}  {}",
                    r.row.attack,
                    r.row.runtime.name(),
                    if r.must_fail { "FAIL" } else { "PASS" },
                    r.row.outcome.label(),
                    r.verdict,
                    r.row.observed
                )?;
            }
        }
        writeln!(out, "\nfails without (measured above):")?;
        for (row, layers) in &depends {
            writeln!(out, "  {row:<31} {}", layers.join(", "))?;
        }
        writeln!(
            out,
            "{} of {} control runs confirmed, {unconfirmed} unconfirmed, {} not applicable on \
             this host",
            rows.iter().filter(|r| r.confirmed()).count(),
            rows.len(),
            rows.iter().filter(|r| r.verdict == "n/a").count()
        )?;
    }
    Ok(if unconfirmed == 0 { 0 } else { 1 })
}

/// For each (row, runtime): the layers whose removal was seen to make it
/// fail.
fn depends_on(rows: &[ControlRow]) -> BTreeMap<String, Vec<&'static str>> {
    let mut map: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.must_fail && r.confirmed()) {
        map.entry(format!("{} on {}", r.row.attack, r.row.runtime.name()))
            .or_default()
            .push(r.layer.name());
    }
    map
}
