//! `keymeshctl` end to end: the built binary against a real vault and relay.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use keymesh_testkit::Cluster;
use serde_json::Value;

use crate::support::{Pki, eventually, now_ms, plant, register, substitute_listing, within};

const BIN: &str = env!("CARGO_BIN_EXE_keymeshctl");
const PASSPHRASE: &str = "correct horse battery staple";

/// One node's files.
struct Files {
    keys: PathBuf,
    token: PathBuf,
}

fn command(args: &[&str], env: &[(&str, &Path)], relay: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("KEYMESH_KEYS")
        .env_remove("KEYMESH_TOKEN_FILE")
        .env("KEYMESH_RELAY_URL", relay)
        .env("KEYMESH_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Run to completion off the runtime (the relay serves on it meanwhile), with `stdin`.
async fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let stdin = stdin.to_vec();
    within(
        "keymeshctl",
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("spawn keymeshctl");
            if let Some(mut pipe) = child.stdin.take() {
                pipe.write_all(&stdin).expect("stdin");
            }
            child.wait_with_output().expect("keymeshctl output")
        }),
    )
    .await
    .expect("join")
}

async fn wait(child: Child) -> Output {
    within(
        "keymeshctl listen",
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("output")),
    )
    .await
    .expect("join")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr_code(out: &Output) -> String {
    let v: Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: stderr {:?}", String::from_utf8_lossy(&out.stderr)));
    v["error"]["code"].as_str().expect("code").to_owned()
}

