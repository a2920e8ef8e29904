//! What the admin sets at first run: where the servers are. Not secret; kept as JSON next to
//! the secret store.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The servers this app talks to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Management, the one the app signs in to (required).
    pub server_url: Option<String>,
    /// The vault, only read for its readiness.
    pub vault_url: Option<String>,
    /// The relay, read for its readiness and statistics.
    pub relay_url: Option<String>,
}

impl Settings {
    /// The file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("settings.json")
    }

    /// Read them (defaults when the file does not exist yet).
    pub fn load(dir: &Path) -> Result<Self, AppError> {
        match std::fs::read(Self::path(dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AppError::new("settings_invalid", format!("settings.json: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(AppError::new(
                "settings_invalid",
                format!("settings.json: {e}"),
            )),
        }
    }

    /// Write them (atomically: a crash never leaves half a file).
    pub fn save(&self, dir: &Path) -> Result<(), AppError> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| AppError::new("settings_invalid", e.to_string()))?;
        crate::store::write_private(&Self::path(dir), &bytes)
            .map_err(|e| AppError::new("settings_invalid", format!("settings.json: {e}")))
    }

    /// New settings from the first-run form, every URL checked.
    pub fn from_form(
        server_url: &str,
        vault_url: Option<&str>,
        relay_url: Option<&str>,
    ) -> Result<Self, AppError> {
        let optional = |u: Option<&str>, what: &str| -> Result<Option<String>, AppError> {
            match u.map(str::trim).filter(|u| !u.is_empty()) {
                Some(u) => server_url_checked(u, what).map(Some),
                None => Ok(None),
            }
        };
        Ok(Self {
            server_url: Some(server_url_checked(server_url.trim(), "management URL")?),
            vault_url: optional(vault_url, "vault URL")?,
            relay_url: optional(relay_url, "relay URL")?,
        })
    }
}

/// A server's base URL: `https://`, or `http://` to a loopback address only (a development
/// server on this machine); no credentials, query or fragment; no trailing slash.
pub fn server_url_checked(input: &str, what: &str) -> Result<String, AppError> {
    if input.len() > 2048 {
        return Err(AppError::invalid(format!("the {what} is too long")));
    }
    let url = Url::parse(input)
        .map_err(|e| AppError::invalid(format!("the {what} is not a URL ({e})")))?;
    let host = url
        .host_str()
        .ok_or_else(|| AppError::invalid(format!("the {what} has no host")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(AppError::invalid(format!(
                "the {what} must use https:// (plain http:// is allowed only to this machine)"
            )));
        }
        other => {
            return Err(AppError::invalid(format!(
                "the {what} must be https://, not {other}://"
            )));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::invalid(format!(
            "the {what} must not carry credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(AppError::invalid(format!(
            "the {what} must not have a query or fragment"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        for ok in [
            "https://keymesh.example.com",
            "https://keymesh.example.com/admin/",
            "http://127.0.0.1:8443",
            "http://localhost:3000/",
            "http://[::1]:8080",
        ] {
            assert!(server_url_checked(ok, "URL").is_ok(), "{ok}");
        }
        assert_eq!(
            server_url_checked("https://k.example/base/", "URL").unwrap(),
            "https://k.example/base"
        );
        for bad in [
            "http://keymesh.example.com",
            "http://10.0.0.1",
            "ftp://k.example",
            "https://user:pw@k.example",
            "https://k.example/?x=1",
            "https://k.example/#f",
            "k.example",
            "",
            "javascript:alert(1)",
            "file:///etc/passwd",
        ] {
            let e = server_url_checked(bad, "URL").unwrap_err();
            assert_eq!(e.code, "invalid_input", "{bad}");
        }
        assert!(
            server_url_checked(&format!("https://k.example/{}", "a".repeat(3000)), "URL").is_err()
        );
    }

    #[test]
    fn settings_round_trip_and_optional_urls() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), Settings::default());
        let s = Settings::from_form(" https://m.example ", Some(""), Some("https://r.example"))
            .unwrap();
        assert_eq!(s.vault_url, None);
        s.save(dir.path()).unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap(), s);
        std::fs::write(Settings::path(dir.path()), b"{not json").unwrap();
        assert_eq!(
            Settings::load(dir.path()).unwrap_err().code,
            "settings_invalid"
        );
    }
}
