//! Generates the CRI `runtime.v1` ImageService code from `proto/runtime/v1/api.proto`.
//!
//! protox parses the proto in pure Rust into a `FileDescriptorSet`, which
//! tonic-prost-build turns into prost messages and tonic client and server stubs, so the
//! build needs no `protoc` on the machine.

use std::error::Error;

const PROTO: &str = "proto/runtime/v1/api.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Consumers choose their transport (unix sockets here); `connect(url)` is not generated.
        .build_transport(false)
        // `AuthConfig` carries passwords and tokens: its `Debug` is written by hand in lib.rs.
        .skip_debug(["runtime.v1.AuthConfig"])
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
