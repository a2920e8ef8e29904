//! Structured logs: JSON lines through `tracing`, with secrets scrubbed on the way out.
//!
//! Redaction happens at two depths. First, nothing logs credentials by design: request spans
//! record method, path (never the query string), route, status and request id, never headers.
//! Second, every formatted line passes through [`RedactingWriter`], which masks anything shaped
//! like a credential (`Bearer ...`, `Basic ...`, Keymesh token prefixes, cookie values, and
//! fields named like secrets) even when a careless log statement includes one.

use std::{
    borrow::Cow,
    io::{self, Write},
    sync::LazyLock,
};

use regex::Regex;
use tracing_subscriber::{
    EnvFilter, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::LogFormat;

const MASK: &str = "[redacted]";

struct Patterns {
    scheme: Regex,
    token: Regex,
    field: Regex,
    cookie: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    Patterns {
    // `Authorization: Bearer xyz` in any case; `Basic <base64>`.
    scheme: Regex::new(r"(?i:\b(bearer)(?:\s+|%20))[A-Za-z0-9._~+/=\-]+|\b(Basic)\s+[A-Za-z0-9+/]{6,}={0,2}")
        .expect("regex"),
    // Keymesh-issued secrets all carry a `km<kind>_` prefix (see docs/decisions).
    token: Regex::new(r"\bkm[a-z]{1,3}_[A-Za-z0-9_\-]{8,}").expect("regex"),
    // JSON (also escaped inside a JSON string) or key=value fields whose name says secret. The
    // name must end in the secret word, so `token_id` or `code` stay readable.
    field: Regex::new(concat!(
        r#"(?i)((?:\\?")?\b(?:[a-z_\-]*(?:token|secret|password|passphrase|api[_\-]?key|private[_\-]?key|data[_\-]?key)"#,
        r#"|authorization|cookie|set[_\-]cookie|share|unlock[_\-]share|login[_\-]code|enrollment[_\-]code|otp)"#,
        // Value: a JSON string (with escapes), a string escaped inside another, or a bare word.
        r#"(?:\\?")?\s*[:=]\s*)(?:(")(?:[^"\\]|\\.)*"|(\\")[^"\\]*\\"|[^\s,}&"\\]+)"#,
    ))
    .expect("regex"),
    // `Cookie: a=b; c=d` / `Set-Cookie: a=b` in free text.
    cookie: Regex::new(r"(?i)((?:set-)?cookie\s*:\s*)[^\r\n\x22\\]+").expect("regex"),
}
});

/// Mask credential-shaped substrings. Allocates only when something matched.
pub fn redact(line: &str) -> Cow<'_, str> {
    let p = &*PATTERNS;
    let mut out = Cow::Borrowed(line);
    for (re, replacement) in [
        (&p.cookie, "${1}[redacted]"),
        (&p.scheme, "${1}${2} [redacted]"),
        (&p.token, MASK),
        (&p.field, "${1}${2}${3}[redacted]${2}${3}"),
    ] {
        if let Cow::Owned(s) = re.replace_all(&out, replacement) {
            out = Cow::Owned(s);
        }
    }
    out
}

/// A [`MakeWriter`] that scrubs every line written through it.
#[derive(Clone, Debug)]
pub struct RedactingWriter<M> {
    inner: M,
}

impl<M> RedactingWriter<M> {
    /// Wrap another writer factory.
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

/// One write handle; formatted events arrive as whole lines.
#[derive(Debug)]
pub struct Redacting<W> {
    inner: W,
}

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingWriter<M> {
    type Writer = Redacting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting {
            inner: self.inner.make_writer(),
        }
    }
}

/// Build the subscriber layer stack used by every service, writing through `writer`.
pub fn subscriber<W>(
    filter: &str,
    format: LogFormat,
    writer: W,
) -> Result<impl tracing::Subscriber + Send + Sync, String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("LOG_LEVEL is invalid: {e}"))?;
    let writer = RedactingWriter::new(writer);
    let (json, pretty) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(true)
                    .with_writer(writer),
            ),
            None,
        ),
        LogFormat::Pretty => (
            None,
            Some(tracing_subscriber::fmt::layer().with_writer(writer)),
        ),
    };
    Ok(tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(pretty))
}

/// Install the global subscriber writing to stdout. Call once, at start.
pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    subscriber(filter, format, io::stdout)?
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
pub(crate) mod capture {
    //! A writer that collects log output in memory, for tests.

    use std::sync::{Arc, Mutex};

    /// Shared buffer.
    #[derive(Clone, Debug, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// Everything written so far.
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials_in_many_shapes() {
        let cases = [
            (r#"{"authorization":"Bearer abc.def-ghi"}"#, "abc.def-ghi"),
            (
                r#"{"authorization":"Some(\"Bearer abc.def-ghi\")"}"#,
                "abc.def-ghi",
            ),
            ("Authorization: bearer abc.def-ghi", "abc.def-ghi"),
            ("header Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
            (r#"{"token":"abc.def-ghi"}"#, "abc.def-ghi"),
            ("session_token=abc.def-ghi&x=1", "abc.def-ghi"),
            (
                r#"{"message":"got kms_Zm9vYmFyYmF6cXV4 back"}"#,
                "Zm9vYmFyYmF6cXV4",
            ),
            ("cookie: km_session=abc.def-ghi; other=1", "abc.def-ghi"),
            (r#"{"fields":{"api_key":"abc.def-ghi"}}"#, "abc.def-ghi"),
            (
                r#"{"message":"payload {\"passphrase\":\"abc.def-ghi\"}"}"#,
                "abc.def-ghi",
            ),
        ];
        for (case, secret) in cases {
            let out = redact(case);
            assert!(!out.contains(secret), "{case} -> {out}");
            assert!(out.contains(MASK), "{case} -> {out}");
            if case.starts_with('{') {
                serde_json::from_str::<serde_json::Value>(&out)
                    .unwrap_or_else(|e| panic!("{case} -> {out} is no longer JSON: {e}"));
            }
        }
    }

    #[test]
    fn leaves_ordinary_lines_alone() {
        let line = r#"{"level":"INFO","message":"request refused","code":"rate_limited","token_id":"t1","route":"/health/ready"}"#;
        assert!(matches!(redact(line), Cow::Borrowed(_)));
    }
}
