//! Root rotation on the server: the chain an administrator gives (`PUT /api/v1/root-chain`) is
//! verified from the trust root and must extend the chain held; uploads are then verified under
//! the newest root; devices that report an older root at check-in get the chain.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{json, Value};
use sigil_server::roots::Roots;
use sigil_server::store::Role;
use sigil_test_support::{
    bundle, chain, dangerous_chain, root, root_update_of, spec_under_root, Spec,
};

async fn put_chain(
    h: &Harness,
    role: Role,
    content_type: &str,
    bytes: &[u8],
) -> (StatusCode, Value) {
    let req = Request::put("/api/v1/root-chain")
        .header("authorization", format!("Bearer {}", h.token(role)))
        .header("content-type", content_type)
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    let res = h.send(req).await;
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn get_chain(h: &Harness) -> (StatusCode, Vec<u8>) {
    let req = Request::get("/api/v1/root-chain")
        .header(
            "authorization",
            format!("Bearer {}", h.token(Role::Auditor)),
        )
        .body(Body::empty())
        .unwrap();
    let res = h.send(req).await;
    let status = res.status();
    (
        status,
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

const OCTETS: &str = "application/octet-stream";

#[tokio::test]
async fn the_chain_is_verified_extended_only_and_stored() {
    let h = Harness::new();
    assert_eq!(get_chain(&h).await.0, StatusCode::NOT_FOUND);
    // Who and what may set it.
    assert_eq!(
        put_chain(&h, Role::Release, OCTETS, &chain(1, 2)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put_chain(&h, Role::Admin, "application/json", &chain(1, 2))
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let (s, e) = put_chain(&h, Role::Admin, OCTETS, b"not a chain").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Only the previous root's holders signed root 2: refused (step R3).
    let half = dangerous_chain(&[root_update_of(&root_generation_bytes(2), &[1, 2], &[])]);
    let (s, e) = put_chain(&h, Role::Admin, OCTETS, &half).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["message"].as_str().unwrap().contains("step R3"), "{e}");

    let (s, v) = put_chain(&h, Role::Admin, OCTETS, &chain(1, 2)).await;
    assert_eq!(
        (s, v["newest_root_version"].clone()),
        (StatusCode::OK, json!(2)),
        "{v}"
    );
    let (s, v) = put_chain(&h, Role::Admin, OCTETS, &chain(1, 3)).await;
    assert_eq!(
        (s, v["newest_root_version"].clone(), v["updates"].clone()),
        (StatusCode::OK, json!(3), json!(2))
    );
    // Going back, or a rival root 3 signed by root 2's holders, is refused.
    let (s, e) = put_chain(&h, Role::Admin, OCTETS, &chain(1, 2)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        e["message"].as_str().unwrap().contains("does not extend"),
        "{e}"
    );
    let rival = sigil_manifests::TrustRoot::new(3, 1, &[public(77)])
        .unwrap()
        .encode()
        .unwrap();
    let forked = dangerous_chain(&[root_update(2), root_update_of(&rival, &[31, 32], &[77])]);
    let (s, e) = put_chain(&h, Role::Admin, OCTETS, &forked).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["message"].as_str().unwrap().contains("step R2"), "{e}");

    // Held and stored: the same bytes back, and from the store on a restart.
    assert_eq!(get_chain(&h).await, (StatusCode::OK, chain(1, 3)));
    // The store's calls block (PostgreSQL's client runs its own runtime): off the test's.
    let store = h.store.clone();
    let stored = tokio::task::spawn_blocking(move || store.root_chain())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.as_deref(), Some(&chain(1, 3)[..]));
    assert_eq!(Roots::new(root(), stored).unwrap().newest().root_version, 3);
    let (_, audit) = h
        .call(
            "GET",
            "/api/v1/audit/export",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert!(audit.to_string().contains("root_chain.update"), "{audit}");
}

#[tokio::test]
async fn uploads_are_verified_under_the_newest_root() {
    let h = Harness::new();
    let old = bundle(&Spec::default());
    let (s, _) = h.upload(old.clone()).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "before the rotation root 1 signs releases"
    );
    assert_eq!(
        put_chain(&h, Role::Admin, OCTETS, &chain(1, 3)).await.0,
        StatusCode::OK
    );
    // Under root 1's keys (another release, so not a duplicate): refused now.
    let (s, e) = h
        .upload(bundle(&Spec {
            counter: 6,
            ..Spec::default()
        }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e.to_string()
            .contains("signed under trust root 1, not under the server's newest root 3"),
        "{e}"
    );
    // Under root 2 with its chain: valid from root 1, but not the newest root.
    let (s, e) = h
        .upload(bundle(&Spec {
            counter: 7,
            ..spec_under_root(2)
        }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    // Under root 3 with its chain: accepted.
    let (s, e) = h.upload(bundle(&spec_under_root(3))).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    // A chain whose update 2 is forged: a device still on root 1 would refuse it, so the server
    // does too (it walks the chain from the provisioned root, not from its newest).
    let mut updates: Vec<Vec<u8>> = (2..=3).map(root_update).collect();
    let last = updates[0].len() - 1;
    updates[0][last] ^= 1;
    let forged = bundle(&Spec {
        counter: 8,
        chain: Some(dangerous_chain(&updates)),
        ..spec_under_root(3)
    });
    let (s, e) = h.upload(forged).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("step R3"), "{e}");
    // Under root 4, beyond the server's chain: the chain goes to the server first.
    let (s, e) = h.upload(bundle(&spec_under_root(4))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("PUT /api/v1/root-chain"), "{e}");
}

#[tokio::test]
async fn devices_reporting_an_older_root_get_the_chain() {
    let h = Harness::new();
    h.enrol("pump-1", 51, json!({})).await;
    let token = h.session("pump-1", 51).await.unwrap();
    let report = |root: Option<u32>| {
        let mut b = json!({ "version": "1.0.0", "security_counter": 1, "state": "idle" });
        if let Some(v) = root {
            b["root_version"] = json!(v);
        }
        b
    };
    // No rotation yet: nothing to hand out.
    let (s, r) = h
        .call(
            "POST",
            "/api/v1/device/checkin",
            Some(&token),
            Some(report(Some(1))),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r.get("root_chain").is_none(), "{r}");
    put_chain(&h, Role::Admin, OCTETS, &chain(1, 3)).await;
    for (held, expect) in [
        (Some(1), true),
        (Some(2), true),
        (Some(3), false),
        (None, false),
    ] {
        let (_, r) = h
            .call(
                "POST",
                "/api/v1/device/checkin",
                Some(&token),
                Some(report(held)),
            )
            .await;
        match expect {
            true => assert_eq!(
                r["root_chain"],
                json!(hex::encode(chain(1, 3))),
                "root {held:?}"
            ),
            false => assert!(r.get("root_chain").is_none(), "root {held:?}: {r}"),
        }
    }
}

/// Replicas share the chain through the database: a chain another replica stored is taken for
/// uploads at once, and a write checked against a chain that has changed since is refused.
#[tokio::test]
async fn a_chain_stored_by_another_replica_is_taken_and_a_stale_write_refused() {
    use sigil_server::store::{AuditAction, AuditEvent, StoreError};
    let h = Harness::new();
    let event = || {
        AuditEvent::new(
            "other-replica",
            AuditAction::RootChainUpdate,
            "root 3",
            json!({}),
        )
    };
    // What another replica's PUT stores (this replica's memory still holds root 1).
    let store = h.store.clone();
    let put = move |previous: Option<Vec<u8>>| {
        let store = store.clone();
        let event = event();
        tokio::task::spawn_blocking(move || {
            store.put_root_chain(&chain(1, 3), 3, previous.as_deref(), &event)
        })
    };
    put(None).await.unwrap().unwrap();
    let (s, e) = h.upload(bundle(&spec_under_root(3))).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    // A second writer that checked against "no chain" loses the race.
    match put(None).await.unwrap() {
        Err(StoreError::Conflict(m)) => assert!(m.contains("changed"), "{m}"),
        other => panic!("{other:?}"),
    }
    put(Some(chain(1, 3))).await.unwrap().unwrap();
    // And this replica's own PUT checks against the stored chain: root 1 -> 2 no longer
    // extends it.
    let (s, e) = put_chain(&h, Role::Admin, OCTETS, &chain(1, 2)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
}
