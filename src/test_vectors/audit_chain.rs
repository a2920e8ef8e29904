//! The audit chain: record hashes, an export, signed checkpoints.

use super::*;

// ---------------------------------------------------------------------------------------------
// The audit chain.

/// The documented canonical bytes of a record (docs/protocol/audit.md).
fn audit_preimage(r: &AuditRecord) -> Vec<u8> {
    let mut m = b"keymesh-audit-v1".to_vec();
    for field in [
        &r.seq.to_be_bytes()[..],
        &r.at_ms.to_be_bytes()[..],
        r.actor.as_bytes(),
        r.action.as_bytes(),
        r.target.as_bytes(),
        r.outcome.as_bytes(),
        r.details.as_bytes(),
        r.prev_hash.as_bytes(),
    ] {
        m.extend_from_slice(&u64::try_from(field.len()).expect("len").to_be_bytes());
        m.extend_from_slice(field);
    }
    m
}

/// Link `records` from `prev` with the project's hash function.
fn rechain(records: &mut [AuditRecord], mut prev: String) {
    for r in records {
        r.prev_hash = prev;
        r.hash = audit::record_hash(r);
        assert_eq!(r.hash, hex::encode(sha256(&audit_preimage(r))));
        prev = r.hash.clone();
    }
}

async fn store(db: &Db, records: &[AuditRecord]) {
    const ROW: &str = "UPDATE audit_log SET at_ms = $1, details = $2, prev_hash = $3, hash = $4 \
                       WHERE seq = $5";
    const HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
    for r in records {
        with_pool!(db, pool => sqlx::query(ROW).bind(r.at_ms).bind(&r.details).bind(&r.prev_hash)
            .bind(&r.hash).bind(r.seq).execute(pool).await.map(drop))
        .expect("update");
    }
    let last = records.last().expect("records");
    with_pool!(db, pool => sqlx::query(HEAD).bind(last.seq).bind(&last.hash).execute(pool).await.map(drop))
        .expect("head");
}

fn export_line(r: &AuditRecord) -> String {
    keymesh_management::audit::record_json(r).to_string()
}

fn record_json(r: &AuditRecord) -> J {
    obj([
        ("seq", r.seq.into()),
        ("at_ms", r.at_ms.into()),
        ("actor", r.actor.as_str().into()),
        ("action", r.action.as_str().into()),
        ("target", r.target.as_str().into()),
        ("outcome", r.outcome.as_str().into()),
        ("details", r.details.as_str().into()),
        ("prev_hash", r.prev_hash.as_str().into()),
        ("hash", r.hash.as_str().into()),
    ])
}

