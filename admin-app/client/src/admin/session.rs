//! Signing in and out: the link and code, polling, the session token kept in the secret store.

use super::*;

impl Admin {
    /// `login_start`: ask for a sign-in link and code for `email`.
    pub async fn login_start(&self, email: &str) -> Result<Value, AppError> {
        if self.store.locked() {
            return Err(crate::store::StoreError::Locked.into());
        }
        let email = email.trim();
        if email.is_empty() || email.len() > 254 || !email.contains('@') {
            return Err(AppError::invalid("enter your e-mail address"));
        }
        let answer = self
            .api()?
            .call(
                Method::POST,
                "/v1/login",
                None,
                Some(&json!({ "email": email, "client": "app" })),
            )
            .await?;
        let (Some(request_id), Some(poll_secret)) = (
            answer["request_id"].as_str(),
            answer["poll_secret"].as_str(),
        ) else {
            return Err(AppError::new(
                "bad_answer",
                "the sign-in answer is incomplete",
            ));
        };
        self.state().login = Some(PendingLogin {
            request_id: request_id.to_owned(),
            poll_secret: SecretString::from(poll_secret),
        });
        Ok(json!({
            "match_code": answer["match_code"],
            "expires_in_secs": answer["expires_in_secs"],
        }))
    }

    pub(super) fn pending_login(&self) -> Result<(String, SecretString), AppError> {
        let state = self.state();
        let login = state
            .login
            .as_ref()
            .ok_or_else(|| AppError::new("login_not_started", "enter your e-mail address first"))?;
        Ok((login.request_id.clone(), login.poll_secret.clone()))
    }

    /// `login_code`: finish with the code from the mail.
    pub async fn login_code(self: &Arc<Self>, code: &str) -> Result<Value, AppError> {
        let code = code.trim();
        if code.is_empty() || code.len() > 32 {
            return Err(AppError::invalid(
                "enter the code from the mail (XXXX-XXXX)",
            ));
        }
        let (request_id, poll_secret) = self.pending_login()?;
        let answer = self
            .api()?
            .call(
                Method::POST,
                "/v1/login/code",
                None,
                Some(&json!({ "request_id": request_id, "poll_secret": poll_secret.expose_secret(), "code": code })),
            )
            .await?;
        self.complete_login(&answer).await
    }

    /// `login_poll`: has the link been confirmed in a browser?
    pub async fn login_poll(self: &Arc<Self>) -> Result<Value, AppError> {
        let (request_id, poll_secret) = self.pending_login()?;
        let answer = self
            .api()?
            .call(
                Method::POST,
                "/v1/login/poll",
                None,
                Some(&json!({ "request_id": request_id, "poll_secret": poll_secret.expose_secret() })),
            )
            .await?;
        if answer["status"] == "complete" {
            let session = self.complete_login(&answer).await?;
            return Ok(json!({ "status": "complete", "session": session }));
        }
        Ok(json!({ "status": "pending" }))
    }

    pub(super) async fn complete_login(
        self: &Arc<Self>,
        answer: &Value,
    ) -> Result<Value, AppError> {
        let token = answer["session"]["token"]
            .as_str()
            .map(SecretString::from)
            .ok_or_else(|| AppError::new("bad_answer", "the sign-in answer carries no token"))?;
        self.state().login = None;
        // Kept first: a session this app could not keep must not run.
        let key = self.session_key()?;
        self.store.set(&key, &token)?;
        match self.begin_session(token).await {
            Ok(info) => Ok(info),
            Err(e) => {
                let _ = self.store.delete(&key);
                Err(e)
            }
        }
    }

    /// Check the token with `GET /v1/session`, keep it, start the event stream.
    pub(super) async fn begin_session(
        self: &Arc<Self>,
        token: SecretString,
    ) -> Result<Value, AppError> {
        let info = self
            .api()?
            .call(Method::GET, "/v1/session", Some(&token), None)
            .await?;
        {
            let mut state = self.state();
            state.generation += 1;
            let generation = state.generation;
            state.session = Some(Session {
                token,
                info: info.clone(),
                generation,
            });
        }
        self.refresh_emails().await;
        self.start_stream();
        Ok(info)
    }

    /// `logout`: end the session at the server and forget the token here.
    pub async fn logout(&self) -> Result<(), AppError> {
        if self.state().session.is_some()
            && let Err(e) = self.call(Method::POST, "/v1/logout", None).await
        {
            tracing::info!(code = %e.code, "the server did not confirm the sign-out");
        }
        self.end_session(None, true);
        Ok(())
    }

    /// Every user, page by page (by address).
    pub(super) async fn all_users(&self) -> Result<Vec<Value>, AppError> {
        const PAGE: usize = 500;
        let mut users: Vec<Value> = Vec::new();
        loop {
            let after = users.last().and_then(|u| u["email"].as_str()).unwrap_or("");
            let path = format!("/v1/users?limit={PAGE}&after={}", url_encode(after));
            let answer = self.call(Method::GET, &path, None).await?;
            let page = answer["users"].as_array().cloned().unwrap_or_default();
            let full = page.len() == PAGE;
            users.extend(page);
            if !full || users.len() >= 50 * PAGE {
                return Ok(users);
            }
        }
    }

    pub(super) async fn refresh_emails(&self) {
        if let Ok(users) = self.all_users().await {
            let emails = users
                .iter()
                .filter_map(|u| {
                    Some((
                        u["id"].as_str()?.to_owned(),
                        u["email"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            self.state().emails = emails;
        }
    }
}
