//! Any text as an image reference: parse or refuse, never panic; a parsed name parses
//! again to the same name.
#![no_main]

use regcred_policy::ImageRef;

libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(image) = ImageRef::parse(text) {
        let name = image.name();
        let again = ImageRef::parse(&name).expect("a normalized name is a valid reference");
        assert_eq!(again.name(), name);
    }
});
