//! `keymesh-bench vault`: token checks against biscuit-auth's own cost, mints per second,
//! unlock time, and authorized secret reads per second over HTTP on loopback.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::body::Bytes;
use base64::{Engine, engine::general_purpose::STANDARD};
use biscuit_auth::{
    AuthorizerBuilder, AuthorizerLimits, Biscuit, PublicKey,
    builder::{Term, fact, string},
};
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use keymesh_core::{
    ServiceContext,
    capability::{
        Op, Right,
        pop::sign_http,
        token::{Claims, KeyRing, Request, Scope, Verifier, covering_patterns, random_key},
    },
    config::{Environment, Source},
    crypto::{self, KdfParams},
    storage::Db,
};
use keymesh_vault::{
    VaultConfig,
    auth::TOKEN_B64,
    revocation::{FeedEntry, Revocations},
    routes::vaults,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{machine, micros_per_op, paired, percentile, process_cpu};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Options.
pub struct Options {
    /// Seconds of HTTP load.
    pub seconds: u64,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
    /// Database for the HTTP run (default: a temporary SQLite file).
    pub database_url: Option<String>,
}

fn claims(rights: &[(&str, Op)]) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Claims {
        token_id: "bench".into(),
        grant: "bench-grant".into(),
        lineage: vec!["bench-grant".into()],
        node: "bench-node".into(),
        group: "bench".into(),
        user: "bench-user".into(),
        node_key: SigningKey::from_bytes(&random_key())
            .verifying_key()
            .to_bytes(),
        rights: rights
            .iter()
            .map(|(r, op)| Right {
                resource: r.parse().expect("pattern"),
                op: *op,
            })
            .collect(),
        expires_at: now + 3600,
        epochs: [(Scope::Node, 0), (Scope::User, 0), (Scope::Group, 0)],
        ancestors: Vec::new(),
        expiry_cap: None,
    }
}

/// What biscuit-auth alone costs for the same decision: parse + verify + authorize.
fn biscuit_alone(token: &[u8], root: PublicKey, resource: &str) {
    let biscuit = Biscuit::from(token, root).expect("valid token");
    let mut builder = AuthorizerBuilder::new()
        .set_limits(AuthorizerLimits {
            max_time: Duration::from_millis(50),
            ..AuthorizerLimits::default()
        })
        .fact(fact("time", &[Term::from(SystemTime::now())]))
        .expect("fact")
        .fact(fact("operation", &[string("read")]))
        .expect("fact")
        .fact(fact("resource", &[string(resource)]))
        .expect("fact");
    for p in covering_patterns(resource) {
        builder = builder
            .fact(fact("resource_pattern", &[string(&p)]))
            .expect("fact");
    }
    let mut authorizer = builder
        .policy("allow if operation($op), resource_pattern($p), right($p, $op)")
        .expect("policy")
        .build(&biscuit)
        .expect("build");
    authorizer.authorize().expect("allowed");
}

/// Revocation state of a realistic size: 10,000 revoked grants.
fn revocations() -> Revocations {
    let entries: Vec<FeedEntry> = (1..=10_000)
        .map(|i| FeedEntry {
            seq: i,
            kind: "grant".into(),
            scope: None,
            subject: format!("revoked-{i}"),
            epoch: None,
            reason: String::new(),
            at_ms: 0,
        })
        .collect();
    Revocations::from_entries(&entries)
}

