//! The device agent's `deferred` and `installing` states: accepted on check-in, recorded, and
//! neutral for the deployment status (neither success nor failure); and `download_failed`: a
//! deployment status that is neither final nor a failure.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use sigil_server::store::Role;

#[tokio::test]
async fn deferred_and_installing_are_recorded_but_neutral() {
    let h = Harness::new();
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    h.enrol("pump-01", 101, json!({})).await;
    let token = h.session("pump-01", 101).await.unwrap();
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "devices", "value": ["pump-01"] }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let dep = d["id"].as_i64().unwrap();
    let status = |v: &Value| v["members"][0]["status"].clone();

    let (s, _) = h.check_in(&token, "staged", Some(dep)).await;
    assert_eq!(s, StatusCode::OK);
    for state in ["deferred", "installing"] {
        let (s, body) = h.check_in(&token, state, Some(dep)).await;
        assert_eq!(s, StatusCode::OK, "{state}: {body}");
        // Still offered: a deferral is not a final status.
        assert_eq!(body["update"]["release"], json!(release), "{state}");
        let (_, v) = h
            .call(
                "GET",
                &format!("/api/v1/deployments/{dep}"),
                Some(h.token(Role::Operator)),
                None,
            )
            .await;
        assert_eq!(status(&v), json!("staged"), "{state}: {v}");
        assert_eq!(v["state"], json!("active"), "{state}: {v}");
    }
    let (_, device) = h
        .call(
            "GET",
            "/api/v1/devices/pump-01",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(device["state"], json!("installing"));
    let (s, body) = h.check_in(&token, "napping", Some(dep)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

/// A download failure (a flaky link, a mirror serving bad bytes) is shown in the device and
/// deployment views but never halts the rollout and keeps the offer open; an install failure of
/// the same device then does halt it (threshold 0%).
#[tokio::test]
async fn download_failed_is_shown_but_neither_final_nor_counted_as_a_failure() {
    let h = Harness::new();
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    h.enrol("pump-01", 101, json!({})).await;
    let token = h.session("pump-01", 101).await.unwrap();
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "devices", "value": ["pump-01"] }),
            json!({ "phases": [100], "min_success_percent": 100, "max_failure_percent": 0 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let dep = d["id"].as_i64().unwrap();
    let view = || async {
        h.call(
            "GET",
            &format!("/api/v1/deployments/{dep}"),
            Some(h.token(Role::Operator)),
            None,
        )
        .await
        .1
    };

    h.check_in(&token, "downloading", Some(dep)).await;
    for round in 0..3 {
        let (s, body) = h.check_in(&token, "download_failed", Some(dep)).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        // Not final: the same release is offered again.
        assert_eq!(body["update"]["release"], json!(release), "round {round}");
        let v = view().await;
        assert_eq!(v["state"], json!("active"), "not halted: {v}");
        assert_eq!(v["members"][0]["status"], json!("download_failed"), "{v}");
        assert_eq!(v["counts"]["download_failed"], json!(1), "{v}");
        assert_eq!(v["counts"]["failed"], json!(0), "{v}");
    }
    let (_, device) = h
        .call(
            "GET",
            "/api/v1/devices/pump-01",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(device["state"], json!("download_failed"));
    let (_, listed) = h
        .call(
            "GET",
            "/api/v1/devices?state=download_failed",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let (_, metrics) = h.call("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains("sigil_rollout_devices{outcome=\"failed\"} 0"),
        "{metrics}"
    );

    // An install failure is a failure: past the 0% threshold, halted, no longer offered.
    let (s, body) = h.check_in(&token, "failed", Some(dep)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body["update"].is_null(), "{body}");
    let v = view().await;
    assert_eq!(v["state"], json!("halted"), "{v}");
}
