//! The host's errors: loading a module ([`LoadError`]) and running one evaluation
//! ([`EvalError`]).
//!
//! Messages name sizes, addresses, export names and trap kinds; they never quote the
//! request or the response, which may hold passwords and tokens.

use std::path::PathBuf;
use std::time::Duration;

use crate::abi::AbiVersion;

/// Why a policy module could not be loaded. Nothing was kept: load another one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read the policy module {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A sha256 pin is not 64 hexadecimal digits.
    #[error("the sha256 pin {pin:?} is not 64 hexadecimal digits")]
    InvalidPin {
        /// The pin as given.
        pin: String,
    },
    /// The module's sha256 is not the pinned one.
    #[error("the policy module's sha256 is {actual}, but {expected} is pinned")]
    Sha256Mismatch {
        /// The pinned digest, lowercase hex.
        expected: String,
        /// The module's digest, lowercase hex.
        actual: String,
    },
    /// wasmtime refused the configuration (a limit out of range, the pooling allocator's
    /// address space).
    #[error("cannot configure the WebAssembly engine: {reason}")]
    Engine {
        /// wasmtime's explanation.
        reason: String,
    },
    /// The bytes are not a valid WebAssembly module, or Cranelift could not compile it.
    #[error("the policy module does not compile: {reason}")]
    Compile {
        /// wasmtime's explanation.
        reason: String,
    },
    /// The module imports something; policy modules import nothing.
    #[error("the policy module imports {module}::{name}, but a policy module must import nothing")]
    UnexpectedImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// A required export is missing.
    #[error("the policy module does not export `{name}`")]
    MissingExport {
        /// The export's name.
        name: &'static str,
    },
    /// A required export has the wrong kind or signature.
    #[error("the policy module's export `{name}` is not {expected}")]
    ExportType {
        /// The export's name.
        name: &'static str,
        /// What it should be, such as `a function (i32, i32) -> i64`.
        expected: &'static str,
    },
    /// The module's memory starts larger than the memory limit.
    #[error(
        "the policy module's memory starts at {minimum} bytes, above the memory limit of \
         {limit}"
    )]
    InitialMemory {
        /// The memory's initial size, in bytes.
        minimum: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The module's ABI major version is not the one this host speaks.
    #[error(
        "the policy module speaks ABI {found}, but this host speaks ABI {supported}.x \
         (the major versions must match)"
    )]
    AbiVersion {
        /// What the module reports.
        found: AbiVersion,
        /// The major version this host implements.
        supported: u16,
    },
    /// The module could not be instantiated or its version queried within the limits.
    #[error("the policy module fails its first run: {source}")]
    Probe {
        /// What went wrong.
        #[source]
        source: EvalError,
    },
}

/// Why one evaluation gave no answer. The host stays usable: the next call starts from a
/// fresh instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The request is larger than the host's input limit; the module was not called.
    #[error("the request has {len} bytes, more than the limit of {limit}")]
    InputTooLarge {
        /// The request's size.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The module ran past its epoch deadline (an endless loop, or far too much work).
    #[error("the policy module ran out of time (deadline {deadline:?})")]
    Timeout {
        /// The deadline in force.
        deadline: Duration,
    },
    /// The module tried to grow its memory (or a table) past the limit.
    #[error("the policy module needs more than its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The limit in force, in bytes.
        limit: usize,
    },
    /// The module trapped (`unreachable`, an out-of-bounds access, a stack overflow...).
    #[error("the policy module trapped: {reason}")]
    Trap {
        /// The trap, as wasmtime describes it.
        reason: String,
    },
    /// `regcred_alloc` gave no buffer for the request.
    #[error("the policy module could not allocate {len} bytes for the request")]
    AllocFailed {
        /// The request's size.
        len: usize,
    },
    /// The module handed back a buffer that does not lie inside its memory.
    #[error(
        "the policy module's {what} buffer ({ptr:#x}, {len} bytes) lies outside its \
         {memory_size}-byte memory"
    )]
    OutOfBounds {
        /// `request` (from `regcred_alloc`) or `response` (from `regcred_evaluate`).
        what: &'static str,
        /// The buffer's address.
        ptr: u32,
        /// The buffer's length.
        len: u32,
        /// The memory's size then.
        memory_size: usize,
    },
    /// The response is not UTF-8.
    #[error("the policy module's response is not UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// The length of the valid prefix.
        valid_up_to: usize,
    },
    /// The response is not JSON, or not a response of the expected shape.
    #[error("the policy module's response is not {expected} (line {line}, column {column})")]
    InvalidJson {
        /// What was expected, such as `JSON` or `a validation report`.
        expected: &'static str,
        /// Where the parser stopped.
        line: usize,
        /// Where the parser stopped.
        column: usize,
    },
    /// The policy answered with an error response: the request itself is bad.
    #[error("the policy rejected the request: {code}: {message}")]
    Rejected {
        /// The stable code, one of `regcred_types::wire::codes`.
        code: String,
        /// The policy's explanation (never a secret value).
        message: String,
    },
    /// Every slot of the pooling allocator is in use; retry, or raise the pool size.
    #[error("all {limit} policy instances are busy")]
    Busy {
        /// The pool size.
        limit: u32,
    },
    /// wasmtime failed in a way none of the other variants describe.
    #[error("the WebAssembly runtime failed: {reason}")]
    Runtime {
        /// wasmtime's explanation.
        reason: String,
    },
}

impl EvalError {
    /// An [`EvalError::InvalidJson`] from a serde_json error, keeping only its position:
    /// serde_json's messages can quote the input, and the input holds secrets.
    pub(crate) fn invalid_json(expected: &'static str, error: &serde_json::Error) -> Self {
        Self::InvalidJson {
            expected,
            line: error.line(),
            column: error.column(),
        }
    }
}
