//! `docs/metrics.md`, generated from what the three services really export: the test starts
//! them (vault, then a relay and management that follow it over HTTPS trusting a private CA,
//! as in production), scrapes `/metrics`, and renders every family with its type, labels and
//! help. It fails when the committed page drifts, and when a family shows no sample (its
//! labels could not be documented): label sets that are closed are created at zero.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use keymesh_core::config::{Environment, ServiceName, Source};
use tokio_util::sync::CancellationToken;

use crate::{
    load_service,
    services::{Running, start},
};

/// One metric family as scraped.
#[derive(Debug, Default, PartialEq)]
struct Family {
    kind: String,
    help: String,
    labels: Vec<String>,
    samples: usize,
}

/// Families of one exposition, by name as PromQL writes it (`x_total` for counters).
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            kinds.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.insert(name.to_owned(), help.to_owned());
        }
    }
    for (name, kind) in &kinds {
        let shown = match kind.as_str() {
            "counter" => format!("{name}_total"),
            _ => name.clone(),
        };
        families.insert(
            shown,
            Family {
                kind: kind.clone(),
                help: helps.get(name).cloned().unwrap_or_default(),
                ..Family::default()
            },
        );
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.split(' ').next().unwrap_or_default();
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| kinds.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let Some(entry) = families.get_mut(family) else {
            panic!("a sample of no declared family: {line}");
        };
        entry.samples += 1;
        for pair in labels.trim_end_matches('}').split(',') {
            let label = pair.split('=').next().unwrap_or_default();
            if !label.is_empty()
                && label != "service"
                && label != "le"
                && !entry.labels.iter().any(|l| l == label)
            {
                entry.labels.push(label.to_owned());
            }
        }
    }
    families
}

fn render(scraped: &BTreeMap<ServiceName, BTreeMap<String, Family>>) -> String {
    let mut out = String::from(
        "# Metrics\n\n<!-- Generated from the metrics the three services export \
         (src/metrics_docs.rs starts them and scrapes /metrics); `cargo test` fails when this \
         file drifts. Regenerate with `KEYMESH_UPDATE_DOCS=1 cargo test -p keymesh --bins`. -->\n\n\
         Every service serves Prometheus metrics at `GET /metrics` (OpenMetrics text; behind \
         `Authorization: Bearer $METRICS_TOKEN` when `METRICS_TOKEN` is set). Every series carries \
         `service` (`management`, `vault` or `relay`). Names follow Prometheus conventions: base \
         units (seconds, bytes), counters end in `_total`, histograms expose `_bucket`, `_sum` \
         and `_count`. Label values from a closed set (results, reasons, tasks, operations) exist \
         from the start at zero, so `rate()` and alerts see them before the first event.\n\n\
         The alert rules (`deploy/prometheus/keymesh.rules.yml`) and dashboards \
         (`deploy/grafana/`) use only these names; `scripts/metrics-crosscheck` checks that \
         against real running services in CI.\n",
    );
    let all: Vec<&String> = scraped[&ServiceName::Vault]
        .keys()
        .filter(|name| {
            ServiceName::ALL
                .iter()
                .all(|s| scraped[s].contains_key(*name))
        })
        .collect();
    let table = |out: &mut String, title: &str, rows: Vec<(&String, &Family)>| {
        let _ = write!(
            out,
            "\n## {title}\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n"
        );
        for (name, family) in rows {
            let labels = if family.labels.is_empty() {
                "—".to_owned()
            } else {
                family
                    .labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "| `{name}` | {} | {labels} | {} |",
                family.kind,
                family.help.trim_end_matches('.')
            );
        }
    };
    table(
        &mut out,
        "Every service",
        all.iter()
            .map(|name| (*name, &scraped[&ServiceName::Vault][*name]))
            .collect(),
    );
    for service in ServiceName::ALL {
        let own = scraped[&service]
            .iter()
            .filter(|(name, _)| !all.contains(name))
            .collect();
        let title = match service {
            ServiceName::Management => "Management",
            ServiceName::Vault => "Vault",
            ServiceName::Relay => "Relay",
        };
        table(&mut out, title, own);
    }
    out
}

/// A private CA and a certificate it signed for 127.0.0.1: (ca, cert, key) file paths.
fn certificates(dir: &Path) -> [String; 3] {
    let pki = keymesh_testkit::Pki::new(dir);
    [&pki.ca, &pki.cert, &pki.key].map(|p| keymesh_testkit::Pki::text(p))
}

