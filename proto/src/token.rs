//! Capability tokens as bytes on the wire: their size bound, their base64 form, and the hash a
//! proof of possession binds to. Minting, verifying and narrowing tokens is the services' work
//! (`keymesh_core::capability::token`); a node only carries and presents them.

use base64::{
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Largest token accepted, in bytes (a token with a few attenuation blocks is ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Tokens travel as URL-safe base64, with or without padding.
pub const TOKEN_B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The SHA-256 of a token's bytes: its cache key and what proofs of possession bind to.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// 32 bytes from the OS random number generator (a key, a secret, a nonce source).
pub fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut()).expect("the OS random number generator failed");
    key
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    #[test]
    fn tokens_decode_with_or_without_padding() {
        let raw = b"to"; // 2 bytes: one `=` of padding when padded
        let unpadded = TOKEN_B64.encode(raw);
        assert!(!unpadded.contains('='));
        assert_eq!(TOKEN_B64.decode(&unpadded).expect("unpadded"), raw);
        assert_eq!(
            TOKEN_B64.decode(format!("{unpadded}=")).expect("padded"),
            raw
        );
    }
}
