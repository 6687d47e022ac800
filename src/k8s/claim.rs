//! The claim path as data: `session --k8s-claim POOL` creates a
//! SandboxClaim (agent-sandbox v1beta1) on a warm pool rendered by
//! `k8s render`, waits for it, finds the pod it bound, runs the session's
//! agent in that pod over `kubectl exec -i`, and deletes the claim when
//! the session ends. [`plan`] returns every API object and command of
//! that path; `--dry-run` prints it and [`super::claim_run`] runs it,
//! step for step, so what is printed is what runs.
//!
//! Facts from the v0.5.6 CRDs (tests/fixtures/k8s/agent-sandbox-v0.5.6/):
//! a v1beta1 claim needs only `spec.warmPoolRef.name`; it is ready when
//! `status.conditions[type=Ready].status` is `True`, and
//! `status.sandbox.name` names the Sandbox it bound. The Sandbox's pod is
//! named by its annotation `agents.x-k8s.io/pod-name` when it adopted a
//! warm pool's pod, else it has the Sandbox's own name (the controller's
//! `resolvePodName`). The claim sets no `env` (a claim with env vars
//! cold-starts, and env is refused by the template anyway) and no pod
//! metadata.

use serde::Serialize;
use serde_json::{json, Value};

use super::render::is_dns_label;
use super::{CONTAINER_NAME, EXTENSIONS_API_VERSION};
use crate::bundle::spec::agent_args;

/// The resource of SandboxClaims, fully qualified (no short-name clash).
pub const CLAIMS: &str = "sandboxclaims.extensions.agents.x-k8s.io";
/// The resource of Sandboxes.
pub const SANDBOXES: &str = "sandboxes.agents.x-k8s.io";
/// The annotation naming an adopted warm-pool pod on its Sandbox.
pub const POD_NAME_ANNOTATION: &str = "agents.x-k8s.io/pod-name";
/// The label every claim of ours carries: `created-by=rlm-sandbox`.
pub const CREATED_BY: (&str, &str) = ("created-by", "rlm-sandbox");
/// Labels naming the orchestrator that made a claim.
pub const HOST_LABEL: &str = "rlm-sandbox/host";
pub const PID_LABEL: &str = "rlm-sandbox/pid";
/// The pid's start time (clock ticks after boot): a reused pid has another.
pub const PID_START_LABEL: &str = "rlm-sandbox/pid-start";
/// The host's boot id: a pid of another boot is gone.
pub const BOOT_ID_LABEL: &str = "rlm-sandbox/boot-id";
pub const CLAIM_ID_LABEL: &str = "rlm-sandbox/claim-id";
/// In the `pod` step: replaced by the Sandbox name the claim bound.
pub const SANDBOX_PLACEHOLDER: &str = "{sandbox}";
/// In the `agent` step: replaced by the pod's name.
pub const POD_PLACEHOLDER: &str = "{pod}";
/// How long `kubectl wait` waits for the claim to be Ready.
pub const DEFAULT_WAIT_SECONDS: u32 = 300;

/// Who claims, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOptions {
    /// The SandboxWarmPool (`k8s render --name`).
    pub pool: String,
    /// Namespace (None: kubectl's current one).
    pub namespace: Option<String>,
    /// The kubectl binary.
    pub kubectl: String,
    /// This host's name (made a label value by [`label_value`]).
    pub host: String,
    /// This orchestrator's pid.
    pub pid: u32,
    /// Its start time ([`start_time`]; 0 when unreadable).
    pub pid_start: u64,
    /// This boot's id ([`boot_id`], made a label value).
    pub boot_id: String,
    /// 16 lower-case hex digits, random per session ([`random_claim_id`]).
    pub claim_id: String,
    /// `kubectl wait --timeout`.
    pub wait_seconds: u32,
}

/// One command of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// create | wait | sandbox | pod | agent | delete.
    pub step: &'static str,
    pub argv: Vec<String>,
    /// What is written to its stdin (`create`: the claim as JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// What the step's output means, or when it runs.
    pub note: &'static str,
}

