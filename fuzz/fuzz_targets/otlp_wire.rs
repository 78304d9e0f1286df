//! The OTLP protobuf path as a request takes it: the zero-copy wire view,
//! then extraction into span facts. Any input must give a result or an
//! error, never a panic, and never more facts than the view counted.
#![no_main]

use driftwatch::extract::Extractor;
use driftwatch::receive::view::RequestView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = RequestView::parse(data) else { return };
    let count = request.span_count();
    let extractor = Extractor::new(std::time::Duration::from_secs(600), 1024);
    let mut facts = Vec::new();
    if let Ok(rejected) = extractor.extract(&request, 1_700_000_000_000_000_000, &mut facts) {
        assert!(facts.len() + rejected.total() as usize <= count);
    }
});
