//! Every configured service's readiness, and the relay's statistics.

use super::*;

impl Admin {
    /// `health`: every configured service's readiness and the relay's statistics.
    pub async fn health(&self) -> Result<Value, AppError> {
        let (management, vault, relay_api) = {
            let s = self.state();
            (s.api.clone(), s.vault_probe.clone(), s.relay_probe.clone())
        };
        let services = futures_util::future::join_all([
            readiness("management", management.as_ref()),
            readiness("vault", vault.as_ref()),
            readiness("relay", relay_api.as_ref()),
        ])
        .await;
        let (mut relay, mut relay_error) = (Value::Null, Value::Null);
        if let Some(api) = relay_api {
            match api.probe("/metrics").await {
                Ok((200, text)) => {
                    let previous = self.state().relay_sample.clone();
                    match health::relay_stats(&text, previous.as_ref(), Instant::now()) {
                        Some(sample) => {
                            relay = json!(sample.stats());
                            self.state().relay_sample = Some(sample);
                        }
                        None => relay_error = json!("the relay's metrics carry no relay series"),
                    }
                }
                Ok((status, _)) => {
                    relay_error = json!(format!("the relay's /metrics answered HTTP {status}"))
                }
                Err(e) => relay_error = json!(e.message),
            }
        }
        Ok(json!({
            "services": services,
            "relay": relay,
            "relay_error": relay_error,
            "sampled_at_ms": now_ms(),
        }))
    }
}
