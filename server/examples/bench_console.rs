//! Sets up a large fleet's database for `bench/console.sh` (not part of the server).
//!
//! ```text
//! bench_console files OUT_DIR
//!     writes OUT_DIR/root.sgl (the fixed test root) and OUT_DIR/bundle.sgl (version 2.0.0 of
//!     acme/pump-x2, signed by it) for the server to start with and to be uploaded
//! bench_console seed DATA_DIR TRUST_ROOT RELEASE_ID DEVICES DEPLOYMENTS REPORTS
//!     with the server stopped, fills its SQLite database: DEVICES devices (one transaction of
//!     raw rows, each enrolment with its audit entry chained by the store's own
//!     `rules::next_entry`, so the chain verifies), then through the store: DEPLOYMENTS
//!     deployments of RELEASE_ID (one per site group, 60% of them cancelled), REPORTS check-ins
//!     (rounds over every device, the last one confirmed, failed or reverted), and the person
//!     `bench` (admin, operator, auditor, approver) with passphrase `PASSPHRASE` below and TOTP
//!     secret `TOTP_SECRET`; prints what the database then holds
//! bench_console totp STEPS_AHEAD
//!     the `bench` person's TOTP code STEPS_AHEAD 30-second steps from now
//! ```
// A setup tool for a benchmark: any failure aborts the run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::SigningKey;
use serde_json::json;
use sigil_server::accounts::{hash_passphrase, HashCost};
use sigil_server::config::{Overrides, ServerConfig};
use sigil_server::rollout::RolloutPolicy;
use sigil_server::store::accounts::AccountKind;
use sigil_server::store::prelude::*;
use sigil_server::store::{
    now_secs, rules, AuditAction, AuditEvent, CheckIn, CheckInState, DeploymentAction,
    NewDeployment, Role, Target,
};
use sigil_test_support::{payload, root_of, Spec};

/// The `bench` person's passphrase.
const PASSPHRASE: &str = "quartz lantern orbit meadow 47";
/// The `bench` person's TOTP secret.
const TOTP_SECRET: [u8; 20] = [0x5a; 20];
/// Check-ins per store batch (one transaction each).
const BATCH: usize = 1000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["files", out] => files(Path::new(out)),
        ["seed", data, root, release, devices, deployments, reports] => seed(
            Path::new(data),
            Path::new(root),
            release,
            devices.parse()?,
            deployments.parse()?,
            reports.parse()?,
        ),
        ["totp", ahead] => {
            let step = now_secs() / 30 + ahead.parse::<u64>()?;
            println!("{}", totp_at(step));
            Ok(())
        }
        _ => {
            anyhow::bail!("usage: see the module documentation of server/examples/bench_console.rs")
        }
    }
}

fn files(out: &Path) -> anyhow::Result<()> {
    std::fs::write(
        out.join("root.sgl"),
        root_of([1], 1)
            .encode()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    let bundle = sigil_test_support::bundle(&Spec {
        release_keys: vec![11],
        root_signers: vec![1],
        payload: payload(4096, 0),
        ..Spec::release("2.0.0", 2)
    });
    std::fs::write(out.join("bundle.sgl"), bundle)?;
    Ok(())
}

fn totp_at(step: u64) -> String {
    let totp =
        totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, TOTP_SECRET.to_vec());
    totp.generate(step * 30)
}