#[tokio::test]
async fn audit_chain_vectors() {
    let user = "user:3f2b8c1e-5a47-4d0e-9b6a-2c1d7e8f9a0b";
    let events = [
        AuditEvent::new(
            user,
            "vault.ceremony.open",
            "vault:payments",
            Outcome::Success,
        )
        .with_details(json!({
            "kind": "unlock",
            "ceremony": "0d5f9a3c-8b1e-4c27-a6d4-3e9f1b2c7a80",
            "approval": "5c8e2f1a-7d3b-4a69-b0e4-9f6c1d2a3b45",
        })),
        AuditEvent::new(user, "node.disable", "node:node-a", Outcome::Success).with_details(
            json!({ "reason": "Laptop gestohlen – \"ticket\" #42 / Zürich\nsee the runbook" }),
        ),
        AuditEvent::new(
            "node:node-a",
            "secret.read",
            "vault:payments/db/password",
            Outcome::Denied,
        )
        .with_details(json!({
            "service": "vault",
            "seq": 17,
            "at_ms": TS * 1000 - 250,
            "hash": hex::encode(fixed("an imported vault record hash")),
            "details": { "reason": "forbidden", "op": "read" },
        })),
    ];
    let at_ms = [TS * 1000, TS * 1000 + 1500, TS * 1000 + 2750];
    let test_db = TestDb::sqlite();
    let db = Db::open_for(ServiceName::Management, test_db.url())
        .await
        .expect("db");
    // The records are written by the project's audit writer; only their times are then fixed
    // (and the chain linked again with the project's hash function) so the vector is stable.
    let log = AuditLog::spawn(db.clone(), Duration::from_secs(5));
    for event in events {
        log.record(event).await.expect("recorded");
    }
    let mut records = audit::query(&db, &AuditQuery::default(), 0, 100)
        .await
        .expect("query");
    assert_eq!(records.len(), 3);
    for (r, at) in records.iter_mut().zip(at_ms) {
        r.at_ms = at;
    }
    rechain(&mut records, GENESIS.to_owned());
    store(&db, &records).await;
    let report = audit::verify(&db).await.expect("verify");
    assert_eq!(
        (report.checked, report.first_broken),
        (3, None),
        "{report:?}"
    );

    let management_secret = "test-vector-management-secret-key-never-use-it";
    let signer = CheckpointSigner::new(&Keyed::new(SecretString::from(management_secret)));
    let checkpoint = signer
        .checkpoint(&db)
        .await
        .expect("checkpoint")
        .expect("the chain grew");
    let head = records.last().expect("records");
    assert_eq!((checkpoint.seq, &checkpoint.hash), (head.seq, &head.hash));
    let checkpoint_message = format!("keymesh-audit-checkpoint-v1\n{}\n{}", head.seq, head.hash);
    let signature: [u8; 64] = hex::decode(&checkpoint.signature)
        .expect("hex")
        .try_into()
        .expect("64 bytes");
    signer
        .public()
        .verify_strict(
            checkpoint_message.as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .expect("the documented checkpoint message is what is signed");
    let report = checkpoints::verify(&db, &signer.public())
        .await
        .expect("checkpoints");
    assert_eq!(report.first_bad, None, "{report:?}");

    // Tampered: one record's content changed, its hash kept.
    let mut altered = records.clone();
    altered[1].details = altered[1].details.replace("#42", "#43");
    store(&db, &altered).await;
    let tampered = audit::verify(&db).await.expect("verify");
    assert_eq!(tampered.first_broken, Some(2), "{tampered:?}");
    // Rewritten: the change and every hash after it recomputed; the chain holds, the signed
    // checkpoint does not.
    let mut rewritten = altered.clone();
    rechain(&mut rewritten[1..], records[0].hash.clone());
    store(&db, &rewritten).await;
    let rechained = audit::verify(&db).await.expect("verify");
    assert_eq!(rechained.first_broken, None, "{rechained:?}");
    let cp_report = checkpoints::verify(&db, &signer.public())
        .await
        .expect("checkpoints");
    assert_eq!(cp_report.first_bad, Some(3), "{cp_report:?}");

    let lines = |records: &[AuditRecord]| -> J {
        J::Arr(records.iter().map(|r| export_line(r).into()).collect())
    };
    let doc = obj([
        (
            "description",
            "Audit hash chain: hash = hex(SHA-256(\"keymesh-audit-v1\" || for each of seq, at_ms, \
             actor, action, target, outcome, details, prev_hash: u64 BE length || bytes)); seq and \
             at_ms as 8-byte big-endian signed integers, text as UTF-8, prev_hash as its 64 hex \
             characters, the first record's prev_hash 64 zeros."
                .into(),
        ),
        ("spec", "docs/protocol/audit.md".into()),
        ("genesis_prev_hash", GENESIS.into()),
        (
            "records",
            J::Arr(
                records
                    .iter()
                    .map(|r| {
                        obj([
                            ("record", record_json(r)),
                            ("hashed_bytes", binary(&audit_preimage(r))),
                            ("export_line", export_line(r).into()),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "checkpoint",
            obj([
                (
                    "key_from",
                    format!(
                        "derived inside management from MANAGEMENT_SECRET_KEY (here {management_secret:?}); \
                         verifiers need only public_key_hex (GET /v1/audit/checkpoints)"
                    )
                    .into(),
                ),
                ("public_key_hex", hx(signer.public().as_bytes())),
                ("key_id", checkpoint.key_id.as_str().into()),
                ("seq", checkpoint.seq.into()),
                ("hash", checkpoint.hash.as_str().into()),
                ("message", message(checkpoint_message.as_bytes())),
                ("signature_hex", checkpoint.signature.as_str().into()),
                ("verification", "Ed25519 verify_strict".into()),
            ]),
        ),
        (
            "invalid",
            J::Arr(vec![
                obj([
                    ("name", "tampered record".into()),
                    (
                        "why",
                        "record 2's details changed, its hash kept: its content no longer matches its hash"
                            .into(),
                    ),
                    ("export_lines", lines(&altered)),
                    ("first_broken", 2i64.into()),
                    ("reason", tampered.reason.unwrap_or_default().into()),
                ]),
                obj([
                    ("name", "rewritten and re-chained".into()),
                    (
                        "why",
                        "record 2 changed and every hash from it recomputed: the chain holds, but the \
                         signed checkpoint at seq 3 names the old hash"
                            .into(),
                    ),
                    ("export_lines", lines(&rewritten)),
                    ("chain_intact", true.into()),
                    ("checkpoint_first_bad", 3i64.into()),
                    ("reason", cp_report.reason.unwrap_or_default().into()),
                ]),
            ]),
        ),
    ]);
    publish("audit-chain.json", &doc);
}
