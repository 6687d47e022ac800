//! `session --agent-command` against a real container engine, without a
//! cluster: `rlm-sandbox rootfs image` → `podman load` (a private storage
//! root) → the pod spec of `k8s render --json`'s SandboxTemplate → a
//! container run from it → `rlm-sandbox session --agent-command 'podman
//! exec -i CTR python3 -I -B -m _rlm_agent'`: cells run, an `llm_query`
//! is answered by this test (the orchestrator), and the egress filter on
//! this side redacts a secret the pod printed.
//!
//! How the rendered pod spec is adapted, each for a reason podman 4.3
//! gives (docs/KUBERNETES.md, "Sessions over a command"):
//! - the container's command waits (`signal.pause()`) instead of being
//!   the agent: kube play ignores `stdin: true`, so a first agent would
//!   read end-of-file and end the container; on a cluster the rendered
//!   agent waits on its open stdin and the session's agent is exec'd
//!   beside it, as here;
//! - the seccomp profile is given as the pod annotation
//!   `seccomp.security.alpha.kubernetes.io/pod: localhost/<file>` under
//!   `--seccomp-profile-root` (kube play reads neither
//!   `securityContext.seccompProfile` nor a profile in a subdirectory);
//! - `runtimeClassName` means nothing to podman: the runtime is
//!   `--runtime`; the network is `--network none` (the networkPolicy is a
//!   field of the SandboxTemplate, not of the pod);
//! - kube play makes the memory-backed emptyDirs volumes on disk (their
//!   `medium` and `sizeLimit` ignored): the size of /tmp is checked only
//!   where the container is `podman run` with tmpfs flags;
//! - runc: podman's default rlimits exceed root's hard limits here, so
//!   `default_ulimits` come from a private containers.conf;
//! - runsc: kube play puts the pod's container into the infra
//!   container's gVisor sandbox (podman's cri-o annotations), where its
//!   conmon cannot supervise it: podman's cleanup deletes it ~200 ms
//!   after it starts (docs/KUBERNETES.md, "Why not `podman kube play`
//!   under runsc"). So under runsc the container is `podman run` with
//!   the rendered container's settings (user, read-only root, no
//!   capabilities, no new privileges, memory, tmpfs sizes, workdir).
//!
//! Needs root, podman, catatonit (kube play's pause process), the runtime
//! and the default rootfs: without them each test prints why and passes,
//! or fails under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::repl::{Answer, Repl};
use common::{Env, BIN};
use serde_json::{json, Value};

fn missing(runtime: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges".to_string());
    }
    let mut tools = vec!["podman", runtime];
    if runtime == "runc" {
        tools.push("catatonit");
    }
    for tool in tools {
        if rlm_sandbox::runtime::find_binary(tool, None).is_none() {
            missing.push(format!("{tool} (apt-get install {tool})"));
        }
    }
    missing
}

fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(output(cmd).stdout).expect("UTF-8")
}

/// podman with its own storage under a temporary directory, the image
/// loaded; removes its pod or container and the image by id when
/// dropped.
struct Podman {
    dir: tempfile::TempDir,
    runtime: String,
    image_id: String,
    pod_id: Option<String>,
    container_id: Option<String>,
    /// Instead of the runtime found on PATH (a wrapper that records calls).
    runtime_path: Option<PathBuf>,
}

