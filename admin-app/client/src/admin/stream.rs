//! The approvals event stream: connect, reconnect with backoff, dispatch to the window.

use super::*;

impl Admin {
    pub(super) fn start_stream(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.stream_loop().await });
        if let Some(old) = self.state().stream.replace(task) {
            old.abort();
        }
    }

    pub(super) async fn stream_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        let generation = self.state().session.as_ref().map(|s| s.generation);
        loop {
            let (connected, outcome) = self.stream_once().await;
            if connected {
                backoff = Duration::from_secs(1);
            }
            match outcome {
                Err(e) if e.session_ended() => {
                    self.sink.emit(StreamEvent::Stream {
                        state: "stopped",
                        detail: Some(e.message.clone()),
                    });
                    self.end_session(generation, false);
                    return;
                }
                Err(e) if e.code == "not_signed_in" => return,
                Err(e) => self.sink.emit(StreamEvent::Stream {
                    state: "reconnecting",
                    detail: Some(e.message),
                }),
                Ok(()) => {
                    self.sink.emit(StreamEvent::Stream {
                        state: "reconnecting",
                        detail: Some("the server closed the stream".into()),
                    });
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            // Whatever happened while away: the window re-reads the list.
            self.sink.emit(StreamEvent::Lagged);
        }
    }

    /// One connection: whether it was established, and how it ended.
    pub(super) async fn stream_once(&self) -> (bool, Result<(), AppError>) {
        let (api, token, _) = match self.authed() {
            Ok(a) => a,
            Err(e) => return (false, Err(e)),
        };
        let response = match api
            .open_stream(Method::GET, "/v1/approvals/events", &token)
            .await
        {
            Ok(r) => r,
            Err(e) => return (false, Err(e)),
        };
        self.sink.emit(StreamEvent::Stream {
            state: "connected",
            detail: None,
        });
        (true, self.read_events(response).await)
    }

    pub(super) async fn read_events(&self, response: reqwest::Response) -> Result<(), AppError> {
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let events = parser
                .push(&chunk?)
                .map_err(|e| AppError::new("bad_answer", e.to_string()))?;
            for event in events {
                self.dispatch(&event.event, &event.data).await;
            }
        }
        Ok(())
    }

    pub(super) async fn dispatch(&self, name: &str, data: &str) {
        if name == "lagged" {
            self.sink.emit(StreamEvent::Lagged);
            return;
        }
        if !name.starts_with("approval.") {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let Some(approval) = data["approval"]["id"].as_str() else {
            return;
        };
        let item = match self.approval_item(approval).await {
            Ok(item) => item,
            Err(e) => {
                tracing::info!(code = %e.code, "an approval event could not be read back");
                return;
            }
        };
        if name == "approval.created" && item.can_decide {
            let who = item
                .requester_email
                .as_deref()
                .unwrap_or(&item.approval.requester);
            self.sink.emit(StreamEvent::Notify {
                title: format!("Approval requested: {}", item.approval.operation),
                body: format!("{who}: {}", item.approval.reason),
            });
        }
        let Ok(approval) = super::inbox::window(item) else {
            return;
        };
        self.sink.emit(StreamEvent::Approval {
            r#type: name.to_owned(),
            approval,
        });
    }
}
