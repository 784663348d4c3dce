//! Encrypted payloads on the server (manifests/FORMAT.md §9, issue 16): devices' encryption
//! keys, key records of encrypted releases, their hand-out at check-in, and the hidden-server
//! test (the server never sees plaintext).
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::encrypted::{self, content_key, device, record, release_of};
use common::*;
use serde_json::{json, Value};
use sigil_server::store::Role;

/// The plaintext image of the tests: 16 KiB in which no two 64-byte blocks are alike.
fn image() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 << 10);
    let mut x: u32 = 0x1234_5678;
    while out.len() < 16 << 10 {
        // xorshift32
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn spec() -> Spec {
    Spec {
        payload: image(),
        ..Spec::default()
    }
}

/// An audit entry's detail (JSON text).
fn detail(entry: &Value) -> Value {
    serde_json::from_str(entry["detail"].as_str().unwrap()).unwrap()
}

fn key_hex(seed: u8) -> String {
    hex::encode(device(seed).public_key())
}

async fn raw(
    h: &Harness,
    method: &str,
    uri: &str,
    token: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    let res = h.send(req).await;
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn upload_records(h: &Harness, release: &str, records: &[Vec<u8>]) -> (StatusCode, Value) {
    let (s, body) = raw(
        h,
        "POST",
        &format!("/api/v1/releases/{release}/key-records"),
        h.token(Role::Release),
        records.concat(),
    )
    .await;
    (s, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Two devices with encryption keys (pump-1 seed 41/x25519 11, pump-2 seed 42/x25519 12) and
/// one without (pump-3, seed 43); an encrypted release with records for pump-1 and pump-2,
/// deployed to the stable channel. Returns the bundle and the release id.
async fn fleet(h: &Harness) -> (Vec<u8>, String) {
    let (s, d) = h
        .enrol("pump-1", 41, json!({ "encryption_key": key_hex(11) }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let (s, _) = h
        .enrol("pump-2", 42, json!({ "encryption_key": key_hex(12) }))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.enrol("pump-3", 43, json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    let key = content_key(1);
    let bundle = encrypted::bundle(&spec(), &key);
    let (s, r) = h.upload(bundle.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, r) = upload_records(
        h,
        &id,
        &[record(&bundle, &key, 11, 1), record(&bundle, &key, 12, 2)],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["devices"], json!(["pump-1", "pump-2"]));
    let (s, r) = h
        .deploy(
            &id,
            json!({ "kind": "channel", "value": "stable" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    (bundle, id)
}

#[tokio::test]
async fn enrolment_takes_a_checked_encryption_key_and_shows_it() {
    let h = Harness::new();
    let (s, d) = h
        .enrol("pump-1", 41, json!({ "encryption_key": key_hex(11) }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let recipient = hex::encode(device(11).id());
    assert_eq!(d["encryption_key"]["public_key"], key_hex(11));
    assert_eq!(d["encryption_key"]["recipient"], recipient);
    let (_, d) = h
        .call(
            "GET",
            "/api/v1/devices/pump-1",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(d["encryption_key"]["recipient"], recipient);
    // Without a key: no field.
    h.enrol("pump-2", 42, json!({})).await;
    let (_, d) = h
        .call(
            "GET",
            "/api/v1/devices/pump-2",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert!(d.get("encryption_key").is_none(), "{d}");
    // Refused: not 32 bytes, a small-order point (u = 0, u = 1), another device's key; none of
    // them enrols the device.
    for (id, bad) in [
        ("pump-3", "00".repeat(31)),
        ("pump-4", "00".repeat(32)),
        ("pump-5", format!("01{}", "00".repeat(31))),
    ] {
        let (s, e) = h.enrol(id, 43, json!({ "encryption_key": bad })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        let (s, _) = h
            .call(
                "GET",
                &format!("/api/v1/devices/{id}"),
                Some(h.token(Role::Auditor)),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let (s, e) = h
        .enrol("pump-6", 44, json!({ "encryption_key": key_hex(11) }))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = h
        .call(
            "GET",
            "/api/v1/devices/pump-6",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_admin_and_operator_change_a_key_and_it_is_audited() {
    let h = Harness::new();
    h.enrol("pump-1", 41, json!({})).await;
    let uri = "/api/v1/devices/pump-1/encryption-key";
    let body = json!({ "encryption_key": key_hex(11) });
    for role in [Role::Release, Role::Auditor, Role::Approver] {
        let (s, _) = h
            .call("PUT", uri, Some(h.token(role)), Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{role:?}");
    }
    let (s, d) = h
        .call("PUT", uri, Some(h.token(Role::Operator)), Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["encryption_key"]["public_key"], key_hex(11));
    let (s, d) = h
        .call(
            "PUT",
            uri,
            Some(h.token(Role::Admin)),
            Some(json!({ "encryption_key": key_hex(12) })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        d["encryption_key"]["recipient"],
        hex::encode(device(12).id())
    );
    let (s, d) = h
        .call(
            "PUT",
            uri,
            Some(h.token(Role::Admin)),
            Some(json!({ "encryption_key": null })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(d.get("encryption_key").is_none(), "{d}");
    let (s, _) = h
        .call(
            "PUT",
            "/api/v1/devices/nobody/encryption-key",
            Some(h.token(Role::Admin)),
            Some(json!({ "encryption_key": key_hex(13) })),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let entries = people::audited(&h, "device.encryption_key").await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[0]["actor"], "operator");
    assert_eq!(detail(&entries[1])["public_key"], key_hex(12));
    assert_eq!(detail(&entries[2])["public_key"], Value::Null);
}

#[tokio::test]
async fn each_device_gets_exactly_its_record_and_one_without_is_not_offered() {
    let h = Harness::new();
    let (bundle, id) = fleet(&h).await;
    let key = content_key(1);
    for (name, seed, x) in [("pump-1", 41, 11u8), ("pump-2", 42, 12)] {
        let t = h.session(name, seed).await.unwrap();
        let (s, r) = h.check_in(&t, "idle", None).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["update"]["release"], id.as_str(), "{r}");
        let rec = hex::decode(r["update"]["key_record"].as_str().unwrap()).unwrap();
        // The device opens it with its own key (D1–D4) and gets the release's content key.
        let parsed = sigil_manifests::UnverifiedBundle::parse(&bundle).unwrap();
        let manifest = sigil_manifests::Manifest::decode(parsed.envelope().manifest).unwrap();
        let encryption = manifest.payload_format.encryption().unwrap();
        let cek = device(x)
            .open_for(&rec, &release_of(&bundle), encryption)
            .unwrap();
        assert_eq!(cek.to_bytes(), key.to_bytes(), "{name}");
        // Another device's key cannot open it.
        let other = if x == 11 { 12 } else { 11 };
        assert!(device(other)
            .open_for(&rec, &release_of(&bundle), encryption)
            .is_err());
        // The same record on its own, with the device's session.
        let (s, alone) = raw(
            &h,
            "GET",
            &format!("/api/v1/device/key-records/{id}"),
            &t,
            Vec::new(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(alone, rec);
    }
    // pump-3 has no encryption key: it is not offered the release, and is told why.
    let t = h.session("pump-3", 43).await.unwrap();
    let (s, r) = h.check_in(&t, "idle", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["update"], Value::Null, "{r}");
    let why = r["withheld"].as_str().unwrap();
    assert!(why.contains("no key record for device pump-3"), "{why}");
    let (s, _) = raw(
        &h,
        "GET",
        &format!("/api/v1/device/key-records/{id}"),
        &t,
        Vec::new(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Operators cannot use the device endpoint.
    let (s, _) = raw(
        &h,
        "GET",
        &format!("/api/v1/device/key-records/{id}"),
        h.token(Role::Operator),
        Vec::new(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Once it has a key and a record, it is offered the release.
    let (s, _) = h
        .call(
            "PUT",
            "/api/v1/devices/pump-3/encryption-key",
            Some(h.token(Role::Operator)),
            Some(json!({ "encryption_key": key_hex(13) })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = upload_records(&h, &id, &[record(&bundle, &key, 13, 3)]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, r) = h.check_in(&t, "idle", None).await;
    assert_eq!(r["update"]["release"], id.as_str(), "{r}");
    assert_eq!(
        r["update"]["key_record"],
        hex::encode(record(&bundle, &key, 13, 3))
    );
    let audit = people::audited(&h, "release.key_records").await;
    assert_eq!(audit.len(), 2);
    assert_eq!(detail(&audit[1])["devices"], json!(["pump-3"]));
}

#[tokio::test]
async fn records_that_do_not_belong_to_the_release_are_refused() {
    let h = Harness::new();
    let (bundle, id) = fleet(&h).await;
    let key = content_key(1);
    // A record for another release (same key, another image).
    let other_spec = Spec {
        payload: image()[..8192].to_vec(),
        ..Spec::default()
    };
    let other = encrypted::bundle(&other_spec, &content_key(2));
    let (s, e) = upload_records(&h, &id, &[record(&other, &content_key(2), 11, 4)]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("another release"),
        "{e}"
    );
    // A record for a key no device is enrolled with.
    let (s, e) = upload_records(&h, &id, &[record(&bundle, &key, 99, 5)]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("no enrolled device"),
        "{e}"
    );
    // Malformed: truncated, a wrong tag, nothing; one bad record refuses the whole upload.
    let good = record(&bundle, &key, 11, 6);
    let mut bad_tag = good.clone();
    bad_tag[0] ^= 1;
    for body in [
        [good.clone(), good[..137].to_vec()].concat(),
        [good.clone(), bad_tag].concat(),
        Vec::new(),
    ] {
        let (s, _) = raw(
            &h,
            "POST",
            &format!("/api/v1/releases/{id}/key-records"),
            h.token(Role::Release),
            body,
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // The stored record of pump-1 is still the first one.
    let t = h.session("pump-1", 41).await.unwrap();
    let (_, r) = h.check_in(&t, "idle", None).await;
    assert_eq!(
        r["update"]["key_record"],
        hex::encode(record(&bundle, &key, 11, 1))
    );
    // A plain release takes no records; only the release role uploads them.
    let plain = h.upload(common::bundle(&Spec::default())).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, e) = upload_records(&h, &plain, std::slice::from_ref(&good)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, _) = raw(
        &h,
        "POST",
        &format!("/api/v1/releases/{id}/key-records"),
        h.token(Role::Operator),
        good.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = upload_records(&h, &"0".repeat(64), &[good]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(people::audited(&h, "release.key_records").await.len(), 1);
}

/// Every 64-byte-aligned block of `image` that occurs in `haystack` (at any offset).
fn leaked_blocks(image: &[u8], haystack: &[u8]) -> Vec<usize> {
    use std::collections::{HashMap, HashSet};
    // Indexed by their first 8 bytes (a cheap key), compared in full on a hit.
    let mut blocks: HashMap<u64, HashSet<&[u8]>> = HashMap::new();
    for b in image.chunks_exact(64) {
        let k = u64::from_le_bytes(b[..8].try_into().unwrap());
        blocks.entry(k).or_default().insert(b);
    }
    let mut found = Vec::new();
    if haystack.len() < 64 {
        return found;
    }
    for start in 0..=haystack.len() - 64 {
        let k = u64::from_le_bytes(haystack[start..start + 8].try_into().unwrap());
        if blocks
            .get(&k)
            .is_some_and(|set| set.contains(&haystack[start..start + 64]))
        {
            found.push(start);
        }
    }
    found
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn hidden_server_never_sees_plaintext() {
    let h = Harness::new();
    let image = image();
    // The check itself finds a block where there is one.
    assert!(!leaked_blocks(&image, &[b"x".as_slice(), &image[640..704]].concat()).is_empty());
    let (bundle, id) = fleet(&h).await;
    let mut responses: Vec<Vec<u8>> = Vec::new();
    let t = h.session("pump-1", 41).await.unwrap();
    let (_, r) = h.check_in(&t, "idle", None).await;
    responses.push(r.to_string().into_bytes());
    let (s, b) = raw(&h, "GET", &format!("/api/v1/bundles/{id}"), &t, Vec::new()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, bundle);
    responses.push(b);
    let (_, m) = raw(&h, "GET", &format!("/mirror/{id}"), &t, Vec::new()).await;
    responses.push(m);
    for uri in [
        format!("/api/v1/releases/{id}"),
        "/api/v1/devices/pump-1".to_owned(),
        "/api/v1/audit/export".to_owned(),
    ] {
        let (_, v) = h
            .call("GET", &uri, Some(h.token(Role::Auditor)), None)
            .await;
        responses.push(v.to_string().into_bytes());
    }
    let (_, rec) = raw(
        &h,
        "GET",
        &format!("/api/v1/device/key-records/{id}"),
        &t,
        Vec::new(),
    )
    .await;
    responses.push(rec);
    for (i, r) in responses.iter().enumerate() {
        assert!(
            leaked_blocks(&image, r).is_empty(),
            "response {i} holds plaintext"
        );
    }
    // Everything the server wrote: the SQLite database (and its WAL) and the bundle store; on
    // PostgreSQL, the cluster's files too (after a checkpoint, so the tables are on disk).
    let mut files = Vec::new();
    files_under(h.dir.path(), &mut files);
    if let Some(pg) = &h.pg {
        h.blocking(|_| pg.client().batch_execute("CHECKPOINT").unwrap());
        files_under(&pg.data, &mut files);
    }
    assert!(files.len() > 2, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            leaked_blocks(&image, &bytes).is_empty(),
            "{} holds plaintext",
            f.display()
        );
    }
    // And the bundle the server stored is the ciphertext, byte for byte.
    assert!(files.iter().any(|f| std::fs::read(f).unwrap() == bundle));
}

/// The first deployment's id.
async fn first_deployment(h: &Harness) -> i64 {
    let (s, v) = h
        .call(
            "GET",
            "/api/v1/deployments",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v[0]["id"].as_i64().unwrap()
}

async fn withheld(h: &Harness, dep: i64) -> (u64, Value) {
    let (s, d) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let (s, list) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/withheld"),
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    (d["withheld"].as_u64().unwrap(), list)
}

#[tokio::test]
async fn devices_withheld_for_lack_of_a_key_record_are_counted_listed_and_shown() {
    let h = Harness::with_env(people::ENV);
    let (bundle, id) = fleet(&h).await;
    let dep = first_deployment(&h).await;
    // pump-3 has no encryption key: withheld, and the operator is told what to do.
    let (n, list) = withheld(&h, dep).await;
    assert_eq!(n, 1, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let w = &list[0];
    assert_eq!(w["device_id"], "pump-3");
    assert_eq!(w["status"], "pending");
    assert_eq!(w["reason"], "no_encryption_key");
    assert!(w["remedy"].as_str().unwrap().contains("enrol"), "{w}");
    // The check-in agrees: pump-3 is not offered the release.
    let t = h.session("pump-3", 43).await.unwrap();
    let (_, r) = h.check_in(&t, "idle", None).await;
    assert_eq!(r["update"], Value::Null, "{r}");

    // The console's deployment page lists it, with the reason.
    let ops = people::person(&h, "olga", &[Role::Operator]).await;
    let (s, page) = people::as_person(
        &h,
        &ops,
        "GET",
        &format!("/console/deployments/{dep}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let html = page.as_str().unwrap();
    assert!(html.contains("id=\"withheld\""), "{html}");
    assert!(html.contains("/console/devices/pump-3"), "{html}");
    assert!(html.contains("no encryption key"), "{html}");

    // With a key but no record: still withheld, for the other reason.
    let (s, _) = h
        .call(
            "PUT",
            "/api/v1/devices/pump-3/encryption-key",
            Some(h.token(Role::Operator)),
            Some(json!({ "encryption_key": key_hex(13) })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (n, list) = withheld(&h, dep).await;
    assert_eq!(n, 1);
    assert_eq!(list[0]["reason"], "no_key_record", "{list}");

    // Its record uploaded: nobody is withheld, and the page has no such section.
    let key = content_key(1);
    let (s, _) = upload_records(&h, &id, &[record(&bundle, &key, 13, 3)]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (n, list) = withheld(&h, dep).await;
    assert_eq!((n, list), (0, json!([])));
    let (_, page) = people::as_person(
        &h,
        &ops,
        "GET",
        &format!("/console/deployments/{dep}"),
        None,
    )
    .await;
    assert!(!page.as_str().unwrap().contains("id=\"withheld\""));

    // And its check-in is offered the release.
    let (_, r) = h.check_in(&t, "idle", None).await;
    assert_eq!(r["update"]["release"], id.as_str(), "{r}");

    // Scoped like the deployment: out of scope reads as missing; unknown ids are 404.
    let (s, _) = h
        .call(
            "GET",
            "/api/v1/deployments/999/withheld",
            Some(h.token(Role::Auditor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let hana = people::person(&h, "hana", &[Role::Auditor]).await;
    let (s, v) = h
        .call(
            "PUT",
            "/api/v1/users/hana/scope",
            Some(h.token(Role::Admin)),
            Some(json!({ "groups": ["hospital-b"] })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = people::as_person(
        &h,
        &hana,
        "GET",
        &format!("/api/v1/deployments/{dep}/withheld"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Devices only read it.
    let (s, _) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{dep}/withheld"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_plain_release_withholds_nobody() {
    let h = Harness::new();
    let (s, _) = h.enrol("pump-3", 43, json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, r) = h.upload(bundle(&spec())).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, r) = h
        .deploy(
            &id,
            json!({ "kind": "channel", "value": "stable" }),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let dep = r["id"].as_i64().unwrap();
    assert_eq!(withheld(&h, dep).await, (0, json!([])));
}