/// The claim path, as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimPlan {
    /// The SandboxClaim object.
    pub claim: Value,
    /// metadata.name of the claim.
    pub name: String,
    /// create, wait, sandbox, pod, agent, delete, in that order.
    pub steps: Vec<Step>,
    /// What lists the claims this host left (after a SIGKILL of the
    /// orchestrator): their `rlm-sandbox/pid` label says which process
    /// made each.
    pub leftovers: Vec<String>,
}

/// A bad claim option, naming the value and the accepted form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {value:?} is invalid; expected {accepted}")]
pub struct ClaimError {
    pub what: &'static str,
    pub value: String,
    pub accepted: &'static str,
}

const LABEL: &str = "a DNS-1123 label: 1-63 lower-case letters, digits and '-', \
                     starting and ending with a letter or digit";

/// The plan of a claim on `o.pool`.
pub fn plan(o: &ClaimOptions) -> Result<ClaimPlan, ClaimError> {
    let invalid = |what, value: &str, accepted| ClaimError {
        what,
        value: value.to_string(),
        accepted,
    };
    if !is_dns_label(&o.pool) {
        return Err(invalid("warm pool", &o.pool, LABEL));
    }
    if let Some(ns) = &o.namespace {
        if !is_dns_label(ns) {
            return Err(invalid("namespace", ns, LABEL));
        }
    }
    if o.claim_id.len() != 16 || !o.claim_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("claim id", &o.claim_id, "16 hex digits"));
    }
    if o.kubectl.is_empty() || o.kubectl.contains('\0') {
        return Err(invalid("kubectl", &o.kubectl, "a program name or path"));
    }
    let claim_id = o.claim_id.to_ascii_lowercase();
    let name = format!("rlm-{claim_id}");
    let host = label_value(&o.host);
    let mut metadata = json!({
        "name": name,
        "labels": {
            CREATED_BY.0: CREATED_BY.1,
            HOST_LABEL: host,
            PID_LABEL: o.pid.to_string(),
            PID_START_LABEL: o.pid_start.to_string(),
            BOOT_ID_LABEL: label_value(&o.boot_id),
            CLAIM_ID_LABEL: claim_id,
        },
    });
    if let Some(ns) = &o.namespace {
        metadata["namespace"] = json!(ns);
    }
    let claim = json!({
        "apiVersion": EXTENSIONS_API_VERSION,
        "kind": "SandboxClaim",
        "metadata": metadata,
        "spec": {"warmPoolRef": {"name": o.pool}},
    });
    let kubectl = |verb: &str, rest: &[&str]| -> Vec<String> {
        let mut argv = vec![o.kubectl.clone(), verb.to_string()];
        if let Some(ns) = &o.namespace {
            argv.extend(["-n".to_string(), ns.clone()]);
        }
        argv.extend(rest.iter().map(|s| s.to_string()));
        argv
    };
    let claim_ref = format!("{CLAIMS}/{name}");
    let mut agent = kubectl("exec", &["-i", POD_PLACEHOLDER, "-c", CONTAINER_NAME, "--"]);
    agent.extend(agent_args());
    let steps = vec![
        Step {
            step: "create",
            argv: kubectl("create", &["-f", "-", "-o", "name"]),
            stdin: Some(serde_json::to_string(&claim).expect("JSON")),
            note: "creates the claim (stdin: the claim)",
        },
        Step {
            step: "wait",
            argv: kubectl(
                "wait",
                &[
                    "--for=condition=Ready",
                    &format!("--timeout={}s", o.wait_seconds),
                    &claim_ref,
                ],
            ),
            stdin: None,
            note: "until status.conditions[type=Ready] is True",
        },
        Step {
            step: "sandbox",
            argv: kubectl(
                "get",
                &[&claim_ref, "-o", "jsonpath={.status.sandbox.name}"],
            ),
            stdin: None,
            note: "prints the bound Sandbox's name ({sandbox})",
        },
        Step {
            step: "pod",
            argv: kubectl(
                "get",
                &[
                    &format!("{SANDBOXES}/{SANDBOX_PLACEHOLDER}"),
                    "-o",
                    &format!(
                        "jsonpath={{.metadata.annotations.{}}}",
                        POD_NAME_ANNOTATION.replace('.', "\\.")
                    ),
                ],
            ),
            stdin: None,
            note: "prints the adopted pod's name ({pod}); empty: the pod is named {sandbox}",
        },
        Step {
            step: "agent",
            argv: agent,
            stdin: None,
            note: "the session's agent command (its stdin and stdout carry the frames)",
        },
        Step {
            step: "delete",
            argv: kubectl(
                "delete",
                &[&claim_ref, "--ignore-not-found", "--wait=false"],
            ),
            stdin: None,
            note:
                "when the session ends (close, end of stdin, SIGTERM/SIGINT/SIGHUP, a failed step)",
        },
    ];
    let mut leftovers = vec![o.kubectl.clone(), "get".to_string(), CLAIMS.to_string()];
    match &o.namespace {
        Some(ns) => leftovers.extend(["-n".to_string(), ns.clone()]),
        None => leftovers.push("--all-namespaces".to_string()),
    }
    leftovers.extend([
        "-l".to_string(),
        format!("{}={},{HOST_LABEL}={host}", CREATED_BY.0, CREATED_BY.1),
        "-L".to_string(),
        PID_LABEL.to_string(),
    ]);
    Ok(ClaimPlan {
        claim,
        name,
        steps,
        leftovers,
    })
}