fn env(f: &Files) -> [(&'static str, &Path); 2] {
    [("KEYMESH_KEYS", &f.keys), ("KEYMESH_TOKEN_FILE", &f.token)]
}

/// `keys init`, then register the printed identity key and write the token file.
async fn init(cluster: &Cluster, dir: &Path, id: &str) -> Files {
    let files = Files {
        keys: dir.join(format!("{id}.keys.json")),
        token: dir.join(format!("{id}.token")),
    };
    let out = run(
        command(
            &["--json", "keys", "init", "--node", id],
            &env(&files),
            &cluster.relay_url,
        ),
        b"",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let v = stdout_json(&out);
    assert_eq!(
        (v["node"].as_str(), v["enc_key_version"].as_u64()),
        (Some(id), Some(1))
    );
    let identity: [u8; 32] = hex::decode(v["identity_public"].as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let token = register(cluster, id, "g1", identity).await;
    std::fs::write(&files.token, format!("{token}\n")).expect("token file");
    files
}

async fn published(cluster: &Cluster, node: &str) {
    eventually("the listener publishes its key", || async {
        cluster.relay.registry.group_of(node).is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymeshctl_inits_sends_listens_and_exits_with_documented_codes() {
    let cluster = Cluster::start(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let relay = cluster.relay_url.clone();
    let a = init(&cluster, dir.path(), "A").await;
    let b = init(&cluster, dir.path(), "B").await;

    // B listens (publishing its key first); A sends a file.
    let listen = command(
        &["--json", "listen", "--count", "1", "--timeout-secs", "30"],
        &env(&b),
        &relay,
    )
    .spawn()
    .expect("spawn listen");
    published(&cluster, "B").await;
    let message = dir.path().join("message.bin");
    std::fs::write(&message, b"db-password: s3cret\n\x00\xff").expect("message");
    let file = message.to_str().expect("path");
    let out = run(
        command(
            &["--json", "send", "--to", "B", "--file", file],
            &env(&a),
            &relay,
        ),
        b"",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let sent = stdout_json(&out);
    assert_eq!(sent["duplicate"], Value::Bool(false));
    let id = sent["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 32);

    let out = wait(listen).await;
    assert_eq!(code(&out), 0, "{out:?}");
    let lines: Vec<&[u8]> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let got: Value = serde_json::from_slice(lines[0]).expect("json line");
    assert_eq!(
        (got["from"].as_str(), got["id"].as_str()),
        (Some("A"), Some(id.as_str()))
    );
    let payload = STANDARD
        .decode(got["payload"].as_str().expect("payload"))
        .expect("b64");
    assert_eq!(payload, b"db-password: s3cret\n\x00\xff");
    eventually("listen acknowledged it", || async {
        cluster
            .relay
            .store
            .fetch("B", 0, 10)
            .await
            .expect("fetch")
            .is_empty()
    })
    .await;

    // Text mode, from stdin.
    let listen = command(
        &["listen", "--count", "1", "--timeout-secs", "30"],
        &env(&b),
        &relay,
    )
    .spawn()
    .expect("spawn listen");
    let out = run(
        command(&["send", "--to", "B"], &env(&a), &relay),
        b"hello over stdin",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("sent "),
        "{out:?}"
    );
    let out = wait(listen).await;
    assert_eq!(code(&out), 0, "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--- from A") && text.contains("hello over stdin\n"),
        "{text}"
    );

    // Idle: nothing arrives, listen stops after its timeout.
    let out = run(
        command(&["listen", "--timeout-secs", "1"], &env(&b), &relay),
        b"",
    )
    .await;
    assert_eq!((code(&out), out.stdout.len()), (0, 0), "{out:?}");

    // 4: the relay refuses the message (no such recipient in the group).
    let out = run(
        command(&["--json", "send", "--to", "nobody"], &env(&a), &relay),
        b"x",
    )
    .await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (4, "unknown_recipient"),
        "{out:?}"
    );

    // 3: a garbage token (valid base64, not a token).
    let garbage = dir.path().join("garbage.token");
    std::fs::write(&garbage, STANDARD.encode(b"garbage").trim_end_matches('=')).expect("write");
    let bad = [
        ("KEYMESH_KEYS", a.keys.as_path()),
        ("KEYMESH_TOKEN_FILE", garbage.as_path()),
    ];
    let out = run(
        command(&["--json", "send", "--to", "B"], &bad, &relay),
        b"x",
    )
    .await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (3, "invalid_token"),
        "{out:?}"
    );
    let out = run(
        command(&["--json", "listen", "--count", "1"], &bad, &relay),
        b"",
    )
    .await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (3, "invalid_token"),
        "{out:?}"
    );

    // 5: nothing listens at the relay URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let out = run(
        command(&["--json", "send", "--to", "B"], &env(&a), &nowhere),
        b"x",
    )
    .await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (5, "relay_unreachable"),
        "{out:?}"
    );

    // 2: usage and configuration.
    let out = run(command(&["send"], &env(&a), &relay), b"").await;
    assert_eq!(code(&out), 2, "{out:?}");
    let mut no_pass = command(&["--json", "keys", "show"], &env(&a), &relay);
    no_pass.env_remove("KEYMESH_PASSPHRASE");
    let out = run(no_pass, b"").await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (2, "passphrase_missing"),
        "{out:?}"
    );
    let mut wrong = command(&["--json", "keys", "show"], &env(&a), &relay);
    wrong.env("KEYMESH_PASSPHRASE", "wrong");
    let out = run(wrong, b"").await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (2, "keyfile_wrong_passphrase")
    );
    let out = run(
        command(&["--json", "keys", "init", "--node", "A"], &env(&a), &relay),
        b"",
    )
    .await;
    assert_eq!(
        (code(&out), stderr_code(&out).as_str()),
        (2, "keyfile_exists")
    );
    let help = run(command(&["--help"], &[], &relay), b"").await;
    assert_eq!(code(&help), 0);
    assert!(String::from_utf8_lossy(&help.stdout).contains("3  authentication"));

    // The passphrase from a file; show, then rotate and publish.
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).expect("write");
    let pass = pass_file.to_str().expect("path");
    let mut show = command(
        &["--json", "--passphrase-file", pass, "keys", "show"],
        &env(&a),
        &relay,
    );
    show.env_remove("KEYMESH_PASSPHRASE");
    let out = run(show, b"").await;
    assert_eq!(code(&out), 0, "{out:?}");
    let v = stdout_json(&out);
    assert_eq!(
        (v["node"].as_str(), v["enc_key_version"].as_u64()),
        (Some("A"), Some(1))
    );
    let out = run(
        command(&["--json", "keys", "rotate"], &env(&a), &relay),
        b"",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let v = stdout_json(&out);
    assert_eq!(
        (v["enc_key_version"].as_u64(), v["published"].as_bool()),
        (Some(2), Some(true))
    );
    let listed = cluster
        .relay
        .registry
        .keys("A", i64::MAX / 2, 0)
        .await
        .expect("keys");
    assert_eq!(listed.first().map(|k| k.version), Some(2));

    // After the rotation A's messages still reach B (sealed with version 2).
    let listen = command(
        &["--json", "listen", "--count", "1", "--timeout-secs", "30"],
        &env(&b),
        &relay,
    )
    .spawn()
    .expect("spawn listen");
    let out = run(
        command(&["--json", "send", "--to", "B"], &env(&a), &relay),
        b"after rotation",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let out = wait(listen).await;
    assert_eq!(code(&out), 0, "{out:?}");
    let got: Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("json");
    let payload = STANDARD
        .decode(got["payload"].as_str().expect("payload"))
        .expect("b64");
    assert_eq!(payload, b"after rotation");
}

/// A message over https and wss to a relay whose certificate a private CA signed, trusted with
/// `--ca-file`; the same relay without it, and a self-signed relay even with it, are refused
/// with `tls_untrusted` (exit 2) before anything is sent; `http://` off loopback is refused
/// unless allowed, and then named in a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymeshctl_speaks_tls_to_a_private_ca_and_refuses_what_does_not_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new(dir.path());
    let [cert, key] = Pki::relay_settings(&pki.cert, &pki.key);
    let cluster = Cluster::start(&[(cert.0, &cert.1), (key.0, &key.1)]).await;
    let relay = cluster.relay_url.clone();
    assert!(relay.starts_with("https://"), "{relay}");
    let a = init(&cluster, dir.path(), "A").await;
    let b = init(&cluster, dir.path(), "B").await;

    let [k, t] = env(&b);
    let listen = command(
        &["--json", "listen", "--count", "1", "--timeout-secs", "30"],
        &[k, t, ("KEYMESH_CA_FILE", pki.ca.as_path())],
        &relay,
    )
    .spawn()
    .expect("spawn listen");
    published(&cluster, "B").await;
    let ca = pki.ca.to_str().expect("path");
    let out = run(
        command(
            &["--json", "--ca-file", ca, "send", "--to", "B"],
            &env(&a),
            &relay,
        ),
        b"over https and wss",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let out = wait(listen).await;
    assert_eq!(code(&out), 0, "{out:?}");
    let got: Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("json line");
    let payload = STANDARD
        .decode(got["payload"].as_str().expect("payload"))
        .expect("b64");
    assert_eq!(payload, b"over https and wss");

    // The system store does not know the private CA.
    let out = run(
        command(&["--json", "send", "--to", "B"], &env(&a), &relay),
        b"never sent",
    )
    .await;
    assert_eq!(code(&out), 2, "{out:?}");
    assert_eq!(stderr_code(&out), "tls_untrusted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not verify") && stderr.contains("--ca-file"),
        "{stderr}"
    );

    // A self-signed relay: no CA vouches for it, not even the one given.
    let [cert, key] = Pki::relay_settings(&pki.self_signed, &pki.self_signed_key);
    let lone = Cluster::start(&[(cert.0, &cert.1), (key.0, &key.1)]).await;
    let out = run(
        command(
            &["--json", "--ca-file", ca, "send", "--to", "B"],
            &env(&a),
            &lone.relay_url,
        ),
        b"never sent",
    )
    .await;
    assert_eq!(code(&out), 2, "{out:?}");
    assert_eq!(stderr_code(&out), "tls_untrusted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{out:?}"
    );

    // Plain HTTP off loopback: refused without a connection; allowed only explicitly, with a
    // warning (and then this address answers nothing: unreachable).
    let off_loopback = "http://0.0.0.0:1";
    let out = run(
        command(&["--json", "send", "--to", "B"], &env(&a), off_loopback),
        b"never sent",
    )
    .await;
    assert_eq!(code(&out), 2, "{out:?}");
    assert_eq!(stderr_code(&out), "plain_http_refused");
    let out = run(
        command(
            &["--allow-plain-http", "send", "--to", "B"],
            &env(&a),
            off_loopback,
        ),
        b"never sent",
    )
    .await;
    assert_eq!(code(&out), 5, "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: plain HTTP to 0.0.0.0") && stderr.contains("unencrypted"),
        "{stderr}"
    );
}

