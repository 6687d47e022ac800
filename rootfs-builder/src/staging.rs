//! The build happens in a temporary sibling of the output (same
//! filesystem, so moving it into place is a rename); the sibling is
//! removed on drop, and stale ones left by killed builds are removed by the
//! next build.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use crate::error::IoContext;
use crate::{Error, MANIFEST_PATH};

/// A staging directory without a pid file younger than this may be a build
/// that has just started.
const STALE_WITHOUT_PID: Duration = Duration::from_secs(60);

pub(crate) struct Staging {
    dir: TempDir,
    pub tree: PathBuf,
    pub debs: PathBuf,
}

fn parent_of(output: &Path) -> &Path {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn prefix_for(output: &Path) -> String {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rootfs".into());
    format!(".{name}.building-")
}

/// Refuses an output that exists and is neither empty nor a rootfs this
/// crate built: replacing it would delete someone's files.
pub(crate) fn check_replaceable(output: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(output) {
        Err(_) => return Ok(()),
        Ok(meta) => meta,
    };
    let replaceable = meta.is_dir()
        && (output.join(MANIFEST_PATH).is_file()
            || fs::read_dir(output).ctx("list", output)?.next().is_none());
    if replaceable {
        Ok(())
    } else {
        Err(Error::Unexpected {
            path: output.to_path_buf(),
            expected: format!(
                "nothing, an empty directory, or a rootfs built by rlm-sandbox (with {MANIFEST_PATH}); refusing to replace anything else"
            ),
        })
    }
}

impl Staging {
    pub fn new(output: &Path) -> Result<Staging, Error> {
        let parent = parent_of(output);
        fs::create_dir_all(parent).ctx("create", parent)?;
        let prefix = prefix_for(output);
        remove_stale(parent, &prefix);
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(parent)
            .ctx("create a staging directory in", parent)?;
        let pid = dir.path().join("pid");
        fs::write(&pid, std::process::id().to_string()).ctx("write", &pid)?;
        let tree = dir.path().join("rootfs");
        let debs = dir.path().join("debs");
        fs::create_dir(&tree).ctx("create", &tree)?;
        fs::create_dir(&debs).ctx("create", &debs)?;
        Ok(Staging { dir, tree, debs })
    }

    /// Moves the finished tree to `output`; a rootfs already there is
    /// moved aside first and deleted with the staging directory, or moved
    /// back if the new one cannot be put in place. (Two renames: between
    /// them `output` is briefly absent; an exchange would need
    /// renameat2(RENAME_EXCHANGE).)
    pub fn commit(self, output: &Path) -> Result<(), Error> {
        check_replaceable(output)?;
        let aside = self.dir.path().join("replaced");
        let had_old = fs::symlink_metadata(output).is_ok();
        if had_old {
            fs::rename(output, &aside).ctx("move aside", output)?;
        }
        if let Err(err) = fs::rename(&self.tree, output) {
            let build = Error::Io {
                action: "move the new rootfs into place at",
                path: output.to_path_buf(),
                err,
            };
            if had_old {
                if let Err(err) = fs::rename(&aside, output) {
                    return Err(Error::Cleanup {
                        build: Box::new(build),
                        cleanup: Box::new(Error::Io {
                            action: "move the previous rootfs back to",
                            path: output.to_path_buf(),
                            err,
                        }),
                    });
                }
            }
            return Err(build);
        }
        let staging = self.dir.path().to_path_buf();
        self.dir.close().ctx("remove", &staging)
    }
}

/// Removes staging directories of builds that are gone (their pid is not
/// running). Best effort: a failure here must not stop a new build.
fn remove_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let alive = match fs::read_to_string(path.join("pid")) {
            Ok(pid) => Path::new("/proc").join(pid.trim()).exists(),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| {
                    SystemTime::now().duration_since(t).unwrap_or_default() < STALE_WITHOUT_PID
                })
                .unwrap_or(true),
        };
        if !alive {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_a_built_rootfs_and_leaves_no_staging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("rootfs");
        fs::create_dir_all(output.join("etc/rlm-sandbox")).expect("mkdir");
        fs::write(output.join(MANIFEST_PATH), "{}").expect("write");
        fs::write(output.join("old"), "").expect("write");
        let staging = Staging::new(&output).expect("staging");
        fs::write(staging.tree.join("new"), "").expect("write");
        staging.commit(&output).expect("commit");
        assert!(output.join("new").exists() && !output.join("old").exists());
        assert_eq!(names(dir.path()), ["rootfs"]);
    }

    /// The entries of `dir`: what a build left beside its output.
    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect()
    }

    #[test]
    fn dropping_a_staging_directory_leaves_the_output_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("rootfs");
        fs::create_dir(&output).expect("mkdir");
        drop(Staging::new(&output).expect("staging"));
        assert_eq!(names(dir.path()), ["rootfs"]);
    }

    #[test]
    fn refuses_to_replace_a_directory_it_did_not_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("precious"), "").expect("write");
        let err = check_replaceable(dir.path()).expect_err("not a rootfs");
        assert!(err.to_string().contains("refusing"), "{err}");
        check_replaceable(&dir.path().join("absent")).expect("absent is fine");
    }

    #[test]
    fn stale_staging_of_a_dead_build_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join(".rootfs.building-dead");
        fs::create_dir(&stale).expect("mkdir");
        // No process has pid 0 under /proc.
        fs::write(stale.join("pid"), "0").expect("write");
        let live = dir.path().join(".rootfs.building-live");
        fs::create_dir(&live).expect("mkdir");
        fs::write(live.join("pid"), std::process::id().to_string()).expect("write");
        remove_stale(dir.path(), ".rootfs.building-");
        assert!(!stale.exists());
        assert!(live.exists());
    }
}
