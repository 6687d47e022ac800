//! A pool's key: everything that shapes a sandbox, as the sha256 of a
//! canonical JSON. Two sandboxes with one key are interchangeable; what a
//! claim brings (contexts, tools, call limits) is not part of it.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::runtime::Selection;
use crate::supervise::Sandbox;

/// The key of one configuration (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey(String);

impl PoolKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of `sandbox`, or `None` when it must not be pooled: a
    /// test-only spec edit, an egress filter or a rootfs of unknown
    /// content (its manifest unreadable).
    pub fn of(sandbox: &Sandbox) -> Option<PoolKey> {
        if sandbox.spec_edit.is_some() {
            return None;
        }
        let egress = sandbox.egress.identity()?;
        let content = rootfs_builder::read_manifest(&sandbox.rootfs)
            .ok()?
            .content_id;
        let seccomp = serde_json::to_value(&sandbox.seccomp).ok()?;
        let shape = Shape {
            config: &sandbox.config,
            selection: &sandbox.selection,
            rootfs: &sandbox.rootfs.display().to_string(),
            rootfs_content: &content,
            seccomp,
            egress,
        };
        Some(shape.key())
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the key is made of (pure: tested without a runtime).
pub(crate) struct Shape<'a> {
    pub config: &'a Config,
    pub selection: &'a Selection,
    pub rootfs: &'a str,
    pub rootfs_content: &'a str,
    pub seccomp: Value,
    pub egress: &'a str,
}

impl Shape<'_> {
    /// Its canonical JSON (object keys sorted: serde_json's map is a
    /// BTreeMap), hashed.
    pub fn key(&self) -> PoolKey {
        let runtime = &self.selection.runtime;
        let canonical = json!({
            "version": 1,
            "config": serde_json::to_value(self.config).unwrap_or(Value::Null),
            "runtime": {
                "kind": runtime.kind,
                "path": runtime.path.display().to_string(),
                "extra_flags": runtime.extra_flags,
                "fallback": self.selection.fallback,
            },
            "rootfs": self.rootfs,
            "rootfs_content": self.rootfs_content,
            "seccomp": self.seccomp,
            "egress": self.egress,
        });
        let text = canonical.to_string();
        let digest = Sha256::digest(text.as_bytes());
        PoolKey(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::runtime::{Runtime, RuntimeKind};

    fn base() -> (Config, Selection) {
        let selection = Selection {
            runtime: Runtime {
                kind: RuntimeKind::Runsc,
                path: PathBuf::from("/usr/bin/runsc"),
                extra_flags: Vec::new(),
            },
            fallback: false,
        };
        (Config::default(), selection)
    }

    type Edit<T> = Box<dyn Fn(&mut T)>;

    fn key(config: &Config, selection: &Selection, edit: impl FnOnce(&mut Shape)) -> PoolKey {
        let mut shape = Shape {
            config,
            selection,
            rootfs: "/var/cache/rlm/rootfs",
            rootfs_content: "abc",
            seccomp: json!({"defaultAction": "SCMP_ACT_ERRNO"}),
            egress: "FilterSpec { .. }",
        };
        edit(&mut shape);
        shape.key()
    }

    #[test]
    fn the_same_shape_gives_the_same_key() {
        let (c, s) = base();
        let a = key(&c, &s, |_| {});
        assert_eq!(a, key(&c.clone(), &s.clone(), |_| {}));
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn every_shaping_field_changes_the_key() {
        let (c0, s0) = base();
        let k0 = key(&c0, &s0, |_| {});
        let configs: Vec<(&str, Edit<Config>)> = vec![
            ("memory", Box::new(|c| c.limits.memory_bytes *= 2)),
            ("cpus", Box::new(|c| c.limits.cpus = 2.0)),
            ("pids", Box::new(|c| c.limits.pids += 1)),
            (
                "timeout",
                Box::new(|c| c.limits.timeout = Duration::from_secs(7)),
            ),
            ("max_stdout", Box::new(|c| c.limits.max_stdout_bytes += 1)),
            ("max_output", Box::new(|c| c.limits.max_output_bytes += 1)),
            ("tmp", Box::new(|c| c.limits.tmp_bytes += 1)),
            ("open_files", Box::new(|c| c.limits.open_files += 1)),
            ("network", Box::new(|c| c.network_enabled = true)),
            ("rootfs setting", Box::new(|c| c.rootfs = Some("/r".into()))),
            (
                "seccomp setting",
                Box::new(|c| c.seccomp_profile = Some("/s".into())),
            ),
            ("state dir", Box::new(|c| c.state_dir = "/run/other".into())),
            (
                "runsc path",
                Box::new(|c| c.runsc_path = Some("/opt/runsc".into())),
            ),
            (
                "runc path",
                Box::new(|c| c.runc_path = Some("/opt/runc".into())),
            ),
            (
                "runsc flags",
                Box::new(|c| c.runsc_flags = vec!["--debug".into()]),
            ),
            (
                "unsafe runtime",
                Box::new(|c| c.allow_unsafe_runtime = true),
            ),
        ];
        for (name, edit) in configs {
            let mut c = c0.clone();
            edit(&mut c);
            assert_ne!(key(&c, &s0, |_| {}), k0, "{name}");
        }
        let selections: Vec<(&str, Edit<Selection>)> = vec![
            ("kind", Box::new(|s| s.runtime.kind = RuntimeKind::Runc)),
            ("path", Box::new(|s| s.runtime.path = "/opt/runsc".into())),
            (
                "flags",
                Box::new(|s| s.runtime.extra_flags = vec!["--x".into()]),
            ),
            ("fallback", Box::new(|s| s.fallback = true)),
        ];
        for (name, edit) in selections {
            let mut s = s0.clone();
            edit(&mut s);
            assert_ne!(key(&c0, &s, |_| {}), k0, "runtime {name}");
        }
        assert_ne!(key(&c0, &s0, |k| k.rootfs = "/other"), k0, "rootfs");
        assert_ne!(key(&c0, &s0, |k| k.rootfs_content = "abd"), k0, "content");
        assert_ne!(key(&c0, &s0, |k| k.seccomp = json!({})), k0, "seccomp");
        assert_ne!(key(&c0, &s0, |k| k.egress = "other"), k0, "egress");
    }
}
