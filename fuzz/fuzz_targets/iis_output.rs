//! Arbitrary text as appcmd / sc / iisreset / typeperf output.
#![no_main]
use farm_agent::iiscmd::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for kind in ["APPPOOL", "WP", "SITE", "APP", "REQUEST"] {
        for o in parse::objects(&text, kind) {
            let _ = o.attr("state");
        }
    }
    let _ = parse::appcmd_error(&text);
    let _ = parse::sc_state(&text);
    let _ = parse::iisreset_failed(&text);
    let _ = parse::typeperf_value(&text);
});
