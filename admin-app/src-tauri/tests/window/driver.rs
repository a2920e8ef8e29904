//! tauri-driver and the WebDriver session on the app's window.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt;

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// `tauri-driver` on a free loopback port, started for this test and ended by its handle.
pub struct Driver {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn tauri_driver() -> PathBuf {
    let in_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tauri-driver"))
            .collect::<Vec<_>>()
    });
    let cargo_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/tauri-driver"));
    in_path
        .chain(cargo_bin)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("tauri-driver is not installed: `cargo install tauri-driver --locked` (scripts/test does)")
        })
}

impl Driver {
    /// Start tauri-driver; the app it launches keeps its state in `app_dir`.
    pub fn start(app_dir: &Path) -> Self {
        assert!(
            std::env::var_os("DISPLAY").is_some(),
            "no X display: run the window test under `xvfb-run -a` (scripts/test does)"
        );
        let (port, native) = (free_port(), free_port());
        let child = Command::new(tauri_driver())
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            // Read by the app tauri-driver launches: its own state folder, the file store.
            .env("KEYMESH_ADMIN_DIR", app_dir)
            .env("KEYMESH_ADMIN_STORE", "file")
            .env("XDG_DOWNLOAD_DIR", app_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group: tauri-driver starts WebKitWebDriver, which starts the
            // app; ending the group ends exactly the processes this test started.
            .process_group(0)
            .spawn()
            .expect("spawn tauri-driver");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tauri-driver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The WebDriver session on the app's window.
pub struct App {
    client: Client,
}

fn css(testid: &str) -> String {
    format!("[data-testid='{testid}']")
}

impl App {
    /// Launch the app (tauri-driver starts it) and wait for its first screen.
    pub async fn open(driver: &Driver) -> Self {
        let application = PathBuf::from(env!("CARGO_BIN_EXE_keymesh-admin"));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("wry"));
        caps.insert(
            "tauri:options".into(),
            json!({ "application": application }),
        );
        // tauri-driver answers before the WebKitWebDriver behind it does: a session asked for
        // too early is dropped, so ask again for a while.
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{}", driver.port))
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("WebDriver session not ready yet ({e}); asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("no WebDriver session on the app: {e}"),
            }
        };
        let app = Self { client };
        app.find("server-url").await;
        app
    }

    async fn find(&self, testid: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(&css(testid)))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                self.screenshot("failure").await;
                panic!("[{testid}] never appeared (target/screenshots/admin-failure.png): {e}")
            }
        }
    }

    async fn find_in(&self, parent: &str, testid: &str) -> Element {
        let outer = self.find(parent).await;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = outer.find(Locator::Css(&css(testid))).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "[{testid}] never appeared in [{parent}]"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Click an element.
    pub async fn click(&self, testid: &str) {
        self.find(testid)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click [{testid}]: {e}"));
    }

    /// Click an element inside another.
    pub async fn click_in(&self, parent: &str, testid: &str) {
        let e = self.find_in(parent, testid).await;
        e.click()
            .await
            .unwrap_or_else(|e| panic!("click [{parent}] [{testid}]: {e}"));
    }

    /// Type into a field.
    pub async fn type_into(&self, testid: &str, text: &str) {
        let e = self.find(testid).await;
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into [{testid}]: {e}"));
    }

    /// Type into a field inside another element.
    pub async fn type_in(&self, parent: &str, testid: &str, text: &str) {
        let e = self.find_in(parent, testid).await;
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into [{parent}] [{testid}]: {e}"));
    }

    /// Choose an option of a select by value.
    pub async fn select(&self, testid: &str, value: &str) {
        self.find(testid)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in [{testid}]: {e}"));
    }

    /// An element's text.
    pub async fn text(&self, testid: &str) -> String {
        self.find(testid).await.text().await.unwrap_or_default()
    }

    /// Wait until an element's text contains `part`; its text.
    pub async fn wait_text(&self, testid: &str, part: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(testid).await;
            if text.contains(part) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "[{testid}] never showed {part:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until an element's attribute is `value`.
    pub async fn wait_attr(&self, testid: &str, attr: &str, value: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.find(testid).await.attr(attr).await.ok().flatten();
            if now.as_deref() == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "[{testid}] {attr} never became {value:?} (it is {now:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until an element is present.
    pub async fn wait_present(&self, testid: &str) {
        self.find(testid).await;
    }

    /// Whether `testid` is inside `parent` now.
    pub async fn has_in(&self, parent: &str, testid: &str) -> bool {
        self.find(parent)
            .await
            .find(Locator::Css(&css(testid)))
            .await
            .is_ok()
    }

    /// The test id of the first card that carries the own-request note.
    pub async fn own_card(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            for card in self
                .client
                .find_all(Locator::Css("[data-testid^='approval-']"))
                .await
                .unwrap_or_default()
            {
                if card.find(Locator::Css(&css("own-note"))).await.is_ok() {
                    return card
                        .attr("data-testid")
                        .await
                        .ok()
                        .flatten()
                        .expect("testid");
                }
            }
            assert!(
                Instant::now() < deadline,
                "no card of one's own request appeared"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Call one of the app's commands from inside the window, as its own code does:
    /// `{ok: answer}` or `{err: {code, message}}`.
    pub async fn invoke(&self, command: &str, args: Value) -> Value {
        let script = "const [command, args, done] = arguments; \
            window.__TAURI_INTERNALS__.invoke(command, args) \
              .then((ok) => done({ ok }), (err) => done({ err }));";
        self.client
            .execute_async(script, vec![json!(command), args])
            .await
            .unwrap_or_else(|e| panic!("invoke {command}: {e}"))
    }

    /// Save a screenshot of the window (docs/images/ with KEYMESH_UPDATE_SCREENSHOTS=1).
    pub async fn screenshot(&self, name: &str) {
        tokio::time::sleep(Duration::from_millis(400)).await; // let transitions settle
        let png = self.client.screenshot().await.expect("screenshot");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = if std::env::var_os("KEYMESH_UPDATE_SCREENSHOTS").is_some() {
            root.join("docs/images")
        } else {
            root.join("target/screenshots")
        };
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("admin-{name}.png")), png).expect("write screenshot");
    }

    /// End the session (tauri-driver closes the app).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