fn token_rows(out: &mut String) {
    let seed = random_key();
    let ring = KeyRing::new(seed.as_ref(), &[]).expect("ring");
    let root = PublicKey::from_bytes(
        &SigningKey::from_bytes(&seed).verifying_key().to_bytes(),
        biscuit_auth::Algorithm::Ed25519,
    )
    .expect("key");
    let base = ring
        .mint(&claims(&[
            ("db/*", Op::Read),
            ("app/config", Op::Read),
            ("*", Op::List),
        ]))
        .expect("mint");
    let revoked = revocations();
    let resource = "db/password";
    let request = Request {
        op: Op::Read,
        resource,
    };
    out.push_str("| token | biscuit-auth alone (parse + verify + authorize) | Keymesh cold | cold / biscuit (median of 15 interleaved rounds) | Keymesh warm (cached signature; expiry, revocation, rights checked) |\n|---|---|---|---|---|\n");
    for blocks in [0usize, 1, 3] {
        let verifier = Verifier::new(ring.public_keys());
        let mut token = base.clone();
        for i in 0..blocks {
            let prefixes = ["db/", "db/", "db/"];
            let verified = verifier.verify(&token).expect("verify");
            token = verified
                .attenuate(Some(&[Op::Read, Op::List]), Some(prefixes[i]), None)
                .expect("attenuate");
        }
        let (baseline, cold, ratio) = paired(
            15,
            40,
            || biscuit_alone(&token, root, resource),
            || {
                let fresh = Verifier::new(ring.public_keys());
                fresh
                    .authorize(&token, &request, &revoked, SystemTime::now())
                    .expect("allowed");
            },
        );
        verifier
            .authorize(&token, &request, &revoked, SystemTime::now())
            .expect("allowed");
        let warm = micros_per_op(20_000, || {
            verifier
                .authorize(&token, &request, &revoked, SystemTime::now())
                .expect("allowed");
        });
        let label = if blocks == 0 {
            "authority only".to_owned()
        } else {
            format!(
                "{blocks} attenuation block{}",
                if blocks > 1 { "s" } else { "" }
            )
        };
        out.push_str(&format!(
            "| {label} ({} bytes) | {baseline:.1} µs | {cold:.1} µs | {ratio:.2}× | {warm:.1} µs |\n",
            token.len(),
        ));
    }
    let mints = micros_per_op(2000, || {
        ring.mint(&claims(&[("db/*", Op::Read)])).expect("mint");
    });
    out.push_str(&format!("\nMinting (6 fact kinds, 1 check, signed): {mints:.1} µs per token, **{:.0} mints/s** on one core.\n", 1e6 / mints));
}

fn unlock_row(out: &mut String) {
    let params = KdfParams::new_random(65536, 3, 1).expect("params");
    let mut runs: Vec<Duration> = (0..3)
        .map(|_| {
            let started = Instant::now();
            crypto::derive_kek(b"correct horse battery staple", &params).expect("derive");
            started.elapsed()
        })
        .collect();
    runs.sort();
    out.push_str(&format!("\nUnlock with the default Argon2id parameters (64 MiB, t=3, p=1): **{:.0} ms** (median of 3 key derivations; unwrapping the data key adds microseconds).\n", runs[1].as_secs_f64() * 1000.0));
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let value: Value = resp.json().await?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {value}").into());
        }
        Ok(value)
    }
}

const MGMT: &str = "bench-management-key-0123456789abcdef0123";