impl Podman {
    fn new(runtime: &str) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("rlm-test-podman-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n",
        )
        .expect("containers.conf");
        Podman {
            dir,
            runtime: runtime.to_string(),
            image_id: String::new(),
            pod_id: None,
            container_id: None,
            runtime_path: None,
        }
    }

    /// The podman command line with the private storage and the runtime
    /// (as words, for a shell command too).
    fn words(&self) -> Vec<String> {
        let d = self.dir.path().display();
        let path = self.runtime_path.clone().unwrap_or_else(|| {
            rlm_sandbox::runtime::find_binary(&self.runtime, None).expect("runtime")
        });
        let mut words: Vec<String> = vec![
            "podman".into(),
            format!("--root={d}/root"),
            format!("--runroot={d}/runroot"),
            format!("--tmpdir={d}/tmp"),
            "--storage-driver=vfs".into(),
            "--events-backend=none".into(),
            format!("--runtime={}", path.display()),
        ];
        if self.runtime == "runsc" {
            words.push("--runtime-flag=network=none".into());
        }
        words
    }

    fn command(&self) -> Command {
        let words = self.words();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..])
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .stdin(Stdio::null());
        cmd
    }

    fn load(&mut self, archive: &Path) {
        let loaded = stdout(self.command().arg("load").arg("-i").arg(archive));
        let reference = loaded
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load said: {loaded}"))
            .trim()
            .to_string();
        self.image_id = stdout(
            self.command()
                .args(["images", "--no-trunc", "--format", "{{.ID}}"])
                .arg(&reference),
        )
        .trim()
        .to_string();
    }

    /// `podman kube play` of `pod`; the agent container's id.
    fn play(&mut self, pod: &Value, seccomp_root: &Path) -> String {
        let file = self.dir.path().join("pod.json");
        std::fs::write(&file, serde_json::to_vec(pod).expect("JSON")).expect("pod file");
        let out = stdout(
            self.command()
                .args([
                    "kube",
                    "play",
                    "--network",
                    "none",
                    "--seccomp-profile-root",
                ])
                .arg(seccomp_root)
                .arg(&file),
        );
        let ids: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        let [pod_id, container_id] = ids[..] else {
            panic!("kube play said: {out}");
        };
        self.pod_id = Some(pod_id.to_string());
        container_id.to_string()
    }

    /// `podman run -d` of the rendered container `ctr` (its settings as
    /// flags), waiting; its id.
    fn run(&mut self, ctr: &Value, volumes: &[Value]) -> String {
        let sc = &ctr["securityContext"];
        let mut cmd = self.command();
        cmd.args(["run", "-d", "--network", "none", "--cap-drop", "all"]);
        cmd.arg(format!("--user={}:{}", sc["runAsUser"], sc["runAsGroup"]));
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        cmd.args(["--read-only", "--security-opt", "no-new-privileges"]);
        let memory = ctr["resources"]["limits"]["memory"]
            .as_str()
            .expect("memory");
        cmd.arg(format!(
            "--memory={}",
            memory.trim_end_matches('i').to_lowercase()
        ));
        for mount in ctr["volumeMounts"].as_array().expect("mounts") {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .expect("the mount's volume");
            let size = volume["emptyDir"]["sizeLimit"].as_str().expect("size");
            let size = size.trim_end_matches('i').to_lowercase();
            cmd.arg(format!(
                "--tmpfs={}:size={size}",
                mount["mountPath"].as_str().expect("path")
            ));
        }
        cmd.arg(format!(
            "--workdir={}",
            ctr["workingDir"].as_str().expect("workdir")
        ));
        cmd.arg(ctr["image"].as_str().expect("image"));
        cmd.args(WAITER);
        let id = stdout(&mut cmd).trim().to_string();
        self.container_id = Some(id.clone());
        id
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(pod) = &self.pod_id {
            let _ = self
                .command()
                .args(["pod", "rm", "-f", "-t", "0", pod])
                .output();
        }
        if let Some(ctr) = &self.container_id {
            let _ = self.command().args(["rm", "-f", "-t", "0", ctr]).output();
        }
        if !self.image_id.is_empty() {
            let _ = self
                .command()
                .args(["rmi", "--force", &self.image_id])
                .output();
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.path().to_string_lossy().into_owned();
        assert!(!mounts.contains(&dir), "podman left mounts under {dir}");
    }
}

/// The container's process while the session's agent is exec'd beside it.
const WAITER: [&str; 4] = [
    "/usr/bin/python3",
    "-I",
    "-c",
    "import signal; signal.pause()",
];

