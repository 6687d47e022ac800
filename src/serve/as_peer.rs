//! Context files opened with a client's credentials: a client must not get
//! the server (root) to mount a file it could not read itself.
//!
//! The peer's uid and gid (SO_PEERCRED) and supplementary groups
//! (SO_PEERGROUPS), both as of its `connect`, are taken by a short-lived
//! thread of its own, which opens the file and exits. Credentials are
//! per-thread in the kernel: the raw `setgroups`, `setfsgid` and
//! `setfsuid` system calls change only the calling thread's (glibc's
//! `setgroups` and `setuid` wrappers would change every thread's, the
//! server's included), and so does `capset`, which then clears the
//! thread's effective capabilities: with root's `CAP_SYS_PTRACE` it could
//! still open another process's `/proc/PID/environ`. The open is then the
//! client's own `open(path, O_RDONLY)`: every directory searched and the
//! file read-checked with its fsuid, fsgid and groups, ordinary symbolic
//! links followed as they would be for it (each hop checked likewise; a
//! link cannot widen what it may read), `/proc` magic links refused. A
//! forked child sending the descriptor back would be as exact, and slower
//! (a fork of a threaded server per context).
//!
//! The descriptor is what the session mounts, copies and indexes
//! (`contexts::Source::Opened`): no path is resolved again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::supervise::drop_dir;

/// How long an open may take (a path on a stalled network or FUSE
/// filesystem of the client's): then it is refused, and its thread is left
/// to finish by itself.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The most supplementary groups a peer has (NGROUPS_MAX).
const MAX_GROUPS: usize = 65536;

/// The most opens in flight at once, server-wide: a thread stuck on a
/// client's stalled filesystem outlives its timeout, and a client must not
/// pile them up without bound.
pub const MAX_IN_FLIGHT: usize = 64;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One open in flight, counted until its thread ends.
struct InFlight;

impl InFlight {
    fn take() -> Option<InFlight> {
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whose credentials an open uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Why a context was not opened.
#[derive(Debug)]
pub enum Refused {
    /// Not an absolute path: it would resolve against the server's
    /// directory.
    Relative,
    /// The open failed with these credentials (EACCES, ENOENT, ELOOP...).
    Open(std::io::Error),
    /// Opened, but not a regular file.
    NotAFile,
    /// The server cannot take the credentials (not root).
    Switch(String),
    TimedOut,
    /// [`MAX_IN_FLIGHT`] opens are stuck already.
    Busy,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Relative => write!(f, "not an absolute path"),
            Refused::Open(e) => {
                let name = e
                    .raw_os_error()
                    .map(|n| format!(" ({:?})", nix::errno::Errno::from_raw(n)))
                    .unwrap_or_default();
                write!(f, "cannot be opened for reading: {e}{name}")
            }
            Refused::NotAFile => write!(f, "is not a regular file"),
            Refused::Switch(why) => write!(f, "cannot be opened as the client: {why}"),
            Refused::TimedOut => {
                write!(f, "its open took longer than {} s", OPEN_TIMEOUT.as_secs())
            }
            Refused::Busy => write!(
                f,
                "{MAX_IN_FLIGHT} opens are in flight already (stalled filesystems?); try again"
            ),
        }
    }
}

/// The supplementary groups of `stream`'s peer as of its `connect`
/// (SO_PEERGROUPS).
pub fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live
        // buffer and sets `len` to the size written (or needed: ERANGE).
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > MAX_GROUPS {
            return Err(e);
        }
        groups.resize(n, 0);
    }
}

/// Opens the regular file at `path` for reading: with `who`'s credentials
/// on a thread of its own (see the module's text), or with the server's
/// own when `who` is `None` (a peer of the server's uid).
pub fn open(path: &Path, who: Option<&Credentials>) -> Result<File, Refused> {
    if !path.is_absolute() {
        return Err(Refused::Relative);
    }
    let file = match who {
        None => File::from(drop_dir::open_for_reading(path).map_err(Refused::Open)?),
        Some(who) => open_as(path, who)?,
    };
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        Ok(_) => Err(Refused::NotAFile),
        Err(e) => Err(Refused::Open(e)),
    }
}

