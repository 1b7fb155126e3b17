//! The embedded policy module's shape: what every host (wasmtime, wazero, Node) relies on.

use regcred_host::{ABI_MAJOR, DEFAULT_MODULE, PolicyPre};

fn compiled() -> wasmtime::Module {
    wasmtime::Module::new(&wasmtime::Engine::default(), DEFAULT_MODULE).expect("compiles")
}

#[test]
fn embedded_module_imports_nothing() {
    let imports: Vec<String> = compiled()
        .imports()
        .map(|i| format!("{}::{}", i.module(), i.name()))
        .collect();
    assert_eq!(imports, Vec::<String>::new());
}

#[test]
fn embedded_module_exports_the_abi() {
    let module = compiled();
    let exports: Vec<String> = module.exports().map(|e| e.name().to_string()).collect();
    for name in [
        "memory",
        "regcred_abi_version",
        "regcred_alloc",
        "regcred_dealloc",
        "regcred_evaluate",
    ] {
        assert!(
            exports.iter().any(|e| e == name),
            "{name} missing from {exports:?}"
        );
    }
}

#[test]
fn embedded_module_speaks_abi_1_0() {
    let policy = PolicyPre::new().expect("loads");
    assert_eq!(policy.abi_version().major, ABI_MAJOR);
    assert_eq!(policy.abi_version().minor, 0);
}
