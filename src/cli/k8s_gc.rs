//! `gc --k8s`: deletes the SandboxClaims whose orchestrator is gone (a
//! `session --k8s-claim` killed before it could delete its claim). The
//! selection is src/k8s/leftovers.rs; this lists with kubectl, prints
//! each verdict and runs the deletes (none with `--dry-run`).

use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use rlm_sandbox::k8s::claim::{boot_id, shell_words, start_time};
use rlm_sandbox::k8s::claim_run::run_step_limited;
use rlm_sandbox::k8s::leftovers::{
    delete_command, list_command, local_host, parse_age, parse_list, select, Local, MAX_LIST_BYTES,
};
use serde_json::json;

#[derive(Debug, Args)]
pub struct K8sGcArgs {
    /// Instead of local runs: delete the SandboxClaims of `session
    /// --k8s-claim` whose orchestrator is gone (on this host: its pid ended
    /// or names another process now; on other hosts: see --older-than)
    #[arg(long)]
    pub k8s: bool,
    /// Only this namespace (omitted: all namespaces)
    #[arg(long, value_name = "NS", requires = "k8s")]
    pub namespace: Option<String>,
    /// Also delete claims made on other hosts at least this old (`90m`,
    /// `2h`, `1d`): this host cannot see their processes
    #[arg(long, value_name = "AGE", requires = "k8s", value_parser = parse_age)]
    pub older_than: Option<u64>,
    /// List and decide, print the delete commands, delete nothing
    #[arg(long, requires = "k8s")]
    pub dry_run: bool,
    /// The kubectl binary
    #[arg(long, value_name = "PATH", default_value = "kubectl", requires = "k8s")]
    pub kubectl: String,
}

pub fn run(args: &K8sGcArgs, as_json: bool) -> anyhow::Result<i32> {
    let cancel = AtomicBool::new(false);
    let list = list_command(&args.kubectl, args.namespace.as_deref());
    if args.dry_run && !as_json {
        println!("list: {}", shell_words(&list));
    }
    let text = run_step_limited(&list, None, &cancel, MAX_LIST_BYTES)
        .map_err(|e| anyhow::anyhow!("listing the claims: {e}"))?;
    let items = parse_list(&text).map_err(|e| anyhow::anyhow!("{}: {e}", shell_words(&list)))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let local = Local {
        host: local_host(),
        boot_id: boot_id(),
        start_of: &start_time,
        now,
        older_than: args.older_than,
    };
    let verdicts = select(&items, &local);
    let mut errors = Vec::new();
    let mut report = Vec::new();
    for v in &verdicts {
        let delete = v.delete.then(|| delete_command(&args.kubectl, v));
        let mut outcome = if v.delete { "deleted" } else { "kept" };
        if let Some(argv) = &delete {
            if args.dry_run {
                outcome = "would delete";
            } else if let Err(e) = run_step_limited(argv, None, &cancel, 64 << 10) {
                outcome = "not deleted";
                errors.push(e);
            }
        }
        if !as_json {
            println!("{outcome:<12} {}/{}: {}", v.namespace, v.name, v.why);
            if let (true, Some(argv)) = (args.dry_run, &delete) {
                println!("  {}", shell_words(argv));
            }
        }
        report.push(json!({
            "namespace": v.namespace,
            "name": v.name,
            "outcome": outcome,
            "why": v.why,
            "command": delete,
        }));
    }
    if as_json {
        println!(
            "{}",
            json!({"list": list, "dry_run": args.dry_run, "claims": report, "errors": errors})
        );
    } else {
        let chosen = verdicts.iter().filter(|v| v.delete).count();
        println!(
            "{} claims of rlm-sandbox, {} {}, {} kept",
            verdicts.len(),
            chosen,
            if args.dry_run { "to delete" } else { "deleted" },
            verdicts.len() - chosen,
        );
        for e in &errors {
            eprintln!("rlm-sandbox: gc --k8s: {e}");
        }
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}
