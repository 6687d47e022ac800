//! `rlm-sandbox bundle`: the OCI bundle a run would use, written to a
//! directory and not run: to review exactly what a sandbox gets, or to run
//! the raw runtime on it (scripts/bench does).

use std::path::PathBuf;

use clap::Args;
use rlm_sandbox::supervise::Sandbox;

use super::SandboxArgs;

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Directory to write config.json and input/main.py into (created).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Python code for input/main.py.
    #[arg(short = 'c', value_name = "CODE", default_value = "print(1)")]
    code: String,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: &BundleArgs) -> anyhow::Result<i32> {
    let config = args.sandbox.config()?;
    let egress = rlm_sandbox::egress::PendingFilter::ready(rlm_sandbox::egress::EgressFilter::new(
        Default::default(),
    )?);
    let sandbox = Sandbox::prepare(config, egress, &mut super::print_progress)?;
    let input = args.output.join("input");
    std::fs::create_dir_all(&input)?;
    // The raw runtime creates this cgroup; the rlms- prefix lets `gc` find it.
    let name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroups_path = format!("/rlm-sandbox/rlms-bundle-{name}/ctr");
    sandbox.write_bundle(
        &args.output,
        &input,
        &cgroups_path,
        rlm_sandbox::bundle::spec::Program::Python,
        args.code.as_bytes(),
        None,
    )?;
    println!("{}", args.output.join("config.json").display());
    Ok(0)
}
