//! Signing with keys in an HSM: the real `sigil` binary against SoftHSM2, one fresh token per
//! test (its own `SOFTHSM2_CONF` and token directory), keys generated in the token by `sigil
//! keygen --pkcs11` or by OpenSC's `pkcs11-tool`. `scripts/test` installs both (Debian
//! packages softhsm2 and opensc); without them these tests fail and say what is missing.

// Harness helpers outside #[test] functions: a failed setup step should panic with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Workspace;

const FAILURE: i32 = 1;
const USAGE: i32 = 2;
const PIN: &str = "246810";
const TOKEN: &str = "release";

/// Where Debian and a source build put the SoftHSM2 module.
const MODULES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

fn module() -> &'static str {
    MODULES
        .iter()
        .copied()
        .find(|m| Path::new(m).exists())
        .expect(
        "SoftHSM2 is missing (no libsofthsm2.so): apt-get install softhsm2, as scripts/test does",
    )
}

/// A release workspace with its own SoftHSM2 configuration and one initialised token; `sigil`
/// runs with this token's configuration, the module and PIN in the environment, and nothing
/// inherited from the caller's PKCS#11 settings.
struct Hsm(Workspace);

impl std::ops::Deref for Hsm {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        &self.0
    }
}

impl Hsm {
    fn new() -> Self {
        let mut ws = Workspace::new();
        let tokens = ws.path("tokens");
        fs::create_dir(&tokens).unwrap();
        ws.write(
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            )
            .as_bytes(),
        );
        ws.write("pin", format!("{PIN}\n").as_bytes());
        let conf = ws.path("softhsm2.conf");
        ws.set_env("SOFTHSM2_CONF", conf.to_str());
        ws.set_env("SIGIL_PKCS11_TOKEN", None);
        ws.set_env("SIGIL_PKCS11_PIN_FILE", None);
        ws.set_env("SIGIL_PKCS11_MODULE", Some(module()));
        ws.set_env("SIGIL_PKCS11_PIN", Some(PIN));
        let hsm = Hsm(ws);
        hsm.tool(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--pin",
                PIN,
                "--so-pin",
                "13579",
            ],
        );
        hsm
    }

    fn conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }

    /// Runs a SoftHSM or OpenSC tool on this token directory and requires success.
    fn tool(&self, program: &str, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new(program)
            .env("SOFTHSM2_CONF", self.conf())
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{program} is missing ({e}): apt-get install softhsm2 opensc, as scripts/test does")
            });
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `pkcs11-tool` logged in to the token.
    fn pkcs11_tool(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec![
            "--module",
            module(),
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
        ];
        all.extend(args);
        self.tool("pkcs11-tool", &all)
    }

    /// Runs `sigil` with `env`, requires exit code `code` and an error that does not echo the
    /// PIN; returns stderr.
    fn fails_env(&self, code: i32, env: &[(&str, &str)], args: &[&str]) -> String {
        let stderr = self.0.fails_env(code, env, args);
        assert!(
            !stderr.contains(PIN),
            "the PIN appears in the error: {stderr}"
        );
        stderr
    }

    fn fails(&self, code: i32, args: &[&str]) -> String {
        self.fails_env(code, &[], args)
    }

    /// Generates an Ed25519 key labelled `label` in the token; its public key goes to
    /// `LABEL.pub.pem`.
    fn keygen(&self, label: &str) {
        self.ok(&[
            "keygen",
            "--pkcs11",
            &uri(label),
            "--public-out",
            &format!("{label}.pub.pem"),
        ]);
    }

    /// The public key object of `id` as pkcs11-tool reads it (SPKI PEM for Edwards keys).
    fn token_public_pem(&self, id: &str) -> Vec<u8> {
        let file = format!("{id}.token.pem");
        self.pkcs11_tool(&["--read-object", "--type", "pubkey", "--id", id, "-o", &file]);
        let pem = self.read(&file);
        assert!(pem.starts_with(b"-----BEGIN PUBLIC KEY-----"), "{pem:?}");
        pem
    }
}

