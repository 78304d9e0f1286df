//! The generic webhook: the contract's `{"status", "event"}` body (plus the
//! whole group as `events`), deploy markers, static labels, and the
//! `X-Driftwatch-Signature` HMAC that lets a receiver check the sender.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::detect::event::{Deploy, DriftEvent, EventState};

/// The generic webhook body: `{"status", "event"}` per the contract, plus
/// `events` holding the whole group.
pub(super) fn body(status: EventState, events: &[&DriftEvent]) -> Value {
    json!({
        "status": status,
        "event": events.first(),
        "events": events,
    })
}

/// The webhook body of a deploy marker: `{"status": "deploy", "deploy"}`.
pub(super) fn deploy_body(deploy: &Deploy) -> Value {
    json!({"status": "deploy", "deploy": deploy})
}

/// A sink's static labels on its webhook body, as `labels`.
pub(super) fn label(body: &mut Value, labels: &BTreeMap<String, String>) {
    if !labels.is_empty() {
        body["labels"] = json!(labels);
    }
}

/// `sha256=<hex>` HMAC of the body.
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
