//! The drop directory of a started sandbox: files added after the start
//! reach it as read-only bind mounts, without a byte copied.
//!
//! Before the runtime starts, the driver makes the drop directory (the run's
//! `input/contexts`) its own mount point with shared propagation, and the
//! bundle mounts it with `rslave` propagation. A mount the driver later
//! attaches onto an empty file in it propagates into the sandbox's mount
//! namespace: runc's container, or runsc's gofer (whose mounts the Sentry
//! reads through, directfs or not). The mount is made read-only, nosuid,
//! nodev and noexec while it is still detached, so the copies the kernel
//! propagates are read-only too (a remount does not propagate).
//!
//! Every mount is under the run directory and goes with it:
//! [`unmount_under`] runs before the run directory is removed (the run's
//! guard, its watchdog, `gc`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Makes `dir` a mount point of its own (a bind onto itself) in a peer group
/// of its own: what is mounted under it later propagates to its slaves (the
/// sandbox's view of it), and to nothing else.
pub fn make_shared(dir: &Path) -> std::io::Result<()> {
    let none: Option<&str> = None;
    mount(Some(dir), dir, none, MsFlags::MS_BIND, none)?;
    let propagation = mount(none, dir, none, MsFlags::MS_PRIVATE, none)
        .and_then(|()| mount(none, dir, none, MsFlags::MS_SHARED, none));
    if let Err(e) = propagation {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        return Err(e.into());
    }
    Ok(())
}

/// Opens the file at `path` as an `O_PATH` descriptor without following any
/// symbolic link, in any component, the last included (`openat2` with
/// `RESOLVE_NO_SYMLINKS`, stricter than `O_NOFOLLOW`): `path` is already
/// canonical, so a link found now was put there since, by someone else,
/// and is refused (`ELOOP`).
pub fn open_source(path: &Path) -> std::io::Result<OwnedFd> {
    openat2(
        path,
        libc::O_PATH | libc::O_CLOEXEC,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens the file at `path` for reading with the calling thread's
/// credentials, as a process's own `open(path, O_RDONLY)` would: ordinary
/// symbolic links are followed (each hop checked with those credentials),
/// `/proc` magic links are refused (`ELOOP`: they jump past the
/// directories' permission checks, and `/proc/self` would be this
/// process). `O_NONBLOCK` so that a FIFO cannot block the open (the
/// caller refuses what is not a regular file); `O_NOCTTY` so that a
/// terminal never becomes ours.
pub fn open_for_reading(path: &Path) -> std::io::Result<OwnedFd> {
    openat2(
        path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        libc::RESOLVE_NO_MAGICLINKS,
    )
}

fn openat2(path: &Path, flags: libc::c_int, resolve: u64) -> std::io::Result<OwnedFd> {
    let cpath = c_path(path)?;
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 reads a NUL-terminated path and an `open_how` of the
    // size passed, both alive for the call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd)
}

/// Mounts the file `source` (from [`open_source`] or [`open_for_reading`]) read-only, nosuid, nodev
/// and noexec onto the existing file `target`, which must be in a drop
/// directory made by [`make_shared`] for the sandbox to see it.
pub fn attach_read_only(source: &OwnedFd, target: &Path) -> std::io::Result<()> {
    // A detached copy of the file's mount, private to us until attached.
    // SAFETY: open_tree reads an empty NUL-terminated path relative to a
    // descriptor we own; it returns a new descriptor or -1.
    let tree = owned(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads an empty path and a `mount_attr` of the
    // size passed, alive for the call, for a descriptor we own.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    // The target is in our own run directory; opened without following a
    // link all the same.
    let target_fd = owned(
        // SAFETY: open reads a NUL-terminated path alive for the call.
        unsafe {
            libc::open(
                c_path(target)?.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        }
        .into(),
    )?;
    // SAFETY: move_mount reads two empty paths relative to descriptors we
    // own; it attaches the detached tree onto the target or fails.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target_fd.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

/// Unmounts `target` (one file attached by [`attach_read_only`]).
pub fn detach(target: &Path) -> std::io::Result<()> {
    umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(Into::into)
}

/// Unmounts every mount at or below `root` in this mount namespace, deepest
/// first, and returns how many it unmounted: what a run directory held must
/// be gone before the directory can be removed.
pub fn unmount_under(root: &Path) -> std::io::Result<usize> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let info = std::fs::read("/proc/self/mountinfo")?;
    let mut points = mount_points_under(&info, &root);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut unmounted = 0;
    for point in points {
        match umount2(&point, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => unmounted += 1,
            // Gone with a parent detached before it.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::Error::from(e).kind(),
                    format!("cannot unmount {}: {e}", point.display()),
                ))
            }
        }
    }
    Ok(unmounted)
}

/// The mount points in a `/proc/self/mountinfo` text at or below `root`.
fn mount_points_under(mountinfo: &[u8], root: &Path) -> Vec<PathBuf> {
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(root))
        .collect()
}

/// A mountinfo path: space, tab, newline and backslash are octal escapes.
fn unescape(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

// linux/mount.h (the libc crate lacks some of these on glibc targets).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x01;
const MOUNT_ATTR_NOSUID: u64 = 0x02;
const MOUNT_ATTR_NODEV: u64 = 0x04;
const MOUNT_ATTR_NOEXEC: u64 = 0x08;

/// `struct mount_attr` (linux/mount.h, MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

fn check(ret: libc::c_long) -> std::io::Result<()> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn owned(ret: libc::c_long) -> std::io::Result<OwnedFd> {
    check(ret)?;
    let fd = RawFd::try_from(ret).map_err(|_| std::io::Error::other("descriptor out of range"))?;
    // SAFETY: a syscall that returns a descriptor returned this new one,
    // owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_under_a_directory() {
        let info = b"22 27 0:21 / /proc rw - proc proc rw\n\
            80 27 254:0 /x /run/s/rlms-1/input/contexts rw shared:5 - ext4 /dev/vda rw\n\
            81 80 0:46 /ctx /run/s/rlms-1/input/contexts/0 ro - tmpfs tmpfs rw\n\
            82 27 0:46 /ctx /run/s/rlms-10/input/contexts/0 ro - tmpfs tmpfs rw\n\
            83 27 0:46 /ctx /run/s/rlms-1/a\\040b ro - tmpfs tmpfs rw\n";
        let points = mount_points_under(info, Path::new("/run/s/rlms-1"));
        assert_eq!(
            points,
            [
                "/run/s/rlms-1/input/contexts",
                "/run/s/rlms-1/input/contexts/0",
                "/run/s/rlms-1/a b",
            ]
            .map(PathBuf::from),
            "a sibling sharing the prefix (rlms-10) is not under rlms-1"
        );
    }

    /// The source is opened without following a link anywhere in its path;
    /// the negative control: a plain open of the same path follows it.
    #[test]
    fn a_link_in_the_source_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("f"), dir.path().join("flink")).unwrap();
        assert!(open_source(&real.join("f")).is_ok());
        for linked in [dir.path().join("link/f"), dir.path().join("flink")] {
            assert!(
                std::fs::File::open(&linked).is_ok(),
                "control: {}",
                linked.display()
            );
            let err = open_source(&linked).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ELOOP),
                "{}: {err}",
                linked.display()
            );
        }
    }
}
