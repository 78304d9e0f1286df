//! OTLP/JSON as `POST /v1/traces` takes it: converted to protobuf, then
//! read by the wire view and extracted. Errors are fine; panics are not.
#![no_main]

use driftwatch::extract::Extractor;
use driftwatch::receive::http::json_to_protobuf;
use driftwatch::receive::view::RequestView;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = json_to_protobuf(data) else { return };
    let request = RequestView::parse(&body).expect("our own encoding reads back");
    let extractor = Extractor::new(std::time::Duration::from_secs(600), 1024);
    let mut facts = Vec::new();
    let _ = extractor.extract(&request, 1_700_000_000_000_000_000, &mut facts);
});