fn uri(label: &str) -> String {
    format!("pkcs11:token={TOKEN};object={label}")
}

/// A trust root of the token key `root-1` and a key set of the given release public keys
/// (threshold `threshold`) signed by it, with the module + token + label options instead of a
/// URI; an image.
fn root_and_key_set(hsm: &Hsm, threshold: &str, release_keys: &[&str]) {
    hsm.keygen("root-1");
    hsm.ok(&[
        "root",
        "init",
        "-m",
        "1",
        "--out",
        "root.sgl",
        "root-1.pub.pem",
    ]);
    let mut create = vec![
        "keyset",
        "create",
        "-m",
        threshold,
        "--key-set-version",
        "1",
        "--out",
        "ks.sgl",
    ];
    create.extend(release_keys);
    hsm.ok(&create);
    let out = hsm.ok(&[
        "keyset",
        "sign",
        "ks.sgl",
        "--pkcs11-token",
        TOKEN,
        "--pkcs11-key",
        "root-1",
        "--root",
        "root.sgl",
    ]);
    assert!(out.contains("root threshold met"), "{out}");
    hsm.write("app.bin", &[0x5a; 70_000]);
}

/// `root_and_key_set` with one release key, `release-1`, in the token.
fn release_setup(hsm: &Hsm) {
    hsm.keygen("release-1");
    root_and_key_set(hsm, "1", &["release-1.pub.pem"]);
}

