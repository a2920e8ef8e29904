//! The few HTML pages a person sees in a browser: the sign-in confirm page and its outcomes.
//! No scripts, no remote content; the one inline style is allowed by its hash.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderValue, StatusCode, header};
use keymesh_core::http::errors::ERROR_CODE_HEADER;
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

/// A refusal with its error code (shown, and in the `Keymesh-Error-Code` header).
pub fn refused(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response = page(
        status,
        "Cannot sign in",
        &format!(
            "<p>{}</p><p class=\"muted\">Error code: <code>{}</code></p>",
            escape(message),
            escape(code)
        ),
    );
    response
        .headers_mut()
        .insert(ERROR_CODE_HEADER, HeaderValue::from_static(code));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
