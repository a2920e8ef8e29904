//! The other holder's side of a threshold unlock, done by the test as an admin's tool does it.

use keymesh_admin_client::share;
use keymesh_core::crypto::HpkeKeyPair;
use keymesh_proto::api::vaults::CeremonyView;
use serde_json::{Value, json};

use crate::send;

/// The signed-in user's id.
pub async fn user_id(http: &reqwest::Client, m: &str, token: &str) -> String {
    let me = send(
        http,
        reqwest::Method::GET,
        format!("{m}/v1/session"),
        token,
        None,
    )
    .await;
    me["user"]["id"].as_str().expect("id").to_owned()
}

/// A share key for the caller, its public half registered.
pub async fn register_key(http: &reqwest::Client, m: &str, token: &str) -> HpkeKeyPair {
    let key = HpkeKeyPair::generate();
    let body = json!({ "public_key": hex::encode(key.public) });
    send(
        http,
        reqwest::Method::PUT,
        format!("{m}/v1/me/share-key"),
        token,
        Some(body),
    )
    .await;
    key
}

/// The group `payments`'s vault, created 2-of-`holders`.
pub async fn create_vault(http: &reqwest::Client, m: &str, token: &str, holders: &[&str]) {
    let opened = send(
        http,
        reqwest::Method::POST,
        format!("{m}/v1/groups/payments/vault/ceremonies"),
        token,
        Some(json!({ "kind": "init" })),
    )
    .await;
    let id = opened["ceremony"]["id"].as_str().expect("ceremony id");
    send(
        http,
        reqwest::Method::POST,
        format!("{m}/v1/ceremonies/{id}/init"),
        token,
        Some(json!({ "mode": "shamir", "threshold": 2, "holders": holders })),
    )
    .await;
}

/// Open `me`'s sealed share of `ceremony` and submit it sealed to the ceremony's key (the same
/// resealing the app does; the vault checks the result).
pub async fn submit_share(
    http: &reqwest::Client,
    m: &str,
    token: &str,
    key: &HpkeKeyPair,
    me: &str,
    ceremony: &Value,
) -> Value {
    let view: CeremonyView =
        serde_json::from_value(ceremony.clone()).expect("a ceremony in the documented shape");
    let sealed = share::reseal_for_ceremony(key, &view, me).expect("own share reseals");
    let id = ceremony["ceremony"]["id"].as_str().expect("id");
    send(
        http,
        reqwest::Method::POST,
        format!("{m}/v1/ceremonies/{id}/shares"),
        token,
        Some(json!({ "sealed_share": sealed })),
    )
    .await
}
