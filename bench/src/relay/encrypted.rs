//! The full node path through `keymesh-client`: every message HPKE-sealed by its sender and
//! opened (and acknowledged) by its receiver in the load generator's process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use keymesh_client::{
    keys::NodeKeys,
    relay::{ClientOptions, RelayClient},
};

use super::{
    BoxError, ProcSample,
    load::{self, Outcome},
    sample, stack,
};

/// Run `pairs` client pairs for `warmup` + `measure`, each sender keeping `in_flight` sends
/// outstanding.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    relay_url: &str,
    relay_pid: Option<&str>,
    vault_url: &str,
    management_key: &str,
    pairs: usize,
    in_flight: usize,
    payload: usize,
    (warmup, measure): (Duration, Duration),
) -> Result<(Outcome, Option<(ProcSample, ProcSample)>, Option<Duration>), BoxError> {
    let run = hex::encode(&keymesh_core::capability::token::random_key()[..4]);
    let mut keys = Vec::new();
    for i in 0..pairs {
        keys.push(NodeKeys::generate(&format!("enc-{run}-send-{i}"))?);
        keys.push(NodeKeys::generate(&format!("enc-{run}-recv-{i}"))?);
    }
    let public: Vec<(String, [u8; 32])> = keys
        .iter()
        .map(|k| (k.node().to_owned(), k.identity_public()))
        .collect();
    let tokens = stack::register(vault_url, management_key, &public).await?;
    let options = ClientOptions {
        auto_ack: true,
        ..ClientOptions::default()
    };
    let mut clients = Vec::new();
    for (k, token) in keys.into_iter().zip(tokens) {
        let client = Arc::new(RelayClient::new(k, token, relay_url, options.clone())?);
        client.publish_keys().await?;
        client.connect().await?;
        clients.push(client);
    }
    let origin = Instant::now();
    let (from, to) = (warmup, warmup + measure);
    let pid = relay_pid.map(str::to_owned);
    let sample_server = move || sample(pid.as_deref()?);
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let (before, generator) = (sample_server(), sample("self"));
        tokio::time::sleep(measure).await;
        (
            before.zip(sample_server()),
            generator.zip(sample("self")).map(|(b, a)| a.cpu - b.cpu),
        )
    });
    let delivered = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for pair in clients.chunks(2) {
        let (sender, receiver) = (pair[0].clone(), pair[1].clone());
        let to_node = receiver.keys().node().to_owned();
        let delivered = delivered.clone();
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let got = tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await;
                let now = origin.elapsed();
                match got {
                    Ok(m) => {
                        let m = m?;
                        let stamp = load::read_u64(&m.plaintext, 0).unwrap_or(0);
                        if (from..to).contains(&now) {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            let sent = Duration::from_nanos(stamp);
                            latencies.push(
                                u32::try_from(now.saturating_sub(sent).as_micros())
                                    .unwrap_or(u32::MAX),
                            );
                        }
                    }
                    Err(_) if now > to + Duration::from_secs(1) => break,
                    Err(_) => {}
                }
            }
            receiver.close().await;
            Ok::<_, BoxError>(latencies)
        }));
        for _ in 0..in_flight {
            let (sender, to_node) = (sender.clone(), to_node.clone());
            senders.push(tokio::spawn(async move {
                let mut plaintext = vec![0x5a; payload.max(8)];
                while origin.elapsed() < to {
                    let stamp = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    plaintext[..8].copy_from_slice(&stamp.to_le_bytes());
                    sender.send(&to_node, &plaintext).await?;
                }
                Ok::<_, BoxError>(())
            }));
        }
    }
    for task in senders {
        task.await.map_err(|e| e.to_string())??;
    }
    let mut latencies = Vec::new();
    for task in receivers {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    latencies.sort_unstable();
    let delivered = delivered.load(Ordering::Relaxed);
    let (server, generator) = sampler.await.map_err(|e| e.to_string())?;
    Ok((
        Outcome {
            delivered,
            acked: delivered,
            refused: 0,
            refusal: None,
            stale: 0,
            latencies_us: latencies,
        },
        server,
        generator,
    ))
}
