//! regcred's container image (`scripts/image`, built by `regcred-image`) from the dev
//! binary `cargo test` built: reproducible to the byte, a config with the non-root user,
//! the entrypoint and the OCI labels, a layer holding exactly the binary, what `ldd`
//! names and the passwd/group files, an archive that skopeo reads as the same image, and
//! a root file system in which the binary really runs as that user.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use regcred_tests::harness::{regcred_binary, sha256_digest};
use regcred_tools::oci_image::{self, BINARY_PATH, BuiltImage, ImageInput};
use serde_json::Value;

const EPOCH: u64 = 1_780_000_000;

fn labels() -> BTreeMap<String, String> {
    [
        ("title", "regcred"),
        ("source", "https://example.invalid/regcred"),
        ("revision", "0123456789abcdef0123456789abcdef01234567"),
        ("version", "0.1.0"),
        ("created", "2026-05-28T20:26:40Z"),
        ("licenses", "Apache-2.0"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("org.opencontainers.image.{k}"), v.to_owned()))
    .collect()
}

fn input(epoch: u64) -> ImageInput {
    ImageInput {
        binary: regcred_binary(),
        nri_plugin: None,
        name: "regcred.local/regcred:test".to_owned(),
        source_date_epoch: epoch,
        labels: labels(),
    }
}

fn build(epoch: u64) -> BuiltImage {
    oci_image::build(&input(epoch)).unwrap()
}

/// The image at [`EPOCH`], built once for the tests that only read it.
fn built() -> &'static BuiltImage {
    static IMAGE: std::sync::OnceLock<BuiltImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| build(EPOCH))
}

/// The archive's entries: path => (header, content).
fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (path, header, content)
        })
        .collect()
}

fn blob(archive: &[(String, tar::Header, Vec<u8>)], digest: &str) -> Vec<u8> {
    let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let (_, _, content) = archive
        .iter()
        .find(|(p, _, _)| *p == path)
        .unwrap_or_else(|| panic!("the archive has no {path}"));
    assert_eq!(
        sha256_digest(content),
        digest,
        "{path} holds what its name says"
    );
    content.clone()
}

/// index.json -> manifest -> config and layer, each checked against its digest.
struct Opened {
    index: Value,
    manifest: Value,
    config: Value,
    layer_tar: Vec<u8>,
}

fn open(image: &BuiltImage) -> Opened {
    let archive = entries(&image.archive);
    let index_bytes = &archive
        .iter()
        .find(|(p, _, _)| p == "index.json")
        .unwrap()
        .2;
    let index: Value = serde_json::from_slice(index_bytes).unwrap();
    let descriptor = &index["manifests"][0];
    assert_eq!(descriptor["digest"], image.manifest_digest.as_str());
    let manifest: Value =
        serde_json::from_slice(&blob(&archive, descriptor["digest"].as_str().unwrap())).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(config_digest, image.config_digest);
    let config: Value = serde_json::from_slice(&blob(&archive, config_digest)).unwrap();
    let layer = blob(&archive, manifest["layers"][0]["digest"].as_str().unwrap());
    // gzip header: magic, deflate, no flags (no name), mtime 0.
    assert_eq!(
        &layer[..8],
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0],
        "gzip with no name, no mtime"
    );
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(layer.as_slice())
        .read_to_end(&mut layer_tar)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        sha256_digest(&layer_tar).as_str(),
        "the config's diff_id is the uncompressed layer's digest"
    );
    Opened {
        index,
        manifest,
        config,
        layer_tar,
    }
}

#[test]
fn the_same_binary_gives_the_same_image_digest() {
    let a = built();
    let b = build(EPOCH);
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(
        a.archive, b.archive,
        "the archives are identical to the byte"
    );
    // The dates are part of it: another commit time, another digest.
    assert_ne!(build(EPOCH + 1).manifest_digest, a.manifest_digest);
}

#[test]
fn the_config_runs_regcred_as_a_non_root_user_with_the_oci_labels() {
    let opened = open(built());
    let config = &opened.config;
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([BINARY_PATH])
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], oci_image::rfc3339(EPOCH));
    let want: Value = serde_json::to_value(labels()).unwrap();
    assert_eq!(config["config"]["Labels"], want);
    for key in [
        "source", "revision", "version", "created", "licenses", "title",
    ] {
        assert!(
            config["config"]["Labels"]
                .get(format!("org.opencontainers.image.{key}"))
                .is_some(),
            "label {key}"
        );
    }
    assert_eq!(opened.manifest["annotations"], want);
    let annotations = &opened.index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "regcred.local/regcred:test"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "test");
}

