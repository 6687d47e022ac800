//! The image's JSON documents (config, manifest, index), built with
//! oci-spec's image types and serialized compactly: their bytes, hence
//! the digests, depend only on the layer and the rootfs's content id.

use std::collections::HashMap;
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
    Sha256Digest, ANNOTATION_REF_NAME,
};
use serde::Serialize;

use super::layout::Blob;
use super::ImageError;
use crate::bundle::spec;

/// The image configuration: the host's architecture, Linux, one layer
/// (`diff_id`, the sha256 of the uncompressed tar), and the process the
/// local sandbox runs: the sandbox user, its environment and working
/// directory, the session agent as the command. No creation time and no
/// history, so nothing in it depends on when it was written.
pub fn config(diff_id: &Blob) -> Result<Vec<u8>, ImageError> {
    let process = ConfigBuilder::default()
        .user(format!(
            "{}:{}",
            rootfs_builder::SANDBOX_UID,
            rootfs_builder::SANDBOX_GID
        ))
        .env(spec::sandbox_env())
        .cmd(spec::agent_args())
        .working_dir(spec::SANDBOX_CWD)
        .build()?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::default())
        .os(Os::Linux)
        .config(process)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.digest()])
                .build()?,
        )
        .build()?;
    to_json(&config)
}

fn descriptor(media_type: MediaType, blob: &Blob) -> Result<Descriptor, ImageError> {
    Ok(Descriptor::new(
        media_type,
        blob.size,
        Sha256Digest::from_str(&blob.sha256)?,
    ))
}

/// The manifest: the config blob and the one layer.
pub fn manifest(config: &Blob, layer: &Blob, layer_type: MediaType) -> Result<Vec<u8>, ImageError> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, config)?)
        .layers(vec![descriptor(layer_type, layer)?])
        .build()?;
    to_json(&manifest)
}

/// `index.json`: the manifest for this platform, named `ref_name` by the
/// annotation tools select an image of a layout with
/// (`skopeo inspect oci:DIR:REF`, `podman load`, `ctr images import`).
pub fn index(manifest: &Blob, ref_name: &str) -> Result<Vec<u8>, ImageError> {
    let platform = PlatformBuilder::default()
        .architecture(Arch::default())
        .os(Os::Linux)
        .build()?;
    let entry = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(Sha256Digest::from_str(&manifest.sha256)?)
        .size(manifest.size)
        .platform(platform)
        .annotations(HashMap::from([(
            ANNOTATION_REF_NAME.to_string(),
            ref_name.to_string(),
        )]))
        .build()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![entry])
        .build()?;
    to_json(&index)
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|err| ImageError::Json(err.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn blob(c: &str, size: u64) -> Blob {
        Blob {
            sha256: c.repeat(64),
            size,
        }
    }

    #[test]
    fn config_runs_the_agent_as_the_sandbox_user_like_the_local_sandbox() {
        let v: serde_json::Value = serde_json::from_slice(&config(&blob("a", 1)).unwrap()).unwrap();
        assert_eq!(v["os"], "linux");
        assert_eq!(v["architecture"], Arch::default().to_string());
        let c = &v["config"];
        assert_eq!(c["User"], "65432:65432");
        assert_eq!(c["Cmd"], serde_json::json!(spec::agent_args()));
        assert_eq!(c["Env"], serde_json::json!(spec::sandbox_env()));
        assert_eq!(c["WorkingDir"], spec::SANDBOX_CWD);
        assert!(c.get("Entrypoint").is_none() && c.get("Labels").is_none());
        assert!(v.get("created").is_none() && v.get("history").is_none());
        assert_eq!(
            v["rootfs"]["diff_ids"][0],
            format!("sha256:{}", "a".repeat(64))
        );
    }

    #[test]
    fn index_names_the_manifest_with_the_ref_name_annotation() {
        let bytes = index(&blob("b", 42), "localhost/x:tag").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let m = &v["manifests"][0];
        assert_eq!(m["digest"], format!("sha256:{}", "b".repeat(64)));
        assert_eq!(m["size"], 42);
        assert_eq!(m["annotations"][ANNOTATION_REF_NAME], "localhost/x:tag");
        assert_eq!(v["schemaVersion"], 2);
        // The same inputs, the same bytes.
        assert_eq!(bytes, index(&blob("b", 42), "localhost/x:tag").unwrap());
    }

    #[test]
    fn manifest_lists_config_then_the_layer() {
        let bytes = manifest(&blob("c", 3), &blob("d", 4), MediaType::ImageLayer).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(
            v["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(v["layers"][0]["size"], 4);
    }
}
