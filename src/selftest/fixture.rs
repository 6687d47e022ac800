//! Host-side fixtures: things an attack reaches for that must exist on the
//! host (a listener, a file, a SysV segment), so that "the sandbox could
//! not see it" is a result and not an accident of an empty host. Each is
//! removed when its `Active` value is dropped.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// What an attack needs set up on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    None,
    /// A TCP listener on the host's 127.0.0.1; `@PORT@` in the code.
    LoopbackListener,
    /// A file with random content in the host's temp dir; `@CANARY@`.
    HostCanary,
    /// A SysV shared-memory segment on the host (`@SHMKEY@`, decimal) and
    /// a marker name for the sandbox's /dev/shm (`@MARKER@`).
    HostIpc,
    /// The host's idle CPU time during the run (from /proc/stat): how much
    /// more CPU the sandbox could have had, so a quota row can tell the
    /// quota from a busy host.
    HostCpu,
}

/// What the host saw during and after the run.
#[derive(Debug, Default, Clone)]
pub struct HostFacts {
    /// Connections the host listener accepted.
    pub connections: Option<usize>,
    /// The canary's content (never printed by a passing run).
    pub canary: Option<String>,
    /// The host's IPC namespace (`ipc:[...]`).
    pub host_ipc_ns: Option<String>,
    /// The key of the host's segment and whether the host lists it.
    pub shm_key: Option<i32>,
    pub shm_on_host: bool,
    /// The sandbox's /dev/shm marker appeared in the host's /dev/shm.
    pub marker_on_host: bool,
    /// CPU time no task on the host used during the run (all cores).
    pub host_idle_ms: Option<u64>,
}

/// A fixture that is set up; torn down on drop.
pub struct Active {
    listener: Option<TcpListener>,
    canary: Option<(tempfile::TempDir, PathBuf, String)>,
    shm: Option<(i32, i32)>,
    marker: String,
    idle_at_start: Option<u64>,
}

impl Fixture {
    pub fn set_up(self) -> Result<Active, String> {
        let mut active = Active {
            listener: None,
            canary: None,
            shm: None,
            idle_at_start: None,
            marker: format!("rlms-selftest-{}-{}", std::process::id(), random_hex(6)),
        };
        match self {
            Fixture::None => {}
            Fixture::LoopbackListener => {
                let l = TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
                l.set_nonblocking(true)
                    .map_err(|e| format!("cannot make the listener non-blocking: {e}"))?;
                active.listener = Some(l);
            }
            Fixture::HostCanary => {
                let dir = tempfile::Builder::new()
                    .prefix("rlms-canary-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a canary dir: {e}"))?;
                let path = dir.path().join("canary.txt");
                let content = format!("rlms-canary-{}", random_hex(16));
                std::fs::write(&path, &content)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                active.canary = Some((dir, path, content));
            }
            Fixture::HostCpu => {
                active.idle_at_start =
                    Some(host_idle_ms().ok_or("cannot read the idle time in /proc/stat")?);
            }
            Fixture::HostIpc => {
                let key = 0x524c_0000 | (std::process::id() as i32 & 0xffff);
                // SAFETY: shmget takes plain integers and creates (or
                // fails to create) a segment; no memory is passed.
                let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
                if id < 0 {
                    return Err(format!(
                        "cannot create a SysV segment with key {key}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                active.shm = Some((key, id));
            }
        }
        Ok(active)
    }
}

impl Active {
    /// `code` with this fixture's values in place of its placeholders.
    pub fn substitute(&self, code: &str) -> String {
        let port = self
            .listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port());
        let canary = self
            .canary
            .as_ref()
            .map_or_else(String::new, |(_, p, _)| p.display().to_string());
        let key = self.shm.map_or(0, |(k, _)| k);
        code.replace("@PORT@", &port.to_string())
            .replace("@CANARY@", &canary)
            .replace("@SHMKEY@", &key.to_string())
            .replace("@MARKER@", &self.marker)
            .replace("@HOSTPID@", &std::process::id().to_string())
    }

    /// What the host saw; call after the run.
    pub fn observe(&self) -> HostFacts {
        let connections = self.listener.as_ref().map(|l| {
            let mut n = 0;
            loop {
                match l.accept() {
                    Ok(_) => n += 1,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break n,
                }
            }
        });
        let host_ipc_ns = std::fs::read_link("/proc/self/ns/ipc")
            .ok()
            .map(|p| p.display().to_string());
        let shm_on_host = self.shm.is_some_and(|(key, _)| {
            std::fs::read_to_string("/proc/sysvipc/shm").is_ok_and(|t| {
                t.lines()
                    .any(|l| l.split_whitespace().next() == Some(&key.to_string()))
            })
        });
        HostFacts {
            connections,
            canary: self.canary.as_ref().map(|(_, _, c)| c.clone()),
            host_ipc_ns,
            shm_key: self.shm.map(|(k, _)| k),
            shm_on_host,
            marker_on_host: Path::new("/dev/shm").join(&self.marker).exists(),
            host_idle_ms: self
                .idle_at_start
                .and_then(|start| Some(host_idle_ms()?.saturating_sub(start))),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some((_, id)) = self.shm {
            // SAFETY: IPC_RMID takes no buffer (null is allowed) and only
            // marks our own segment for removal.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(&self.marker));
    }
}

/// Idle and iowait time of all cores since boot, in ms (/proc/stat's
/// first line counts in USER_HZ, 100 per second on Linux).
fn host_idle_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((fields.get(3)? + fields.get(4)?) * 10)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        // Uniqueness within this process is all the names need.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        buf = nanos.to_le_bytes().to_vec();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
