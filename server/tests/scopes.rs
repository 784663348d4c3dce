//! Scoped access through the API: an account limited to a site (device group), channel or
//! product sees and acts on that part of the fleet only, in every list and answer, through its
//! session and its tokens. On SQLite, and on PostgreSQL with `TEST_DATABASE=postgres`.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::people::{self, as_person, audited, ENV};
use common::{release_bundle, Harness};
use serde_json::{json, Value};
use sigil_server::store::Role;

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn set_scope(h: &Harness, name: &str, scope: Value) {
    let (s, v) = h
        .call(
            "PUT",
            &format!("/api/v1/users/{name}/scope"),
            Some(h.token(Role::Admin)),
            Some(scope),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

#[tokio::test]
async fn a_scoped_operator_sees_and_acts_on_their_sites_devices_only() {
    let h = Harness::with_env(ENV);
    h.enrol(
        "a1",
        1,
        json!({ "groups": ["hospital-a"], "channel": "stable" }),
    )
    .await;
    h.enrol(
        "a2",
        2,
        json!({ "groups": ["hospital-a", "icu"], "channel": "beta" }),
    )
    .await;
    h.enrol(
        "b1",
        3,
        json!({ "groups": ["hospital-b"], "channel": "stable" }),
    )
    .await;
    let hana = people::person(&h, "hana", &[Role::Operator, Role::Auditor]).await;
    set_scope(&h, "hana", json!({ "groups": ["hospital-a"] })).await;
    let (_, users) = h
        .call("GET", "/api/v1/users", Some(h.token(Role::Admin)), None)
        .await;
    let row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "hana")
        .unwrap()
        .clone();
    assert_eq!(row["scope"]["groups"], json!(["hospital-a"]));
    assert_eq!(audited(&h, "user.scope").await.len(), 1);

    // Lists, pages and reads.
    let (s, v) = as_person(&h, &hana, "GET", "/api/v1/devices", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v), ["a1", "a2"]);
    let (_, v) = as_person(&h, &hana, "GET", "/api/v1/devices?offset=1&limit=1", None).await;
    assert_eq!(ids(&v), ["a2"]);
    let (_, v) = as_person(&h, &hana, "GET", "/api/v1/devices?channel=stable", None).await;
    assert_eq!(ids(&v), ["a1"]);
    for path in ["/api/v1/devices/b1", "/api/v1/devices/b1/reports"] {
        let (s, v) = as_person(&h, &hana, "GET", path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    assert_eq!(
        as_person(&h, &hana, "GET", "/api/v1/devices/a2", None)
            .await
            .0,
        StatusCode::OK
    );
    // Actions on devices out of scope read as missing; nothing changes.
    let (s, _) = as_person(&h, &hana, "POST", "/api/v1/devices/b1/revoke", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, b1) = h
        .call(
            "GET",
            "/api/v1/devices/b1",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(b1["revoked"], false);
    let enrol = |id: &str, group: &str| {
        json!({
            "id": id,
            "product": { "vendor": "acme", "device": "pump-x2" },
            "public_key": hex::encode(common::public(9)),
            "groups": [group],
        })
    };
    let (s, v) = as_person(
        &h,
        &hana,
        "POST",
        "/api/v1/devices",
        Some(enrol("b2", "hospital-b")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = as_person(
        &h,
        &hana,
        "POST",
        "/api/v1/devices",
        Some(enrol("a3", "hospital-a")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Deployments only within the scope.
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    let deploy = |target: Value| json!({ "release": release, "target": target });
    for target in [
        json!({ "kind": "group", "value": "hospital-b" }),
        json!({ "kind": "channel", "value": "stable" }),
        json!({ "kind": "devices", "value": ["a1", "b1"] }),
    ] {
        let (s, v) = as_person(
            &h,
            &hana,
            "POST",
            "/api/v1/deployments",
            Some(deploy(target.clone())),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{target}: {v}");
    }
    let (s, mine) = as_person(
        &h,
        &hana,
        "POST",
        "/api/v1/deployments",
        Some(deploy(json!({ "kind": "group", "value": "hospital-a" }))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{mine}");
    let (s, theirs) = h
        .deploy(
            &release,
            json!({ "kind": "group", "value": "hospital-b" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    let (_, listed) = as_person(&h, &hana, "GET", "/api/v1/deployments", None).await;
    let listed: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [mine["id"].as_i64().unwrap()]);
    let other = theirs["id"].as_i64().unwrap();
    for (method, path) in [
        ("GET", format!("/api/v1/deployments/{other}")),
        ("GET", format!("/api/v1/deployments/{other}/approvals")),
        ("POST", format!("/api/v1/deployments/{other}/pause")),
    ] {
        let (s, v) = as_person(&h, &hana, method, &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    let (_, d) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{other}"),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(d["state"], "active", "the refused pause changed nothing");

    // Whole-fleet answers are refused.
    for path in [
        "/api/v1/audit/export",
        "/api/v1/audit/head",
        "/api/v1/audit/checkpoint",
    ] {
        let (s, v) = as_person(&h, &hana, "GET", path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(v["message"].as_str().unwrap().contains("scope"), "{v}");
    }

    // Her tokens carry her scope.
    let (s, t) = h
        .call(
            "POST",
            "/api/v1/tokens",
            Some(h.token(Role::Admin)),
            Some(json!({ "name": "hana-script", "role": "operator", "owner": "hana" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (_, v) = h
        .call(
            "GET",
            "/api/v1/devices",
            Some(t["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(ids(&v), ["a1", "a2", "a3"]);

    // Cleared: the whole fleet again.
    set_scope(&h, "hana", Value::Null).await;
    let (_, v) = as_person(&h, &hana, "GET", "/api/v1/devices", None).await;
    assert_eq!(ids(&v), ["a1", "a2", "a3", "b1"]);
}

#[tokio::test]
async fn a_scoped_auditor_reads_only_the_scopes_products_and_channels() {
    let h = Harness::with_env(ENV);
    h.enrol("s1", 1, json!({ "channel": "stable" })).await;
    h.enrol("b1", 2, json!({ "channel": "beta" })).await;
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    let ada = people::person(&h, "ada", &[Role::Auditor]).await;
    set_scope(&h, "ada", json!({ "channels": ["beta"] })).await;
    let (_, v) = as_person(&h, &ada, "GET", "/api/v1/devices", None).await;
    assert_eq!(ids(&v), ["b1"]);
    // The release's product is in scope (no product restriction).
    let (s, _) = as_person(
        &h,
        &ada,
        "GET",
        &format!("/api/v1/releases/{release}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    set_scope(
        &h,
        "ada",
        json!({ "products": [{ "vendor": "acme", "device": "other" }] }),
    )
    .await;
    let (_, v) = as_person(&h, &ada, "GET", "/api/v1/releases", None).await;
    assert_eq!(v, json!([]));
    let (s, _) = as_person(
        &h,
        &ada,
        "GET",
        &format!("/api/v1/releases/{release}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = as_person(&h, &ada, "GET", "/api/v1/devices", None).await;
    assert_eq!(v, json!([]));
    // Only admins set scopes, with valid names.
    let (s, _) = h
        .call(
            "PUT",
            "/api/v1/users/ada/scope",
            Some(h.token(Role::Operator)),
            Some(json!({ "groups": ["x"] })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .call(
            "PUT",
            "/api/v1/users/ada/scope",
            Some(h.token(Role::Admin)),
            Some(json!({ "groups": ["no spaces"] })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .call(
            "PUT",
            "/api/v1/users/nobody/scope",
            Some(h.token(Role::Admin)),
            Some(json!({ "groups": ["x"] })),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