/// A signed request is never carried somewhere it was not signed for: a redirect answer is a
/// refusal, for management and vault calls and for the relay's HTTP calls alike, and the
/// redirect's target is never contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_never_followed() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use keymesh_client::{
        keys::NodeKeys,
        relay::{ClientOptions, RelayClient, RelayError},
        service::{CallError, Service},
    };
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    let target = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target_addr = target.local_addr().expect("addr");
    let contacted = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let contacted = Arc::clone(&contacted);
        async move {
            while target.accept().await.is_ok() {
                contacted.store(true, Ordering::SeqCst);
            }
        }
    });
    let redirector = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", redirector.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = redirector.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target_addr}/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });

    let keys = NodeKeys::generate("n1").expect("keys");
    let service = Service::new(&base, std::time::Duration::from_secs(5)).expect("service");
    let err = within(
        "node call",
        service.node_call(&keys, "dG9rZW4", reqwest::Method::GET, "/v1/anything", None),
    )
    .await
    .expect_err("a redirect is not an answer");
    assert!(matches!(err, CallError::Protocol(_)), "{err:?}");

    let relay =
        RelayClient::new(keys, b"token".to_vec(), &base, ClientOptions::default()).expect("client");
    let err = within("publish", relay.publish_keys())
        .await
        .expect_err("a redirect is not an answer");
    assert!(matches!(err, RelayError::Protocol(_)), "{err:?}");
    assert!(
        !contacted.load(Ordering::SeqCst),
        "the redirect's target was contacted"
    );
}