/// `sigil sign` of app.bin into `out` with `keys` (version 1.0.0, counter 1).
fn sign_args<'a>(out: &'a str, keys: &[&'a str]) -> Vec<&'a str> {
    let mut rest = vec!["--out", out];
    for k in keys {
        rest.extend(["--key", k]);
    }
    common::sign_args("ks.sgl", "1.0.0", "1", &rest)
}

#[test]
fn a_release_signed_in_the_hsm_verifies() {
    let hsm = Hsm::new();
    release_setup(&hsm);
    // Everything in the URI: module path and PIN file; nothing from the environment.
    let full = format!(
        "{}?module-path={}&pin-source={}",
        uri("release-1"),
        module(),
        hsm.path("pin").display()
    );
    let mut args = sign_args("app.sgl", &[&full]);
    args.extend(["--root", "root.sgl"]);
    let out = hsm.sigil_env(
        &[("SIGIL_PKCS11_MODULE", ""), ("SIGIL_PKCS11_PIN", "")],
        &args,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(
        report.contains("signatures verify under the trust root"),
        "{report}"
    );
    let verified = hsm.ok(&[
        "verify",
        "app.sgl",
        "--root",
        "root.sgl",
        "--product",
        "acme/pump",
    ]);
    assert!(verified.starts_with("OK app.sgl"), "{verified}");
    // The payload is the image, byte for byte, at the end of the bundle.
    let bundle = hsm.read("app.sgl");
    assert!(bundle.ends_with(&hsm.read("app.bin")));

    // Ed25519 is deterministic in the token too: signing again adds nothing.
    let again = hsm.ok(&["sign", "add", "app.sgl", "--key", &uri("release-1")]);
    assert!(again.contains("already signed"), "{again}");
}

#[test]
fn hsm_and_pem_keys_meet_one_threshold_together() {
    let hsm = Hsm::new();
    hsm.keygen("release-hsm");
    hsm.ok(&["keygen", "--out", "release-pem.pem"]);
    root_and_key_set(&hsm, "2", &["release-hsm.pub.pem", "release-pem.pub.pem"]);
    // One holder signs with the PEM key, the other adds the HSM signature.
    hsm.ok(&sign_args("app.sgl", &["release-pem.pem"]));
    assert_eq!(
        hsm.sigil_env(&[], &["verify", "app.sgl", "--root", "root.sgl"])
            .status
            .code(),
        Some(4),
        "one of two release signatures must not verify"
    );
    let added = hsm.ok(&[
        "sign",
        "add",
        "app.sgl",
        "--pkcs11-token",
        TOKEN,
        "--pkcs11-key",
        "release-hsm",
        "--root",
        "root.sgl",
    ]);
    assert!(
        added.contains("signatures verify under the trust root"),
        "{added}"
    );
    hsm.ok(&["verify", "app.sgl", "--root", "root.sgl"]);

    // The same HSM key twice (URI and label) counts once: refused.
    let err = hsm.fails(
        FAILURE,
        &[
            &sign_args("twice.sgl", &[&uri("release-hsm")])[..],
            &["--pkcs11-token", TOKEN, "--pkcs11-key", "release-hsm"],
        ]
        .concat(),
    );
    assert!(err.contains("is given twice"), "{err}");
}

#[test]
fn exported_public_keys_equal_the_token_objects() {
    let hsm = Hsm::new();
    hsm.ok(&[
        "keygen",
        "--pkcs11",
        &format!(
            "{}?pin-source={}",
            uri("made-by-sigil"),
            hsm.path("pin").display()
        ),
        "--public-out",
        "sigil.pub.pem",
    ]);
    // A key pkcs11-tool generated, exported by sigil. pkcs11-tool sets CKA_EC_PARAMS to the
    // curve name (PrintableString "edwards25519"), sigil to the OID: both forms are read.
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--label",
        "made-by-opensc",
        "--id",
        "a1",
    ]);
    let out = hsm.ok(&[
        "key",
        "export",
        &uri("made-by-opensc"),
        "--out",
        "opensc.pub.pem",
    ]);
    assert!(out.contains("key id:"), "{out}");
    assert_eq!(hsm.read("opensc.pub.pem"), hsm.token_public_pem("a1"));

    // Exporting sigil's own key gives what keygen wrote, which is the token's object.
    hsm.ok(&[
        "key",
        "export",
        "--pkcs11-token",
        TOKEN,
        "pkcs11:object=made-by-sigil",
        "-o",
        "again.pub.pem",
    ]);
    assert_eq!(hsm.read("again.pub.pem"), hsm.read("sigil.pub.pem"));
    let listed =
        String::from_utf8(hsm.pkcs11_tool(&["--list-objects", "--type", "pubkey"])).unwrap();
    let id_line = listed
        .split("label:      made-by-sigil")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.trim_start().starts_with("ID:")))
        .expect("sigil's key is listed with an id");
    let id = id_line.trim_start().trim_start_matches("ID:").trim();
    assert_eq!(hsm.read("sigil.pub.pem"), hsm.token_public_pem(id));
    // The private half is sensitive and never extractable.
    let private =
        String::from_utf8(hsm.pkcs11_tool(&["--list-objects", "--type", "privkey"])).unwrap();
    let entry = private.split("label:      made-by-sigil").nth(1).unwrap();
    assert!(
        entry.contains("sensitive, always sensitive, never extractable"),
        "{private}"
    );

    // Same SPKI PEM as `sigil keygen` writes for a file key: `inspect` reads both.
    let shown = hsm.ok(&["inspect", "sigil.pub.pem"]);
    assert!(shown.contains("public key"), "{shown}");
    // A PEM private key exports to its public half too.
    hsm.ok(&["keygen", "--out", "file.pem"]);
    hsm.ok(&["key", "export", "file.pem", "-o", "file.exported.pem"]);
    assert_eq!(hsm.read("file.exported.pem"), hsm.read("file.pub.pem"));
}

