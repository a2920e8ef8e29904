//! Mailbox storage and the group-commit writer.

use std::sync::{Arc, Mutex};

use keymesh_core::{config::ServiceName, storage::Db, storage::testing::TestDb};
use keymesh_relay::store::{Bounds, NewMessage, SendOutcome, Store, Write, Writer};
use tokio::sync::oneshot;

const BOUNDS: Bounds = Bounds {
    max_messages: 5,
    max_bytes: 10_000,
};

async fn open(db: &TestDb) -> Store {
    Store::new(
        Db::open_for(ServiceName::Relay, db.url())
            .await
            .expect("open the relay database"),
    )
}

fn message(from: &str, to: &str, id: u8, now: i64) -> NewMessage {
    NewMessage {
        recipient: to.into(),
        sender: from.into(),
        client_id: [id; 16],
        enc: vec![1; 32],
        payload: vec![id; 100],
        created_ms: now,
        expires_ms: now + 60_000,
    }
}

async fn send(w: &Writer, m: NewMessage) -> SendOutcome {
    let (done, rx) = oneshot::channel();
    assert!(w.submit(Write::Send { message: m, done }).await);
    rx.await.expect("writer answers").expect("commit")
}

async fn ack(w: &Writer, to: &str, through: i64) -> i64 {
    let (done, rx) = oneshot::channel();
    assert!(
        w.submit(Write::Ack {
            recipient: to.into(),
            through,
            done
        })
        .await
    );
    rx.await.expect("writer answers").expect("commit")
}

type Heads = Arc<Mutex<Vec<(String, i64)>>>;

async fn writer(store: &Store) -> (Writer, Heads) {
    let heads: Heads = Arc::default();
    let seen = Arc::clone(&heads);
    let w = Writer::spawn(
        store.clone(),
        BOUNDS,
        Box::new(move |c: Vec<keymesh_relay::store::Committed>| {
            seen.lock()
                .expect("lock")
                .extend(c.into_iter().map(|c| (c.recipient, c.message.seq)))
        }),
    )
    .await
    .expect("writer");
    (w, heads)
}

