//! `rlm-sandbox rootfs image`, end to end with real tools: the image of
//! the default rootfs, written twice, has one digest (layout and archive
//! alike); skopeo reads it (digest, config user and command, layers);
//! podman loads it into a private storage and runs it under runsc and
//! under runc: Python as the sandbox user, modules from the precompiled
//! bytecode, and the session agent answering frames on stdin/stdout.
//! Needs root, skopeo, podman, runsc and runc (scripts/setup installs
//! them) and the default rootfs: without them each test prints why and
//! returns; with CI=true that is a failure.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::BIN;
use serde_json::{json, Value};

/// What is missing for these tests, with how to install it.
fn missing(runtimes: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges".to_string());
    }
    for tool in ["skopeo", "podman"] {
        if rlm_sandbox::runtime::find_binary(tool, None).is_none() {
            missing.push(format!("{tool} (apt-get install {tool})"));
        }
    }
    for runtime in runtimes {
        if rlm_sandbox::runtime::find_binary(runtime, None).is_none() {
            missing.push(format!("{runtime} (apt-get install {runtime})"));
        }
    }
    missing
}

fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&output(cmd).stdout).into_owned()
}

/// `rlm-sandbox rootfs image --output PATH --format FORMAT --json`.
fn write_image(path: &Path, format: &str) -> Value {
    let text = stdout(
        Command::new(BIN)
            .args(["rootfs", "image", "--json", "--format", format])
            .arg("--output")
            .arg(path),
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The default rootfs's image as an oci-archive, written once for all
/// tests of this file.
struct Built {
    _dir: tempfile::TempDir,
    archive: PathBuf,
    report: Value,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("rootfs.tar");
        let report = write_image(&archive, "oci-archive");
        Built {
            _dir: dir,
            archive,
            report,
        }
    })
}

fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).expect("read");
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn the_same_rootfs_gives_the_same_digest_and_skopeo_reads_it() {
    if !common::present(missing(&[]), "the image tests") {
        return;
    }
    let built = built();
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    let first = write_image(&layout, "oci-layout");
    let digest = first["digest"].as_str().expect("digest").to_string();
    let reference = first["reference"].as_str().expect("reference").to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{first}"
    );
    // Written again over the first: the same bytes, the same digest.
    let second = write_image(&layout, "oci-layout");
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["layer"], first["layer"]);
    // The archive holds the same image.
    assert_eq!(built.report["digest"], first["digest"]);
    let again = dir.path().join("again.tar");
    write_image(&again, "oci-archive");
    assert_eq!(
        sha256_of(&again),
        sha256_of(&built.archive),
        "archives differ"
    );

    // The tag is the rootfs's content id.
    let manifest: Value = serde_json::from_str(&stdout(Command::new(BIN).args(["rootfs", "show"])))
        .expect("manifest");
    let content_id = manifest["content_id"].as_str().expect("content_id");
    assert_eq!(
        reference,
        format!("localhost/rlm-sandbox-rootfs:{content_id}")
    );

    let skopeo = |what: &str| -> Value {
        let text = stdout(Command::new("skopeo").args(["inspect", what]));
        serde_json::from_str(&text).expect("skopeo's JSON")
    };
    let oci = format!("oci:{}:{reference}", layout.display());
    let archive = format!("oci-archive:{}", built.archive.display());
    for source in [&oci, &archive] {
        let inspected = skopeo(source);
        assert_eq!(inspected["Digest"], digest.as_str(), "{source}");
        assert_eq!(
            inspected["Layers"],
            json!([first["layer"]["digest"]]),
            "{source}"
        );
        assert_eq!(inspected["Os"], "linux");
    }
    let config: Value = serde_json::from_str(&stdout(
        Command::new("skopeo").args(["inspect", "--config", &oci]),
    ))
    .expect("config");
    assert_eq!(config["config"]["User"], "65432:65432");
    assert_eq!(
        config["config"]["Cmd"],
        json!([
            "/usr/bin/python3",
            "-I",
            "-B",
            "-c",
            "import _rlm_agent.__main__ as agent; agent.main()"
        ])
    );
    assert_eq!(config["config"]["WorkingDir"], "/tmp");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([first["layer"]["diff_id"]])
    );
    // Nothing but the output beside it (the staging directory is gone).
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["again.tar", "layout"]);
}

#[test]
fn an_output_that_is_not_an_image_is_left_alone() {
    if !common::present(missing(&[]), "the image tests") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes"), "mine").expect("write");
    let out = Command::new(BIN)
        .args(["rootfs", "image", "--output"])
        .arg(dir.path())
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to replace"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes")).expect("read"),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        1,
        "a staging directory left"
    );
}

/// podman with its own storage in a temporary directory (nothing reaches
/// the host's), the image loaded; removes the image by id and the
/// storage when dropped.
struct Podman {
    dir: tempfile::TempDir,
    image_id: String,
    reference: String,
}

