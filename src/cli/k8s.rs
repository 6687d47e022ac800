//! `rlm-sandbox k8s render` and `k8s check`: the local policy as
//! agent-sandbox manifests, and the check of a set of them
//! (docs/KUBERNETES.md).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rlm_sandbox::k8s::check::{check, objects_of};
use rlm_sandbox::k8s::render::{render, RenderOptions};
use rlm_sandbox::k8s::{image, yaml};

use super::SandboxArgs;

#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum K8sCommand {
    /// Print a SandboxTemplate and a SandboxWarmPool (agent-sandbox
    /// v1beta1) whose pod runs the session agent under gVisor with this
    /// configuration's limits and policy, and the seccomp profile file the
    /// nodes need. What a pod cannot express is printed as a warning on
    /// stderr, with the node setting that replaces it.
    Render(Box<RenderArgs>),
    /// Check a set of manifests (multi-document YAML or JSON, rendered or
    /// hand-edited) against the policy. Exits 0 when it holds, 1 with one
    /// line per violation (field, found, accepted value) when not.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// metadata.name of the template and the pool.
    #[arg(long, value_name = "NAME", default_value = RenderOptions::DEFAULT_NAME)]
    name: String,
    /// metadata.namespace (omitted: the one `kubectl apply` uses).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Warm sandboxes the pool keeps started (SandboxWarmPool replicas).
    #[arg(long, value_name = "N", default_value_t = RenderOptions::DEFAULT_POOL_SIZE)]
    pool_size: u32,
    /// The rootfs image [default: localhost/rlm-sandbox-rootfs:<first 16
    /// hex of the rootfs content id>, the name `rootfs image` gives it].
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// A RuntimeClass whose handler is runsc.
    #[arg(long, value_name = "NAME", default_value = RenderOptions::DEFAULT_RUNTIME_CLASS)]
    runtime_class: String,
    /// Write manifests.yaml and seccomp/<localhostProfile> (copy its
    /// contents to /var/lib/kubelet/seccomp/ on each node) into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "json")]
    output_dir: Option<PathBuf>,
    /// Print one JSON object: objects, seccompProfile, warnings.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The manifests: multi-document YAML, JSON, a List, or `k8s render
    /// --json` output; "-" reads stdin.
    #[arg(long, value_name = "FILE")]
    manifests: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(command: &K8sCommand) -> anyhow::Result<i32> {
    match command {
        K8sCommand::Render(args) => run_render(args),
        K8sCommand::Check(args) => run_check(args),
    }
}

fn run_render(args: &RenderArgs) -> anyhow::Result<i32> {
    let config = args.sandbox.config()?;
    let seccomp = match &config.seccomp_profile {
        Some(path) => rlm_sandbox::bundle::seccomp::load(path)?,
        None => rlm_sandbox::bundle::seccomp::default_profile(),
    };
    let image = match &args.image {
        Some(image) => image.clone(),
        None => image::default_image(config.rootfs.as_deref()).with_context(|| {
            "cannot name the rootfs image (its manifest's content id); pass --image REF"
        })?,
    };
    let options = RenderOptions {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        pool_size: args.pool_size,
        image,
        runtime_class: args.runtime_class.clone(),
    };
    let rendered = render(&config, &seccomp, &options)?;
    for warning in &rendered.warnings {
        eprintln!("{warning}");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rendered.json())?;
        writeln!(out)?;
    } else if let Some(dir) = &args.output_dir {
        let manifests = dir.join("manifests.yaml");
        let profile = dir
            .join("seccomp")
            .join(&rendered.seccomp.localhost_profile);
        if let Some(parent) = profile.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&manifests, rendered.yaml())
            .with_context(|| format!("cannot write {}", manifests.display()))?;
        std::fs::write(&profile, &rendered.seccomp.json)
            .with_context(|| format!("cannot write {}", profile.display()))?;
        writeln!(out, "{}", manifests.display())?;
        writeln!(out, "{}", profile.display())?;
    } else {
        out.write_all(rendered.yaml().as_bytes())?;
        eprintln!(
            "rlm-sandbox: k8s: the seccomp profile ({}) is not in this stream: write it with \
             --output-dir DIR or take it from --json",
            rendered.seccomp.localhost_profile
        );
    }
    Ok(0)
}

fn run_check(args: &CheckArgs) -> anyhow::Result<i32> {
    let text = if args.manifests.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the manifests from stdin")?
    } else {
        std::fs::read_to_string(&args.manifests)
            .with_context(|| format!("cannot read {}", args.manifests.display()))?
    };
    let documents = yaml::parse_stream(&text)
        .with_context(|| format!("{} is not a set of manifests", args.manifests.display()))?;
    let report = check(&objects_of(documents));
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for error in &report.errors {
            eprintln!("rlm-sandbox: k8s check: {error}");
        }
        if report.ok {
            eprintln!(
                "rlm-sandbox: k8s check: {} objects hold the policy",
                report.objects.len()
            );
        }
    }
    Ok(if report.ok { 0 } else { 1 })
}
