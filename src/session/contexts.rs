//! A session's contexts: host files the sandbox reads through read-only
//! mounts, never through a pipe or an argument.
//!
//! The run's input directory holds `contexts/`, seen in the sandbox at
//! [`CONTEXTS_DIR`]. A context given at start is bind-mounted by the
//! runtime onto an empty file the driver created there (`contexts/N`). A
//! context added to a live session is placed in that directory, a drop
//! directory (src/supervise/drop_dir.rs): a read-only bind mount the kernel
//! propagates into the running sandbox, no byte copied, when the sandbox
//! user may read the file; else a copy it may read. (A hard link cannot be
//! made there: the drop directory is a mount point of its own, and `link`
//! never crosses one, whatever the filesystem.) A context given as a file
//! opened already ([`Source::Opened`]: a server's client's) is always
//! placed that way, from its descriptor, at the start too.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use crate::bundle::spec::{CONTEXTS_DIR, CONTEXTS_SUBDIR};
use crate::supervise::drop_dir;
use crate::supervise::guard::share_with_sandbox;

/// How a context's bytes are read: as text or as parsed JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `json` for a `.json` file, else `text`.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Text,
        }
    }

    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "format must be \"text\" or \"json\", got {other:?}"
            )),
        }
    }
}

/// Where a session gets a context file from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A path the session resolves and opens itself, with its own
    /// credentials: its caller's files (`rlm-sandbox session`).
    Path(PathBuf),
    /// A file opened already (by `serve`, with its client's credentials:
    /// src/serve/as_peer.rs): the session mounts, copies and indexes this
    /// open file and never resolves a path to it again, so what the sandbox
    /// gets is exactly what the client could open.
    Opened(Arc<Opened>),
}

/// A file opened for a session, and the path it was opened at (for the
/// `ready` event and errors only: never opened again).
#[derive(Debug)]
pub struct Opened {
    pub path: PathBuf,
    pub file: File,
}

impl Source {
    /// The path named: the format follows its extension.
    pub fn path(&self) -> &Path {
        match self {
            Source::Path(path) => path,
            Source::Opened(opened) => &opened.path,
        }
    }

    /// The file of `context` (described from this source) as a descriptor
    /// that mounts, copies and reads work on: a path opened now following
    /// no symbolic link (it is canonical: a link there now was put there
    /// since), or the opened file itself.
    fn descriptor(&self, context: &Context) -> std::io::Result<OwnedFd> {
        match self {
            Source::Path(_) => drop_dir::open_source(&context.host_path),
            Source::Opened(opened) => opened.file.as_fd().try_clone_to_owned(),
        }
    }
}

