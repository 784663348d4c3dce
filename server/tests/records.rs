//! Records through the API and the store: report retention (batched, audited, the chain intact,
//! rollout figures unchanged), one device's export (its data, nothing of another device, scoped,
//! audited) and the records statement built from the configuration. On SQLite, and on
//! PostgreSQL with `TEST_DATABASE=postgres`.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::people::{self, as_person, audited, ENV};
use common::*;
use serde_json::{json, Value};
use sigil_server::audit::{verify_lines, Trust};
use sigil_server::config::{Overrides, ServerConfig};
use sigil_server::records;
use sigil_server::store::{now_secs, Role};

const DAY: u64 = 86_400;

/// The audit export verifies as a chain; its entry count.
async fn chain_verifies(h: &Harness) -> u64 {
    let bytes = people::audit_export(h).await;
    verify_lines(&bytes[..], Trust::default()).unwrap().entries
}

async fn deployment(h: &Harness, id: i64) -> Value {
    let (s, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{id}"),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Two devices in one deployment: `pump-alpha` confirmed, `pump-bravo` failed.
async fn rollout(h: &Harness) -> (i64, String, String) {
    let (s, r) = h.upload(release_bundle("1.2.0", 5)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let release = r["id"].as_str().unwrap().to_owned();
    for (id, seed, group) in [
        ("pump-alpha", 41, "hospital-a"),
        ("pump-bravo", 42, "hospital-b"),
    ] {
        let (s, v) = h.enrol(id, seed, json!({ "groups": [group] })).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "devices", "value": ["pump-alpha", "pump-bravo"] }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let dep = d["id"].as_i64().unwrap();
    let alpha = h.session("pump-alpha", 41).await.unwrap();
    let bravo = h.session("pump-bravo", 42).await.unwrap();
    for state in ["downloading", "installed", "confirmed"] {
        let (s, v) = h.check_in(&alpha, state, Some(dep)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for state in ["downloading", "failed"] {
        let (s, v) = h.check_in(&bravo, state, Some(dep)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    (dep, alpha, bravo)
}

fn reports_of(h: &Harness, device: &str) -> i64 {
    h.raw_i64(&format!(
        "SELECT COUNT(*) FROM reports WHERE device_id = '{device}'"
    ))
}

#[tokio::test]
async fn a_prune_deletes_only_reports_past_retention_records_itself_and_keeps_the_chain_and_rollout_counts(
) {
    let h = Harness::with_env(&[("SIGIL_REPORT_RETENTION_DAYS", "30")]);
    let (dep, alpha, _) = rollout(&h).await;
    let before = deployment(&h, dep).await;
    assert_eq!(before["counts"]["confirmed"], 1, "{before}");
    assert_eq!(before["counts"]["failed"], 1, "{before}");

    // pump-alpha's reports so far are 31 days old; it reports once more today.
    h.raw_execute(
        "UPDATE reports SET at = at - 2678400 WHERE device_id = 'pump-alpha'",
        "UPDATE reports SET at = at - 2678400 WHERE device_id = 'pump-alpha'",
    );
    let old = reports_of(&h, "pump-alpha");
    assert!(old >= 3, "each check-in is a report ({old})");
    let (s, v) = h.check_in(&alpha, "idle", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let bravo_reports = reports_of(&h, "pump-bravo");
    assert!(bravo_reports >= 2);
    let entries_before = chain_verifies(&h).await;

    // Batches of two: several transactions, one audit entry each.
    let now = now_secs();
    let cutoff = records::cutoff(&h.state.config, now);
    assert_eq!(cutoff, now - 30 * DAY);
    let outcome = h.blocking(|s| {
        records::prune_before(s, cutoff, 30, records::RETENTION_ACTOR, 2, now).unwrap()
    });
    assert_eq!(outcome.reports, old as u64);
    assert_eq!(outcome.batches, (old as u64).div_ceil(2));
    assert_eq!(reports_of(&h, "pump-alpha"), 1, "today's report stays");
    assert_eq!(reports_of(&h, "pump-bravo"), bravo_reports);
    let (_, kept) = h
        .call(
            "GET",
            "/api/v1/devices/pump-alpha/reports",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(kept.as_array().unwrap().len(), 1);
    assert_eq!(kept[0]["state"], "idle");

    // The chain grew by one entry per batch, recording what went, and still verifies.
    let entries_after = chain_verifies(&h).await;
    assert_eq!(entries_after, entries_before + outcome.batches);
    let prunes = audited(&h, "records.prune").await;
    assert_eq!(prunes.len() as u64, outcome.batches);
    let mut total = 0;
    for p in &prunes {
        assert_eq!(p["actor"], "retention policy");
        assert_eq!(p["subject"], "reports");
        let detail: Value = serde_json::from_str(p["detail"].as_str().unwrap()).unwrap();
        assert_eq!(detail["before"], cutoff);
        assert_eq!(detail["retention_days"], 30);
        assert_eq!(detail["devices"], 1);
        assert!(detail["newest"].as_u64().unwrap() < cutoff);
        total += detail["reports"].as_u64().unwrap();
    }
    assert_eq!(total, old as u64);

    // The rollout's figures do not come from reports.
    let after = deployment(&h, dep).await;
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(after["state"], before["state"]);

    // Nothing left to prune: no batch, no entry.
    let again =
        h.blocking(|s| records::prune(s, &h.state.config, now, records::RETENTION_ACTOR).unwrap());
    assert_eq!((again.reports, again.batches), (0, 0));
    assert_eq!(chain_verifies(&h).await, entries_after);
}

#[tokio::test]
async fn the_configured_retention_prunes_through_the_default_batches() {
    let h = Harness::new();
    let (_, alpha, _) = rollout(&h).await;
    let total = reports_of(&h, "pump-alpha") + reports_of(&h, "pump-bravo");
    // Everything but pump-alpha's reports is within the default year.
    h.raw_execute(
        "UPDATE reports SET at = at - 31622400 WHERE device_id = 'pump-alpha'",
        "UPDATE reports SET at = at - 31622400 WHERE device_id = 'pump-alpha'",
    );
    let old = reports_of(&h, "pump-alpha");
    assert_eq!(h.state.config.records.report_retention_days, 365);
    let o = h.blocking(|s| records::prune(s, &h.state.config, now_secs(), "cli").unwrap());
    assert_eq!((o.reports, o.batches), (old as u64, 1));
    assert_eq!(reports_of(&h, "pump-alpha"), 0);
    assert_eq!(reports_of(&h, "pump-bravo"), total - old);
    let prunes = audited(&h, "records.prune").await;
    assert_eq!(prunes.len(), 1);
    assert_eq!(prunes[0]["actor"], "cli");
    chain_verifies(&h).await;
    // The device still reports (its session and state are untouched).
    let (s, v) = h.check_in(&alpha, "idle", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn an_export_holds_everything_about_the_device_and_nothing_of_another() {
    let h = Harness::new();
    let (dep, _, _) = rollout(&h).await;
    let (s, v) = h
        .call(
            "GET",
            "/api/v1/devices/pump-alpha/export",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["id"], "pump-alpha");
    assert_eq!(v["device"]["public_key"], hex::encode(public(41)));
    assert_eq!(v["device"]["groups"], json!(["hospital-a"]));
    assert_eq!(v["device"]["channel"], "stable");
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len() as i64, reports_of(&h, "pump-alpha"));
    assert!(reports.iter().all(|r| r["device_id"] == "pump-alpha"));
    assert_eq!(reports[0]["state"], "confirmed", "newest first");
    let deps = v["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0]["deployment_id"], dep);
    assert_eq!(deps[0]["status"], "confirmed");
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "its session");
    assert_eq!(tokens[0]["role"], "device");
    assert!(tokens[0].get("hash").is_none());
    let audit = v["audit"].as_array().unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"device.enrol"), "{actions:?}");
    assert!(actions.contains(&"deployment.create"), "{actions:?}");
    assert_eq!(actions.last(), Some(&"records.export"), "the export itself");
    for e in audit {
        let named = e["subject"] == "pump-alpha"
            || e["detail"].as_str().unwrap().contains("\"pump-alpha\"");
        assert!(named, "{e}");
    }
    // Of the other device: only where an entry names both (the deployment of the two).
    let text = v.to_string();
    let reports_text = serde_json::to_string(&v["reports"]).unwrap();
    assert!(!reports_text.contains("pump-bravo"));
    assert!(!serde_json::to_string(&v["device"])
        .unwrap()
        .contains("pump-bravo"));
    assert!(
        !text.contains(&hex::encode(public(42))),
        "not the other key"
    );
    for e in audit {
        if e.to_string().contains("pump-bravo") {
            assert_eq!(e["action"], "deployment.create", "{e}");
        }
    }

    // The export is audited with who exported which device.
    let exports = audited(&h, "records.export").await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["subject"], "pump-alpha");
    assert!(!exports[0]["actor"].as_str().unwrap().is_empty());
    chain_verifies(&h).await;

    // Unknown devices, and roles that may not export.
    let (s, _) = h
        .call(
            "GET",
            "/api/v1/devices/pump-zulu/export",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call(
            "GET",
            "/api/v1/devices/pump-alpha/export",
            Some(h.token(Role::Release)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(audited(&h, "records.export").await.len(), 1);

    // The operator's command gives the same, audited as `cli`.
    let e = h.blocking(|s| {
        records::export_device(s, "pump-bravo", "cli", now_secs())
            .unwrap()
            .unwrap()
    });
    assert_eq!(e.device.id, "pump-bravo");
    assert!(e
        .reports
        .iter()
        .all(|r| r.check_in.device_id == "pump-bravo"));
    assert_eq!(e.deployments[0].status, "failed");
    let exports = audited(&h, "records.export").await;
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[1]["actor"], "cli");
}

#[tokio::test]
async fn a_scoped_account_exports_only_devices_in_its_scope() {
    let h = Harness::with_env(ENV);
    rollout(&h).await;
    let hana = people::person(&h, "hana", &[Role::Operator, Role::Auditor]).await;
    let (s, v) = h
        .call(
            "PUT",
            "/api/v1/users/hana/scope",
            Some(h.token(Role::Admin)),
            Some(json!({ "groups": ["hospital-a"] })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = as_person(&h, &hana, "GET", "/api/v1/devices/pump-bravo/export", None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "out of scope reads as not found: {v}"
    );
    assert!(audited(&h, "records.export").await.is_empty());
    let (s, v) = as_person(&h, &hana, "GET", "/api/v1/devices/pump-alpha/export", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["device"]["id"], "pump-alpha");
    let exports = audited(&h, "records.export").await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["actor"], "hana");
    assert_eq!(exports[0]["subject"], "pump-alpha");
}

#[tokio::test]
async fn the_records_statement_reflects_the_configuration() {
    let h = Harness::with_env(&[
        ("SIGIL_REPORT_RETENTION_DAYS", "30"),
        ("SIGIL_PRUNE_INTERVAL_SECS", "600"),
        ("SIGIL_REPORTS_KEPT", "7"),
        ("SIGIL_SESSION_ABSOLUTE_SECS", "7200"),
    ]);
    let (s, v) = h
        .call("GET", "/api/v1/records", Some(h.token(Role::Release)), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["prune_interval_secs"], 600);
    let kind = |name: &str| {
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
            .clone()
    };
    let reports = kind("device_reports");
    assert_eq!(reports["retention_secs"], 30 * DAY);
    assert_eq!(
        reports["kept"],
        "30 days, and at most the last 7 per device"
    );
    assert!(!reports["why"].as_str().unwrap().is_empty());
    let audit = kind("audit_trail");
    assert_eq!(audit["kept"], "forever");
    assert_eq!(audit["retention_secs"], Value::Null);
    assert_eq!(kind("console_sessions")["retention_secs"], 7200);
    for name in ["devices", "accounts", "approvals", "api_tokens"] {
        assert!(!kind(name)["why"].as_str().unwrap().is_empty());
    }
    let (s, _) = h.call("GET", "/api/v1/records", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The default, and what the configuration refuses.
    let d = Harness::new();
    let (_, v) = d
        .call("GET", "/api/v1/records", Some(d.token(Role::Auditor)), None)
        .await;
    let reports = v["records"][0].clone();
    assert_eq!(reports["name"], "device_reports");
    assert_eq!(reports["retention_secs"], 365 * DAY);
    for (key, value) in [
        ("SIGIL_REPORT_RETENTION_DAYS", "0"),
        ("SIGIL_REPORT_RETENTION_DAYS", "3651"),
        ("SIGIL_PRUNE_INTERVAL_SECS", "59"),
    ] {
        let env = [(key.to_owned(), value.to_owned())];
        let err = ServerConfig::load(None, env, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("records."), "{key}={value}: {err}");
    }
}

#[test]
fn the_records_commands_prune_and_export_for_the_operator() {
    use sigil_server::store::prelude::*;
    use sigil_server::store::{
        AuditAction, AuditEvent, CheckIn, CheckInState, Device, PgStore, Product, SqliteStore,
    };
    let dir = tempfile::tempdir().unwrap();
    let pg = postgres::postgres_selected().then(postgres::TestPostgres::start);
    let store: Box<dyn Store> = match &pg {
        Some(pg) => Box::new(PgStore::open(&pg.url(), None).unwrap()),
        None => Box::new(SqliteStore::open(&dir.path().join("sigil.db")).unwrap()),
    };
    let now = now_secs();
    let device = Device {
        id: "pump-cli".to_owned(),
        product: Product {
            vendor: "acme".to_owned(),
            device: "pump-x2".to_owned(),
        },
        public_key: hex::encode(public(7)),
        channel: "stable".to_owned(),
        groups: vec!["ward-1".to_owned()],
        labels: Default::default(),
        revoked: false,
        enrolled_at: now - 400 * DAY,
        last_seen: None,
        version: None,
        security_counter: None,
        state: None,
    };
    let enrol = AuditEvent::new("ops", AuditAction::DeviceEnrol, "pump-cli", json!({}));
    store.enrol_device(&device, &enrol).unwrap();
    for (at, counter) in [(now - 400 * DAY, 1), (now - 390 * DAY, 2), (now, 3)] {
        let c = CheckIn {
            device_id: "pump-cli".to_owned(),
            version: format!("1.0.{counter}"),
            security_counter: counter,
            state: CheckInState::Idle,
            deployment_id: None,
            detail: None,
        };
        store.check_in(&c, at, 100).unwrap();
    }
    drop(store);
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-server"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        if let Some(pg) = &pg {
            cmd.env("SIGIL_DATABASE_URL", pg.url());
        }
        cmd.output().unwrap()
    };
    let out = run(&["records", "prune"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("pruned 2 reports older than "), "{text}");
    assert!(text.contains("(365 days) in 1 batches"), "{text}");

    let out = run(&["records", "export", "--device", "pump-cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device"]["id"], "pump-cli");
    assert_eq!(v["reports"].as_array().unwrap().len(), 1);
    assert_eq!(v["reports"][0]["version"], "1.0.3");
    let last = v["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["action"], &last["actor"]),
        (&json!("records.export"), &json!("cli"))
    );

    let out = run(&["records", "export", "--device", "pump-none"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device pump-none"));

    // The chain, prune and export entries included, verifies.
    let store: Box<dyn Store> = match &pg {
        Some(pg) => Box::new(PgStore::open(&pg.url(), None).unwrap()),
        None => Box::new(SqliteStore::open(&dir.path().join("sigil.db")).unwrap()),
    };
    let entries = store.audit_entries(0, u32::MAX).unwrap();
    sigil_server::audit::verify_entries(&entries).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"records.prune"), "{actions:?}");
}

/// A database at schema version 8 (before reports were numbered per device), with reports of
/// two devices interleaved, opened by this server: each device's reports are numbered oldest
/// first, the device remembers its last number, and the next check-ins trim by number to the
/// newest `keep` (the old reports among them, in order).
#[test]
fn reports_from_before_numbering_are_numbered_per_device_and_trimmed_by_number() {
    use sigil_server::store::prelude::*;
    use sigil_server::store::{CheckIn, CheckInState};
    let dir = tempfile::tempdir().unwrap();
    let insert = |backend: &str| {
        let mut sql = String::new();
        for d in ["pump-1", "pump-2"] {
            sql += &format!(
                "INSERT INTO devices (id, vendor, device, public_key, channel, groups, labels, \
                 enrolled_at) VALUES ('{d}', 'acme', 'pump', '{}', 'stable', '[]', '{{}}', 1);",
                "ab".repeat(32)
            );
        }
        for at in 1..=5 {
            for d in ["pump-1", "pump-2"] {
                sql += &format!(
                    "INSERT INTO reports (device_id, at, version, security_counter, state) \
                     VALUES ('{d}', {at}, '1.0.{at}', 1, 'idle');"
                );
            }
        }
        sql + match backend {
            "postgres" => {
                "CREATE TABLE sigil_schema (version BIGINT NOT NULL); \
                           INSERT INTO sigil_schema VALUES (8);"
            }
            _ => "PRAGMA user_version = 8;",
        }
    };
    let pg = postgres::postgres_selected().then(postgres::TestPostgres::start);
    let store: Box<dyn Store> = match &pg {
        Some(pg) => {
            pg.client()
                .batch_execute(
                    &(concat!(
                        include_str!("../src/store/postgres/schema/0001_initial.sql"),
                        include_str!("../src/store/postgres/schema/0002_bundles.sql"),
                        include_str!("../src/store/postgres/schema/0003_root_chain.sql"),
                        include_str!("../src/store/postgres/schema/0004_accounts.sql"),
                        include_str!("../src/store/postgres/schema/0005_account_scopes.sql"),
                        include_str!("../src/store/postgres/schema/0006_reports_by_age.sql"),
                        include_str!(
                            "../src/store/postgres/schema/0007_device_encryption_keys.sql"
                        ),
                        include_str!("../src/store/postgres/schema/0008_passkeys.sql"),
                    )
                    .to_owned()
                        + &insert("postgres")),
                )
                .unwrap();
            let s = sigil_server::store::PgStore::open(&pg.url(), None).unwrap();
            assert_eq!(s.schema_differences().unwrap(), Vec::<String>::new());
            Box::new(s)
        }
        None => {
            let path = dir.path().join("sigil.db");
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute_batch(
                    &(concat!(
                        include_str!("../src/store/sqlite/schema/0001_initial.sql"),
                        include_str!("../src/store/sqlite/schema/0002_audit_checkpoints.sql"),
                        include_str!("../src/store/sqlite/schema/0003_root_chain.sql"),
                        include_str!("../src/store/sqlite/schema/0004_accounts.sql"),
                        include_str!("../src/store/sqlite/schema/0005_account_scopes.sql"),
                        include_str!("../src/store/sqlite/schema/0006_reports_by_age.sql"),
                        include_str!("../src/store/sqlite/schema/0007_device_encryption_keys.sql"),
                        include_str!("../src/store/sqlite/schema/0008_passkeys.sql"),
                    )
                    .to_owned()
                        + &insert("sqlite")),
                )
                .unwrap();
            let s = sigil_server::store::SqliteStore::open(&path).unwrap();
            assert_eq!(s.schema_differences().unwrap(), Vec::<String>::new());
            Box::new(s)
        }
    };
    let versions = |d: &str| -> Vec<String> {
        store
            .reports(d, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.check_in.version)
            .collect()
    };
    assert_eq!(
        versions("pump-1"),
        ["1.0.5", "1.0.4", "1.0.3", "1.0.2", "1.0.1"]
    );
    let check_in = |d: &str, version: &str| CheckIn {
        device_id: d.to_owned(),
        version: version.to_owned(),
        security_counter: 1,
        state: CheckInState::Idle,
        deployment_id: None,
        detail: None,
    };
    // One alone, then one in a group beside the other device: both paths number and trim.
    store.check_in(&check_in("pump-1", "2.0.0"), 10, 3).unwrap();
    assert_eq!(versions("pump-1"), ["2.0.0", "1.0.5", "1.0.4"]);
    let out = store
        .check_in_batch(
            &[check_in("pump-2", "2.0.0"), check_in("pump-1", "2.0.1")],
            11,
            3,
        )
        .unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(versions("pump-1"), ["2.0.1", "2.0.0", "1.0.5"]);
    assert_eq!(versions("pump-2"), ["2.0.0", "1.0.5", "1.0.4"]);
    drop(store);
}