#[test]
fn the_layer_holds_the_binary_its_libraries_and_the_user_only() {
    let opened = open(built());
    let layer = entries(&opened.layer_tar);
    let binary = regcred_binary();

    let libraries = oci_image::libraries(&binary).unwrap();
    // The dev build links glibc dynamically: the loader and libc at least.
    assert!(
        libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("ld-linux")),
        "the loader: {libraries:?}"
    );
    let mut want: BTreeSet<String> = libraries
        .iter()
        .map(|l| l.to_string_lossy().trim_start_matches('/').to_owned())
        .collect();
    want.extend([
        "usr/local/bin/regcred".to_owned(),
        "etc/passwd".to_owned(),
        "etc/group".to_owned(),
    ]);

    let mut files = BTreeSet::new();
    let mut paths = Vec::new();
    for (path, header, content) in &layer {
        paths.push(path.clone());
        assert_eq!(header.uid().unwrap(), 0, "{path} owned by uid 0");
        assert_eq!(header.gid().unwrap(), 0, "{path} owned by gid 0");
        assert_eq!(header.mtime().unwrap(), EPOCH, "{path} dated at the commit");
        match header.entry_type() {
            tar::EntryType::Directory => {
                assert!(
                    want.iter().any(|f| f.starts_with(path.as_str())),
                    "directory {path} holds nothing expected"
                );
            }
            tar::EntryType::Regular => {
                let source: PathBuf = if path == "usr/local/bin/regcred" {
                    binary.clone()
                } else if path.starts_with("etc/") {
                    files.insert(path.clone());
                    continue;
                } else {
                    Path::new("/").join(path)
                };
                assert_eq!(
                    content,
                    &std::fs::read(&source).unwrap(),
                    "{path} is {}",
                    source.display()
                );
                files.insert(path.clone());
            }
            other => panic!("{path}: unexpected entry type {other:?}"),
        }
    }
    assert_eq!(
        files, want,
        "exactly the binary, its libraries and the user files"
    );
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "tar entries in sorted order");
    let mode = |p: &str| layer.iter().find(|e| e.0 == p).unwrap().1.mode().unwrap();
    assert_eq!(mode("usr/local/bin/regcred"), 0o755);
    let passwd = &layer.iter().find(|e| e.0 == "etc/passwd").unwrap().2;
    assert!(
        String::from_utf8_lossy(passwd).contains("nonroot:x:65532:65532:"),
        "the user has a passwd entry"
    );
    let group = &layer.iter().find(|e| e.0 == "etc/group").unwrap().2;
    assert!(String::from_utf8_lossy(group).contains("nonroot:x:65532:"));
}

/// The command scripts/image runs, twice into two files: the same bytes; skopeo (the
/// real `oci-archive:` reader) sees the same manifest digest, the user and the labels.
#[test]
fn the_builder_command_writes_an_archive_skopeo_reads() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_regcred-image"));
        command
            .arg("--binary")
            .arg(regcred_binary())
            .arg("--out")
            .arg(out)
            .args(["--name", "regcred.local/regcred:cmd"])
            .args(["--source-date-epoch", &EPOCH.to_string()]);
        for (k, v) in labels() {
            command.arg("--label").arg(format!("{k}={v}"));
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "regcred-image: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let (one, two) = (dir.path().join("one.tar"), dir.path().join("two.tar"));
    let printed = run(&one);
    run(&two);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    let digest = printed
        .lines()
        .find_map(|l| l.strip_prefix("manifest  "))
        .unwrap()
        .to_owned();

    let output = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", one.display()))
        .output()
        .expect("skopeo runs (scripts/setup installs it)");
    assert!(
        output.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.title"],
        "regcred"
    );
    let output = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", one.display()))
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
}

