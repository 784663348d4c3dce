//! Handler tests through `tower::ServiceExt::oneshot`.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{json, Value};
use sigil_server::audit::{verify_lines, Trust};
use sigil_server::store::Role;

/// One device with a session, one release deployed to it.
struct Fleet {
    h: Harness,
    release: String,
    bundle: Vec<u8>,
    device_token: String,
    deployment: i64,
}

async fn fleet() -> Fleet {
    let h = Harness::new();
    let bundle = release_bundle("1.2.0", 5);
    let (s, r) = h.upload(bundle.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let release = r["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.enrol("pump-1", 41, json!({ "groups": ["ward-3"] }))
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "devices", "value": ["pump-1"] }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let device_token = h.session("pump-1", 41).await.unwrap();
    Fleet {
        h,
        release,
        bundle,
        device_token,
        deployment: d["id"].as_i64().unwrap(),
    }
}

#[tokio::test]
async fn role_matrix_only_the_right_role_succeeds() {
    let f = fleet().await;
    let h = &f.h;
    // Fixtures that the one allowed call of each mutating endpoint may consume.
    let (_, r2) = h.upload(release_bundle("1.3.0", 6)).await;
    let retire_me = r2["id"].as_str().unwrap().to_owned();
    h.enrol("victim", 42, json!({})).await;
    let (_, d2) = h
        .deploy(
            &f.release,
            json!({ "kind": "devices", "value": ["pump-1"] }),
            json!({}),
        )
        .await;
    let (_, d3) = h
        .deploy(
            &f.release,
            json!({ "kind": "channel", "value": "stable" }),
            json!({}),
        )
        .await;
    let (d2, d3) = (d2["id"].as_i64().unwrap(), d3["id"].as_i64().unwrap());
    let (_, t) = h
        .call(
            "POST",
            "/api/v1/tokens",
            Some(h.token(Role::Admin)),
            Some(json!({ "name": "temp", "role": "auditor" })),
        )
        .await;
    let temp_token = t["id"].as_i64().unwrap();

    let release = &f.release;
    let cases: Vec<(&str, String, Option<Value>, &[Role])> = vec![
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({ "name": "new", "role": "operator" })),
            &[Role::Admin],
        ),
        ("GET", "/api/v1/tokens".into(), None, &[Role::Admin]),
        (
            "DELETE",
            format!("/api/v1/tokens/{temp_token}"),
            None,
            &[Role::Admin],
        ),
        (
            "GET",
            "/api/v1/releases".into(),
            None,
            &[Role::Release, Role::Operator, Role::Auditor, Role::Approver],
        ),
        (
            "GET",
            format!("/api/v1/releases/{release}"),
            None,
            &[Role::Release, Role::Operator, Role::Auditor, Role::Approver],
        ),
        (
            "POST",
            format!("/api/v1/releases/{retire_me}/retire"),
            None,
            &[Role::Release],
        ),
        (
            "POST",
            "/api/v1/devices".into(),
            Some(
                json!({ "id": "new-1", "product": { "vendor": "acme", "device": "pump-x2" }, "public_key": hex::encode(public(43)) }),
            ),
            &[Role::Operator],
        ),
        (
            "GET",
            "/api/v1/devices".into(),
            None,
            &[Role::Operator, Role::Auditor],
        ),
        (
            "GET",
            "/api/v1/devices/pump-1".into(),
            None,
            &[Role::Operator, Role::Auditor],
        ),
        (
            "GET",
            "/api/v1/devices/pump-1/reports".into(),
            None,
            &[Role::Operator, Role::Auditor],
        ),
        (
            "POST",
            "/api/v1/devices/victim/revoke".into(),
            None,
            &[Role::Operator],
        ),
        (
            "POST",
            "/api/v1/deployments".into(),
            Some(json!({ "release": release, "target": { "kind": "group", "value": "ward-3" } })),
            &[Role::Operator],
        ),
        (
            "GET",
            "/api/v1/deployments".into(),
            None,
            &[Role::Operator, Role::Auditor],
        ),
        (
            "GET",
            format!("/api/v1/deployments/{d2}"),
            None,
            &[Role::Operator, Role::Auditor],
        ),
        (
            "POST",
            format!("/api/v1/deployments/{d2}/pause"),
            None,
            &[Role::Operator],
        ),
        (
            "POST",
            format!("/api/v1/deployments/{d2}/resume"),
            None,
            &[Role::Operator],
        ),
        (
            "POST",
            format!("/api/v1/deployments/{d3}/cancel"),
            None,
            &[Role::Operator],
        ),
        ("GET", "/api/v1/audit/export".into(), None, &[Role::Auditor]),
        ("GET", "/api/v1/audit/head".into(), None, &[Role::Auditor]),
        (
            "GET",
            "/api/v1/audit/checkpoint".into(),
            None,
            &[Role::Auditor],
        ),
        (
            "POST",
            "/api/v1/device/checkin".into(),
            Some(json!({ "version": "1.0.0", "security_counter": 1, "state": "idle" })),
            &[Role::Device],
        ),
        (
            "GET",
            format!("/api/v1/bundles/{release}"),
            None,
            &[Role::Device],
        ),
    ];
    let token_of = |role: Role| {
        if role == Role::Device {
            f.device_token.clone()
        } else {
            h.token(role).to_owned()
        }
    };
    // The upload endpoint takes a bundle, not JSON.
    let upload_as = |token: Option<String>| {
        let mut r =
            Request::post("/api/v1/releases").header("content-type", "application/octet-stream");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::from(release_bundle("1.4.0", 6))).unwrap()
    };
    assert_eq!(
        h.send(upload_as(None)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.send(upload_as(Some("sgl_forged".into()))).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Release) {
        let s = h.send(upload_as(Some(token_of(role)))).await.status();
        assert_eq!(s, StatusCode::FORBIDDEN, "upload as {role:?}");
    }
    assert_eq!(
        h.send(upload_as(Some(token_of(Role::Release))))
            .await
            .status(),
        StatusCode::CREATED
    );

    for (method, path, body, allowed) in &cases {
        let (s, b) = h.call(method, path, None, body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token: {b}"
        );
        let (s, _) = h.call(method, path, Some("sgl_forged"), body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a forged token"
        );
        for role in Role::ALL.into_iter().filter(|r| !allowed.contains(r)) {
            let (s, b) = h
                .call(method, path, Some(&token_of(role)), body.clone())
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} as {role:?}: {b}");
            assert!(
                b["message"].as_str().unwrap().contains("requires the"),
                "{b}"
            );
        }
        for role in allowed.iter() {
            let req = {
                let mut r = Request::builder().method(*method).uri(path.as_str());
                r = r.header("authorization", format!("Bearer {}", token_of(*role)));
                match body {
                    Some(b) => r
                        .header("content-type", "application/json")
                        .body(Body::from(b.to_string())),
                    None => r.body(Body::empty()),
                }
                .unwrap()
            };
            let s = h.send(req).await.status();
            assert!(s.is_success(), "{method} {path} as {role:?}: {s}");
        }
    }
}

