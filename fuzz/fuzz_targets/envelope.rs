//! The HPKE envelope: the `enc` header parser and `open` on arbitrary bytes. Never a panic;
//! a header that parses re-encodes to the same bytes; nothing forged opens.
#![no_main]

use std::sync::LazyLock;

use keymesh_proto::{
    envelope::{EnvelopeHeader, open},
    keys::NodeKeys,
};
use libfuzzer_sys::fuzz_target;

static RECIPIENT: LazyLock<NodeKeys> =
    LazyLock::new(|| NodeKeys::generate("fuzz-recipient").expect("keys"));
static SENDER: LazyLock<NodeKeys> =
    LazyLock::new(|| NodeKeys::generate("fuzz-sender").expect("keys"));

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = EnvelopeHeader::parse(data) {
        assert!(header.to_bytes().as_slice() == data, "header round trip");
    }
    // The first 49 bytes (or fewer) as `enc`, the rest as the ciphertext.
    let split = data.len().min(keymesh_proto::envelope::ENC_LEN);
    let (enc, payload) = data.split_at(split);
    let sender_public = SENDER.current_enc_key().public;
    let opened = open(
        &RECIPIENT,
        SENDER.node(),
        &sender_public,
        [7; 16],
        enc,
        payload,
    );
    assert!(opened.is_err(), "bytes not sealed by the sender never open");
});
