//! regcred's own container image (`scripts/image`): an OCI image layout archive holding
//! the `regcred` binary, the shared libraries `ldd` names for it (with the loader), and
//! `/etc/passwd` and `/etc/group` entries for a non-root user; nothing else.
//!
//! Reproducible by construction: every tar entry (in the layer and in the archive) is
//! sorted by path, owned by 0:0, and dated at the commit time (`SOURCE_DATE_EPOCH`); the
//! gzip stream has no file name and a zero mtime and comes from the `flate2` version
//! that `Cargo.lock` pins; the JSON has sorted keys. The same binary and the same commit
//! give the same manifest digest, on any machine with the same libraries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use regcred_tests::harness::{
    CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, oci_architecture, sha256_digest,
};

/// Where the binary lives in the image (and the image's entrypoint).
pub const BINARY_PATH: &str = "/usr/local/bin/regcred";
/// Where the image has `regcred-nri` (for `regcred node install --nri-plugin`).
pub const NRI_PLUGIN_PATH: &str = "/usr/local/bin/regcred-nri";
/// The image's user and group: not root, and the same number as the Deployment's
/// `runAsUser` / `runAsGroup` (distroless's "nonroot").
pub const USER_ID: u32 = 65532;

/// The `/etc/passwd` of the image: root (for tools that expect uid 0 to resolve) and the
/// user the image runs as, with no shell and no home.
pub const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n";
/// The `/etc/group` of the image.
pub const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// The `regcred` binary to package.
    pub binary: PathBuf,
    /// The static `regcred-nri` binary (built from `nri/`), installed on nodes by
    /// `regcred node install` from the chart's DaemonSet; at `/usr/local/bin/regcred-nri`.
    pub nri_plugin: Option<PathBuf>,
    /// The image name the archive's index gives (`io.containerd.image.name`), e.g.
    /// `regcred.local/regcred:0.1.0`; its tag is `org.opencontainers.image.ref.name`.
    pub name: String,
    /// Seconds since the epoch: the config's `created`, the layer's and archive's mtimes.
    pub source_date_epoch: u64,
    /// The config's labels (`org.opencontainers.image.*`).
    pub labels: BTreeMap<String, String>,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The OCI image layout, as one tar (`oci-archive`).
    pub archive: Vec<u8>,
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the config (containerd's image ID).
    pub config_digest: String,
    /// The files of the layer, by absolute path (directories not listed).
    pub files: Vec<String>,
}

/// One file of the layer: its path in the image, its bytes and its mode.
struct LayerFile {
    path: String,
    content: Vec<u8>,
    mode: u32,
}

/// The shared objects `ldd BINARY` lists (`name => /path`, and the loader's absolute
/// path), by the path the dynamic linker will look for. An empty list for a static binary.
///
/// # Errors
///
/// When `ldd` cannot run, or names a library it could not find.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // glibc's ldd exits 1 with "not a dynamic executable" for a static binary.
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
            || stdout.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        return Err(format!(
            "ldd {} failed: {}",
            binary.display(),
            stderr.trim()
        ));
    }
    parse_ldd(&stdout)
}

/// Parses `ldd`'s output: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` gives
/// that path, `/lib64/ld-linux-x86-64.so.2 (0x…)` the loader, `linux-vdso.so.1 (0x…)` (in
/// the kernel) nothing.
///
/// # Errors
///
/// A library `ldd` reports as `not found`.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = BTreeSet::new();
    for line in output.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        if line.contains("not found") {
            return Err(format!("ldd: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, target)) => target.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            paths.insert(PathBuf::from(path));
        }
    }
    Ok(paths.into_iter().collect())
}