/// Devices that confirmed an image under a newer key set refuse bundles signed under an older
/// one: the upload still stores it (the signatures are valid) but says so.
#[tokio::test]
async fn upload_under_an_older_key_set_than_a_live_release_warns() {
    let app = Harness::new();
    let newer = bundle(&Spec {
        key_set_version: 2,
        payload: payload(3000, 2),
        ..Spec::release("2.0.0", 2)
    });
    let (s, v) = app.upload(newer).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("warnings").is_none(), "{v}");
    let older = bundle(&Spec {
        payload: payload(3000, 3),
        ..Spec::release("2.0.1", 2)
    });
    let (s, v) = app.upload(older).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["key_set_version"], 1);
    let warning = v["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("older than version 2"), "{v}");
}

#[tokio::test]
async fn upload_verifies_and_stores_content_addressed_once() {
    let h = Harness::new();
    let b = release_bundle("1.2.0", 5);
    let (s, r) = h.upload(b.clone()).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(r["id"], bundle_id(&b));
    assert_eq!(r["version"], "1.2.0");
    assert_eq!(r["security_counter"], 5);
    assert_eq!(r["vendor"], "acme");
    assert_eq!(r["device"], "pump-x2");
    assert_eq!(r["component"], "app");
    assert_eq!(r["payload_size"], 5000);
    assert_eq!(r["size"], b.len());
    assert_eq!(
        std::fs::read(h.data().join("bundles").join(bundle_id(&b))).unwrap(),
        b
    );

    let (s, again) = h.upload(b.clone()).await;
    assert_eq!(s, StatusCode::OK, "same bytes again is the same release");
    assert_eq!(again["id"], r["id"]);
    let (_, list) = h
        .call(
            "GET",
            "/api/v1/releases",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(h.stored_files(), (1, 0));

    let (s, shown) = h
        .call(
            "GET",
            &format!("/api/v1/releases/{}", bundle_id(&b)),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["payload_digest"].as_str().unwrap().len(), 64);
    let (s, e) = h
        .call(
            "POST",
            &format!("/api/v1/releases/{}/retire", bundle_id(&b)),
            Some(h.token(Role::Release)),
            None,
        )
        .await;
    assert_eq!((s, e["retired"].clone()), (StatusCode::OK, json!(true)));
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/releases/{}/retire", bundle_id(&b)),
            Some(h.token(Role::Release)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

async fn assert_refused(h: &Harness, bytes: Vec<u8>, status: StatusCode, why: &str) {
    let (s, e) = h.upload(bytes).await;
    assert_eq!(s, status, "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(why), "{message:?} should say {why:?}");
    assert_eq!(h.stored_files(), (0, 0), "nothing stored");
    let (_, list) = h
        .call(
            "GET",
            "/api/v1/releases",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn tampered_payload_is_refused_and_nothing_stored() {
    let h = Harness::new();
    let mut b = release_bundle("1.2.0", 5);
    let last = b.len() - 1;
    b[last] ^= 1;
    assert_refused(
        &h,
        b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "step 9: payload digest",
    )
    .await;
}

#[tokio::test]
async fn bundle_under_a_foreign_trust_root_is_refused() {
    let h = Harness::new();
    let b = bundle(&Spec {
        root_signers: FOREIGN_ROOT_SEEDS[..2].to_vec(),
        payload: payload(5000, 1),
        ..Spec::release("1.2.0", 5)
    });
    assert_refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "step 4").await;
}

#[tokio::test]
async fn truncated_bundle_is_refused() {
    let h = Harness::new();
    let mut b = release_bundle("1.2.0", 5);
    b.truncate(b.len() - 10);
    assert_refused(&h, b, StatusCode::UNPROCESSABLE_ENTITY, "truncated").await;
}

#[tokio::test]
async fn oversized_bundle_is_refused_with_the_limit() {
    let h = Harness::new();
    // The harness limit is 64 KiB.
    let b = bundle(&Spec {
        payload: payload(100_000, 1),
        ..Spec::release("1.2.0", 5)
    });
    assert_refused(&h, b.clone(), StatusCode::PAYLOAD_TOO_LARGE, "65536").await;
    // Without Content-Length (chunked), the verifier's bound from the header stops it.
    let stream = futures_util::stream::iter(
        b.chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let req = Request::post("/api/v1/releases")
        .header(
            "authorization",
            format!("Bearer {}", h.token(Role::Release)),
        )
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap();
    let res = h.send(req).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.stored_files(), (0, 0));
}

#[tokio::test]
async fn client_disconnect_mid_upload_stores_nothing() {
    let h = Harness::new();
    let b = release_bundle("1.2.0", 5);
    let half = b[..b.len() / 2].to_vec();
    let stream = futures_util::stream::iter(vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let req = Request::post("/api/v1/releases")
        .header(
            "authorization",
            format!("Bearer {}", h.token(Role::Release)),
        )
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap();
    let res = h.send(req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.stored_files(), (0, 0));
}

#[tokio::test]
async fn upload_needs_octet_stream_and_a_trust_root() {
    let h = Harness::new();
    let req = Request::post("/api/v1/releases")
        .header(
            "authorization",
            format!("Bearer {}", h.token(Role::Release)),
        )
        .header("content-type", "application/json")
        .body(Body::from(release_bundle("1.2.0", 5)))
        .unwrap();
    assert_eq!(
        h.send(req).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn device_authentication_refuses_unknown_forged_replayed_and_revoked() {
    let f = fleet().await;
    let h = &f.h;
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/device/challenge",
            None,
            Some(json!({ "device_id": "ghost" })),
        )
        .await;
    // Challenges are stateless: an unknown id gets one too (no enumeration oracle), and
    // cannot use it.
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.session("ghost", 99).await.unwrap_err().0,
        StatusCode::UNAUTHORIZED
    );
    // Signed with another key than the enrolled one.
    let (s, e) = h.session("pump-1", 99).await.unwrap_err();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(e["message"].as_str().unwrap().contains("signature"), "{e}");
    // A challenge is single-use.
    let (_, c) = h
        .call(
            "POST",
            "/api/v1/device/challenge",
            None,
            Some(json!({ "device_id": "pump-1" })),
        )
        .await;
    let nonce: [u8; 32] = hex::decode(c["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    use ed25519_dalek::Signer;
    let sig = key(41).sign(&sigil_server::api::auth_message("pump-1", &nonce));
    let body = json!({ "device_id": "pump-1", "nonce": hex::encode(nonce), "signature": hex::encode(sig.to_bytes()) });
    assert_eq!(
        h.call("POST", "/api/v1/device/session", None, Some(body.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        h.call("POST", "/api/v1/device/session", None, Some(body))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Revocation ends existing sessions and refuses new ones.
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/devices/pump-1/revoke",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.check_in(&f.device_token, "idle", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.session("pump-1", 41).await.unwrap_err().0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn check_in_offers_the_assigned_update_and_keeps_the_last_reports() {
    let f = fleet().await;
    let h = &f.h;
    let (s, r) = h.check_in(&f.device_token, "idle", None).await;
    assert_eq!(s, StatusCode::OK);
    let u = &r["update"];
    assert_eq!(u["release"], f.release.as_str());
    assert_eq!(u["version"], "1.2.0");
    assert_eq!(u["deployment"], f.deployment);
    assert_eq!(u["download_url"], format!("/api/v1/bundles/{}", f.release));
    assert_eq!(u["status"], "pending");

    for state in ["downloading", "staged", "installed"] {
        let (_, r) = h.check_in(&f.device_token, state, Some(f.deployment)).await;
        assert_eq!(r["update"]["status"], state);
    }
    let (_, r) = h
        .check_in(&f.device_token, "confirmed", Some(f.deployment))
        .await;
    assert_eq!(r["update"], Value::Null, "nothing to do once confirmed");

    // Another device of the product, not targeted: nothing to do.
    h.enrol("pump-2", 42, json!({})).await;
    let t2 = h.session("pump-2", 42).await.unwrap();
    assert_eq!(h.check_in(&t2, "idle", None).await.1["update"], Value::Null);

    let (s, reports) = h
        .call(
            "GET",
            "/api/v1/devices/pump-1/reports?limit=3",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let states: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["confirmed", "installed", "staged"]);
    let (s, _) = h
        .call(
            "GET",
            "/api/v1/devices/pump-1/reports?limit=6",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "more than reports_kept");
    for _ in 0..4 {
        h.check_in(&f.device_token, "confirmed", None).await;
    }
    let stored = h.raw_i64("SELECT COUNT(*) FROM reports WHERE device_id = 'pump-1'");
    assert_eq!(stored, 5, "only reports_kept reports are kept");
    let (_, d) = h
        .call(
            "GET",
            "/api/v1/devices/pump-1",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(d["state"], "confirmed");
    let (_, dep) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{}", f.deployment),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(dep["state"], "completed");
    assert_eq!(dep["counts"]["confirmed"], 1);
}

async fn get(
    h: &Harness,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let res = h.send(r.body(Body::empty()).unwrap()).await;
    let (status, headers) = (res.status(), res.headers().clone());
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn downloads_support_full_resume_and_multi_range() {
    let f = fleet().await;
    let h = &f.h;
    let path = format!("/api/v1/bundles/{}", f.release);
    let t = Some(f.device_token.as_str());
    let len = f.bundle.len();

    let (s, hd, body) = get(h, &path, t, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, f.bundle);
    assert_eq!(hd["content-length"], len.to_string());
    assert_eq!(hd["etag"], format!("\"{}\"", f.release));
    assert_eq!(hd["accept-ranges"], "bytes");

    // Resume from an offset.
    let (s, hd, body) = get(h, &path, t, &[("range", "bytes=1000-")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, f.bundle[1000..]);
    assert_eq!(hd["content-range"], format!("bytes 1000-{}/{len}", len - 1));
    assert_eq!(hd["content-length"], (len - 1000).to_string());

    // If-Range with a stale validator gets the whole bundle.
    let (s, _, body) = get(
        h,
        &path,
        t,
        &[("range", "bytes=1000-"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!((s, body.len()), (StatusCode::OK, len));

    // Several ranges: multipart/byteranges.
    let (s, hd, body) = get(h, &path, t, &[("range", "bytes=0-9,100-199,-5")]).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    let ct = hd["content-type"].to_str().unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    assert_eq!(hd["content-length"], body.len().to_string());
    let text = body.clone();
    let delimiter = format!("\r\n--{boundary}");
    let parts = split_parts(&text, delimiter.as_bytes());
    let expected = [(0, 9), (100, 199), (len - 5, len - 1)];
    assert_eq!(parts.len(), 3);
    for ((head, data), (a, b)) in parts.iter().zip(expected) {
        assert!(
            head.contains(&format!("Content-Range: bytes {a}-{b}/{len}")),
            "{head}"
        );
        assert_eq!(data.as_slice(), &f.bundle[a..=b]);
    }
    assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));

    let (s, hd, _) = get(h, &path, t, &[("range", format!("bytes={len}-").as_str())]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hd["content-range"], format!("bytes */{len}"));

    let etag = format!("\"{}\"", f.release);
    let (s, _, body) = get(h, &path, t, &[("if-none-match", etag.as_str())]).await;
    assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));
}

/// Splits a multipart body into (part headers, part data).
fn split_parts(body: &[u8], delimiter: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + delimiter.len() <= body.len() {
        if &body[i..i + delimiter.len()] == delimiter {
            starts.push(i);
            i += delimiter.len();
        } else {
            i += 1;
        }
    }
    starts
        .windows(2)
        .map(|w| {
            let part = &body[w[0] + delimiter.len() + 2..w[1]];
            let split = part.windows(4).position(|x| x == b"\r\n\r\n").unwrap();
            (
                String::from_utf8_lossy(&part[..split]).into(),
                part[split + 4..].to_vec(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_device_cannot_download_a_bundle_assigned_to_another() {
    let f = fleet().await;
    let h = &f.h;
    h.enrol("pump-2", 42, json!({})).await;
    let other = h.session("pump-2", 42).await.unwrap();
    let path = format!("/api/v1/bundles/{}", f.release);
    let (s, _, body) = get(h, &path, Some(&other), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("not assigned"));
    // The mirror path is off by default.
    let (s, _, _) = get(h, &format!("/mirror/{}", f.release), None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn public_mirror_serves_without_a_token_and_check_ins_point_there() {
    let h = Harness::with_env(&[
        ("SIGIL_PUBLIC_MIRROR", "true"),
        ("SIGIL_MIRROR_BASE_URL", "https://cdn.example/sigil/"),
    ]);
    let b = release_bundle("1.2.0", 5);
    let (_, r) = h.upload(b.clone()).await;
    let id = r["id"].as_str().unwrap();
    let (s, _, body) = get(
        &h,
        &format!("/mirror/{id}"),
        None,
        &[("range", "bytes=0-99")],
    )
    .await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &b[..100])
    );
    h.enrol("pump-1", 41, json!({})).await;
    h.deploy(
        id,
        json!({ "kind": "channel", "value": "stable" }),
        json!({}),
    )
    .await;
    let t = h.session("pump-1", 41).await.unwrap();
    let (_, r) = h.check_in(&t, "idle", None).await;
    assert_eq!(
        r["update"]["download_url"],
        format!("https://cdn.example/sigil/{id}")
    );
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
async fn rollout_advances_on_successes_and_halts_on_failures() {
    let h = Harness::new();
    let (_, r) = h.upload(release_bundle("2.0.0", 7)).await;
    let release = r["id"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for i in 0..20u8 {
        let id = format!("pump-{i:02}");
        h.enrol(&id, 100 + i, json!({ "groups": ["ward-3"] })).await;
        tokens.push(h.session(&id, 100 + i).await.unwrap());
    }
    let (s, d) = h
        .deploy(
            &release,
            json!({ "kind": "group", "value": "ward-3" }),
            json!({ "phases": [10, 50, 100], "min_success_percent": 100, "max_failure_percent": 20 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let dep = d["id"].as_i64().unwrap();

    // Phase 0 admits 2 of 20 devices.
    let phase0 = offered(&h, &tokens).await;
    assert_eq!(phase0.len(), 2);
    for t in &phase0 {
        h.check_in(t, "confirmed", Some(dep)).await;
    }
    let (_, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}"),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(
        (v["phase"].clone(), v["state"].clone()),
        (json!(1), json!("active"))
    );

    // Phase 1 admits 10: the 2 done plus 8 new; 3 failures of 10 pass the 20% threshold.
    let phase1 = offered(&h, &tokens).await;
    assert_eq!(phase1.len(), 8);
    h.check_in(&phase1[0], "failed", Some(dep)).await;
    h.check_in(&phase1[1], "reverted", Some(dep)).await;
    let (_, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(v["state"], "active", "20% is the threshold, not past it");
    h.check_in(&phase1[2], "failed", Some(dep)).await;
    let (_, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(v["state"], "halted");
    assert_eq!(v["counts"]["failed"], 2);
    assert_eq!(v["counts"]["reverted"], 1);
    assert!(
        offered(&h, &tokens).await.is_empty(),
        "a halted rollout assigns nothing"
    );
    // Downloads stop too.
    let path = format!("/api/v1/bundles/{release}");
    assert_eq!(
        get(&h, &path, Some(&phase1[3]), &[]).await.0,
        StatusCode::FORBIDDEN
    );

    // The operator resumes (halt re-triggers at once), then cancels.
    let op = Some(h.token(Role::Operator));
    let (_, v) = h
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}/resume"),
            op,
            None,
        )
        .await;
    assert_eq!(
        v["state"], "halted",
        "resuming does not bypass the failure threshold"
    );
    let (s, v) = h
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}/cancel"),
            op,
            None,
        )
        .await;
    assert_eq!(
        (s, v["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/deployments/{dep}/resume"),
            op,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Long lists are paged; counts cover every target device.
    let (_, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}?offset=3&limit=5"),
            op,
            None,
        )
        .await;
    assert_eq!(v["members"].as_array().unwrap().len(), 5);
    assert_eq!(v["members"][0]["rank"], 3);
    let total: u64 = v["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(total, 20);
    let (_, d) = h
        .call("GET", "/api/v1/devices?offset=18&limit=5", op, None)
        .await;
    assert_eq!(d.as_array().unwrap().len(), 2);
    let (s, _) = h.call("GET", "/api/v1/devices?limit=0", op, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Every step is in the audit trail, and the trail verifies.
    let (_, head) = h
        .call(
            "GET",
            "/api/v1/audit/head",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    let export = export(&h).await;
    let summary = verify_lines(export.as_bytes(), ending_at(head["hash"].as_str())).unwrap();
    assert!(summary.entries > 40);
    for action in [
        "deployment.create",
        "deployment.advance",
        "deployment.halt",
        "deployment.resume",
        "deployment.cancel",
        "device.status",
    ] {
        assert!(
            export.contains(&format!("\"action\":\"{action}\"")),
            "missing {action}"
        );
    }
}

#[tokio::test]
async fn retired_releases_are_no_longer_offered_and_reports_cannot_touch_other_deployments() {
    let f = fleet().await;
    let h = &f.h;
    // A deployment pump-1 is not part of: its report for it changes nothing there.
    h.enrol("pump-2", 42, json!({ "channel": "beta" })).await;
    let (_, other) = h
        .deploy(
            &f.release,
            json!({ "kind": "channel", "value": "beta" }),
            json!({}),
        )
        .await;
    let other = other["id"].as_i64().unwrap();
    h.check_in(&f.device_token, "failed", Some(other)).await;
    let (_, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{other}"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(
        (v["state"].clone(), v["counts"]["failed"].clone()),
        (json!("active"), json!(0))
    );

    assert_ne!(
        h.check_in(&f.device_token, "idle", None).await.1["update"],
        Value::Null
    );
    h.call(
        "POST",
        &format!("/api/v1/releases/{}/retire", f.release),
        Some(h.token(Role::Release)),
        None,
    )
    .await;
    assert_eq!(
        h.check_in(&f.device_token, "idle", None).await.1["update"],
        Value::Null
    );
    let (s, e) = h
        .deploy(
            &f.release,
            json!({ "kind": "channel", "value": "stable" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
}

#[tokio::test]
async fn a_release_below_the_device_security_counter_is_not_offered() {
    let f = fleet().await;
    let h = &f.h;
    // The release has security counter 5.
    let body =
        |counter: u32| json!({ "version": "1.0.0", "security_counter": counter, "state": "idle" });
    let (_, r) = h
        .call(
            "POST",
            "/api/v1/device/checkin",
            Some(&f.device_token),
            Some(body(6)),
        )
        .await;
    assert_eq!(r["update"], Value::Null, "would be a rollback");
    let (_, r) = h
        .call(
            "POST",
            "/api/v1/device/checkin",
            Some(&f.device_token),
            Some(body(5)),
        )
        .await;
    assert_eq!(
        r["update"]["security_counter"], 5,
        "equal counters are allowed"
    );
}

#[tokio::test]
async fn head_requests_give_the_length_without_a_body() {
    let f = fleet().await;
    let req = Request::head(format!("/api/v1/bundles/{}", f.release))
        .header("authorization", format!("Bearer {}", f.device_token))
        .body(Body::empty())
        .unwrap();
    let res = f.h.send(req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], f.bundle.len().to_string());
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(body.is_empty());
}

#[tokio::test]
async fn pause_stops_assignments_until_resumed() {
    let f = fleet().await;
    let h = &f.h;
    let op = Some(h.token(Role::Operator));
    let (_, v) = h
        .call(
            "POST",
            &format!("/api/v1/deployments/{}/pause", f.deployment),
            op,
            None,
        )
        .await;
    assert_eq!(v["state"], "paused");
    assert_eq!(
        h.check_in(&f.device_token, "idle", None).await.1["update"],
        Value::Null
    );
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/deployments/{}/pause", f.deployment),
            op,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    h.call(
        "POST",
        &format!("/api/v1/deployments/{}/resume", f.deployment),
        op,
        None,
    )
    .await;
    assert_ne!(
        h.check_in(&f.device_token, "idle", None).await.1["update"],
        Value::Null
    );
}

/// The chain must end at `head`.
fn ending_at(head: Option<&str>) -> Trust {
    Trust {
        head: head.map(str::to_owned),
        ..Trust::default()
    }
}

async fn export(h: &Harness) -> String {
    let (s, body) = h
        .call(
            "GET",
            "/api/v1/audit/export",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    body.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{body}\n"))
}

#[tokio::test]
async fn tampering_with_the_stored_audit_trail_is_detected_in_the_export() {
    let f = fleet().await;
    let h = &f.h;
    assert!(verify_lines(export(h).await.as_bytes(), Trust::default()).is_ok());
    h.raw_execute(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'someone-else' WHERE seq = 2;",
        "ALTER TABLE audit DISABLE TRIGGER audit_no_update; \
         UPDATE audit SET actor = 'someone-else' WHERE seq = 2;",
    );
    let err = verify_lines(export(h).await.as_bytes(), Trust::default()).unwrap_err();
    assert!(err.to_string().contains("entry 2"), "{err}");
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors() {
    let f = fleet().await;
    let h = &f.h;
    let op = h.token(Role::Operator);
    let send = |ct: &'static str, body: &'static str| {
        Request::post("/api/v1/devices")
            .header("authorization", format!("Bearer {op}"))
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap()
    };
    let check = |res: axum::response::Response, status: StatusCode| async move {
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["content-type"], "application/json");
        let b = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(!v["message"].as_str().unwrap().is_empty());
        v
    };
    check(
        h.send(send("application/json", "{not json")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    check(
        h.send(send("text/plain", "{}")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let v = check(
        h.send(send(
            "application/json",
            r#"{"id":"x","product":{"vendor":"a","device":"b"},"public_key":"zz"}"#,
        ))
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("public_key"));
    let v = check(
        h.send(send(
            "application/json",
            r#"{"id":"x","product":{"vendor":"a","device":"b"},"public_key":"00","colour":"red"}"#,
        ))
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("colour"), "{v}");
    let long_id = "x".repeat(65);
    let (s, e) = h.enrol(&long_id, 50, json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("64"));
    let (s, _) = h.enrol("pump-1", 41, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "enrolled twice");
    let big = format!(r#"{{"id":"{}"}}"#, "x".repeat(70_000));
    let req = Request::post("/api/v1/devices")
        .header("authorization", format!("Bearer {op}"))
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    check(h.send(req).await, StatusCode::PAYLOAD_TOO_LARGE).await;

    let (s, _) = h.call("GET", "/api/v1/releases/00", Some(op), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call(
            "GET",
            &format!("/api/v1/releases/{}", "0".repeat(64)),
            Some(op),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call("GET", "/api/v1/deployments/999", Some(op), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = h.call("GET", "/api/v1/nothing", Some(op), None).await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (s, e) = h
        .call("GET", "/api/v1/devices", Some("Bearer-less"), None)
        .await;
    assert_eq!(
        (s, e["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    let (s, _) = h.check_in(&f.device_token, "exploded", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, d) = h
        .deploy(
            &f.release,
            json!({ "kind": "devices", "value": ["pump-1", "pump-1"] }),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, d["devices"].clone()),
        (StatusCode::CREATED, json!(1)),
        "duplicates count once"
    );
    let (s, e) = h
        .deploy(
            &f.release,
            json!({ "kind": "devices", "value": ["ghost"] }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = h
        .deploy(
            &f.release,
            json!({ "kind": "group", "value": "nobody" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = h
        .deploy(
            &f.release,
            json!({ "kind": "group", "value": "g" }),
            json!({ "phases": [50, 10] }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
}

#[tokio::test]
async fn rate_limit_answers_429() {
    let h = Harness::with_env(&[("SIGIL_RATE_PER_SECOND", "1"), ("SIGIL_RATE_BURST", "3")]);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(h.call("GET", "/healthz", None, None).await.0);
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn operations_endpoints() {
    let f = fleet().await;
    let h = &f.h;
    h.check_in(&f.device_token, "idle", None).await;
    let (s, v) = h.call("GET", "/healthz", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({ "status": "ok" })));
    let (s, m) = h.call("GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap();
    assert!(m.contains("sigil_check_ins_total 1"), "{m}");
    // Latency histograms: cumulative buckets that end at the count, one check-in observed.
    assert!(
        m.contains("# TYPE sigil_check_in_duration_seconds histogram"),
        "{m}"
    );
    assert!(
        m.contains("sigil_check_in_duration_seconds_count 1\n"),
        "{m}"
    );
    assert!(
        m.contains("sigil_check_in_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
        "{m}"
    );
    let sample = |line: &str| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    let buckets: Vec<f64> = m
        .lines()
        .filter(|l| l.starts_with("sigil_http_request_duration_seconds_bucket"))
        .map(sample)
        .collect();
    assert_eq!(buckets.len(), 13, "{m}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{m}");
    let count = m
        .lines()
        .find(|l| l.starts_with("sigil_http_request_duration_seconds_count"))
        .map(sample)
        .unwrap();
    // The fleet's set-up calls and the check-in above went through the middleware.
    assert!(count >= 5.0, "{m}");
    assert_eq!(buckets.last().copied(), Some(count), "{m}");
    assert!(m.contains("sigil_deployments{state=\"active\"} 1"), "{m}");
    assert!(
        m.contains("sigil_uploads_total{result=\"accepted\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sigil_rollout_devices{outcome=\"in_progress\"} 1"),
        "{m}"
    );
    let (s, doc) = h.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/device/checkin"]["post"].is_object());
    // Every documented operation is routed (and has a summary).
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path}");
            let uri = path.replace("{id}", "1");
            let (s, e) = h.call(&method.to_uppercase(), &uri, None, None).await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(
                e["message"], "no such endpoint",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn audit_export_streams_long_logs_as_one_chain() {
    use sigil_server::store::{AuditAction, AuditEvent};
    let h = Harness::new();
    for n in 0..2_345u32 {
        let event = AuditEvent::new(
            "ops",
            AuditAction::TokenCreate,
            &n.to_string(),
            json!({ "n": n }),
        );
        h.blocking(|s| s.append_audit(&event, u64::from(n)).unwrap());
    }
    let (_, head) = h
        .call(
            "GET",
            "/api/v1/audit/head",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    let text = export(&h).await;
    let summary = verify_lines(text.as_bytes(), ending_at(head["hash"].as_str())).unwrap();
    assert_eq!(summary.entries, 2_345);
    assert_eq!(head["seq"], 2_345);
}

#[tokio::test]
async fn device_lists_filter_by_product_channel_group_state_and_revocation() {
    let h = Harness::new();
    let fleet = [
        (
            "a-1",
            json!({ "groups": ["ward-3", "icu"], "channel": "beta" }),
        ),
        ("a-2", json!({ "groups": ["ward-3"] })),
        ("a-3", json!({ "groups": ["ward-30"] })),
        (
            "b-1",
            json!({ "groups": ["ward-3"], "product": { "vendor": "acme", "device": "monitor-m1" } }),
        ),
    ];
    for (n, (id, extra)) in fleet.into_iter().enumerate() {
        let (s, d) = h.enrol(id, 60 + n as u8, extra).await;
        assert_eq!(s, StatusCode::CREATED, "{d}");
    }
    let token = h.session("a-2", 61).await.unwrap();
    assert_eq!(h.check_in(&token, "idle", None).await.0, StatusCode::OK);
    let op = Some(h.token(Role::Operator));
    let (s, _) = h.call("POST", "/api/v1/devices/a-3/revoke", op, None).await;
    assert_eq!(s, StatusCode::OK);

    let auditor = Some(h.token(Role::Auditor));
    let ids = |query: &'static str| {
        let h = &h;
        async move {
            let (s, v) = h
                .call("GET", &format!("/api/v1/devices{query}"), auditor, None)
                .await;
            assert_eq!(s, StatusCode::OK, "{query}: {v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("").await, ["a-1", "a-2", "a-3", "b-1"]);
    assert_eq!(ids("?product=acme/pump-x2").await, ["a-1", "a-2", "a-3"]);
    assert_eq!(ids("?product=acme/monitor-m1").await, ["b-1"]);
    // Group membership is exact: ward-30 is not in ward-3.
    assert_eq!(ids("?group=ward-3").await, ["a-1", "a-2", "b-1"]);
    assert_eq!(ids("?group=icu&channel=beta").await, ["a-1"]);
    assert_eq!(ids("?group=icu&channel=stable").await, Vec::<String>::new());
    assert_eq!(ids("?state=idle").await, ["a-2"]);
    assert_eq!(ids("?revoked=true").await, ["a-3"]);
    assert_eq!(
        ids("?revoked=false&product=acme/pump-x2").await,
        ["a-1", "a-2"]
    );
    // Conditions combine with paging.
    assert_eq!(ids("?group=ward-3&offset=1&limit=1").await, ["a-2"]);

    for bad in [
        "?product=acme",
        "?product=acme/pump%20x2",
        "?revoked=maybe",
        "?colour=blue",
        "?group=ward-3&limit=0",
    ] {
        let (s, e) = h
            .call("GET", &format!("/api/v1/devices{bad}"), op, None)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
}

#[tokio::test]
async fn release_and_deployment_lists_filter_and_page() {
    let h = Harness::new();
    let mut releases = Vec::new();
    for (n, version) in ["1.0.0", "1.1.0", "1.2.0"].into_iter().enumerate() {
        let (s, r) = h.upload(release_bundle(version, 1 + n as u32)).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        releases.push(r["id"].as_str().unwrap().to_owned());
    }
    h.enrol("p-1", 70, json!({})).await;
    let mut deployments = Vec::new();
    for release in &releases[1..] {
        let (s, d) = h
            .deploy(
                release,
                json!({ "kind": "devices", "value": ["p-1"] }),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{d}");
        deployments.push(d["id"].as_i64().unwrap());
    }
    let op = Some(h.token(Role::Operator));
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/deployments/{}/cancel", deployments[0]),
            op,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/releases/{}/retire", releases[0]),
            Some(h.token(Role::Release)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let auditor = Some(h.token(Role::Auditor));
    let h = &h;
    let list = |uri: String| async move { h.call("GET", &uri, auditor, None).await };
    let versions = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest upload first; uploads within one second are ordered by id, so compare sets.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (_, all) = list("/api/v1/releases".into()).await;
    assert_eq!(sorted(versions(&all)), ["1.0.0", "1.1.0", "1.2.0"]);
    let (_, v) = list("/api/v1/releases?retired=false".into()).await;
    assert_eq!(sorted(versions(&v)), ["1.1.0", "1.2.0"]);
    let (_, v) = list("/api/v1/releases?retired=true&product=acme/pump-x2".into()).await;
    assert_eq!(versions(&v), ["1.0.0"]);
    let (_, v) = list("/api/v1/releases?product=acme/other".into()).await;
    assert_eq!(versions(&v), Vec::<String>::new());
    let (_, v) = list("/api/v1/releases?offset=1&limit=1".into()).await;
    assert_eq!(versions(&v), [versions(&all)[1].clone()]);

    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    let (_, v) = list("/api/v1/deployments".into()).await;
    assert_eq!(ids(&v), [deployments[1], deployments[0]], "newest first");
    let (_, v) = list("/api/v1/deployments?state=cancelled".into()).await;
    assert_eq!(ids(&v), [deployments[0]]);
    let (_, v) = list("/api/v1/deployments?state=active&product=acme/pump-x2".into()).await;
    assert_eq!(ids(&v), [deployments[1]]);
    let (_, v) = list("/api/v1/deployments?limit=1&offset=1".into()).await;
    assert_eq!(ids(&v), [deployments[0]]);

    for bad in [
        "/api/v1/releases?retired=perhaps",
        "/api/v1/releases?product=acme",
        "/api/v1/releases?limit=0",
        "/api/v1/releases?sort=asc",
        "/api/v1/deployments?state=sleeping",
        "/api/v1/deployments?product=/pump",
    ] {
        let (s, e) = list(bad.into()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
}

#[tokio::test]
async fn enrolment_refuses_keys_outside_the_prime_order_subgroup() {
    let h = Harness::new();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let cases = [
        (torsion_twin(43), "not in the prime-order subgroup"),
        (identity, "has small order"),
        (non_canonical_point(), "not in canonical encoding"),
    ];
    for (i, (key, says)) in cases.into_iter().enumerate() {
        let (s, v) = h
            .call(
                "POST",
                "/api/v1/devices",
                Some(h.token(Role::Operator)),
                Some(json!({
                    "id": format!("odd-{i}"),
                    "product": { "vendor": "acme", "device": "pump-x2" },
                    "public_key": hex::encode(key),
                })),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("public_key: step E1:"), "{message}");
        assert!(message.contains(says), "{message}");
    }
    // The key the twin was made from enrols.
    let (s, v) = h.enrol("pump-43", 43, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
