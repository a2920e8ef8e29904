use std::{path::Path, time::Duration};

use axum::{Router, extract::ConnectInfo, routing::get};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{ServerTls, TlsError, TlsFiles, TrustedCas, client_builder};
use crate::{config::ServiceName, metrics::Metrics, serve};

/// A private CA and a leaf for 127.0.0.1 valid until `year`-01-01, as PEM: (ca, cert, key).
fn private_ca(year: i32) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.not_after = date_time_ymd(year, 1, 1);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    TlsFiles {
        cert: cert_path,
        key: key_path,
        settings: ("VAULT_TLS_CERT_FILE", "VAULT_TLS_KEY_FILE"),
    }
}

fn trusting(dir: &Path, ca: &str) -> reqwest::Client {
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca).expect("ca");
    let cas = TrustedCas::load(&path).expect("ca bundle");
    client_builder(Some(&cas))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn expiry(metrics: &Metrics) -> String {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with("keymesh_tls_certificate_expiry_timestamp_seconds{"))
        .expect("expiry series")
        .rsplit(' ')
        .next()
        .expect("value")
        .to_owned()
}

#[tokio::test]
async fn serves_https_to_clients_trusting_the_ca_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = private_ca(2031);
    let files = files(dir.path(), &cert, &key);
    let metrics = Metrics::new(ServiceName::Vault);
    let tls = ServerTls::load(files.clone(), &metrics).expect("load");
    // 2031-01-01T00:00:00Z.
    assert_eq!(expiry(&metrics), "1924992000");

    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let router =
        Router::new().route(
            "/peer",
            get(
                |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                    peer.ip().to_string()
                },
            ),
        );
    let server = tokio::spawn(serve(
        tls.listen(tcp, shutdown.clone()),
        router,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    let url = format!("https://{addr}/peer");

    // The handler sees the socket peer, as over plain TCP.
    let client = trusting(dir.path(), &ca);
    let answer = client.get(&url).send().await.expect("https call");
    assert_eq!(answer.text().await.expect("body"), "127.0.0.1");

    // Plain HTTP to the TLS port gets no answer; the platform's roots do not trust the CA.
    assert!(reqwest::get(format!("http://{addr}/peer")).await.is_err());
    let platform = client_builder(None).build().expect("client");
    assert!(platform.get(&url).send().await.is_err());

    // A renewal signed by another CA: after reload, only that CA is trusted by new connections.
    let (ca2, cert2, key2) = private_ca(2032);
    std::fs::write(&files.cert, cert2).expect("renew cert");
    std::fs::write(&files.key, key2).expect("renew key");
    tls.reload().expect("reload");
    assert_eq!(expiry(&metrics), "1956528000");
    let renewed = trusting(dir.path(), &ca2);
    assert!(renewed.get(&url).send().await.is_ok());
    assert!(trusting(dir.path(), &ca).get(&url).send().await.is_err());

    // A broken renewal is refused and the served certificate stays.
    std::fs::write(&files.key, "not a key").expect("break key");
    assert!(matches!(
        tls.reload(),
        Err(TlsError::File {
            setting: "VAULT_TLS_KEY_FILE",
            ..
        })
    ));
    assert!(renewed.get(&url).send().await.is_ok());
    assert_eq!(expiry(&metrics), "1956528000");

    shutdown.cancel();
    server.await.expect("join").expect("served");
}

#[test]
fn unusable_files_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().expect("dir");
    let (_, cert, key) = private_ca(2031);
    let (_, _, other_key) = private_ca(2031);
    let metrics = Metrics::new(ServiceName::Vault);

    let missing = TlsFiles {
        cert: dir.path().join("absent.pem"),
        ..files(dir.path(), &cert, &key)
    };
    let err = ServerTls::load(missing, &metrics).expect_err("missing cert");
    assert!(
        err.to_string().starts_with("VAULT_TLS_CERT_FILE ("),
        "{err}"
    );

    let no_cert = files(dir.path(), "not a certificate\n", &key);
    let err = ServerTls::load(no_cert, &metrics).expect_err("empty cert");
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

    let mismatched = files(dir.path(), &cert, &other_key);
    let err = ServerTls::load(mismatched, &metrics).expect_err("mismatch");
    assert!(
        matches!(err, TlsError::Pair { .. }),
        "the key of another certificate: {err}"
    );

    let ca_path = dir.path().join("empty-ca.pem");
    std::fs::write(&ca_path, "").expect("empty ca");
    assert!(
        TrustedCas::load(&ca_path)
            .expect_err("empty bundle")
            .contains("no CERTIFICATE")
    );
}
