//! The server's Unix socket: created with mode 0600 with no window in
//! which it has another (bound inside a private 0700 directory beside
//! it, then renamed into place), never over a path that is not a stale
//! socket; its peers identified by SO_PEERCRED.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("{path}: exists and is not a socket; refusing to replace it (remove it, or choose another --socket)")]
    NotSocket { path: PathBuf },
    #[error("{path}: a server already listens there")]
    InUse { path: PathBuf },
    #[error("{path}: {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
}

/// The listening socket; dropping it removes its path (if the path is
/// still this socket).
pub struct Listener {
    pub listener: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
}

impl Listener {
    /// Binds `path` with mode 0600. An existing socket nobody listens on
    /// (a killed server's) is replaced; anything else there is refused.
    pub fn bind(path: &Path) -> Result<Listener, SocketError> {
        let io = |what| {
            move |err| SocketError::Io {
                path: path.to_path_buf(),
                what,
                err,
            }
        };
        let stale = match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(SocketError::NotSocket {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(SocketError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
                Err(e) => return Err(io("cannot tell whether a server listens there")(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io("cannot inspect it")(e)),
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // tempfile creates the directory with mode 0700.
        let private = tempfile::Builder::new()
            .prefix(".rlm-serve-")
            .tempdir_in(parent)
            .map_err(io("cannot create a private directory beside it"))?;
        let inside = private.path().join("socket");
        let listener = UnixListener::bind(&inside).map_err(io("cannot bind"))?;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))
            .map_err(io("cannot set mode 0600"))?;
        if stale {
            std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
        }
        // No replace: a path created meanwhile is never clobbered.
        nix::fcntl::renameat2(
            None,
            &inside,
            None,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| io("cannot move the socket into place")(e.into()))?;
        let m = std::fs::symlink_metadata(path).map_err(io("cannot inspect it"))?;
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
            ino: (m.dev(), m.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Who is on the other end of a connection (SO_PEERCRED: as of connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl PeerCred {
    pub fn of(stream: &UnixStream) -> std::io::Result<PeerCred> {
        let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
        Ok(PeerCred {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
    }
}

/// Whether `peer` may use a server running as `own_uid`: its own uid,
/// or one of the allowed uids or (primary) gids.
pub fn allowed(peer: &PeerCred, own_uid: u32, uids: &[u32], gids: &[u32]) -> bool {
    peer.uid == own_uid || uids.contains(&peer.uid) || gids.contains(&peer.gid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_0600_a_live_one_or_a_file_is_never_replaced_a_stale_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Listener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing but the socket is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let e = Listener::bind(&path).err().unwrap();
        assert!(matches!(e, SocketError::InUse { .. }), "{e}");
        // A dropped listener removes its path; a stale socket is replaced.
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join("old.sock")).unwrap();
        drop(stale);
        let l2 = Listener::bind(&dir.path().join("old.sock")).unwrap();
        drop(l);
        assert!(!path.exists());
        drop(l2);
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = Listener::bind(&file).err().unwrap();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn peers_are_identified_and_checked() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = PeerCred::of(&a).unwrap();
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(me.pid, std::process::id() as i32);
        let other = PeerCred {
            pid: 1,
            uid: 65534,
            gid: 65534,
        };
        assert!(allowed(&me, me.uid, &[], &[]));
        assert!(!allowed(&other, 0, &[], &[]));
        assert!(allowed(&other, 0, &[65534], &[]));
        assert!(allowed(&other, 0, &[], &[65534]));
        assert!(!allowed(&other, 0, &[1000], &[100]));
    }
}
