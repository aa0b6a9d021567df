#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = tests::fuzz::run_assigned_msi(data) {
        panic!("{e}");
    }
});
