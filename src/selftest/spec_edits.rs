//! The test-only edits of a sandbox's config.json that remove one layer
//! of the threat model each (the negative controls of [`super::layers`]).
//! Only `selftest` applies them, through `Sandbox::spec_edit`.

use std::path::Path;

use serde_json::{json, Value};

pub(super) fn remove(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
}

pub(super) fn drop_namespace(s: &mut Value, typ: &str) {
    if let Some(ns) = s["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != typ);
    }
}

pub(super) fn tmp_options(s: &mut Value, keep: impl Fn(&str) -> bool) {
    for m in s["mounts"].as_array_mut().into_iter().flatten() {
        if m["destination"] == "/tmp" {
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| o.as_str().is_some_and(&keep));
            }
        }
    }
}

/// `defaultAction` SCMP_ACT_ALLOW and no rules: the profile allows all.
pub(super) fn allow_all_seccomp(s: &mut Value, _: &Path) -> std::io::Result<()> {
    let arches = s["linux"]["seccomp"]["architectures"].clone();
    s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": arches});
    Ok(())
}

/// Docker's default capability set, in all five sets (ambient too, so the
/// non-root process keeps them across its exec).
pub(super) fn keep_capabilities(s: &mut Value, _: &Path) -> std::io::Result<()> {
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        s["process"]["capabilities"][set] = caps.clone();
    }
    Ok(())
}

/// uid and gid 0 (still without capabilities).
pub(super) fn run_as_root(s: &mut Value, _: &Path) -> std::io::Result<()> {
    s["process"]["user"]["uid"] = json!(0);
    s["process"]["user"]["gid"] = json!(0);
    Ok(())
}

/// No pids cgroup limit, and (runsc) no RLIMIT_NPROC, the guest's limit.
pub(super) fn no_pids_limit(s: &mut Value, _: &Path) -> std::io::Result<()> {
    remove(&mut s["linux"]["resources"], "pids");
    if let Some(r) = s["process"]["rlimits"].as_array_mut() {
        r.retain(|l| l["type"] != "RLIMIT_NPROC");
    }
    Ok(())
}

/// Where the rootfs installs the interpreter's hook (rootfs-builder), and
/// its bytecode: compiled unchecked-hash (rootfs-builder/src/compile.rs),
/// so CPython loads the .pyc without looking at the source at all.
const SITECUSTOMIZE: [&str; 2] = [
    "/usr/lib/python3.11/sitecustomize.py",
    "/usr/lib/python3.11/__pycache__/sitecustomize.cpython-311.pyc",
];

/// An empty file mounted over the rootfs's sitecustomize.py and over its
/// bytecode (an empty .pyc is not valid bytecode: CPython falls back to
/// the source, which is empty): the audit hook and the import blocker are
/// never installed (the removed modules stay removed; the rootfs is not
/// rebuilt).
pub(super) fn unblock_interpreter(s: &mut Value, input_dir: &Path) -> std::io::Result<()> {
    let empty = input_dir.join("control-empty-sitecustomize.py");
    std::fs::write(&empty, b"")?;
    crate::supervise::guard::share_with_sandbox(&empty, 0o644)?;
    for destination in SITECUSTOMIZE {
        let mount = json!({
            "destination": destination,
            "type": "bind",
            "source": empty,
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
        });
        if let Some(m) = s["mounts"].as_array_mut() {
            m.push(mount);
        }
    }
    Ok(())
}
