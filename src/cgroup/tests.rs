//! RunCgroup on fake v1 and v2 trees in a temp dir (plain directories stand
//! in for cgroupfs: control files appear only where a test writes them),
//! plus one root-only test on this host's real cgroups.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// A fake host: the named v1 hierarchies and/or a unified one, each a
/// directory under `root`, and the mountinfo text that points at them.
fn fake(root: &Path, v1: &[&str], unified: bool) -> CgroupLayout {
    let mut text = String::new();
    for (i, name) in v1.iter().enumerate() {
        fs::create_dir(root.join(name)).unwrap();
        let opt = if *name == "systemd" {
            "name=systemd".to_owned()
        } else {
            name.to_string()
        };
        text += &format!(
            "{} 31 0:{i} / {}/{name} rw - cgroup cgroup rw,{opt}\n",
            40 + i,
            root.display()
        );
    }
    if unified {
        fs::create_dir(root.join("unified")).unwrap();
        text += &format!(
            "60 31 0:99 / {}/unified rw - cgroup2 cgroup2 rw,nsdelegate\n",
            root.display()
        );
    }
    CgroupLayout::from_mountinfo(&text).unwrap()
}

fn put(path: PathBuf, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Deletes the files a test wrote (real cgroupfs rmdirs with its control
/// files in place; a plain directory does not).
fn strip_files(dir: &Path) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            strip_files(&e.path());
        } else {
            fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Skips a test of this host's real cgroups (with why) when it cannot run
/// here; under CI=true that is a failure instead.
fn skip_real(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {why}"
    );
    eprintln!("skipped {test}: {why}");
}

/// Removes a test's real cgroups even when an assertion fails midway.
struct Cleanup<'a>(&'a CgroupLayout, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = remove_run(self.0, self.1);
    }
}

const V1_NAMES: [&str; 6] = ["cpuacct", "cpuset", "memory", "freezer", "pids", "systemd"];

#[test]
fn v1_create_counters_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let layout = fake(root, &V1_NAMES, false);
    put(root.join("cpuset/cpuset.cpus"), "0-1\n");
    put(root.join("cpuset/cpuset.mems"), "0\n");
    // The kernel creates these empty in a new cpuset; a fake needs them.
    put(root.join("cpuset/rlm-sandbox/cpuset.cpus"), "\n");
    put(root.join("cpuset/rlm-sandbox/cpuset.mems"), "\n");

    let cg = RunCgroup::create(&layout, "rlms-a1").unwrap();
    assert_eq!(cg.container_path(), "/rlm-sandbox/rlms-a1/ctr");
    for name in V1_NAMES {
        assert!(
            root.join(name).join("rlm-sandbox/rlms-a1").is_dir(),
            "{name}"
        );
    }
    assert_eq!(
        fs::read_to_string(root.join("cpuset/rlm-sandbox/cpuset.cpus")).unwrap(),
        "0-1"
    );

    // Nothing readable yet: unknown, and no control file was created.
    assert_eq!(
        (cg.oom_kills(), cg.memory_peak_bytes(), cg.cpu_usage_ns()),
        (None, None, None)
    );
    assert!(!root
        .join("memory/rlm-sandbox/rlms-a1/memory.oom_control")
        .exists());

    let mem = root.join("memory/rlm-sandbox/rlms-a1");
    put(
        mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    put(mem.join("memory.max_usage_in_bytes"), "268697600\n");
    put(
        root.join("cpuacct/rlm-sandbox/rlms-a1/cpuacct.usage"),
        "197026339\n",
    );
    // v1: the parent's own counter says 0 whatever happened in the leaf,
    // so without the leaf (and no parent limit) the count is unknown.
    assert_eq!(cg.oom_kills(), None);
    put(
        mem.join("ctr/memory.oom_control"),
        include_str!("../../tests/fixtures/cgroup/v1/memory.oom_control"),
    );
    assert_eq!(cg.oom_kills(), Some(1));
    assert_eq!(cg.memory_peak_bytes(), Some(268_697_600));
    assert_eq!(cg.cpu_usage_ns(), Some(197_026_339));

    put(mem.join("ctr/cgroup.procs"), "7795\n7799\n");
    put(
        root.join("pids/rlm-sandbox/rlms-a1/ctr/cgroup.procs"),
        "7799\n7819\n",
    );
    assert_eq!(cg.pids(), vec![7795, 7799, 7819]);

    assert_eq!(leftover_runs(&layout), vec!["rlms-a1".to_owned()]);
    for name in V1_NAMES {
        strip_files(&root.join(name).join("rlm-sandbox/rlms-a1"));
    }
    cg.remove_ref().unwrap();
    assert_eq!(cg.oom_kills(), None, "removed: unknown");
    cg.remove().unwrap();
    assert!(leftover_runs(&layout).is_empty());
    assert!(
        root.join("memory/rlm-sandbox").is_dir(),
        "the shared root stays"
    );
}

