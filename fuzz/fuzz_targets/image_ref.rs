//! Any text as an image reference: parse or refuse, never panic; a parsed name parses
//! again to the same name (regcred_policy::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Err(problem) = regcred_policy::fuzzing::image_name_round_trips(text) {
        panic!("{problem}");
    }
});
