//! Policy module bytes: the one embedded at build time, or one read from a file, optionally
//! pinned by sha256.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::LoadError;

/// The policy module built from this workspace's `policy-wasm` crate (for
/// `wasm32-unknown-unknown`, profile `wasm-release`) and embedded at build time.
pub const DEFAULT_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/regcred_policy.wasm"));

/// The sha256 of [`DEFAULT_MODULE`], computed by the build script from the bytes it
/// embedded (checked against them by a test): the embedded module is not hashed at start.
static DEFAULT_MODULE_SHA256: [u8; 32] =
    *include_bytes!(concat!(env!("OUT_DIR"), "/regcred_policy.wasm.sha256"));

/// [`DEFAULT_MODULE`] compiled by the build script for [`regcred_module_build::engine_config`]
/// on the build machine (`Engine::precompile_module`); empty in a cross build.
static PRECOMPILED_CODE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/regcred_policy.cwasm"));

/// What [`PRECOMPILED_CODE`] was made from and for ([`regcred_module_build::Precompiled::metadata`]);
/// empty when there is no code.
static PRECOMPILED_METADATA: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/regcred_policy.cwasm.meta"));

/// Machine code for a module, made ahead of time, with the digests that say what it was
/// made from and for. Only this crate makes one, from bytes its build produced: loading
/// it is `unsafe` (`Module::deserialize`), so nothing from outside may become one.
#[derive(Clone, Copy)]
pub(crate) struct PrecompiledCode {
    /// The `.cwasm`.
    pub(crate) code: &'static [u8],
    /// The sha256 of the `.wasm` it was compiled from.
    pub(crate) wasm_sha256: [u8; 32],
    /// The `regcred_module_build::compatibility_digest` of the engine that compiled it.
    pub(crate) engine_digest: [u8; 32],
    /// Portable code (a cross build): fits any engine of this triple and settings,
    /// which wasmtime checks when loading it, so the digest is not compared.
    pub(crate) portable: bool,
}

impl PrecompiledCode {
    /// What the build script made, if it made something.
    fn embedded() -> Option<Self> {
        let (wasm_sha256, engine_digest, portable) =
            regcred_module_build::parse_metadata(PRECOMPILED_METADATA)?;
        Some(Self {
            code: PRECOMPILED_CODE,
            wasm_sha256,
            engine_digest,
            portable,
        })
    }
}

impl fmt::Debug for PrecompiledCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrecompiledCode")
            .field("len", &self.code.len())
            .finish_non_exhaustive()
    }
}

/// Where a module's bytes came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModuleSource {
    /// [`DEFAULT_MODULE`].
    Embedded,
    /// A file.
    File(PathBuf),
    /// Bytes handed over by the caller.
    Bytes,
}

impl fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => f.write_str("embedded"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Bytes => f.write_str("in-memory"),
        }
    }
}

/// The bytes of a policy module, with their source and sha256. Not compiled yet: see
/// [`crate::PolicyPre`].
///
/// ```
/// use regcred_host::PolicyModule;
///
/// let module = PolicyModule::embedded();
/// let pinned = module.clone().pin_sha256(&module.sha256_hex())?;
/// assert_eq!(pinned.sha256(), module.sha256());
/// assert!(module.clone().pin_sha256(&"0".repeat(64)).is_err());
/// # Ok::<(), regcred_host::LoadError>(())
/// ```
#[derive(Clone)]
pub struct PolicyModule {
    bytes: ModuleBytes,
    sha256: [u8; 32],
    source: ModuleSource,
    /// Set for [`Self::embedded`] only.
    precompiled: Option<PrecompiledCode>,
}

/// A module's bytes: the embedded ones where the binary holds them (not copied), or
/// bytes of the module's own.
#[derive(Clone)]
enum ModuleBytes {
    Static(&'static [u8]),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for ModuleBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Static(bytes) => bytes,
            Self::Shared(bytes) => bytes,
        }
    }
}

