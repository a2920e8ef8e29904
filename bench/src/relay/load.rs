//! The load generator: sender/receiver pairs over the relay's WebSocket protocol with opaque
//! payloads, and idle connections.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, SinkExt, StreamExt, stream::SplitStream};
use keymesh_core::capability::pop::sign_challenge;
use keymesh_relay::frame::{ClientFrame, Limits, ServerFrame};
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use super::{BoxError, stack::Node};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open a socket and complete the handshake as `node`. `?node=` names the node to the
/// in-memory baseline, which checks no token; the relay ignores it.
pub async fn connect(ws_url: &str, node: &Node) -> Result<(Socket, Limits), BoxError> {
    let mut request = format!("{ws_url}?node={}", node.id).into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("keymesh.v1"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let ServerFrame::Challenge { nonce, .. } = next_frame(&mut ws).await? else {
        return Err("expected a challenge".into());
    };
    let hello = ClientFrame::Hello {
        token: node.token.clone(),
        proof: sign_challenge(&node.key, &nonce, &node.token),
        resume_after: 0,
    };
    ws.send(Message::Binary(hello.encode().into())).await?;
    match next_frame(&mut ws).await? {
        ServerFrame::Ready { limits, .. } => Ok((ws, limits)),
        ServerFrame::Error { code, message } => {
            Err(format!("handshake refused: {code}: {message}").into())
        }
        other => Err(format!("expected ready, got {other:?}").into()),
    }
}

async fn next_frame(ws: &mut Socket) -> Result<ServerFrame, BoxError> {
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = ws.next().await {
            if let Message::Binary(b) = message? {
                return Ok(ServerFrame::decode(&b)?);
            }
        }
        Err::<_, BoxError>("the connection closed".into())
    });
    wait.await.map_err(|_| "no frame within 30 s")?
}

/// How senders send.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// As fast as the relay takes them, at most this many per pair sent and not yet delivered.
    Max { outstanding: usize },
    /// This many messages per second over all pairs, evenly spread (latency is measured from
    /// each message's scheduled time, so a stalled sender cannot hide queueing).
    Rate { per_second: u64 },
}

/// One measured run.
#[derive(Debug)]
pub struct Run {
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Measured window.
    pub measure: Duration,
    /// Payload bytes per message (at least 16: the send time and the run are in the first 16).
    pub payload: usize,
    /// How to send.
    pub pace: Pace,
}

/// What a run measured inside its window.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages delivered to receivers.
    pub delivered: u64,
    /// Messages the receivers acknowledged.
    pub acked: u64,
    /// Sends the relay refused (any code) or answered `duplicate` (none is expected).
    pub refused: u64,
    /// The first refusal's code.
    pub refusal: Option<String>,
    /// Messages from an earlier run delivered during this one (acknowledged, not measured).
    pub stale: u64,
    /// End-to-end latencies (send → delivery), microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

/// Counters the tasks share.
#[derive(Debug, Default)]
struct Tally {
    delivered: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    refusal: std::sync::OnceLock<String>,
    stale: AtomicU64,
}

/// The clock the payload stamps are read against, and the measured window on it.
#[derive(Clone, Copy, Debug)]
struct Clock {
    origin: Instant,
    from_ns: u64,
    to_ns: u64,
    /// Written into every payload: a message left over from an earlier run (its stamp is on
    /// another clock) is acknowledged but not measured.
    run: u64,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn measuring(&self, at_ns: u64) -> bool {
        (self.from_ns..self.to_ns).contains(&at_ns)
    }
}

