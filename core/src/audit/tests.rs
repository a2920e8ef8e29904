//! The chain on a real database, on the selected backend.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::{
    config::ServiceName,
    storage::{Db, testing::TestDb},
    with_pool,
};

async fn vault_db() -> (TestDb, Db) {
    let test_db = TestDb::new().await;
    let db = Db::open_for(ServiceName::Vault, test_db.url())
        .await
        .expect("db");
    (test_db, db)
}

fn event(i: usize) -> AuditEvent {
    AuditEvent::new(
        format!("node:n{i}"),
        "secret.read",
        "vault:g/db/password",
        Outcome::Success,
    )
    .with_details(json!({ "i": i }))
}

#[tokio::test]
async fn concurrent_appends_form_one_unbroken_chain() {
    let (_t, db) = vault_db().await;
    let log = AuditLog::spawn(db.clone(), Duration::from_secs(5));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.record(event(i)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join").expect("recorded"));
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<i64>>(),
        "every event got its own sequence"
    );
    let report = verify(&db).await.expect("verify");
    assert_eq!(report.checked, 200);
    assert_eq!(report.first_broken, None, "{report:?}");
}

#[tokio::test]
async fn verify_names_the_first_altered_removed_or_reordered_record() {
    let (_t, db) = vault_db().await;
    let log = AuditLog::spawn(db.clone(), Duration::from_secs(5));
    for i in 0..10 {
        log.record(event(i)).await.expect("recorded");
    }
    // Alter one field of record 4.
    with_pool!(&db, pool => sqlx::query("UPDATE audit_log SET actor = 'node:evil' WHERE seq = 4").execute(pool).await.map(drop)).expect("tamper");
    let report = verify(&db).await.expect("verify");
    assert_eq!(report.first_broken, Some(4), "{report:?}");
    assert_eq!(report.checked, 3);

    // Rewrite record 4 consistently (recomputed hash): record 5's link now breaks.
    let (_t2, db2) = vault_db().await;
    let log2 = AuditLog::spawn(db2.clone(), Duration::from_secs(5));
    for i in 0..10 {
        log2.record(event(i)).await.expect("recorded");
    }
    let mut forged: AuditRecord = with_pool!(&db2, pool => sqlx::query_as("SELECT * FROM audit_log WHERE seq = 4").fetch_one(pool).await).expect("row");
    forged.actor = "node:evil".into();
    forged.hash = record_hash(&forged);
    with_pool!(&db2, pool => sqlx::query("UPDATE audit_log SET actor = $1, hash = $2 WHERE seq = 4").bind(&forged.actor).bind(&forged.hash).execute(pool).await.map(drop)).expect("forge");
    assert_eq!(verify(&db2).await.expect("verify").first_broken, Some(5));

    // Delete the tail: the head no longer matches.
    with_pool!(&db2, pool => sqlx::query("DELETE FROM audit_log WHERE seq >= 9").execute(pool).await.map(drop)).expect("truncate");
    let report = verify(&db2).await.expect("verify");
    assert_eq!(
        report.first_broken,
        Some(5),
        "first break still reported first: {report:?}"
    );

    // Delete a middle record, then the last one.
    let (_t3, db3) = vault_db().await;
    let log3 = AuditLog::spawn(db3.clone(), Duration::from_secs(5));
    for i in 0..5 {
        log3.record(event(i)).await.expect("recorded");
    }
    with_pool!(&db3, pool => sqlx::query("DELETE FROM audit_log WHERE seq = 3").execute(pool).await.map(drop)).expect("drop middle");
    assert_eq!(verify(&db3).await.expect("verify").first_broken, Some(3));
    let (_t4, db4) = vault_db().await;
    let log4 = AuditLog::spawn(db4.clone(), Duration::from_secs(5));
    for i in 0..5 {
        log4.record(event(i)).await.expect("recorded");
    }
    with_pool!(&db4, pool => sqlx::query("DELETE FROM audit_log WHERE seq = 5").execute(pool).await.map(drop)).expect("drop last");
    let report = verify(&db4).await.expect("verify");
    assert_eq!(report.first_broken, Some(5), "{report:?}");
}

#[tokio::test]
async fn record_fails_closed_when_the_database_is_gone() {
    let (_t, db) = vault_db().await;
    let log = AuditLog::spawn(db.clone(), Duration::from_millis(500));
    log.record(event(0)).await.expect("first is fine");
    db.close().await;
    let started = std::time::Instant::now();
    assert!(log.record(event(1)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3), "bounded wait");
}
