//! Generates the app's command permissions: with an app manifest, no command is callable from
//! the window unless `capabilities/main.json` allows it by name.

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(keymesh_admin_commands::COMMANDS);
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest))
        .expect("tauri build step");
}

#[path = "src/commands_list.rs"]
mod keymesh_admin_commands;