fn open_as(path: &Path, who: &Credentials) -> Result<File, Refused> {
    let counted = InFlight::take().ok_or(Refused::Busy)?;
    let (tx, rx) = mpsc::channel();
    let (path, who) = (path.to_path_buf(), who.clone());
    std::thread::Builder::new()
        .name("rlm-as-peer".into())
        .spawn(move || {
            let _counted = counted;
            let opened = become_peer(&who).and_then(|()| {
                drop_dir::open_for_reading(&path)
                    .map(File::from)
                    .map_err(Refused::Open)
            });
            // The thread ends here: its credentials go with it.
            let _ = tx.send(opened);
        })
        .map_err(|e| Refused::Switch(format!("cannot start a thread: {e}")))?;
    rx.recv_timeout(OPEN_TIMEOUT)
        .map_err(|_| Refused::TimedOut)?
}

/// Gives the calling thread (only) `who`'s filesystem credentials and no
/// effective capability.
fn become_peer(who: &Credentials) -> Result<(), Refused> {
    // SAFETY: setgroups reads `len` gids from a slice alive for the call;
    // as a raw system call it changes this thread's credentials only.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, who.groups.len(), who.groups.as_ptr()) };
    if r < 0 {
        return Err(Refused::Switch(format!(
            "setgroups: {}",
            std::io::Error::last_os_error()
        )));
    }
    // setfsgid and setfsuid report no error: each returns the previous
    // value, so a second call returns the value in force.
    // SAFETY: these take a value and change this thread's fsgid and
    // fsuid only (or nothing, without the capability).
    let gid = unsafe {
        libc::syscall(libc::SYS_setfsgid, who.gid);
        libc::syscall(libc::SYS_setfsgid, who.gid)
    };
    // SAFETY: as above.
    let uid = unsafe {
        libc::syscall(libc::SYS_setfsuid, who.uid);
        libc::syscall(libc::SYS_setfsuid, who.uid)
    };
    if (uid, gid) != (libc::c_long::from(who.uid), libc::c_long::from(who.gid)) {
        return Err(Refused::Switch(format!(
            "the server cannot take uid {} gid {} (its fsuid stays {uid}, fsgid {gid}: it needs CAP_SETUID and CAP_SETGID, i.e. root)",
            who.uid, who.gid
        )));
    }
    caps::clear(None, caps::CapSet::Effective)
        .map_err(|e| Refused::Switch(format!("cannot drop the capabilities: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_s_groups_are_read() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(&a).unwrap();
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn relative_paths_fifos_and_magic_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(open(Path::new("x"), None), Err(Refused::Relative)));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Would block without O_NONBLOCK; refused as not a file.
        assert!(matches!(open(&fifo, None), Err(Refused::NotAFile)));
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let held = File::open(&file).unwrap();
        let magic = format!("/proc/self/fd/{}", held.as_raw_fd());
        // The control: a plain open follows the magic link.
        assert!(File::open(&magic).is_ok());
        let err = open(Path::new(&magic), None).unwrap_err();
        assert!(
            matches!(&err, Refused::Open(e) if e.raw_os_error() == Some(libc::ELOOP)),
            "{err}"
        );
        assert!(err.to_string().contains("ELOOP"), "{err}");
        assert!(open(&file, None).is_ok());
    }

    /// The thread's credentials are the peer's and its alone: the file the
    /// server reads is refused to uid 65534 (EACCES), in its own group it
    /// is opened, and the server's threads keep reading it afterwards.
    #[test]
    fn an_open_as_another_uid_is_checked_with_its_credentials_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (the server's credentials)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s").unwrap();
        std::os::unix::fs::chown(&file, Some(0), Some(4242)).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let nobody = |groups: Vec<u32>| Credentials {
            uid: 65534,
            gid: 65534,
            groups,
        };
        let err = open(&file, Some(&nobody(vec![]))).unwrap_err();
        assert!(
            matches!(&err, Refused::Open(e) if e.raw_os_error() == Some(libc::EACCES)),
            "{err}"
        );
        assert!(err.to_string().contains("EACCES"), "{err}");
        assert!(open(&file, Some(&nobody(vec![4242]))).is_ok());
        // The control: the server's own credentials read it, still.
        assert!(open(&file, None).is_ok());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "s");
    }
}