impl PartialEq for Source {
    /// The same path, or the same opened file.
    fn eq(&self, other: &Source) -> bool {
        match (self, other) {
            (Source::Path(a), Source::Path(b)) => a == b,
            (Source::Opened(a), Source::Opened(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// How the context reached the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Bind-mounted read-only: by the runtime (contexts given at start),
    /// or by the driver into the drop directory of a live sandbox.
    Mount,
    /// Copied: another filesystem, or a file the sandbox user may not read.
    Copy,
}

/// One context of a session.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub index: usize,
    /// The variable holding it in the sandbox (`context_N`).
    pub name: String,
    pub host_path: PathBuf,
    /// Where the sandbox sees it.
    pub path: String,
    pub format: Format,
    pub size: u64,
    pub placed: Placement,
}

#[derive(Debug, Error)]
pub enum ContextError {
    #[error("context {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("context {path} is not a regular file")]
    NotAFile { path: PathBuf },
}

/// Checks a context file and describes it as the `index`th context: a
/// path is made canonical (its links followed, with this process's
/// credentials); an opened file is described from the open file.
pub fn describe(
    index: usize,
    source: &Source,
    format: Option<Format>,
    placed: Placement,
) -> Result<Context, ContextError> {
    let named = source.path();
    let io = |err| ContextError::Io {
        path: named.to_path_buf(),
        err,
    };
    let (host_path, meta) = match source {
        Source::Path(path) => {
            let host_path = std::fs::canonicalize(path).map_err(io)?;
            let meta = std::fs::metadata(&host_path).map_err(io)?;
            (host_path, meta)
        }
        Source::Opened(opened) => (opened.path.clone(), opened.file.metadata().map_err(io)?),
    };
    if !meta.is_file() {
        return Err(ContextError::NotAFile { path: host_path });
    }
    Ok(Context {
        index,
        name: format!("context_{index}"),
        path: format!("{CONTEXTS_DIR}/{index}"),
        format: format.unwrap_or_else(|| Format::of(&host_path)),
        size: meta.len(),
        host_path,
        placed,
    })
}

/// Whether the sandbox user can read a file of this `mode` and group
/// without a copy: it is readable by others (the sandbox user is neither
/// owner nor in its group), or by the sandbox's group.
fn readable_by_sandbox(mode: u32, gid: u32) -> bool {
    mode & 0o004 != 0 || (gid == rootfs_builder::SANDBOX_GID && mode & 0o040 != 0)
}

/// Whether the sandbox user cannot read the file at `path` as it is (a
/// context given at start is then copied; see [`prepare_dir`]).
pub fn needs_copy(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| !readable_by_sandbox(m.mode(), m.gid()))
}

/// Creates `input_dir/contexts` with one empty mount point per context
/// given at start, and returns the file the runtime mounts on each: the
/// context itself, or a copy beside the mount points (`.copy-N`) when the
/// sandbox user may not read it. (Contexts given as opened files are
/// [`place`]d from their descriptors instead, once the sandbox has
/// started: a runtime mounts paths.)
pub fn prepare_dir(input_dir: &Path, contexts: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let dir = input_dir.join(CONTEXTS_SUBDIR);
    std::fs::create_dir(&dir)?;
    share_with_sandbox(&dir, 0o750)?;
    let mut sources = Vec::with_capacity(contexts.len());
    for (i, path) in contexts.iter().enumerate() {
        std::fs::File::create(dir.join(i.to_string()))?;
        if needs_copy(path) {
            let copy = input_dir.join(format!(".copy-{i}"));
            copy_for_sandbox(path, &copy).map_err(|e| match e {
                ContextError::Io { err, .. } => err,
                other => std::io::Error::other(other.to_string()),
            })?;
            sources.push(copy);
        } else {
            sources.push(path.clone());
        }
    }
    Ok(sources)
}

/// Opens the file of `context` (described from `source`) for reading,
/// following no symbolic link, as [`place`] does: the descriptor its echo
/// index is built from, so a client that removes or renames the file
/// after `ready` changes nothing.
pub fn open(source: &Source, context: &Context) -> Result<File, ContextError> {
    let io = |err| ContextError::Io {
        path: context.host_path.clone(),
        err,
    };
    let fd = source.descriptor(context).map_err(io)?;
    reopen_read_only(&fd).map_err(io)
}

/// The file of the descriptor `source` (`O_PATH` or not), opened for reading
/// through its `/proc/self/fd` link: the same file, whatever its path
/// names by now.
fn reopen_read_only(source: &OwnedFd) -> std::io::Result<File> {
    File::open(format!("/proc/self/fd/{}", source.as_raw_fd()))
}

/// Places `context` (described from `source`; added to a live session,
/// claimed with a standby, or opened for a cold one) in the drop
/// directory, at `contexts/<index>`: bind-mounted read-only (no byte
/// copied) when the sandbox user may read it, else copied. The file is
/// opened once (see [`Source::descriptor`]), or was opened already, and
/// every step works on that open file. Returns the file the sandbox sees,
/// open for reading (for its echo index): the mounted file itself, or the
/// copy.
pub fn place(
    input_dir: &Path,
    context: &mut Context,
    source: &Source,
) -> Result<File, ContextError> {
    let target = input_dir
        .join(CONTEXTS_SUBDIR)
        .join(context.index.to_string());
    let host_path = context.host_path.clone();
    let io = |err| ContextError::Io {
        path: host_path.clone(),
        err,
    };
    let source = source.descriptor(context).map_err(io)?;
    let stat = nix::sys::stat::fstat(source.as_raw_fd()).map_err(|e| io(e.into()))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ContextError::NotAFile { path: host_path });
    }
    if readable_by_sandbox(stat.st_mode, stat.st_gid) {
        let opened = reopen_read_only(&source).map_err(io)?;
        match mount_at(&source, &target) {
            Ok(()) => {
                context.placed = Placement::Mount;
                return Ok(opened);
            }
            // Refused (e.g. a drop directory that is no mount point): a
            // copy, as the reply's `placed` says.
            Err(e) => eprintln!(
                "rlm-sandbox: context {} cannot be bind-mounted ({e}); copying it",
                host_path.display()
            ),
        }
    }
    // The open file itself, through its descriptor.
    let from = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
    copy_for_sandbox(&from, &target).map_err(|e| match e {
        ContextError::Io { path, err } if path == from => io(err),
        other => other,
    })?;
    context.placed = Placement::Copy;
    File::open(&target).map_err(|err| ContextError::Io { path: target, err })
}

/// Removes what [`place`] put at `contexts/<index>` (a mount, a link or a
/// copy), e.g. when the sandbox refused the context.
pub fn unplace(input_dir: &Path, index: usize) -> std::io::Result<()> {
    let target = input_dir.join(CONTEXTS_SUBDIR).join(index.to_string());
    // Not a mount point unless `place` mounted it.
    let _ = drop_dir::detach(&target);
    std::fs::remove_file(&target)
}

/// An empty file at `target`, then the open file bind-mounted onto it
/// read-only; the empty file goes again if the mount fails.
fn mount_at(source: &OwnedFd, target: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)?;
    drop_dir::attach_read_only(source, target).inspect_err(|_| {
        let _ = std::fs::remove_file(target);
    })
}

/// Copies `from` to `to`, readable by the sandbox's group only.
fn copy_for_sandbox(from: &Path, to: &Path) -> Result<(), ContextError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |err| ContextError::Io { path, err }
    };
    std::fs::copy(from, to).map_err(io(from))?;
    share_with_sandbox(to, 0o640).map_err(io(to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o640)).map_err(io(to))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension_unless_declared() {
        assert_eq!(Format::of(Path::new("/x/a.json")), Format::Json);
        assert_eq!(Format::of(Path::new("/x/a.JSON")), Format::Json);
        assert_eq!(Format::of(Path::new("/x/a.txt")), Format::Text);
        assert_eq!(Format::of(Path::new("/x/json")), Format::Text);
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert!(Format::parse("yaml").unwrap_err().contains("\"yaml\""));
    }

    #[test]
    fn a_directory_is_not_a_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &Path| Source::Path(p.to_path_buf());
        let err = describe(0, &path(dir.path()), None, Placement::Mount).unwrap_err();
        assert!(matches!(err, ContextError::NotAFile { .. }), "{err}");
        let opened = Source::Opened(Arc::new(Opened {
            path: dir.path().to_path_buf(),
            file: File::open(dir.path()).unwrap(),
        }));
        let err = describe(0, &opened, None, Placement::Mount).unwrap_err();
        assert!(matches!(err, ContextError::NotAFile { .. }), "{err}");
        let missing =
            describe(0, &path(&dir.path().join("nope")), None, Placement::Mount).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
