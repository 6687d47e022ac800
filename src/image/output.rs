//! Where an image is written: a temporary sibling of the output (same
//! filesystem), renamed into place only when complete, so a failed or
//! interrupted write leaves nothing at the output; the sibling is removed
//! on drop.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{archive, Format, ImageError};

pub struct Staging {
    dir: TempDir,
}

fn parent_of(output: &Path) -> &Path {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses an output that exists and is not what this command writes
/// (an empty directory, or a layout or archive it could have written):
/// replacing it would delete someone's files.
pub fn check_replaceable(output: &Path, format: Format) -> Result<(), ImageError> {
    let Ok(meta) = fs::symlink_metadata(output) else {
        return Ok(());
    };
    let replaceable = match format {
        Format::OciLayout => {
            meta.is_dir()
                && (output.join("oci-layout").is_file()
                    || fs::read_dir(output)
                        .map_err(|err| ImageError::io("list", output, err))?
                        .next()
                        .is_none())
        }
        Format::OciArchive => meta.is_file() && archive::is_oci_archive(output),
    };
    if replaceable {
        return Ok(());
    }
    Err(ImageError::Refused {
        path: output.to_path_buf(),
        why: match format {
            Format::OciLayout => {
                "it exists and is neither an empty directory nor an OCI layout \
                 (with an oci-layout file); refusing to replace anything else"
            }
            Format::OciArchive => {
                "it exists and is not an OCI archive (a tar starting with oci-layout); \
                 refusing to replace anything else"
            }
        },
    })
}

impl Staging {
    pub fn new(output: &Path) -> Result<Staging, ImageError> {
        let parent = parent_of(output);
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}.image-"))
            .tempdir_in(parent)
            .map_err(|err| ImageError::io("create a staging directory in", parent, err))?;
        Ok(Staging { dir })
    }

    /// A path inside the staging directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Moves `built` (inside the staging directory) to `output`; what was
    /// there (checked replaceable) is moved aside first and deleted with
    /// the staging directory, or moved back if the new one cannot be put
    /// in place.
    pub fn commit(self, built: &Path, output: &Path, format: Format) -> Result<(), ImageError> {
        check_replaceable(output, format)?;
        let aside = self.path("replaced");
        let had_old = fs::symlink_metadata(output).is_ok();
        if had_old {
            fs::rename(output, &aside).map_err(|err| ImageError::io("move aside", output, err))?;
        }
        if let Err(err) = fs::rename(built, output) {
            if had_old {
                // Best effort; the error below names the output either way.
                let _ = fs::rename(&aside, output);
            }
            return Err(ImageError::io("move the image into place at", output, err));
        }
        let staging = self.dir.path().to_path_buf();
        self.dir
            .close()
            .map_err(|err| ImageError::io("remove", &staging, err))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_replaces_a_layout_and_leaves_no_staging() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("img");
        fs::create_dir(&output).unwrap();
        fs::write(output.join("oci-layout"), "old").unwrap();
        let staging = Staging::new(&output).unwrap();
        let built = staging.path("layout");
        fs::create_dir(&built).unwrap();
        fs::write(built.join("oci-layout"), "new").unwrap();
        staging.commit(&built, &output, Format::OciLayout).unwrap();
        assert_eq!(
            fs::read_to_string(output.join("oci-layout")).unwrap(),
            "new"
        );
        assert_eq!(names(dir.path()), ["img"]);
    }

    #[test]
    fn anything_else_at_the_output_is_refused_and_dropping_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        fs::create_dir(&precious).unwrap();
        fs::write(precious.join("notes"), "").unwrap();
        let err = check_replaceable(&precious, Format::OciLayout).unwrap_err();
        assert!(err.to_string().contains("precious"), "{err}");
        let file = dir.path().join("file.tar");
        fs::write(&file, "not a tar").unwrap();
        assert!(check_replaceable(&file, Format::OciArchive).is_err());
        assert!(check_replaceable(&precious, Format::OciArchive).is_err());
        check_replaceable(&dir.path().join("absent"), Format::OciArchive).unwrap();
        drop(Staging::new(&file).unwrap());
        assert_eq!(names(dir.path()), ["file.tar", "precious"]);
    }
}
