//! `keymesh dev` serving TLS itself (a private CA's certificate on all three services) and the
//! real `keymeshctl`: it enrolls at management over https, publishes its keys and exchanges a
//! message through the relay over https and wss, trusting exactly that CA (`--ca-file`);
//! without it, management's certificate is refused (`tls_untrusted`) before the code is sent.

use std::{path::Path, time::Duration};

use keymesh_testkit::Pki;
use serde_json::{Value, json};

use crate::{
    process::Keymesh,
    support::{Admin, ctl, describe, run},
};

const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymeshctl_enrolls_and_messages_over_https_and_wss_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = tempfile::tempdir().expect("pki dir");
    let pki = Pki::new(pki.path());
    let [ca, cert, key] = [&pki.ca, &pki.cert, &pki.key].map(|p| Pki::text(p));
    let mut env: Vec<(&str, String)> = vec![("TLS_CA_FILE", ca.clone())];
    for service in ["MANAGEMENT", "VAULT", "RELAY"] {
        let [listen, cert_file, key_file] = match service {
            "MANAGEMENT" => [
                "MANAGEMENT_LISTEN",
                "MANAGEMENT_TLS_CERT_FILE",
                "MANAGEMENT_TLS_KEY_FILE",
            ],
            "VAULT" => ["VAULT_LISTEN", "VAULT_TLS_CERT_FILE", "VAULT_TLS_KEY_FILE"],
            _ => ["RELAY_LISTEN", "RELAY_TLS_CERT_FILE", "RELAY_TLS_KEY_FILE"],
        };
        env.extend([
            (listen, "127.0.0.1:0".to_owned()),
            (cert_file, cert.clone()),
            (key_file, key.clone()),
        ]);
    }
    let mut keymesh = Keymesh::start(dir.path(), &["dev"], &env);
    let urls = keymesh.wait_for_urls(3, START);
    let cas = keymesh_core::tls::TrustedCas::load(Path::new(&ca)).expect("ca");
    let http = keymesh_core::tls::client_builder(Some(&cas))
        .build()
        .expect("client");
    for url in urls.values() {
        assert!(url.starts_with("https://"), "{url}");
        keymesh.wait_ready_with(&http, url).await;
    }
    let management = urls["management"].clone();
    let output = keymesh.output();
    let link = output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("https://") && l.contains("/login/confirm?token="))
        .unwrap_or_else(|| panic!("no https sign-in link in the banner:\n{output}"))
        .to_owned();
    let admin = Admin::confirm_with(http, &management, &link).await;
    let (status, body) = admin.post("/v1/groups", json!({ "id": "tls-team" })).await;
    assert_eq!(status, 201, "{body}");

    let nodes = dir.path();
    // No --ca-file: the system store does not know the private CA, and the code stays unused.
    let code = admin.code("tls-team").await;
    let enroll = |node: &str, code: &str, ca_file: Option<&str>| {
        let mut args = vec!["--json"];
        if let Some(ca_file) = ca_file {
            args.extend(["--ca-file", ca_file]);
        }
        args.extend([
            "enroll",
            "--code",
            code,
            "--management",
            &management,
            "--node",
            node,
        ]);
        ctl(nodes, node, &args)
    };
    let out = run(enroll("n1", &code, None), b"").await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(err["error"]["code"], "tls_untrusted", "{err}");

    let mut codes = vec![code];
    codes.push(admin.code("tls-team").await);
    for (node, code) in ["n1", "n2"].into_iter().zip(&codes) {
        let out = run(enroll(node, code, Some(&ca)), b"").await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["published"], true, "{v}");
        assert_eq!(v["relay"].as_str(), Some(urls["relay"].as_str()));
    }

    let relay = urls["relay"].clone();
    let listen = tokio::spawn({
        let cmd = ctl(
            nodes,
            "n2",
            &[
                "--ca-file",
                &ca,
                "--relay",
                &relay,
                "listen",
                "--count",
                "1",
                "--timeout-secs",
                "30",
            ],
        );
        run(cmd, b"")
    });
    let out = run(
        ctl(
            nodes,
            "n1",
            &["--ca-file", &ca, "--relay", &relay, "send", "--to", "n2"],
        ),
        b"hello over wss\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let heard = listen.await.expect("join");
    assert_eq!(heard.status.code(), Some(0), "{}", describe(&heard));
    let text = String::from_utf8_lossy(&heard.stdout);
    assert!(text.contains("hello over wss"), "{text}");

    let status = keymesh.signal_and_wait("INT", STOP);
    assert_eq!(status.code(), Some(0), "{}", keymesh.output());
}
