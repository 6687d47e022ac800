//! `rlm-sandbox check`.

use clap::Args;
use rlm_sandbox::check::{posture, Posture};
use rlm_sandbox::runtime::gvisor::PlatformSource;

use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the posture as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<i32> {
    let config = args.sandbox.config()?;
    let p = posture(&config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print_table(&p);
    }
    Ok(if p.problems.is_empty() { 0 } else { 1 })
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn print_table(p: &Posture) {
    let mut rows: Vec<(String, String)> = vec![
        ("preset".into(), p.preset.into()),
        ("mode".into(), format!("{:?}", p.mode).to_lowercase()),
        ("root".into(), yes(p.root).into()),
    ];
    for r in &p.runtimes {
        let found = match (&r.path, &r.version) {
            (Some(path), Some(v)) => format!("{path} ({v})"),
            (Some(path), None) => format!("{path} (version unknown)"),
            _ => "not found".into(),
        };
        rows.push((r.name.name().into(), found));
        if let Some(pl) = &r.platform {
            let why = match pl.source {
                PlatformSource::Flags => "from RLM_RUNSC_FLAGS",
                PlatformSource::RunscDefault => "runsc's default",
            };
            rows.push(("runsc platform".into(), format!("{} ({why})", pl.name)));
        }
    }
    rows.push((
        "a run uses".into(),
        match p.would_use {
            Some(k) if p.fallback => format!("{} (FALLBACK: shares the host kernel)", k.name()),
            Some(k) => k.name().into(),
            None => "nothing: no usable runtime".into(),
        },
    ));
    rows.push((
        "cgroups".into(),
        p.cgroup_mode.unwrap_or("unavailable").into(),
    ));
    if let Some(e) = &p.enforced {
        let l = &p.limits;
        rows.push((
            "memory limit".into(),
            format!("{} ({} MiB)", yes(e.memory), l.memory_bytes >> 20),
        ));
        rows.push((
            "no swap".into(),
            e.no_swap.map_or("unknown".into(), |b| yes(b).to_string()),
        ));
        rows.push(("pids limit".into(), format!("{} ({})", yes(e.pids), l.pids)));
        rows.push((
            "cpu quota".into(),
            format!("{} ({} cores)", yes(e.cpu), l.cpus),
        ));
        rows.push(("oom detection".into(), yes(e.oom_detection).into()));
    }
    rows.push((
        "timeout".into(),
        format!("{} s", p.limits.timeout.as_secs_f64()),
    ));
    rows.push(("network".into(), p.network.into()));
    rows.push(("seccomp (kernel)".into(), yes(p.seccomp_kernel).into()));
    rows.push(("seccomp profile".into(), p.seccomp_profile.clone()));
    rows.push((
        "rootfs".into(),
        format!(
            "{} ({})",
            p.rootfs.path,
            if p.rootfs.present {
                "present"
            } else {
                "missing"
            }
        ),
    ));
    if let Some(m) = &p.rootfs.manifest {
        rows.push((
            "rootfs manifest".into(),
            format!(
                "Python {}, {} packages from {}, tree sha256 {}…",
                m.python_version,
                m.packages.len(),
                m.distribution,
                m.tree_sha256.get(..16).unwrap_or(&m.tree_sha256)
            ),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:width$}  {v}");
    }
    for w in &p.warnings {
        println!("warning: {w}");
    }
    for problem in &p.problems {
        println!("PROBLEM: {problem}");
    }
    println!(
        "{}",
        if p.problems.is_empty() {
            "policy can be met"
        } else {
            "policy CANNOT be met"
        }
    );
}
