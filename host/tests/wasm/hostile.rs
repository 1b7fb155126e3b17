//! Hostile modules (`tests/data/hostile/`): each failure is a typed error, and the host
//! serves the next call.

use std::time::Duration;

use regcred_host::{EvalError, InstanceStrategy, Limits, LoadError, PolicyModule, PolicyPre};
use rstest::rstest;

fn module(name: &str) -> PolicyModule {
    let path = crate::shared_tests_dir().join("data/hostile").join(name);
    let bytes = wat::parse_file(&path)
        .unwrap_or_else(|err| panic!("cannot assemble {}: {err}", path.display()));
    PolicyModule::from_bytes(bytes)
}

fn limits() -> Limits {
    Limits::builder()
        .epoch_deadline(Duration::from_millis(30))
        .epoch_tick(Duration::from_millis(2))
        .memory_limit(4 << 20)
        .input_limit(1024)
        .build()
}

fn load(name: &str, strategy: InstanceStrategy) -> Result<PolicyPre, LoadError> {
    PolicyPre::builder()
        .module(module(name))
        .limits(limits())
        .instance_strategy(strategy)
        .pooling(4)
        .build()
}

fn assert_serves(policy: &PolicyPre) {
    let response = policy
        .evaluate_raw(b"{}")
        .expect("a good call after a failure");
    assert_eq!(response, br#"{"ok":"fine"}"#);
}

#[rstest]
#[case::endless_loop(b"L", |e: &EvalError| matches!(e, EvalError::Timeout { .. }))]
#[case::unbounded_memory(b"G", |e: &EvalError| matches!(e, EvalError::MemoryLimit { limit: 0x40_0000 }))]
#[case::trap(b"T", |e: &EvalError| matches!(e, EvalError::Trap { reason } if reason.contains("unreachable")))]
#[case::stack_overflow(b"S", |e: &EvalError| matches!(e, EvalError::Trap { reason } if reason.contains("stack")))]
#[case::response_pointer_out_of_bounds(b"P", |e: &EvalError| matches!(e, EvalError::OutOfBounds { what: "response", ptr: 0xffff_f000, .. }))]
#[case::response_length_out_of_bounds(b"N", |e: &EvalError| matches!(e, EvalError::OutOfBounds { what: "response", len: 0x7fff_ffff, .. }))]
#[case::invalid_json(b"J", |e: &EvalError| matches!(e, EvalError::InvalidJson { expected: "JSON", .. }))]
#[case::invalid_utf8(b"U", |e: &EvalError| matches!(e, EvalError::InvalidUtf8 { valid_up_to: 1 }))]
#[case::alloc_returns_null(b"xyz", |e: &EvalError| matches!(e, EvalError::AllocFailed { len: 3 }))]
#[case::alloc_out_of_bounds(b"12345", |e: &EvalError| matches!(e, EvalError::OutOfBounds { what: "request", .. }))]
#[case::input_too_large(&[b' '; 1025], |e: &EvalError| matches!(e, EvalError::InputTooLarge { len: 1025, limit: 1024 }))]
fn misbehaving_call_gives_typed_error_then_host_serves(
    #[case] request: &[u8],
    #[case] expected: fn(&EvalError) -> bool,
    #[values(InstanceStrategy::Fresh, InstanceStrategy::Reuse)] strategy: InstanceStrategy,
) {
    let policy = load("misbehave.wat", strategy).expect("misbehave.wat loads");
    assert_serves(&policy);
    for _ in 0..2 {
        let err = policy
            .evaluate_raw(request)
            .expect_err("the module misbehaves on this request");
        assert!(expected(&err), "unexpected error: {err:?}");
        assert_serves(&policy);
    }
}

#[test]
fn timeout_honours_the_deadline() {
    let policy = load("misbehave.wat", InstanceStrategy::Fresh).expect("loads");
    let started = std::time::Instant::now();
    let err = policy.evaluate_raw(b"L").expect_err("loops");
    let elapsed = started.elapsed();
    assert!(matches!(err, EvalError::Timeout { .. }), "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(30),
        "stopped early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "stopped late: {elapsed:?}"
    );
}

#[rstest]
#[case::missing_export("missing_export.wat", |e: &LoadError| matches!(e, LoadError::MissingExport { name: "regcred_evaluate" }))]
#[case::memory_not_exported("no_memory.wat", |e: &LoadError| matches!(e, LoadError::MissingExport { name: "memory" }))]
#[case::wrong_signature("wrong_signature.wat", |e: &LoadError| matches!(e, LoadError::ExportType { name: "regcred_evaluate", .. }))]
#[case::wrong_abi_major("abi_v2.wat", |e: &LoadError| matches!(e, LoadError::AbiVersion { found, supported: 1 } if found.major == 2))]
#[case::imports_something("imports.wat", |e: &LoadError| matches!(e, LoadError::UnexpectedImport { module, name } if module == "env" && name == "log"))]
#[case::initial_memory_over_limit("huge_memory.wat", |e: &LoadError| matches!(e, LoadError::InitialMemory { minimum: 0x400_0000, limit: 0x40_0000 }))]
#[case::version_never_returns("version_loop.wat", |e: &LoadError| matches!(e, LoadError::Probe { source: EvalError::Timeout { .. } }))]
#[case::start_function_traps("start_trap.wat", |e: &LoadError| matches!(e, LoadError::Probe { source: EvalError::Trap { .. } }))]
fn broken_module_is_refused_at_load(
    #[case] name: &str,
    #[case] expected: fn(&LoadError) -> bool,
    #[values(InstanceStrategy::Fresh, InstanceStrategy::Reuse)] strategy: InstanceStrategy,
) {
    let err = load(name, strategy).expect_err("the module is refused");
    assert!(expected(&err), "unexpected error: {err:?}");
    // The process goes on loading and serving modules.
    let policy = load("misbehave.wat", strategy).expect("a good module loads after");
    assert_serves(&policy);
}

#[test]
fn not_a_module_is_a_compile_error() {
    let err = PolicyPre::builder()
        .module(PolicyModule::from_bytes(b"\0asm garbage".to_vec()))
        .build()
        .expect_err("garbage");
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
}

#[test]
fn pinned_digest_mismatch_is_refused() {
    let err = module("misbehave.wat")
        .pin_sha256(&"ab".repeat(32))
        .expect_err("wrong digest");
    assert!(matches!(err, LoadError::Sha256Mismatch { .. }), "{err:?}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = PolicyModule::from_file("/nonexistent/policy.wasm").expect_err("no file");
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
}

#[test]
fn every_pool_slot_busy_is_busy_not_a_hang() {
    // One slot, held by the warm instance: a concurrent fresh instance cannot get one.
    let policy = PolicyPre::builder()
        .module(module("misbehave.wat"))
        .limits(
            Limits::builder()
                .epoch_deadline(Duration::from_millis(500))
                .build(),
        )
        .instance_strategy(InstanceStrategy::Fresh)
        .pooling(1)
        .build()
        .expect("loads");
    assert_serves(&policy);
    let policy = std::sync::Arc::new(policy);
    let looping = {
        let policy = policy.clone();
        std::thread::spawn(move || policy.evaluate_raw(b"L"))
    };
    std::thread::sleep(Duration::from_millis(100));
    let second = policy.evaluate_raw(b"{}");
    let first = looping.join().expect("no panic");
    assert!(matches!(first, Err(EvalError::Timeout { .. })), "{first:?}");
    assert!(
        matches!(second, Err(EvalError::Busy { limit: 1 })),
        "{second:?}"
    );
    assert_serves(&policy);
}