#[test]
fn keygen_in_the_token_never_overwrites() {
    let hsm = Hsm::new();
    hsm.keygen("k");
    let err = hsm.fails(
        FAILURE,
        &[
            "keygen",
            "--pkcs11",
            &uri("k"),
            "--public-out",
            "other.pub.pem",
        ],
    );
    assert!(
        err.contains("already holds an object with this label"),
        "{err}"
    );
    let err = hsm.fails(
        FAILURE,
        &[
            "keygen",
            "--pkcs11",
            &uri("new"),
            "--public-out",
            "k.pub.pem",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
    let err = hsm.fails(
        FAILURE,
        &[
            "keygen",
            "--pkcs11",
            &format!("pkcs11:token={TOKEN}"),
            "--public-out",
            "x.pem",
        ],
    );
    assert!(err.contains("needs object=LABEL"), "{err}");
    // --pkcs11 needs --public-out, and excludes --out.
    hsm.fails(USAGE, &["keygen", "--pkcs11", &uri("x")]);
    hsm.fails(
        USAGE,
        &[
            "keygen",
            "--pkcs11",
            &uri("x"),
            "--out",
            "x.pem",
            "--public-out",
            "x.pub.pem",
        ],
    );
}

#[test]
fn pin_mistakes_are_clear_and_never_echo_the_pin() {
    let hsm = Hsm::new();
    release_setup(&hsm);
    let key = uri("release-1");
    let sign = sign_args("app.sgl", &[&key]);
    let err = hsm.fails_env(FAILURE, &[("SIGIL_PKCS11_PIN", "999999")], &sign);
    assert!(err.contains("refused the PIN (wrong PIN)"), "{err}");
    let err = hsm.fails_env(FAILURE, &[("SIGIL_PKCS11_PIN", "")], &sign);
    assert!(err.contains("needs the user PIN"), "{err}");
    // A PIN in the URI is used, and never shown.
    let with_pin = format!("{key}?pin-value=000000");
    let err = hsm.fails(FAILURE, &sign_args("app.sgl", &[&with_pin]));
    assert!(err.contains("pin-value=***"), "{err}");
    assert!(!err.contains("000000"), "{err}");
    let ok_pin = format!("{key}?pin-value={PIN}");
    let out = hsm.sigil_env(
        &[("SIGIL_PKCS11_PIN", "")],
        &sign_args("app.sgl", &[&ok_pin]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PIN));
    // A PIN file that does not exist.
    let err = hsm.fails(
        FAILURE,
        &sign_args("b.sgl", &[&format!("{key}?pin-source=/nonexistent/pin")]),
    );
    assert!(err.contains("cannot read the PIN"), "{err}");
    assert!(!hsm.path("b.sgl").exists());
}

#[test]
fn missing_tokens_keys_and_modules_are_clear_errors() {
    let hsm = Hsm::new();
    release_setup(&hsm);
    let cases: [(String, &str); 6] = [
        (
            "pkcs11:token=elsewhere;object=release-1".to_owned(),
            "no token matches in",
        ),
        (
            uri("release-2"),
            "no private key matches in token `release`",
        ),
        (
            format!("{}?module-path=/nonexistent/libpkcs11.so", uri("release-1")),
            "cannot load PKCS#11 module /nonexistent/libpkcs11.so",
        ),
        (
            format!(
                "{}?module-path={}",
                uri("release-1"),
                hsm.path("pin").display()
            ),
            "cannot load PKCS#11 module",
        ),
        (
            format!("{};type=cert", uri("release-1")),
            "type=cert is not a signing key",
        ),
        (
            format!("{}?module-name=softhsm2", uri("release-1")),
            "give module-path instead",
        ),
    ];
    for (key, message) in &cases {
        let env: &[(&str, &str)] = if key.contains("module-") {
            &[("SIGIL_PKCS11_MODULE", "")]
        } else {
            &[]
        };
        let err = hsm.fails_env(FAILURE, env, &sign_args("x.sgl", &[key]));
        assert!(err.contains(message), "{key}: {err}");
        assert!(
            err.contains("tokens present: `release`") || !message.starts_with("no token"),
            "{err}"
        );
    }
    // No module anywhere.
    let err = hsm.fails_env(
        FAILURE,
        &[("SIGIL_PKCS11_MODULE", "")],
        &sign_args("x.sgl", &[&uri("release-1")]),
    );
    assert!(err.contains("no PKCS#11 module"), "{err}");
    // A key of the token that the key set does not name.
    hsm.keygen("stranger");
    let err = hsm.fails(FAILURE, &sign_args("x.sgl", &[&uri("stranger")]));
    assert!(err.contains("is not a release key of the key set"), "{err}");
    assert!(!hsm.path("x.sgl").exists());
}

#[test]
fn keys_that_are_not_ed25519_or_not_paired_are_refused() {
    let hsm = Hsm::new();
    release_setup(&hsm);
    for (label, key_type, id) in [("rsa", "rsa:2048", "b1"), ("p256", "EC:prime256v1", "b2")] {
        hsm.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ]);
    }
    let err = hsm.fails(FAILURE, &sign_args("x.sgl", &[&uri("rsa")]));
    assert!(err.contains("the key is CKK_RSA, not Ed25519"), "{err}");
    let err = hsm.fails(FAILURE, &sign_args("x.sgl", &[&uri("p256")]));
    assert!(err.contains("the key is CKK_EC, not Ed25519"), "{err}");

    // A private key whose public key object was deleted.
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--label",
        "lonely",
        "--id",
        "c1",
    ]);
    hsm.pkcs11_tool(&["--delete-object", "--type", "pubkey", "--id", "c1"]);
    let err = hsm.fails(FAILURE, &["key", "export", &uri("lonely"), "-o", "x.pem"]);
    assert!(err.contains("no public key object"), "{err}");

    // Key A's private object paired (by id) with key B's public object: the token's signature
    // does not verify under the public key sigil would publish, so nothing is signed.
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--label",
        "a",
        "--id",
        "d1",
    ]);
    hsm.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--label",
        "b",
        "--id",
        "d2",
    ]);
    hsm.pkcs11_tool(&["--delete-object", "--type", "pubkey", "--id", "d1"]);
    hsm.pkcs11_tool(&["--type", "pubkey", "--id", "d2", "--set-id", "d1"]);
    let err = hsm.fails(FAILURE, &["key", "export", &uri("a"), "-o", "x.pem"]);
    assert!(
        err.contains("does not verify under the key's public key object"),
        "{err}"
    );
    assert!(!hsm.path("x.pem").exists());
}

