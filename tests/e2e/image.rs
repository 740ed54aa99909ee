//! Writes a tiny single-layer OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) so the tests need no network and no base image.

use std::path::{Path, PathBuf};

use serde_json::json;

pub struct OciImage {
    /// Directory holding the OCI layout.
    pub dir: PathBuf,
    pub tag: String,
    /// `sha256:…` of the config blob; survives layer recompression on push,
    /// so it identifies the image after a round trip.
    pub config_digest: String,
}

impl OciImage {
    /// The `oci:DIR:TAG` reference for skopeo/podman.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }
}

pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    format!("sha256:{}", data_encoding::HEXLOWER.encode(d.as_ref()))
}

fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

/// A ustar archive holding one regular file per entry.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        assert!(name.len() < 100, "tar name too long");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut h[100..108], 0o644);
        put_octal(&mut h[108..116], 0);
        put_octal(&mut h[116..124], 0);
        put_octal(&mut h[124..136], data.len() as u64);
        put_octal(&mut h[136..148], 1_700_000_000);
        h[148..156].fill(b' ');
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let chk = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(chk.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256(data);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), data).expect("write blob");
    digest
}

/// Writes an image whose only file `/hello.txt` holds `content` (make it
/// unique per test so images are distinguishable).
pub fn write_oci_image(dir: &Path, tag: &str, content: &str) -> OciImage {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir blobs");
    let layer = tar(&[("hello.txt", content.as_bytes())]);
    let layer_digest = write_blob(dir, &layer);
    let created = "2024-01-01T00:00:00Z";
    let config = serde_json::to_vec(&json!({
        "created": created,
        "architecture": go_arch(),
        "os": "linux",
        "config": { "Cmd": ["/hello.txt"], "Labels": { "berth.e2e": content } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": created, "created_by": "berth e2e test image" }],
    }))
    .expect("config json");
    let config_digest = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .expect("manifest json");
    let manifest_digest = write_blob(dir, &manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    }))
    .expect("index json");
    std::fs::write(dir.join("index.json"), index).expect("write index.json");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    OciImage {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        config_digest,
    }
}

/// Config digest of the image tagged `tag` in the OCI layout at `dir`.
pub fn config_digest_in_layout(dir: &Path, tag: &str) -> String {
    let read_json = |p: PathBuf| -> serde_json::Value {
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
    };
    let index = read_json(dir.join("index.json"));
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("tag {tag} not in {}: {index}", dir.display()));
    let digest = entry["digest"].as_str().expect("manifest digest");
    let manifest = read_json(
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    );
    manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()
}
