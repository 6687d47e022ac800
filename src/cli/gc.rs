//! `rlm-sandbox gc`: local leftovers (src/gc.rs), or with `--k8s` the
//! SandboxClaims of killed orchestrators (src/cli/k8s_gc.rs).

use clap::Args;
use rlm_sandbox::cgroup::CgroupLayout;

use super::k8s_gc::{self, K8sGcArgs};
use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    k8s: K8sGcArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: &GcArgs) -> anyhow::Result<i32> {
    if args.k8s.k8s {
        return k8s_gc::run(&args.k8s, args.json);
    }
    let config = args.sandbox.config()?;
    let layout = CgroupLayout::detect()?;
    let report = rlm_sandbox::gc::collect(&config.state_dir, &layout);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for id in &report.removed {
            println!("removed {id}");
        }
        for id in &report.in_use {
            println!("in use  {id} (a live driver holds it)");
        }
        println!(
            "{} removed, {} in use, {} processes killed",
            report.removed.len(),
            report.in_use.len(),
            report.killed_processes
        );
        for e in &report.errors {
            eprintln!("rlm-sandbox: gc: {e}");
        }
    }
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}
