//! `keymesh dev` plus the real `keymeshctl`: the bootstrapped admin signs in through the printed
//! link, creates a group and enrollment codes; two nodes enroll with `keymeshctl enroll` and
//! exchange a message through the relay.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    process::Keymesh,
    support::{Admin, ctl, describe, run},
};

const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymeshctl_enrolls_two_nodes_with_dev_and_they_exchange_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(&str, String)> = ["MANAGEMENT_LISTEN", "VAULT_LISTEN", "RELAY_LISTEN"]
        .into_iter()
        .map(|k| (k, "127.0.0.1:0".to_owned()))
        .collect();
    let mut keymesh = Keymesh::start(dir.path(), &["dev"], &ports);
    let urls = keymesh.wait_for_urls(3, START);
    for url in urls.values() {
        keymesh.wait_ready(url).await;
    }
    let management = urls["management"].clone();
    let output = keymesh.output();
    let link = output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://") && l.contains("/login/confirm?token="))
        .unwrap_or_else(|| panic!("no sign-in link in the banner:\n{output}"))
        .to_owned();
    let admin = Admin::confirm(&management, &link).await;
    let (status, body) = admin.post("/v1/groups", json!({ "id": "dev-team" })).await;
    assert_eq!(status, 201, "{body}");

    let nodes = dir.path();
    let mut codes = Vec::new();
    for node in ["n1", "n2"] {
        let code = admin.code("dev-team").await;
        let out = run(
            ctl(
                nodes,
                node,
                &[
                    "--json",
                    "enroll",
                    "--code",
                    &code,
                    "--management",
                    &management,
                    "--node",
                    node,
                ],
            ),
            b"",
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["node"], node);
        assert_eq!(v["group"], "dev-team");
        assert_eq!(v["published"], true, "{v}");
        assert_eq!(v["relay"].as_str(), Some(urls["relay"].as_str()));
        codes.push(code);
    }
    // A used code: refused with its code and the authentication exit status.
    let out = run(
        ctl(
            nodes,
            "n1",
            &[
                "--json",
                "enroll",
                "--code",
                &codes[0],
                "--management",
                &management,
            ],
        ),
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(err["error"]["code"], "enrollment_code_invalid");

    let relay = urls["relay"].clone();
    let listen = tokio::spawn({
        let cmd = ctl(
            nodes,
            "n2",
            &[
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
        ctl(nodes, "n1", &["--relay", &relay, "send", "--to", "n2"]),
        b"hello from n1\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let heard = listen.await.expect("join");
    assert_eq!(heard.status.code(), Some(0), "{}", describe(&heard));
    let text = String::from_utf8_lossy(&heard.stdout);
    assert!(text.contains("--- from n1"), "{text}");
    assert!(text.contains("hello from n1"), "{text}");

    let status = keymesh.signal_and_wait("INT", STOP);
    assert_eq!(status.code(), Some(0), "{}", keymesh.output());
}
