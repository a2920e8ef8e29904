//! A real SMTP server for tests: Debian's aiosmtpd on loopback, writing a Maildir, with helpers
//! that read what arrived (`testing` feature). scripts/test installs python3-aiosmtpd.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The Python that has Debian's aiosmtpd (scripts/test installs python3-aiosmtpd).
const PYTHON: &str = "/usr/bin/python3";

/// aiosmtpd on 127.0.0.1, a port of the kernel's choosing (printed first), delivering to a
/// Maildir; `plain`, `starttls` (required) or `implicit` TLS with the given cert and key.
const SERVER: &str = r#"
import asyncio, ssl, sys
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP
mode, maildir = sys.argv[1], sys.argv[2]
ctx = None
if mode != "plain":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
handler = Mailbox(maildir)
def factory():
    if mode == "starttls":
        return SMTP(handler, hostname="localhost", tls_context=ctx, require_starttls=True)
    return SMTP(handler, hostname="localhost")
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx if mode == "implicit" else None)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"#;

/// A real SMTP server on loopback; killed when dropped.
#[derive(Debug)]
pub struct Smtp {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    /// Start it; panics with what to install when aiosmtpd is missing.
    pub fn start() -> Self {
        Self::start_with("plain", None)
    }

    /// Start it serving TLS with `cert` and `key` (PEM files): required STARTTLS, or implicit
    /// TLS (`smtps`) when `implicit`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, implicit: bool) -> Self {
        let mode = if implicit { "implicit" } else { "starttls" };
        Self::start_with(mode, Some((cert, key)))
    }

    /// The server binds port 0 itself and prints the port it got: no window in which another
    /// process (or another test's server) could take a port chosen beforehand.
    fn start_with(mode: &str, tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        use std::io::BufRead;
        let maildir = tempfile::tempdir().expect("maildir");
        let mut command = Command::new(PYTHON);
        command
            .args(["-c", SERVER, mode])
            .arg(maildir.path().join("mail"));
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the SMTP server ({PYTHON} with aiosmtpd): {e}; install Debian's python3-aiosmtpd (scripts/test does)")
            });
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let Ok(port) = line.trim().parse::<u16>() else {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            panic!(
                "the SMTP server did not start ({status}): is Debian's python3-aiosmtpd installed? (scripts/test installs it)"
            );
        };
        Self {
            child,
            port,
            maildir,
        }
    }

    fn dir(&self) -> PathBuf {
        self.maildir.path().join("mail").join("new")
    }

    /// Every mail received for `to`, decoded (quoted-printable soft breaks and `=3D` undone).
    pub fn mails_to(&self, to: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return Vec::new();
        };
        let mut mails: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, decode_qp(&text)))
            })
            .filter(|(_, text)| {
                text.lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")))
            })
            .collect();
        mails.sort_by_key(|(t, _)| *t);
        mails.into_iter().map(|(_, m)| m).collect()
    }

    /// Wait for the `n`th mail to `to` (1-based).
    pub async fn wait_mail(&self, to: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mails = self.mails_to(to);
            if mails.len() >= n {
                return mails[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no mail #{n} to {to} within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_qp(text: &str) -> String {
    text.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
        .replace("\r\n", "\n")
}

/// The link token in a sign-in mail.
pub fn link_token(mail: &str) -> String {
    let start = mail.find("token=").expect("a link in the mail") + "token=".len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The code in a sign-in mail (`XXXX-XXXX` on its own line).
pub fn mail_code(mail: &str) -> String {
    mail.lines()
        .map(str::trim)
        .find(|l| {
            l.len() == 9
                && l.as_bytes()[4] == b'-'
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .expect("a code in the mail")
        .to_owned()
}
