//! Passkeys (WebAuthn) as a second factor through the API, with a software authenticator in
//! the test: an Ed25519 key whose registration (`none` attestation, CBOR attestation object,
//! COSE key) and assertions (authenticator data signed with the client data's hash) are built
//! here byte by byte, so each ceremony rule can be broken on purpose. On SQLite, and on
//! PostgreSQL with `TEST_DATABASE=postgres`.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::people::{self, as_person, audited, request, Person, ENV, PASSPHRASE};
use common::Harness;
use data_encoding::BASE64URL_NOPAD as B64;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sigil_server::store::Role;

const ORIGIN: &str = "https://sigil.test:8443";
const RP_ID: &str = "sigil.test";

fn env() -> Vec<(&'static str, &'static str)> {
    let mut env = ENV.to_vec();
    env.push(("SIGIL_PUBLIC_URL", ORIGIN));
    env
}

fn detail(entry: &Value) -> Value {
    serde_json::from_str(entry["detail"].as_str().unwrap()).unwrap()
}

// A minimal CBOR encoder (RFC 8949): what an attestation object and a COSE key need.
fn cbor_head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}
fn cbor_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        cbor_head(0, i as u64, out);
    } else {
        cbor_head(1, (-1 - i) as u64, out);
    }
}
fn cbor_bytes(b: &[u8], out: &mut Vec<u8>) {
    cbor_head(2, b.len() as u64, out);
    out.extend(b);
}
fn cbor_text(t: &str, out: &mut Vec<u8>) {
    cbor_head(3, t.len() as u64, out);
    out.extend(t.as_bytes());
}

/// Flags of authenticator data (WebAuthn §6.1).
const UP: u8 = 0x01;
const AT: u8 = 0x40;

/// How a response is broken on purpose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    Origin,
    RpId,
    Type,
    NoPresence,
    Signature,
}

/// A software authenticator holding one Ed25519 credential.
struct Authenticator {
    key: SigningKey,
    id: Vec<u8>,
    counter: u32,
}

impl Authenticator {
    fn new(seed: u8) -> Self {
        Authenticator {
            key: SigningKey::from_bytes(&[seed; 32]),
            id: vec![seed; 32],
            counter: 0,
        }
    }