/// The layer alone is enough to run: unpacked into an empty directory and entered with
/// chroot as 65532:65532, `regcred --version` runs (a missing library would stop the
/// loader) and `regcred validate` checks an example with the embedded module.
#[test]
fn the_binary_runs_from_the_layer_alone_as_the_image_user() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "this test chroots into the image's root file system: run it as root, as the kit is"
    );
    let opened = open(built());
    let root = tempfile::tempdir().unwrap();
    tar::Archive::new(opened.layer_tar.as_slice())
        .unpack(root.path())
        .unwrap();
    let example = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regcredentials-stringdata.yaml"),
    )
    .unwrap();
    std::fs::write(root.path().join("example.yaml"), example).unwrap();
    let chroot = |args: &[&str]| {
        Command::new("/usr/sbin/chroot")
            .arg("--userspec=65532:65532")
            .arg(root.path())
            .arg(BINARY_PATH)
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let version = chroot(&["--version"]);
    assert!(
        version.status.success(),
        "regcred --version in the image's root: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(String::from_utf8_lossy(&version.stdout).contains("regcred"));
    let validate = chroot(&["validate", "/example.yaml"]);
    assert!(
        validate.status.success(),
        "regcred validate in the image's root: {}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
}

/// The static binary the image carries (`scripts/image`, `--libc musl`, the default):
/// `cargo build --target x86_64-unknown-linux-musl -p regcred` next to this test's own
/// build (scripts/test makes it before `cargo test`). It is statically linked (no
/// interpreter, nothing for `ldd`), and its embedded policy module loads precompiled:
/// the build script made portable code for the musl target, which wasmtime accepts on
/// this CPU. Before, a static build said "compiled at load (this build has no
/// precompiled code)" and each `validate` paid the compilation (0.49 s, 27.7 MiB).
#[test]
fn the_static_binary_is_static_and_loads_its_module_precompiled() {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/image-HASH -> target/x86_64-unknown-linux-musl/debug/regcred
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let binary = target_dir
        .join("x86_64-unknown-linux-musl")
        .join(profile_dir.file_name().unwrap())
        .join("regcred");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `. scripts/static-env && cargo build --target \
         x86_64-unknown-linux-musl -p regcred --bin regcred` (scripts/test does; \
         scripts/setup adds the target and musl-tools)",
        binary.display()
    );
    assert!(
        oci_image::libraries(&binary).unwrap().is_empty(),
        "{} links shared libraries",
        binary.display()
    );
    let elf = std::fs::read(&binary).unwrap();
    assert!(
        !elf.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
        "the static binary names a dynamic loader"
    );
    let output = Command::new(&binary)
        .args(["policy", "info"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("loaded:      precompiled at build time\n"),
        "the static binary does not load its module precompiled:\n{stdout}"
    );
    // And it does its job: a valid example validates.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regcredentials-stringdata.yaml");
    let validated = Command::new(&binary)
        .arg("validate")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
}

/// The static binary does not depend on where it was built: outside its debug
/// information (which the release build the image carries has none of), no byte names
/// the checkout or cargo's home. Cranelift's generated code, included from the build's
/// OUT_DIR, put that absolute path into panic locations, so two checkouts gave two
/// digests (scripts/repro-static found it; scripts/static-env remaps the paths, and
/// scripts/repro-static compares two whole builds before a release).
#[test]
fn the_static_binary_names_no_path_of_its_build() {
    use object::{Object as _, ObjectSection as _};
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir
        .parent()
        .unwrap()
        .join("x86_64-unknown-linux-musl")
        .join(profile_dir.file_name().unwrap())
        .join("regcred");
    let bytes = std::fs::read(&binary).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build it with `. scripts/static-env && cargo build --target \
             x86_64-unknown-linux-musl -p regcred --bin regcred` (scripts/test does)",
            binary.display()
        )
    });
    let elf = object::File::parse(&*bytes).unwrap();
    // The checkout as cargo named it and as the file system has it (either may be the
    // one rustc saw, when a symbolic link leads to it).
    let named = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let checkout = named.canonicalize().unwrap();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .and_then(|p| p.canonicalize().ok())
        .expect("cargo's home");
    let mut found = Vec::new();
    for section in elf.sections() {
        let name = section.name().unwrap_or("?");
        if name.starts_with(".debug") {
            continue;
        }
        let data = section.data().unwrap_or_default();
        for path in [&named, &checkout, &cargo_home] {
            let needle = path.as_os_str().as_encoded_bytes();
            let count = data.windows(needle.len()).filter(|w| *w == needle).count();
            if count > 0 {
                found.push(format!("{name}: {} x{count}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} names paths of its build (was it built without scripts/static-env's \
         flags?): {found:?}",
        binary.display()
    );
}

/// regcred-nri as scripts/image builds it (static, `-trimpath`, no VCS stamp): two
/// builds into two files give the same bytes, and the image carries it at
/// /usr/local/bin/regcred-nri, executable, for `regcred node install --nri-plugin`. A
/// dynamically linked plugin is refused (the installer copies it to hosts of any libc).
#[test]
fn the_image_carries_the_static_nri_plugin_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let go = regcred_tests::harness::require_program("go", "Go (scripts/setup)");
    let nri = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nri");
    let build = |out: &Path| {
        let output = Command::new(&go)
            .args(["build", "-trimpath", "-buildvcs=false", "-o"])
            .arg(out)
            .arg(".")
            .current_dir(&nri)
            .env("CGO_ENABLED", "0")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "go build (nri/): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read(out).unwrap()
    };
    let (one, two) = (dir.path().join("nri-one"), dir.path().join("nri-two"));
    assert_eq!(build(&one), build(&two), "two builds of regcred-nri differ");
    assert!(oci_image::libraries(&one).unwrap().is_empty());

    let mut with_plugin = input(EPOCH);
    with_plugin.nri_plugin = Some(one.clone());
    let image = oci_image::build(&with_plugin).unwrap();
    assert_eq!(
        image.manifest_digest,
        oci_image::build(&with_plugin).unwrap().manifest_digest
    );
    assert_ne!(image.manifest_digest, built().manifest_digest);
    let layer = entries(&open(&image).layer_tar);
    let (_, header, content) = layer
        .iter()
        .find(|(p, _, _)| format!("/{p}") == oci_image::NRI_PLUGIN_PATH)
        .expect("the image has regcred-nri");
    assert_eq!(header.mode().unwrap(), 0o755);
    assert_eq!(*content, std::fs::read(&one).unwrap());

    // The glibc regcred binary is dynamically linked: not a plugin the image takes.
    let glibc = regcred_binary();
    assert!(!oci_image::libraries(&glibc).unwrap().is_empty());
    let mut dynamic = input(EPOCH);
    dynamic.nri_plugin = Some(glibc);
    let error = oci_image::build(&dynamic).unwrap_err();
    assert!(error.contains("is not static"), "{error}");
}

/// The static aarch64 (arm64) binary, cross-built here with Debian's
/// gcc-aarch64-linux-gnu as linker and C compiler (`.cargo/config.toml`) and wasmtime's
/// every Cranelift backend for the build script (`--features regcred-host/cross-arch`;
/// scripts/test builds it): an aarch64 ELF with no interpreter, and under Debian's
/// qemu-user-static (user-mode emulation of an arm64 CPU) its embedded policy module
/// loads precompiled for aarch64, and through that module a valid example validates while
/// a broken one does not. Emulated on a busy machine an evaluation can take longer than
/// the module's default 50 ms deadline (it did in two CI runs), which says nothing of
/// arm64 hardware: the test raises it with `--policy-deadline`, the operator's flag.
#[test]
fn the_aarch64_static_binary_runs_under_emulation_with_its_module_precompiled() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir
        .parent()
        .unwrap()
        .join("aarch64-unknown-linux-musl")
        .join(profile_dir.file_name().unwrap())
        .join("regcred");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `. scripts/static-env && cargo build --target \
         aarch64-unknown-linux-musl -p regcred --bin regcred --features \
         regcred-host/cross-arch` (scripts/test does; \
         scripts/setup adds the target, gcc-aarch64-linux-gnu and qemu-user-static)",
        binary.display()
    );
    let elf = std::fs::read(&binary).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    // e_machine (little-endian) 183: EM_AARCH64.
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 183);
    assert!(
        !elf.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
        "the static binary names a dynamic loader"
    );
    let qemu = regcred_tests::harness::require_program("qemu-aarch64-static", "qemu-user-static");
    let run = |args: &[&std::ffi::OsStr]| {
        let output = Command::new(&qemu)
            .arg(&binary)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Emulated, on a busy machine, the module's first run can take longer than its default
    // 50 ms deadline: the deadline is raised as an operator would on such a node.
    let deadline = ["--policy-deadline".as_ref(), "5000".as_ref()];
    let (code, stdout, stderr) =
        run(&[&deadline[..], &["policy".as_ref(), "info".as_ref()]].concat());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("loaded:      precompiled at build time\n"),
        "the aarch64 binary does not load its module precompiled:\n{stdout}"
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let good = examples.join("regcredentials-stringdata.yaml");
    let (code, _, stderr) =
        run(&[&deadline[..], &["validate".as_ref(), good.as_os_str()]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    let bad = examples.join("bad/auth-disagrees.yaml");
    let (code, stdout, _) = run(&[&deadline[..], &["validate".as_ref(), bad.as_os_str()]].concat());
    assert_eq!(code, Some(1), "{}: {stdout}", bad.display());
}
