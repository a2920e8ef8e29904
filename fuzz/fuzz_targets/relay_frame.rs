//! The relay's frame decoders on arbitrary bytes: never a panic, and whatever decodes
//! re-encodes to a frame that decodes to the same value.
#![no_main]

use keymesh_proto::frame::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

/// The relay's default bound on a send's payload (256 KiB).
const MAX_PAYLOAD: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ClientFrame::decode(data, MAX_PAYLOAD) {
        let again =
            ClientFrame::decode(&frame.encode(), MAX_PAYLOAD).expect("re-encoded frame decodes");
        assert!(again == frame, "client frame round trip");
    }
    if let Ok(frame) = ServerFrame::decode(data) {
        let again = ServerFrame::decode(&frame.encode()).expect("re-encoded frame decodes");
        assert!(again == frame, "server frame round trip");
    }
});
