//! The audit log: search, verify, and an approved export.

use super::*;

impl Admin {
    /// `audit_search`: one page of records matching `filters`.
    pub async fn audit_search(
        &self,
        filters: &Value,
        after_seq: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Value, AppError> {
        let mut query: Vec<(String, String)> = Vec::new();
        for key in [
            "actor", "action", "target", "outcome", "since_ms", "until_ms",
        ] {
            match &filters[key] {
                Value::String(s) if !s.trim().is_empty() => {
                    query.push((key.into(), s.trim().into()))
                }
                Value::Number(n) => query.push((key.into(), n.to_string())),
                _ => {}
            }
        }
        if let Some(after) = after_seq {
            query.push(("after_seq".into(), after.to_string()));
        }
        query.push((
            "limit".into(),
            limit.unwrap_or(200).clamp(1, 1000).to_string(),
        ));
        let encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        self.call(
            Method::GET,
            &format!("/v1/audit?{}", encoded.join("&")),
            None,
        )
        .await
    }

    /// `audit_verify`.
    pub async fn audit_verify(&self) -> Result<Value, AppError> {
        self.call(Method::GET, "/v1/audit/verify", None).await
    }

    /// `audit_export`: stream an approved export of one's own into the Downloads folder.
    pub async fn audit_export(&self, approval: &str) -> Result<Value, AppError> {
        let approval = id(approval)?;
        let (api, token, _) = self.authed()?;
        let path = format!("/v1/approvals/{}/export", approval);
        let file = self
            .downloads
            .join(format!("keymesh-audit-{approval}.ndjson"));
        let failed =
            |e: std::io::Error| AppError::new("export_failed", format!("{}: {e}", file.display()));
        // The file is ready before the export is claimed: the server runs an export once.
        let mut partial = crate::store::PrivateFile::create(&file).map_err(failed)?;
        let response = api.open_stream(Method::POST, &path, &token).await?;
        let mut records = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    records += chunk.iter().filter(|&&b| b == b'\n').count();
                    partial.write(&chunk).map_err(failed)?;
                }
                Err(e) => {
                    // The server counts the export as run: keep what arrived, marked partial.
                    let kept = partial.keep_partial().map_err(failed)?;
                    return Err(AppError::new(
                        "export_failed",
                        format!(
                            "the export broke off ({e}); the records that arrived are in {}",
                            kept.display()
                        ),
                    ));
                }
            }
        }
        partial.finish().map_err(failed)?;
        Ok(json!({ "path": file.display().to_string(), "records": records }))
    }
}