    fn client_data(kind: &str, options: &Value, fault: Fault) -> Vec<u8> {
        let kind = match fault {
            Fault::Type if kind == "webauthn.get" => "webauthn.create",
            Fault::Type => "webauthn.get",
            _ => kind,
        };
        let origin = if fault == Fault::Origin {
            "https://evil.example"
        } else {
            ORIGIN
        };
        json!({
            "type": kind,
            "challenge": options["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    fn auth_data(&self, flags: u8, fault: Fault) -> Vec<u8> {
        let rp = if fault == Fault::RpId {
            "evil.example"
        } else {
            RP_ID
        };
        let mut d = Sha256::digest(rp.as_bytes()).to_vec();
        d.push(if fault == Fault::NoPresence {
            flags & !UP
        } else {
            flags
        });
        d.extend(self.counter.to_be_bytes());
        d
    }

    /// `PublicKeyCredential.toJSON()` of `navigator.credentials.create(options)`.
    fn register(&self, options: &Value, fault: Fault) -> Value {
        let client_data = Self::client_data("webauthn.create", options, fault);
        let mut auth = self.auth_data(UP | AT, fault);
        auth.extend([0u8; 16]); // AAGUID: none
        auth.extend((self.id.len() as u16).to_be_bytes());
        auth.extend(&self.id);
        // COSE_Key: kty OKP (1), alg EdDSA (-8), crv Ed25519 (6), x.
        cbor_head(5, 4, &mut auth);
        for (k, v) in [(1, 1), (3, -8), (-1, 6)] {
            cbor_int(k, &mut auth);
            cbor_int(v, &mut auth);
        }
        cbor_int(-2, &mut auth);
        cbor_bytes(self.key.verifying_key().as_bytes(), &mut auth);
        let mut att = Vec::new();
        cbor_head(5, 3, &mut att);
        cbor_text("fmt", &mut att);
        cbor_text("none", &mut att);
        cbor_text("attStmt", &mut att);
        cbor_head(5, 0, &mut att);
        cbor_text("authData", &mut att);
        cbor_bytes(&auth, &mut att);
        json!({
            "id": B64.encode(&self.id),
            "rawId": B64.encode(&self.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": B64.encode(&client_data),
                "attestationObject": B64.encode(&att),
                "transports": ["usb"],
            },
            "clientExtensionResults": {},
        })
    }

    /// `PublicKeyCredential.toJSON()` of `navigator.credentials.get(options)`, with the
    /// counter at `counter`.
    fn assert_at(&mut self, options: &Value, counter: u32, fault: Fault) -> Value {
        self.counter = counter;
        let client_data = Self::client_data("webauthn.get", options, fault);
        let auth = self.auth_data(UP, fault);
        let mut signed = auth.clone();
        signed.extend(Sha256::digest(&client_data));
        let mut signature = self.key.sign(&signed).to_bytes();
        if fault == Fault::Signature {
            signature[0] ^= 1;
        }
        json!({
            "id": B64.encode(&self.id),
            "rawId": B64.encode(&self.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": B64.encode(&client_data),
                "authenticatorData": B64.encode(&auth),
                "signature": B64.encode(&signature),
                "userHandle": null,
            },
            "clientExtensionResults": {},
        })
    }

    /// The next assertion (counter one up).
    fn assert(&mut self, options: &Value, fault: Fault) -> Value {
        let next = self.counter + 1;
        self.assert_at(options, next, fault)
    }
}

/// Registers `a` as `name` in the person's (fresh) session.
async fn register(h: &Harness, p: &Person, a: &Authenticator, name: &str) -> (StatusCode, Value) {
    let (s, options) = as_person(h, p, "POST", "/api/v1/account/passkeys/options", None).await;
    assert_eq!(s, StatusCode::OK, "{options}");
    assert_eq!(options["rp"]["id"], RP_ID, "{options}");
    let credential = a.register(&options, Fault::None);
    as_person(
        h,
        p,
        "POST",
        "/api/v1/account/passkeys",
        Some(json!({ "name": name, "credential": credential })),
    )
    .await
}

/// A server with passkeys on, and ann (operator) logged in with a passkey `k` registered from
/// the authenticator of `seed`.
async fn with_passkey(seed: u8) -> (Harness, Person, Authenticator) {
    let h = Harness::with_env(&env());
    let ann = people::person(&h, "ann", &[Role::Operator]).await;
    let key = Authenticator::new(seed);
    assert_eq!(register(&h, &ann, &key, "k").await.0, StatusCode::CREATED);
    (h, ann, key)
}

/// The login challenge after the passphrase.
async fn login_options(h: &Harness, name: &str) -> (StatusCode, Value) {
    h.call(
        "POST",
        "/api/v1/session/passkey/options",
        None,
        Some(json!({ "name": name, "passphrase": PASSPHRASE })),
    )
    .await
}

/// The re-authentication challenge after the passphrase, in the person's session.
async fn reauth_options(h: &Harness, p: &Person) -> (StatusCode, Value) {
    as_person(
        h,
        p,
        "POST",
        "/api/v1/session/reauth/passkey/options",
        Some(json!({ "passphrase": PASSPHRASE })),
    )
    .await
}

/// Sends an assertion for a login; on success the person holds the new session.
async fn finish_login(h: &Harness, p: &mut Person, assertion: Value) -> (StatusCode, Value) {
    let (s, headers, v) = request(
        h,
        "POST",
        "/api/v1/session/passkey",
        None,
        None,
        &[],
        Some(assertion),
    )
    .await;
    if s == StatusCode::OK {
        let cookie = headers["set-cookie"].to_str().unwrap();
        p.cookie = cookie.split(';').next().unwrap().to_owned();
        p.csrf = v["csrf_token"].as_str().unwrap().to_owned();
    }
    (s, v)
}

#[tokio::test]
async fn a_registered_passkey_logs_in_and_reauthenticates_and_each_step_is_audited() {
    let h = Harness::with_env(&env());
    let mut ann = people::person(&h, "ann", &[Role::Operator]).await;
    let mut key = Authenticator::new(7);
    let (s, v) = register(&h, &ann, &key, "work key").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "work key");
    let (s, list) = as_person(&h, &ann, "GET", "/api/v1/account/passkeys", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], hex::encode(&key.id));
    let added = audited(&h, "user.passkey_add").await;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["actor"], "ann");
    assert_eq!(detail(&added[0])["name"], "work key");

