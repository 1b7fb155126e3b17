//! Link options of the `regcred` binary (the node agent, the webhook and the CLI).
//!
//! The static musl build (`x86_64-unknown-linux-musl`, the binary the image carries and
//! nodes run) is a static PIE: musl's start code applies its relative relocations at
//! every start. As `.rela.dyn` entries they are over a megabyte of the release binary,
//! read at start and then resident; packed (DT_RELR, `-z pack-relative-relocs`: GNU ld
//! 2.38+, musl 1.2.4+, Rust's bundled musl is 1.2.5) they are a few KB, and a node agent
//! starts megabytes smaller (BENCHMARKS.md, "Whose pages"). The binary keeps its ASLR.
//!
//! Only for musl: a glibc build with DT_RELR needs glibc 2.36 where it runs (the loader
//! refuses it with "GLIBC_ABI_DT_RELR not found" before), and the glibc build is the
//! kubectl plugin's (krew), which runs on workstations with older glibc (2.34 is what it
//! needs today). The aarch64 musl build links as a static non-PIE, where the option
//! changes nothing.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "musl" {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
