//! The module's raw ABI as the host calls it (`policy-wasm/ABI.md`): its exports found
//! and checked once, the request copied in, `regcred_evaluate` called, the response
//! copied out, every pointer the module hands back checked against its memory.

use wasmtime::{ExternType, Memory, Module, ModuleExport, Store, TypedFunc};

use crate::error::{EvalError, LoadError};
use crate::limits::Limits;

use super::{Live, StoreState};

/// The module's exports, found once by index.
#[derive(Clone)]
pub(super) struct ExportIndex {
    pub(super) memory: ModuleExport,
    pub(super) abi_version: ModuleExport,
    pub(super) alloc: ModuleExport,
    pub(super) dealloc: ModuleExport,
    pub(super) evaluate: ModuleExport,
}

/// One live instance's exports.
pub(super) struct Exports {
    pub(super) memory: Memory,
    pub(super) alloc: TypedFunc<i32, i32>,
    pub(super) dealloc: TypedFunc<(i32, i32), ()>,
    pub(super) evaluate: TypedFunc<(i32, i32), i64>,
}

pub(super) const ALLOC: &str = "regcred_alloc";
pub(super) const DEALLOC: &str = "regcred_dealloc";
pub(super) const EVALUATE: &str = "regcred_evaluate";
pub(super) const ABI_VERSION: &str = "regcred_abi_version";
pub(super) const MEMORY: &str = "memory";

/// A failure inside one call: already typed, or wasmtime's, to classify with the store.
pub(super) enum Failure {
    Typed(EvalError),
    Wasmtime(wasmtime::Error),
}

impl From<EvalError> for Failure {
    fn from(err: EvalError) -> Self {
        Self::Typed(err)
    }
}

impl From<wasmtime::Error> for Failure {
    fn from(err: wasmtime::Error) -> Self {
        Self::Wasmtime(err)
    }
}

/// Copies the request in, evaluates, copies the response out; frees both buffers when
/// the instance is kept.
pub(super) fn call_evaluate(
    live: &mut Live,
    request: &[u8],
    free: bool,
) -> Result<Vec<u8>, Failure> {
    let Live { store, exports } = live;
    // The input limit keeps the length far below 2 GiB.
    let len = i32::try_from(request.len()).map_err(|_| EvalError::InputTooLarge {
        len: request.len(),
        limit: i32::MAX as usize,
    })?;
    let ptr = exports.alloc.call(&mut *store, len)?;
    if ptr == 0 && len > 0 {
        return Err(EvalError::AllocFailed { len: request.len() }.into());
    }
    let input = buffer(store, exports.memory, "request", ptr as u32, len as u32)?;
    exports.memory.data_mut(&mut *store)[input.clone()].copy_from_slice(request);

    let packed = exports.evaluate.call(&mut *store, (ptr, len))? as u64;
    let (out_ptr, out_len) = ((packed >> 32) as u32, packed as u32);
    let output = buffer(store, exports.memory, "response", out_ptr, out_len)?;
    let response = exports.memory.data(&*store)[output].to_vec();

    if free {
        exports
            .dealloc
            .call(&mut *store, (out_ptr as i32, out_len as i32))?;
        exports.dealloc.call(&mut *store, (ptr, len))?;
    }
    Ok(response)
}

/// The byte range of a buffer the module handed out, if it lies inside its memory.
pub(super) fn buffer(
    store: &Store<StoreState>,
    memory: Memory,
    what: &'static str,
    ptr: u32,
    len: u32,
) -> Result<std::ops::Range<usize>, EvalError> {
    let memory_size = memory.data_size(store);
    let start = ptr as usize;
    let end = start + len as usize;
    if end > memory_size {
        return Err(EvalError::OutOfBounds {
            what,
            ptr,
            len,
            memory_size,
        });
    }
    Ok(start..end)
}

/// Checks that the module imports nothing and exports what the ABI needs, and finds the
/// exports' indices.
pub(super) fn check_shape(module: &Module) -> Result<ExportIndex, LoadError> {
    if let Some(import) = module.imports().next() {
        return Err(LoadError::UnexpectedImport {
            module: import.module().into(),
            name: import.name().into(),
        });
    }
    let find = |name: &'static str, expected: &'static str, ok: &dyn Fn(&ExternType) -> bool| {
        let ty = module
            .get_export(name)
            .ok_or(LoadError::MissingExport { name })?;
        if !ok(&ty) {
            return Err(LoadError::ExportType { name, expected });
        }
        module
            .get_export_index(name)
            .ok_or(LoadError::MissingExport { name })
    };
    let func = |params: &'static [&'static str], results: &'static [&'static str]| {
        move |ty: &ExternType| {
            ty.func().is_some_and(|f| {
                f.params()
                    .map(|p| p.to_string())
                    .eq(params.iter().map(|p| p.to_string()))
                    && f.results()
                        .map(|r| r.to_string())
                        .eq(results.iter().map(|r| r.to_string()))
            })
        }
    };
    const I32: &str = "i32";
    const I64: &str = "i64";
    Ok(ExportIndex {
        memory: find(MEMORY, "a 32-bit unshared memory", &|ty| {
            ty.memory().is_some_and(|m| !m.is_64() && !m.is_shared())
        })?,
        abi_version: find(ABI_VERSION, "a function () -> i32", &func(&[], &[I32]))?,
        alloc: find(ALLOC, "a function (i32) -> i32", &func(&[I32], &[I32]))?,
        dealloc: find(
            DEALLOC,
            "a function (i32, i32) -> ()",
            &func(&[I32, I32], &[]),
        )?,
        evaluate: find(
            EVALUATE,
            "a function (i32, i32) -> i64",
            &func(&[I32, I32], &[I64]),
        )?,
    })
}

/// Refuses a module whose memories start above the limit, before compiling it (the
/// pooling allocator would refuse it with a less precise message).
pub(super) fn check_initial_memory(bytes: &[u8], limits: &Limits) -> Result<(), LoadError> {
    use wasmtime::wasmparser::{Parser, Payload};
    for payload in Parser::new(0).parse_all(bytes) {
        // Malformed modules are Cranelift's to report.
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            Payload::MemorySection(memories) => {
                for memory in memories.into_iter().flatten() {
                    let minimum = memory.initial.saturating_mul(65_536);
                    if minimum > limits.memory_limit() as u64 {
                        return Err(LoadError::InitialMemory {
                            minimum,
                            limit: limits.memory_limit(),
                        });
                    }
                }
            }
            Payload::CodeSectionStart { .. } => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}
