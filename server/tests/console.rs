//! The web console over HTTP (in process): the login form, every page rendered in a person's
//! session with the strict Content-Security-Policy, the scope of a site's operator, forms
//! refused from another origin, and the audit page's verdict on an intact and an edited chain.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use common::people::{self, read, Person, ENV, PASSPHRASE};
use common::Harness;
use serde_json::json;
use sigil_server::store::Role;

/// A console request: status, headers and the body as text.
async fn page(
    h: &Harness,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "console.test");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match form {
        Some(f) => req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(f).unwrap())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (status, headers, bytes) = read(h.send(req).await).await;
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

const SAME_ORIGIN: &[(&str, &str)] = &[
    ("origin", "http://console.test"),
    ("sec-fetch-site", "same-origin"),
];

/// Logs `p` in through the console's form; the cookie.
async fn console_login(h: &Harness, p: &mut Person) -> String {
    let code = p.code();
    let (s, headers, body) = page(
        h,
        "POST",
        "/console/login",
        None,
        SAME_ORIGIN,
        Some(&[
            ("name", &p.name),
            ("passphrase", PASSPHRASE),
            ("totp", &code),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], "/console/");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    cookie.split(';').next().unwrap().to_owned()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf_token\" value=\"").unwrap() + 25;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_login_form_takes_passphrase_and_code_and_refuses_a_wrong_code() {
    let h = Harness::with_env(ENV);
    let (s, headers, body) = page(&h, "GET", "/console/login", None, &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(body.contains("<label for=\"totp\">"));
    assert!(!body.contains("<script>") && !body.contains("style="));

    // Without a session every page leads to the login.
    let (s, headers, _) = page(&h, "GET", "/console/devices", None, &[], None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/console/login");

    let mut ana = people::person(&h, "ana", &[Role::Operator]).await;
    let wrong = ana.wrong_code();
    let (s, _, body) = page(
        &h,
        "POST",
        "/console/login",
        None,
        SAME_ORIGIN,
        Some(&[
            ("name", "ana"),
            ("passphrase", PASSPHRASE),
            ("totp", &wrong),
        ]),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("wrong name, passphrase or code"), "{body}");
    let cookie = console_login(&h, &mut ana).await;
    let (s, _, body) = page(&h, "GET", "/console/", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("Fleet overview") && body.contains("<svg"));
    assert_eq!(people::audited(&h, "user.login").await.len(), 2);
}

#[tokio::test]
async fn a_throttled_console_login_says_when_to_retry() {
    let mut env = ENV.to_vec();
    env.retain(|(k, _)| *k != "SIGIL_LOGIN_BACKOFF_SECS");
    env.push(("SIGIL_LOGIN_BACKOFF_SECS", "30"));
    let h = Harness::with_env(&env);
    let mut ana = people::person(&h, "ana", &[Role::Operator]).await;
    let form = |code: &str| {
        vec![
            ("name".to_owned(), "ana".to_owned()),
            ("passphrase".to_owned(), PASSPHRASE.to_owned()),
            ("totp".to_owned(), code.to_owned()),
        ]
    };
    let login = |fields: Vec<(String, String)>| {
        let h = &h;
        async move {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (&**k, &**v)).collect();
            page(h, "POST", "/console/login", None, SAME_ORIGIN, Some(&f)).await
        }
    };
    let (s, _, body) = login(form(&ana.wrong_code())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // Within the backoff the right code is not checked: 429, with when to come back.
    let (s, headers, body) = login(form(&ana.code())).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("retry in"), "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test]
async fn every_page_renders_in_a_session_and_a_sites_operator_sees_only_its_devices() {
    let h = Harness::with_env(ENV);
    h.enrol("a1", 1, json!({ "groups": ["hospital-a"] })).await;
    h.enrol("b1", 2, json!({ "groups": ["hospital-b"] })).await;
    let roles = [Role::Admin, Role::Operator, Role::Auditor, Role::Approver];
    let mut root = people::person(&h, "root", &roles).await;
    let cookie = console_login(&h, &mut root).await;
    for path in [
        "/console/",
        "/console/devices",
        "/console/devices?group=hospital-b",
        "/console/devices/a1",
        "/console/releases",
        "/console/deployments",
        "/console/approvals",
        "/console/audit",
        "/console/people",
        "/console/account",
        "/console/records",
    ] {
        let (s, headers, body) = page(&h, "GET", path, Some(&cookie), &[], None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(headers.contains_key("content-security-policy"), "{path}");
        assert!(body.contains("href=\"#main\""), "{path}: no skip link");
    }
    let (_, _, body) = page(&h, "GET", "/console/devices", Some(&cookie), &[], None).await;
    assert!(body.contains(">a1<") && body.contains(">b1<"));
    let (_, _, body) = page(&h, "GET", "/console/records", Some(&cookie), &[], None).await;
    assert!(
        body.contains("<code>device_reports</code>") && body.contains("<code>audit_trail</code>"),
        "{body}"
    );

    let mut hana = people::person(&h, "hana", &[Role::Operator]).await;
    scope_hana(&h, json!({ "groups": ["hospital-a"] })).await;
    let cookie = console_login(&h, &mut hana).await;
    let (_, _, body) = page(&h, "GET", "/console/devices", Some(&cookie), &[], None).await;
    assert!(body.contains(">a1<") && !body.contains(">b1<"), "{body}");
    let (s, _, _) = page(&h, "GET", "/console/devices/b1", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The people page is the admin's.
    let (s, _, _) = page(&h, "GET", "/console/people", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_form_posted_from_another_origin_is_refused() {
    let h = Harness::with_env(ENV);
    let mut ana = people::person(&h, "ana", &[Role::Operator]).await;
    let cookie = console_login(&h, &mut ana).await;
    let (_, _, body) = page(&h, "GET", "/console/", Some(&cookie), &[], None).await;
    let csrf = csrf_of(&body);
    let form: &[(&str, &str)] = &[("csrf_token", &csrf)];
    for headers in [
        &[
            ("origin", "http://evil.test"),
            ("sec-fetch-site", "cross-site"),
        ][..],
        &[("origin", "http://evil.test")][..],
    ] {
        let (s, _, _) = page(
            &h,
            "POST",
            "/console/logout",
            Some(&cookie),
            headers,
            Some(form),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // Without the token, from this origin: refused too.
    let (s, _, _) = page(
        &h,
        "POST",
        "/console/logout",
        Some(&cookie),
        SAME_ORIGIN,
        Some(&[]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = page(
        &h,
        "POST",
        "/console/logout",
        Some(&cookie),
        SAME_ORIGIN,
        Some(form),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = page(&h, "GET", "/console/", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "the session ended");
}

#[tokio::test]
async fn the_audit_page_shows_the_chain_verified_and_an_edited_one_flagged() {
    let h = Harness::with_env(ENV);
    let mut ada = people::person(&h, "ada", &[Role::Auditor]).await;
    let cookie = console_login(&h, &mut ada).await;
    let (s, _, body) = page(&h, "GET", "/console/audit", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("Chain verified"), "{body}");
    // The start-up checkpoint covers the empty log; the entries since are newer.
    assert!(body.contains("1 signed checkpoint verified"), "{body}");
    assert!(body.contains("(entries 1 to "), "{body}");
    assert!(body.contains("user.login"));
    // A checkpoint of the head signed by the server's audit key: its signature is checked.
    let cp = signed_checkpoint(&h, &ada).await;
    let (_, _, body) = page(&h, "GET", "/console/audit", Some(&cookie), &[], None).await;
    assert!(body.contains("Chain verified"), "{body}");
    assert!(
        body.contains(&format!(
            "2 signed checkpoints verified, each along the key rotations to this server&#39;s \
             audit key {}; the last covers entry {}</p>",
            cp["public_key"].as_str().unwrap(),
            cp["seq"]
        )),
        "{body}"
    );
    h.raw_execute(
        "DROP TRIGGER audit_no_update",
        "ALTER TABLE audit DISABLE TRIGGER USER",
    );
    h.raw_execute(
        "UPDATE audit SET actor = 'mallory' WHERE seq = 1",
        "UPDATE audit SET actor = 'mallory' WHERE seq = 1",
    );
    let (s, _, body) = page(&h, "GET", "/console/audit", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("Chain NOT verified"), "{body}");
}

/// A checkpoint of the head signed by the server's audit key (`GET /api/v1/audit/checkpoint`).
async fn signed_checkpoint(h: &Harness, auditor: &Person) -> serde_json::Value {
    let (s, cp) = people::as_person(h, auditor, "GET", "/api/v1/audit/checkpoint", None).await;
    assert_eq!(s, StatusCode::OK, "{cp}");
    cp
}

/// Stores, as someone with database access but not the audit key would, a checkpoint of the
/// current head signed with another key.
async fn forge_checkpoint(h: &Harness, auditor: &Person) {
    let (_, head) = people::as_person(h, auditor, "GET", "/api/v1/audit/head", None).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x66; 32]);
    let cp = sigil_server::audit::Checkpoint::sign(
        &key,
        head["seq"].as_u64().unwrap(),
        head["hash"].as_str().unwrap(),
        1,
        None,
    )
    .unwrap();
    let sql = format!(
        "INSERT INTO audit_checkpoints (seq, head, at, public_key, next_public_key, signature) \
         VALUES ({}, '{}', 1, '{}', NULL, '{}')",
        cp.seq, cp.head, cp.public_key, cp.signature
    );
    h.raw_execute(&sql, &sql);
}

#[tokio::test]
async fn the_audit_page_flags_a_checkpoint_not_signed_by_the_servers_key() {
    // After a genuine checkpoint: a forged one is signed by a key the rotations never handed
    // over to.
    let h = Harness::with_env(ENV);
    let mut ada = people::person(&h, "ada", &[Role::Auditor]).await;
    let cookie = console_login(&h, &mut ada).await;
    signed_checkpoint(&h, &ada).await;
    forge_checkpoint(&h, &ada).await;
    let (s, _, body) = page(&h, "GET", "/console/audit", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("Chain NOT verified"), "{body}");
    assert!(
        body.contains("not the server&#39;s current audit key"),
        "{body}"
    );
    assert!(!body.contains("checkpoint-status"), "{body}");

    // Every checkpoint re-signed by someone else's key verifies on its own, but not against
    // the server's key file (here: the key file replaced, which is the same disagreement).
    let h = Harness::with_env(ENV);
    let mut ada = people::person(&h, "ada", &[Role::Auditor]).await;
    let cookie = console_login(&h, &mut ada).await;
    std::fs::write(h.data().join("keys/audit.key"), hex::encode([0x67u8; 32])).unwrap();
    let (s, _, body) = page(&h, "GET", "/console/audit", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("Chain NOT verified"), "{body}");
    assert!(
        body.contains("which is not this server&#39;s audit key (checkpoints forged or re-signed)"),
        "{body}"
    );
}

/// Devices `d00001` … written straight into the tables (one statement: an API enrolment each
/// would take minutes): even numbers in `hospital-a`, odd in `hospital-b`; every tenth last
/// reported `failed` (version 1.0.0, seen at its number), the others `confirmed` (2.0.0).
fn many_devices(h: &Harness, n: u32) {
    let columns = "INSERT INTO devices (id, vendor, device, public_key, channel, groups, labels, \
                   revoked, enrolled_at, last_seen, version, security_counter, state)";
    let row = |i: &str, json: &str, no: &str| {
        format!(
            "SELECT printf('d%05d', {i}), 'acme', 'pump-x2', '00', 'stable', \
             CASE WHEN {i} % 2 = 0 THEN '[\"hospital-a\"]' ELSE '[\"hospital-b\"]' END{json}, \
             '{{}}'{json}, {no}, 1, {i}, \
             CASE WHEN {i} % 10 = 0 THEN '1.0.0' ELSE '2.0.0' END, 1, \
             CASE WHEN {i} % 10 = 0 THEN 'failed' ELSE 'confirmed' END"
        )
    };
    let sqlite = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
         {columns} {} FROM n",
        row("i", "", "0")
    );
    let postgres = format!(
        "{columns} {} FROM generate_series(1, {n}) AS i",
        row("i", "::JSONB", "FALSE").replace("printf('d%05d', i)", "'d' || lpad(i::TEXT, 5, '0')")
    );
    h.raw_execute(&sqlite, &postgres);
}

/// The number in `<span id="ID">` of a page.
fn span(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("<span id=\"{id}\">"))
        .unwrap_or_else(|| panic!("{id}: {body}"));
    body[at..]
        .split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn counts_and_pages_cover_more_devices_than_a_list_page_holds_and_keep_the_scope() {
    let h = Harness::with_env(ENV);
    many_devices(&h, 10_050);
    let mut root = people::person(&h, "root", &[Role::Operator]).await;
    let cookie = console_login(&h, &mut root).await;

    // The overview counts every device (the old one read a list page of 10,000).
    let (s, _, body) = page(&h, "GET", "/console/", Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(span(&body, "device-count"), "10050");
    for bar in [
        ">failed</text>",
        ">1005</text>",
        ">confirmed</text>",
        ">9045</text>",
    ] {
        assert!(body.contains(bar), "{bar}: {body}");
    }
    // The most recently seen failures first.
    let first = body
        .find(">d10050<")
        .expect("d10050 among the recent failures");
    assert!(first < body.find(">d10040<").unwrap(), "{body}");

    // The device list: 100 a page, every matching device counted, links both ways.
    let (_, _, body) = page(
        &h,
        "GET",
        "/console/devices?state=failed",
        Some(&cookie),
        &[],
        None,
    )
    .await;
    assert_eq!(span(&body, "device-count"), "1005");
    assert_eq!(span(&body, "device-range"), "1–100");
    assert!(
        body.contains(">d00010<") && !body.contains(">d01010<"),
        "{body}"
    );
    assert!(
        body.contains("href=\"/console/devices?state=failed&#38;offset=100\" rel=\"next\""),
        "{body}"
    );
    assert!(!body.contains("rel=\"prev\""), "{body}");
    let (_, _, body) = page(
        &h,
        "GET",
        "/console/devices?state=failed&offset=1000",
        Some(&cookie),
        &[],
        None,
    )
    .await;
    assert_eq!(span(&body, "device-range"), "1001–1005");
    assert!(body.contains(">d10050<"), "{body}");
    assert!(
        body.contains("href=\"/console/devices?state=failed&#38;offset=900\" rel=\"prev\""),
        "{body}"
    );
    assert!(!body.contains("rel=\"next\""), "{body}");
    let (_, _, body) = page(
        &h,
        "GET",
        "/console/devices?version=1.0.0",
        Some(&cookie),
        &[],
        None,
    )
    .await;
    assert_eq!(span(&body, "device-count"), "1005");

    // A site's operator: every count is the site's.
    let mut hana = people::person(&h, "hana", &[Role::Operator]).await;
    scope_hana(&h, json!({ "groups": ["hospital-a"] })).await;
    let cookie = console_login(&h, &mut hana).await;
    let (_, _, body) = page(&h, "GET", "/console/", Some(&cookie), &[], None).await;
    assert_eq!(span(&body, "device-count"), "5025");
    // Every tenth device is even: all 1,005 failures are hospital-a's.
    assert!(
        body.contains(">1005</text>") && body.contains(">4020</text>"),
        "{body}"
    );
    let (_, _, body) = page(
        &h,
        "GET",
        "/console/devices?offset=5000",
        Some(&cookie),
        &[],
        None,
    )
    .await;
    assert_eq!(span(&body, "device-range"), "5001–5025");
    assert!(
        !body.contains(">d10049<") && body.contains(">d10050<"),
        "{body}"
    );
    let (s, v) = people::as_person(
        &h,
        &hana,
        "GET",
        "/api/v1/summary/devices?group=hospital-b",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 0, "{v}");
    let (_, v) = people::as_person(
        &h,
        &hana,
        "GET",
        "/api/v1/summary/devices?state=confirmed",
        None,
    )
    .await;
    assert_eq!(v["total"], 4020, "{v}");
    assert_eq!(v["by_version"], json!([["2.0.0", 4020]]), "{v}");
}

/// Limits hana's account to `scope` (as an admin).
async fn scope_hana(h: &Harness, scope: serde_json::Value) {
    let (s, v) = h
        .call(
            "PUT",
            "/api/v1/users/hana/scope",
            Some(h.token(Role::Admin)),
            Some(scope),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

/// Uploads a release of `version` and security `counter`; its id.
async fn uploaded(h: &Harness, version: &'static str, counter: u32) -> String {
    let (s, v) = h.upload(common::release_bundle(version, counter)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Creates a deployment of `release` to `target` through the API; its id.
async fn deployed(h: &Harness, release: &str, target: serde_json::Value) -> i64 {
    let (s, v) = h.deploy(release, target, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_i64().unwrap()
}

/// A deployment of a release to all of `n` devices ([`many_devices`]), its members'
/// `updated_at` and `status` then set straight in the table to the SQL expressions `at` and
/// `status`; the release and the deployment.
async fn finished_deployment(h: &Harness, n: u32, at: &str, status: &str) -> (String, i64) {
    many_devices(h, n);
    let release = uploaded(h, "2.0.0", 7).await;
    let id = deployed(h, &release, json!({ "kind": "channel", "value": "stable" })).await;
    let outcomes = format!(
        "UPDATE members SET updated_at = {at}, status = {status} WHERE deployment_id = {id}"
    );
    h.raw_execute(&outcomes, &outcomes);
    (release, id)
}

#[tokio::test]
async fn the_deployment_page_counts_and_charts_more_members_than_a_page_holds() {
    let h = Harness::with_env(ENV);
    // By rank (the order the old page read 10,000 members in): the 50 ranked last reverted,
    // every hundredth of the others failed.
    let (_, id) = finished_deployment(
        &h,
        10_050,
        "1000 + rank",
        "CASE WHEN rank >= 10000 THEN 'reverted' WHEN rank % 100 = 0 THEN 'failed' \
         ELSE 'confirmed' END",
    )
    .await;
    assert_eq!(
        h.raw_i64(&format!(
            "SELECT COUNT(*) FROM members WHERE deployment_id = {id} AND rank >= 10000"
        )),
        50
    );
    let mut root = people::person(&h, "root", &[Role::Operator]).await;
    let cookie = console_login(&h, &mut root).await;
    let (s, _, body) = page(
        &h,
        "GET",
        &format!("/console/deployments/{id}"),
        Some(&cookie),
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for count in [
        "data-status=\"confirmed\">9900<",
        "data-status=\"failed\">100<",
        "data-status=\"reverted\">50<",
    ] {
        assert!(body.contains(count), "{count}: {body}");
    }
    // The chart ends at every device's outcome, the reverted ones included.
    for legend in ["confirmed (9900)", "failed (100)", "reverted (50)"] {
        assert!(body.contains(legend), "{legend}: {body}");
    }
    // Drawn from spans counted by the database, not a point per device.
    let points = body.matches(" H").count();
    assert!(points < 3 * 130, "{points} points: {body}");

    // The API answers the same counts whatever page of members it is asked for.
    let (s, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments/{id}?limit=1"),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["counts"]["reverted"], 50, "{v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1), "{v}");
}

#[tokio::test]
async fn outcome_spans_count_each_device_once_at_its_last_change() {
    let h = Harness::with_env(ENV);
    // Ranks 0..299 at 0..299 seconds past 5,000: confirmed, except every third failed.
    let (release, id) = finished_deployment(
        &h,
        300,
        "5000 + rank",
        "CASE WHEN rank % 3 = 0 THEN 'failed' ELSE 'confirmed' END",
    )
    .await;
    let o = h.blocking(move |s| s.deployment_outcomes(id, 100).unwrap());
    assert_eq!((o.start, o.width), (5000, 3));
    let sum = |status| {
        o.counts
            .iter()
            .filter(|c| c.0 == status)
            .map(|c| c.2)
            .sum::<u64>()
    };
    use sigil_server::rollout::DeviceStatus;
    assert_eq!(sum(DeviceStatus::Failed), 100);
    assert_eq!(sum(DeviceStatus::Confirmed), 200);
    assert_eq!(sum(DeviceStatus::Reverted), 0);
    // Span k holds ranks 3k, 3k+1, 3k+2: one failure and two confirmations, in span order.
    assert_eq!(o.counts.len(), 200, "{o:?}");
    assert!(o.counts.windows(2).all(|w| w[0].1 <= w[1].1), "{o:?}");
    assert!(o
        .counts
        .iter()
        .all(|c| c.1 < 100 && c.2 == if c.0 == DeviceStatus::Failed { 1 } else { 2 }));
    // A deployment nobody has finished yet has no outcomes.
    let fresh = deployed(
        &h,
        &release,
        json!({ "kind": "group", "value": "hospital-a" }),
    )
    .await;
    let o = h.blocking(move |s| s.deployment_outcomes(fresh, 100).unwrap());
    assert!(o.counts.is_empty(), "{o:?}");
}

/// `n` more deployments copied from deployment `from`, straight into the table.
fn copies_of_deployment(h: &Harness, from: i64, n: u32) {
    let columns = "INSERT INTO deployments (release_id, vendor, device, target, policy, phase, \
                   state, created_at, created_by, device_count) SELECT release_id, vendor, \
                   device, target, policy, phase, 'completed', created_at, created_by, device_count";
    h.raw_execute(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             {columns} FROM deployments CROSS JOIN n WHERE id = {from}"
        ),
        &format!("{columns} FROM deployments CROSS JOIN generate_series(1, {n}) WHERE id = {from}"),
    );
}

#[tokio::test]
async fn a_release_page_lists_its_own_deployments_behind_more_than_a_list_of_others() {
    let h = Harness::with_env(ENV);
    many_devices(&h, 20);
    let old = uploaded(&h, "2.0.0", 7).await;
    let new = uploaded(&h, "2.1.0", 8).await;
    let mut first = Vec::new();
    for _ in 0..101 {
        first.push(deployed(&h, &old, json!({ "kind": "group", "value": "hospital-a" })).await);
    }
    // 10,050 newer deployments of another release of the same product (the old page read
    // the product's newest 10,000 and found none of the old release's).
    let other = deployed(&h, &new, json!({ "kind": "channel", "value": "stable" })).await;
    copies_of_deployment(&h, other, 10_049);

    let mut root = people::person(&h, "root", &[Role::Operator]).await;
    let cookie = console_login(&h, &mut root).await;
    let path = format!("/console/releases/{old}");
    let (s, _, body) = page(&h, "GET", &path, Some(&cookie), &[], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A page of 100, newest first, and a link to the rest.
    let shown = |body: &str, id: i64| body.contains(&format!("/console/deployments/{id}\""));
    assert!(shown(&body, first[100]) && shown(&body, first[1]), "{body}");
    assert!(!shown(&body, first[0]) && !shown(&body, other), "{body}");
    assert!(
        body.contains(&format!("href=\"{path}?offset=100\" rel=\"next\"")),
        "{body}"
    );
    let (_, _, body) = page(
        &h,
        "GET",
        &format!("{path}?offset=100"),
        Some(&cookie),
        &[],
        None,
    )
    .await;
    assert!(shown(&body, first[0]) && !shown(&body, first[1]), "{body}");
    assert!(!body.contains("rel=\"next\""), "{body}");

    // The API filter, and a release id it refuses.
    let (s, v) = h
        .call(
            "GET",
            &format!("/api/v1/deployments?release={old}&limit=1000"),
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(101), "{v}");
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["release_id"] == old.as_str()));
    let (s, v) = h
        .call(
            "GET",
            "/api/v1/deployments?release=nope",
            Some(h.token(Role::Operator)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn scoped_deployment_lists_are_cut_by_the_database_and_page_within_the_scope() {
    let h = Harness::with_env(ENV);
    many_devices(&h, 20);
    let release = uploaded(&h, "2.0.0", 7).await;
    // Hana's scope is hospital-a (even devices): a group target of hospital-a and a device
    // list of even devices are hers; a channel (it reaches every site), the other site, a
    // device list with one odd device are not.
    let a = json!({ "kind": "group", "value": "hospital-a" });
    let mine_by_list = json!({ "kind": "devices", "value": ["d00002", "d00004"] });
    let mut mine = vec![deployed(&h, &release, mine_by_list).await];
    for target in [
        json!({ "kind": "channel", "value": "stable" }),
        json!({ "kind": "group", "value": "hospital-b" }),
        json!({ "kind": "devices", "value": ["d00002", "d00003"] }),
    ] {
        deployed(&h, &release, target).await;
    }
    for _ in 0..150 {
        mine.push(deployed(&h, &release, a.clone()).await);
        deployed(
            &h,
            &release,
            json!({ "kind": "group", "value": "hospital-b" }),
        )
        .await;
    }
    mine.reverse();
    let mut hana = people::person(&h, "hana", &[Role::Operator]).await;
    scope_hana(&h, json!({ "groups": ["hospital-a"] })).await;

    // Pages of the API list: every row hers, in order, the pages adding up to her 151.
    let mut seen = Vec::new();
    for offset in [0, 100, 200] {
        let (s, v) = people::as_person(
            &h,
            &hana,
            "GET",
            &format!("/api/v1/deployments?offset={offset}&limit=100"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen.extend(
            v.as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_i64().unwrap()),
        );
    }
    assert_eq!(seen, mine);
    // Filters combine with the scope.
    let (_, v) = people::as_person(
        &h,
        &hana,
        "GET",
        &format!("/api/v1/deployments?release={release}&product=acme/pump-x2&limit=1000"),
        None,
    )
    .await;
    assert_eq!(v.as_array().map(Vec::len), Some(151), "{v}");
    let (_, v) = people::as_person(
        &h,
        &hana,
        "GET",
        "/api/v1/deployments?product=acme/other&limit=1000",
        None,
    )
    .await;
    assert_eq!(v, json!([]));

    // The console's list: her newest 100, then the rest.
    let cookie = console_login(&h, &mut hana).await;
    let (_, _, body) = page(&h, "GET", "/console/deployments", Some(&cookie), &[], None).await;
    let rows = body.matches("href=\"/console/deployments/").count();
    assert_eq!(rows, 100, "{body}");
    let (_, _, body) = page(
        &h,
        "GET",
        "/console/deployments?offset=100",
        Some(&cookie),
        &[],
        None,
    )
    .await;
    let rows = body.matches("href=\"/console/deployments/").count();
    assert_eq!(rows, 51, "{body}");
    assert!(
        body.contains(&format!("/console/deployments/{}\"", mine[150])),
        "{body}"
    );

    // A scope by channel: channel targets on it are in, group targets are not.
    scope_hana(&h, json!({ "channels": ["stable"] })).await;
    let (_, v) = people::as_person(&h, &hana, "GET", "/api/v1/deployments?limit=1000", None).await;
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"]["kind"].as_str().unwrap())
        .collect();
    // The channel target, and the two device lists whose devices all exist (on stable).
    assert_eq!(kinds, ["devices", "channel", "devices"], "{v}");
}

// ------------------------------------------------------------------ in a real browser

/// The browser scenarios' directory.
fn browser_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Node, Debian's chromium and playwright-core, or a clear failure (never a skip).
fn require_browser_tools() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the console's browser tests need node (apt-get install nodejs npm; scripts/test installs it)"
    );
    let chromium = std::env::var("SIGIL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "the console's browser tests need Debian's chromium at {chromium} (apt-get install chromium, \
         or set SIGIL_CHROMIUM)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "the console's browser tests need playwright-core: run `npm ci` in server/tests/browser \
         (scripts/test does)"
    );
}

/// Runs `node server/tests/browser/<scenario>.mjs args…`; panics with its output on failure.
fn scenario(name: &str, args: &[&str]) {
    let out = std::process::Command::new("node")
        .arg(browser_dir().join(format!("{name}.mjs")))
        .args(args)
        .current_dir(browser_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser scenario {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real binary on 127.0.0.1 with a free port and a temporary data directory.
struct Real {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    admin: String,
    base: String,
}

impl Drop for Real {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_real(data: &std::path::Path) -> Real {
    start_real_at(data, "127.0.0.1:0", &[])
}

/// [`start_real`] listening on `listen`, with more environment.
fn start_real_at(data: &std::path::Path, listen: &str, env: &[(&str, &str)]) -> Real {
    let root = common::write_trust_root(data);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-server"));
    cmd.envs(ENV.iter().copied())
        .envs(env.iter().copied())
        .env("SIGIL_TRUST_ROOT", root)
        .env("SIGIL_DEPLOYMENT_SECOND_OPERATOR", "true")
        .env("SIGIL_LOCKOUT_AFTER", "3")
        .env("SIGIL_RATE_BURST", "100000")
        .env("SIGIL_RATE_PER_SECOND", "100000")
        .env("RUST_LOG", "warn")
        .args(["--listen", listen, "--data-dir"])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let banner = common::process::read_banner(&mut child);
    let addr = banner.addr;
    Real {
        child,
        addr,
        admin: banner.admin.unwrap(),
        base: format!("http://{addr}"),
    }
}

fn real_call(s: &Real, method: &str, path: &str, body: serde_json::Value) -> common::HttpResponse {
    call_with(s, &s.admin, method, path, body)
}

fn call_with(
    s: &Real,
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> common::HttpResponse {
    let auth = format!("Bearer {token}");
    common::http(
        s.addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

fn token(s: &Real, name: &str, role: &str, owner: Option<&str>) -> String {
    let r = real_call(
        s,
        "POST",
        "/api/v1/tokens",
        json!({ "name": name, "role": role, "owner": owner }),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    r.json()["token"].as_str().unwrap().to_owned()
}

/// A device's session (its challenge signed with its key), then one check-in.
fn check_in(s: &Real, id: &str, seed: u8, state: &str, deployment: i64) {
    use ed25519_dalek::Signer;
    let c = common::http(
        s.addr,
        "POST",
        "/api/v1/device/challenge",
        &[("Content-Type", "application/json")],
        json!({ "device_id": id }).to_string().as_bytes(),
    );
    assert_eq!(c.status, 200, "{}", c.json());
    let nonce: [u8; 32] = hex::decode(c.json()["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig = common::key(seed).sign(&sigil_server::api::auth_message(id, &nonce));
    let body = json!({
        "device_id": id, "nonce": hex::encode(nonce), "signature": hex::encode(sig.to_bytes())
    });
    let t = common::http(
        s.addr,
        "POST",
        "/api/v1/device/session",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(t.status, 200, "{}", t.json());
    let session = t.json()["token"].as_str().unwrap().to_owned();
    let r = call_with(
        s,
        &session,
        "POST",
        "/api/v1/device/checkin",
        json!({ "version": "2.0.0", "security_counter": 7, "state": state, "deployment": deployment }),
    );
    assert_eq!(r.status, 200, "{}", r.json());
}

/// A person created with the admin token and enrolled through the API.
fn real_person(s: &Real, name: &str, roles: &[&str]) -> Person {
    let r = real_call(
        s,
        "POST",
        "/api/v1/users",
        json!({ "name": name, "roles": roles }),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    let code = r.json()["enrolment_code"].as_str().unwrap().to_owned();
    let r = real_call(
        s,
        "POST",
        "/api/v1/enrolment",
        json!({ "enrolment_code": code, "passphrase": PASSPHRASE }),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    let secret = totp_rs::Secret::Encoded(r.json()["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let mut p = Person::new(name, secret);
    let totp = p.code();
    let r = real_call(
        s,
        "POST",
        "/api/v1/enrolment/confirm",
        json!({ "enrolment_code": code, "totp": totp }),
    );
    assert_eq!(r.status, 204, "{}", r.json());
    p
}

fn enrol_device(s: &Real, operator: &str, id: &str, seed: u8, groups: &[&str]) {
    let auth = format!("Bearer {operator}");
    let body = json!({
        "id": id, "product": { "vendor": "acme", "device": "pump-x2" },
        "public_key": hex::encode(common::public(seed)),
        "channel": "stable", "groups": groups,
    });
    let r = common::http(
        s.addr,
        "POST",
        "/api/v1/devices",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.json());
}

#[test]
fn browser_scenarios_in_headless_chromium() {
    require_browser_tools();
    let data = tempfile::tempdir().unwrap();
    let s = start_real(data.path());
    let shots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let shots = shots.to_str().unwrap();
    let operator = token(&s, "enroller", "operator", None);
    enrol_device(&s, &operator, "a1", 1, &["hospital-a"]);
    enrol_device(&s, &operator, "b1", 2, &["hospital-b"]);

    // Log in with passphrase and second factor; every page.
    let mut root = real_person(&s, "root", &["admin", "operator", "auditor", "approver"]);
    let code = root.code();
    scenario("login", &[&s.base, "root", PASSPHRASE, &code, shots, "a1"]);

    // A wrong code, then the lockout (SIGIL_LOCKOUT_AFTER=3).
    let eve = real_person(&s, "eve", &["operator"]);
    let wrong = eve.wrong_code();
    scenario("lockout", &[&s.base, "eve", PASSPHRASE, &wrong, "3", shots]);

    // A site's operator.
    let mut hana = real_person(&s, "hana", &["operator"]);
    let r = real_call(
        &s,
        "PUT",
        "/api/v1/users/hana/scope",
        json!({ "groups": ["hospital-a"] }),
    );
    assert_eq!(r.status, 204, "{}", r.json());
    let code = hana.code();
    scenario(
        "scoped",
        &[&s.base, "hana", PASSPHRASE, &code, "a1", "b1", shots],
    );

    // A cross-site form.
    let code = hana.code();
    scenario("cross_site", &[&s.base, "hana", PASSPHRASE, &code]);

    // The audit chain, verified, then edited in the SQLite file.
    // Four eyes, and a rollout page following the reports.
    let mut carl = real_person(&s, "carl", &["operator"]);
    let mut olga = real_person(&s, "olga", &["operator"]);
    let uploader = token(&s, "ci", "release", None);
    let bundle = common::release_bundle("2.0.0", 7);
    let auth = format!("Bearer {uploader}");
    let r = common::http(
        s.addr,
        "POST",
        "/api/v1/releases",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        &bundle,
    );
    assert_eq!(r.status, 201, "{}", r.json());
    let release = r.json()["id"].as_str().unwrap().to_owned();
    let carls = token(&s, "carl-cli", "operator", Some("carl"));
    let r = call_with(
        &s,
        &carls,
        "POST",
        "/api/v1/deployments",
        json!({ "release": release, "target": { "kind": "channel", "value": "stable" },
                "phases": [50, 100], "min_success_percent": 100 }),
    );
    assert_eq!(r.status, 201, "{}", r.json());
    let deployment = r.json()["id"].as_i64().unwrap();
    let id = deployment.to_string();
    let codes = [carl.code(), carl.code(), olga.code(), olga.code()];
    let mut node = std::process::Command::new("node")
        .arg(browser_dir().join("deployment.mjs"))
        .args([
            &s.base, &id, "carl", &codes[0], &codes[1], "olga", &codes[2], &codes[3],
        ])
        .args([PASSPHRASE, shots])
        .current_dir(browser_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(node.stdout.take().unwrap()));
    let ready = lines.next().and_then(Result::ok);
    if ready.as_deref() == Some("READY") {
        // The devices report while the page is open.
        for (device, seed) in [("a1", 1), ("b1", 2)] {
            check_in(&s, device, seed, "confirmed", deployment);
        }
    }
    let out = node.wait_with_output().unwrap();
    assert!(
        ready.as_deref() == Some("READY") && out.status.success(),
        "browser scenario deployment failed ({ready:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let code = root.code();
    scenario(
        "audit",
        &[&s.base, "root", PASSPHRASE, &code, "verified", shots],
    );
    let db = rusqlite::Connection::open(data.path().join("sigil.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE seq = 2;",
    )
    .unwrap();
    drop(db);
    let code = root.code();
    scenario(
        "audit",
        &[&s.base, "root", PASSPHRASE, &code, "tampered", shots],
    );
}

#[test]
fn passkeys_in_headless_chromium_with_its_virtual_authenticator() {
    require_browser_tools();
    let data = tempfile::tempdir().unwrap();
    // WebAuthn needs a domain as relying-party id (not 127.0.0.1): the console is reached as
    // localhost, which browsers treat as a secure context over http.
    let port = common::process::free_port();
    let base = format!("http://localhost:{port}");
    let s = start_real_at(
        data.path(),
        &format!("127.0.0.1:{port}"),
        &[("SIGIL_PUBLIC_URL", &base)],
    );
    let shots =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let mut pat = real_person(&s, "pat", &["operator"]);
    let codes = [pat.code(), pat.code()];
    scenario(
        "passkey",
        &[
            &base,
            "pat",
            PASSPHRASE,
            &codes[0],
            &codes[1],
            shots.to_str().unwrap(),
        ],
    );
}
