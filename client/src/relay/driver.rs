//! The connection task: one WebSocket at a time, reconnected with capped exponential backoff
//! and jitter. It owns every piece of connection state: unanswered sends (re-sent with the same
//! ids after a reconnect), the mailbox epoch, what was handed to the application and what it
//! has handled (acknowledged cumulatively, never past what this connection delivered).

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use keymesh_proto::frame::{ClientFrame, Limits, MessageId, SUBPROTOCOL, ServerFrame};
use keymesh_proto::pop::sign_challenge;
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

use super::{ExpiredRange, RelayError, Shared};
use crate::transport::certificate_failure;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Sends written to the socket and not yet answered, at most; the rest wait their turn (so a
/// burst cannot fill both directions' buffers while nobody reads).
const MAX_ON_WIRE: usize = 256;

/// How long a polite close waits for the relay's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A message as the relay delivered it, still sealed.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub seq: u64,
    pub id: MessageId,
    pub from: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub enc: Vec<u8>,
    pub payload: Vec<u8>,
}

/// What the task hands to the application, in order.
#[derive(Debug)]
pub(crate) enum Event {
    Message(Delivery),
    Expired(ExpiredRange),
    Failed(RelayError),
}

/// A send waiting for its answer.
#[derive(Debug)]
pub(crate) struct PendingSend {
    pub id: MessageId,
    /// The encoded `send` frame, re-sent as is after a reconnect.
    pub frame: Vec<u8>,
    pub reply: oneshot::Sender<Result<bool, RelayError>>,
    /// Written on the current connection.
    pub on_wire: bool,
}

/// What the application asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    Send(PendingSend),
    /// The application is done with this sequence number (of the current epoch).
    Handled(u64),
    /// Drop the connection (if any) and connect again now, with a fresh backoff.
    Reconnect,
    /// Close the connection politely and end the task.
    Close(oneshot::Sender<()>),
}

/// The connection's state, for `connect()` and failing fast.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    Connecting,
    Ready,
    Failed(RelayError),
}

/// Why a connection attempt or a connection ended.
enum End {
    /// Lost or refused for now: reconnect after a backoff.
    Retry(RelayError),
    /// Reconnect at once.
    Now,
    /// The client is done.
    Closed,
    /// Nothing more will work (credential refused, protocol broken).
    Fatal(RelayError),
}

