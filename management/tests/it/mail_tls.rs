//! Sign-in mail over TLS, as in production: required STARTTLS and implicit TLS to a real SMTP
//! server (aiosmtpd) whose certificate a private CA signed, trusted through
//! `MANAGEMENT_SMTP_CA_FILE`; without that CA the mail is not sent.

use std::path::Path;

use http::StatusCode;
use keymesh_management::{
    config::MailConfig,
    mail::{Mail, Mailer},
};
use keymesh_testkit::Pki;
use secrecy::SecretString;
use serde_json::json;

use crate::harness::{Smtp, address, management_with};

/// A CA and a certificate it signed for 127.0.0.1, written as PEM files: (ca, cert, key).
fn private_ca(dir: &Path) -> (String, String, String) {
    let pki = Pki::new(dir);
    (
        Pki::text(&pki.ca),
        Pki::text(&pki.cert),
        Pki::text(&pki.key),
    )
}

fn mail(to: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "TLS check".into(),
        body: SecretString::from("over TLS\n".to_owned()),
    }
}

#[tokio::test]
async fn sign_in_mail_goes_over_starttls_and_implicit_tls_trusting_only_the_configured_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = private_ca(dir.path());
    for implicit in [false, true] {
        let smtp = Smtp::start_tls(Path::new(&cert), Path::new(&key), implicit);
        let url = if implicit {
            format!("smtps://127.0.0.1:{}", smtp.port)
        } else {
            format!("smtp://127.0.0.1:{}?tls=required", smtp.port)
        };
        // Without the private CA the server's certificate is not trusted: nothing is sent.
        let untrusted = Mailer::new(
            &MailConfig::Smtp(SecretString::from(url.clone()), None),
            "k@test.invalid",
        )
        .expect("mailer");
        let to = address("untrusted");
        assert!(
            untrusted.send(&mail(&to)).await.is_err(),
            "implicit={implicit}"
        );
        assert!(smtp.mails_to(&to).is_empty());

        // With it, a sign-in mail arrives through the real router.
        let m = management_with(&[
            ("MANAGEMENT_SMTP_URL", &url),
            ("MANAGEMENT_SMTP_CA_FILE", &ca),
        ])
        .await;
        let email = address("tls");
        m.user(&email, "member").await;
        let reply = m
            .json("POST", "/v1/login", Some(json!({ "email": email })), &[])
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let received = smtp.wait_mail(&email, 1).await;
        assert!(
            received.contains("/login/confirm?token="),
            "implicit={implicit}"
        );
    }
}

#[test]
fn a_ca_file_needs_an_encrypted_smtp_url_and_a_certificate() {
    use keymesh_core::config::{Environment, Source};
    let dir = tempfile::tempdir().expect("dir");
    let (ca, _, key) = private_ca(dir.path());
    let load = |url: &str, ca: &str| {
        keymesh_management::ManagementConfig::load(
            &Source::from_env([
                ("MANAGEMENT_DATABASE_URL", "sqlite::memory:".to_owned()),
                ("MANAGEMENT_PUBLIC_URL", "http://127.0.0.1:7800".to_owned()),
                (
                    "MANAGEMENT_SECRET_KEY",
                    "test-secret-key-0123456789abcdef0123".to_owned(),
                ),
                ("MANAGEMENT_SMTP_URL", url.to_owned()),
                ("MANAGEMENT_SMTP_CA_FILE", ca.to_owned()),
            ]),
            Environment::Development,
        )
    };
    assert!(load("smtp://127.0.0.1:25?tls=required", &ca).is_ok());
    for (url, file) in [
        ("smtp://127.0.0.1:25", ca.as_str()),
        ("smtps://127.0.0.1:465", key.as_str()),
        ("smtps://127.0.0.1:465", "/nonexistent/ca.pem"),
    ] {
        let err = load(url, file).expect_err(url).to_string();
        assert!(err.contains("MANAGEMENT_SMTP_CA_FILE"), "{err}");
    }
}
