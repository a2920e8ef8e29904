//! The WebSocket endpoint: `GET /v1/relay/ws`, subprotocol `keymesh.v1`, one frame per binary
//! message. Handshake, then sends, acknowledgements and windowed delivery on one task.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code},
    },
    response::{IntoResponse, Response},
};
use futures_util::SinkExt;
use http::HeaderMap;
use keymesh_core::{
    ApiError, ErrorCode,
    capability::{pop::verify_challenge, token::VerifiedToken},
    storage::StorageError,
};
use tokio::{sync::oneshot, time::Instant};

use crate::{
    frame::{ClientFrame, DeliverRef, FrameError, MessageId, ServerFrame, encode_deliver},
    hub::{Conn, Item},
    state::{Refusal, RelayState, SendRequest},
    store::{SendOutcome, StoredMessage, Write, now_ms},
};

pub use keymesh_proto::frame::SUBPROTOCOL;
/// Time to answer the challenge.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sends awaiting durability per connection before the relay stops reading from it.
const MAX_PENDING: usize = 1024;
/// Buffers per connection: small, so idle connections stay cheap; frames larger than this
/// are read in several steps.
pub const READ_BUFFER: usize = 2 * 1024;
pub const WRITE_BUFFER: usize = 8 * 1024;

/// Open the relay's WebSocket (subprotocol `keymesh.v1`).
///
/// A standard WebSocket upgrade. One binary message carries one frame of the relay protocol
/// (docs/protocol/relay.md): the relay sends `challenge`, the node answers `hello` with its
/// token and a signature by its node key, then sends and acknowledges messages and receives
/// deliveries. The token is checked in the handshake, not on the upgrade request.
#[utoipa::path(
    get,
    path = "/v1/relay/ws",
    operation_id = "relay_websocket",
    tag = "websocket",
    params((
        "Sec-WebSocket-Protocol" = String,
        Header,
        description = "Must offer `keymesh.v1`.",
        example = "keymesh.v1",
    )),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open and the relay sends `challenge`."),
        (status = 400, body = keymesh_core::error::ErrorBody, description = "`protocol_error`: the subprotocol `keymesh.v1` was not offered."),
        keymesh_core::openapi::Errors,
    ),
)]
pub async fn upgrade(
    State(state): State<RelayState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return ApiError::with_message(
            ErrorCode::ProtocolError,
            "the WebSocket subprotocol keymesh.v1 is required",
        )
        .into_response();
    }
    // Above the frame bound, so an oversized frame reaches the relay's own check and gets a
    // coded answer instead of a bare close.
    let limit = state.config.max_frame() + 64 * 1024;
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(limit.saturating_mul(4))
        .max_message_size(limit)
        .max_frame_size(limit)
        // The connection is built outside the task's future and moved into it once: built
        // inside, the socket would take room twice in every connection's task.
        .on_upgrade(move |socket| {
            Connection {
                socket,
                state,
                closed: false,
            }
            .run()
        })
}

struct Connection {
    socket: WebSocket,
    state: RelayState,
    closed: bool,
}

/// Why a connection ends, told to the node in an `error` frame.
struct Fatal(ErrorCode, String);

impl From<ApiError> for Fatal {
    fn from(e: ApiError) -> Self {
        Fatal(e.code(), e.message().to_owned())
    }
}

impl From<FrameError> for Fatal {
    fn from(e: FrameError) -> Self {
        Fatal(ErrorCode::MalformedFrame, e.to_string())
    }
}

impl From<axum::Error> for Fatal {
    fn from(_: axum::Error) -> Self {
        // The socket failed; nothing can be told.
        Fatal(ErrorCode::Unavailable, String::new())
    }
}

impl From<StorageError> for Fatal {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "relay storage failed during a connection");
        Fatal(ErrorCode::Unavailable, "storage is unavailable".into())
    }
}

type Pending = VecDeque<(
    MessageId,
    oneshot::Receiver<Result<SendOutcome, StorageError>>,
)>;

/// Delivery position of the connection.
struct Delivery {
    /// Highest sequence number sent on this connection.
    last_sent: i64,
    /// Highest acknowledged.
    acked: i64,
    /// Sequence numbers sent and not yet acknowledged, in order.
    in_flight: VecDeque<i64>,
    /// Everything committed up to the last database read has been seen: a gap in the queue
    /// is a real gap (expired or acknowledged elsewhere), not a message to read.
    synced: bool,
}

impl Connection {
    async fn run(mut self) {
        if let Err(Fatal(code, message)) = self.handshake_and_serve().await
            && !self.closed
            && !message.is_empty()
        {
            // Boxed: only a closing connection needs room for it.
            Box::pin(self.tell(code, &message)).await;
        }
    }

