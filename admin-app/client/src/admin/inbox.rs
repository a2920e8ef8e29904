//! The approvals inbox: list, decide, request, execute.

use super::*;

impl Admin {
    pub(super) fn viewer(&self) -> Result<Viewer, AppError> {
        let state = self.state();
        let session = state.session.as_ref().ok_or_else(AppError::not_signed_in)?;
        Ok(Viewer {
            user_id: session.user_id(),
            actions: session.actions(),
            emails: state.emails.clone(),
            shares_sent: state.shares_sent.clone(),
        })
    }

    pub(super) async fn approval_item(&self, approval_id: &str) -> Result<Value, AppError> {
        let detail = self
            .call(
                Method::GET,
                &format!("/v1/approvals/{}", id(approval_id)?),
                None,
            )
            .await?;
        Ok(approvals::item(&detail, &self.viewer()?))
    }

    /// `approvals_list`: the newest 100 requests with their decisions.
    pub async fn approvals_list(&self) -> Result<Vec<Value>, AppError> {
        self.refresh_emails().await;
        let list = self
            .call(Method::GET, "/v1/approvals?limit=100", None)
            .await?;
        let rows = list["approvals"].as_array().cloned().unwrap_or_default();
        let viewer = self.viewer()?;
        // Four at a time: within the server's per-principal rate limit however long the list.
        let mut out: Vec<Value> = futures_util::stream::iter(rows)
            .map(|row| {
                let viewer = &viewer;
                async move {
                    let id = row["id"].as_str().unwrap_or_default().to_owned();
                    match self.approval_item(&id).await {
                        Ok(item) => item,
                        Err(e) => {
                            // Shown without its decisions rather than not at all.
                            tracing::info!(code = %e.code, "an approval's details could not be read");
                            let mut item = approvals::item(&json!({ "approval": row, "decisions": [] }), viewer);
                            item["decisions_unavailable"] = json!(true);
                            item
                        }
                    }
                }
            })
            .buffered(4)
            .collect()
            .await;
        out.sort_by_key(|a| std::cmp::Reverse(a["created_at_ms"].as_i64().unwrap_or(0)));
        Ok(out)
    }

    /// `approval_decide`.
    pub async fn approval_decide(
        &self,
        approval: &str,
        decision: &str,
        reason: &str,
    ) -> Result<Value, AppError> {
        if !matches!(decision, "approve" | "deny") {
            return Err(AppError::invalid("decide approve or deny"));
        }
        let path = format!("/v1/approvals/{}/decisions", id(approval)?);
        self.call(
            Method::POST,
            &path,
            Some(&json!({ "decision": decision, "reason": reason_checked(reason)? })),
        )
        .await?;
        self.approval_item(approval).await
    }

    /// `approval_create`: ask for an operation (`params` merged into the request).
    pub async fn approval_create(
        &self,
        operation: &str,
        params: &Value,
        reason: &str,
    ) -> Result<Value, AppError> {
        const OPERATIONS: [&str; 5] = [
            "vault.unlock",
            "user.delete",
            "emergency.access",
            "group.approvals.disable",
            "audit.export",
        ];
        if !OPERATIONS.contains(&operation) {
            return Err(AppError::invalid(
                "ask for vault.unlock, user.delete, emergency.access, group.approvals.disable or audit.export (a token is asked for by its node)",
            ));
        }
        let mut body = match params {
            Value::Object(_) => params.clone(),
            Value::Null => json!({}),
            _ => return Err(AppError::invalid("params must be an object")),
        };
        body["operation"] = Value::from(operation);
        body["reason"] = Value::from(reason_checked(reason)?);
        let answer = self
            .call(Method::POST, "/v1/approvals", Some(&body))
            .await?;
        let created = answer["approval"]["id"]
            .as_str()
            .ok_or_else(|| AppError::new("bad_answer", "no approval in the answer"))?;
        self.approval_item(created).await
    }

    /// `approval_execute`: run an approved request of one's own.
    pub async fn approval_execute(&self, approval: &str) -> Result<Value, AppError> {
        let path = format!("/v1/approvals/{}/execute", id(approval)?);
        let result = self.call(Method::POST, &path, None).await?;
        Ok(json!({ "approval": self.approval_item(approval).await?, "result": result }))
    }
}
