//! The image a rendered pod runs: the rootfs as an OCI image, named by its
//! content id (`rlm-sandbox rootfs image` writes it under this name).

use std::path::Path;

/// `localhost/rlm-sandbox-rootfs:<content id>`: the name `rootfs image`
/// gives the image (one definition, in `crate::image`).
pub fn image_ref(content_id: &str) -> String {
    crate::image::reference(content_id)
}

/// The default image: the configured rootfs's (its manifest's content id),
/// or the default rootfs's.
pub fn default_image(rootfs: Option<&Path>) -> Result<String, rootfs_builder::Error> {
    let id = match rootfs {
        Some(path) => rootfs_builder::read_manifest(path)?.content_id,
        None => rootfs_builder::content_id(),
    };
    Ok(image_ref(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_the_content_ids_prefix() {
        let id = rootfs_builder::content_id();
        let image = default_image(None).expect("the default needs no file");
        assert_eq!(image, format!("localhost/rlm-sandbox-rootfs:{id}"));
    }
}
