//! People and their credentials through the API: enrolment, login with passphrase and TOTP,
//! backoff and lockout, console sessions (cookie, CSRF, timeouts, logout, re-authentication),
//! owned and scoped API tokens, and the command-line first admin. On SQLite, and on
//! PostgreSQL with `TEST_DATABASE=postgres`.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::people::{self, as_person, audited, request, Person, ENV, PASSPHRASE};
use common::Harness;
use serde_json::{json, Value};
use sigil_server::store::Role;

fn detail(entry: &Value) -> Value {
    serde_json::from_str(entry["detail"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn enrolment_needs_a_strong_passphrase_and_a_correct_code_and_is_single_use() {
    let h = Harness::with_env(ENV);
    let code = people::create(&h, "ann", &[Role::Operator]).await;
    assert!(code.starts_with("sge_") && code.len() == 68, "{code}");

    // Weak passphrases are refused with a reason, and leave the code usable.
    for (weak, why) in [
        ("short1!", "at least 12"),
        ("passwordpassword", "too easy"),
        ("ann ann ann ann", "too easy"),
    ] {
        let (s, v) = h
            .call(
                "POST",
                "/api/v1/enrolment",
                None,
                Some(json!({ "enrolment_code": code, "passphrase": weak })),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{weak}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{weak}: {v}");
    }
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/enrolment",
            None,
            Some(json!({ "enrolment_code": code, "passphrase": PASSPHRASE })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let uri = v["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Sigil:ann?secret="), "{uri}");
    assert!(uri.contains(v["secret"].as_str().unwrap()), "{uri}");
    let secret = totp_rs::Secret::Encoded(v["secret"].as_str().unwrap().to_owned())
        .to_bytes()
        .unwrap();
    let mut ann = Person::new("ann", secret);

    // The code sets a passphrase once; the secret is never shown again.
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/enrolment",
            None,
            Some(json!({ "enrolment_code": code, "passphrase": "another strong one 9981" })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Not enrolled until a correct code: no login yet.
    let (s, _, _) = people::login(&h, &mut ann, PASSPHRASE).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = people::confirm(&h, &code, &ann.wrong_code()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let totp = ann.code();
    let (s, v) = people::confirm(&h, &code, &totp).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = people::confirm(&h, &code, &ann.code()).await;
    assert_eq!(s, StatusCode::CONFLICT, "a spent code");

    let (s, headers, v) = people::login(&h, &mut ann, PASSPHRASE).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cookie = headers["set-cookie"].to_str().unwrap();
    for attr in [
        "sigil_session=sgs_",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert_eq!(v["roles"], json!(["operator"]));
    let (_, users) = h
        .call("GET", "/api/v1/users", Some(h.token(Role::Admin)), None)
        .await;
    let ann_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ann")
        .unwrap();
    assert_eq!(ann_row["state"], "active");
    assert_eq!(ann_row["kind"], "person");
    assert_eq!(audited(&h, "user.enrol").await.len(), 1);
    assert_eq!(audited(&h, "user.login").await[0]["actor"], "ann");
}

#[tokio::test]
async fn an_expired_enrolment_code_is_refused() {
    let h = Harness::with_env(ENV);
    let code = people::create(&h, "ann", &[Role::Auditor]).await;
    h.raw_execute(
        "UPDATE enrolments SET expires_at = 1",
        "UPDATE enrolments SET expires_at = 1",
    );
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/enrolment",
            None,
            Some(json!({ "enrolment_code": code, "passphrase": PASSPHRASE })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
}

#[tokio::test]
async fn a_wrong_passphrase_or_code_fails_the_login_and_is_audited_with_the_name() {
    let h = Harness::with_env(ENV);
    let mut ann = people::person(&h, "ann", &[Role::Operator]).await;
    let (s, _, v) = people::login(&h, &mut ann, "quartz lantern orbit meadow 48").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["message"], "wrong name, passphrase or code");
    let wrong = ann.wrong_code();
    let (s, _, v) = people::login_with(&h, &mut ann, PASSPHRASE, &wrong).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // A code once used is not accepted again.
    let (s, _, _) = people::login(&h, &mut ann, PASSPHRASE).await;
    assert_eq!(s, StatusCode::OK);
    let replayed = people::totp_at(&ann.secret, ann.last_step.unwrap());
    let (s, _, _) = people::login_with(&h, &mut ann, PASSPHRASE, &replayed).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a replayed code");
    // An unknown account fails the same way.
    let mut nobody = Person::new("nobody", ann.secret.clone());
    let (s, _, v) = people::login(&h, &mut nobody, PASSPHRASE).await;
    assert_eq!(
        (s, v["message"].clone()),
        (
            StatusCode::UNAUTHORIZED,
            json!("wrong name, passphrase or code")
        )
    );

    let failures = audited(&h, "user.login_failure").await;
    let reasons: Vec<Value> = failures
        .iter()
        .map(|e| detail(e)["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [json!("passphrase"), json!("totp"), json!("totp reused")]
    );
    assert!(failures
        .iter()
        .all(|e| e["actor"] == "ann" && e["subject"] == "ann"));
    // The successful login reset the count: the replay is failure 1 again.
    assert_eq!(detail(&failures[2])["failures"], 1);
}

#[tokio::test]
async fn failed_logins_back_off_exponentially() {
    let mut env = ENV.to_vec();
    env.retain(|(k, _)| *k != "SIGIL_LOGIN_BACKOFF_SECS");
    env.push(("SIGIL_LOGIN_BACKOFF_SECS", "30"));
    let h = Harness::with_env(&env);
    let mut ann = people::person(&h, "ann", &[Role::Operator]).await;
    let (s, _, _) = people::login(&h, &mut ann, "not the passphrase at all").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Within the backoff even the right passphrase and code are not checked.
    let (s, headers, v) = people::login(&h, &mut ann, PASSPHRASE).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["message"].as_str().unwrap().contains("retry in"), "{v}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // The second failure doubles the wait.
    h.raw_execute(
        "UPDATE users SET locked_until = 0 WHERE name = 'ann'",
        "UPDATE users SET locked_until = 0 WHERE name = 'ann'",
    );
    let (s, _, _) = people::login(&h, &mut ann, "not the passphrase at all").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let until = h.raw_i64("SELECT locked_until FROM users WHERE name = 'ann'");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((55..=60).contains(&(until - now)), "{}", until - now);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_and_the_lockout_is_audited() {
    let mut env = ENV.to_vec();
    env.push(("SIGIL_LOCKOUT_AFTER", "3"));
    let h = Harness::with_env(&env);
    let mut ann = people::person(&h, "ann", &[Role::Operator]).await;
    for _ in 0..2 {
        let (s, _, _) = people::login(&h, &mut ann, "not the passphrase at all").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, v) = people::login(&h, &mut ann, "not the passphrase at all").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["message"].as_str().unwrap().contains("locked"), "{v}");
    // Locked: the right credentials are refused too, for the lockout's length.
    let (s, headers, _) = people::login(&h, &mut ann, PASSPHRASE).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 800, "{retry}");
    let lockouts = audited(&h, "user.lockout").await;
    assert_eq!(lockouts.len(), 1);
    assert_eq!(lockouts[0]["subject"], "ann");
    assert_eq!(detail(&lockouts[0])["failures"], 3);
    // The session from before the lockout still works; an admin can re-enrol the person.
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/users/ann/enrolment",
            Some(h.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = as_person(&h, &ann, "GET", "/api/v1/session", None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "re-enrolment ends the sessions"
    );
}

#[tokio::test]
async fn a_session_authorises_by_the_persons_roles_and_the_audit_names_the_person() {
    let h = Harness::with_env(ENV);
    let ann = people::person(&h, "ann", &[Role::Operator, Role::Auditor]).await;
    let (s, v) = as_person(&h, &ann, "GET", "/api/v1/session", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "ann");
    assert_eq!(v["roles"], json!(["auditor", "operator"]));
    assert_eq!(v["csrf_token"], ann.csrf.as_str());
    assert_eq!(
        as_person(&h, &ann, "GET", "/api/v1/devices", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        as_person(&h, &ann, "GET", "/api/v1/audit/head", None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, v) = as_person(&h, &ann, "GET", "/api/v1/tokens", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let body = json!({
        "id": "pump-1",
        "product": { "vendor": "acme", "device": "pump-x2" },
        "public_key": hex::encode(common::public(1)),
    });
    let (s, v) = as_person(&h, &ann, "POST", "/api/v1/devices", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(audited(&h, "device.enrol").await[0]["actor"], "ann");
    // A bad cookie is not a session.
    let forged = Person {
        name: "ann".into(),
        secret: Vec::new(),
        last_step: None,
        cookie: "sigil_session=sgs_forged".into(),
        csrf: ann.csrf.clone(),
    };
    assert_eq!(
        as_person(&h, &forged, "GET", "/api/v1/devices", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn idle_and_old_sessions_expire() {
    let h = Harness::with_env(ENV);
    let ann = people::person(&h, "ann", &[Role::Auditor]).await;
    assert_eq!(
        as_person(&h, &ann, "GET", "/api/v1/session", None).await.0,
        StatusCode::OK
    );
    // Idle past `accounts.session_idle_secs` (900 s).
    h.raw_execute(
        "UPDATE sessions SET last_seen = last_seen - 901",
        "UPDATE sessions SET last_seen = last_seen - 901",
    );
    let (s, v) = as_person(&h, &ann, "GET", "/api/v1/session", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");

    let ann = people::person(&h, "bea", &[Role::Auditor]).await;
    // Busy, but logged in longer than `accounts.session_absolute_secs` (12 h) ago.
    h.raw_execute(
        "UPDATE sessions SET created_at = created_at - 43201 WHERE user_name = 'bea'",
        "UPDATE sessions SET created_at = created_at - 43201 WHERE user_name = 'bea'",
    );
    assert_eq!(
        as_person(&h, &ann, "GET", "/api/v1/session", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn ended_sessions_are_swept_in_batches_and_live_ones_kept() {
    let h = Harness::with_env(ENV);
    let names = ["ann", "bea", "cy", "dee", "eve"];
    let mut people_ = Vec::new();
    for n in names {
        people_.push(people::person(&h, n, &[Role::Auditor]).await);
    }
    // ann and bea idle past 900 s, cy logged in more than 12 h ago; dee idle just under.
    h.raw_execute(
        "UPDATE sessions SET last_seen = last_seen - 1000 WHERE user_name IN ('ann', 'bea'); \
         UPDATE sessions SET created_at = created_at - 50000 WHERE user_name = 'cy'; \
         UPDATE sessions SET last_seen = last_seen - 800 WHERE user_name = 'dee';",
        "UPDATE sessions SET last_seen = last_seen - 1000 WHERE user_name IN ('ann', 'bea'); \
         UPDATE sessions SET created_at = created_at - 50000 WHERE user_name = 'cy'; \
         UPDATE sessions SET last_seen = last_seen - 800 WHERE user_name = 'dee';",
    );
    let config = h.state.config.clone();
    let now = sigil_server::store::now_secs();
    // Batches of 2: three ended sessions take two transactions, and all three go.
    let swept = h.blocking(|s| sigil_server::api::accounts::sweep_sessions(s, &config, now, 2));
    assert_eq!(swept.unwrap(), 3);
    assert_eq!(h.raw_i64("SELECT COUNT(*) FROM sessions"), 2);
    assert_eq!(
        h.raw_i64("SELECT COUNT(*) FROM sessions WHERE user_name IN ('dee', 'eve')"),
        2
    );
    for p in &people_[3..] {
        assert_eq!(
            as_person(&h, p, "GET", "/api/v1/session", None).await.0,
            StatusCode::OK,
            "{} is still logged in",
            p.name
        );
    }
    let again = h.blocking(|s| sigil_server::api::accounts::sweep_sessions(s, &config, now, 2));
    assert_eq!(again.unwrap(), 0);
}

#[tokio::test]
async fn cross_site_and_tokenless_cookie_requests_are_refused() {
    let h = Harness::with_env(ENV);
    let ann = people::person(&h, "ann", &[Role::Operator]).await;
    let enrol = |id: &str| {
        json!({
            "id": id,
            "product": { "vendor": "acme", "device": "pump-x2" },
            "public_key": hex::encode(common::public(2)),
        })
    };
    let mut no_csrf = Person {
        name: ann.name.clone(),
        secret: Vec::new(),
        last_step: None,
        cookie: ann.cookie.clone(),
        csrf: String::new(),
    };
    let (s, v) = as_person(&h, &no_csrf, "POST", "/api/v1/devices", Some(enrol("p1"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("x-csrf-token"),
        "{v}"
    );
    no_csrf.csrf = "sgc_wrong".into();
    let (s, _) = as_person(&h, &no_csrf, "POST", "/api/v1/devices", Some(enrol("p1"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for headers in [
        &[
            ("origin", "https://evil.example"),
            ("host", "sigil.example"),
        ][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "null")][..],
    ] {
        let (s, _, v) = request(
            &h,
            "POST",
            "/api/v1/devices",
            None,
            Some(&ann),
            headers,
            Some(enrol("p1")),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{headers:?}: {v}");
        assert_eq!(v["message"], "cross-site request refused", "{headers:?}");
    }
    assert_eq!(audited(&h, "device.enrol").await.len(), 0);
    // Reads need no CSRF token; the same origin with the token may write.
    assert_eq!(
        as_person(&h, &no_csrf, "GET", "/api/v1/devices", None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, _, v) = request(
        &h,
        "POST",
        "/api/v1/devices",
        None,
        Some(&ann),
        &[
            ("origin", "https://sigil.example"),
            ("host", "sigil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
        Some(enrol("p1")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let h = Harness::with_env(ENV);
    let ann = people::person(&h, "ann", &[Role::Auditor]).await;
    let (s, headers, _) =
        request(&h, "DELETE", "/api/v1/session", None, Some(&ann), &[], None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        as_person(&h, &ann, "GET", "/api/v1/session", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let logouts = audited(&h, "user.logout").await;
    assert_eq!(logouts.len(), 1);
    assert_eq!(logouts[0]["actor"], "ann");
}

#[tokio::test]
async fn device_revocation_and_root_updates_need_a_fresh_reauthentication() {
    let h = Harness::with_env(ENV);
    let mut ann = people::person(&h, "ann", &[Role::Operator, Role::Admin]).await;
    h.enrol("pump-1", 1, json!({})).await;
    h.raw_execute(
        "UPDATE sessions SET reauth_at = reauth_at - 301",
        "UPDATE sessions SET reauth_at = reauth_at - 301",
    );
    let (s, v) = as_person(&h, &ann, "POST", "/api/v1/devices/pump-1/revoke", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("re-authentication"),
        "{v}"
    );
    let (s, _, _) = request(
        &h,
        "PUT",
        "/api/v1/root-chain",
        None,
        Some(&ann),
        &[("content-type", "application/octet-stream")],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A wrong code does not re-authenticate (and counts as a failure).
    let wrong = ann.wrong_code();
    let (s, _) = as_person(
        &h,
        &ann,
        "POST",
        "/api/v1/session/reauth",
        Some(json!({ "passphrase": PASSPHRASE, "totp": wrong })),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(people::reauth(&h, &mut ann).await, StatusCode::NO_CONTENT);
    let (s, v) = as_person(&h, &ann, "POST", "/api/v1/devices/pump-1/revoke", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(audited(&h, "user.reauth").await.len(), 1);
    assert_eq!(audited(&h, "device.revoke").await[0]["actor"], "ann");
}

#[tokio::test]
async fn api_tokens_are_owned_scoped_to_a_role_of_their_owner_and_may_expire() {
    let h = Harness::with_env(ENV);
    let admin = h.token(Role::Admin);
    // No owner: a service account named after the label, holding the role.
    let (s, ci) = h
        .call(
            "POST",
            "/api/v1/tokens",
            Some(admin),
            Some(json!({ "name": "ci-upload", "role": "release" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ci}");
    assert_eq!(ci["owner"], "ci-upload");
    let (_, users) = h.call("GET", "/api/v1/users", Some(admin), None).await;
    let row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ci-upload")
        .unwrap()
        .clone();
    assert_eq!(
        (row["kind"].clone(), row["roles"].clone()),
        (json!("service"), json!(["release"]))
    );
    let (s, r) = h
        .call(
            "GET",
            "/api/v1/releases",
            Some(ci["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");

    // A person's token: only for a role the person holds, and acts in their name.
    let _ann = people::person(&h, "ann", &[Role::Operator]).await;
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/tokens",
            Some(admin),
            Some(json!({ "name": "ann-laptop", "role": "admin", "owner": "ann" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("does not hold"),
        "{v}"
    );
    let (s, t) = h
        .call(
            "POST",
            "/api/v1/tokens",
            Some(admin),
            Some(json!({ "name": "ann-laptop", "role": "operator", "owner": "ann", "expires_in_secs": 3600 })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert!(t["expires_at"].as_u64().unwrap() > 0);
    let token = t["token"].as_str().unwrap().to_owned();
    let body = json!({
        "id": "pump-1",
        "product": { "vendor": "acme", "device": "pump-x2" },
        "public_key": hex::encode(common::public(1)),
    });
    let (s, v) = h
        .call("POST", "/api/v1/devices", Some(&token), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        audited(&h, "device.enrol").await[0]["actor"],
        "ann",
        "the owner acts, not the label"
    );
    let (_, listed) = h.call("GET", "/api/v1/tokens", Some(admin), None).await;
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ann-laptop")
        .unwrap()
        .clone();
    assert_eq!(listed["owner"], "ann");
    assert!(listed.get("token").is_none() && listed.get("hash").is_none());

    // Expired, or its owner disabled: refused.
    h.raw_execute(
        "UPDATE tokens SET expires_at = 1 WHERE name = 'ann-laptop'",
        "UPDATE tokens SET expires_at = 1 WHERE name = 'ann-laptop'",
    );
    assert_eq!(
        h.call("GET", "/api/v1/devices", Some(&token), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = h
        .call("POST", "/api/v1/users/ci-upload/disable", Some(admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        h.call(
            "GET",
            "/api/v1/releases",
            Some(ci["token"].as_str().unwrap()),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn service_accounts_never_log_in_and_people_need_no_device_role() {
    let h = Harness::with_env(ENV);
    let admin = h.token(Role::Admin);
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/users",
            Some(admin),
            Some(json!({ "name": "ci", "roles": ["release"], "kind": "service" })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = h
        .call("POST", "/api/v1/users/ci/enrolment", Some(admin), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/users",
            Some(admin),
            Some(json!({ "name": "x", "roles": ["device"] })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/users",
            Some(admin),
            Some(json!({ "name": "ci", "roles": ["auditor"] })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "names are unique");
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/users",
            Some(h.token(Role::Operator)),
            Some(json!({ "name": "y", "roles": ["auditor"] })),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only admins create accounts");
}

#[test]
fn user_add_on_the_command_line_prints_a_single_use_enrolment_code_and_link() {
    let dir = tempfile::tempdir().unwrap();
    let pg = common::postgres::postgres_selected().then(common::postgres::TestPostgres::start);
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sigil-server"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        if let Some(pg) = &pg {
            cmd.env("SIGIL_DATABASE_URL", pg.url());
        }
        cmd.output().unwrap()
    };
    let out = run(&["user", "add", "root-admin", "--role", "admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("enrolment code for root-admin (single use"),
        "{text}"
    );
    assert!(
        text.contains("enrolment link: http://127.0.0.1:8080/enrol#sge_"),
        "{text}"
    );
    let again = run(&["user", "add", "root-admin", "--role", "operator"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let bad = run(&["user", "add", "x", "--role", "device"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    let none = run(&["user", "add", "x"]);
    assert_eq!(none.status.code(), Some(2), "a role is required");
}

/// A database at schema version 3 (before accounts) with `tokens`, then opened by this server:
/// each old API token is owned by a service account named after its label, holding its roles.
#[test]
fn tokens_from_before_accounts_become_owned_by_service_accounts_of_their_label() {
    use sigil_server::api::token_hash;
    use sigil_server::store::prelude::*;
    let hex_of = |t: &str| hex::encode(token_hash(t));
    let rows = [
        ("sgl_old_ci_release", "ci", "release", None),
        ("sgl_old_ci_audit", "ci", "auditor", None),
        ("sgl_old_ops", "ops", "operator", None),
        ("sgl_old_device", "device:pump-1", "device", Some("pump-1")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let pg = common::postgres::postgres_selected().then(common::postgres::TestPostgres::start);
    let store: Box<dyn Store> = match &pg {
        Some(pg) => {
            let mut c = pg.client();
            c.batch_execute(concat!(
                include_str!("../src/store/postgres/schema/0001_initial.sql"),
                include_str!("../src/store/postgres/schema/0002_bundles.sql"),
                include_str!("../src/store/postgres/schema/0003_root_chain.sql"),
                "CREATE TABLE sigil_schema (version BIGINT NOT NULL); \
                 INSERT INTO sigil_schema VALUES (3);"
            ))
            .unwrap();
            for (token, name, role, device) in rows {
                let device = device.map_or("NULL".to_owned(), |d| format!("'{d}'"));
                c.batch_execute(&format!(
                    "INSERT INTO tokens (hash, name, role, device_id, created_at) \
                     VALUES ('\\x{}', '{name}', '{role}', {device}, 5)",
                    hex_of(token)
                ))
                .unwrap();
            }
            Box::new(sigil_server::store::PgStore::open(&pg.url(), None).unwrap())
        }
        None => {
            let path = dir.path().join("sigil.db");
            {
                let c = rusqlite::Connection::open(&path).unwrap();
                c.execute_batch(concat!(
                    include_str!("../src/store/sqlite/schema/0001_initial.sql"),
                    include_str!("../src/store/sqlite/schema/0002_audit_checkpoints.sql"),
                    include_str!("../src/store/sqlite/schema/0003_root_chain.sql"),
                    "PRAGMA user_version = 3;"
                ))
                .unwrap();
                for (token, name, role, device) in rows {
                    let device = device.map_or("NULL".to_owned(), |d| format!("'{d}'"));
                    c.execute_batch(&format!(
                        "INSERT INTO tokens (hash, name, role, device_id, created_at) \
                         VALUES (x'{}', '{name}', '{role}', {device}, 5)",
                        hex_of(token)
                    ))
                    .unwrap();
                }
            }
            Box::new(sigil_server::store::SqliteStore::open(&path).unwrap())
        }
    };
    let users: Vec<(String, Value, Value)> = store
        .users()
        .unwrap()
        .into_iter()
        .map(|u| (u.name, json!(u.kind), json!(u.roles)))
        .collect();
    assert_eq!(
        users,
        [
            (
                "ci".to_owned(),
                json!("service"),
                json!(["auditor", "release"])
            ),
            ("ops".to_owned(), json!("service"), json!(["operator"])),
        ]
    );
    for (token, name, role, _) in &rows[..3] {
        let p = store.principal(&token_hash(token), 10).unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.role.as_str()), (*name, *role));
    }
    let listed = store.tokens().unwrap();
    assert!(listed.iter().all(|t| t.owner == t.name), "{listed:?}");
    drop(store);
}
