//! The few HTML pages a person sees in a browser: the sign-in confirm page and its outcomes.
//! No scripts, no remote content; the one inline style is allowed by its hash.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderValue, StatusCode, header};
use keymesh_core::{ErrorCode, http::errors::ERROR_CODE_HEADER};
use sha2::{Digest, Sha256};

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1b1f24}\
h1{font-size:1.4rem}button{font:inherit;padding:.6rem 1.4rem;border:0;border-radius:6px;background:#1f6feb;color:#fff;cursor:pointer}\
code{background:#f0f2f5;padding:.1rem .3rem;border-radius:4px}.muted{color:#57606a;font-size:.9rem}";

/// `default-src 'none'`, the style by hash, forms posting only to ourselves, never framed.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ))
    .expect("ASCII")
});

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: `body` is already-escaped HTML.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>{title} · Keymesh</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, CSP.clone()),
        ],
        html,
    )
        .into_response()
}

/// The confirm page: a GET only shows it, the button's POST signs in. Mail scanners that
/// follow links therefore never use the link up.
pub fn confirm(token: &str) -> Response {
    page(
        StatusCode::OK,
        "Sign in to Keymesh",
        &format!(
            "<p>Press the button to finish signing in. The link works once.</p>\
             <form method=\"post\" action=\"/login/confirm\">\
             <input type=\"hidden\" name=\"token\" value=\"{}\">\
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"muted\">If you did not ask to sign in, close this page: nothing happens.</p>",
            escape(token)
        ),
    )
}

/// The confirm page of a sign-in the desktop app started: approving it gives that app a
/// session, so the page says where and when it was asked for and shows the app's match code.
pub fn confirm_app(token: &str, ip: &str, minutes_ago: i64, match_code: &str) -> Response {
    let when = match minutes_ago {
        0 => "less than a minute ago".to_owned(),
        1 => "1 minute ago".to_owned(),
        n => format!("{n} minutes ago"),
    };
    page(
        StatusCode::OK,
        "Approve a Keymesh Admin sign-in",
        &format!(
            "<p>Keymesh Admin asked to sign in as you from <strong>{ip}</strong>, {when}.</p>\
             <p>It shows the match code <strong>{code}</strong>. Approve only if Keymesh Admin on \
             <em>your</em> screen shows the same code.</p>\
             <form method=\"post\" action=\"/login/confirm\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Approve sign-in</button></form>\
             <p class=\"muted\">If you did not just start a sign-in in Keymesh Admin, close this page: \
             nothing happens.</p>",
            ip = escape(ip),
            when = escape(&when),
            code = escape(match_code),
            token = escape(token),
        ),
    )
}

/// The header that carries a refused page's stable error code, as the OpenAPI document and
/// docs/management.md name it.
pub const ERROR_CODE_HEADER_NAME: &str = "Keymesh-Error-Code";

/// What a person is told when signing in is refused: plain words and what to do next, never a
/// setting name or an internal detail (the stable code is shown beneath, for support).
pub fn refusal_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::LoginLinkInvalid => {
            "This sign-in link has expired or was already used: each link works once, for a \
             short time. Ask for a new one from the sign-in page."
        }
        ErrorCode::RateLimited => {
            "There were too many sign-in attempts from your network. Wait a minute, then open \
             the link again."
        }
        ErrorCode::CsrfFailed => {
            "This sign-in was sent from another website, so it was refused. Open the link from \
             your email again."
        }
        ErrorCode::AuditUnavailable | ErrorCode::Unavailable | ErrorCode::Timeout => {
            "Keymesh cannot finish signing you in right now. Try the link again in a few \
             minutes; if it has expired by then, ask for a new one."
        }
        _ => {
            "Keymesh could not sign you in with this link. Ask for a new one from the sign-in \
             page; if that fails too, contact your Keymesh administrator."
        }
    }
}

/// A refusal: its message for a person and its stable code (shown, and in the
/// `Keymesh-Error-Code` header), with the code's status.
pub fn refused(code: ErrorCode) -> Response {
    let mut response = page(
        code.status(),
        "Cannot sign in",
        &format!(
            "<p>{}</p><p class=\"muted\">Error code: <code>{}</code></p>",
            escape(refusal_message(code)),
            escape(code.as_str())
        ),
    );
    response
        .headers_mut()
        .insert(ERROR_CODE_HEADER, HeaderValue::from_static(code.as_str()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_speak_to_people_not_operators() {
        for code in ErrorCode::ALL {
            let message = refusal_message(*code);
            assert!(
                !message.contains('`')
                    && !message.contains("_SECS")
                    && !message.contains("MANAGEMENT_"),
                "{code}: {message}"
            );
        }
        assert!(refusal_message(ErrorCode::LoginLinkInvalid).contains("Ask for a new one"));
        assert_eq!(
            ERROR_CODE_HEADER.as_str(),
            ERROR_CODE_HEADER_NAME.to_lowercase()
        );
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
