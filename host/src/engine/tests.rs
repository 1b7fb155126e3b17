//! Tests of `engine.rs` (its `tests` module, in a file of its own).

use super::*;
use crate::module::PrecompiledCode;
use crate::precompiled::CompileReason;

fn secret() -> SecretManifest {
    serde_json::from_str(
            r#"{"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "quay", "namespace": "apps"},
                "type": "kubernetes.io/regcredentials",
                "stringData": {"serverAddress": "quay.io", "username": "robot", "password": "pw"}}"#,
        )
        .unwrap_or_else(|err| panic!("{err}"))
}

/// The embedded module with the build's code altered by `alter`.
fn embedded_with(alter: impl FnOnce(&mut PrecompiledCode)) -> PolicyModule {
    let module = PolicyModule::embedded();
    let mut code = *module
        .precompiled()
        .unwrap_or_else(|| panic!("a native build precompiles the embedded module"));
    alter(&mut code);
    module.with_precompiled(Some(code))
}

/// Loads `module` on demand and checks it still validates.
fn load(module: PolicyModule) -> PolicyPre {
    let policy = PolicyPre::builder()
        .module(module)
        .on_demand()
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    let report = policy
        .validate(&secret(), &PolicyConfig::default())
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(report.valid, "{:?}", report.violations);
    policy
}

#[test]
fn the_embedded_module_loads_precompiled_on_demand_and_pooling_engines() {
    assert_eq!(
        load(PolicyModule::embedded()).load_path(),
        &LoadPath::Precompiled
    );
    let pooled = PolicyPre::builder()
        .pooling(4)
        .build()
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(pooled.load_path(), &LoadPath::Precompiled);
}

#[test]
fn code_made_from_other_module_bytes_is_not_loaded() {
    let policy = load(embedded_with(|code| code.wasm_sha256[0] ^= 1));
    assert_eq!(
        policy.load_path(),
        &LoadPath::Compiled {
            because: CompileReason::OtherModule
        }
    );
}

#[test]
fn code_made_for_other_engine_settings_is_not_loaded() {
    let policy = load(embedded_with(|code| code.engine_digest[31] ^= 1));
    assert_eq!(
        policy.load_path(),
        &LoadPath::Compiled {
            because: CompileReason::EngineSettings
        }
    );
}

#[test]
fn truncated_or_garbage_code_is_refused_by_wasmtime_and_the_module_compiled() {
    let truncated = embedded_with(|code| code.code = &code.code[..code.code.len() / 2]);
    let garbage = embedded_with(|code| code.code = b"\x7fELF, but not wasmtime's");
    for module in [truncated, garbage] {
        let policy = load(module);
        assert!(
            matches!(
                policy.load_path(),
                LoadPath::Compiled {
                    because: CompileReason::Refused { .. }
                }
            ),
            "{:?}",
            policy.load_path()
        );
    }
}

#[test]
fn without_precompiled_code_the_embedded_module_is_compiled() {
    let policy = load(PolicyModule::embedded().with_precompiled(None));
    assert_eq!(
        policy.load_path(),
        &LoadPath::Compiled {
            because: CompileReason::NoPrecompiledCode
        }
    );
    assert_eq!(
        policy.load_path().to_string(),
        "compiled at load (this build has no precompiled code)"
    );
}

#[test]
fn the_same_bytes_from_elsewhere_are_compiled() {
    // The build's code would fit them, but only the embedded module's code is trusted
    // as this crate's own, and `--policy FILE` keeps compiling what it reads.
    let policy = load(PolicyModule::from_bytes(crate::DEFAULT_MODULE));
    assert_eq!(
        policy.load_path(),
        &LoadPath::Compiled {
            because: CompileReason::NotEmbedded
        }
    );
}

#[test]
fn an_embedders_engine_loads_precompiled_code_only_with_regcreds_settings() {
    let engine = |config: &wasmtime::Config| {
        let engine = Engine::new(config).unwrap_or_else(|err| panic!("{err}"));
        PolicyEngine::new(engine, std::time::Duration::from_millis(5))
            .unwrap_or_else(|err| panic!("{err}"))
    };
    let mut same = wasmtime::Config::new();
    same.epoch_interruption(true);
    let mut other = same.clone();
    other.cranelift_opt_level(wasmtime::OptLevel::SpeedAndSize);
    for (config, expected) in [
        (same, LoadPath::Precompiled),
        (
            other,
            LoadPath::Compiled {
                because: CompileReason::EngineSettings,
            },
        ),
    ] {
        let policy = PolicyPre::builder()
            .engine(engine(&config))
            .build()
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(policy.load_path(), &expected);
        let report = policy
            .validate(&secret(), &PolicyConfig::default())
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(report.valid);
    }
}
