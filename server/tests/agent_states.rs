//! The device agent's `deferred` and `installing` states: accepted on check-in, recorded, and
//! neutral for the deployment status (neither success nor failure).
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
