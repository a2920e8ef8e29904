//! Starting and stopping the real binary.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A running `keymesh` process whose stderr banner and stdout logs are collected.
pub struct Keymesh {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Keymesh {
    /// Start `keymesh ARGS` in `dir` with exactly `env` (plus PATH), capturing output.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(crate::keymesh_binary());
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn keymesh");
        let (tx, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Services log `"message":"listening","addr":"127.0.0.1:PORT"`: the base URL.
    pub fn wait_for_listen(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if let Some(line) = output
                .lines()
                .find(|l| l.contains(r#""message":"listening""#))
            {
                let value: serde_json::Value = serde_json::from_str(line).expect("json log line");
                return format!("http://{}", value["addr"].as_str().expect("addr"));
            }
            assert!(Instant::now() < deadline, "no listening line:\n{output}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for the dev banner and return each service's base URL.
    pub fn wait_for_urls(&mut self, count: usize, timeout: Duration) -> BTreeMap<String, String> {
        let deadline = Instant::now() + timeout;
        let mut urls = BTreeMap::new();
        while urls.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "keymesh did not print {count} service URLs in time:\n{}",
                    self.output()
                )
            });
            self.seen.push(line.clone());
            let mut words = line.split_whitespace();
            if let (Some(name), Some(url)) = (words.next(), words.next())
                && (url.starts_with("http://") || url.starts_with("https://"))
            {
                urls.insert(name.to_owned(), url.to_owned());
            }
        }
        urls
    }

    /// Send a signal by name (`INT`, `TERM`) and wait for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        self.wait(timeout)
    }

    /// Wait for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.drain();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keymesh did not exit in time:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process gets no chance to flush or close anything.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("SIGKILL keymesh");
        let _ = self.child.wait();
        self.drain();
    }

    /// Everything printed so far.
    /// Wait until `url`'s `/health/ready` answers 200, as a load balancer would (a relay, for
    /// one, is not ready until it has read the vault's revocation feed).
    pub async fn wait_ready(&mut self, url: &str) {
        self.wait_ready_with(&reqwest::Client::new(), url).await;
    }

    /// [`Keymesh::wait_ready`] with a client of the caller's (one that trusts a private CA).
    pub async fn wait_ready_with(&mut self, http: &reqwest::Client, url: &str) {
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{url}/health/ready")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{url} was not ready in 15 s:\n{}", self.output());
    }

    pub fn output(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    fn drain(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }
}

impl Drop for Keymesh {
    fn drop(&mut self) {
        // Only the process this test started, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
