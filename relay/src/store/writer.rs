//! The group-commit writer: one task owns every mailbox's counters and commits whatever
//! piled up while the previous commit ran, on SQLite ([`super::native`]) or PostgreSQL
//! ([`super::postgres`]).

use super::*;

/// Handle to the group-commit task: the only writer of messages and acknowledgements, and the
/// only holder of each mailbox's sequence counter and occupancy.
#[derive(Clone, Debug)]
pub struct Writer {
    pub(super) tx: mpsc::Sender<Write>,
    pub(super) held: Arc<AtomicI64>,
}

/// Most writes in one transaction (binds stay well under both engines' limits).
pub(super) const MAX_BATCH: usize = 1024;

/// Sequence counter and occupancy of one mailbox.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Occupancy {
    pub(super) last_seq: i64,
    /// Cumulative acknowledgement: nothing at or below it is held, so deletions start above
    /// it (on PostgreSQL an index scan from the mailbox's first key would step over every
    /// entry of rows deleted since the last vacuum).
    pub(super) acked: i64,
    pub(super) count: i64,
    pub(super) bytes: i64,
    /// Highest expired range end still recorded (0: none), so acknowledgements only touch the
    /// expiry table when there is something in it.
    pub(super) expired_through: i64,
}

/// How the writer reaches the database.
pub(super) enum Engine {
    /// SQLite: the writer's own connection, used only from the writer's own thread.
    Native(Native),
    /// PostgreSQL: multi-row statements through the pool.
    Postgres(PgPool),
}

impl Writer {
    /// Read every mailbox's position and start the task. It ends when every handle is dropped.
    pub async fn spawn(
        store: Store,
        bounds: Bounds,
        on_commit: OnCommit,
    ) -> Result<Self, StorageError> {
        let boxes: HashMap<String, Occupancy> = store
            .mailboxes()
            .await?
            .into_iter()
            .map(|(node, m)| {
                let o = Occupancy {
                    last_seq: m.last_seq,
                    acked: m.acked,
                    count: m.count,
                    bytes: m.bytes,
                    expired_through: m.expired_through,
                };
                (node, o)
            })
            .collect();
        let engine = match store.db() {
            Db::Sqlite(pool) => {
                let path = pool.connect_options().get_filename().to_owned();
                let native = tokio::task::spawn_blocking(move || Native::open(&path))
                    .await
                    .map_err(|e| StorageError::Driver(Box::new(e)))??;
                Engine::Native(native)
            }
            Db::Postgres(pool) => Engine::Postgres(pool.clone()),
        };
        let finish = match &engine {
            Engine::Native(native) => {
                // Everything in the database at start is on disk (`Native::open` flushed it).
                store.durable.start(
                    boxes
                        .iter()
                        .map(|(node, o)| (node.clone(), o.last_seq))
                        .collect(),
                );
                Finish::AfterSync(native.syncer(on_commit, Arc::clone(&store.durable))?)
            }
            Engine::Postgres(_) => Finish::Now(on_commit),
        };
        let native = matches!(engine, Engine::Native(_));
        let (tx, mut rx) = mpsc::channel::<Write>(8 * MAX_BATCH);
        let held = Arc::new(AtomicI64::new(0));
        let mut task = Task {
            engine,
            bounds,
            boxes,
            held: Arc::clone(&held),
            finish,
        };
        task.count_held();
        let run = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // Commit at once when idle; while a commit runs, the next batch piles up.
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (size, started) = (batch.len(), std::time::Instant::now());
                task.commit(std::mem::take(&mut batch)).await;
                if let Engine::Native(native) = &mut task.engine {
                    native.checkpoint_if_due(!rx.is_empty());
                }
                tracing::trace!(
                    size,
                    micros = started.elapsed().as_micros() as u64,
                    "group commit"
                );
            }
        };
        if native {
            // SQLite calls block: the writer gets a thread (and a runtime) of its own, so the
            // connections' tasks never wait behind a commit.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StorageError::Driver(Box::new(e)))?;
            std::thread::Builder::new()
                .name("relay-writer".into())
                .spawn(move || runtime.block_on(run))
                .map_err(|e| StorageError::Driver(Box::new(e)))?;
        } else {
            tokio::spawn(run);
        }
        Ok(Self { tx, held })
    }

    /// Messages held in every mailbox, as of the last commit.
    pub fn held(&self) -> i64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Queue a write; `false` when the writer has stopped.
    pub async fn submit(&self, write: Write) -> bool {
        self.tx.send(write).await.is_ok()
    }
}

pub(super) struct Task {
    pub(super) engine: Engine,
    pub(super) bounds: Bounds,
    pub(super) boxes: HashMap<String, Occupancy>,
    pub(super) held: Arc<AtomicI64>,
    /// Where a committed batch's outcomes go: told at once (PostgreSQL, durable at commit), or
    /// once the log is on disk (SQLite, see [`native::Syncer`]).
    pub(super) finish: Finish,
}

/// What to do with a committed batch's [`Completion`].
pub(super) enum Finish {
    /// Hand it out now.
    Now(OnCommit),
    /// Hand it out after the syncer's next `fdatasync` of the log.
    AfterSync(native::Syncer),
}

impl Finish {
    pub(super) fn send(&self, completion: Completion) {
        match self {
            Self::Now(on_commit) => completion.complete(on_commit),
            Self::AfterSync(syncer) => syncer.submit(completion),
        }
    }

    /// Whether a write failed to become durable: then nothing more is accepted.
    pub(super) fn broken(&self) -> Option<String> {
        match self {
            Self::Now(_) => None,
            Self::AfterSync(syncer) => syncer.broken(),
        }
    }
}

