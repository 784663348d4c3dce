//! The four-eyes policy through the API: a release reaches a production channel only after an
//! approver other than its uploader approved it; a deployment passes its canary phase only
//! after a second operator approved it. On SQLite, and on PostgreSQL with
//! `TEST_DATABASE=postgres`.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::people::{self, as_person, audited, Person, ENV};
use common::{release_bundle, Harness};
use serde_json::{json, Value};
use sigil_server::store::Role;

fn env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = ENV.to_vec();
    env.extend_from_slice(extra);
    env
}

async fn upload_as(h: &Harness, p: &Person, bytes: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::post("/api/v1/releases")
        .header("cookie", &p.cookie)
        .header("x-csrf-token", &p.csrf)
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap();
    let (status, _, bytes) = people::read(h.send(req).await).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn decide(h: &Harness, p: &Person, path: &str, reason: &str) -> (StatusCode, Value) {
    as_person(h, p, "POST", path, Some(json!({ "reason": reason }))).await
}

#[tokio::test]
async fn the_uploader_cannot_approve_their_own_release() {
    let h = Harness::with_env(&env(&[("SIGIL_PRODUCTION_CHANNELS", "stable")]));
    let rita = people::person(&h, "rita", &[Role::Release, Role::Approver]).await;
    let paul = people::person(&h, "paul", &[Role::Approver]).await;
    let (s, r) = upload_as(&h, &rita, release_bundle("2.0.0", 7)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["uploaded_by"], "rita");

    let (s, v) = decide(
        &h,
        &rita,
        &format!("/api/v1/releases/{id}/approve"),
        "looks fine",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["message"].as_str().unwrap().contains("uploaded"), "{v}");
    let (s, v) = decide(&h, &paul, &format!("/api/v1/releases/{id}/approve"), "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a reason is required: {v}");
    let (s, v) = decide(
        &h,
        &paul,
        &format!("/api/v1/releases/{id}/approve"),
        "QA report 2026-118 passed",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["approved_by"], "paul");
    assert_eq!(v["author"], "rita");
    let decisions = audited(&h, "release.decision").await;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["actor"], "paul");
    let detail: Value = serde_json::from_str(decisions[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (detail["decision"].clone(), detail["reason"].clone()),
        (json!("approved"), json!("QA report 2026-118 passed"))
    );
}

#[tokio::test]
async fn a_release_reaches_a_production_channel_only_once_another_person_approved_it() {
    let h = Harness::with_env(&env(&[("SIGIL_PRODUCTION_CHANNELS", "stable,clinic")]));
    let mut paul = people::person(&h, "paul", &[Role::Approver]).await;
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    h.enrol(
        "pump-1",
        1,
        json!({ "channel": "stable", "groups": ["ward-3"] }),
    )
    .await;
    h.enrol("pump-2", 2, json!({ "channel": "beta", "groups": ["lab"] }))
        .await;

    // Every target that includes a production device is refused until approved.
    for target in [
        json!({ "kind": "channel", "value": "stable" }),
        json!({ "kind": "group", "value": "ward-3" }),
        json!({ "kind": "devices", "value": ["pump-2", "pump-1"] }),
    ] {
        let (s, v) = h.deploy(&release, target.clone(), json!({})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{target}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains("not approved for production channel stable"),
            "{m}"
        );
        assert!(m.contains("approve"), "{m}");
    }
    let queued = |v: &Value| {
        v["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (s, q) = h
        .call(
            "GET",
            "/api/v1/approvals",
            Some(h.token(Role::Approver)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(queued(&q), std::slice::from_ref(&release), "{q}");
    // Outside production channels no approval is needed.
    let (s, v) = h
        .deploy(
            &release,
            json!({ "kind": "group", "value": "lab" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Tokens cannot approve: approvals are a person's, freshly re-authenticated.
    let (s, v) = h
        .call(
            "POST",
            &format!("/api/v1/releases/{release}/approve"),
            Some(h.token(Role::Approver)),
            Some(json!({ "reason": "ci says so" })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    h.raw_execute(
        "UPDATE sessions SET reauth_at = reauth_at - 301",
        "UPDATE sessions SET reauth_at = reauth_at - 301",
    );
    let path = format!("/api/v1/releases/{release}/approve");
    let (s, v) = decide(&h, &paul, &path, "QA passed").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("re-authentication"),
        "{v}"
    );
    assert_eq!(people::reauth(&h, &mut paul).await, StatusCode::NO_CONTENT);
    let (s, v) = decide(&h, &paul, &path, "QA passed").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, q) = h
        .call(
            "GET",
            "/api/v1/approvals",
            Some(h.token(Role::Approver)),
            None,
        )
        .await;
    assert!(queued(&q).is_empty(), "{q}");
    let (s, v) = h
        .deploy(
            &release,
            json!({ "kind": "channel", "value": "stable" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // A later refusal by an approver withdraws the approval.
    let pia = people::person(&h, "pia", &[Role::Approver]).await;
    let (s, v) = decide(
        &h,
        &pia,
        &format!("/api/v1/releases/{release}/refuse"),
        "field complaint 77",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["approved_by"], Value::Null);
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2);
    let (s, _) = h
        .deploy(
            &release,
            json!({ "kind": "group", "value": "ward-3" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = h
        .call(
            "GET",
            &format!("/api/v1/releases/{release}/approvals"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decisions"][1]["by"], "pia");
    assert_eq!(v["decisions"][1]["decision"], "refused");
}

/// Device sessions of `n` enrolled `ward-3` devices.
async fn fleet(h: &Harness, n: u8) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..n {
        let id = format!("pump-{i:02}");
        h.enrol(&id, 100 + i, json!({ "groups": ["ward-3"] })).await;
        tokens.push(h.session(&id, 100 + i).await.unwrap());
    }
    tokens
}

async fn offered(h: &Harness, tokens: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tokens {
        if h.check_in(t, "idle", None).await.1["update"] != Value::Null {
            out.push(t.clone());
        }
    }
    out
}

#[tokio::test]
async fn a_deployment_does_not_pass_its_canary_without_a_second_operators_approval() {
    let h = Harness::with_env(&env(&[("SIGIL_DEPLOYMENT_SECOND_OPERATOR", "true")]));
    let olga = people::person(&h, "olga", &[Role::Operator]).await;
    let oscar = people::person(&h, "oscar", &[Role::Operator]).await;
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    let tokens = fleet(&h, 10).await;
    let (s, d) = as_person(
        &h,
        &olga,
        "POST",
        "/api/v1/deployments",
        Some(json!({
            "release": release,
            "target": { "kind": "group", "value": "ward-3" },
            "phases": [20, 100],
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["created_by"], "olga");
    assert_eq!(d["policy"]["hold_after_phase"], 0);
    let dep = d["id"].as_i64().unwrap();

    // The canary (2 of 10) confirms: without the approval the rollout stays in phase 0.
    let canary = offered(&h, &tokens).await;
    assert_eq!(canary.len(), 2);
    for t in &canary {
        h.check_in(t, "confirmed", Some(dep)).await;
    }
    let show = format!("/api/v1/deployments/{dep}");
    let (_, v) = h
        .call("GET", &show, Some(h.token(Role::Auditor)), None)
        .await;
    assert_eq!(
        (v["phase"].clone(), v["state"].clone()),
        (json!(0), json!("active"))
    );
    assert!(
        offered(&h, &tokens).await.is_empty(),
        "no device beyond the canary"
    );
    let (_, v) = h
        .call(
            "GET",
            &format!("{show}/approvals"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(v["waiting"], true);
    let (_, q) = as_person(&h, &oscar, "GET", "/api/v1/approvals", None).await;
    assert_eq!(q["deployments"][0]["id"], dep, "{q}");
    assert_eq!(
        q["releases"],
        json!([]),
        "no production channels configured"
    );

    // Not by its creator, not with a token.
    let (s, v) = decide(&h, &olga, &format!("{show}/approve"), "canary fine").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("second operator"),
        "{v}"
    );
    let (s, _) = h
        .call(
            "POST",
            &format!("{show}/approve"),
            Some(h.token(Role::Operator)),
            Some(json!({ "reason": "automation" })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A refusal is recorded and keeps the hold.
    let (s, v) = decide(&h, &oscar, &format!("{show}/refuse"), "wait for ward round").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], 0);
    // The second operator's approval lets the rollout go on at once.
    let (s, v) = decide(
        &h,
        &oscar,
        &format!("{show}/approve"),
        "canary fine for 24 h",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], 1);
    assert!(v["policy"].get("hold_after_phase").is_none(), "{v}");
    assert_eq!(offered(&h, &tokens).await.len(), 8);
    let (_, q) = as_person(&h, &oscar, "GET", "/api/v1/approvals", None).await;
    assert_eq!(q["deployments"], json!([]), "{q}");
    let (s, _) = decide(&h, &oscar, &format!("{show}/approve"), "again").await;
    assert_eq!(s, StatusCode::CONFLICT, "nothing left to approve");

    let decisions = audited(&h, "deployment.decision").await;
    let by: Vec<(Value, Value)> = decisions
        .iter()
        .map(|e| {
            let d: Value = serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
            (e["actor"].clone(), d["decision"].clone())
        })
        .collect();
    assert_eq!(
        by,
        [
            (json!("oscar"), json!("refused")),
            (json!("oscar"), json!("approved"))
        ]
    );
    let advance = audited(&h, "deployment.advance").await;
    assert_eq!(advance.len(), 1);
}

#[tokio::test]
async fn single_phase_deployments_and_the_default_policy_need_no_approval() {
    let h = Harness::with_env(&env(&[("SIGIL_DEPLOYMENT_SECOND_OPERATOR", "true")]));
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    fleet(&h, 2).await;
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "group", "value": "ward-3" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert!(d["policy"].get("hold_after_phase").is_none(), "{d}");

    let h = Harness::with_env(ENV);
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    fleet(&h, 2).await;
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "group", "value": "ward-3" }),
            json!({ "phases": [50, 100] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert!(d["policy"].get("hold_after_phase").is_none(), "{d}");
}
