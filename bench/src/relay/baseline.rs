//! The same-run baseline: a bare in-memory relay speaking the same frames over the same
//! WebSocket stack (axum / tungstenite), with the same window and cumulative acks, and nothing
//! else: no token or proof checks, no storage, no limits, no metrics. Keymesh's figures are read
//! against it. Run by `keymesh-bench relay-baseline --listen ADDR` (started by the bench).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Router,
    body::Bytes,
    extract::{
        Query, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use futures_util::SinkExt;
use keymesh_relay::frame::{ClientFrame, DeliverRef, Limits, ServerFrame, encode_deliver};
use serde::Deserialize;
use tokio::sync::Notify;

use super::BoxError;

/// The window the baseline announces and keeps (the relay's default).
const WINDOW: usize = 256;

#[derive(Default)]
struct Mailbox {
    next_seq: u64,
    /// Unacknowledged messages: (seq, encoded `deliver` frame).
    queue: VecDeque<(u64, Bytes)>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Baseline {
    mailboxes: Mutex<HashMap<String, Mailbox>>,
}

impl Baseline {
    fn with<T>(&self, node: &str, f: impl FnOnce(&mut Mailbox) -> T) -> T {
        let mut all = self
            .mailboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(all.entry(node.to_owned()).or_default())
    }
}

#[derive(Deserialize)]
struct NodeQuery {
    node: String,
}

/// Serve until the process is killed.
pub async fn serve(listen: SocketAddr) -> Result<(), BoxError> {
    let app = Router::new()
        .route("/v1/relay/ws", get(upgrade))
        .route("/health/ready", get(|| async { "ready" }))
        .with_state(Arc::new(Baseline::default()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Query(q): Query<NodeQuery>,
    State(state): State<Arc<Baseline>>,
) -> Response {
    // The relay's own socket settings (`keymesh_relay::ws`), so both pay for the same buffers.
    ws.protocols(["keymesh.v1"])
        .read_buffer_size(keymesh_relay::ws::READ_BUFFER)
        .write_buffer_size(keymesh_relay::ws::WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let _ = connection(socket, q.node, state).await;
        })
}

async fn connection(
    mut socket: WebSocket,
    node: String,
    state: Arc<Baseline>,
) -> Result<(), BoxError> {
    let challenge = ServerFrame::Challenge {
        nonce: [7; 32],
        now_ms: 0,
    };
    socket
        .send(Message::Binary(challenge.encode().into()))
        .await?;
    loop {
        match socket.recv().await.ok_or("closed")?? {
            Message::Binary(b)
                if matches!(ClientFrame::decode(&b, 1 << 20)?, ClientFrame::Hello { .. }) =>
            {
                break;
            }
            Message::Binary(_) => return Err("expected hello".into()),
            _ => {}
        }
    }
    let ready = ServerFrame::Ready {
        node: node.clone(),
        epoch: 1,
        resume_after: 0,
        limits: Limits {
            max_message: 1 << 20,
            max_frame: 1 << 20,
            window: WINDOW as u32,
            sends_per_sec: u32::MAX,
            ping_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            max_ttl_secs: 604_800,
        },
    };
    socket.send(Message::Binary(ready.encode().into())).await?;
    let notify = state.with(&node, |m| m.notify.clone());
    let mut delivered = 0u64;
    loop {
        let due: Vec<Bytes> = state.with(&node, |m| {
            let after = delivered;
            let due: Vec<Bytes> = m
                .queue
                .iter()
                .take(WINDOW)
                .filter(|(seq, _)| *seq > after)
                .map(|(seq, frame)| {
                    delivered = *seq;
                    frame.clone()
                })
                .collect();
            due
        });
        for frame in due {
            socket.feed(Message::Binary(frame)).await?;
        }
        socket.flush().await?;
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(b))) => handle(&mut socket, &state, &node, &b).await?,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(()),
            },
            () = notify.notified() => {}
        }
    }
}

async fn handle(
    socket: &mut WebSocket,
    state: &Baseline,
    node: &str,
    bytes: &[u8],
) -> Result<(), BoxError> {
    match ClientFrame::decode(bytes, 1 << 20)? {
        ClientFrame::Send {
            id,
            to,
            enc,
            payload,
            ..
        } => {
            let notify = state.with(&to, |m| {
                m.next_seq += 1;
                let frame = encode_deliver(&DeliverRef {
                    seq: m.next_seq,
                    id: &id,
                    from: node,
                    created_ms: 0,
                    expires_ms: 0,
                    enc: &enc,
                    payload: &payload,
                });
                m.queue.push_back((m.next_seq, frame.into()));
                m.notify.clone()
            });
            notify.notify_one();
            let accepted = ServerFrame::Accepted {
                id,
                duplicate: false,
            };
            socket
                .feed(Message::Binary(accepted.encode().into()))
                .await?;
        }
        ClientFrame::Ack { through } => state.with(node, |m| {
            while m.queue.front().is_some_and(|(seq, _)| *seq <= through) {
                m.queue.pop_front();
            }
        }),
        ClientFrame::Hello { .. } => return Err("hello twice".into()),
    }
    Ok(())
}