impl Podman {
    fn load(archive: &Path) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("rlm-test-podman-")
            .tempdir()
            .expect("tempdir");
        let mut podman = Podman {
            dir,
            image_id: String::new(),
            reference: String::new(),
        };
        let loaded = stdout(podman.command().arg("load").arg("-i").arg(archive));
        podman.reference = loaded
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load said: {loaded}"))
            .trim()
            .to_string();
        podman.image_id = stdout(
            podman
                .command()
                .args(["images", "--no-trunc", "--format", "{{.ID}}"])
                .arg(&podman.reference),
        )
        .trim()
        .to_string();
        podman
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            // vfs: no overlay mounts to leave behind; no journal entries.
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .stdin(Stdio::null());
        cmd
    }

    /// `podman run --rm --network none -i` on `runtime`, with what each
    /// runtime needs here: runsc without its own network stack; runc
    /// with explicit rlimits (podman's defaults exceed the hard limits
    /// root has here, and root lacks CAP_SYS_RESOURCE to raise them).
    fn run(&self, runtime: &str, args: &[&str]) -> Command {
        let path = rlm_sandbox::runtime::find_binary(runtime, None).expect("runtime");
        let mut cmd = self.command();
        cmd.arg("--runtime").arg(path);
        if runtime == "runsc" {
            cmd.args(["--runtime-flag", "network=none"]);
        }
        cmd.args(["run", "--rm", "--network", "none", "-i"]);
        if runtime == "runc" {
            cmd.args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        }
        cmd.arg(&self.reference).args(args);
        cmd
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if !self.image_id.is_empty() {
            let _ = self
                .command()
                .args(["rmi", "--force", &self.image_id])
                .output();
        }
        // Storage under the temporary directory, removed with it; nothing
        // may still be mounted there.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.path().to_string_lossy().into_owned();
        assert!(!mounts.contains(&dir), "podman left mounts under {dir}");
    }
}

/// One frame of docs/PROTOCOL.md: u32 big-endian length of the body, the
/// type byte, the payload.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

fn read_frame(from: &mut impl Read) -> (u8, Vec<u8>) {
    let mut header = [0u8; 5];
    from.read_exact(&mut header)
        .expect("a frame header from the agent");
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    assert!((1..1 << 20).contains(&len), "frame length {len}");
    let mut body = vec![0u8; len - 1];
    from.read_exact(&mut body).expect("a frame body");
    (header[4], body)
}

const JSON_FRAME: u8 = 0x4A;
const STDOUT_FRAME: u8 = 0x31;

fn podman_runs_the_image(runtime: &str) {
    if !common::present(
        missing(&[runtime]),
        &format!("the image under podman on {runtime}"),
    ) {
        return;
    }
    let built = built();
    let podman = Podman::load(&built.archive);
    assert_eq!(
        podman.reference,
        built.report["reference"].as_str().expect("reference")
    );
    assert_eq!(
        podman.image_id,
        built.report["config_digest"]
            .as_str()
            .expect("config digest"),
        "podman's image id is the config's digest"
    );

    let code = "import os; print(40 + 2, os.getuid(), os.getgid(), os.getcwd())";
    let out = stdout(&mut podman.run(runtime, &["python3", "-c", code]));
    assert_eq!(out, "42 65432 65432 /tmp\n");

    // Modules load from the bytecode the build precompiled although every
    // source has the layer's fixed time: the bytecode is unchecked-hash
    // (timestamp bytecode would be stale, and recompiled in memory on
    // every import, the root being read-only).
    let verbose =
        output(&mut podman.run(runtime, &["python3", "-I", "-B", "-v", "-c", "import json"]));
    let trace = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        trace.lines().any(
            |l| l.starts_with("# code object from") && l.contains("json/__pycache__/__init__.")
        ),
        "json not loaded from its .pyc:\n{trace}"
    );
    assert!(!trace.contains("bytecode is stale"), "{trace}");

    // The image's command is the session agent: it says `standby`, answers
    // `hello` with `ready`, runs a cell, and ends when its stdin closes.
    let mut agent = podman
        .run(runtime, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    let mut to_agent = agent.stdin.take().expect("stdin");
    let mut from_agent = agent.stdout.take().expect("stdout");
    to_agent
        .write_all(&frame(JSON_FRAME, br#"{"t":"hello"}"#))
        .expect("hello");
    to_agent.flush().expect("flush");
    let (kind, body) = read_frame(&mut from_agent);
    let standby: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        (kind, &standby["t"]),
        (JSON_FRAME, &json!("standby")),
        "{standby}"
    );
    let (kind, body) = read_frame(&mut from_agent);
    let ready: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        (kind, &ready["t"]),
        (JSON_FRAME, &json!("ready")),
        "{ready}"
    );
    to_agent
        .write_all(&frame(
            JSON_FRAME,
            br#"{"t":"exec","cell":1,"code":"print(40 + 2)"}"#,
        ))
        .expect("exec");
    to_agent.flush().expect("flush");
    assert_eq!(
        read_frame(&mut from_agent),
        (STDOUT_FRAME, b"42\n".to_vec())
    );
    let (kind, body) = read_frame(&mut from_agent);
    let done: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(kind, JSON_FRAME);
    assert_eq!(
        (&done["t"], &done["cell"], &done["status"]),
        (&json!("done"), &json!(1), &json!("ok")),
        "{done}"
    );
    drop(to_agent);
    let status = agent.wait().expect("wait");
    let mut stderr = String::new();
    agent
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(status.success(), "the agent exited {status}: {stderr}");
}

#[test]
fn podman_runs_the_image_on_runsc() {
    podman_runs_the_image("runsc");
}

#[test]
fn podman_runs_the_image_on_runc() {
    podman_runs_the_image("runc");
}
