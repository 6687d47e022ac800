//! `gc --k8s`: which SandboxClaims a killed orchestrator left, as pure
//! functions of the claim list (`kubectl get sandboxclaims -o json`) and
//! of what this host can tell about its own processes.
//!
//! A claim of ours carries `created-by=rlm-sandbox` and labels naming its
//! orchestrator (src/k8s/claim.rs): host, boot id, pid and the pid's start
//! time (clock ticks after boot, `/proc/PID/stat` field 22). On this host
//! a claim is left over when its orchestrator is gone: another boot, no
//! such pid, or the pid now names another process (another start time).
//! A claim from another host cannot be judged from here: it is left over
//! only with `--older-than`, by its `metadata.creationTimestamp`. Claims
//! without our label are never listed; ours with a label this code cannot
//! read are kept and said so.

use serde::Serialize;
use serde_json::Value;

use super::claim::{
    label_value, BOOT_ID_LABEL, CLAIMS, CREATED_BY, HOST_LABEL, PID_LABEL, PID_START_LABEL,
};
use super::render::is_dns_label;

/// The most of `kubectl get -o json`'s output read.
pub const MAX_LIST_BYTES: u64 = 64 << 20;

/// What this host knows about itself.
pub struct Local<'a> {
    /// [`label_value`] of this host's name.
    pub host: String,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The start time of a live process `pid`; None when there is none.
    pub start_of: &'a dyn Fn(u32) -> Option<u64>,
    /// Now, in seconds since the epoch.
    pub now: u64,
    /// `--older-than`, in seconds: claims of other hosts at least this old
    /// are left over; None: they are kept.
    pub older_than: Option<u64>,
}

/// What gc decided about one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub namespace: String,
    pub name: String,
    /// Whether gc deletes it.
    pub delete: bool,
    /// Why, in words.
    pub why: String,
}

/// Reads the claim list; an error names what is wrong with it.
pub fn parse_list(text: &str) -> Result<Vec<Value>, String> {
    let list: Value =
        serde_json::from_str(text).map_err(|e| format!("the claim list is not JSON: {e}"))?;
    match list.get("items").and_then(Value::as_array) {
        Some(items) => Ok(items.clone()),
        None => Err(
            "the claim list has no `items` array (expected `kubectl get -o json` of \
                     a resource type)"
                .to_string(),
        ),
    }
}

/// The verdict on every claim of ours in `items` (others are skipped).
pub fn select(items: &[Value], local: &Local) -> Vec<Verdict> {
    items.iter().filter_map(|c| judge(c, local)).collect()
}

fn judge(claim: &Value, local: &Local) -> Option<Verdict> {
    let meta = claim.get("metadata")?;
    let label = |key: &str| {
        meta.get("labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
    };
    if label(CREATED_BY.0) != Some(CREATED_BY.1) {
        return None;
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    let verdict = |delete: bool, why: String| Verdict {
        namespace: namespace.to_string(),
        name: name.to_string(),
        delete,
        why,
    };
    // The name and namespace go into a command line.
    if !is_dns_label(name) || !is_dns_label(namespace) {
        let why = "its name or namespace is not a DNS-1123 label".to_string();
        return Some(verdict(false, why));
    }
    if label(HOST_LABEL) == Some(local.host.as_str()) {
        return Some(judge_local(label, local, verdict));
    }
    let host = label(HOST_LABEL).unwrap_or("(none)");
    let age = meta
        .get("creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
        .map(|created| local.now.saturating_sub(created));
    Some(match (local.older_than, age) {
        (None, _) => verdict(
            false,
            format!("made on host {host}, whose processes this host cannot see (--older-than)"),
        ),
        (Some(_), None) => verdict(
            false,
            format!("made on host {host}, with no readable creationTimestamp"),
        ),
        (Some(bound), Some(age)) if age >= bound => verdict(
            true,
            format!("made on host {host} {age} s ago (--older-than {bound} s)"),
        ),
        (Some(bound), Some(age)) => verdict(
            false,
            format!("made on host {host} {age} s ago, younger than {bound} s"),
        ),
    })
}

/// A claim of this host: left over when its orchestrator is gone.
fn judge_local<'v>(
    label: impl Fn(&str) -> Option<&'v str>,
    local: &Local,
    verdict: impl Fn(bool, String) -> Verdict,
) -> Verdict {
    let Some(pid) = label(PID_LABEL).and_then(|p| p.parse::<u32>().ok()) else {
        return verdict(false, "no readable pid label".to_string());
    };
    if let Some(boot) = label(BOOT_ID_LABEL) {
        if boot != local.boot_id {
            return verdict(true, format!("made by pid {pid} during another boot"));
        }
    }
    let Some(start) = (local.start_of)(pid) else {
        return verdict(true, format!("its orchestrator (pid {pid}) is gone"));
    };
    match label(PID_START_LABEL).map(str::parse::<u64>) {
        Some(Ok(made)) if made == start => {
            verdict(false, format!("its orchestrator (pid {pid}) is running"))
        }
        Some(Ok(_)) => verdict(
            true,
            format!("its orchestrator (pid {pid}) is gone: the pid is another process now"),
        ),
        // Claims from before the start-time label: a live pid may be
        // another process, but may be ours; it is kept.
        None | Some(Err(_)) => verdict(
            false,
            format!("pid {pid} is running and the claim has no readable start time"),
        ),
    }
}

/// The kubectl command that lists our claims (`namespace` None: all).
pub fn list_command(kubectl: &str, namespace: Option<&str>) -> Vec<String> {
    let mut argv = vec![kubectl.to_string(), "get".to_string(), CLAIMS.to_string()];
    match namespace {
        Some(ns) => argv.extend(["-n".to_string(), ns.to_string()]),
        None => argv.push("--all-namespaces".to_string()),
    }
    argv.extend([
        "-l".to_string(),
        format!("{}={}", CREATED_BY.0, CREATED_BY.1),
        "-o".to_string(),
        "json".to_string(),
    ]);
    argv
}

/// The kubectl command that deletes the claim of `v`: the `delete` step
/// of the claim path (src/k8s/claim.rs), with its namespace.
pub fn delete_command(kubectl: &str, v: &Verdict) -> Vec<String> {
    [
        kubectl,
        "delete",
        "-n",
        &v.namespace,
        &format!("{CLAIMS}/{}", v.name),
        "--ignore-not-found",
        "--wait=false",
    ]
    .map(str::to_string)
    .to_vec()
}

/// This host's name as the host label holds it.
pub fn local_host() -> String {
    label_value(&super::claim::host_name())
}

/// `YYYY-MM-DDTHH:MM:SSZ` (how the API server writes metav1.Time; a
/// fraction of a second is accepted and dropped) as seconds since the
/// epoch; None for any other form.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && *b.last()? == b'Z';
    if !shape {
        return None;
    }
    if b.len() > 20 && (b[19] != b'.' || !b[20..b.len() - 1].iter().all(u8::is_ascii_digit)) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days from 1970-01-01 to y-m-d (proleptic Gregorian; y >= 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `30s`, `90m`, `2h`, `7d` as seconds.
pub fn parse_age(s: &str) -> Result<u64, String> {
    let err = || {
        format!(
            "age {s:?} is invalid; expected a whole number with a unit: s, m, h or d \
             (`90m`, `2h`)"
        )
    };
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(err)
}

#[cfg(test)]
#[path = "leftovers_tests.rs"]
mod tests;
