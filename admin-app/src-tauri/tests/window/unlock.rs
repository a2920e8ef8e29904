//! The other holder's side of a threshold unlock, done by the test as an admin's tool does it.

use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_core::crypto::{
    self, HpkeKeyPair,
    ceremony::{INFO_SHARE, INFO_UNLOCK_SHARE, share_aad},
};
use serde_json::{Value, json};

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let reply = req.send().await.expect("call");
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

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

/// Open `me`'s sealed share of `ceremony` and submit it sealed to the ceremony's key.
pub async fn submit_share(
    http: &reqwest::Client,
    m: &str,
    token: &str,
    key: &HpkeKeyPair,
    me: &str,
    ceremony: &Value,
) -> Value {
    let c = &ceremony["ceremony"];
    let aad = share_aad(c["group_id"].as_str().expect("group"), me);
    let sealed = ceremony["shares"][0]["sealed_share"]
        .as_str()
        .expect("own share");
    let share = crypto::hpke_open(
        key,
        INFO_SHARE,
        &aad,
        &STANDARD.decode(sealed).expect("b64"),
    )
    .expect("own share opens");
    let to: [u8; 32] = hex::decode(c["public_key"].as_str().expect("key"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let resealed = crypto::hpke_seal_auth(key, &to, INFO_UNLOCK_SHARE, &aad, &share).expect("seal");
    let id = c["id"].as_str().expect("id");
    send(
        http,
        reqwest::Method::POST,
        format!("{m}/v1/ceremonies/{id}/shares"),
        token,
        Some(json!({ "sealed_share": STANDARD.encode(resealed) })),
    )
    .await
}
