//! Runs a [`ClaimPlan`] with kubectl: create, wait, read the names, and
//! delete the claim when dropped. Each command is a step of the plan as
//! `--dry-run` prints it; nothing here adds to it but the placeholders'
//! values. Not tested against a live controller (docs/KUBERNETES.md).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::claim::{
    resource_name, shell_words, substitute, ClaimPlan, POD_PLACEHOLDER, SANDBOX_PLACEHOLDER,
};

/// The most of a kubectl step's stdout or stderr kept.
const MAX_STEP_OUTPUT: u64 = 64 << 10;
/// How often a running step looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// A created claim: deleted (the `delete` step) when dropped.
pub struct Claimed {
    plan: ClaimPlan,
    /// `kubectl exec -i ... POD ...` as one shell command line.
    pub agent_command: String,
    /// The pod the claim bound.
    pub pod: String,
    deleted: bool,
}

/// Creates the claim of `plan`, waits for it and finds its pod; on any
/// failure, or when `cancel` is set (a signal), deletes the claim and
/// says which step failed. `progress` gets one line per step.
pub fn claim(
    plan: &ClaimPlan,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&str),
) -> Result<Claimed, String> {
    let create = plan.step("create");
    progress(&format!("creating SandboxClaim {}", plan.name));
    run_step(&create.argv, create.stdin.as_deref(), cancel)?;
    // From here the claim exists: dropping `claimed` deletes it.
    let mut claimed = Claimed {
        plan: plan.clone(),
        agent_command: String::new(),
        pod: String::new(),
        deleted: false,
    };
    progress(&format!(
        "waiting for SandboxClaim {} to be Ready",
        plan.name
    ));
    run_step(&plan.step("wait").argv, None, cancel)?;
    let sandbox = resource_name(
        "the claim's status.sandbox.name",
        &run_step(&plan.step("sandbox").argv, None, cancel)?,
    )
    .map_err(|e| e.to_string())?;
    let pod_argv = substitute(&plan.step("pod").argv, SANDBOX_PLACEHOLDER, &sandbox);
    let annotated = run_step(&pod_argv, None, cancel)?;
    let pod = if annotated.trim().is_empty() {
        sandbox
    } else {
        resource_name("the Sandbox's pod-name annotation", &annotated).map_err(|e| e.to_string())?
    };
    let agent = substitute(&plan.step("agent").argv, POD_PLACEHOLDER, &pod);
    progress(&format!("claimed pod {pod}"));
    claimed.agent_command = shell_words(&agent);
    claimed.pod = pod;
    Ok(claimed)
}

impl Claimed {
    /// The `delete` step, once.
    pub fn delete(&mut self) -> Result<(), String> {
        if std::mem::replace(&mut self.deleted, true) {
            return Ok(());
        }
        // Not cancellable: the signal that ends the session is why it runs.
        run_step(
            &self.plan.step("delete").argv,
            None,
            &AtomicBool::new(false),
        )
        .map(|_| ())
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            eprintln!(
                "rlm-sandbox: k8s: the claim {} was not deleted ({err}); list what is left with: {} \
                 (`rlm-sandbox gc --k8s` deletes it once this process has ended)",
                self.plan.name,
                shell_words(&self.plan.leftovers)
            );
        }
    }
}

/// Runs `argv` (stdin: `input`), its stdout on success; the command line
/// and the end of its stderr on failure. Killed when `cancel` is set.
fn run_step(argv: &[String], input: Option<&str>, cancel: &AtomicBool) -> Result<String, String> {
    run_step_limited(argv, input, cancel, MAX_STEP_OUTPUT)
}

/// [`run_step`] keeping at most `limit` bytes of stdout: more is an error
/// (`gc --k8s` reads a claim list, larger than any step's output).
pub fn run_step_limited(
    argv: &[String],
    input: Option<&str>,
    cancel: &AtomicBool,
    limit: u64,
) -> Result<String, String> {
    let line = shell_words(argv);
    if cancel.load(Ordering::SeqCst) {
        return Err(format!("interrupted before {line}"));
    }
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {line}: {e}"))?;
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), input) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write to {line}: {e}"))?;
    }
    let read = |pipe: Option<Box<dyn Read + Send>>, limit: u64| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = pipe {
                let mut pipe = pipe.take(limit);
                let _ = pipe.read_to_end(&mut text);
                // Drain the rest so the child never blocks on a full pipe.
                let _ = std::io::copy(pipe.get_mut(), &mut std::io::sink());
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        limit.saturating_add(1),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        MAX_STEP_OUTPUT,
    );
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if cancel.load(Ordering::SeqCst) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("interrupted during {line}"));
            }
            Ok(None) => std::thread::sleep(CANCEL_POLL),
            Err(e) => return Err(format!("cannot wait for {line}: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("{line} failed ({status}): {last}"));
    }
    if out.len() as u64 > limit {
        return Err(format!("{line} wrote more than {limit} bytes"));
    }
    Ok(out)
}