impl PolicyModule {
    /// The embedded [`DEFAULT_MODULE`]: neither copied nor hashed (its digest was
    /// recorded when it was built).
    pub fn embedded() -> Self {
        Self {
            bytes: ModuleBytes::Static(DEFAULT_MODULE),
            sha256: DEFAULT_MODULE_SHA256,
            source: ModuleSource::Embedded,
            precompiled: PrecompiledCode::embedded(),
        }
    }

    /// Reads a module file (`.wasm`; the text format is not accepted).
    ///
    /// # Errors
    ///
    /// [`LoadError::Read`] when the file cannot be read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::new(
            Arc::from(bytes),
            ModuleSource::File(path.to_path_buf()),
        ))
    }

    /// Wraps module bytes held in memory.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self::new(Arc::from(bytes.into()), ModuleSource::Bytes)
    }

    fn new(bytes: Arc<[u8]>, source: ModuleSource) -> Self {
        let sha256 = Sha256::digest(&bytes).into();
        Self {
            bytes: ModuleBytes::Shared(bytes),
            sha256,
            source,
            precompiled: None,
        }
    }

    /// The machine code made for this module at build time, if any (the embedded module
    /// in a native build); whether it fits is checked when it is loaded.
    pub(crate) fn precompiled(&self) -> Option<&PrecompiledCode> {
        self.precompiled.as_ref()
    }

    /// This module with other precompiled code: for tests of the checks and fallbacks.
    #[cfg(test)]
    pub(crate) fn with_precompiled(mut self, precompiled: Option<PrecompiledCode>) -> Self {
        self.precompiled = precompiled;
        self
    }

    /// Checks the module against a sha256 pin (64 hex digits, either case).
    ///
    /// # Errors
    ///
    /// [`LoadError::InvalidPin`] when the pin is not a sha256 digest,
    /// [`LoadError::Sha256Mismatch`] when it is another module's.
    pub fn pin_sha256(self, pin: &str) -> Result<Self, LoadError> {
        let pin = pin.trim();
        let pin = pin.strip_prefix("sha256:").unwrap_or(pin);
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LoadError::InvalidPin { pin: pin.into() });
        }
        let expected = pin.to_ascii_lowercase();
        let actual = self.sha256_hex();
        if expected != actual {
            return Err(LoadError::Sha256Mismatch { expected, actual });
        }
        Ok(self)
    }

    /// The module's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty byte string (which will not compile).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The sha256 digest.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The sha256 digest as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        use fmt::Write as _;
        self.sha256
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// Where the bytes came from.
    pub fn source(&self) -> &ModuleSource {
        &self.source
    }
}

impl fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyModule")
            .field("source", &self.source)
            .field("len", &self.bytes.len())
            .field("sha256", &self.sha256_hex())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_module_is_wasm() {
        let module = PolicyModule::embedded();
        assert!(module.bytes().starts_with(b"\0asm"));
        assert_eq!(module.source(), &ModuleSource::Embedded);
        assert!(format!("{module:?}").contains(&module.sha256_hex()));
    }

    #[test]
    fn the_recorded_digest_is_the_embedded_module_s() {
        let hashed = PolicyModule::from_bytes(DEFAULT_MODULE);
        assert_eq!(PolicyModule::embedded().sha256(), hashed.sha256());
        assert_eq!(
            DEFAULT_MODULE_SHA256,
            <[u8; 32]>::from(Sha256::digest(DEFAULT_MODULE))
        );
        assert_eq!(PolicyModule::embedded().bytes(), DEFAULT_MODULE);
    }

    #[test]
    fn pin_accepts_prefix_and_upper_case() {
        let module = PolicyModule::from_bytes(b"\0asm".to_vec());
        let pin = format!("sha256:{}", module.sha256_hex().to_uppercase());
        assert!(module.clone().pin_sha256(&pin).is_ok());
        assert!(matches!(
            module.pin_sha256("abc"),
            Err(LoadError::InvalidPin { .. })
        ));
    }
}
