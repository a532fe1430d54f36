//! The decoders never panic: any bytes give a valid program, any text parses or gives an
//! error with a line and column inside it, and printed programs parse back exactly.
#![no_main]

use lazymmu_harness::gen::from_bytes;
use lazymmu_lang::text::{parse, to_text};
use lazymmu_lang::Mode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Realistic, Mode::Adversarial] {
        let p = from_bytes(data, mode);
        assert!(p.validate().is_ok());
        assert_eq!(parse(&to_text(&p)).as_ref(), Ok(&p));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = parse(text) {
            assert!(e.line >= 1 && e.line <= text.lines().count().max(1) && e.col >= 1);
        }
    }
});
