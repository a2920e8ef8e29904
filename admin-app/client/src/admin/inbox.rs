//! The approvals inbox: list, decide, request, execute.

use keymesh_proto::api::approvals::{ApprovalList, ApprovalShown, Operation};

use super::*;
use crate::approvals::InboxItem;

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

    pub(super) async fn approval_item(&self, approval_id: &str) -> Result<InboxItem, AppError> {
        let detail: ApprovalShown = typed(
            self.call(
                Method::GET,
                &format!("/v1/approvals/{}", id(approval_id)?),
                None,
            )
            .await?,
        )?;
        Ok(approvals::item(&detail, &self.viewer()?))
    }

    /// `approvals_list`: the newest 100 requests with their decisions.
    pub async fn approvals_list(&self) -> Result<Vec<Value>, AppError> {
        self.refresh_emails().await;
        let list: ApprovalList = typed(
            self.call(Method::GET, "/v1/approvals?limit=100", None)
                .await?,
        )?;
        let viewer = self.viewer()?;
        // Four at a time: within the server's per-principal rate limit however long the list.
        let mut out: Vec<InboxItem> = futures_util::stream::iter(list.approvals)
            .map(|row| {
                let viewer = &viewer;
                async move {
                    match self.approval_item(&row.id).await {
                        Ok(item) => item,
                        Err(e) => {
                            // Shown without its decisions rather than not at all.
                            tracing::info!(code = %e.code, "an approval's details could not be read");
                            let detail = ApprovalShown {
                                approval: row,
                                decisions: Vec::new(),
                                ceremony: None,
                            };
                            let mut item = approvals::item(&detail, viewer);
                            item.decisions_unavailable = true;
                            item
                        }
                    }
                }
            })
            .buffered(4)
            .collect()
            .await;
        out.sort_by_key(|a| std::cmp::Reverse(a.approval.created_at_ms));
        out.into_iter().map(window).collect()
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
        window(self.approval_item(approval).await?)
    }

    /// `approval_create`: ask for an operation (`params` merged into the request).
    pub async fn approval_create(
        &self,
        operation: &str,
        params: &Value,
        reason: &str,
    ) -> Result<Value, AppError> {
        let requested = |o: &Operation| o.requested_by_users();
        if !operation.parse::<Operation>().is_ok_and(|o| requested(&o)) {
            let names: Vec<&str> = Operation::ALL
                .iter()
                .filter(|o| requested(o))
                .map(|o| o.as_str())
                .collect();
            return Err(AppError::invalid(format!(
                "ask for one of {} (a token is asked for by its node)",
                names.join(", ")
            )));
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
        window(self.approval_item(created).await?)
    }

    /// `approval_execute`: run an approved request of one's own.
    pub async fn approval_execute(&self, approval: &str) -> Result<Value, AppError> {
        let path = format!("/v1/approvals/{}/execute", id(approval)?);
        let result = self.call(Method::POST, &path, None).await?;
        let item = window(self.approval_item(approval).await?)?;
        Ok(json!({ "approval": item, "result": result }))
    }
}

/// An inbox item as the window receives it (`IPC.md`, `Approval`).
pub(super) fn window(item: InboxItem) -> Result<Value, AppError> {
    serde_json::to_value(item).map_err(|e| AppError::new("bad_answer", e.to_string()))
}
