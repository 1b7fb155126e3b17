//! regcred's release and kit programs, apart from the tests: `regcred-image` builds
//! regcred's reproducible OCI image ([`oci_image`], `scripts/image`), and
//! `regcred-kit-registries` runs the kit's registries and token server
//! (`scripts/cluster up`). Both stand on the test harness's registries and OCI helpers.
#![warn(missing_docs)]

pub mod oci_image;
