//! Policies on one embedder-supplied engine and one epoch ticker.

use std::time::Duration;

use regcred_host::{EvalError, Limits, LoadError, PolicyEngine, PolicyModule, PolicyPre};

fn embedder_engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    wasmtime::Engine::new(&config).expect("an engine")
}

#[test]
fn policies_share_the_embedders_engine_and_its_ticker_enforces_deadlines() {
    let engine = PolicyEngine::new(embedder_engine(), Duration::from_millis(2)).unwrap();
    let embedded = PolicyPre::builder().engine(engine.clone()).build().unwrap();
    let path = crate::shared_tests_dir().join("data/hostile/misbehave.wat");
    let hostile = PolicyPre::builder()
        .engine(engine.clone())
        .module(PolicyModule::from_bytes(wat::parse_file(&path).unwrap()))
        .limits(
            Limits::builder()
                .epoch_deadline(Duration::from_millis(30))
                .build(),
        )
        .build()
        .unwrap();
    assert!(wasmtime::Engine::same(embedded.engine(), hostile.engine()));
    assert!(wasmtime::Engine::same(embedded.engine(), engine.engine()));

    let err = hostile.evaluate_raw(b"L").expect_err("loops");
    assert!(matches!(err, EvalError::Timeout { .. }), "{err}");
    assert_eq!(hostile.evaluate_raw(b"{}").unwrap(), br#"{"ok":"fine"}"#);
    let response = embedded.evaluate_raw(br#"{"op": "frobnicate"}"#).unwrap();
    let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(response["error"]["code"], "bad_request");

    // The ticker outlives the first policy dropped.
    drop(embedded);
    let err = hostile.evaluate_raw(b"L").expect_err("loops");
    assert!(matches!(err, EvalError::Timeout { .. }), "{err}");
}

#[test]
fn an_engine_without_epoch_interruption_is_refused() {
    let engine = wasmtime::Engine::new(&wasmtime::Config::new()).unwrap();
    let err = PolicyEngine::new(engine, Duration::from_millis(5)).unwrap_err();
    assert!(
        matches!(&err, LoadError::Engine { reason } if reason.contains("epoch_interruption")),
        "{err}"
    );
}
