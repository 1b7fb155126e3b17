//! Machine code ahead of time: the configuration regcred's engine compiles with, the
//! precompiled artifact, and the digest that says which engines it fits.

use std::fmt;
use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine};

/// The size of [`Precompiled::metadata`].
pub const METADATA_LEN: usize = 16 + 32 + 32;

/// The first bytes of the metadata; a new layout gets a new tag.
const MAGIC: &[u8; 16] = b"regcred-cwasm-1\n";
/// The tag of portable code ([`precompile_portable`]).
const PORTABLE_MAGIC: &[u8; 16] = b"regcred-cwasm-p\n";

/// The wasmtime configuration regcred's own engine compiles with: epoch interruption
/// (deadlines are epoch deadlines) and wasmtime's defaults otherwise (Cranelift,
/// optimizing for speed, for the CPU it runs on). `regcred-host` adds its instance
/// allocator (pooling or on demand), which does not change the code Cranelift makes:
/// precompiled code made with this configuration fits both.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config
}

/// A sha256 over everything that decides whether code precompiled by one engine runs on
/// another: wasmtime's [`Engine::precompile_compatibility_hash`] (the target, Cranelift's
/// flags and the CPU features it uses, the tunables, the wasm features, wasmtime's
/// version). Equal digests from this build's crates mean the code is for that engine.
pub fn compatibility_digest(engine: &Engine) -> [u8; 32] {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

/// A [`Hasher`] that feeds sha256, so that a `Hash` value gives a digest that is the same
/// in every process (`std`'s hashers give 64 bits, some of them seeded).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest: [u8; 32] = self.0.clone().finalize().into();
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

/// A module compiled ahead of time by [`engine_config`]'s engine, with what it was made
/// from and for.
#[derive(Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// What [`Engine::precompile_module`] wrote (a `.cwasm`).
    pub code: Vec<u8>,
    /// The sha256 of the `.wasm` it was compiled from.
    pub wasm_sha256: [u8; 32],
    /// The [`compatibility_digest`] of the engine that compiled it.
    pub engine_digest: [u8; 32],
    /// Made by [`precompile_portable`]: for a target triple, with the CPU features every
    /// machine of its architecture has, so it fits any engine of that triple and
    /// settings, whatever its CPU (wasmtime checks the triple, the settings and that
    /// each CPU feature the code uses is there when it loads the code).
    pub portable: bool,
}

impl fmt::Debug for Precompiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Precompiled")
            .field("code_len", &self.code.len())
            .field("wasm_sha256", &hex(&self.wasm_sha256))
            .field("engine_digest", &hex(&self.engine_digest))
            .field("portable", &self.portable)
            .finish()
    }
}

impl Precompiled {
    /// The digests, as the build script records them beside the code: a tag, the
    /// module's sha256, the engine's digest.
    pub fn metadata(&self) -> [u8; METADATA_LEN] {
        let mut out = [0; METADATA_LEN];
        out[..16].copy_from_slice(if self.portable { PORTABLE_MAGIC } else { MAGIC });
        out[16..48].copy_from_slice(&self.wasm_sha256);
        out[48..].copy_from_slice(&self.engine_digest);
        out
    }
}

/// The module's sha256, the engine's digest and whether the code is portable, from
/// [`Precompiled::metadata`]; `None` for anything else (such as the empty file a build
/// without precompiled code records).
pub fn parse_metadata(bytes: &[u8]) -> Option<([u8; 32], [u8; 32], bool)> {
    if bytes.len() != METADATA_LEN {
        return None;
    }
    let portable = if bytes.starts_with(MAGIC) {
        false
    } else if bytes.starts_with(PORTABLE_MAGIC) {
        true
    } else {
        return None;
    };
    let mut wasm_sha256 = [0; 32];
    let mut engine_digest = [0; 32];
    wasm_sha256.copy_from_slice(&bytes[16..48]);
    engine_digest.copy_from_slice(&bytes[48..]);
    Some((wasm_sha256, engine_digest, portable))
}

/// The sha256 of module bytes: what [`Precompiled::wasm_sha256`] holds, and what the
/// build script records beside the embedded module so that a host need not hash it at
/// every start.
pub fn module_sha256(wasm: &[u8]) -> [u8; 32] {
    Sha256::digest(wasm).into()
}

/// Compiles `wasm` with an engine made from [`engine_config`], for the CPU this runs on.
///
/// # Errors
///
/// wasmtime's message when the engine cannot be made or the module does not compile.
pub fn precompile(wasm: &[u8]) -> Result<Precompiled, String> {
    let engine = Engine::new(&engine_config())
        .map_err(|err| format!("cannot make the WebAssembly engine: {err:#}"))?;
    let code = engine
        .precompile_module(wasm)
        .map_err(|err| format!("cannot precompile the policy module: {err:#}"))?;
    Ok(Precompiled {
        code,
        wasm_sha256: module_sha256(wasm),
        engine_digest: compatibility_digest(&engine),
        portable: false,
    })
}