pub(super) type ExpireReply = (
    oneshot::Sender<Result<Vec<(String, Expiry)>, StorageError>>,
    Vec<(String, Expiry)>,
);

/// A committed batch's outcomes, handed out only once the batch is durable: the messages for
/// their recipients' connections (first), then every writer's answer.
#[derive(Default)]
pub(super) struct Completion {
    pub(super) committed: Vec<Committed>,
    pub(super) sends: Vec<(
        oneshot::Sender<Result<SendOutcome, StorageError>>,
        SendOutcome,
    )>,
    pub(super) acks: Vec<(oneshot::Sender<Result<i64, StorageError>>, i64)>,
    pub(super) expiries: Vec<ExpireReply>,
}

impl Completion {
    pub(super) fn complete(self, on_commit: &OnCommit) {
        if !self.committed.is_empty() {
            on_commit(self.committed);
        }
        for (done, o) in self.sends {
            let _ = done.send(Ok(o));
        }
        for (done, n) in self.acks {
            let _ = done.send(Ok(n));
        }
        for (done, ranges) in self.expiries {
            let _ = done.send(Ok(ranges));
        }
    }

    /// The batch is not known to be durable: every writer is told it failed, nothing is
    /// delivered.
    pub(super) fn fail(self, why: &str) {
        let err = || StorageError::Failed(why.to_owned().into());
        for (done, _) in self.sends {
            let _ = done.send(Err(err()));
        }
        for (done, _) in self.acks {
            let _ = done.send(Err(err()));
        }
        for (done, _) in self.expiries {
            let _ = done.send(Err(err()));
        }
    }
}

impl Task {
    pub(super) fn count_held(&self) {
        self.held.store(
            self.boxes.values().map(|b| b.count).sum(),
            Ordering::Relaxed,
        );
    }

    pub(super) async fn commit(&mut self, batch: Vec<Write>) {
        let mut sends = Vec::new();
        let mut acks = Vec::new();
        let mut expiries = Vec::new();
        for w in batch {
            match w {
                Write::Expire {
                    now_ms,
                    limit,
                    done,
                } => expiries.push((now_ms, limit, done)),
                Write::Send { message, done } => sends.push((message, done)),
                Write::Ack {
                    recipient,
                    through,
                    done,
                } => acks.push((recipient, through, done)),
            }
        }
        let messages: Vec<&NewMessage> = sends.iter().map(|(m, _)| m).collect();
        let ack_list: Vec<(&str, i64)> = acks.iter().map(|(r, t, _)| (r.as_str(), *t)).collect();
        let mut touched = HashMap::new();
        let mut overlay = Overlay {
            base: &self.boxes,
            touched: &mut touched,
            bounds: self.bounds,
        };
        let result = match (&mut self.engine, self.finish.broken()) {
            (_, Some(why)) => Err(StorageError::Failed(why.into())),
            (Engine::Native(native), None) => native
                .write(&mut overlay, &messages, &ack_list, now_ms())
                .map_err(|e| StorageError::Driver(Box::new(e))),
            (Engine::Postgres(pool), None) => {
                pool_write(pool, &mut overlay, &messages, &ack_list).await
            }
        };
        drop((messages, ack_list));
        let mut completion = Completion::default();
        match result {
            Ok((outcomes, deleted)) => {
                let delta: i64 = touched
                    .iter()
                    .map(|(r, b)| b.count - self.boxes.get(r).map_or(0, |o| o.count))
                    .sum();
                self.held.fetch_add(delta, Ordering::Relaxed);
                self.boxes.extend(touched);
                for ((message, done), o) in sends.into_iter().zip(outcomes) {
                    if let SendOutcome::Stored(seq) = o {
                        completion.committed.push(Committed {
                            message: StoredMessage {
                                seq,
                                sender: message.sender,
                                client_id: message.client_id.to_vec(),
                                enc: message.enc,
                                payload: message.payload,
                                created_ms: message.created_ms,
                                expires_ms: message.expires_ms,
                            },
                            recipient: message.recipient,
                        });
                    }
                    completion.sends.push((done, o));
                }
                completion.acks = acks
                    .into_iter()
                    .zip(deleted)
                    .map(|((_, _, done), d)| (done, d))
                    .collect();
            }
            Err(e) => {
                tracing::error!(error = %keymesh_core::error::error_chain(&e), "relay group commit failed; every write in it is refused");
                Completion {
                    sends: sends
                        .into_iter()
                        .map(|(_, done)| (done, SendOutcome::Duplicate))
                        .collect(),
                    acks: acks.into_iter().map(|(_, _, done)| (done, 0)).collect(),
                    ..Completion::default()
                }
                .fail(&e.to_string());
            }
        }
        for (now_ms, limit, done) in expiries {
            match self.expire(now_ms, limit).await {
                Ok(ranges) => completion.expiries.push((done, ranges)),
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        }
        self.finish.send(completion);
    }

    pub(super) async fn expire(
        &mut self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, Expiry)>, StorageError> {
        if let Some(why) = self.finish.broken() {
            return Err(StorageError::Failed(why.into()));
        }
        let expired = match &mut self.engine {
            Engine::Native(native) => native
                .expire(now_ms, limit)
                .map_err(|e| StorageError::Driver(Box::new(e)))?,
            Engine::Postgres(pool) => pool_expire(pool, now_ms, limit).await?,
        };
        Ok(expired
            .into_iter()
            .map(|(recipient, range, bytes)| {
                self.held.fetch_sub(range.count, Ordering::Relaxed);
                let b = self.boxes.entry(recipient.clone()).or_default();
                b.count -= range.count;
                b.bytes -= bytes;
                b.expired_through = b.expired_through.max(range.through_seq);
                (recipient, range)
            })
            .collect())
    }
}