fn seed(
    data: &Path,
    root: &Path,
    release_id: &str,
    devices: u32,
    deployments: u32,
    reports: u64,
) -> anyhow::Result<()> {
    let config = ServerConfig::load(
        None,
        [("SIGIL_TRUST_ROOT".to_owned(), root.display().to_string())],
        Overrides {
            listen: None,
            data_dir: Some(data.to_owned()),
        },
    )?;
    let started = std::time::Instant::now();
    let sites = deployments.max(1);
    enrol_devices(&data.join("sigil.db"), devices, sites)?;
    eprintln!("{devices} devices enrolled in {:.1?}", started.elapsed());

    // The store from here on; opening it verifies the audit chain, as the server's start does.
    let (store, _bundles) = sigil_server::serve::open_storage(&config)?;
    let release = store
        .release(release_id)?
        .with_context(|| format!("release {release_id} is not in the database"))?;
    let now = now_secs();
    let mut ids = Vec::with_capacity(deployments as usize);
    for site in 0..deployments {
        let d = store.create_deployment(
            &NewDeployment {
                release_id: release.id.clone(),
                target: Target::Group(site_name(site)),
                policy: RolloutPolicy {
                    phases: vec![10, 50, 100],
                    min_success_percent: 90,
                    max_failure_percent: 20,
                    hold_after_phase: None,
                },
            },
            now,
            "bench",
        )?;
        ids.push(d.id);
    }
    for (n, id) in ids.iter().enumerate() {
        if n % 5 < 3 {
            let event = AuditEvent::new(
                "bench",
                AuditAction::DeploymentCancel,
                &id.to_string(),
                json!({}),
            );
            store.act_on_deployment(*id, DeploymentAction::Cancel, &event)?;
        }
    }
    eprintln!("{deployments} deployments in {:.1?}", started.elapsed());

    let rounds = reports / u64::from(devices.max(1));
    let keep = config.limits.reports_kept;
    let mut refused = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    for round in 0..rounds {
        let last = round + 1 == rounds;
        for i in 0..devices {
            let deployment = ids.get((i % sites) as usize).copied();
            let (state, version, counter) = match (last, i % 50) {
                (false, _) if round + 2 == rounds => (CheckInState::Installing, "1.0.0", 1),
                (false, _) => (CheckInState::Idle, "1.0.0", 1),
                (true, 0) => (CheckInState::Failed, "1.0.0", 1),
                (true, 1) => (CheckInState::Reverted, "1.0.0", 1),
                (true, _) => (CheckInState::Confirmed, "2.0.0", 2),
            };
            batch.push(CheckIn {
                device_id: device_name(i),
                version: version.to_owned(),
                security_counter: counter,
                state,
                deployment_id: deployment.filter(|_| round + 2 >= rounds),
                detail: (state == CheckInState::Failed).then(|| "signature refused".to_owned()),
            });
            if batch.len() == BATCH || i + 1 == devices {
                // Reports spread over the rounds: one round every ten minutes.
                let at = now + round * 600 + u64::from(i) / BATCH as u64;
                let results = store.check_in_batch(&batch, at, keep)?;
                refused += results.iter().filter(|r| r.is_err()).count() as u64;
                batch.clear();
            }
        }
    }
    eprintln!(
        "{} check-ins ({refused} refused) in {:.1?}",
        rounds * u64::from(devices),
        started.elapsed()
    );

    add_person(&*store, &config)?;
    sigil_server::audit_key::checkpoint(
        &*store,
        &sigil_server::audit_key::KeyFile::of(&config),
        None,
        None,
    )?;
    let db = rusqlite::Connection::open(data.join("sigil.db"))?;
    let count = |table: &str| -> anyhow::Result<i64> {
        Ok(db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
    };
    println!(
        "devices {} deployments {} members {} reports {} audit {}",
        count("devices")?,
        count("deployments")?,
        count("members")?,
        count("reports")?,
        count("audit")?
    );
    Ok(())
}

fn device_name(i: u32) -> String {
    format!("dev-{i:06}")
}

fn site_name(i: u32) -> String {
    format!("site-{i:04}")
}

/// Enrols `devices` devices in one transaction: each device row with its `device.enrol`
/// audit entry, chained as the store chains it.
fn enrol_devices(db: &Path, devices: u32, sites: u32) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    let mut head: Option<(u64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .ok();
    let now = now_secs();
    {
        let mut device = tx.prepare(
            "INSERT INTO devices (id, vendor, device, public_key, channel, groups, labels, \
             revoked, enrolled_at) VALUES (?1, 'acme', 'pump-x2', ?2, ?3, ?4, '{}', 0, ?5)",
        )?;
        let mut audit = tx.prepare(
            "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for i in 0..devices {
            let id = device_name(i);
            let mut seed = [9u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let key = hex::encode(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
            let channel = if i % 20 == 0 { "beta" } else { "stable" };
            let groups = vec![site_name(i % sites)];
            let event = AuditEvent::new(
                "bench",
                AuditAction::DeviceEnrol,
                &id,
                json!({
                    "product": "acme/pump-x2",
                    "public_key": key,
                    "channel": channel,
                    "groups": groups,
                    "encryption_key": null,
                }),
            );
            let e = rules::next_entry(head.take(), &event, now);
            device.execute(rusqlite::params![
                id,
                key,
                channel,
                serde_json::to_string(&groups)?,
                now as i64
            ])?;
            audit.execute(rusqlite::params![
                e.seq as i64,
                e.at as i64,
                e.actor,
                e.action,
                e.subject,
                e.detail,
                e.prev_hash,
                e.hash
            ])?;
            head = Some((e.seq, e.hash));
        }
    }
    tx.commit()?;
    Ok(())
}

/// The `bench` person, enrolled with the known passphrase and TOTP secret, as
/// `POST /api/v1/enrol` and `/confirm` would enrol them.
fn add_person(store: &dyn Store, config: &ServerConfig) -> anyhow::Result<()> {
    let roles = [Role::Admin, Role::Operator, Role::Auditor, Role::Approver];
    let code = sigil_server::api::accounts::create_account(
        store,
        config,
        "bench",
        AccountKind::Person,
        &roles,
        "cli",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .context("a person gets an enrolment code")?;
    let hash = sigil_server::accounts::secret_hash(&code.enrolment_code);
    let cost = HashCost {
        memory_kib: config.accounts.argon2_memory_kib,
        iterations: config.accounts.argon2_iterations,
    };
    let now = now_secs();
    store.start_enrolment(
        &hash,
        &hash_passphrase(PASSPHRASE, cost)?,
        &TOTP_SECRET,
        now,
    )?;
    // An earlier step than any login will use: each step is accepted once.
    let event = AuditEvent::new(
        "bench",
        AuditAction::UserEnrol,
        "bench",
        json!({ "second_factor": "totp" }),
    );
    store.finish_enrolment(&hash, now / 30 - 2, now, &event)?;
    Ok(())
}
