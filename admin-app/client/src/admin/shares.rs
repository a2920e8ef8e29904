//! Unlock shares: the admin's share key, and submitting their share to an open unlock ceremony.

use super::*;

impl Admin {
    /// `share_key_create`: a new share key, kept here; its public half registered.
    pub async fn share_key_create(self: &Arc<Self>) -> Result<Value, AppError> {
        let (_, _, user) = self.authed()?;
        let name = self.share_key_name(&user)?;
        // Replacing a key strands every share sealed to the old one (a rekey is needed): not
        // something this button does.
        if self.store.get(&name)?.is_some() {
            return Err(AppError::new(
                "share_key_exists",
                "this app already holds your share key; replacing it needs a rekey of every vault that sealed a share to it",
            ));
        }
        let (key, secret) = share::generate();
        // Kept before the server learns the public half: a registered key whose secret was
        // never stored would lose every share sealed to it. Promoted once registered.
        let staged = format!("{name}.pending");
        self.store.set(&staged, &secret)?;
        self.call(
            Method::PUT,
            "/v1/me/share-key",
            Some(&json!({ "public_key": hex::encode(key.public) })),
        )
        .await?;
        self.store.set(&name, &secret)?;
        self.store.delete(&staged)?;
        self.status().await
    }

    /// `share_submit`: this admin's share, sealed to the unlock ceremony of `approval`.
    pub async fn share_submit(&self, approval: &str) -> Result<Value, AppError> {
        let item = self.approval_item(approval).await?;
        let ceremony_id = item.ceremony.ok_or_else(|| {
            AppError::new("not_found", "no unlock ceremony is open for this request")
        })?;
        let (_, _, user) = self.authed()?;
        let stored = self
            .store
            .get(&self.share_key_name(&user)?)?
            .ok_or_else(|| {
                AppError::new(
                    "share_key_missing",
                    "this app holds no share key for you (Account)",
                )
            })?;
        let key = share::from_stored(&stored)?;
        let path = format!("/v1/ceremonies/{}", id(&ceremony_id)?);
        let ceremony = typed(self.call(Method::GET, &path, None).await?)?;
        let sealed = share::reseal_for_ceremony(&key, &ceremony, &user)?;
        let answer = self
            .call(
                Method::POST,
                &format!("{path}/shares"),
                Some(&json!({ "sealed_share": sealed })),
            )
            .await?;
        self.state().shares_sent.insert(ceremony_id);
        Ok(answer)
    }
}