async fn start_vault(database_url: String) -> Result<(String, CancellationToken), BoxError> {
    let source = Source::from_env([
        ("VAULT_DATABASE_URL", database_url),
        ("VAULT_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "VAULT_MASTER_KEY",
            "bench-master-key-0123456789abcdef0123456789".to_owned(),
        ),
        ("MANAGEMENT_API_KEY", MGMT.to_owned()),
        (
            "VAULT_FEED_API_KEY",
            "bench-feed-key-0123456789abcdef0123456789".to_owned(),
        ),
        ("RATE_LIMIT_IP_PER_SECOND", "1000000".to_owned()),
        ("RATE_LIMIT_IP_BURST", "1000000".to_owned()),
        ("RATE_LIMIT_PRINCIPAL_PER_SECOND", "1000000".to_owned()),
        ("RATE_LIMIT_PRINCIPAL_BURST", "1000000".to_owned()),
        ("LOG_LEVEL", "warn".to_owned()),
    ]);
    let config = VaultConfig::load(&source, Environment::Development)?;
    let shutdown = CancellationToken::new();
    let db = Db::open_for(
        keymesh_core::config::ServiceName::Vault,
        &config.service.database_url,
    )
    .await?;
    let ctx = ServiceContext::with_db(config.service.clone(), db, shutdown.clone());
    let (router, _state) = keymesh_vault::router(ctx, config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(keymesh_core::serve(
        listener,
        router,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    Ok((format!("http://{addr}"), shutdown))
}

fn get(path: &str) -> axum::http::request::Builder {
    axum::http::Request::get(path).header("host", "127.0.0.1")
}

/// Builds the next request of a load task (signing its proof, when it has one).
type MakeRequest = Arc<dyn Fn() -> axum::http::Request<Empty<Bytes>> + Send + Sync>;

/// One keep-alive HTTP/1 connection: no pool, no per-request URL parsing, so the load
/// generator (on the same cores as the server) takes as little CPU as it can.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Send one request and read the whole answer; whether it succeeded.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    request: axum::http::Request<Empty<Bytes>>,
) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    match sender.send_request(request).await {
        Ok(response) => {
            let ok = response.status().is_success();
            ok && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// What a load run measured.
struct Run {
    rate: f64,
    latencies: Vec<Duration>,
    failures: u64,
    /// Process CPU (server and load generator, all threads) per successful request, µs.
    cpu_us: Option<f64>,
}

/// Drive `concurrency` connections for `seconds`, each sending `make()`'s requests back to back.
async fn load(
    addr: SocketAddr,
    concurrency: usize,
    seconds: u64,
    make: MakeRequest,
) -> Result<Run, BoxError> {
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        senders.push(connect(addr).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (stop, failures, make) = (stop.clone(), failures.clone(), make.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if exchange(&mut sender, make()).await {
                        latencies.push(t.elapsed());
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    all.sort();
    Ok(Run {
        rate: all.len() as f64 / elapsed,
        cpu_us: cpu.map(|c| c.as_secs_f64() * 1e6 / all.len().max(1) as f64),
        latencies: all,
        failures: failures.load(Ordering::Relaxed),
    })
}

async fn http_rows(out: &mut String, options: &Options) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let url = options
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("vault.db").display()));
    let backend = if url.starts_with("sqlite") {
        "SQLite (WAL, synchronous=FULL)"
    } else {
        "PostgreSQL"
    };
    let (base, shutdown) = start_vault(url).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()?;
    let client = Client {
        http: http.clone(),
        base: base.clone(),
    };

    // Set up: a passphrase vault, unlocked; a node with read rights; one secret.
    let group = "bench";
    let pass = b"correct horse battery staple";
    let c = client
        .json(
            reqwest::Method::POST,
            &format!("/v1/vaults/{group}/ceremonies"),
            Some(MGMT),
            Some(json!({ "kind": "init" })),
        )
        .await?;
    let seal = |c: &Value| -> Result<String, BoxError> {
        let public: [u8; 32] = hex::decode(c["public_key"].as_str().unwrap_or_default())?
            .try_into()
            .map_err(|_| "key")?;
        Ok(STANDARD.encode(crypto::hpke_seal(
            &public,
            vaults::INFO_PASSPHRASE,
            group.as_bytes(),
            pass,
        )?))
    };
    client
        .json(
            reqwest::Method::POST,
            &format!(
                "/v1/ceremonies/{}/init",
                c["ceremony_id"].as_str().unwrap_or_default()
            ),
            Some(MGMT),
            Some(json!({ "mode": "passphrase", "sealed_passphrase": seal(&c)? })),
        )
        .await?;
    let c = client
        .json(
            reqwest::Method::POST,
            &format!("/v1/vaults/{group}/ceremonies"),
            Some(MGMT),
            Some(json!({ "kind": "unlock" })),
        )
        .await?;
    client
        .json(
            reqwest::Method::POST,
            &format!(
                "/v1/ceremonies/{}/passphrase",
                c["ceremony_id"].as_str().unwrap_or_default()
            ),
            Some(MGMT),
            Some(json!({ "sealed_passphrase": seal(&c)? })),
        )
        .await?;
    let key = SigningKey::from_bytes(&random_key());
    client.json(reqwest::Method::PUT, "/v1/nodes/bench-node", Some(MGMT), Some(json!({ "group": group, "user": "u", "public_key": hex::encode(key.verifying_key().to_bytes()), "ceiling": "write" }))).await?;
    let minted = client.json(reqwest::Method::POST, "/v1/tokens", Some(MGMT), Some(json!({ "node_id": "bench-node", "rights": [{ "resource": "*", "op": "read" }, { "resource": "*", "op": "write" }] }))).await?;
    let token = minted["token"].as_str().unwrap_or_default().to_owned();
    let raw = TOKEN_B64.decode(&token)?;
    let path = format!("/v1/vaults/{group}/secrets/db/password");
    let body = json!({ "value": "s3cr3t-value-of-a-realistic-length-0123456789" }).to_string();
    let proof = sign_http(&key, "PUT", &path, body.as_bytes(), &raw, SystemTime::now());
    let put = http
        .put(format!("{base}{path}"))
        .bearer_auth(&token)
        .header("keymesh-proof", proof)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !put.status().is_success() {
        return Err(format!("seeding the secret failed: {}", put.status()).into());
    }

    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let (c, secs) = (options.concurrency, options.seconds);

    // Baseline: the same server's unauthenticated /health/live.
    let live: MakeRequest = Arc::new(|| get("/health/live").body(Empty::new()).unwrap_or_default());
    let live = load(addr, c, secs, live).await?;

    // Authorized reads: token + a fresh proof of possession signed per request, audited.
    let authorization = format!("Bearer {token}");
    let signer = Arc::new((key, raw, path.clone(), authorization.clone()));
    let read: MakeRequest = Arc::new(move || {
        let (key, raw, path, authorization) = &*signer;
        let proof = sign_http(key, "GET", path, b"", raw, SystemTime::now());
        get(path)
            .header("authorization", authorization.as_str())
            .header("keymesh-proof", proof)
            .body(Empty::new())
            .unwrap_or_default()
    });
    let signed = load(addr, c, secs, read.clone()).await?;

    // The same reads with the proofs signed before the timed window: the server's work is
    // unchanged (every proof is still verified and recorded), only the client's signing leaves
    // the shared cores. Enough proofs for 15,000 reads/s over at most 30 s (bounded memory; a
    // proof older than the 60 s window would be refused); past them, sign on the fly.
    let presigned: Vec<_> = (0..secs.min(30) * 15_000).map(|_| read()).collect();
    let next = Arc::new((std::sync::Mutex::new(presigned), read));
    let read_presigned: MakeRequest = Arc::new(move || {
        let popped = next.0.lock().map(|mut v| v.pop()).unwrap_or_default();
        popped.unwrap_or_else(|| (next.1)())
    });
    let presigned = load(addr, c, secs, read_presigned).await?;
    shutdown.cancel();

    let row = |label: &str, run: &Run| {
        let ms = |p: f64| percentile(&run.latencies, p).as_secs_f64() * 1000.0;
        let cpu = run
            .cpu_us
            .map_or("n/a".to_owned(), |us| format!("{us:.0} µs"));
        format!(
            "| {label} | **{:.0}** | {cpu} | {:.2} ms | {:.2} ms | {} |\n",
            run.rate,
            ms(0.5),
            ms(0.99),
            run.failures
        )
    };
    out.push_str(&format!(
        "\nHTTP/1.1 keep-alive on loopback, {c} connections for {secs} s each, load generator in the same process on the same cores, vault on {backend}:\n\n\
         | request | requests/s | CPU per request (server + load generator) | p50 | p99 | failures |\n|---|---|---|---|---|---|\n"
    ));
    out.push_str(&row(
        "baseline: `GET /health/live` (no auth, no crypto)",
        &live,
    ));
    out.push_str(&row("authorized secret read (token + proof of possession, decrypt, audit record committed), client signs each proof in the window", &signed));
    out.push_str(&row(
        "the same reads, proofs signed by the client before the window",
        &presigned,
    ));
    Ok(())
}

/// Run every vault benchmark and print the Markdown report.
pub async fn run(options: Options) -> Result<(), BoxError> {
    let mut out = format!("### Vault — {}\n\n", machine());
    eprintln!("keymesh-bench vault: token checks...");
    token_rows(&mut out);
    eprintln!("keymesh-bench vault: unlock...");
    unlock_row(&mut out);
    eprintln!(
        "keymesh-bench vault: HTTP reads for {} s...",
        options.seconds * 2
    );
    http_rows(&mut out, &options).await?;
    println!("{out}");
    Ok(())
}
