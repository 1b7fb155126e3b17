//! Any bytes into the policy's JSON entry point: it must answer with JSON, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let response = regcred_policy::evaluate(data);
    assert!(
        std::str::from_utf8(&response).is_ok_and(|text| text.starts_with('{')),
        "evaluate answered with something that is not a JSON object"
    );
});
