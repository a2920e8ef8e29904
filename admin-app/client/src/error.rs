//! The one error the app shows: a stable code and a message, nothing internal.

use serde::Serialize;

/// What a command answers when it fails. Serialises as `{code, message}` for the web view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AppError {
    /// The server's stable error code, or one of the app's own (see `admin-app/IPC.md`).
    pub code: String,
    /// For a person to read.
    pub message: String,
    /// The HTTP status when a server answered.
    #[serde(skip)]
    pub status: Option<u16>,
}

impl AppError {
    /// One of the app's own errors.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            status: None,
        }
    }

    /// Bad input from the web view.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid_input", message)
    }

    /// No session (or the server ended it).
    pub fn not_signed_in() -> Self {
        Self::new("not_signed_in", "sign in first")
    }

    /// A server refused: its own code and message.
    pub fn server(status: u16, code: &str, message: &str) -> Self {
        Self {
            code: code.to_owned(),
            message: message.to_owned(),
            status: Some(status),
        }
    }

    /// True when the server said the session is gone (`401 unauthorized`; not a re-sign-in
    /// request, nor a 401 the vault passed through such as a wrong passphrase).
    pub fn session_ended(&self) -> bool {
        self.status == Some(401) && self.code == "unauthorized"
    }
}

impl From<reqwest::Error> for AppError {
    fn from(e: reqwest::Error) -> Self {
        // The whole chain: "error sending request ... invalid peer certificate: UnknownIssuer"
        // is what tells an admin why a server cannot be reached.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self::new("unreachable", message)
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        let code = match e {
            S::Locked => "store_locked",
            S::WrongPassphrase => "store_passphrase_wrong",
            S::WeakPassphrase => "invalid_input",
            S::Corrupt(_) | S::Io(_) | S::Keyring(_) => "store_failed",
        };
        Self::new(code, e.to_string())
    }
}