#[test]
fn v2_enables_controllers_and_reads_hierarchical_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let layout = fake(root, &[], true);
    let u = root.join("unified");
    put(
        u.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    put(u.join("cgroup.subtree_control"), "cpu memory\n");
    put(
        u.join("rlm-sandbox/cgroup.controllers"),
        "cpu memory pids\n",
    );
    put(u.join("rlm-sandbox/cgroup.subtree_control"), "\n");

    let cg = RunCgroup::create(&layout, "rlms-b2").unwrap();
    assert_eq!(layout.mode(), CgroupMode::V2);
    // Only what is missing, in one write; the root already had cpu, memory.
    assert_eq!(
        fs::read_to_string(u.join("cgroup.subtree_control")).unwrap(),
        "+pids"
    );
    assert_eq!(
        fs::read_to_string(u.join("rlm-sandbox/cgroup.subtree_control")).unwrap(),
        "+memory +pids +cpu"
    );

    let dir = u.join("rlm-sandbox/rlms-b2");
    put(
        dir.join("memory.events"),
        include_str!("../../tests/fixtures/cgroup/v2/memory.events"),
    );
    put(dir.join("memory.peak"), "268697600\n");
    put(
        dir.join("cpu.stat"),
        include_str!("../../tests/fixtures/cgroup/v2/cpu.stat"),
    );
    // Hierarchical: no leaf needed.
    assert_eq!(cg.oom_kills(), Some(2));
    assert_eq!(cg.memory_peak_bytes(), Some(268_697_600));
    assert_eq!(cg.cpu_usage_ns(), Some(395_737_000));
    strip_files(&dir);
    cg.remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn failed_create_rolls_back_and_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let layout = fake(root, &["memory", "pids"], false);
    fs::remove_dir(root.join("pids")).unwrap();
    let err = RunCgroup::create(&layout, "rlms-c3").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("failed to create cgroup "), "{msg}");
    assert!(msg.contains("/pids/rlm-sandbox"), "{msg}");
    assert!(
        !root.join("memory/rlm-sandbox/rlms-c3").exists(),
        "rolled back"
    );
}

#[test]
fn run_ids_are_single_path_components() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake(tmp.path(), &["memory"], false);
    for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(65)] {
        assert!(
            matches!(
                RunCgroup::create(&layout, bad),
                Err(CgroupError::InvalidRunId { .. })
            ),
            "{bad:?}"
        );
        assert!(remove_run(&layout, bad).is_err(), "{bad:?}");
    }
    fs::create_dir_all(tmp.path().join("memory/rlm-sandbox/rlms-old/ctr")).unwrap();
    assert_eq!(leftover_runs(&layout), vec!["rlms-old".to_owned()]);
    remove_run(&layout, "rlms-old").unwrap();
    assert!(leftover_runs(&layout).is_empty());
    remove_run(&layout, "rlms-never-existed").unwrap();
}

