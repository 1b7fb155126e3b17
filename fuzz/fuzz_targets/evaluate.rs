//! Any bytes into the policy's JSON entry point: it must answer with a JSON object, never
//! panic (regcred_policy::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(problem) = regcred_policy::fuzzing::evaluate_answers_a_json_object(data) {
        panic!("{problem}");
    }
});
