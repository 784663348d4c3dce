//! The PostgreSQL backend with several writers at once, as several replicas are: one schema
//! migration, one audit chain, one release per bundle, a rollout that moves exactly once, and
//! a database that goes away and comes back. Each test starts its own throwaway PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::postgres::TestPostgres;
use serde_json::json;
use sigil_server::audit::verify_entries;
use sigil_server::rollout::{DeploymentState, RolloutPolicy};
use sigil_server::store::prelude::*;
use sigil_server::store::{
    AuditAction, AuditEvent, CheckIn, CheckInState, Device, NewDeployment, Page, PgStore, Product,
    Release, StoreError, Target,
};

fn event(n: usize) -> AuditEvent {
    AuditEvent::new(
        "ops",
        AuditAction::TokenCreate,
        &n.to_string(),
        json!({ "n": n }),
    )
}

fn replicas(pg: &TestPostgres, n: usize) -> Vec<Arc<PgStore>> {
    (0..n)
        .map(|_| Arc::new(PgStore::open(&pg.url(), None).unwrap()))
        .collect()
}

fn release(id: &str) -> Release {
    Release {
        id: id.to_owned(),
        vendor: "acme".into(),
        device: "pump".into(),
        component: "app".into(),
        version: "1.2.0".into(),
        security_counter: 5,
        payload_size: 10,
        payload_digest: "00".repeat(32),
        key_set_version: 1,
        created: 1,
        expires: None,
        size: 100,
        uploaded_at: 2,
        uploaded_by: "release".into(),
        retired: false,
    }
}

fn device(id: &str) -> Device {
    Device {
        id: id.to_owned(),
        product: Product {
            vendor: "acme".into(),
            device: "pump".into(),
        },
        public_key: "00".repeat(32),
        channel: "stable".into(),
        groups: vec!["ward-3".into()],
        labels: BTreeMap::new(),
        revoked: false,
        enrolled_at: 3,
        last_seen: None,
        version: None,
        security_counter: None,
        state: None,
    }
}

fn actions(store: &PgStore, action: AuditAction) -> usize {
    store
        .audit_entries(0, u32::MAX)
        .unwrap()
        .iter()
        .filter(|e| e.action == action.as_str())
        .count()
}

#[test]
fn replicas_starting_together_migrate_once() {
    let pg = TestPostgres::start();
    let url = pg.url();
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PgStore::open(&url, None).map(|_| ())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in opened {
        r.unwrap();
    }
    let rows = pg
        .client()
        .query("SELECT version FROM sigil_schema", &[])
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].get::<_, i64>(0) >= 1);
}