#[test]
fn malformed_uris_are_usage_errors() {
    let hsm = Hsm::new();
    for (key, message) in [
        (
            "pkcs11:token=release;label=k",
            "unknown PKCS#11 URI path attribute `label`",
        ),
        ("pkcs11:token=a;token=b", "`token` is given twice"),
        ("pkcs11:object=a b", "must be percent-encoded"),
        ("pkcs11:id=%g1", "malformed percent escape"),
        (
            "pkcs11:object=k?pin-source=|cat",
            "pin-source must be a file",
        ),
    ] {
        let err = hsm.fails(USAGE, &["key", "export", key, "-o", "x.pem"]);
        assert!(err.contains(message), "{key}: {err}");
    }
}

#[test]
fn ambiguous_uris_are_refused_and_id_or_token_settles_them() {
    let hsm = Hsm::new();
    hsm.tool(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "second",
            "--pin",
            PIN,
            "--so-pin",
            "13579",
        ],
    );
    for id in ["e1", "e2"] {
        hsm.pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "EC:edwards25519",
            "--label",
            "twin",
            "--id",
            id,
        ]);
    }
    let err = hsm.fails(FAILURE, &["key", "export", &uri("twin"), "-o", "x.pem"]);
    assert!(
        err.contains("2 private keys match in token `release`"),
        "{err}"
    );
    hsm.ok(&[
        "key",
        "export",
        &format!("{};id=%e2", uri("twin")),
        "-o",
        "e2.pem",
    ]);
    assert_eq!(hsm.read("e2.pem"), hsm.token_public_pem("e2"));

    // Two tokens and no token= in the URI.
    let err = hsm.fails(
        FAILURE,
        &["key", "export", "pkcs11:object=twin", "-o", "x.pem"],
    );
    assert!(err.contains("2 tokens match"), "{err}");
    hsm.ok(&[
        "key",
        "export",
        "--pkcs11-token",
        TOKEN,
        "pkcs11:object=twin;id=%e1",
        "-o",
        "e1.pem",
    ]);
    assert_eq!(hsm.read("e1.pem"), hsm.token_public_pem("e1"));
    assert!(!hsm.path("x.pem").exists());
}