/// Issue 23 finding 7: whose key a node seals to is the vault's word, not the relay's. A sends
/// to B with the vault configured: B's identity is attested by the vault and pinned in A's key
/// file. The relay, compromised, then lists Mallory's identity (with a key properly signed by
/// it) for B. A is refused even without the vault (the pin survived the process), and so is a
/// new sender C that asks the vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_substitutes_an_identity_is_refused_by_the_sender() {
    use ed25519_dalek::SigningKey;
    let mut cluster = Cluster::start(&[]).await;
    let dir = tempfile::tempdir().expect("dir");
    let vault = PathBuf::from(&cluster.vault_url);
    let a = init(&cluster, dir.path(), "A").await;
    let b = init(&cluster, dir.path(), "B").await;
    let c = init(&cluster, dir.path(), "C").await;
    fn with_vault<'a>(f: &'a Files, vault: &'a Path) -> [(&'static str, &'a Path); 3] {
        let [k, t] = env(f);
        [k, t, ("KEYMESH_VAULT_URL", vault)]
    }
    // B publishes its key (and hears nothing).
    let out = run(
        command(
            &["listen", "--timeout-secs", "1"],
            &env(&b),
            &cluster.relay_url,
        ),
        b"",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let out = run(
        command(
            &["--json", "send", "--to", "B"],
            &with_vault(&a, &vault),
            &cluster.relay_url,
        ),
        b"first",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");

    // The relay lists Mallory's identity for B, with an encryption key Mallory signed.
    let mallory = SigningKey::from_bytes(&[42; 32]);
    let mallory_enc = keymesh_client::keys::NodeKeys::generate("B").expect("keys");
    let db = cluster.relay.store.db().clone();
    substitute_listing(&db, "B", &mallory, &mallory_enc.current_enc_key().public).await;
    cluster.stop_relay().await;
    cluster.start_relay().await;

    // A, without the vault now: its key file's pin refuses the substitute.
    let out = run(
        command(
            &["--json", "send", "--to", "B"],
            &env(&a),
            &cluster.relay_url,
        ),
        b"second",
    )
    .await;
    assert_ne!(code(&out), 0, "{out:?}");
    assert_eq!(stderr_code(&out), "peer_identity_changed", "{out:?}");
    // C has never talked to B: the vault's attestation names B's real key.
    let out = run(
        command(
            &["--json", "send", "--to", "B"],
            &with_vault(&c, &vault),
            &cluster.relay_url,
        ),
        b"hello",
    )
    .await;
    assert_ne!(code(&out), 0, "{out:?}");
    assert_eq!(stderr_code(&out), "peer_identity_changed", "{out:?}");

    // The receive side: the relay now also lists Mallory's identity for A and delivers a
    // message "from A" that Mallory sealed. B, listening with the vault, opens neither it nor
    // A's real first message (A's listing no longer matches what the vault attests): both are
    // reported as undecryptable and nothing is printed as a message.
    let mallory_a = keymesh_client::keys::NodeKeys::generate("A").expect("keys");
    let b_keys = keymesh_client::keyfile::load(&b.keys, &secrecy::SecretString::from(PASSPHRASE))
        .expect("B's keys");
    let forged = keymesh_client::envelope::seal(
        &mallory_a,
        "B",
        (b_keys.current_version(), b_keys.current_enc_key().public),
        [9; 16],
        now_ms(),
        b"transfer everything to mallory",
    )
    .expect("seal");
    let db = cluster.relay.store.db().clone();
    // (B's own listing goes back to honest, so that B can publish its key again.)
    keymesh_core::with_pool!(&db, pool => sqlx::query("DELETE FROM relay_keys WHERE node = 'B'")
        .execute(pool)
        .await
        .map(drop))
    .expect("honest B");
    substitute_listing(&db, "A", &mallory, &mallory_a.current_enc_key().public).await;
    plant(&db, "B", "A", &[9; 16], (&forged.enc, &forged.payload)).await;
    cluster.stop_relay().await;
    cluster.start_relay().await;
    let out = run(
        command(
            &["--json", "listen", "--timeout-secs", "2"],
            &with_vault(&b, &vault),
            &cluster.relay_url,
        ),
        b"",
    )
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing is printed as a message: {out:?}"
    );
    let refused: Vec<Value> = out
        .stderr
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("json line"))
        .collect();
    assert_eq!(refused.len(), 2, "{out:?}");
    for r in &refused {
        assert_eq!(r["error"]["code"], "message_undecryptable", "{out:?}");
    }
}
