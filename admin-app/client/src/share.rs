//! The admin's unlock share key and the one thing done with it: open the share the vault
//! sealed to this admin and seal it again to an unlock ceremony's key, in HPKE auth mode so
//! the vault knows which holder sent it. Management only ever relays the sealed bytes.

use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_proto::api::vaults::CeremonyView;
use keymesh_proto::crypto::{
    self, HpkeKeyPair,
    ceremony::{INFO_SHARE, INFO_UNLOCK_SHARE, share_aad},
};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::AppError;

/// A new share key; its secret as hex for the store.
pub fn generate() -> (HpkeKeyPair, SecretString) {
    let key = HpkeKeyPair::generate();
    let secret = SecretString::from(hex::encode(key.secret()));
    (key, secret)
}

/// The key back from its stored hex.
pub fn from_stored(secret: &SecretString) -> Result<HpkeKeyPair, AppError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(secret.expose_secret(), &mut bytes[..])
        .map_err(|_| AppError::new("share_key_missing", "the stored share key is damaged"))?;
    HpkeKeyPair::from_secret(*bytes)
        .map_err(|_| AppError::new("share_key_missing", "the stored share key is damaged"))
}

/// From a ceremony as `GET /v1/ceremonies/{id}` shows it to `me`: this admin's share, opened
/// with `key` and sealed to the ceremony's key (base64, for `POST .../shares`).
pub fn reseal_for_ceremony(
    key: &HpkeKeyPair,
    ceremony: &CeremonyView,
    me: &str,
) -> Result<String, AppError> {
    let group = &ceremony.ceremony.group_id;
    let ceremony_key: [u8; 32] = hex::decode(&ceremony.ceremony.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| AppError::new("bad_answer", "the ceremony's key is not 32 bytes of hex"))?;
    let sealed = ceremony
        .shares
        .iter()
        .find(|s| s.admin_id == me)
        .map(|s| s.sealed_share.as_str())
        .ok_or_else(|| {
            AppError::new(
                "not_a_holder",
                "this vault holds no share for you: ask for a rekey that names you",
            )
        })?;
    let sealed = STANDARD
        .decode(sealed)
        .map_err(|_| AppError::new("bad_answer", "the sealed share is not base64"))?;
    let aad = share_aad(group, me);
    let share = crypto::hpke_open(key, INFO_SHARE, &aad, &sealed).map_err(|_| {
        AppError::new(
            "share_key_mismatch",
            "your share key does not open your share (was the key replaced after the vault was created? a rekey is needed)",
        )
    })?;
    let resealed = crypto::hpke_seal_auth(key, &ceremony_key, INFO_UNLOCK_SHARE, &aad, &share)
        .map_err(|_| AppError::new("bad_answer", "the ceremony's key is not usable"))?;
    Ok(STANDARD.encode(resealed))
}

#[cfg(test)]
mod tests {
    use keymesh_proto::api::vaults::{Ceremony, SealedShare};

    use super::*;

    fn ceremony(
        ceremony_key: &HpkeKeyPair,
        holder: &HpkeKeyPair,
        me: &str,
        share: &[u8],
    ) -> CeremonyView {
        let sealed =
            crypto::hpke_seal(&holder.public, INFO_SHARE, &share_aad("g1", me), share).unwrap();
        CeremonyView {
            ceremony: Ceremony {
                id: "c1".into(),
                group_id: "g1".into(),
                kind: "unlock".into(),
                approval_id: Some("a1".into()),
                opened_by: "user:u0".into(),
                public_key: hex::encode(ceremony_key.public),
                opened_at_ms: 1,
                expires_at_ms: 2,
                finished_at_ms: None,
            },
            mode: Some("shamir".into()),
            threshold: Some(2),
            holders: vec![me.into(), "u9".into()],
            shares: vec![SealedShare {
                admin_id: me.into(),
                sealed_share: STANDARD.encode(sealed),
            }],
        }
    }

    #[test]
    fn the_share_reaches_the_ceremony_key_and_proves_its_holder() {
        let (key, stored) = generate();
        let key_again = from_stored(&stored).unwrap();
        assert_eq!(key_again.public, key.public);
        let ceremony_key = HpkeKeyPair::generate();
        let c = ceremony(
            &ceremony_key,
            &key,
            "u1",
            b"share bytes 33 long .............",
        );
        let sealed = STANDARD
            .decode(reseal_for_ceremony(&key_again, &c, "u1").unwrap())
            .unwrap();
        let aad = share_aad("g1", "u1");
        let opened =
            crypto::hpke_open_auth(&ceremony_key, &key.public, INFO_UNLOCK_SHARE, &aad, &sealed)
                .unwrap();
        assert_eq!(&opened[..], b"share bytes 33 long .............");
        // Sealed by someone else's key, it does not open as this holder's.
        let other = HpkeKeyPair::generate();
        assert!(
            crypto::hpke_open_auth(
                &ceremony_key,
                &other.public,
                INFO_UNLOCK_SHARE,
                &aad,
                &sealed
            )
            .is_err()
        );
    }

    #[test]
    fn a_wrong_key_or_holder_is_refused_with_a_reason() {
        let (key, _) = generate();
        let ceremony_key = HpkeKeyPair::generate();
        let c = ceremony(&ceremony_key, &key, "u1", b"share");
        assert_eq!(
            reseal_for_ceremony(&key, &c, "u2").unwrap_err().code,
            "not_a_holder"
        );
        let (other, _) = generate();
        assert_eq!(
            reseal_for_ceremony(&other, &c, "u1").unwrap_err().code,
            "share_key_mismatch"
        );
        let mut bad = c.clone();
        bad.ceremony.public_key = "abcd".into();
        assert_eq!(
            reseal_for_ceremony(&key, &bad, "u1").unwrap_err().code,
            "bad_answer"
        );
        assert_eq!(
            from_stored(&SecretString::from("zz")).unwrap_err().code,
            "share_key_missing"
        );
    }
}
