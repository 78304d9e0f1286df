//! The commit classifier, which parses trailers, co-authors and markers
//! out of free text that anyone with push access writes. The input is
//! split into a message and the author and committer identities.
#![no_main]

use driftwatch::attribute::classify::{Classifier, CommitIdentity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\u{0}');
    let message = parts.next().unwrap_or_default();
    let author_name = parts.next().unwrap_or("A");
    let author_email = parts.next().unwrap_or("a@example.com");
    let committer_name = parts.next().unwrap_or("C");
    let committer_email = parts.next().unwrap_or("c@example.com");
    let classifier = Classifier::with_rules(Vec::new());
    let _ = classifier.classify(&CommitIdentity {
        message,
        author_name,
        author_email,
        committer_name,
        committer_email,
    });
});
