//! An OCI image layout directory (image-spec `image-layout.md`): the
//! `oci-layout` marker, `index.json`, and content-addressed blobs under
//! `blobs/sha256/`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ImageError;

/// The `oci-layout` file's content (compact JSON, as written by skopeo).
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// A blob written into the layout: its sha256 (hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

impl Blob {
    /// `sha256:<hex>`, the form descriptors and tools print.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer back, with the hex sha256 and the count of the bytes.
    pub fn finish(self) -> (W, Blob) {
        let sha256 = hex(&self.hasher.finalize());
        (
            self.inner,
            Blob {
                sha256,
                size: self.bytes,
            },
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A layout being written in a directory of the staging area.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Creates `dir` with its marker and an empty `blobs/sha256`.
    pub fn create(dir: &Path) -> Result<Layout, ImageError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|err| ImageError::io("create", &blobs, err))?;
        let marker = dir.join("oci-layout");
        fs::write(&marker, OCI_LAYOUT).map_err(|err| ImageError::io("write", &marker, err))?;
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(sha256)
    }

    /// Writes `bytes` as a blob.
    pub fn put(&self, bytes: &[u8]) -> Result<Blob, ImageError> {
        let blob = Blob {
            sha256: hex(&Sha256::digest(bytes)),
            size: bytes.len() as u64,
        };
        let path = self.blob_path(&blob.sha256);
        fs::write(&path, bytes).map_err(|err| ImageError::io("write", &path, err))?;
        Ok(blob)
    }

    /// Streams a blob through `fill` (which returns the writer it was
    /// given, and what it wants to report) into a partial file, renamed to
    /// its digest once complete.
    pub fn stream<T>(
        &self,
        fill: impl FnOnce(Hashing<BufWriter<File>>) -> Result<(Hashing<BufWriter<File>>, T), ImageError>,
    ) -> Result<(Blob, T), ImageError> {
        let partial = self.dir.join("blobs/sha256/.partial");
        let file = File::create(&partial).map_err(|err| ImageError::io("create", &partial, err))?;
        let (writer, report) = fill(Hashing::new(BufWriter::new(file)))?;
        let (writer, blob) = writer.finish();
        let file = writer
            .into_inner()
            .map_err(|err| ImageError::io("write", &partial, err.into_error()))?;
        file.sync_all()
            .map_err(|err| ImageError::io("sync", &partial, err))?;
        let path = self.blob_path(&blob.sha256);
        fs::rename(&partial, &path).map_err(|err| ImageError::io("rename", &partial, err))?;
        Ok((blob, report))
    }

    /// Writes `index.json`.
    pub fn put_index(&self, bytes: &[u8]) -> Result<(), ImageError> {
        let path = self.dir.join("index.json");
        fs::write(&path, bytes).map_err(|err| ImageError::io("write", &path, err))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(&dir.path().join("l")).unwrap();
        let blob = layout.put(b"abc").unwrap();
        // sha256("abc"), FIPS 180-2's example.
        assert_eq!(
            blob.digest(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (streamed, n) = layout
            .stream(|mut w| {
                w.write_all(b"abc")
                    .map_err(|e| ImageError::io("write", dir.path(), e))?;
                Ok((w, 7))
            })
            .unwrap();
        assert_eq!((streamed, n), (blob.clone(), 7));
        let names: Vec<_> = fs::read_dir(dir.path().join("l/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [blob.sha256]);
        assert_eq!(
            fs::read_to_string(dir.path().join("l/oci-layout")).unwrap(),
            OCI_LAYOUT
        );
    }
}