/// Drive `pairs` (sender, receiver) through the relay at `ws_url`.
pub async fn run(ws_url: &str, pairs: &[(Node, Node)], run: &Run) -> Result<Outcome, BoxError> {
    let mut receivers = Vec::new();
    for (_, receiver) in pairs {
        receivers.push(connect(ws_url, receiver).await?);
    }
    let mut senders = Vec::new();
    for (sender, _) in pairs {
        senders.push(connect(ws_url, sender).await?.0);
    }
    let warmup_ns = u64::try_from(run.warmup.as_nanos())?;
    let clock = Clock {
        origin: Instant::now(),
        from_ns: warmup_ns,
        to_ns: warmup_ns + u64::try_from(run.measure.as_nanos())?,
        run: u64::from_le_bytes(
            keymesh_core::capability::token::random_key()[..8]
                .try_into()
                .map_err(|_| "random bytes")?,
        ),
    };
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    let count = pairs.len() as u64;
    for (index, (((_, receiver), (ws, limits)), sender_ws)) in
        pairs.iter().zip(receivers).zip(senders).enumerate()
    {
        let outstanding = match run.pace {
            Pace::Max { outstanding } => outstanding,
            Pace::Rate { .. } => 1 << 20,
        };
        let permits = Arc::new(Semaphore::new(outstanding));
        tasks.push(tokio::spawn(receive(
            ws,
            limits.window,
            clock,
            tally.clone(),
            permits.clone(),
        )));
        let send = Sender {
            to: receiver.id.clone(),
            payload: run.payload.max(16),
            pace: run.pace,
            phase: index as u64,
            pairs: count,
            clock,
            tally: tally.clone(),
            permits,
        };
        tasks.push(tokio::spawn(send.run(sender_ws)));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    latencies.sort_unstable();
    Ok(Outcome {
        delivered: tally.delivered.load(Ordering::Relaxed),
        acked: tally.acked.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
        refusal: tally.refusal.get().cloned(),
        stale: tally.stale.load(Ordering::Relaxed),
        latencies_us: latencies,
    })
}

struct Sender {
    to: String,
    payload: usize,
    pace: Pace,
    phase: u64,
    pairs: u64,
    clock: Clock,
    tally: Arc<Tally>,
    permits: Arc<Semaphore>,
}

impl Sender {
    /// Send until the window ends; returns no latencies (the receiver measures).
    async fn run(self, ws: Socket) -> Result<Vec<u32>, BoxError> {
        let (mut sink, stream) = ws.split();
        let answers = tokio::spawn(read_answers(
            stream,
            self.tally.clone(),
            self.permits.clone(),
        ));
        let interval_ns = match self.pace {
            Pace::Rate { per_second } => (1_000_000_000 * self.pairs) / per_second.max(1),
            Pace::Max { .. } => 0,
        };
        let mut next_ns = interval_ns * self.phase / self.pairs;
        // Ids unique across runs: the relay answers a reused id `duplicate` and stores nothing.
        let run_id: [u8; 8] = keymesh_core::capability::token::random_key()[..8]
            .try_into()
            .map_err(|_| "random bytes")?;
        let mut counter = 0u64;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&run_id);
        let mut payload = vec![0x5a; self.payload];
        while self.clock.now_ns() < self.clock.to_ns {
            let stamp = if interval_ns > 0 {
                let at = self.clock.origin + Duration::from_nanos(next_ns);
                tokio::time::sleep_until(at.into()).await;
                let stamp = next_ns;
                next_ns += interval_ns;
                stamp
            } else {
                self.clock.now_ns()
            };
            // Wait for room (closed-loop pacing), flushing what is batched first.
            let permit = match self.permits.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    sink.flush().await?;
                    tokio::select! {
                        p = self.permits.acquire() => p?,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            permit.forget();
            counter += 1;
            id[8..].copy_from_slice(&counter.to_be_bytes());
            payload[..8].copy_from_slice(&stamp.to_le_bytes());
            payload[8..16].copy_from_slice(&self.clock.run.to_le_bytes());
            let frame = ClientFrame::Send {
                id,
                to: self.to.clone(),
                ttl_secs: 0,
                enc: vec![0; 32],
                payload: payload.clone(),
            };
            sink.feed(Message::Binary(frame.encode().into())).await?;
            if interval_ns > 0 || counter.is_multiple_of(16) {
                sink.flush().await?;
            }
        }
        sink.flush().await?;
        // Let the last answers arrive, then close.
        tokio::time::sleep(Duration::from_millis(500)).await;
        answers.abort();
        let _ = sink.close().await;
        Ok(Vec::new())
    }
}

async fn read_answers(mut stream: SplitStream<Socket>, tally: Arc<Tally>, permits: Arc<Semaphore>) {
    while let Some(Ok(message)) = stream.next().await {
        let Message::Binary(b) = message else {
            continue;
        };
        match ServerFrame::decode(&b) {
            Ok(ServerFrame::Refused { code, .. }) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                let _ = tally.refusal.set(code);
                // The message will never arrive: give its room back.
                permits.add_permits(1);
            }
            Ok(ServerFrame::Accepted {
                duplicate: true, ..
            }) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                let _ = tally.refusal.set("duplicate".into());
                permits.add_permits(1);
            }
            _ => {}
        }
    }
}

