//! Any text as a serverAddress: parse or refuse, never panic; a parsed key parses again
//! to the same key (regcred_policy::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Err(problem) = regcred_policy::fuzzing::server_address_key_round_trips(text) {
        panic!("{problem}");
    }
});