impl ClaimPlan {
    /// The step named `name` (every plan has all six).
    pub fn step(&self, name: &str) -> &Step {
        self.steps
            .iter()
            .find(|s| s.step == name)
            .expect("a step of the plan")
    }

    /// `--dry-run --json`.
    pub fn json(&self) -> Value {
        json!({
            "claim": self.claim,
            "name": self.name,
            "steps": self.steps,
            "placeholders": {
                SANDBOX_PLACEHOLDER: "the output of the sandbox step",
                POD_PLACEHOLDER: "the output of the pod step, or {sandbox} when it is empty",
            },
            "leftovers": self.leftovers,
        })
    }

    /// `--dry-run`: the claim as a YAML document (`| kubectl create -f -`
    /// reads it) with the steps as comments, in shell words.
    pub fn text(&self) -> String {
        let mut out = String::from("# rlm-sandbox session --k8s-claim: the plan\n");
        for step in &self.steps {
            out.push_str(&format!("# {}: {}\n", step.step, shell_words(&step.argv)));
            out.push_str(&format!("#   {}\n", step.note));
        }
        out.push_str(&format!(
            "# leftovers of a killed orchestrator: {}\n",
            shell_words(&self.leftovers)
        ));
        out.push_str("#   `rlm-sandbox gc --k8s` deletes those whose orchestrator is gone\n");
        out.push_str(&super::yaml::to_stream(std::slice::from_ref(&self.claim)));
        out
    }
}

/// `argv` with `placeholder` replaced by `value` (a resource name checked
/// by [`resource_name`] first).
pub fn substitute(argv: &[String], placeholder: &str, value: &str) -> Vec<String> {
    argv.iter().map(|a| a.replace(placeholder, value)).collect()
}

/// A name read back from the cluster (the Sandbox's, the pod's), taken
/// only as a DNS-1123 subdomain: it goes into a command line.
pub fn resource_name(what: &'static str, text: &str) -> Result<String, ClaimError> {
    let name = text.trim();
    let ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label);
    if !ok {
        return Err(ClaimError {
            what,
            value: name.chars().take(300).collect(),
            accepted: "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', \
                       at most 253)",
        });
    }
    Ok(name.to_string())
}

/// `s` as a label value: lower-case, characters outside `[a-z0-9-.]` as
/// `-`, at most 63, starting and ending with a letter or digit; `unknown`
/// when nothing is left.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unknown".to_string()
    } else {
        trimmed.to_string()
    }
}

/// 16 hex digits from /dev/urandom.
pub fn random_claim_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// This boot's id (the kernel's random one, 36 characters), for the
/// boot-id label; empty when unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The start time of process `pid` in clock ticks after boot
/// (`/proc/PID/stat` field 22); None when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This host's name (the kernel's), for the host label.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `argv` as one shell command line: each word single-quoted unless it
/// holds only characters no shell treats specially.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