/// One live connection.
struct Session {
    ws: Socket,
    limits: Limits,
    /// Highest sequence number delivered on this connection (or where it resumed).
    delivered: u64,
    /// Highest acknowledgement sent on this connection (or where it resumed).
    acked: u64,
    last_heard: Instant,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Sender<Status>,
    pending: VecDeque<PendingSend>,
    epoch: Option<u64>,
    /// Highest sequence number handed to the application in this epoch.
    queued_through: u64,
    /// Handed to the application and not yet handled.
    outstanding: BTreeSet<u64>,
    /// Highest `through` of an expiry already reported in this epoch.
    expired_through: u64,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        status: watch::Sender<Status>,
    ) -> Self {
        Self {
            shared,
            commands,
            events,
            status,
            pending: VecDeque::new(),
            epoch: None,
            queued_through: 0,
            outstanding: BTreeSet::new(),
            expired_through: 0,
        }
    }

    /// Run until the client closes or a fatal error.
    pub(crate) async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            self.status.send_replace(Status::Connecting);
            let end = match self.connect().await {
                Ok(mut session) => {
                    failures = 0;
                    self.status.send_replace(Status::Ready);
                    let end = self.serve(&mut session).await;
                    let _ = session.ws.close(None).await;
                    end
                }
                Err(end) => end,
            };
            match end {
                End::Closed => return,
                End::Fatal(e) => return self.fail(e),
                End::Now => failures = 0,
                End::Retry(e) => {
                    failures = failures.saturating_add(1);
                    let options = &self.shared.options;
                    if options
                        .max_reconnect_attempts
                        .is_some_and(|max| failures > max)
                    {
                        return self.fail(e);
                    }
                    match self.wait(backoff(options, failures)).await {
                        None => return,
                        Some(true) => failures = 0,
                        Some(false) => {}
                    }
                }
            }
        }
    }

    /// Fail every waiting send and the receiver with `e`.
    fn fail(&mut self, e: RelayError) {
        self.status.send_replace(Status::Failed(e.clone()));
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(e.clone()));
        }
        let _ = self.events.send(Event::Failed(e));
        // Sends queued after this point find the channel closed and read the status.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Send(p) = command {
                let _ = p.reply.send(Err(self.failed_error()));
            }
        }
    }

    fn failed_error(&self) -> RelayError {
        match &*self.status.borrow() {
            Status::Failed(e) => e.clone(),
            _ => RelayError::Closed,
        }
    }

    /// Sleep `delay` while taking commands. `None`: closed; `Some(true)`: reconnect now.
    async fn wait(&mut self, delay: Duration) -> Option<bool> {
        let deadline = after(delay);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Some(false),
                command = self.commands.recv() => match command {
                    None | Some(Command::Close(_)) => return None,
                    Some(Command::Reconnect) => return Some(true),
                    Some(Command::Send(p)) => self.pending.push_back(p),
                    Some(Command::Handled(seq)) => {
                        self.outstanding.remove(&seq);
                    }
                },
            }
        }
    }

    /// The cumulative acknowledgement the application allows: everything handed out before
    /// the first message it has not handled yet.
    fn handled_through(&self) -> u64 {
        match self.outstanding.first() {
            Some(first) => first.saturating_sub(1),
            None => self.queued_through,
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> RelayError {
        RelayError::Unreachable {
            url: self.shared.base.get(),
            reason: reason.to_string(),
        }
    }

    /// Open the socket and run the handshake: challenge, hello, ready.
    async fn connect(&mut self) -> Result<Session, End> {
        let options = &self.shared.options;
        let url = self.shared.base.ws().map_err(End::Fatal)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|_| End::Fatal(RelayError::InvalidUrl(url.clone())))?;
        request.headers_mut().insert(
            tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let tls = if url.starts_with("wss://") {
            let config = options.transport.tls_config().map_err(RelayError::from);
            Some(tokio_tungstenite::Connector::Rustls(
                config.map_err(End::Fatal)?,
            ))
        } else {
            None
        };
        let connected = tokio::time::timeout(
            options.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls),
        )
        .await;
        let mut ws = match connected {
            Err(_) => return Err(End::Retry(self.unreachable("connection timed out"))),
            Ok(Err(tungstenite::Error::Http(response))) => {
                return Err(self.upgrade_refused(&response));
            }
            // An untrusted certificate does not heal by retrying.
            Ok(Err(e)) => match certificate_failure(&e) {
                Some(reason) => {
                    return Err(End::Fatal(RelayError::Tls {
                        url: self.shared.base.get(),
                        reason,
                    }));
                }
                None => return Err(End::Retry(self.unreachable(e))),
            },
            Ok(Ok((ws, _))) => ws,
        };
        let deadline = after(options.connect_timeout);
        let nonce = match self.handshake_frame(&mut ws, deadline).await? {
            ServerFrame::Challenge { nonce, .. } => nonce,
            other => return Err(End::Fatal(unexpected("challenge", &other))),
        };
        let token = &self.shared.token;
        let hello = ClientFrame::Hello {
            token: token.to_vec(),
            proof: sign_challenge(self.shared.keys.signing_key(), &nonce, token),
            resume_after: if self.epoch.is_some() {
                self.handled_through()
            } else {
                0
            },
        };
        ws.send(Message::Binary(hello.encode().into()))
            .await
            .map_err(|e| End::Retry(self.unreachable(e)))?;
        let (node, epoch, resume_after, limits) =
            match self.handshake_frame(&mut ws, deadline).await? {
                ServerFrame::Ready {
                    node,
                    epoch,
                    resume_after,
                    limits,
                } => (node, epoch, resume_after, limits),
                other => return Err(End::Fatal(unexpected("ready", &other))),
            };
        if node != self.shared.keys.node() {
            return Err(End::Fatal(RelayError::TokenNodeMismatch {
                token_node: node,
                key_node: self.shared.keys.node().to_owned(),
            }));
        }
        if self.epoch.is_some_and(|e| e != epoch) {
            // The mailbox was recreated: sequence numbers restarted.
            self.queued_through = 0;
            self.outstanding.clear();
            self.expired_through = 0;
        }
        self.epoch = Some(epoch);
        self.queued_through = self.queued_through.max(resume_after);
        Ok(Session {
            ws,
            limits,
            delivered: resume_after,
            acked: resume_after,
            last_heard: Instant::now(),
        })
    }

    /// The relay answered the upgrade with an HTTP error: its coded body decides whether a
    /// retry can help (rate limits, unavailability) or not (a refused protocol).
    fn upgrade_refused(&self, response: &tungstenite::http::Response<Option<Vec<u8>>>) -> End {
        let status = response.status();
        let coded = response
            .body()
            .as_deref()
            .and_then(super::api::error_body)
            .unwrap_or_else(|| {
                let reason = format!("the WebSocket upgrade was answered HTTP {status}");
                if status.is_server_error() {
                    self.unreachable(reason)
                } else {
                    RelayError::Protocol(reason)
                }
            });
        let retry = status.is_server_error()
            || status == tungstenite::http::StatusCode::TOO_MANY_REQUESTS
            || status == tungstenite::http::StatusCode::REQUEST_TIMEOUT;
        if retry {
            End::Retry(coded)
        } else {
            End::Fatal(coded)
        }
    }

    /// A handshake frame; an `error` frame ends the attempt by its code.
    async fn handshake_frame(
        &self,
        ws: &mut Socket,
        deadline: Instant,
    ) -> Result<ServerFrame, End> {
        loop {
            let message = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Err(End::Retry(self.unreachable("the handshake timed out"))),
                Ok(None) => {
                    return Err(End::Retry(self.unreachable("closed during the handshake")));
                }
                Ok(Some(Err(e))) => return Err(End::Retry(self.unreachable(e))),
                Ok(Some(Ok(m))) => m,
            };
            match frame_of(message) {
                Ok(None) => {}
                Ok(Some(ServerFrame::Error { code, message })) => {
                    return Err(error_frame(&code, &message));
                }
                Ok(Some(frame)) => return Ok(frame),
                Err(Some(e)) => return Err(End::Fatal(e)),
                Err(None) => {
                    return Err(End::Retry(self.unreachable("closed during the handshake")));
                }
            }
        }
    }

    /// Serve one connection until it ends.
    async fn serve(&mut self, s: &mut Session) -> End {
        for p in &mut self.pending {
            p.on_wire = false;
        }
        if let Err(end) = self.flush_sends(s).await {
            return end;
        }
        if let Err(end) = self.maybe_ack(s).await {
            return end;
        }
        let silence = silence_limit(&s.limits);
        loop {
            let quiet_until = s
                .last_heard
                .checked_add(silence)
                .unwrap_or_else(|| after(silence));
            let step = tokio::select! {
                message = s.ws.next() => match message {
                    None => Err(End::Retry(self.unreachable("the relay closed the connection"))),
                    Some(Err(e)) => Err(End::Retry(self.unreachable(e))),
                    Some(Ok(m)) => {
                        s.last_heard = Instant::now();
                        self.on_message(s, m).await
                    }
                },
                command = self.commands.recv() => self.on_command(s, command).await,
                () = tokio::time::sleep_until(quiet_until) => {
                    Err(End::Retry(self.unreachable("nothing heard from the relay within its idle timeout")))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_command(&mut self, s: &mut Session, command: Option<Command>) -> Result<(), End> {
        match command {
            None => Err(End::Closed),
            Some(Command::Close(done)) => {
                // The closing handshake: wait (briefly) for the relay's close, so the process
                // can exit without resetting a socket whose last acknowledgement is in flight.
                if s.ws.close(None).await.is_ok() {
                    let _ = tokio::time::timeout(CLOSE_WAIT, async {
                        while let Some(Ok(_)) = s.ws.next().await {}
                    })
                    .await;
                }
                let _ = done.send(());
                Err(End::Closed)
            }
            Some(Command::Reconnect) => Err(End::Now),
            Some(Command::Send(p)) => {
                self.pending.push_back(p);
                self.flush_sends(s).await
            }
            Some(Command::Handled(seq)) => {
                self.outstanding.remove(&seq);
                self.maybe_ack(s).await
            }
        }
    }

    async fn on_message(&mut self, s: &mut Session, message: Message) -> Result<(), End> {
        let frame = match frame_of(message) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(Some(e)) => return Err(End::Fatal(e)),
            Err(None) => {
                return Err(End::Retry(
                    self.unreachable("the relay closed the connection"),
                ));
            }
        };
        match frame {
            ServerFrame::Accepted { id, duplicate } => {
                self.answer(id, Ok(duplicate));
                self.flush_sends(s).await
            }
            ServerFrame::Refused {
                id,
                code,
                retry_after_ms,
            } => {
                let retry =
                    (retry_after_ms > 0).then(|| Duration::from_millis(u64::from(retry_after_ms)));
                self.answer(id, Err(RelayError::relay(&code, "", retry)));
                self.flush_sends(s).await
            }
            ServerFrame::Deliver {
                seq,
                id,
                from,
                created_ms,
                expires_ms,
                enc,
                payload,
            } => {
                s.delivered = s.delivered.max(seq);
                if seq > self.queued_through {
                    self.queued_through = seq;
                    self.outstanding.insert(seq);
                    let _ = self.events.send(Event::Message(Delivery {
                        seq,
                        id,
                        from,
                        created_ms,
                        expires_ms,
                        enc,
                        payload,
                    }));
                }
                // A redelivery of something already handed out is not handed out again; once
                // it is delivered here, its acknowledgement may be sent.
                self.maybe_ack(s).await
            }
            ServerFrame::Expired {
                after,
                through,
                count,
            } => {
                if through > self.expired_through {
                    self.expired_through = through;
                    let _ = self.events.send(Event::Expired(ExpiredRange {
                        after,
                        through,
                        count,
                    }));
                }
                Ok(())
            }
            ServerFrame::Error { code, message } => Err(error_frame(&code, &message)),
            other @ (ServerFrame::Challenge { .. } | ServerFrame::Ready { .. }) => {
                Err(End::Fatal(unexpected("a frame of the ready state", &other)))
            }
        }
    }

    /// Answer the oldest send on the wire with this id.
    fn answer(&mut self, id: MessageId, outcome: Result<bool, RelayError>) {
        if let Some(i) = self.pending.iter().position(|p| p.on_wire && p.id == id)
            && let Some(p) = self.pending.remove(i)
        {
            let _ = p.reply.send(outcome);
        }
    }

    /// Write waiting sends, up to [`MAX_ON_WIRE`] unanswered; refuse locally a frame the relay
    /// would close the connection for (over its frame limit).
    async fn flush_sends(&mut self, s: &mut Session) -> Result<(), End> {
        let max_frame = usize::try_from(s.limits.max_frame).unwrap_or(usize::MAX);
        let mut on_wire = self.pending.iter().filter(|p| p.on_wire).count();
        let mut i = 0;
        while i < self.pending.len() && on_wire < MAX_ON_WIRE {
            if self.pending[i].on_wire {
                i += 1;
                continue;
            }
            if self.pending[i].frame.len() > max_frame {
                if let Some(p) = self.pending.remove(i) {
                    let message = format!(
                        "the send frame is {} bytes; the relay's limit is {max_frame}",
                        p.frame.len()
                    );
                    let _ = p
                        .reply
                        .send(Err(RelayError::relay("too_large", &message, None)));
                }
                continue;
            }
            let frame = self.pending[i].frame.clone();
            s.ws.feed(Message::Binary(frame.into()))
                .await
                .map_err(|e| End::Retry(self.unreachable(e)))?;
            self.pending[i].on_wire = true;
            on_wire += 1;
            i += 1;
        }
        s.ws.flush()
            .await
            .map_err(|e| End::Retry(self.unreachable(e)))
    }

    /// Acknowledge what the application handled, up to what this connection delivered.
    async fn maybe_ack(&mut self, s: &mut Session) -> Result<(), End> {
        let through = self.handled_through().min(s.delivered);
        if through > s.acked {
            s.acked = through;
            s.ws.send(Message::Binary(
                ClientFrame::Ack { through }.encode().into(),
            ))
            .await
            .map_err(|e| End::Retry(self.unreachable(e)))?;
        }
        Ok(())
    }
}

/// The frame in a WebSocket message: `Ok(None)` for control messages, `Err(None)` for a close,
/// `Err(Some(_))` for something that is not a frame.
fn frame_of(message: Message) -> Result<Option<ServerFrame>, Option<RelayError>> {
    match message {
        Message::Binary(bytes) => ServerFrame::decode(&bytes)
            .map(Some)
            .map_err(|e| Some(RelayError::Protocol(format!("an undecodable frame: {e}")))),
        Message::Text(_) => Err(Some(RelayError::Protocol(
            "a text WebSocket message".into(),
        ))),
        Message::Close(_) => Err(None),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
    }
}

fn unexpected(wanted: &str, got: &ServerFrame) -> RelayError {
    RelayError::Protocol(format!("expected {wanted}, got {got:?}"))
}

/// An `error` frame: reconnect, or stop for good.
fn error_frame(code: &str, message: &str) -> End {
    let e = RelayError::relay(code, message, None);
    if RelayError::ends_client(code) {
        End::Fatal(e)
    } else {
        End::Retry(e)
    }
}

/// `d` from now; a duration too large for the clock means a year (options are caller input).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// How long the relay may stay silent (it pings every `ping_interval_ms`) before the
/// connection is taken for dead.
fn silence_limit(limits: &Limits) -> Duration {
    let ping = u64::from(limits.ping_interval_ms);
    let idle = u64::from(limits.idle_timeout_ms);
    match ping.max(idle) {
        0 => Duration::from_secs(24 * 3600),
        ms => Duration::from_millis(ms.saturating_add(ping).max(1000)),
    }
}

/// Exponential backoff capped at `backoff_max`, with jitter: a uniform draw from the upper half.
fn backoff(options: &super::ClientOptions, failures: u32) -> Duration {
    let exp = options
        .backoff_initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let cap = exp.min(options.backoff_max);
    let mut r = [0u8; 8];
    // No randomness (practically impossible) means no jitter, not no backoff.
    let _ = getrandom::fill(&mut r);
    let half = cap / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = if nanos == 0 {
        0
    } else {
        u64::from_le_bytes(r) % nanos
    };
    half + Duration::from_nanos(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::ClientOptions;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let options = ClientOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        for (failures, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1600),
            (6, 2000),
            (60, 2000),
        ] {
            let ceiling = Duration::from_millis(ceiling);
            for _ in 0..50 {
                let d = backoff(&options, failures);
                assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
            }
        }
        let draws: BTreeSet<Duration> = (0..20).map(|_| backoff(&options, 4)).collect();
        assert!(draws.len() > 1, "jittered");
    }

    #[test]
    fn frames_of_messages() {
        assert!(matches!(
            frame_of(Message::Ping(Default::default())),
            Ok(None)
        ));
        assert!(matches!(frame_of(Message::Close(None)), Err(None)));
        assert!(matches!(
            frame_of(Message::Text("x".into())),
            Err(Some(RelayError::Protocol(_)))
        ));
        assert!(matches!(
            frame_of(Message::Binary(vec![1, 0x99].into())),
            Err(Some(RelayError::Protocol(_)))
        ));
        let ok = ServerFrame::Accepted {
            id: [1; 16],
            duplicate: true,
        };
        assert!(matches!(
            frame_of(Message::Binary(ok.encode().into())),
            Ok(Some(f)) if f == ok
        ));
        assert!(matches!(error_frame("revoked", ""), End::Fatal(_)));
        assert!(matches!(error_frame("unavailable", ""), End::Retry(_)));
    }
}
