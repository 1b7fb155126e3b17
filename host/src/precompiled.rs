//! How the policy module becomes machine code: the code precompiled for it when this crate
//! was built, loaded when it was made from these module bytes by an engine with the same
//! settings (the one `unsafe` of the crate), else Cranelift at load.

use wasmtime::{Engine, Module};

use crate::error::LoadError;
use crate::module::{ModuleSource, PolicyModule, PrecompiledCode};

/// How a policy's module became machine code: see [`PolicyPre::load_path`](crate::PolicyPre::load_path).
///
/// ```
/// use regcred_host::{LoadPath, PolicyModule, PolicyPre};
///
/// // The embedded module on regcred's own engine: compiled when regcred was built.
/// assert_eq!(PolicyPre::new()?.load_path(), &LoadPath::Precompiled);
/// // Any other module is compiled when it is loaded.
/// let copy = PolicyModule::from_bytes(regcred_host::DEFAULT_MODULE);
/// let policy = PolicyPre::builder().module(copy).build()?;
/// assert!(matches!(policy.load_path(), LoadPath::Compiled { .. }));
/// # Ok::<(), regcred_host::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadPath {
    /// Machine code made for this module and this engine's settings when this crate was
    /// built, loaded without compiling (milliseconds, not hundreds of them).
    Precompiled,
    /// Compiled by Cranelift when loaded.
    Compiled {
        /// Why no precompiled code was used.
        because: CompileReason,
    },
}

/// Why a module was compiled at load instead of loading precompiled code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompileReason {
    /// Not the embedded module: modules from files or bytes are always compiled.
    NotEmbedded,
    /// This build carries no precompiled code (a cross build, or precompiling failed in
    /// the build script, which then warned).
    NoPrecompiledCode,
    /// The precompiled code was made from other module bytes than the embedded ones.
    OtherModule,
    /// The engine compiles with other settings than the build's engine did (an
    /// embedder's configuration, or a CPU with other features than the build machine's).
    EngineSettings,
    /// wasmtime refused the precompiled code.
    Refused {
        /// wasmtime's explanation.
        reason: String,
    },
}

impl std::fmt::Display for LoadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Precompiled => f.write_str("precompiled at build time"),
            Self::Compiled { because } => write!(f, "compiled at load ({because})"),
        }
    }
}

impl std::fmt::Display for CompileReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotEmbedded => f.write_str("not the embedded module"),
            Self::NoPrecompiledCode => f.write_str("this build has no precompiled code"),
            Self::OtherModule => f.write_str("the precompiled code is another module's"),
            Self::EngineSettings => {
                f.write_str("the engine's settings differ from the build's engine")
            }
            Self::Refused { reason } => {
                write!(f, "wasmtime refused the precompiled code: {reason}")
            }
        }
    }
}

/// The module's machine code: the code precompiled for it at build time when that fits
/// `engine`, else compiled now.
pub(crate) fn compile(
    engine: &Engine,
    module: &PolicyModule,
) -> Result<(Module, LoadPath), LoadError> {
    let because = match load_precompiled(engine, module) {
        Ok(compiled) => return Ok((compiled, LoadPath::Precompiled)),
        Err(because) => because,
    };
    let compiled = Module::new(engine, module.bytes()).map_err(|err| LoadError::Compile {
        reason: format!("{err:#}"),
    })?;
    Ok((compiled, LoadPath::Compiled { because }))
}

/// The precompiled code for `module`, if there is code, made from these very module
/// bytes, by an engine with `engine`'s compilation settings, and wasmtime accepts it.
fn load_precompiled(engine: &Engine, module: &PolicyModule) -> Result<Module, CompileReason> {
    if module.source() != &ModuleSource::Embedded {
        return Err(CompileReason::NotEmbedded);
    }
    let code = module
        .precompiled()
        .ok_or(CompileReason::NoPrecompiledCode)?;
    if code.wasm_sha256 != module.sha256() {
        return Err(CompileReason::OtherModule);
    }
    // Portable code (a cross build's) was made for the target, not for this CPU: the
    // digests differ by the CPU features, and wasmtime's own check on load (triple,
    // settings, each CPU feature the code uses present) decides.
    if !code.portable && code.engine_digest != regcred_module_build::compatibility_digest(engine) {
        return Err(CompileReason::EngineSettings);
    }
    deserialize(engine, code).map_err(|err| CompileReason::Refused {
        reason: format!("{err:#}"),
    })
}

#[expect(
    unsafe_code,
    reason = "Module::deserialize trusts its bytes to be wasmtime's own output; the one \
              place this crate loads machine code"
)]
fn deserialize(engine: &Engine, code: &PrecompiledCode) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` requires bytes made by `Engine::precompile_module`
    // (or `Module::serialize`) that nobody has altered; it checks the format, wasmtime's
    // version and the engine's settings itself, not the code. `PrecompiledCode` is
    // crate-private and made only by `PrecompiledCode::embedded`, whose `code` is
    // `include_bytes!` of what this crate's build script wrote with
    // `Engine::precompile_module` (`regcred_module_build::precompile`), read-only in the
    // binary. The caller checked that it was made from this module's bytes (sha256) by an
    // engine whose compatibility digest equals `engine`'s, or, for portable code, left
    // the fit to wasmtime's check of triple, settings and CPU features. (Unit tests also hand in
    // truncated code, which fails wasmtime's format check before any of it is used.)
    unsafe { Module::deserialize(engine, code.code) }
}
