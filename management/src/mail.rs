//! Sign-in mail: over SMTP with `lettre` (implicit TLS or required STARTTLS in production), or
//! printed to the console in development.
//!
//! Sending happens off the request path ([`Mailer::send_later`]): the answer to a sign-in
//! request must not take longer when the address has an account (a mail goes out) than when it
//! has none, and a slow mail server must not hold a client's request open.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::client::{Certificate, Tls, TlsParameters},
};
use prometheus_client::metrics::counter::Counter;
use secrecy::{ExposeSecret, SecretString};

use crate::config::MailConfig;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A mail about to go out. The body holds a one-time link and code: it is never logged.
#[derive(Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: SecretString,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a mail did not go out.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Bad address or message.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// The SMTP server refused or could not be reached.
    #[error("SMTP delivery failed")]
    Smtp(#[source] lettre::transport::smtp::Error),
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Console,
}

/// Sends mail. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    metrics: Option<MailCounters>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::Console => "console",
        };
        f.debug_struct("Mailer")
            .field("transport", &kind)
            .finish_non_exhaustive()
    }
}

/// Delivery counters (`management_mail_sent_total`, `management_mail_failed_total`).
#[derive(Clone, Debug, Default)]
pub struct MailCounters {
    /// Accepted by the SMTP server (or printed).
    pub sent: Counter,
    /// Not delivered.
    pub failed: Counter,
}

/// TLS for `url` (implicit for `smtps://`, required STARTTLS otherwise) trusting only the CAs
/// of `pem`.
fn private_ca_tls(url: &str, pem: &[u8]) -> Result<Tls, MailError> {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .ok_or_else(|| MailError::Build("MANAGEMENT_SMTP_URL names no host".into()))?;
    let mut params = TlsParameters::builder(host);
    for block in pem_certificates(pem) {
        params =
            params.add_root_certificate(Certificate::from_pem(&block).map_err(MailError::Smtp)?);
    }
    let params = params.build().map_err(MailError::Smtp)?;
    Ok(if url.starts_with("smtps://") {
        Tls::Wrapper(params)
    } else {
        Tls::Required(params)
    })
}

/// Each `-----BEGIN CERTIFICATE-----` block of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive(END)
        .filter_map(|chunk| {
            chunk
                .find("-----BEGIN CERTIFICATE-----")
                .filter(|_| chunk.ends_with(END))
                .map(|start| chunk.as_bytes()[start..].to_vec())
        })
        .collect()
}

impl Mailer {
    /// From configuration. SMTP URLs were checked at load.
    pub fn new(config: &MailConfig, from: &str) -> Result<Self, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
        let transport = match config {
            MailConfig::Console => Transport::Console,
            MailConfig::Smtp(url, ca) => {
                let url = url.expose_secret();
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(MailError::Smtp)?
                    .timeout(Some(SMTP_TIMEOUT));
                if let Some(pem) = ca {
                    builder = builder.tls(private_ca_tls(url, pem)?);
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Self {
            transport,
            from,
            metrics: None,
        })
    }

    /// Count outcomes in `counters`.
    #[must_use]
    pub fn with_metrics(mut self, counters: MailCounters) -> Self {
        self.metrics = Some(counters);
        self
    }

    /// Send now.
    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
        match &self.transport {
            Transport::Console => {
                eprintln!(
                    "\n----- mail (development: printed, not sent) -----\nTo: {}\nSubject: {}\n\n{}\n-------------------------------------------------\n",
                    mail.to,
                    mail.subject,
                    mail.body.expose_secret()
                );
                Ok(())
            }
            Transport::Smtp(smtp) => {
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body.expose_secret().to_owned())
                    .map_err(|e| MailError::Build(e.to_string()))?;
                smtp.send(message).await.map(drop).map_err(MailError::Smtp)
            }
        }
    }

    /// Send in the background; failures are logged (without the body) and counted.
    pub fn send_later(&self, mail: Mail) {
        let mailer = self.clone();
        tokio::spawn(async move {
            let result = mailer.send(&mail).await;
            if let Err(err) = &result {
                tracing::error!(error = %keymesh_core::error::error_chain(err), subject = %mail.subject, "sign-in mail not delivered");
            }
            if let Some(counters) = &mailer.metrics {
                match result {
                    Ok(()) => counters.sent.inc(),
                    Err(_) => counters.failed.inc(),
                };
            }
        });
    }
}