    /// Tell the node why the connection ends, and close it.
    async fn tell(&mut self, code: ErrorCode, message: &str) {
        let frame = ServerFrame::Error {
            code: code.as_str().to_owned(),
            message: message.chars().take(400).collect(),
        };
        let _ = self
            .socket
            .send(Message::Binary(frame.encode().into()))
            .await;
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code: close_code::POLICY,
                reason: code.as_str().into(),
            })))
            .await;
    }

    async fn send_frame(&mut self, frame: &ServerFrame) -> Result<(), Fatal> {
        self.socket
            .feed(Message::Binary(frame.encode().into()))
            .await?;
        Ok(())
    }

    async fn handshake_and_serve(&mut self) -> Result<(), Fatal> {
        // The handshake's futures are large and live only until `ready`: boxed and freed
        // before serving, so an idle connection's task is the size of `serve` alone.
        let (token, epoch) = Box::pin(self.handshake()).await?;
        let state = self.state.clone();
        let conn = state
            .hub
            .attach(&token.claims.node.clone(), token)
            .map_err(ApiError::new)?;
        state.metrics.connections.inc();
        let result = self.serve(&conn, epoch).await;
        state.hub.detach(&conn);
        state.metrics.connections.dec();
        result
    }

    /// Challenge, `hello`, token and proof checks: the verified token and the mailbox epoch.
    async fn handshake(&mut self) -> Result<(Arc<VerifiedToken>, i64), Fatal> {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|_| Fatal(ErrorCode::Internal, "rng".into()))?;
        self.send_frame(&ServerFrame::Challenge {
            nonce,
            now_ms: u64::try_from(now_ms()).unwrap_or(0),
        })
        .await?;
        self.socket.flush().await?;
        let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.next_frame()).await {
            Ok(frame) => frame?,
            Err(_) => {
                return Err(Fatal(
                    ErrorCode::IdleTimeout,
                    "no hello within 10 seconds of the challenge".into(),
                ));
            }
        };
        let Some(ClientFrame::Hello {
            token,
            proof,
            resume_after: _,
        }) = hello
        else {
            return Err(Fatal(
                ErrorCode::ProtocolError,
                "the first frame must be hello".into(),
            ));
        };
        let state = self.state.clone();
        let verifier = state.verifier()?;
        let token = verifier.verify(&token).map_err(ApiError::from)?;
        verify_challenge(&token.node_key, &nonce, &token.hash, &proof).map_err(ApiError::from)?;
        verifier.remember(&token);
        state.check_alive(&token)?;
        let epoch = state
            .store
            .ensure_mailbox(&token.claims.node, now_ms())
            .await?;
        Ok((token, epoch))
    }

    /// The next frame from the node; `None` for control messages (pings, pongs).
    async fn next_frame(&mut self) -> Result<Option<ClientFrame>, Fatal> {
        let Some(message) = self.socket.recv().await else {
            self.closed = true;
            return Err(Fatal(ErrorCode::Unavailable, String::new()));
        };
        self.frame_of(message)
    }

    fn frame_of(
        &mut self,
        message: Result<Message, axum::Error>,
    ) -> Result<Option<ClientFrame>, Fatal> {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit") {
                    return Err(Fatal(
                        ErrorCode::TooLarge,
                        format!(
                            "a frame is larger than the relay's limit ({} bytes)",
                            self.state.config.max_frame()
                        ),
                    ));
                }
                self.closed = true;
                return Err(Fatal(ErrorCode::Unavailable, String::new()));
            }
        };
        match message {
            Message::Binary(bytes) => {
                if bytes.len() > self.state.config.max_frame() {
                    return Err(Fatal(
                        ErrorCode::TooLarge,
                        format!(
                            "a frame is larger than the relay's limit ({} bytes)",
                            self.state.config.max_frame()
                        ),
                    ));
                }
                // The payload bound is the frame bound here; a payload over the message limit
                // is refused per message (`too_large`), not as a malformed frame.
                Ok(Some(ClientFrame::decode(
                    &bytes,
                    self.state.config.max_frame(),
                )?))
            }
            Message::Text(_) => Err(Fatal(
                ErrorCode::ProtocolError,
                "frames travel in binary WebSocket messages".into(),
            )),
            Message::Ping(_) | Message::Pong(_) => Ok(None),
            Message::Close(_) => {
                self.closed = true;
                Err(Fatal(ErrorCode::Unavailable, String::new()))
            }
        }
    }

    async fn serve(&mut self, conn: &Conn, epoch: i64) -> Result<(), Fatal> {
        let state = self.state.clone();
        let node = conn.node.clone();
        // Delivery resumes after the durable acknowledgement. The node's `resume_after` is not
        // trusted as an acknowledgement: `hello` carries no epoch, so a position from before
        // a mailbox was recreated could otherwise delete messages the node never saw. A node
        // that handled messages whose ack was lost gets them again (at least once).
        let (resume, _) = Box::pin(state.store.position(&node)).await?;
        self.send_frame(&ServerFrame::Ready {
            node: node.clone(),
            epoch: u64::try_from(epoch).unwrap_or(0),
            resume_after: u64::try_from(resume).unwrap_or(0),
            limits: state.limits(),
        })
        .await?;
        for e in Box::pin(state.store.expiries(&node, resume)).await? {
            self.send_expired(e.after_seq.max(resume), e.through_seq, e.count)
                .await?;
        }
        self.socket.flush().await?;

        let mut delivery = Delivery {
            last_sent: resume,
            acked: resume,
            in_flight: VecDeque::new(),
            synced: false,
        };
        let mut pending: Pending = VecDeque::new();
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(state.config.ping);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let shutdown = state.ctx.shutdown.clone();
        loop {
            if let Some((code, message)) = conn.close_reason() {
                return Err(Fatal(code, message.into()));
            }
            Box::pin(self.deliver(conn, &mut delivery)).await?;
            self.socket.flush().await?;
            tokio::select! {
                outcome = async {
                    match pending.front_mut() {
                        Some((_, rx)) => rx.await.unwrap_or(Err(StorageError::Failed("the relay's writer stopped".into()))),
                        None => std::future::pending().await,
                    }
                }, if !pending.is_empty() => {
                    if let Some((id, _)) = pending.pop_front() {
                        self.answer(id, &outcome).await?;
                    }
                    self.answer_ready(&mut pending).await?;
                }
                message = self.socket.recv(), if pending.len() < MAX_PENDING => {
                    let Some(message) = message else {
                        self.closed = true;
                        return Ok(());
                    };
                    last_heard = Instant::now();
                    match self.frame_of(message)? {
                        None => {}
                        Some(ClientFrame::Send { id, to, ttl_secs, enc, payload }) => {
                            Box::pin(self.send(conn, &mut pending, SendRequest { id, to, ttl_secs, enc, payload })).await?;
                        }
                        Some(ClientFrame::Ack { through }) => {
                            let through = i64::try_from(through).unwrap_or(i64::MAX);
                            if through > delivery.last_sent {
                                return Err(Fatal(ErrorCode::ProtocolError, format!(
                                    "ack through {through} is past the last delivered sequence number {}",
                                    delivery.last_sent
                                )));
                            }
                            if through > delivery.acked {
                                let mut n = 0;
                                while delivery.in_flight.front().is_some_and(|s| *s <= through) {
                                    delivery.in_flight.pop_front();
                                    n += 1;
                                }
                                state.metrics.acked.inc_by(n);
                                delivery.acked = through;
                                Box::pin(self.ack(&node, through)).await?;
                            }
                        }
                        Some(ClientFrame::Hello { .. }) => {
                            return Err(Fatal(ErrorCode::ProtocolError, "hello after ready".into()));
                        }
                    }
                }
                () = conn.notify.notified() => {}
                _ = ping.tick() => {
                    if last_heard.elapsed() > state.config.idle_timeout {
                        return Err(Fatal(ErrorCode::IdleTimeout, "nothing arrived within the idle timeout".into()));
                    }
                    state.check_alive(&conn.token)?;
                    self.socket.feed(Message::Ping(Default::default())).await?;
                }
                () = shutdown.cancelled() => {
                    return Err(Fatal(ErrorCode::Unavailable, "the relay is shutting down; reconnect".into()));
                }
            }
        }
    }

    async fn ack(&mut self, node: &str, through: i64) -> Result<(), Fatal> {
        let (done, _answer) = oneshot::channel();
        if self
            .state
            .writer
            .submit(Write::Ack {
                recipient: node.to_owned(),
                through,
                done,
            })
            .await
        {
            Ok(())
        } else {
            Err(Fatal(
                ErrorCode::Unavailable,
                "the relay is stopping".into(),
            ))
        }
    }

    async fn send(
        &mut self,
        conn: &Conn,
        pending: &mut Pending,
        request: SendRequest,
    ) -> Result<(), Fatal> {
        let state = self.state.clone();
        let id = request.id;
        let verifier = state.verifier()?;
        match state.prepare_send(&verifier, &conn.token, request) {
            Ok(message) => {
                let rx = state.submit(message).await?;
                pending.push_back((id, rx));
                Ok(())
            }
            Err(refusal) => {
                self.refuse(id, refusal).await?;
                match refusal.code {
                    // The token is dead: nothing more will be accepted on this connection.
                    ErrorCode::Revoked | ErrorCode::TokenExpired => {
                        Err(Fatal(refusal.code, refusal.code.description().into()))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    async fn refuse(&mut self, id: MessageId, refusal: Refusal) -> Result<(), Fatal> {
        self.send_frame(&ServerFrame::Refused {
            id,
            code: refusal.code.as_str().to_owned(),
            retry_after_ms: u32::try_from(refusal.retry_after.as_millis()).unwrap_or(u32::MAX),
        })
        .await
    }

    /// Answer every send whose commit is done, in order.
    async fn answer_ready(&mut self, pending: &mut Pending) -> Result<(), Fatal> {
        while let Some((id, rx)) = pending.front_mut() {
            let outcome = match rx.try_recv() {
                Ok(outcome) => outcome,
                Err(oneshot::error::TryRecvError::Empty) => break,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Err(StorageError::Failed("the relay's writer stopped".into()))
                }
            };
            let id = *id;
            pending.pop_front();
            self.answer(id, &outcome).await?;
        }
        Ok(())
    }

    async fn answer(
        &mut self,
        id: MessageId,
        outcome: &Result<SendOutcome, StorageError>,
    ) -> Result<(), Fatal> {
        match self.state.outcome(outcome) {
            Ok(duplicate) => {
                self.send_frame(&ServerFrame::Accepted { id, duplicate })
                    .await
            }
            Err(refusal) => self.refuse(id, refusal).await,
        }
    }

    async fn send_expired(&mut self, after: i64, through: i64, count: i64) -> Result<(), Fatal> {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        self.send_frame(&ServerFrame::Expired {
            after: u(after),
            through: u(through),
            count: u(count),
        })
        .await
    }

    async fn deliver_one(&mut self, d: &mut Delivery, m: &StoredMessage) -> Result<(), Fatal> {
        let id: MessageId = m.client_id.as_slice().try_into().unwrap_or([0; 16]);
        let frame = encode_deliver(&DeliverRef {
            seq: u64::try_from(m.seq).unwrap_or(0),
            id: &id,
            from: &m.sender,
            created_ms: u64::try_from(m.created_ms).unwrap_or(0),
            expires_ms: u64::try_from(m.expires_ms).unwrap_or(0),
            enc: &m.enc,
            payload: &m.payload,
        });
        self.socket.feed(Message::Binary(frame.into())).await?;
        d.last_sent = m.seq;
        d.in_flight.push_back(m.seq);
        let metrics = &self.state.metrics;
        metrics.delivered.inc();
        let age_ms = now_ms().saturating_sub(m.created_ms).max(0);
        metrics.delivery_latency.observe(age_ms as f64 / 1000.0);
        Ok(())
    }

    /// Fill the window: from the queue while it is contiguous, else from the database.
    async fn deliver(&mut self, conn: &Conn, d: &mut Delivery) -> Result<(), Fatal> {
        if !conn.is_deliverer() {
            // Keep the queue from holding stale items; the newest connection delivers.
            while conn.pop().0.is_some() {}
            return Ok(());
        }
        let window = usize::try_from(self.state.config.window).unwrap_or(usize::MAX);
        while d.in_flight.len() < window {
            let (next, lagged) = conn.pop();
            if lagged {
                d.synced = false;
            }
            match next {
                Some(Item::Expired(e)) => {
                    if e.through_seq > d.acked {
                        self.send_expired(e.after_seq, e.through_seq, e.count)
                            .await?;
                    }
                }
                Some(Item::Message(m)) if m.seq <= d.last_sent => {}
                Some(Item::Message(m)) if d.synced || m.seq == d.last_sent + 1 => {
                    self.deliver_one(d, &m).await?;
                }
                next => {
                    // Not synced and the queue is empty or has a gap: read the mailbox.
                    if let Some(item) = next {
                        conn.unpop(item);
                    } else if d.synced {
                        break;
                    }
                    let room = window - d.in_flight.len();
                    let rows = Box::pin(self.state.store.fetch(
                        &conn.node,
                        d.last_sent,
                        i64::try_from(room).unwrap_or(i64::MAX),
                    ))
                    .await?;
                    d.synced = rows.len() < room;
                    for m in &rows {
                        self.deliver_one(d, m).await?;
                    }
                    if !d.synced {
                        // The window is full; the rest waits for acknowledgements.
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
