//! `sigil-server migrate`: a populated SQLite installation moved into PostgreSQL, audit chain
//! and bundles included, verified, then served by a server on PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::postgres::TestPostgres;
use common::*;
use serde_json::json;
use sigil_server::store::prelude::*;
use sigil_server::store::{Page, PgStore, Role, SqliteStore, StoreError};

const BIN: &str = env!("CARGO_BIN_EXE_sigil-server");

#[tokio::test]
async fn a_populated_sqlite_installation_moves_to_postgres_and_verifies() {
    // A populated installation on SQLite: a release, devices, a deployment, reports.
    let h = Harness::new();
    assert!(h.pg.is_none(), "the source is SQLite");
    let (s, r) = h.upload(release_bundle("1.2.0", 5)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let release = r["id"].as_str().unwrap().to_owned();
    for (id, seed) in [("pump-1", 41), ("pump-2", 42), ("pump-3", 43)] {
        assert_eq!(h.enrol(id, seed, json!({})).await.0, StatusCode::CREATED);
    }
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "channel", "value": "stable" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let dep = d["id"].as_i64().unwrap();
    let token = h.session("pump-1", 41).await.unwrap();
    h.check_in(&token, "idle", None).await;
    h.check_in(&token, "confirmed", Some(dep)).await;
    // The root chain an administrator gave (root 1 -> 2) moves too.
    let put = axum::http::Request::put("/api/v1/root-chain")
        .header("authorization", format!("Bearer {}", h.token(Role::Admin)))
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(chain(1, 2)))
        .unwrap();
    assert_eq!(h.send(put).await.status(), StatusCode::OK);
    let source = SqliteStore::open(&h.data().join("sigil.db")).unwrap();
    let source_entries = source.audit_entries(0, u32::MAX).unwrap();
    let source_detail = source.deployment(dep, Page::ALL).unwrap().unwrap();

    let data = h.data();
    let (pg, url) = std::thread::spawn(|| {
        let pg = TestPostgres::start();
        let url = pg.url();
        (pg, url)
    })
    .join()
    .unwrap();

    // The command line, as an operator runs it.
    let out = std::process::Command::new(BIN)
        .args(["migrate", "--from"])
        .arg(&data)
        .args(["--to", &url])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("migrated and verified: 1 bundles"),
        "{stdout}"
    );
    assert!(stdout.contains("audit.key"), "{stdout}");

    let checks = std::thread::spawn(move || {
        let store = PgStore::open(&url, None).unwrap();
        assert_eq!(store.audit_entries(0, u32::MAX).unwrap(), source_entries);
        let detail = store.deployment(dep, Page::ALL).unwrap().unwrap();
        assert_eq!(detail, source_detail);
        assert_eq!(store.release_ids().unwrap(), std::slice::from_ref(&release));
        let mut bytes = Vec::new();
        assert!(store.get_bundle(&release, &mut bytes).unwrap());
        assert_eq!(bytes, release_bundle("1.2.0", 5));
        assert_eq!(store.root_chain().unwrap(), Some(chain(1, 2)));
        // New rows continue after the copied ids.
        let next = store
            .create_deployment(
                &sigil_server::store::NewDeployment {
                    release_id: release.clone(),
                    target: sigil_server::store::Target::Channel("stable".into()),
                    policy: sigil_server::rollout::RolloutPolicy {
                        phases: vec![100],
                        min_success_percent: 100,
                        max_failure_percent: 10,
                        hold_after_phase: None,
                    },
                },
                sigil_server::store::now_secs(),
                "operator",
            )
            .unwrap();
        assert!(next.id > dep);
        // A second run refuses the database that is no longer empty.
        match sigil_server::store::migrate::sqlite_to_postgres(&data, &store) {
            Err(StoreError::Conflict(m)) => assert!(m.contains("not empty"), "{m}"),
            other => panic!("{other:?}"),
        }
        drop(pg);
    });
    checks.join().unwrap();
}

#[test]
fn migrating_a_directory_without_a_database_says_so() {
    let pg = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["migrate", "--from"])
        .arg(dir.path())
        .args(["--to", &pg.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sigil.db does not exist"), "{err}");
}
