//! A rootfs image's digest is derived from the rootfs content id: two
//! independent builds of the same content id (each into its own fresh
//! cache, `RLM_CACHE_DIR`) give byte-identical archives and one digest;
//! another content (`--with python3-six`) gives another digest.
//!
//! Slow by nature (three full rootfs builds, about 20 s to 2 min each
//! with apt's package cache warm): it is the only way to show that no
//! build-time clock, order or owner reaches the image. Needs root and apt
//! with the packages reachable; without them it prints why and returns
//! (a failure with CI=true).

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;
use serde_json::Value;

/// Writes the image of the rootfs selected by `with` as an oci-archive at
/// `dir/image.tar`, building that rootfs into `dir/cache` (fresh: nothing
/// of another build is reused). Returns the `--json` report.
fn build_and_image(dir: &Path, with: &[&str]) -> Value {
    let archive = dir.join("image.tar");
    let out = Command::new(BIN)
        .env("RLM_CACHE_DIR", dir.join("cache"))
        .env_remove("RLM_ROOTFS")
        .args(["rootfs", "image", "--json", "--format", "oci-archive"])
        .args(with)
        .arg("--output")
        .arg(&archive)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "rootfs image {with:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    report["archive_bytes"] = std::fs::read(&archive).expect("read archive").into();
    report
}

fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges".to_string());
    }
    if rlm_sandbox::runtime::find_binary("apt-get", None).is_none() {
        missing.push("apt (a Debian or Ubuntu host)".to_string());
    }
    missing
}

#[test]
fn two_builds_of_one_content_id_give_one_digest_and_other_content_another() {
    if !common::present(missing(), "the rebuild test") {
        return;
    }
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    let first = build_and_image(a.path(), &[]);
    let second = build_and_image(b.path(), &[]);
    assert_eq!(first["tag"], second["tag"], "one content id");
    assert_eq!(
        first["layer"], second["layer"],
        "two builds of one content id differ in their layer"
    );
    assert_eq!(first["digest"], second["digest"]);
    assert!(
        first["archive_bytes"] == second["archive_bytes"],
        "the archives differ"
    );

    let other = build_and_image(c.path(), &["--with", "python3-six"]);
    assert_ne!(other["tag"], first["tag"], "another content id");
    assert_ne!(other["digest"], first["digest"], "another digest");
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}
