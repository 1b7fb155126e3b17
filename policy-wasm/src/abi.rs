//! The raw ABI of the policy module (`policy-wasm/ABI.md`): scalar exports over linear
//! memory, no imports. Compiled for `wasm32` only.
//!
//! Every export is total: whatever numbers the host passes, it answers (with an `error`
//! response or a zero pointer) instead of trapping, as long as the host keeps to the one
//! rule the module cannot check: it frees only buffers the module handed out, once.
#![expect(
    unsafe_code,
    reason = "the module ABI passes buffers as raw pointers into linear memory; this module \
              is the one place that turns them into slices and back"
)]

use std::alloc::{Layout, alloc, dealloc};

use regcred_types::wire::{PolicyError, PolicyResponse, codes};

/// The ABI's major version: bumped when an export changes or goes away.
const ABI_MAJOR: i32 = 1;
/// The ABI's minor version: bumped when something is only added.
const ABI_MINOR: i32 = 0;
/// The largest request the module accepts, in bytes. Larger ones get `too_large`.
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// The size of a wasm page.
const PAGE_BYTES: usize = 65_536;

/// `major << 16 | minor`.
#[unsafe(no_mangle)]
extern "C" fn regcred_abi_version() -> i32 {
    (ABI_MAJOR << 16) | ABI_MINOR
}

/// Allocates `len` bytes for a request and returns their address; `0` when `len` is
/// negative, over the request limit, or the memory cannot grow. A zero-length request
/// gets a non-null address that must not be written.
#[unsafe(no_mangle)]
extern "C" fn regcred_alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    if len > MAX_REQUEST_BYTES {
        return 0;
    }
    if len == 0 {
        return 1;
    }
    match Layout::array::<u8>(len) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc(layout) as i32 },
        Err(_) => 0,
    }
}

/// Frees a buffer from [`regcred_alloc`] or [`regcred_evaluate`], with the same length.
/// Zero or negative lengths and the null address are ignored.
#[unsafe(no_mangle)]
extern "C" fn regcred_dealloc(ptr: i32, len: i32) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    if ptr == 0 || len == 0 {
        return;
    }
    if let Ok(layout) = Layout::array::<u8>(len) {
        // SAFETY: by the ABI's contract, `ptr` came from `alloc` with this very layout
        // (`regcred_alloc`, or a boxed slice of `len` bytes from `regcred_evaluate`).
        unsafe { dealloc(ptr as usize as *mut u8, layout) }
    }
}

/// Evaluates the JSON request in `[ptr, ptr + len)` and returns
/// `(result_ptr << 32) | result_len` of the JSON response, which the host frees with
/// [`regcred_dealloc`]. The request buffer stays the host's.
#[unsafe(no_mangle)]
extern "C" fn regcred_evaluate(ptr: i32, len: i32) -> i64 {
    let response = with_request(ptr, len, crate::evaluate).unwrap_or_else(error_response);
    let response = response.into_boxed_slice();
    let len = response.len();
    let ptr = Box::into_raw(response).cast::<u8>() as usize;
    // Both fit in 32 bits on wasm32.
    ((ptr as u64) << 32 | len as u64) as i64
}

/// Calls `f` with the request bytes, once they are known to lie inside linear memory.
fn with_request<R>(ptr: i32, len: i32, f: impl FnOnce(&[u8]) -> R) -> Result<R, PolicyError> {
    let bad = |message: String| PolicyError {
        code: codes::BAD_REQUEST.into(),
        message,
    };
    let Ok(len) = usize::try_from(len) else {
        return Err(bad(format!("negative request length {len}")));
    };
    if len > MAX_REQUEST_BYTES {
        return Err(PolicyError {
            code: codes::TOO_LARGE.into(),
            message: format!(
                "the request has {len} bytes, more than the module's limit of \
                 {MAX_REQUEST_BYTES}"
            ),
        });
    }
    if len == 0 {
        return Ok(f(&[]));
    }
    let start = ptr as u32 as usize;
    let memory = core::arch::wasm32::memory_size(0) * PAGE_BYTES;
    if start == 0 || start.checked_add(len).is_none_or(|end| end > memory) {
        return Err(bad(format!(
            "the request buffer ({start:#x}, {len} bytes) is outside linear memory"
        )));
    }
    // SAFETY: the range is non-null and inside linear memory (checked above), and by the
    // ABI's contract it is the host's request, written before the call and not touched
    // during it. It is only read, and only during this call.
    let request = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
    Ok(f(request))
}

fn error_response(error: PolicyError) -> Vec<u8> {
    serde_json::to_vec(&PolicyResponse::Error { error }).unwrap_or_default()
}
