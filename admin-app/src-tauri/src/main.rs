//! Keymesh Admin's window. A thin shell: each command below hands its arguments to
//! [`keymesh_admin_client::Admin`], which holds the session, the secrets and every server
//! call; the window only ever sees answers (admin-app/IPC.md).

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod commands;
#[cfg(test)]
mod commands_list;

use std::{path::PathBuf, sync::Arc};

use keymesh_admin_client::{Admin, EventSink, StreamEvent};
use serde_json::json;
use tauri::{Emitter, Manager, WebviewUrl, WebviewWindowBuilder};
use tauri_plugin_notification::NotificationExt;

/// Sends the client's events to the window, and new requests to the desktop.
struct Window(tauri::AppHandle);

impl EventSink for Window {
    fn emit(&self, event: StreamEvent) {
        let sent = match event {
            StreamEvent::Approval { r#type, approval } => self
                .0
                .emit("approvals", json!({ "type": r#type, "approval": approval })),
            StreamEvent::Lagged => self.0.emit("approvals", json!({ "type": "lagged" })),
            StreamEvent::Stream { state, detail } => self
                .0
                .emit("stream", json!({ "state": state, "detail": detail })),
            StreamEvent::SessionEnded => self.0.emit("session", json!({ "state": "ended" })),
            StreamEvent::Notify { title, body } => {
                // No notification daemon (a bare X server, say) is not an error worth more
                // than a log line: the inbox shows the request anyway.
                if let Err(e) = self
                    .0
                    .notification()
                    .builder()
                    .title(title)
                    .body(body)
                    .show()
                {
                    tracing::info!(error = %e, "desktop notification not shown");
                }
                Ok(())
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "an event did not reach the window");
        }
    }
}

/// `KEYMESH_ADMIN_DIR` (tests, portable installs) or the platform's app data folder.
fn data_dir(app: &tauri::App) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match std::env::var_os("KEYMESH_ADMIN_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(app.path().app_data_dir()?),
    }
}

/// Only the app's own pages: a link or script cannot take the window to another origin.
fn own_page(url: &tauri::Url) -> bool {
    matches!(
        (url.scheme(), url.host_str()),
        ("tauri", Some("localhost")) | ("http" | "https", Some("tauri.localhost"))
    )
}

fn main() {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYMESH_ADMIN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .setup(|app| {
            let dir = data_dir(app)?;
            let downloads = app.path().download_dir().unwrap_or_else(|_| dir.clone());
            let sink: Arc<dyn EventSink> = Arc::new(Window(app.handle().clone()));
            let admin = Admin::open(&dir, &downloads, sink)?;
            app.manage(admin);
            WebviewWindowBuilder::new(app, "main", WebviewUrl::App("index.html".into()))
                .title("Keymesh Admin")
                .inner_size(1280.0, 800.0)
                .min_inner_size(960.0, 640.0)
                .on_navigation(own_page)
                .build()?;
            Ok(())
        })
        .invoke_handler(commands::handler())
        .build(tauri::generate_context!());
    match app {
        Ok(app) => app.run(|_, _| {}),
        Err(e) => {
            tracing::error!(error = %e, "Keymesh Admin could not start");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The capability grants exactly the app's own commands (and event listening): a command
    /// added without a permission, or a permission for something else, fails here.
    #[test]
    fn the_capability_allows_exactly_the_apps_commands() {
        let capability: serde_json::Value =
            serde_json::from_str(include_str!("../capabilities/main.json")).expect("json");
        let mut granted: Vec<&str> = capability["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        granted.sort_unstable();
        let mut expected: Vec<String> = crate::commands_list::COMMANDS
            .iter()
            .map(|c| format!("allow-{}", c.replace('_', "-")))
            .chain([
                "core:event:allow-listen".into(),
                "core:event:allow-unlisten".into(),
            ])
            .collect();
        expected.sort_unstable();
        assert_eq!(granted, expected);
        assert_eq!(capability["windows"], serde_json::json!(["main"]));
        assert!(
            capability.get("remote").is_none(),
            "no remote origin may call the app"
        );
    }
}
