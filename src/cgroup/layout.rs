//! Which cgroup hierarchies this host has, parsed from /proc/self/mountinfo.
//! Parsing is pure; the mount paths it yields are the only host paths the
//! rest of the module touches, so tests point them at a temp dir.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// Controllers whose limits the sandbox sets (OCI `linux.resources`).
pub(crate) const LIMITED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The host's cgroup arrangement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// Only the unified (cgroup2) hierarchy: most current hosts.
    V2,
    /// v1 controller hierarchies plus a unified tree beside them (systemd's
    /// "hybrid"); resource controllers live in v1.
    Hybrid,
}

/// One mounted v1 hierarchy: its mount point and what it carries
/// (`["cpu", "cpuacct"]` when co-mounted, `["name=systemd"]` for a named one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount: PathBuf,
    pub controllers: Vec<String>,
}

/// Where each hierarchy is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    mode: CgroupMode,
    v1: Vec<V1Hierarchy>,
    unified: Option<PathBuf>,
    /// cgroup2 mounted with `memory_localevents`: `memory.events` of a
    /// parent then no longer counts its children's OOM kills.
    local_events: bool,
}

/// What this host can enforce and measure, for `rlm-sandbox check`.
/// `None` where it could not be determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub memory: bool,
    /// memory+swap limit (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    pub memory_swap: Option<bool>,
    pub pids: bool,
    pub cpu: bool,
    /// The parent's OOM-kill counter includes its children (v2 without
    /// `memory_localevents`). When false (v1, hybrid) the counter dies with
    /// the runtime's leaf unless the run reads the leaf before deletion
    /// (`runc run --keep`) or holds the memory limit on its parent cgroup
    /// (see `RunCgroup::limit_memory`).
    pub hierarchical_oom_counter: bool,
}

impl CgroupLayout {
    pub const MOUNTINFO: &'static str = "/proc/self/mountinfo";

    /// Reads this process's mount table.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new(Self::MOUNTINFO);
        let text = std::fs::read_to_string(path).map_err(|err| CgroupError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Self::from_mountinfo(&text)
    }

    /// Parses mountinfo text (proc(5)). Duplicate mounts of one hierarchy
    /// keep the first whose root is `/`: a bind of a sub-cgroup (as inside a
    /// container) is not where `/rlm-sandbox` belongs.
    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut v1: Vec<V1Hierarchy> = Vec::new();
        let mut unified = None;
        let mut local_events = false;
        for line in text.lines() {
            let Some(m) = parse_line(line) else { continue };
            if m.root != "/" {
                continue;
            }
            match m.fstype {
                "cgroup2" if unified.is_none() => {
                    local_events = m
                        .super_options
                        .split(',')
                        .any(|o| o == "memory_localevents");
                    unified = Some(m.mount_point);
                }
                "cgroup" => {
                    let controllers: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| is_v1_controller_option(o))
                        .map(str::to_owned)
                        .collect();
                    let seen = v1.iter().any(|h| h.controllers == controllers);
                    if !controllers.is_empty() && !seen {
                        v1.push(V1Hierarchy {
                            mount: m.mount_point,
                            controllers,
                        });
                    }
                }
                _ => {}
            }
        }
        let v1_has_controllers = v1
            .iter()
            .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
        let mode = match (v1_has_controllers, unified.is_some()) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::V1,
            (false, true) => {
                // A named v1 hierarchy beside a full cgroup2 tree carries no
                // limits; the runtimes ignore it in unified mode.
                v1.clear();
                CgroupMode::V2
            }
            (false, false) => {
                return Err(CgroupError::NoCgroupMounts {
                    path: PathBuf::from(Self::MOUNTINFO),
                })
            }
        };
        Ok(Self {
            mode,
            v1,
            unified,
            local_events,
        })
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    pub fn v1_hierarchies(&self) -> &[V1Hierarchy] {
        &self.v1
    }

    pub fn unified_mount(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    pub(crate) fn local_events(&self) -> bool {
        self.local_events
    }

    /// Mount point of the v1 hierarchy carrying `controller`.
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount.as_path())
    }

    /// Every hierarchy's mount point: v1 ones first, then the unified one.
    pub fn mounts(&self) -> impl Iterator<Item = &Path> {
        self.v1
            .iter()
            .map(|h| h.mount.as_path())
            .chain(self.unified.as_deref())
    }

    /// Controllers the unified root offers (`cgroup.controllers`); empty in
    /// hybrid mode, where they are bound to v1.
    pub(crate) fn unified_controllers(&self) -> Vec<String> {
        self.unified
            .as_ref()
            .and_then(|u| std::fs::read_to_string(u.join("cgroup.controllers")).ok())
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Whether each limit can be enforced here. Reads control files below
    /// the mount points; a file that is missing means "no".
    pub fn capabilities(&self) -> Capabilities {
        let v2 = self.unified_controllers();
        let in_v2 = |c: &str| v2.iter().any(|x| x == c);
        let memory_v1 = self.v1_mount("memory");
        let memory = memory_v1.is_some() || in_v2("memory");
        let memory_swap = if let Some(m) = memory_v1 {
            Some(m.join("memory.memsw.limit_in_bytes").exists())
        } else if in_v2("memory") {
            // The root cgroup has no memory.swap.max: look one level down.
            self.unified.as_deref().and_then(v2_swap_file_present)
        } else {
            Some(false)
        };
        Capabilities {
            memory,
            memory_swap,
            pids: self.v1_mount("pids").is_some() || in_v2("pids"),
            cpu: self.v1_mount("cpu").is_some() || in_v2("cpu"),
            hierarchical_oom_counter: memory_v1.is_none() && in_v2("memory") && !self.local_events,
        }
    }
}

