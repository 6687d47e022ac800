//! `session --k8s-claim POOL`: the session's agent in a pod claimed from
//! an agent-sandbox warm pool (src/k8s/claim.rs is the plan,
//! src/k8s/claim_run.rs runs it; docs/KUBERNETES.md, "The claim path").

use std::io::Write;
use std::sync::atomic::AtomicBool;

use clap::Args;
use rlm_sandbox::k8s::claim::{
    boot_id, host_name, plan, random_claim_id, start_time, ClaimOptions, ClaimPlan,
    DEFAULT_WAIT_SECONDS,
};
use rlm_sandbox::k8s::claim_run::{claim, Claimed};

#[derive(Debug, Args)]
pub struct K8sClaimArgs {
    /// Run the agent in a pod claimed from this SandboxWarmPool (`k8s
    /// render --name`): create a SandboxClaim, wait until it is Ready,
    /// `kubectl exec -i` the agent in its pod, delete the claim when the
    /// session ends
    #[arg(long, value_name = "POOL", conflicts_with_all = ["standby", "agent_command"])]
    pub k8s_claim: Option<String>,
    /// The claim's namespace (omitted: kubectl's current one)
    #[arg(long, value_name = "NS", requires = "k8s_claim")]
    pub namespace: Option<String>,
    /// The kubectl binary
    #[arg(
        long,
        value_name = "PATH",
        default_value = "kubectl",
        requires = "k8s_claim"
    )]
    pub kubectl: String,
    /// Seconds to wait for the claim to be Ready
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WAIT_SECONDS, requires = "k8s_claim")]
    pub claim_timeout: u32,
    /// Print the claim and the kubectl commands the session would run, and
    /// run nothing
    #[arg(long, requires = "k8s_claim")]
    pub dry_run: bool,
    /// With --dry-run: the plan as one JSON object
    #[arg(long, requires = "dry_run")]
    pub json: bool,
}

impl K8sClaimArgs {
    /// The plan of this session's claim (a fresh claim id).
    fn plan(&self) -> anyhow::Result<ClaimPlan> {
        let pool = self.k8s_claim.clone().unwrap_or_default();
        Ok(plan(&ClaimOptions {
            pool,
            namespace: self.namespace.clone(),
            kubectl: self.kubectl.clone(),
            host: host_name(),
            pid: std::process::id(),
            pid_start: start_time(std::process::id()).unwrap_or(0),
            boot_id: boot_id(),
            claim_id: random_claim_id()?,
            wait_seconds: self.claim_timeout,
        })?)
    }

    /// `--dry-run`: the plan on stdout.
    pub fn print_plan(&self) -> anyhow::Result<i32> {
        let plan = self.plan()?;
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, &plan.json())?;
            writeln!(out)?;
        } else {
            out.write_all(plan.text().as_bytes())?;
        }
        Ok(0)
    }

    /// Creates the claim and finds its pod (deleted when the result is
    /// dropped).
    pub fn claim(&self, cancel: &AtomicBool) -> anyhow::Result<Claimed> {
        let plan = self.plan()?;
        claim(&plan, cancel, &mut |line| {
            eprintln!("rlm-sandbox: k8s: {line}")
        })
        .map_err(anyhow::Error::msg)
    }
}