/// `k8s render --json`: the SandboxTemplate's pod template and the
/// seccomp profile, written flat into `seccomp_root` (its file name).
fn rendered(seccomp_root: &Path) -> (Value, String) {
    let text = stdout(Command::new(BIN).args(["k8s", "render", "--json"]));
    let render: Value = serde_json::from_str(&text).expect("render JSON");
    let template = render["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["kind"] == "SandboxTemplate")
        .expect("a SandboxTemplate")
        .clone();
    assert_eq!(template["spec"]["networkPolicy"]["egress"], json!([]));
    let profile = &render["seccompProfile"];
    let name = Path::new(profile["localhostProfile"].as_str().expect("profile path"))
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    std::fs::write(
        seccomp_root.join(&name),
        serde_json::to_vec(&profile["profile"]).expect("profile"),
    )
    .expect("seccomp profile");
    (template["spec"]["podTemplate"].clone(), name)
}

/// The pod kube play takes from the rendered pod template (adapted as the
/// module's documentation says).
fn pod_for_kube_play(template: &Value, seccomp_file: &str) -> Value {
    let mut metadata = template["metadata"].clone();
    metadata["name"] = json!("rlm-test");
    metadata["annotations"]["seccomp.security.alpha.kubernetes.io/pod"] =
        json!(format!("localhost/{seccomp_file}"));
    let mut spec = template["spec"].clone();
    spec["containers"][0]["command"] = json!(WAITER);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

fn build_image(dir: &Path) -> PathBuf {
    let archive = dir.join("rootfs.tar");
    stdout(
        Command::new(BIN)
            .args([
                "rootfs",
                "image",
                "--json",
                "--format",
                "oci-archive",
                "--output",
            ])
            .arg(&archive),
    );
    archive
}

fn session_over_podman_exec(runtime: &str) {
    if !common::present(
        missing(runtime),
        &format!("a session over podman exec on {runtime}"),
    ) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let archive = build_image(work.path());
    let seccomp_root = work.path().join("seccomp");
    std::fs::create_dir(&seccomp_root).expect("seccomp dir");
    let (template, seccomp_file) = rendered(&seccomp_root);
    let mut podman = Podman::new(runtime);
    podman.load(&archive);
    let container = match runtime {
        "runc" => podman.play(&pod_for_kube_play(&template, &seccomp_file), &seccomp_root),
        _ => {
            let spec = &template["spec"];
            podman.run(
                &spec["containers"][0],
                spec["volumes"].as_array().expect("volumes"),
            )
        }
    };
    let mut words = podman.words();
    words.extend(["exec".into(), "-i".into(), container]);
    words.extend(rlm_sandbox::bundle::spec::agent_args());
    let command = rlm_sandbox::k8s::claim::shell_words(&words);

    let env = Env::new(runtime);
    let conf = podman.dir.path().join("containers.conf");
    let conf = conf.to_string_lossy();
    let mut repl = Repl::start_with_env(
        &env,
        &["--agent-command", &command],
        &[("CONTAINERS_CONF", conf.as_ref())],
    );
    assert_eq!(repl.ready["contexts"], json!([]));

    // The agent runs in the container, as the rendered user, with the
    // memory-backed /tmp of the pod spec.
    let cell = repl.exec(
        "import os\nst = os.statvfs('/tmp')\n\
         print(os.getuid(), os.getgid(), os.getcwd(), st.f_blocks * st.f_frsize)",
    );
    assert_eq!(cell["status"], "ok", "{cell}");
    let out = cell["stdout"].as_str().expect("stdout");
    assert!(out.starts_with("65432 65432 /tmp "), "{out}");
    if runtime == "runsc" {
        // kube play makes an emptyDir a volume on disk (medium and
        // sizeLimit ignored); the tmpfs flags of `podman run` keep them.
        assert_eq!(out, format!("65432 65432 /tmp {}\n", 64 << 20));
    }

    // A secret the pod prints is redacted here; the call is answered by
    // the orchestrator (this test), and state persists between cells.
    let mut answer: Answer = Box::new(|call: &Value| {
        assert_eq!(call["kind"], "llm_query");
        assert_eq!(call["prompts"], json!(["what is 6*7?"]));
        Ok(vec![json!("42, says the orchestrator")])
    });
    let code = "k = 'AKIAIOSF' + 'ODNN7EXAMPLE'\nprint(k[:4], k)\n\
                answer['content'] = llm_query('what is 6*7?')\nanswer['ready'] = True";
    let reply = repl.request_with("exec", json!({ "code": code }), Some(&mut answer));
    let cell = &reply["cell"];
    assert_eq!(cell["status"], "ok", "{reply}");
    assert_eq!(cell["final_answer"], "42, says the orchestrator");
    let out = cell["stdout"].as_str().expect("stdout");
    // The control: the cell's output arrives (its first four characters
    // are not a key); the key itself does not.
    assert!(out.starts_with("AKIA "), "{out}");
    assert!(!out.contains("AKIAIOSFODNN7EXAMPLE"), "{out}");
    assert!(out.contains("[REDACTED:aws_access_key_id]"), "{out}");
    assert_eq!(repl.calls.len(), 1);
    let cell = repl.exec("print(len(k))");
    assert_eq!(cell["stdout"], "20\n");

    let status = repl.close();
    assert!(status.success(), "the session exited {status}");
    // The exec'd agent has exited: only the waiter runs in the container.
    let top = stdout(
        podman
            .command()
            .args(["top", podman_target(&podman), "args"]),
    );
    assert!(
        !top.contains("_rlm_agent"),
        "the agent outlived its session:\n{top}"
    );
}

/// The container `podman top` looks at.
fn podman_target(podman: &Podman) -> &str {
    podman.container_id.as_deref().unwrap_or("rlm-test-agent")
}

#[test]
fn a_session_over_podman_exec_on_runsc() {
    session_over_podman_exec("runsc");
}

#[test]
fn a_session_over_podman_exec_on_runc() {
    session_over_podman_exec("runc");
}

/// The diagnosis of docs/KUBERNETES.md ("Why not `podman kube play` under
/// runsc") as a check, and the reason the runsc session above is `podman
/// run`: kube play of the rendered pod under runsc, with a runsc wrapper
/// recording each call and its caller; podman's exit command (`container
/// cleanup`) deletes the pod's container although nothing asked it to
/// stop. When a podman, conmon or runsc update fixes this, this test fails:
/// then the runsc session can be kube play too.
#[test]
fn kube_play_on_runsc_has_the_pods_container_deleted_by_podmans_cleanup() {
    let mut need = missing("runsc");
    if rlm_sandbox::runtime::find_binary("catatonit", None).is_none() {
        need.push("catatonit (apt-get install catatonit)".to_string());
    }
    if !common::present(need, "kube play on runsc") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let archive = build_image(work.path());
    let seccomp_root = work.path().join("seccomp");
    std::fs::create_dir(&seccomp_root).expect("seccomp dir");
    let (template, seccomp_file) = rendered(&seccomp_root);
    let mut podman = Podman::new("runsc");
    let calls = podman.dir.path().join("runsc-calls");
    let wrapper = podman.dir.path().join("runsc-wrapper");
    let runsc = rlm_sandbox::runtime::find_binary("runsc", None).expect("runsc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$(tr '\\0' ' ' < /proc/$PPID/cmdline) :: $*\" >> '{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            runsc.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    podman.runtime_path = Some(wrapper);
    podman.load(&archive);
    let container = podman.play(&pod_for_kube_play(&template, &seccomp_file), &seccomp_root);
    let deleted = |line: &str| {
        line.contains("container cleanup") && line.ends_with(&format!("delete --force {container}"))
    };
    // The event: podman's cleanup calls runsc delete on the container.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&calls).unwrap_or_default();
        if log.lines().any(deleted) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "podman's cleanup did not delete {container} (kube play under runsc works now?):\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let state =
        stdout(
            podman
                .command()
                .args(["inspect", "--format", "{{.State.Running}}", &container]),
        );
    assert_eq!(state.trim(), "false", "the container runs");
}
