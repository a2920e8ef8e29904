//! A real SMTP server for tests: Debian's aiosmtpd on loopback, writing a Maildir, with helpers
//! that read what arrived (`testing` feature). scripts/test installs python3-aiosmtpd.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The Python that has Debian's aiosmtpd (scripts/test installs python3-aiosmtpd).
const PYTHON: &str = "/usr/bin/python3";

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
        Self::start_with(&[])
    }

    /// Start it serving TLS with `cert` and `key` (PEM files): required STARTTLS, or implicit
    /// TLS (`smtps`) when `implicit`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, implicit: bool) -> Self {
        let (cert_flag, key_flag) = if implicit {
            ("--smtpscert", "--smtpskey")
        } else {
            ("--tlscert", "--tlskey")
        };
        Self::start_with(&[
            cert_flag.as_ref(),
            cert.as_os_str(),
            key_flag.as_ref(),
            key.as_os_str(),
        ])
    }

    fn start_with(extra: &[&std::ffi::OsStr]) -> Self {
        let maildir = tempfile::tempdir().expect("maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            // Before -c: what follows the handler class is its arguments.
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the SMTP server ({PYTHON} -m aiosmtpd): {e}; install Debian's python3-aiosmtpd (scripts/test does)")
            });
        let mut smtp = Self {
            child,
            port,
            maildir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = smtp.child.try_wait() {
                panic!(
                    "aiosmtpd exited ({status}): is Debian's python3-aiosmtpd installed? (scripts/test installs it)"
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        smtp.child.try_wait().expect("poll");
        smtp
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