async fn start_service(name: ServiceName, env: &[(String, String)]) -> Running {
    let source = Source::from_env(env.iter().cloned());
    let service = load_service(name, &source, Environment::Development).expect("config");
    start(service, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"))
}

#[tokio::test]
async fn metrics_docs_are_in_sync_with_what_the_services_export() {
    let dir = tempfile::tempdir().expect("dir");
    let [ca, cert, key] = certificates(dir.path());
    let key_of = |c: char| c.to_string().repeat(64);
    let db = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let mut env: Vec<(String, String)> = [
        ("KEYMESH_ENV", "development".to_owned()),
        ("LOG_LEVEL", "off".to_owned()),
        ("TLS_CA_FILE", ca.clone()),
        ("VAULT_LISTEN", "127.0.0.1:0".to_owned()),
        ("VAULT_DATABASE_URL", db("vault.db")),
        ("VAULT_MASTER_KEY", key_of('a')),
        ("MANAGEMENT_API_KEY", key_of('b')),
        ("VAULT_FEED_API_KEY", key_of('c')),
        ("VAULT_TLS_CERT_FILE", cert.clone()),
        ("VAULT_TLS_KEY_FILE", key.clone()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec();
    let vault = start_service(ServiceName::Vault, &env).await;
    let vault_url = vault.url.clone();
    env.extend(
        [
            ("RELAY_LISTEN", "127.0.0.1:0".to_owned()),
            ("RELAY_DATABASE_URL", db("relay.db")),
            ("RELAY_VAULT_URL", vault_url.clone()),
            ("RELAY_FEED_API_KEY", key_of('c')),
            ("RELAY_MANAGEMENT_API_KEY", key_of('d')),
            ("RELAY_TLS_CERT_FILE", cert.clone()),
            ("RELAY_TLS_KEY_FILE", key.clone()),
            ("MANAGEMENT_LISTEN", "127.0.0.1:0".to_owned()),
            ("MANAGEMENT_DATABASE_URL", db("management.db")),
            ("MANAGEMENT_SECRET_KEY", key_of('e')),
            ("MANAGEMENT_VAULT_URL", vault_url),
            ("MANAGEMENT_VAULT_API_KEY", key_of('b')),
            ("MANAGEMENT_TLS_CERT_FILE", cert),
            ("MANAGEMENT_TLS_KEY_FILE", key),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let relay = start_service(ServiceName::Relay, &env).await;
    assert!(relay.url.starts_with("https://"), "{}", relay.url);
    env.push(("MANAGEMENT_RELAY_URL".to_owned(), relay.url.clone()));
    env.push(("MANAGEMENT_RELAY_API_KEY".to_owned(), key_of('d')));
    let management = start_service(ServiceName::Management, &env).await;

    let cas = keymesh_core::tls::TrustedCas::load(Path::new(&ca)).expect("ca");
    let http = keymesh_core::tls::client_builder(Some(&cas))
        .build()
        .expect("client");
    // The relay and management follow the vault over HTTPS: both become ready once they
    // have read its revocation feed through the private CA.
    for running in [&relay, &management] {
        let ready = format!("{}/health/ready", running.url);
        let mut answered = None;
        for _ in 0..100 {
            answered = Some(http.get(&ready).send().await.expect("ready").status());
            if answered == Some(reqwest::StatusCode::OK) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(answered, Some(reqwest::StatusCode::OK), "{}", running.name);
    }
    let mut scraped = BTreeMap::new();
    for running in [&management, &vault, &relay] {
        let url = format!("{}/metrics", running.url);
        // Twice: the second scrape sees the first counted in the request metrics.
        http.get(&url).send().await.expect("scrape");
        let text = http
            .get(&url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let version = format!("{}/version", running.url);
        let body: serde_json::Value = http
            .get(&version)
            .send()
            .await
            .expect("version")
            .json()
            .await
            .expect("json");
        assert_eq!(body["service"], running.name.as_str());
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        scraped.insert(running.name, parse(&text));
    }
    for (service, families) in &scraped {
        let silent: Vec<&String> = families
            .iter()
            .filter(|(_, f)| f.samples == 0)
            .map(|(name, _)| name)
            .collect();
        assert!(
            silent.is_empty(),
            "{service}: families with no sample (create their label values at zero): {silent:?}"
        );
    }
    keymesh_core::docs::assert_doc_in_sync("docs/metrics.md", &render(&scraped));
}

#[test]
fn the_exposition_parser_maps_samples_to_their_families() {
    let text = "# HELP a_things Things.\n# TYPE a_things counter\n\
                a_things_total{service=\"relay\",reason=\"x\"} 1\n\
                # HELP lat Latency.\n# TYPE lat histogram\n\
                lat_bucket{service=\"relay\",le=\"0.1\"} 1\nlat_sum{service=\"relay\"} 1\n\
                lat_count{service=\"relay\"} 1\n# EOF\n";
    let families = parse(text);
    assert_eq!(families["a_things_total"].labels, ["reason"]);
    assert_eq!(families["lat"].samples, 3);
    assert_eq!(families["lat"].kind, "histogram");
}
