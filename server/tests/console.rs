//! The web console over HTTP (in process): the login form, every page rendered in a person's
//! session with the strict Content-Security-Policy, the scope of a site's operator, forms
//! refused from another origin, and the audit page's verdict on an intact and an edited chain.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use common::people::{self, Person, ENV, PASSPHRASE};
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
    let res = h.send(req).await;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
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

    let mut hana = people::person(&h, "hana", &[Role::Operator]).await;
    let (s, v) = h
        .call(
            "PUT",
            "/api/v1/users/hana/scope",
            Some(h.token(Role::Admin)),
            Some(json!({ "groups": ["hospital-a"] })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
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
    assert!(body.contains("user.login"));
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