    // The same authenticator again: the browser is told to exclude it, and the server
    // refuses the duplicate.
    let (s, options) = as_person(&h, &ann, "POST", "/api/v1/account/passkeys/options", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        options["excludeCredentials"][0]["id"],
        B64.encode(&key.id),
        "{options}"
    );
    let (s, v) = as_person(
        &h,
        &ann,
        "POST",
        "/api/v1/account/passkeys",
        Some(json!({ "name": "again", "credential": key.register(&options, Fault::None) })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Log out; log in with passphrase, then passkey.
    assert_eq!(
        as_person(&h, &ann, "DELETE", "/api/v1/session", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, options) = login_options(&h, "ann").await;
    assert_eq!(s, StatusCode::OK, "{options}");
    assert_eq!(options["rpId"], RP_ID, "{options}");
    assert_eq!(options["allowCredentials"][0]["id"], B64.encode(&key.id));
    let (s, v) = finish_login(&h, &mut ann, key.assert(&options, Fault::None)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "ann");
    let (s, v) = as_person(&h, &ann, "GET", "/api/v1/session", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let logins = audited(&h, "user.login").await;
    let last = detail(logins.last().unwrap());
    assert_eq!(last["second_factor"], "passkey", "{last}");
    assert_eq!(last["passkey"], "work key");
    let (_, list) = as_person(&h, &ann, "GET", "/api/v1/account/passkeys", None).await;
    assert_eq!(list[0]["sign_count"], 1, "{list}");
    assert!(list[0]["last_used_at"].is_u64(), "{list}");

    // Re-authentication in the session: passphrase, then passkey.
    let (s, options) = reauth_options(&h, &ann).await;
    assert_eq!(s, StatusCode::OK, "{options}");
    let assertion = key.assert(&options, Fault::None);
    // A login cannot use a re-authentication's challenge.
    let mut bob = Person::new("ann", Vec::new());
    assert_eq!(
        finish_login(&h, &mut bob, assertion.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    // ... and the attempt spent it.
    let (s, v) = as_person(
        &h,
        &ann,
        "POST",
        "/api/v1/session/reauth/passkey",
        Some(assertion),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (_, options) = reauth_options(&h, &ann).await;
    let (s, v) = as_person(
        &h,
        &ann,
        "POST",
        "/api/v1/session/reauth/passkey",
        Some(key.assert(&options, Fault::None)),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let reauths = audited(&h, "user.reauth").await;
    assert_eq!(detail(reauths.last().unwrap())["second_factor"], "passkey");
}

#[tokio::test]
async fn challenges_are_single_use_and_expire() {
    let (h, mut ann, mut key) = with_passkey(3).await;

    let (_, options) = login_options(&h, "ann").await;
    let assertion = key.assert(&options, Fault::None);
    assert_eq!(
        finish_login(&h, &mut ann, assertion.clone()).await.0,
        StatusCode::OK
    );
    let (s, v) = finish_login(&h, &mut ann, assertion).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown, expired or used"),
        "{v}"
    );

    let (_, options) = login_options(&h, "ann").await;
    h.raw_execute(
        "UPDATE webauthn_ceremonies SET expires_at = 1",
        "UPDATE webauthn_ceremonies SET expires_at = 1",
    );
    let (s, v) = finish_login(&h, &mut ann, key.assert(&options, Fault::None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown, expired or used"),
        "{v}"
    );

    // A wrong passphrase gives no challenge, and counts.
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/session/passkey/options",
            None,
            Some(json!({ "name": "ann", "passphrase": "not the passphrase" })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let failures = audited(&h, "user.login_failure").await;
    assert_eq!(detail(failures.last().unwrap())["reason"], "passphrase");
}

#[tokio::test]
async fn a_cloned_authenticator_with_a_lower_counter_is_refused_and_audited() {
    let (h, mut ann, mut key) = with_passkey(5).await;
    let (_, options) = login_options(&h, "ann").await;
    assert_eq!(
        finish_login(&h, &mut ann, key.assert_at(&options, 10, Fault::None))
            .await
            .0,
        StatusCode::OK
    );
    for counter in [9, 10] {
        let (_, options) = login_options(&h, "ann").await;
        let (s, v) =
            finish_login(&h, &mut ann, key.assert_at(&options, counter, Fault::None)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "counter {counter}: {v}");
    }
    let clones = audited(&h, "user.passkey_clone").await;
    assert_eq!(clones.len(), 2);
    assert_eq!(clones[0]["actor"], "ann");
    assert_eq!(detail(&clones[0])["stored_counter"], 10);
    let failures = audited(&h, "user.login_failure").await;
    assert!(detail(failures.last().unwrap())["reason"]
        .as_str()
        .unwrap()
        .contains("counter"));
    // The genuine authenticator goes on.
    let (_, options) = login_options(&h, "ann").await;
    assert_eq!(
        finish_login(&h, &mut ann, key.assert_at(&options, 11, Fault::None))
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_origin_rp_id_type_presence_or_signature_fail_and_count_towards_lockout() {
    let (h, mut ann, mut key) = with_passkey(9).await;
    // lockout_after is 5: the fifth failure locks.
    let faults = [
        Fault::Origin,
        Fault::RpId,
        Fault::Type,
        Fault::NoPresence,
        Fault::Signature,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let (s, options) = login_options(&h, "ann").await;
        assert_eq!(s, StatusCode::OK, "{fault:?}: {options}");
        let (s, v) = finish_login(&h, &mut ann, key.assert(&options, fault)).await;
        let expected = if i == 4 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(s, expected, "{fault:?}: {v}");
    }
    let failures = audited(&h, "user.login_failure").await;
    assert_eq!(failures.len(), 5);
    for f in &failures {
        assert_eq!(f["actor"], "ann");
        assert!(
            detail(f)["reason"].as_str().unwrap().starts_with("passkey"),
            "{f}"
        );
    }
    assert_eq!(audited(&h, "user.lockout").await.len(), 1);
    // Locked: not even the passphrase step answers.
    assert_eq!(
        login_options(&h, "ann").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn registration_needs_a_fresh_session_and_a_valid_response() {
    let h = Harness::with_env(&env());
    let mut ann = people::person(&h, "ann", &[Role::Operator]).await;
    let key = Authenticator::new(11);
    for fault in [Fault::Origin, Fault::RpId, Fault::Type, Fault::NoPresence] {
        let (_, options) =
            as_person(&h, &ann, "POST", "/api/v1/account/passkeys/options", None).await;
        let (s, v) = as_person(
            &h,
            &ann,
            "POST",
            "/api/v1/account/passkeys",
            Some(json!({ "name": "k", "credential": key.register(&options, fault) })),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{fault:?}: {v}");
    }
    let refused = audited(&h, "user.passkey_failure").await;
    assert_eq!(refused.len(), 4);
    assert_eq!(refused[0]["actor"], "ann");
    let (_, list) = as_person(&h, &ann, "GET", "/api/v1/account/passkeys", None).await;
    assert_eq!(list, json!([]));

    // Bad names are refused before anything is stored.
    let (_, options) = as_person(&h, &ann, "POST", "/api/v1/account/passkeys/options", None).await;
    let (s, _) = as_person(
        &h,
        &ann,
        "POST",
        "/api/v1/account/passkeys",
        Some(json!({ "name": "", "credential": key.register(&options, Fault::None) })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A session whose last re-authentication is old may not add one.
    h.raw_execute(
        "UPDATE sessions SET reauth_at = reauth_at - 3600",
        "UPDATE sessions SET reauth_at = reauth_at - 3600",
    );
    let (s, v) = as_person(&h, &ann, "POST", "/api/v1/account/passkeys/options", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(people::reauth(&h, &mut ann).await, StatusCode::NO_CONTENT);
    assert_eq!(register(&h, &ann, &key, "k").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn the_last_second_factor_cannot_be_removed() {
    let h = Harness::with_env(&env());
    let ann = people::person(&h, "ann", &[Role::Operator]).await;
    let first = Authenticator::new(21);
    let second = Authenticator::new(22);
    let (s, v) = as_person(&h, &ann, "DELETE", "/api/v1/account/totp", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("no second factor"),
        "{v}"
    );

    assert_eq!(
        register(&h, &ann, &first, "first").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        as_person(&h, &ann, "DELETE", "/api/v1/account/totp", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(audited(&h, "user.totp_remove").await.len(), 1);
    let first_id = hex::encode(&first.id);
    let (s, v) = as_person(
        &h,
        &ann,
        "DELETE",
        &format!("/api/v1/account/passkeys/{first_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Without the app, a code no longer logs in.
    let mut other = Person::new("ann", ann.secret.clone());
    assert_eq!(
        people::login(&h, &mut other, PASSPHRASE).await.0,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        register(&h, &ann, &second, "second").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        as_person(
            &h,
            &ann,
            "DELETE",
            &format!("/api/v1/account/passkeys/{first_id}"),
            None,
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let removed = audited(&h, "user.passkey_remove").await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["actor"], "ann");
    assert_eq!(detail(&removed[0])["passkey"], first_id);
    let (_, list) = as_person(&h, &ann, "GET", "/api/v1/account/passkeys", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "second");
    // Someone else's passkey is not found.
    let bob = people::person(&h, "bob", &[Role::Operator]).await;
    let second_id = hex::encode(&second.id);
    let (s, _) = as_person(
        &h,
        &bob,
        "DELETE",
        &format!("/api/v1/account/passkeys/{second_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn passkeys_are_off_without_a_public_url() {
    let h = Harness::with_env(ENV);
    let ann = people::person(&h, "ann", &[Role::Operator]).await;
    let (s, v) = as_person(&h, &ann, "POST", "/api/v1/account/passkeys/options", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("accounts.public_url"),
        "{v}"
    );
    let (s, _) = login_options(&h, "ann").await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_store_spends_a_passkey_use_only_if_its_counter_rises() {
    // Two uses verified at once against the same stored counter: the store's transaction is
    // the last word, so only one can pass.
    use sigil_server::store::accounts::Session;
    use sigil_server::store::passkeys::SecondFactorUse;
    use sigil_server::store::{AuditAction, AuditEvent};
    let (h, mut ann, mut key) = with_passkey(31).await;
    let (_, options) = login_options(&h, "ann").await;
    let (s, _) = finish_login(&h, &mut ann, key.assert_at(&options, 5, Fault::None)).await;
    assert_eq!(s, StatusCode::OK);
    let id = key.id.clone();
    let stored = h.blocking(move |s| s.passkey(&id).unwrap().unwrap());
    assert_eq!(stored.sign_count, 5);
    let open = |n: u8, count: u32| {
        let stored = stored.clone();
        h.blocking(move |s| {
            let session = Session {
                user_name: "ann".into(),
                csrf_token: "sgc_t".into(),
                created_at: 1,
                last_seen: 1,
                reauth_at: 1,
            };
            let event = AuditEvent::new("ann", AuditAction::UserLogin, "ann", json!({}));
            let factor = SecondFactorUse::Passkey {
                id: stored.id,
                dynamic_state: stored.dynamic_state,
                sign_count: count,
            };
            s.open_session(&[n; 32], &session, &factor, &event)
        })
    };
    assert!(open(1, 5).is_err(), "an equal counter passed");
    assert!(open(2, 4).is_err(), "a lower counter passed");
    open(3, 6).unwrap();
    let id = key.id.clone();
    assert_eq!(
        h.blocking(move |s| s.passkey(&id).unwrap().unwrap())
            .sign_count,
        6
    );
}

#[tokio::test]
async fn the_account_page_lists_passkeys_and_its_form_removes_one_after_reauthentication() {
    use axum::body::Body;
    use axum::http::Request;
    let (h, mut ann, key) = with_passkey(41).await;
    let get = Request::get("/console/account")
        .header("cookie", &ann.cookie)
        .body(Body::empty())
        .unwrap();
    let (s, _, body) = people::read(h.send(get).await).await;
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(s, StatusCode::OK);
    let id = hex::encode(&key.id);
    assert!(body.contains(&format!("data-passkey=\"{id}\"")), "{body}");
    assert!(body.contains("id=\"add-passkey\""), "{body}");

    let (cookie, csrf) = (ann.cookie.clone(), ann.csrf.clone());
    let remove = |totp: String| {
        let form = serde_urlencoded::to_string([
            ("csrf_token", csrf.as_str()),
            ("passphrase", PASSPHRASE),
            ("totp", totp.as_str()),
        ])
        .unwrap();
        Request::post(format!("/console/account/passkeys/{id}/remove"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap()
    };
    // A wrong code: refused (the console answers a 401 with its login page), nothing removed.
    let wrong = ann.wrong_code();
    let (s, headers, _) = people::read(h.send(remove(wrong)).await).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/console/login");
    assert_eq!(audited(&h, "user.passkey_remove").await.len(), 0);
    let code = ann.code();
    let (s, headers, _) = people::read(h.send(remove(code)).await).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/console/account");
    let (_, list) = as_person(&h, &ann, "GET", "/api/v1/account/passkeys", None).await;
    assert_eq!(list, json!([]));
    assert_eq!(audited(&h, "user.passkey_remove").await.len(), 1);
}

#[tokio::test]
async fn without_the_app_a_console_removal_needs_a_session_freshly_confirmed_with_a_passkey() {
    use axum::body::Body;
    use axum::http::Request;
    let (h, ann, mut key) = with_passkey(51).await;
    let other = Authenticator::new(52);
    assert_eq!(
        register(&h, &ann, &other, "spare").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        as_person(&h, &ann, "DELETE", "/api/v1/account/totp", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let id = hex::encode(&other.id);
    let remove = || {
        Request::post(format!("/console/account/passkeys/{id}/remove"))
            .header("cookie", &ann.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf_token={}", ann.csrf)))
            .unwrap()
    };
    h.raw_execute(
        "UPDATE sessions SET reauth_at = reauth_at - 3600",
        "UPDATE sessions SET reauth_at = reauth_at - 3600",
    );
    let (s, _, _) = people::read(h.send(remove()).await).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a stale session removed a passkey"
    );
    let (_, options) = reauth_options(&h, &ann).await;
    let (s, v) = as_person(
        &h,
        &ann,
        "POST",
        "/api/v1/session/reauth/passkey",
        Some(key.assert(&options, Fault::None)),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, headers, _) = people::read(h.send(remove()).await).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/console/account");
    let (_, list) = as_person(&h, &ann, "GET", "/api/v1/account/passkeys", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}
