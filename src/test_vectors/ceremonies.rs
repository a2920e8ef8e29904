//! Key-ceremony sealing (passphrases and shares).

use super::*;

// ---------------------------------------------------------------------------------------------
// Key ceremonies.

#[test]
fn ceremony_vectors() {
    use ceremony::{INFO_PASSPHRASE, INFO_SHARE, INFO_UNLOCK_SHARE, share_aad};
    const NAME: &str = "ceremony.json";
    let group = "payments";
    // A management user id (users are UUIDs): the share holder's admin_id.
    let holder_id = "3f2b8c1e-5a47-4d0e-9b6a-2c1d7e8f9a0b";
    let ceremony_secret = fixed("ceremony key");
    let holder_secret = fixed("share key of the holder");
    let ceremony_key = hpke(ceremony_secret);
    let holder_key = hpke(holder_secret);
    let passphrase = b"correct horse battery staple";
    let mut share = vec![1u8];
    share.extend_from_slice(&fixed("a share value"));
    Share::from_bytes(&share).expect("a well-formed share");
    let aad = share_aad(group, holder_id);
    assert_eq!(aad, format!("{group}\n{holder_id}").into_bytes());
    let committed = committed(NAME);
    let old = |name: &str| old_hex(committed.as_ref(), &format!("/messages/{name}/sealed_hex"));
    let opens_base = |key: &HpkeKeyPair, info: &[u8], aad: &[u8], sealed: &[u8], plain: &[u8]| {
        crypto::hpke_open(key, info, aad, sealed).is_ok_and(|p| p[..] == plain[..])
    };
    let opens_auth = |sealed: &[u8]| {
        crypto::hpke_open_auth(
            &ceremony_key,
            &holder_key.public,
            INFO_UNLOCK_SHARE,
            &aad,
            sealed,
        )
        .is_ok_and(|p| p[..] == share[..])
    };

    let sealed_passphrase = kept_or_fresh(
        NAME,
        "sealed passphrase",
        old("passphrase"),
        |s| {
            opens_base(
                &ceremony_key,
                INFO_PASSPHRASE,
                group.as_bytes(),
                s,
                passphrase,
            )
        },
        || {
            crypto::hpke_seal(
                &ceremony_key.public,
                INFO_PASSPHRASE,
                group.as_bytes(),
                passphrase,
            )
            .expect("seal")
        },
    );
    let share_to_holder = kept_or_fresh(
        NAME,
        "share sealed to its holder",
        old("share_to_holder"),
        |s| opens_base(&holder_key, INFO_SHARE, &aad, s, &share),
        || crypto::hpke_seal(&holder_key.public, INFO_SHARE, &aad, &share).expect("seal"),
    );
    let unlock_share = kept_or_fresh(
        NAME,
        "unlock share",
        old("unlock_share"),
        |s| opens_auth(s),
        || {
            crypto::hpke_seal_auth(
                &holder_key,
                &ceremony_key.public,
                INFO_UNLOCK_SHARE,
                &aad,
                &share,
            )
            .expect("seal")
        },
    );
    // Fresh seals by the project's functions open with the stated keys.
    let fresh = crypto::hpke_seal(
        &ceremony_key.public,
        INFO_PASSPHRASE,
        group.as_bytes(),
        passphrase,
    )
    .expect("seal");
    assert!(opens_base(
        &ceremony_key,
        INFO_PASSPHRASE,
        group.as_bytes(),
        &fresh,
        passphrase
    ));
    let fresh = crypto::hpke_seal(&holder_key.public, INFO_SHARE, &aad, &share).expect("seal");
    assert!(opens_base(&holder_key, INFO_SHARE, &aad, &fresh, &share));
    let fresh = crypto::hpke_seal_auth(
        &holder_key,
        &ceremony_key.public,
        INFO_UNLOCK_SHARE,
        &aad,
        &share,
    )
    .expect("seal");
    assert!(opens_auth(&fresh));
    // Negative: the share resealed in base mode (no sender authentication) is refused.
    let base_mode_share = kept_or_fresh(
        NAME,
        "base-mode unlock share",
        old_hex(committed.as_ref(), "/invalid/0/sealed_hex"),
        |s| opens_base(&ceremony_key, INFO_UNLOCK_SHARE, &aad, s, &share) && !opens_auth(s),
        || crypto::hpke_seal(&ceremony_key.public, INFO_UNLOCK_SHARE, &aad, &share).expect("seal"),
    );
    let other_admin = "7d1e0c55-2b9a-4f63-8e21-0a6b4c3d2e1f";
    let other_aad = share_aad(group, other_admin);
    assert!(
        crypto::hpke_open_auth(
            &ceremony_key,
            &holder_key.public,
            INFO_UNLOCK_SHARE,
            &other_aad,
            &unlock_share
        )
        .is_err()
    );
    let unpadded = STANDARD_NO_PAD.encode(&sealed_passphrase);
    let padded = STANDARD.encode(&sealed_passphrase);
    assert!(
        padded.ends_with('='),
        "the example needs padding to show it"
    );
    assert!(STANDARD.decode(&unpadded).is_err());

    let sealed = |name: &str,
                  step: &str,
                  mode: &str,
                  sender: J,
                  recipient: &str,
                  info: &[u8],
                  aad: &[u8],
                  plaintext: J,
                  sealed: &[u8],
                  field: J| {
        (
            name.to_owned(),
            obj([
                ("step", step.into()),
                ("mode", mode.into()),
                ("sender", sender),
                ("recipient", recipient.into()),
                ("info", message(info)),
                ("aad", message(aad)),
                ("plaintext", plaintext),
                ("sealed_hex", hx(sealed)),
                (
                    "sealed_layout",
                    "32-byte encapsulated key || ciphertext and 16-byte tag".into(),
                ),
                ("field", field),
            ]),
        )
    };
    let messages = J::Obj(vec![
        sealed(
            "passphrase",
            "init, unlock and rekey of a passphrase vault: the admin's tool seals the passphrase to the ceremony key",
            "base (0x00)",
            J::Null,
            "ceremony key",
            INFO_PASSPHRASE,
            group.as_bytes(),
            message(passphrase),
            &sealed_passphrase,
            obj([
                ("name", "sealed_passphrase (sealed_current_passphrase in a rekey)".into()),
                ("encoding", "standard base64 (RFC 4648 section 4) with padding".into()),
                ("value", padded.clone().into()),
            ]),
        ),
        sealed(
            "share_to_holder",
            "init or rekey of a Shamir vault: the vault seals each share to its holder's registered share key",
            "base (0x00)",
            J::Null,
            "holder's share key",
            INFO_SHARE,
            &aad,
            obj([
                ("hex", hx(&share)),
                ("layout", "share id (1 byte, 1..=255) || 32-byte value".into()),
            ]),
            &share_to_holder,
            obj([
                ("name", "shares[].sealed_share in the ceremony answer (GET /v1/ceremonies/{id} at management)".into()),
                ("encoding", "standard base64 with padding".into()),
                ("value", STANDARD.encode(&share_to_holder).into()),
            ]),
        ),
        sealed(
            "unlock_share",
            "unlock or rekey of a Shamir vault: the holder opens its share and seals it again to the ceremony key, authenticated by its share key",
            "auth (0x02)",
            obj([("key", "holder's share key".into()), ("x25519_public_hex", hx(holder_key.public))]),
            "ceremony key",
            INFO_UNLOCK_SHARE,
            &aad,
            obj([("hex", hx(&share))]),
            &unlock_share,
            obj([
                ("name", "sealed_share (POST /v1/ceremonies/{id}/shares at management; the vault receives {admin_id, sealed_share})".into()),
                ("encoding", "standard base64 with padding".into()),
                ("value", STANDARD.encode(&unlock_share).into()),
            ]),
        ),
    ]);
    let doc = obj([
        (
            "description",
            "Vault key-ceremony sealing: HPKE (RFC 9180) single shot, DHKEM(X25519, HKDF-SHA256), \
             HKDF-SHA256, ChaCha20-Poly1305; sealed = encapsulated key (32) || ciphertext. Keys \
             are raw 32-byte X25519 keys in lowercase hex; sealed values travel as standard \
             base64 with padding."
                .into(),
        ),
        ("spec", "docs/vault.md".into()),
        (
            "suite",
            obj([
                ("kem", "DHKEM(X25519, HKDF-SHA256) (0x0020)".into()),
                ("kdf", "HKDF-SHA256 (0x0001)".into()),
                ("aead", "ChaCha20Poly1305 (0x0003)".into()),
                ("psk", "none".into()),
            ]),
        ),
        ("group", group.into()),
        (
            "holder",
            obj([
                ("admin_id", holder_id.into()),
                ("admin_id_is", "the holder's management user id".into()),
                ("share_key", x25519_json(holder_secret)),
                ("registered_as", "PUT /v1/me/share-key {\"public_key\": x25519_public_hex}".into()),
            ]),
        ),
        (
            "ceremony_key",
            obj([
                ("key", x25519_json(ceremony_secret)),
                ("shown_as", "public_key (hex) in the ceremony answer".into()),
            ]),
        ),
        ("messages", messages),
        (
            "invalid",
            J::Arr(vec![
                obj([
                    ("name", "unlock share sealed in base mode".into()),
                    ("why", "an unlock share must be sealed in auth mode by the holder's share key; base mode does not open in auth mode".into()),
                    ("sealed_hex", hx(&base_mode_share)),
                    ("refused_with", "invalid_share".into()),
                ]),
                obj([
                    ("name", "unlock share submitted under another admin id".into()),
                    ("why", "the AAD is group, 0x0A, admin_id; management sets admin_id to the submitting user's id".into()),
                    ("admin_id", other_admin.into()),
                    ("aad", message(&other_aad)),
                    ("sealed_hex", hx(&unlock_share)),
                    ("refused_with", "invalid_share".into()),
                ]),
                obj([
                    ("name", "sealed_passphrase without padding".into()),
                    ("why", "ceremony fields are standard base64 with padding (unlike tokens and proofs)".into()),
                    ("value", unpadded.into()),
                    ("refused_with", "invalid_request".into()),
                ]),
            ]),
        ),
    ]);
    publish(NAME, &doc);
}
