//! Incident response: the directory, revoking tokens, disabling nodes and users, locking a vault.

use super::*;

impl Admin {
    /// `directory`: users, groups and nodes (without their public keys).
    pub async fn directory(&self) -> Result<Value, AppError> {
        let users = self.all_users().await?;
        let groups = self.call(Method::GET, "/v1/groups", None).await?;
        let mut nodes = self.call(Method::GET, "/v1/nodes", None).await?;
        if let Some(list) = nodes["nodes"].as_array_mut() {
            for node in list.iter_mut().filter_map(Value::as_object_mut) {
                node.remove("public_key");
            }
        }
        Ok(json!({ "users": users, "groups": groups["groups"], "nodes": nodes["nodes"] }))
    }

    /// `revoke_tokens`: every token of a user, node or group.
    pub async fn revoke_tokens(
        &self,
        scope: &str,
        subject: &str,
        reason: &str,
    ) -> Result<Value, AppError> {
        let collection = match scope {
            "user" => "users",
            "node" => "nodes",
            "group" => "groups",
            _ => return Err(AppError::invalid("scope is user, node or group")),
        };
        let path = format!("/v1/{collection}/{}/revoke-tokens", id(subject)?);
        self.post_reason(&path, reason).await
    }

    /// An incident-response action: POST `{reason}` (1 to 500 characters) to `path`.
    pub(super) async fn post_reason(&self, path: &str, reason: &str) -> Result<Value, AppError> {
        let body = json!({ "reason": reason_checked(reason)? });
        self.call(Method::POST, path, Some(&body)).await
    }

    /// `disable_node`.
    pub async fn disable_node(&self, node: &str, reason: &str) -> Result<Value, AppError> {
        let path = format!("/v1/nodes/{}/disable", id(node)?);
        self.post_reason(&path, reason).await
    }

    /// `disable_user`.
    pub async fn disable_user(&self, user: &str, reason: &str) -> Result<Value, AppError> {
        let path = format!("/v1/users/{}/disable", id(user)?);
        self.post_reason(&path, reason).await
    }

    /// `lock_vault`.
    pub async fn lock_vault(&self, group: &str, reason: &str) -> Result<Value, AppError> {
        let path = format!("/v1/vaults/{}/lock", id(group)?);
        self.post_reason(&path, reason).await
    }
}
