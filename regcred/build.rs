//! Link options of the `regcred` binary (the node agent, the webhook and the CLI).
//!
//! On Linux the binary is position independent (a PIE, or a static PIE for musl), and the
//! loader (or musl's static start code) applies its relative relocations at every start.
//! As `.rela.dyn` entries they are 1.1 MB of the release binary, read at start and then
//! resident; packed (DT_RELR, `-z pack-relative-relocs`: GNU ld 2.38+, glibc 2.36+, musl
//! 1.2.4+) they are 17 KB, and a node agent starts 2.5 MiB smaller (BENCHMARKS.md,
//! "Node scale"). The binary keeps its ASLR. A glibc build then needs glibc 2.36 or newer
//! where it runs (the loader says `GLIBC_ABI_DT_RELR' not found otherwise); the static
//! musl build, the one nodes run, needs nothing of the node.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
