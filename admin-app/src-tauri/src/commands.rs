//! The window's commands: argument checking and work happen in `keymesh_admin_client::Admin`.

use std::sync::Arc;

use keymesh_admin_client::{Admin, AppError};
use secrecy::SecretString;
use serde_json::Value;
use tauri::State;

type Answer = Result<Value, AppError>;
type App<'a> = State<'a, Arc<Admin>>;

/// The handler for every command of `commands_list::COMMANDS`.
pub fn handler() -> impl Fn(tauri::ipc::Invoke) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        status,
        configure,
        unlock_store,
        login_start,
        login_code,
        login_poll,
        logout,
        approvals_list,
        approval_decide,
        approval_create,
        approval_execute,
        share_key_create,
        share_submit,
        directory,
        revoke_tokens,
        disable_node,
        disable_user,
        lock_vault,
        audit_search,
        audit_verify,
        audit_export,
        health,
    ]
}

#[tauri::command(rename_all = "snake_case")]
async fn status(app: App<'_>) -> Answer {
    app.status().await
}

#[tauri::command(rename_all = "snake_case")]
async fn configure(
    app: App<'_>,
    server_url: String,
    vault_url: Option<String>,
    relay_url: Option<String>,
) -> Answer {
    app.configure(&server_url, vault_url.as_deref(), relay_url.as_deref())
        .await
}

#[tauri::command(rename_all = "snake_case")]
async fn unlock_store(app: App<'_>, passphrase: String) -> Answer {
    app.unlock_store(SecretString::from(passphrase)).await
}

#[tauri::command(rename_all = "snake_case")]
async fn login_start(app: App<'_>, email: String) -> Answer {
    app.login_start(&email).await
}

#[tauri::command(rename_all = "snake_case")]
async fn login_code(app: App<'_>, code: String) -> Answer {
    app.login_code(&code).await
}

#[tauri::command(rename_all = "snake_case")]
async fn login_poll(app: App<'_>) -> Answer {
    app.login_poll().await
}

#[tauri::command(rename_all = "snake_case")]
async fn logout(app: App<'_>) -> Answer {
    app.logout().await.map(|()| Value::Null)
}

#[tauri::command(rename_all = "snake_case")]
async fn approvals_list(app: App<'_>) -> Answer {
    app.approvals_list().await.map(Value::Array)
}

#[tauri::command(rename_all = "snake_case")]
async fn approval_decide(app: App<'_>, id: String, decision: String, reason: String) -> Answer {
    app.approval_decide(&id, &decision, &reason).await
}

#[tauri::command(rename_all = "snake_case")]
async fn approval_create(app: App<'_>, operation: String, params: Value, reason: String) -> Answer {
    app.approval_create(&operation, &params, &reason).await
}

#[tauri::command(rename_all = "snake_case")]
async fn approval_execute(app: App<'_>, id: String) -> Answer {
    app.approval_execute(&id).await
}

#[tauri::command(rename_all = "snake_case")]
async fn share_key_create(app: App<'_>) -> Answer {
    app.share_key_create().await
}

#[tauri::command(rename_all = "snake_case")]
async fn share_submit(app: App<'_>, approval_id: String) -> Answer {
    app.share_submit(&approval_id).await
}

#[tauri::command(rename_all = "snake_case")]
async fn directory(app: App<'_>) -> Answer {
    app.directory().await
}

#[tauri::command(rename_all = "snake_case")]
async fn revoke_tokens(app: App<'_>, scope: String, id: String, reason: String) -> Answer {
    app.revoke_tokens(&scope, &id, &reason).await
}

#[tauri::command(rename_all = "snake_case")]
async fn disable_node(app: App<'_>, id: String, reason: String) -> Answer {
    app.disable_node(&id, &reason).await
}

#[tauri::command(rename_all = "snake_case")]
async fn disable_user(app: App<'_>, id: String, reason: String) -> Answer {
    app.disable_user(&id, &reason).await
}

#[tauri::command(rename_all = "snake_case")]
async fn lock_vault(app: App<'_>, group: String, reason: String) -> Answer {
    app.lock_vault(&group, &reason).await
}

#[tauri::command(rename_all = "snake_case")]
async fn audit_search(
    app: App<'_>,
    filters: Value,
    after_seq: Option<i64>,
    limit: Option<u32>,
) -> Answer {
    app.audit_search(&filters, after_seq, limit).await
}

#[tauri::command(rename_all = "snake_case")]
async fn audit_verify(app: App<'_>) -> Answer {
    app.audit_verify().await
}

#[tauri::command(rename_all = "snake_case")]
async fn audit_export(app: App<'_>, approval_id: String) -> Answer {
    app.audit_export(&approval_id).await
}

#[tauri::command(rename_all = "snake_case")]
async fn health(app: App<'_>) -> Answer {
    app.health().await
}