/// Receive and acknowledge until the window has ended; returns the latencies measured in it.
async fn receive(
    mut ws: Socket,
    window: u32,
    clock: Clock,
    tally: Arc<Tally>,
    permits: Arc<Semaphore>,
) -> Result<Vec<u32>, BoxError> {
    let mut latencies = Vec::new();
    let (mut delivered, mut acked) = (0u64, 0u64);
    let mut unacked = 0u64;
    let ack_every = u64::from(window / 2).max(1);
    let drain_until = clock.to_ns + 1_000_000_000;
    loop {
        // `Some(m)`: the stream yielded `m`; `None`: nothing arrived.
        let mut next = tokio::select! {
            m = ws.next() => Some(m),
            () = tokio::time::sleep(Duration::from_millis(100)) => None,
        };
        loop {
            match next {
                Some(Some(Ok(Message::Binary(b)))) => {
                    if let ServerFrame::Deliver { seq, payload, .. } = ServerFrame::decode(&b)? {
                        let now = clock.now_ns();
                        let field = |at| read_u64(&payload, at);
                        if field(8) == Some(clock.run) {
                            if clock.measuring(now) {
                                let stamp = field(0).unwrap_or(now);
                                tally.delivered.fetch_add(1, Ordering::Relaxed);
                                latencies.push(
                                    u32::try_from(now.saturating_sub(stamp) / 1000)
                                        .unwrap_or(u32::MAX),
                                );
                            }
                            permits.add_permits(1);
                        } else {
                            tally.stale.fetch_add(1, Ordering::Relaxed);
                        }
                        delivered = seq;
                        unacked += 1;
                    }
                }
                Some(Some(Ok(_))) => {}
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) => return Err("the relay closed a receiver's connection".into()),
                None => break,
            }
            if unacked >= ack_every {
                break;
            }
            next = ws.next().now_or_never();
        }
        if delivered > acked {
            ws.send(Message::Binary(
                ClientFrame::Ack { through: delivered }.encode().into(),
            ))
            .await?;
            if clock.measuring(clock.now_ns()) {
                tally.acked.fetch_add(unacked, Ordering::Relaxed);
            }
            acked = delivered;
            unacked = 0;
        }
        if clock.now_ns() > drain_until {
            let _ = ws.close(None).await;
            return Ok(latencies);
        }
    }
}

/// The little-endian `u64` at `at` in a payload (where the bench writes its send time and run).
pub fn read_u64(payload: &[u8], at: usize) -> Option<u64> {
    payload
        .get(at..at.checked_add(8)?)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
}

/// Open a connection for each node and hold them all; returns the sockets.
pub async fn hold_idle(ws_url: &str, nodes: &[Node]) -> Result<Vec<Socket>, BoxError> {
    let mut sockets = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(64) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|n| {
                let (url, n) = (ws_url.to_owned(), n.clone());
                tokio::spawn(async move { connect(&url, &n).await })
            })
            .collect();
        for task in tasks {
            sockets.push(task.await.map_err(|e| e.to_string())??.0);
        }
    }
    Ok(sockets)
}