/// Compiles `wasm` with [`engine_config`] for `target` (a Rust target triple such as
/// `x86_64-unknown-linux-musl`), assuming only the CPU features every machine of that
/// architecture has: code for a build whose binary runs elsewhere than the build machine
/// (a cross build, a static binary).
///
/// # Errors
///
/// wasmtime's message when the target is unknown or not compiled into this wasmtime
/// (another architecture's backend), or the module does not compile.
pub fn precompile_portable(wasm: &[u8], target: &str) -> Result<Precompiled, String> {
    let mut config = engine_config();
    config
        .target(target)
        .map_err(|err| format!("cannot compile for {target}: {err:#}"))?;
    let engine = Engine::new(&config)
        .map_err(|err| format!("cannot make a WebAssembly engine for {target}: {err:#}"))?;
    let code = engine
        .precompile_module(wasm)
        .map_err(|err| format!("cannot precompile the policy module for {target}: {err:#}"))?;
    Ok(Precompiled {
        code,
        wasm_sha256: module_sha256(wasm),
        engine_digest: compatibility_digest(&engine),
        portable: true,
    })
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(config: &Config) -> Engine {
        Engine::new(config).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn the_digest_is_the_same_for_equal_configs_and_differs_for_other_code() {
        let base = compatibility_digest(&engine(&engine_config()));
        assert_eq!(base, compatibility_digest(&engine(&engine_config())));

        // The instance allocator is not part of compilation: the servers' pooling
        // engines load the same precompiled code as the CLI's on-demand one.
        let mut pooling = engine_config();
        pooling.allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
        assert_eq!(base, compatibility_digest(&engine(&pooling)));

        let mut no_epochs = engine_config();
        no_epochs.epoch_interruption(false);
        assert_ne!(base, compatibility_digest(&engine(&no_epochs)));
        let mut size = engine_config();
        size.cranelift_opt_level(wasmtime::OptLevel::SpeedAndSize);
        assert_ne!(base, compatibility_digest(&engine(&size)));
    }

    #[test]
    fn metadata_round_trips_and_anything_else_is_none() {
        let artifact = Precompiled {
            code: vec![1, 2, 3],
            wasm_sha256: [7; 32],
            engine_digest: [9; 32],
            portable: false,
        };
        let metadata = artifact.metadata();
        assert_eq!(parse_metadata(&metadata), Some(([7; 32], [9; 32], false)));
        let portable = Precompiled {
            portable: true,
            ..artifact.clone()
        };
        assert_eq!(
            parse_metadata(&portable.metadata()),
            Some(([7; 32], [9; 32], true))
        );
        assert_eq!(parse_metadata(&[]), None);
        assert_eq!(parse_metadata(&metadata[1..]), None);
        let mut other = metadata;
        other[0] ^= 1;
        assert_eq!(parse_metadata(&other), None);
        assert!(!format!("{artifact:?}").contains("[1, 2, 3]"));
    }

    #[test]
    fn precompiled_code_is_a_module_for_the_runtimes_engine() {
        let wasm = wat::parse_str(r#"(module (func (export "seven") (result i32) i32.const 7))"#)
            .unwrap_or_else(|err| panic!("{err}"));
        let artifact = precompile(&wasm).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            artifact.wasm_sha256,
            <[u8; 32]>::from(Sha256::digest(&wasm))
        );
        let engine = engine(&engine_config());
        assert_eq!(artifact.engine_digest, compatibility_digest(&engine));
        // The real check that the code is what wasmtime expects from this engine.
        assert_eq!(
            Engine::detect_precompiled(&artifact.code),
            Some(wasmtime::Precompiled::Module)
        );
        assert!(precompile(b"not wasm").is_err());
    }

    /// Portable code for the host's own triple loads into the host's native engine
    /// (whose CPU features are a superset of the baseline's) and runs.
    #[test]
    fn portable_code_loads_into_the_native_engine() {
        let wasm = wat::parse_str(r#"(module (func (export "seven") (result i32) i32.const 7))"#)
            .unwrap_or_else(|err| panic!("{err}"));
        let host = target_lexicon::Triple::host().to_string();
        let artifact = precompile_portable(&wasm, &host).unwrap_or_else(|err| panic!("{err}"));
        assert!(artifact.portable);
        let engine = engine(&engine_config());
        // SAFETY: code this test just made with `Engine::precompile_module`.
        #[expect(unsafe_code, reason = "loading precompiled code is unsafe by API")]
        let module = unsafe { wasmtime::Module::deserialize(&engine, &artifact.code) }
            .unwrap_or_else(|err| panic!("{err:#}"));
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1);
        let instance = wasmtime::Instance::new(&mut store, &module, &[])
            .unwrap_or_else(|err| panic!("{err:#}"));
        let seven = instance
            .get_typed_func::<(), i32>(&mut store, "seven")
            .unwrap_or_else(|err| panic!("{err:#}"));
        assert_eq!(
            seven
                .call(&mut store, ())
                .unwrap_or_else(|e| panic!("{e:#}")),
            7
        );
        assert!(precompile_portable(&wasm, "not-a-triple").is_err());
    }
}