#[tokio::test]
async fn sends_are_numbered_deduplicated_bounded_acked_and_survive_a_restart() {
    let db = TestDb::new().await;
    let store = open(&db).await;
    let (w, heads) = writer(&store).await;
    for id in 1..=3 {
        assert_eq!(
            send(&w, message("a", "b", id, 1000)).await,
            SendOutcome::Stored(i64::from(id))
        );
    }
    assert_eq!(
        heads.lock().expect("lock").last(),
        Some(&("b".to_owned(), 3))
    );
    // A retry of an accepted message is a duplicate, nothing new is stored.
    assert_eq!(
        send(&w, message("a", "b", 2, 1000)).await,
        SendOutcome::Duplicate
    );
    // The same id from another sender is another message.
    assert_eq!(
        send(&w, message("c", "b", 2, 1000)).await,
        SendOutcome::Stored(4)
    );
    assert_eq!(
        send(&w, message("c", "b", 9, 1000)).await,
        SendOutcome::Stored(5)
    );
    // Five held: the sixth is refused, not dropped and not stored.
    assert_eq!(
        send(&w, message("a", "b", 6, 1000)).await,
        SendOutcome::MailboxFull
    );
    let held = store.fetch("b", 0, 100).await.expect("fetch");
    assert_eq!(
        held.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(held[1].sender, "a");
    assert_eq!(held[1].payload, vec![2; 100]);

    // An ack past the highest assigned number is clamped to it (it cannot hide later
    // messages); cumulative acks delete and free room; acknowledged messages stay
    // deduplicated.
    assert_eq!(ack(&w, "z", 1_000).await, 0);
    assert_eq!(ack(&w, "b", 3).await, 3);
    assert_eq!(store.fetch("b", 0, 100).await.expect("fetch").len(), 2);
    assert_eq!(
        send(&w, message("a", "b", 1, 1000)).await,
        SendOutcome::Duplicate
    );
    assert_eq!(
        send(&w, message("a", "b", 6, 1000)).await,
        SendOutcome::Stored(6)
    );
    assert_eq!(ack(&w, "b", 6).await, 3);
    assert!(store.fetch("b", 0, 100).await.expect("fetch").is_empty());

    // The mailbox "z" never received anything: its clamped ack leaves numbering at 1.
    assert_eq!(
        send(&w, message("a", "z", 42, 1000)).await,
        SendOutcome::Stored(1)
    );
    // A restart continues numbering after everything ever assigned, even with an empty
    // mailbox (the mailbox row remembers the acknowledgement).
    let epoch = store.ensure_mailbox("b", 77).await.expect("mailbox");
    assert_eq!(ack(&w, "b", 6).await, 0);
    drop(w);
    let (w, _) = writer(&store).await;
    assert_eq!(
        send(&w, message("a", "b", 7, 1000)).await,
        SendOutcome::Stored(7)
    );
    // The mailbox keeps its epoch: sequence numbers did not restart.
    assert_eq!(store.ensure_mailbox("b", 99).await.expect("mailbox"), epoch);
}

#[tokio::test]
async fn concurrent_sends_get_contiguous_numbers_in_commit_order() {
    let db = TestDb::new().await;
    let store = open(&db).await;
    let heads: Heads = Arc::default();
    let seen = Arc::clone(&heads);
    let w = Writer::spawn(
        store.clone(),
        Bounds {
            max_messages: 10_000,
            max_bytes: 1 << 30,
        },
        Box::new(move |c: Vec<keymesh_relay::store::Committed>| {
            seen.lock()
                .expect("lock")
                .extend(c.into_iter().map(|c| (c.recipient, c.message.seq)))
        }),
    )
    .await
    .expect("writer");
    let mut tasks = Vec::new();
    for sender in 0..8u8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for id in 0..50u8 {
                let mut m = message(&format!("s{sender}"), "r", id, 1000);
                m.client_id[0] = sender;
                match send(&w, m).await {
                    SendOutcome::Stored(seq) => seqs.push(seq),
                    other => panic!("unexpected {other:?}"),
                }
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.expect("task");
        // One sender's messages keep their order.
        assert!(seqs.windows(2).all(|p| p[0] < p[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<i64>>());
    // Heads are announced in increasing order: never a number before its predecessors are
    // durable.
    let heads = heads.lock().expect("lock");
    assert!(heads.windows(2).all(|p| p[0].1 < p[1].1));
    assert_eq!(heads.last().map(|h| h.1), Some(400));
}

#[tokio::test]
async fn expired_messages_are_deleted_and_reported_as_ranges() {
    let db = TestDb::new().await;
    let store = open(&db).await;
    let (w, _) = writer(&store).await;
    for id in 1..=3 {
        send(&w, message("a", "b", id, 1000)).await;
    }
    let mut late = message("a", "b", 4, 1000);
    late.expires_ms = 500_000;
    send(&w, late).await;
    // Fill the mailbox to its bound (5): the expiry job, going through the writer, frees room.
    send(&w, message("a", "b", 5, 1000)).await;
    assert_eq!(
        send(&w, message("a", "b", 6, 1000)).await,
        SendOutcome::MailboxFull
    );
    let (done, rx) = oneshot::channel();
    assert!(
        w.submit(Write::Expire {
            now_ms: 100_000,
            limit: 1000,
            done
        })
        .await
    );
    let expired = rx.await.expect("writer answers").expect("expire");
    assert_eq!(expired.len(), 1);
    let (recipient, range) = &expired[0];
    assert_eq!(recipient, "b");
    // 1-3 and 5 expired; 4 lives on (a range counts what expired in it, not its width).
    assert_eq!((range.after_seq, range.through_seq, range.count), (0, 5, 4));
    assert_eq!(store.expiries("b", 0).await.expect("expiries").len(), 1);
    let held = store.fetch("b", 0, 10).await.expect("fetch");
    assert_eq!(held.iter().map(|m| m.seq).collect::<Vec<_>>(), [4]);
    assert_eq!(
        send(&w, message("a", "b", 6, 1000)).await,
        SendOutcome::Stored(6)
    );
    // Acknowledging past the range forgets it.
    assert_eq!(ack(&w, "b", 6).await, 2);
    assert!(store.expiries("b", 0).await.expect("expiries").is_empty());
    // After a restart numbering continues past everything assigned.
    drop(w);
    let (w, _) = writer(&store).await;
    assert_eq!(
        send(&w, message("a", "b", 7, 1000)).await,
        SendOutcome::Stored(7)
    );
}

#[tokio::test]
async fn one_commit_acknowledges_many_mailboxes_and_coalesces_repeated_acks() {
    let db = TestDb::new().await;
    let store = open(&db).await;
    let (w, _) = writer(&store).await;
    // More mailboxes than one writer batch holds, submitted without waiting (the writer runs
    // only once this task yields), so a batch is full of acknowledgements for distinct mailboxes.
    const BOXES: usize = 1_500;
    let mut answers = Vec::new();
    for i in 0..BOXES {
        for id in 0..2u8 {
            let (done, rx) = oneshot::channel();
            let mut m = message("s", &format!("r{i}"), id, 1000);
            m.client_id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            assert!(w.submit(Write::Send { message: m, done }).await);
            answers.push(rx);
        }
    }
    for rx in answers {
        assert!(matches!(
            rx.await.expect("answer").expect("commit"),
            SendOutcome::Stored(_)
        ));
    }
    // Every mailbox acknowledged through 1, then through 2, then (out of order, in one batch
    // with the others) through 1 again: cumulative, so each ends at 2 and each message is
    // deleted exactly once. The first batch holds a full batch of distinct mailboxes.
    let mut acks = Vec::new();
    for through in [1, 2, 1] {
        for i in 0..BOXES {
            let (done, rx) = oneshot::channel();
            assert!(
                w.submit(Write::Ack {
                    recipient: format!("r{i}"),
                    through,
                    done
                })
                .await
            );
            acks.push(rx);
        }
    }
    let mut deleted = 0;
    for rx in acks {
        deleted += rx.await.expect("answer").expect("commit");
    }
    assert_eq!(deleted, 2 * BOXES as i64);
    assert_eq!(w.held(), 0);
    for i in [0, BOXES / 2, BOXES - 1] {
        assert_eq!(
            store.position(&format!("r{i}")).await.expect("position").0,
            2
        );
    }
}

/// Under a steady stream of commits a passive checkpoint never reaches the end of the log, and
/// SQLite only restarts the log once one has: the writer finishes the checkpoint between two
/// commits, so the log stays bounded however much is written through it.
#[tokio::test]
async fn the_sqlite_log_restarts_instead_of_growing_under_a_steady_load() {
    let db = TestDb::sqlite();
    let store = open(&db).await;
    let w = Writer::spawn(
        store.clone(),
        Bounds {
            max_messages: 10_000,
            max_bytes: 1 << 30,
        },
        Box::new(|_| {}),
    )
    .await
    .expect("writer");
    let url = db.url_for_process();
    let wal = std::path::PathBuf::from(format!("{}-wal", url.trim_start_matches("sqlite://")));
    // One commit after the other, as fast as the log is flushed: a checkpoint beside them
    // always finds a newer commit in the log by the time it is done.
    let (messages, payload) = (6000u32, 64 * 1024);
    let mut largest = 0;
    for n in 1..=messages {
        let mut m = message("a", "b", 0, 1000);
        m.client_id[..4].copy_from_slice(&n.to_be_bytes());
        m.payload = vec![1; payload];
        assert_eq!(send(&w, m).await, SendOutcome::Stored(i64::from(n)));
        if n % 10 == 0 {
            assert_eq!(ack(&w, "b", i64::from(n)).await, 10);
        }
        largest = largest.max(std::fs::metadata(&wal).expect("the log exists").len());
    }
    let written = u64::from(messages) * payload as u64;
    assert!(
        largest < written / 2,
        "the log grew to {largest} bytes while {written} bytes of payload went through it"
    );
}

/// Publishing keys while the writer commits sends: every registration succeeds. A deferred
/// SQLite transaction that has read cannot become a write once another connection committed
/// (SQLite answers "database is locked" at once, with no busy wait: seen as a 500 on
/// `/v1/relay/keys` 7 ms into the request under `keymesh-bench relay`), so every write
/// transaction takes its lock up front.
#[tokio::test]
async fn keys_publish_while_the_writer_is_saturated() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use keymesh_relay::registry::{KeyRow, Registry};

    let test_db = TestDb::new().await;
    let db = Db::open_for(ServiceName::Relay, test_db.url())
        .await
        .expect("open the relay database");
    let store = Store::new(db.clone());
    let registry = Arc::new(Registry::load(db).await.expect("registry"));
    let big = Bounds {
        max_messages: 1_000_000,
        max_bytes: 1 << 40,
    };
    let w = Writer::spawn(store.clone(), big, Box::new(|_| {}))
        .await
        .expect("writer");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut m = message(&format!("s{sent}"), "busy", 1, 1000);
                m.payload = vec![7; 4096];
                send(&w, m).await;
                sent += 1;
            }
            sent
        })
    };
    let mut publishers = tokio::task::JoinSet::new();
    for n in 0..24 {
        let registry = Arc::clone(&registry);
        publishers.spawn(async move {
            for version in 1..=4 {
                let row = KeyRow {
                    node: format!("n{n}"),
                    version,
                    group_id: "g".into(),
                    identity_key: vec![n; 32],
                    enc_key: vec![u8::try_from(version).expect("small"); 32],
                    signature: vec![0; 64],
                    created_ms: 0,
                    retired_ms: None,
                };
                registry
                    .register(&row, 1000 + version)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("n{n} v{version}: {}", keymesh_core::error::error_chain(&e))
                    })
                    .expect("a newer version");
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done.expect("every registration succeeds while the writer is busy");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.expect("load");
    assert!(sent > 0, "the writer was busy meanwhile");
    assert_eq!(registry.len(), 24);
}
