//! Turn Ctrl-C and SIGTERM into a cancellation every part of the process watches.

use tokio_util::sync::CancellationToken;

/// Cancel `token` on the first SIGINT or SIGTERM. SIGHUP (`systemctl reload`) never stops the
/// process: it is logged, and services serving TLS re-read their certificates
/// (`keymesh_core::tls`).
pub fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!(signal = "SIGHUP", "reloading TLS certificates, if any");
                }
            });
        }
        Err(err) => tracing::warn!(error = %err, "cannot listen for SIGHUP"),
    }
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
            () = term => tracing::info!(signal = "SIGTERM", "shutting down"),
        }
        token.cancel();
    });
}
