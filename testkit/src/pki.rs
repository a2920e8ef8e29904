//! Certificates for TLS tests: a private CA, a certificate it signed for 127.0.0.1, and a
//! self-signed one for 127.0.0.1 that no CA vouches for, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The PEM files, in the directory given to [`Pki::new`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// The private CA's certificate (what `TLS_CA_FILE` or `--ca-file` names).
    pub ca: PathBuf,
    /// A certificate for 127.0.0.1 the CA signed.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// A self-signed certificate for 127.0.0.1.
    pub self_signed: PathBuf,
    /// Its private key.
    pub self_signed_key: PathBuf,
}

impl Pki {
    /// Make and write them into `dir`.
    pub fn new(dir: &Path) -> Self {
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        let lone_key = KeyPair::generate().expect("key");
        let lone = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&lone_key)
            .expect("self-signed");
        Self {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            self_signed: write("self-signed.pem", lone.pem()),
            self_signed_key: write("self-signed-key.pem", lone_key.serialize_pem()),
        }
    }

    /// A path as text, for settings.
    pub fn text(path: &Path) -> String {
        path.display().to_string()
    }

    /// Relay settings that make it serve `cert` and `key`.
    pub fn relay_settings(cert: &Path, key: &Path) -> [(&'static str, String); 2] {
        [
            ("RELAY_TLS_CERT_FILE", Self::text(cert)),
            ("RELAY_TLS_KEY_FILE", Self::text(key)),
        ]
    }
}