/// `Some(true)` when a first-level child of the unified root has
/// `memory.swap.max`; `None` when no child has the memory controller at all.
fn v2_swap_file_present(root: &Path) -> Option<bool> {
    let mut saw_memory = false;
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let dir = entry.path();
        if dir.join("memory.swap.max").exists() {
            return Some(true);
        }
        saw_memory |= dir.join("memory.max").exists();
    }
    saw_memory.then_some(false)
}

/// A v1 super option that names a controller or a named hierarchy, as
/// opposed to a mount flag (`rw`, `seclabel`, `xattr`, `release_agent=`…).
fn is_v1_controller_option(opt: &str) -> bool {
    const CONTROLLERS: [&str; 15] = [
        "cpuset",
        "cpu",
        "cpuacct",
        "blkio",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "perf_event",
        "net_prio",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
        "debug",
    ];
    CONTROLLERS.contains(&opt) || opt.starts_with("name=")
}

struct MountLine<'a> {
    root: String,
    mount_point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &str) -> Option<MountLine<'_>> {
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let (_id, _parent, _dev) = (head.next()?, head.next()?, head.next()?);
    let root = unescape(head.next()?);
    let mount_point = PathBuf::from(unescape(head.next()?));
    let mut tail = tail.split(' ');
    let fstype = tail.next()?;
    let _source = tail.next()?;
    let super_options = tail.next().unwrap_or("");
    Some(MountLine {
        root,
        mount_point,
        fstype,
        super_options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const V1: &str = include_str!("../../tests/fixtures/cgroup/v1/mountinfo");
    const V2: &str = include_str!("../../tests/fixtures/cgroup/v2/mountinfo");
    const HYBRID: &str = include_str!("../../tests/fixtures/cgroup/hybrid/mountinfo");
    const HYBRID_SYSTEMD: &str =
        include_str!("../../tests/fixtures/cgroup/hybrid/mountinfo-systemd");
    const CONTAINER: &str = include_str!("../../tests/fixtures/cgroup/v2/mountinfo-container");

    fn v1(mount: &str, controllers: &[&str]) -> V1Hierarchy {
        V1Hierarchy {
            mount: PathBuf::from(mount),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn pure_v1_with_co_mounted_controllers() {
        let l = CgroupLayout::from_mountinfo(V1).unwrap();
        assert_eq!(l.mode(), CgroupMode::V1);
        assert_eq!(l.unified_mount(), None);
        assert_eq!(
            l.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            l.v1_mount("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            l.v1_mount("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd"))
        );
        assert_eq!(
            l.v1_hierarchies()[0],
            v1("/sys/fs/cgroup/systemd", &["name=systemd"])
        );
        assert_eq!(l.v1_hierarchies().len(), 12);
    }

    #[test]
    fn pure_v2() {
        let l = CgroupLayout::from_mountinfo(V2).unwrap();
        assert_eq!(l.mode(), CgroupMode::V2);
        assert_eq!(l.unified_mount(), Some(Path::new("/sys/fs/cgroup")));
        assert!(l.v1_hierarchies().is_empty());
        assert!(!l.local_events());
    }

    #[test]
    fn hybrid_as_on_the_development_machine() {
        let l = CgroupLayout::from_mountinfo(HYBRID).unwrap();
        assert_eq!(l.mode(), CgroupMode::Hybrid);
        assert_eq!(l.unified_mount(), Some(Path::new("/sys/fs/cgroup/unified")));
        let mounts: Vec<_> = l.mounts().map(|p| p.display().to_string()).collect();
        let names = [
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
            "unified",
        ];
        assert_eq!(mounts, names.map(|n| format!("/sys/fs/cgroup/{n}")));
    }

    #[test]
    fn systemd_hybrid_with_escaped_paths_and_local_events() {
        let l = CgroupLayout::from_mountinfo(HYBRID_SYSTEMD).unwrap();
        assert_eq!(l.mode(), CgroupMode::Hybrid);
        assert!(l.local_events());
        assert_eq!(
            l.v1_mount("net_prio"),
            Some(Path::new("/sys/fs/cgroup/net_cls,net_prio"))
        );
        assert_eq!(
            l.v1_mount("perf_event"),
            Some(Path::new("/sys/fs/cgroup/perf event"))
        );
    }

    #[test]
    fn container_bind_of_a_sub_cgroup_is_skipped() {
        // Inside a container the cgroup2 mount's root is the container's
        // own cgroup: the host mount (root "/") must win, and a lone
        // sub-cgroup mount is no place for /rlm-sandbox.
        let l = CgroupLayout::from_mountinfo(CONTAINER).unwrap();
        assert_eq!(l.unified_mount(), Some(Path::new("/sys/fs/cgroup")));
        let only_sub = CONTAINER
            .lines()
            .filter(|l| !l.contains(" / /sys/fs/cgroup "))
            .collect::<Vec<_>>();
        let err = CgroupLayout::from_mountinfo(&only_sub.join("\n")).unwrap_err();
        assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
    }

    #[test]
    fn no_cgroup_mounts_is_an_error() {
        let text = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n";
        assert!(matches!(
            CgroupLayout::from_mountinfo(text),
            Err(CgroupError::NoCgroupMounts { .. })
        ));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b\134c\011"), "/a b\\c\t");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn capabilities_on_fake_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // v1: memory with memsw, pids, no cpu.
        for d in ["memory", "pids"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        std::fs::write(root.join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        let text = format!(
            "32 31 0:29 / {r}/memory rw - cgroup cgroup rw,memory\n33 31 0:30 / {r}/pids rw - cgroup cgroup rw,pids\n",
            r = root.display()
        );
        let caps = CgroupLayout::from_mountinfo(&text).unwrap().capabilities();
        let want = Capabilities {
            memory: true,
            memory_swap: Some(true),
            pids: true,
            cpu: false,
            hierarchical_oom_counter: false,
        };
        assert_eq!(caps, want);

        // v2: controllers from cgroup.controllers; swap from a child.
        let u = root.join("unified");
        std::fs::create_dir_all(u.join("system.slice")).unwrap();
        std::fs::write(
            u.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        std::fs::write(u.join("system.slice/memory.max"), "max\n").unwrap();
        let text = format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            u.display()
        );
        let layout = CgroupLayout::from_mountinfo(&text).unwrap();
        let want = Capabilities {
            memory: true,
            memory_swap: Some(false),
            pids: true,
            cpu: true,
            hierarchical_oom_counter: true,
        };
        assert_eq!(layout.capabilities(), want);
        std::fs::write(u.join("system.slice/memory.swap.max"), "max\n").unwrap();
        assert_eq!(layout.capabilities().memory_swap, Some(true));
    }
}