/// The layer's files: the binary, its libraries at their paths (symbolic links followed:
/// the image holds each as a regular file), `/etc/passwd` and `/etc/group`.
fn layer_files(binary: &Path, nri_plugin: Option<&Path>) -> Result<Vec<LayerFile>, String> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()));
    let mut files = vec![
        LayerFile {
            path: BINARY_PATH.to_owned(),
            content: read(binary)?,
            mode: 0o755,
        },
        LayerFile {
            path: "/etc/passwd".to_owned(),
            content: PASSWD.as_bytes().to_vec(),
            mode: 0o644,
        },
        LayerFile {
            path: "/etc/group".to_owned(),
            content: GROUP.as_bytes().to_vec(),
            mode: 0o644,
        },
    ];
    if let Some(plugin) = nri_plugin {
        if !libraries(plugin)?.is_empty() {
            return Err(format!(
                "{} is not static (build it with CGO_ENABLED=0)",
                plugin.display()
            ));
        }
        files.push(LayerFile {
            path: NRI_PLUGIN_PATH.to_owned(),
            content: read(plugin)?,
            mode: 0o755,
        });
    }
    for library in libraries(binary)? {
        files.push(LayerFile {
            path: library.to_string_lossy().into_owned(),
            content: read(&library)?,
            mode: 0o755,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn tar_header(kind: tar::EntryType, mode: u32, size: usize, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size as u64);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    // ustar's user and group names: empty, as numeric owners only.
    header.set_username("").expect("empty name");
    header.set_groupname("").expect("empty name");
    header
}

/// A tar of `files` and every parent directory, all entries sorted by path.
fn tar_of(files: &[LayerFile], mtime: u64) -> Vec<u8> {
    let mut dirs = BTreeSet::new();
    for file in files {
        let mut parent = Path::new(file.path.trim_start_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{}/", dir.to_string_lossy()));
            parent = dir.parent();
        }
    }
    // Directories as `dir/`, files as `dir/file`: one sorted list, so a directory comes
    // before what it holds.
    let mut entries: Vec<(String, Option<&LayerFile>)> =
        dirs.into_iter().map(|d| (d, None)).collect();
    entries.extend(
        files
            .iter()
            .map(|f| (f.path.trim_start_matches('/').to_owned(), Some(f))),
    );
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, file) in entries {
        match file {
            None => {
                let mut h = tar_header(tar::EntryType::Directory, 0o755, 0, mtime);
                builder
                    .append_data(&mut h, &path, std::io::empty())
                    .expect("tar in memory");
            }
            Some(file) => {
                let mut h = tar_header(
                    tar::EntryType::Regular,
                    file.mode,
                    file.content.len(),
                    mtime,
                );
                builder
                    .append_data(&mut h, &path, file.content.as_slice())
                    .expect("tar in memory");
            }
        }
    }
    builder.into_inner().expect("tar in memory")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (proleptic Gregorian, UTC).
pub fn rfc3339(epoch: u64) -> String {
    let days = i64::try_from(epoch / 86_400).expect("a date before year 25 million");
    let secs = epoch % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Builds the image.
///
/// # Errors
///
/// When the binary or a library cannot be read, or `ldd` fails.
pub fn build(input: &ImageInput) -> Result<BuiltImage, String> {
    let files = layer_files(&input.binary, input.nri_plugin.as_deref())?;
    let tar = tar_of(&files, input.source_date_epoch);
    let diff_id = sha256_digest(&tar);
    // The gzip header: no file name, mtime 0, OS "unknown"; the level fixed (6). The
    // deflate stream is miniz_oxide's (flate2's default backend), at the version
    // Cargo.lock pins: the same bytes on every machine.
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    gzip.write_all(&tar).expect("gzip in memory");
    let layer = gzip.finish().expect("gzip in memory");
    let layer_digest = sha256_digest(&layer);
    let created = rfc3339(input.source_date_epoch);

    // serde_json's maps are sorted (no preserve_order feature): stable bytes.
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Entrypoint": [BINARY_PATH],
            "Env": ["PATH=/usr/local/bin"],
            "Labels": input.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "scripts/image"}],
    }))
    .expect("config JSON");
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len()}],
        "annotations": input.labels,
    }))
    .expect("manifest JSON");
    let manifest_digest = sha256_digest(&manifest);
    let tag = input
        .name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": oci_architecture(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": input.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .expect("index JSON");

    let mut archive_files = vec![
        LayerFile {
            path: "oci-layout".to_owned(),
            content: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            mode: 0o644,
        },
        LayerFile {
            path: "index.json".to_owned(),
            content: index,
            mode: 0o644,
        },
    ];
    for (digest, blob) in [
        (&layer_digest, layer),
        (&config_digest, config),
        (&manifest_digest, manifest),
    ] {
        archive_files.push(LayerFile {
            path: format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
            content: blob,
            mode: 0o644,
        });
    }
    let archive = tar_of(&archive_files, input.source_date_epoch);
    Ok(BuiltImage {
        archive,
        manifest_digest,
        config_digest,
        files: files.into_iter().map(|f| f.path).collect(),
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn ldd_output_gives_paths_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }
}
