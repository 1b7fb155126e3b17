//! Any text as a serverAddress: parse or refuse, never panic; a parsed key parses again
//! to the same key.
#![no_main]

use regcred_policy::ServerAddress;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(address) = ServerAddress::parse(text) {
        let key = address.key();
        let again = ServerAddress::parse(&key).expect("a key is a valid serverAddress");
        assert_eq!(again.key(), key);
    }
});