/// Root only, on this host's real cgroups: an OOM kill in the leaf, then
/// what the parent still knows after the leaf is gone.
#[test]
fn real_oom_kill_is_counted_after_the_leaf_is_removed() {
    let skip = |why: &str| skip_real("real_oom_kill_is_counted_after_the_leaf_is_removed", why);
    if !nix::unistd::Uid::effective().is_root() {
        return skip("needs root");
    }
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        return skip("needs /usr/bin/python3 on the host");
    }
    let layout = CgroupLayout::detect().unwrap();
    let id = format!("rlms-cgtest-{}", std::process::id());
    let _cleanup = Cleanup(&layout, &id);
    let leaves = |cg: &RunCgroup| {
        cg.dirs()
            .iter()
            .map(|d| d.join(LEAF_DIR))
            .collect::<Vec<_>>()
    };
    let make_leaves = |cg: &RunCgroup| {
        for leaf in leaves(cg) {
            fs::create_dir(&leaf).unwrap();
            // As the runtime does: a v1 cpuset leaf needs cpus and mems.
            copy_cpuset(leaf.parent().unwrap(), &leaf).unwrap();
        }
    };
    // 64 MiB, no swap; the child allocates 200 MB.
    const LIMIT: u64 = 64 << 20;
    let run_child = |cg: &RunCgroup| {
        let join: String = leaves(cg)
            .iter()
            .map(|l| format!("echo $$ > {}/cgroup.procs; ", l.display()))
            .collect();
        let script = format!("{join}exec {} -c \"'a'*(200<<20)\"", python.display());
        std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .status()
            .unwrap()
    };
    let memory_leaf = |cg: &RunCgroup| match &cg.memory {
        Some(MemoryDir::V1(d)) | Some(MemoryDir::V2 { dir: d, .. }) => d.join(LEAF_DIR),
        None => panic!("no memory controller"),
    };
    let hierarchical = layout.capabilities().hierarchical_oom_counter;

    // 1. The limit on the runtime's leaf (what the spec does today).
    let cg = RunCgroup::create(&layout, &id).unwrap();
    make_leaves(&cg);
    let leaf = memory_leaf(&cg);
    let limit = LIMIT.to_string();
    let limit_files = [
        ("memory.limit_in_bytes", limit.as_str()),
        ("memory.memsw.limit_in_bytes", limit.as_str()),
        ("memory.max", limit.as_str()),
        ("memory.swap.max", "0"),
    ];
    for (f, value) in limit_files {
        if leaf.join(f).exists() {
            write_file(&leaf.join(f), value).unwrap();
        }
    }
    let status = run_child(&cg);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert_eq!(cg.oom_kills(), Some(1), "leaf present");
    let peak = cg.memory_peak_bytes().unwrap();
    assert!(
        (LIMIT / 2..=LIMIT + (1 << 20)).contains(&peak),
        "peak {peak}"
    );
    assert!(cg.cpu_usage_ns().unwrap() > 0);
    for leaf in leaves(&cg) {
        fs::remove_dir(&leaf).unwrap();
    }
    // v1 does not propagate oom_kill to ancestors: gone with the leaf.
    let want = if hierarchical { Some(1) } else { None };
    assert_eq!(cg.oom_kills(), want, "leaf removed, limit on the leaf");
    cg.remove().unwrap();

    // 2. The limit on the driver's parent: counted on v1 and v2 alike.
    let mut cg = RunCgroup::create(&layout, &id).unwrap();
    cg.limit_memory(LIMIT).unwrap();
    make_leaves(&cg);
    let status = run_child(&cg);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    for leaf in leaves(&cg) {
        fs::remove_dir(&leaf).unwrap();
    }
    assert_eq!(cg.oom_kills(), Some(1), "leaf removed, limit on the parent");

    // kill_all reaches a process in the leaf.
    make_leaves(&cg);
    let mut sleeper = sleeper_in(&leaves(&cg));
    assert_eq!(cg.pids(), vec![sleeper.id() as i32]);
    assert_eq!(cg.kill_all(), 1);
    assert_eq!(sleeper.wait().unwrap().signal(), Some(9));

    let dirs = cg.dirs().to_vec();
    cg.remove().unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!leftover_runs(&layout).contains(&id));
}

/// A sleeping process that has joined every cgroup in `leaves`; returns
/// once it has (it says so on a pipe: a pid seen in one hierarchy may not
/// be in the next yet).
fn sleeper_in(leaves: &[PathBuf]) -> std::process::Child {
    let join: String = leaves
        .iter()
        .map(|l| format!("echo $$ > {}/cgroup.procs && ", l.display()))
        .collect();
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", &format!("{join}echo joined && exec sleep 600")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said, "joined\n", "the child could not join its cgroups");
    child
}

#[test]
fn a_busy_cgroup_is_not_removed_at_once_and_an_empty_one_is() {
    if !nix::unistd::Uid::effective().is_root() {
        return skip_real(
            "a_busy_cgroup_is_not_removed_at_once_and_an_empty_one_is",
            "needs root",
        );
    }
    let layout = CgroupLayout::detect().unwrap();
    let id = format!("rlms-cgbusy-{}", std::process::id());
    let _cleanup = Cleanup(&layout, &id);
    let cg = RunCgroup::create(&layout, &id).unwrap();
    // A process in a leaf of every hierarchy, as a runtime's would be.
    let mut leaves = Vec::new();
    for dir in cg.dirs() {
        let leaf = dir.join(LEAF_DIR);
        fs::create_dir(&leaf).unwrap();
        copy_cpuset(dir, &leaf).unwrap();
        leaves.push(leaf);
    }
    let mut child = sleeper_in(&leaves);
    let pid = child.id() as i32;
    assert!(cg.pids().contains(&pid));
    assert!(
        !cg.remove_if_empty().unwrap(),
        "a cgroup with a process is busy"
    );
    assert!(child.try_wait().unwrap().is_none(), "nothing was killed");
    assert!(
        cg.dirs().iter().all(|d| d.join(LEAF_DIR).is_dir()),
        "nothing removed"
    );
    assert!(leftover_runs(&layout).contains(&id));
    assert_eq!(cg.kill_all(), 1);
    child.wait().unwrap();
    cg.remove().unwrap();
    assert!(!leftover_runs(&layout).contains(&id));

    let empty = RunCgroup::create(&layout, &id).unwrap();
    for dir in empty.dirs() {
        fs::create_dir(dir.join(LEAF_DIR)).unwrap();
    }
    assert!(empty.remove_if_empty().unwrap());
    assert!(!leftover_runs(&layout).contains(&id));
    assert_eq!(empty.oom_kills(), None, "removed: unknown");
}