#[test]
fn concurrent_writers_keep_one_audit_chain_and_store_one_release_per_bundle() {
    let pg = TestPostgres::start();
    let stores = replicas(&pg, 3);
    let inserted: Vec<bool> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            for t in 0..2 {
                let store = Arc::clone(store);
                handles.push(s.spawn(move || {
                    let mut won = false;
                    for n in 0..40 {
                        store
                            .append_audit(&event(i * 1000 + t * 100 + n), 10)
                            .unwrap();
                        if n == 20 {
                            // Every writer uploads the same bundle at about the same time.
                            won = store.insert_release(&release("abc"), &event(9999)).unwrap();
                        }
                    }
                    won
                }));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(inserted.iter().filter(|w| **w).count(), 1, "one release");
    let entries = stores[0].audit_entries(0, u32::MAX).unwrap();
    assert_eq!(entries.len(), 3 * 2 * 40 + 1);
    verify_entries(&entries).unwrap();
    assert_eq!(stores[1].release_ids().unwrap(), ["abc"]);
}

#[test]
fn a_rollout_moves_exactly_once_whatever_replica_takes_the_reports() {
    let pg = TestPostgres::start();
    let stores = replicas(&pg, 3);
    let s0 = &stores[0];
    s0.insert_release(&release("rel"), &event(0)).unwrap();
    let ids: Vec<String> = (0..30).map(|i| format!("pump-{i:02}")).collect();
    for id in &ids {
        s0.enrol_device(&device(id), &event(1)).unwrap();
    }
    let dep = s0
        .create_deployment(
            &NewDeployment {
                release_id: "rel".into(),
                target: Target::Channel("stable".into()),
                policy: RolloutPolicy {
                    phases: vec![10, 100],
                    min_success_percent: 100,
                    max_failure_percent: 50,
                    hold_after_phase: None,
                },
            },
            5,
            "operator",
        )
        .unwrap();
    // Rounds: every device checks in (through any replica, concurrently); the admitted ones
    // confirm. Phase 0 admits 3 devices; once they confirm the rollout advances, then all
    // devices confirm and it completes.
    for round in 0..4 {
        std::thread::scope(|s| {
            for (i, id) in ids.iter().enumerate() {
                let store = Arc::clone(&stores[(i + round) % stores.len()]);
                s.spawn(move || {
                    let idle = CheckIn {
                        device_id: id.clone(),
                        version: "1.0.0".into(),
                        security_counter: 1,
                        state: CheckInState::Idle,
                        deployment_id: None,
                        detail: None,
                    };
                    if let Some(a) = store.check_in(&idle, 10, 5).unwrap() {
                        let confirmed = CheckIn {
                            version: "1.2.0".into(),
                            security_counter: 5,
                            state: CheckInState::Confirmed,
                            deployment_id: Some(a.deployment_id),
                            ..idle
                        };
                        store.check_in_batch(&[confirmed], 11, 5).unwrap()[0]
                            .as_ref()
                            .unwrap();
                    }
                });
            }
        });
    }
    let detail = stores[2].deployment(dep.id, Page::ALL).unwrap().unwrap();
    assert_eq!(detail.deployment.state, DeploymentState::Completed);
    assert!(detail
        .members
        .iter()
        .all(|m| m.status.as_str() == "confirmed"));
    assert_eq!(
        actions(s0, AuditAction::DeploymentAdvance),
        1,
        "advanced once"
    );
    assert_eq!(
        actions(s0, AuditAction::DeploymentComplete),
        1,
        "completed once"
    );
    assert_eq!(actions(s0, AuditAction::DeviceStatus), 30);
    verify_entries(&s0.audit_entries(0, u32::MAX).unwrap()).unwrap();
}

#[test]
fn the_audit_tables_refuse_edits_and_out_of_chain_inserts() {
    let pg = TestPostgres::start();
    let store = PgStore::open(&pg.url(), None).unwrap();
    store.append_audit(&event(1), 1).unwrap();
    store.append_audit(&event(2), 2).unwrap();
    let mut c = pg.client();
    for sql in [
        "UPDATE audit SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 2",
        "TRUNCATE audit",
        "INSERT INTO audit SELECT 4, at, actor, action, subject, detail, hash, hash FROM audit WHERE seq = 2",
        "INSERT INTO audit SELECT 3, at, actor, action, subject, detail, prev_hash, hash FROM audit WHERE seq = 2",
        "DELETE FROM audit_checkpoints",
    ] {
        let e = c.batch_execute(sql).unwrap_err();
        assert!(e.to_string().contains("append-only") || format!("{e:?}").contains("append-only"), "{sql}: {e:?}");
    }
    assert_eq!(store.audit_entries(0, 10).unwrap().len(), 2);
}

#[test]
fn a_database_that_goes_away_is_unavailable_until_it_is_back() {
    let mut pg = TestPostgres::start();
    let store = PgStore::open(&pg.url(), None).unwrap();
    store.append_audit(&event(1), 1).unwrap();
    pg.stop();
    match store.append_audit(&event(2), 2) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    pg.restart();
    // The broken connections are dropped on the way; within a few calls the pool serves again.
    let mut ok = false;
    for _ in 0..20 {
        match store.append_audit(&event(3), 3) {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok, "the pool reconnects");
    assert_eq!(
        store.audit_entries(0, 10).unwrap().len(),
        2,
        "entry 2 was never acknowledged"
    );
}

#[test]
fn sslmode_require_without_a_ca_file_is_refused_with_a_clear_error() {
    let e = PgStore::open("postgres://sigil@127.0.0.1:1/sigil?sslmode=require", None).unwrap_err();
    assert!(e.to_string().contains("database_ca_file"), "{e}");
}

#[test]
fn tls_to_the_database_is_verified_against_database_ca_file() {
    let (pg, ca) = TestPostgres::start_with_tls();
    let store = PgStore::open(&pg.url(), Some(&ca)).unwrap();
    store.append_audit(&event(1), 1).unwrap();
    // The store's connections are TLS (a CA file means TLS is required).
    let mut c = pg.client();
    let tls: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE s.ssl AND a.application_name = 'sigil-server'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(tls >= 1, "no TLS connection from sigil-server");
    // Another CA's certificate is refused: the server's certificate is verified.
    let (_other, other_ca) = TestPostgres::start_with_tls();
    let e = PgStore::open(&pg.url(), Some(&other_ca)).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
}

#[test]
fn schema_differences_name_missing_altered_and_added_objects_of_sigils_tables() {
    let pg = TestPostgres::start();
    let store = PgStore::open(&pg.url(), None).unwrap();
    assert_eq!(store.schema_differences().unwrap(), Vec::<String>::new());
    // Objects beside Sigil's own are not Sigil's business.
    pg.client()
        .batch_execute("CREATE TABLE other_app (x INT); CREATE VIEW other_view AS SELECT 1 AS one")
        .unwrap();
    assert_eq!(store.schema_differences().unwrap(), Vec::<String>::new());

    pg.client()
        .batch_execute(
            "DROP TRIGGER audit_no_update ON audit; \
             ALTER TABLE audit DISABLE TRIGGER audit_append_only; \
             ALTER TABLE reports ALTER COLUMN detail TYPE VARCHAR(10); \
             ALTER TABLE devices ADD COLUMN note TEXT; \
             DROP INDEX reports_by_device; \
             ALTER TABLE root_chain RENAME TO root_chain_old",
        )
        .unwrap();
    let d = store.schema_differences().unwrap().join("\n");
    for expected in [
        "trigger audit.audit_no_update is missing",
        "trigger audit.audit_append_only was altered",
        "column reports.detail was altered",
        "unexpected column devices.note",
        "index reports_by_device is missing",
        "table root_chain is missing",
    ] {
        assert!(d.contains(expected), "{expected:?} not in:\n{d}");
    }
    // The check left nothing behind (its scratch schema is rolled back).
    let schemas: i64 = pg
        .client()
        .query_one(
            "SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'sigil%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}

#[test]
fn a_batch_with_repeated_and_unknown_devices_is_recorded_in_order_and_trimmed() {
    let pg = TestPostgres::start();
    let store = PgStore::open(&pg.url(), None).unwrap();
    store.insert_release(&release("rel"), &event(0)).unwrap();
    for id in ["pump-a", "pump-b"] {
        store.enrol_device(&device(id), &event(1)).unwrap();
    }
    let dep = store
        .create_deployment(
            &NewDeployment {
                release_id: "rel".into(),
                target: Target::Channel("stable".into()),
                policy: RolloutPolicy {
                    phases: vec![100],
                    min_success_percent: 100,
                    max_failure_percent: 50,
                    hold_after_phase: None,
                },
            },
            5,
            "operator",
        )
        .unwrap();
    let ci = |id: &str, version: &str, state: CheckInState, deployment_id: Option<i64>| CheckIn {
        device_id: id.to_owned(),
        version: version.to_owned(),
        security_counter: 1,
        state,
        deployment_id,
        detail: None,
    };
    let count = |action: AuditAction| actions(&store, action);
    // A device three times in one group (the last a report for the rollout), an unknown one.
    let batch = [
        ci("pump-b", "1.0.0", CheckInState::Idle, None),
        ci("pump-a", "1.0.0", CheckInState::Idle, None),
        ci("ghost", "1.0.0", CheckInState::Idle, None),
        ci("pump-a", "1.0.0", CheckInState::Idle, None),
        ci("pump-a", "1.2.0", CheckInState::Confirmed, Some(dep.id)),
    ];
    let out = store.check_in_batch(&batch, 20, 2).unwrap();
    assert_eq!(out.len(), 5);
    for i in [0, 1, 3] {
        let a = out[i]
            .as_ref()
            .unwrap()
            .as_ref()
            .expect("offered the release");
        assert_eq!((a.deployment_id, a.release.id.as_str()), (dep.id, "rel"));
    }
    assert!(
        matches!(out[2], Err(StoreError::NotFound { .. })),
        "{:?}",
        out[2]
    );
    assert!(
        out[4].as_ref().unwrap().is_none(),
        "confirmed: nothing more to offer"
    );
    // Recorded in the group's order, trimmed to the last two.
    let reports = store.reports("pump-a", 10).unwrap();
    let seen: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| (r.check_in.version.as_str(), r.check_in.state.as_str()))
        .collect();
    assert_eq!(seen, [("1.2.0", "confirmed"), ("1.0.0", "idle")]);
    let a = store.device("pump-a").unwrap().unwrap();
    assert_eq!(
        (a.version.as_deref(), a.last_seen),
        (Some("1.2.0"), Some(20))
    );
    // A report per change (pump-b's first, pump-a's first and its confirm), not per check-in.
    assert_eq!(count(AuditAction::DeviceReport), 3);
    assert_eq!(count(AuditAction::DeviceStatus), 1);

    // Unchanged check-ins: no lock, no audit entry, still recorded.
    let entries = store.audit_entries(0, u32::MAX).unwrap().len();
    let out = store
        .check_in_batch(&[ci("pump-b", "1.0.0", CheckInState::Idle, None)], 21, 2)
        .unwrap();
    assert!(out[0].as_ref().unwrap().is_some());
    assert_eq!(store.audit_entries(0, u32::MAX).unwrap().len(), entries);
    assert_eq!(store.reports("pump-b", 10).unwrap().len(), 2);
    // A group that turns out to change something (a new version, no rollout report) runs
    // again under the write lock and is audited once.
    let out = store
        .check_in_batch(
            &[
                ci("pump-b", "1.0.0", CheckInState::Idle, None),
                ci("pump-a", "1.3.0", CheckInState::Idle, None),
            ],
            22,
            2,
        )
        .unwrap();
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(count(AuditAction::DeviceReport), 4);
    assert_eq!(
        store.device("pump-a").unwrap().unwrap().version.as_deref(),
        Some("1.3.0")
    );
    verify_entries(&store.audit_entries(0, u32::MAX).unwrap()).unwrap();
}

/// Token lookups grouped into one statement: each hash gets its own answer, in order (a
/// session, an API token, the same session twice, an expired session, a revoked device's
/// session, an unknown hash), and a device revoked through one replica fails the next group
/// of another (nothing is cached).
#[test]
fn grouped_token_lookups_answer_each_hash_in_order_and_see_a_revocation_at_once() {
    use sigil_server::store::{Role, TokenGrant};
    let pg = TestPostgres::start();
    let stores = replicas(&pg, 2);
    let (a, b) = (&stores[0], &stores[1]);
    for id in ["pump-a", "pump-b", "pump-c"] {
        a.enrol_device(&device(id), &event(1)).unwrap();
    }
    let grant = |hash: &[u8; 32], name: &str, role, device_id, expires_at| {
        a.create_token(
            &TokenGrant {
                hash,
                name,
                role,
                device_id,
                expires_at,
                owner: None,
            },
            10,
            None,
        )
        .unwrap();
    };
    grant(
        &[1; 32],
        "device:pump-a",
        Role::Device,
        Some("pump-a"),
        Some(1000),
    );
    grant(&[2; 32], "ci", Role::Release, None, None);
    grant(
        &[3; 32],
        "device:pump-b",
        Role::Device,
        Some("pump-b"),
        Some(50),
    );
    grant(
        &[4; 32],
        "device:pump-c",
        Role::Device,
        Some("pump-c"),
        Some(1000),
    );
    let names = |store: &PgStore, hashes: &[[u8; 32]]| -> Vec<Option<String>> {
        store
            .principals(hashes, 100)
            .unwrap()
            .into_iter()
            .map(|p| p.map(|p| p.name))
            .collect()
    };
    let group = [[1; 32], [2; 32], [1; 32], [3; 32], [4; 32], [9; 32]];
    let some = |n: &str| Some(n.to_owned());
    assert_eq!(
        names(b, &group),
        [
            some("device:pump-a"),
            some("ci"),
            some("device:pump-a"),
            None,
            some("device:pump-c"),
            None
        ]
    );
    assert_eq!(
        b.principal(&[4; 32], 100)
            .unwrap()
            .unwrap()
            .device_id
            .as_deref(),
        Some("pump-c")
    );
    a.revoke_device("pump-c", &event(2)).unwrap();
    assert_eq!(names(b, &[[4; 32], [1; 32]]), [None, some("device:pump-a")]);
    assert_eq!(b.principals(&[], 100).unwrap(), Vec::new());
}
