//! The rootfs as an OCI image (`rlm-sandbox rootfs image`): one layer
//! holding the tree, a config that runs the session agent as the sandbox
//! user, a manifest and an index naming it
//! `localhost/rlm-sandbox-rootfs:<content id>`; written as an image
//! layout directory or an `oci-archive` tar of one, without a daemon or a
//! registry. Every byte depends only on the rootfs, so the same rootfs
//! gives the same digest (docs/ROOTFS.md, "As an OCI image").

mod archive;
mod documents;
mod layer;
mod layout;
mod output;

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::image::MediaType;
use serde::Serialize;
use thiserror::Error;

pub use layer::{LayerStats, FIXED_MTIME};

/// The repository every rootfs image is named in; its tag is the rootfs's
/// content id (`rootfs_builder::content_id_for`).
pub const REPOSITORY: &str = "localhost/rlm-sandbox-rootfs";

/// `REPOSITORY:content_id`: the name `podman load` gives the image, and
/// the default image a Kubernetes pod spec names.
pub fn reference(content_id: &str) -> String {
    format!("{REPOSITORY}:{content_id}")
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot {action} {path}: {err}")]
    Io {
        action: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{path} is {what}, which an image layer cannot carry faithfully")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("will not write the image to {path}: {why}")]
    Refused { path: PathBuf, why: &'static str },
    #[error("building an OCI document: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("serializing an OCI document: {0}")]
    Json(String),
}

impl ImageError {
    fn io(action: &'static str, path: &Path, err: std::io::Error) -> ImageError {
        ImageError::Io {
            action,
            path: path.to_path_buf(),
            err,
        }
    }
}

/// How the image is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// An image layout directory (`skopeo inspect oci:DIR`).
    OciLayout,
    /// A tar of an image layout (`podman load -i FILE`,
    /// `ctr images import FILE`).
    OciArchive,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "oci-layout" => Ok(Format::OciLayout),
            "oci-archive" => Ok(Format::OciArchive),
            _ => Err(format!(
                "unknown image format {s:?}: accepted are oci-layout (a directory) \
                 and oci-archive (a tar of one)"
            )),
        }
    }
}

pub struct ImageOptions<'a> {
    /// The rootfs tree (checked by the caller: a rootfs with an agent,
    /// matching its manifest).
    pub rootfs: &'a Path,
    /// Its content id: the tag.
    pub content_id: &'a str,
    pub output: &'a Path,
    pub format: Format,
}

/// Steps of writing an image, one human line each.
#[derive(Debug, Clone)]
pub enum Progress {
    Layer,
    LayerDone {
        stats: LayerStats,
        bytes: u64,
        elapsed: Duration,
    },
    Archiving,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Layer => write!(f, "writing the layer (a tar of the rootfs)"),
            Progress::LayerDone {
                stats,
                bytes,
                elapsed,
            } => write!(
                f,
                "layer: {} entries, {} MB in {:.1} s",
                stats.entries,
                bytes / 1_000_000,
                elapsed.as_secs_f64()
            ),
            Progress::Archiving => write!(f, "writing the oci-archive"),
        }
    }
}

/// What was written, for people (stdout) and programs (--json).
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub path: PathBuf,
    pub format: Format,
    /// `REPOSITORY:tag`.
    pub reference: String,
    pub tag: String,
    /// The manifest's digest: the image's identity (`name@digest`).
    pub digest: String,
    /// The config's digest (the "image id" podman and docker show).
    pub config_digest: String,
    pub layer: LayerReport,
    /// Bytes at the output (the layout's files or the archive).
    pub bytes: u64,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub media_type: String,
    pub digest: String,
    /// The sha256 of the uncompressed tar (the config's `diff_ids`).
    pub diff_id: String,
    pub size: u64,
    pub entries: u64,
}

/// The layer's media type: an uncompressed tar (docs/ROOTFS.md says why).
fn layer_media_type() -> MediaType {
    MediaType::ImageLayer
}

/// Writes the image of `opts.rootfs` to `opts.output`, replacing an
/// earlier image there only on success.
pub fn write(
    opts: &ImageOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Written, ImageError> {
    let start = Instant::now();
    output::check_replaceable(opts.output, opts.format)?;
    let staging = output::Staging::new(opts.output)?;
    let layout_dir = staging.path("layout");
    let layout = layout::Layout::create(&layout_dir)?;

    progress(&Progress::Layer);
    let (layer_blob, stats) = layout.stream(|out| {
        let (out, stats) = layer::write(opts.rootfs, out)?;
        Ok((out, stats))
    })?;
    // Uncompressed: the layer is its own diff_id.
    let diff_id = layer_blob.clone();
    progress(&Progress::LayerDone {
        stats,
        bytes: layer_blob.size,
        elapsed: start.elapsed(),
    });

    let config = layout.put(&documents::config(&diff_id)?)?;
    let manifest = layout.put(&documents::manifest(
        &config,
        &layer_blob,
        layer_media_type(),
    )?)?;
    let ref_name = reference(opts.content_id);
    layout.put_index(&documents::index(&manifest, &ref_name)?)?;

    let (built, bytes) = match opts.format {
        Format::OciLayout => {
            let bytes = layer_blob.size + config.size + manifest.size;
            (layout_dir, bytes)
        }
        Format::OciArchive => {
            progress(&Progress::Archiving);
            let path = staging.path("archive.tar");
            let file =
                std::fs::File::create(&path).map_err(|err| ImageError::io("create", &path, err))?;
            let out = archive::write(&layout_dir, BufWriter::new(file))?;
            let file = out
                .into_inner()
                .map_err(|err| ImageError::io("write", &path, err.into_error()))?;
            file.sync_all()
                .map_err(|err| ImageError::io("sync", &path, err))?;
            let bytes = file
                .metadata()
                .map_err(|err| ImageError::io("stat", &path, err))?
                .len();
            (path, bytes)
        }
    };
    staging.commit(&built, opts.output, opts.format)?;
    Ok(Written {
        path: opts.output.to_path_buf(),
        format: opts.format,
        reference: ref_name,
        tag: opts.content_id.to_string(),
        digest: manifest.digest(),
        config_digest: config.digest(),
        layer: LayerReport {
            media_type: layer_media_type().to_string(),
            digest: layer_blob.digest(),
            diff_id: diff_id.digest(),
            size: layer_blob.size,
            entries: stats.entries,
        },
        bytes,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}
