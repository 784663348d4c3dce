//! Runs the real `sigil` binary in temporary directories: every subcommand, its outputs and its
//! error paths, with the exit codes documented in `sigil --help`.

// Harness helpers outside #[test] functions: a failed setup step should panic with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use common::{sign_args, Workspace};

const MALFORMED: i32 = 3;
const SIGNATURE: i32 = 4;
const POLICY: i32 = 5;
const DIGEST: i32 = 6;

/// A release workspace (the shared harness) with this suite's set-ups.
struct Env(Workspace);

impl std::ops::Deref for Env {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        &self.0
    }
}

impl Env {
    fn new() -> Self {
        Env(Workspace::new())
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn keygen(&self, name: &str) {
        self.ok(&["keygen", "--out", &format!("{name}.pem")]);
    }

    /// Root keys r1, r2 (root threshold 2), release keys k1, k2 (threshold `release_threshold`),
    /// a key set for acme/pump signed by both root keys, and a 100 000-byte image.
    fn release_setup(release_threshold: u8) -> Self {
        let env = Env::new();
        for k in ["r1", "r2", "k1", "k2"] {
            env.keygen(k);
        }
        env.ok(&[
            "root",
            "init",
            "-m",
            "2",
            "--out",
            "root.sgl",
            "r1.pub.pem",
            "r2.pub.pem",
        ]);
        let t = release_threshold.to_string();
        env.ok(&[
            "keyset",
            "create",
            "-m",
            &t,
            "--key-set-version",
            "3",
            "--product",
            "acme/pump",
            "--out",
            "ks.sgl",
            "k1.pub.pem",
            "k2.pub.pem",
        ]);
        env.ok(&[
            "keyset", "sign", "ks.sgl", "--key", "r1.pem", "--key", "r2.pem", "--root", "root.sgl",
        ]);
        env.write("app.bin", &image(100_000));
        env
    }

    /// Signs app.bin (version 1.2.3, counter 7) into `out` with the given release keys.
    fn sign(&self, out: &str, keys: &[&str], extra: &[&str]) {
        let mut rest = vec!["--out", out];
        for k in keys {
            rest.extend(["--key", k]);
        }
        rest.extend(extra);
        self.ok(&sign_args("ks.sgl", "1.2.3", "7", &rest));
    }

    fn verify_code(&self, bundle: &str, extra: &[&str]) -> Option<i32> {
        let mut args = vec!["verify", bundle, "--root", "root.sgl"];
        args.extend(extra);
        self.sigil(&args).status.code()
    }
}

/// Deterministic pseudo-random image bytes.
fn image(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn inspect_bundle(env: &Env, bundle: &str) -> Value {
    env.json(&["inspect", bundle, "--json"])
}

// ---------------------------------------------------------------------------------------------
// keygen

#[test]
fn keygen_writes_private_key_0600_and_public_key_beside_it() {
    let env = Env::new();
    let out = env.ok(&["keygen", "--out", "release.pem"]);
    assert!(out.contains("key id:"), "{out}");
    let private = String::from_utf8(env.read("release.pem")).unwrap();
    let public = String::from_utf8(env.read("release.pub.pem")).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{private}"
    );
    assert!(
        public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{public}"
    );
    assert_eq!(mode(&env.path("release.pem")), 0o600);
    assert_eq!(mode(&env.path("release.pub.pem")), 0o644);
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(env.dir.path()).unwrap().count(), 2);

    // Inspect reports the same key id for both halves.
    let a = env.json(&["inspect", "release.pem", "--json"]);
    let b = env.json(&["inspect", "release.pub.pem", "--json"]);
    assert_eq!(a["type"], "private_key");
    assert_eq!(b["type"], "public_key");
    assert_eq!(a["key_id"], b["key_id"]);
    assert_eq!(a["key_id"].as_str().unwrap().len(), 64);
}

#[test]
fn keygen_never_overwrites_an_existing_key() {
    let env = Env::new();
    env.keygen("k");
    let before = env.read("k.pem");
    let err = env.fails(1, &["keygen", "--out", "k.pem"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(env.read("k.pem"), before);

    // An existing public key file also stops it, and no private key is left behind.
    env.write("other.pub.pem", b"placeholder");
    env.fails(1, &["keygen", "--out", "other.pem"]);
    assert!(!env.path("other.pem").exists());
    assert_eq!(env.read("other.pub.pem"), b"placeholder");
}

fn openssl(env: &Env, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .current_dir(env.dir.path())
        .args(args)
        .output()
        .expect("the openssl binary is required for the interoperability test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn keys_interoperate_with_openssl_both_ways() {
    let env = Env::new();
    // sigil → openssl: the same public key, byte for byte, and an OpenSSL signature that
    // verifies under sigil's public key file.
    env.keygen("mine");
    let derived = openssl(&env, &["pkey", "-in", "mine.pem", "-pubout"]);
    assert_eq!(derived, env.read("mine.pub.pem"));
    let reencoded = openssl(&env, &["pkey", "-in", "mine.pem"]);
    assert_eq!(
        reencoded,
        env.read("mine.pem"),
        "sigil writes PKCS#8 exactly as OpenSSL does"
    );
    env.write("msg", b"interop");
    openssl(
        &env,
        &[
            "pkeyutl", "-sign", "-inkey", "mine.pem", "-rawin", "-in", "msg", "-out", "msg.sig",
        ],
    );
    openssl(
        &env,
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "mine.pub.pem",
            "-rawin",
            "-in",
            "msg",
            "-sigfile",
            "msg.sig",
        ],
    );

    // openssl → sigil: OpenSSL keys serve as root and release keys of a valid bundle.
    openssl(
        &env,
        &["genpkey", "-algorithm", "ed25519", "-out", "root.pem"],
    );
    openssl(
        &env,
        &["pkey", "-in", "root.pem", "-pubout", "-out", "root.pub.pem"],
    );
    openssl(
        &env,
        &["genpkey", "-algorithm", "ed25519", "-out", "rel.pem"],
    );
    openssl(
        &env,
        &["pkey", "-in", "rel.pem", "-pubout", "-out", "rel.pub.pem"],
    );
    env.ok(&[
        "root",
        "init",
        "-m",
        "1",
        "--out",
        "root.sgl",
        "root.pub.pem",
    ]);
    env.ok(&[
        "keyset",
        "create",
        "-m",
        "1",
        "--key-set-version",
        "1",
        "--out",
        "ks.sgl",
        "rel.pub.pem",
    ]);
    env.ok(&[
        "keyset", "sign", "ks.sgl", "--key", "root.pem", "--root", "root.sgl",
    ]);
    env.write("app.bin", &image(5000));
    env.sign("app.sgl", &["rel.pem"], &[]);
    env.ok(&["verify", "app.sgl", "--root", "root.sgl"]);
    let pub_id = env.json(&["inspect", "rel.pub.pem", "--json"])["key_id"].clone();
    let bundle = inspect_bundle(&env, "app.sgl");
    assert_eq!(bundle["manifest"]["signatures"][0]["key_id"], pub_id);
}

// ---------------------------------------------------------------------------------------------
// root init

#[test]
fn root_init_writes_a_trust_root_and_refuses_bad_thresholds() {
    let env = Env::new();
    env.keygen("r1");
    env.keygen("r2");
    env.fails(
        1,
        &[
            "root",
            "init",
            "-m",
            "3",
            "--out",
            "root.sgl",
            "r1.pub.pem",
            "r2.pub.pem",
        ],
    );
    env.fails(
        1,
        &[
            "root",
            "init",
            "-m",
            "0",
            "--out",
            "root.sgl",
            "r1.pub.pem",
            "r2.pub.pem",
        ],
    );
    let err = env.fails(
        1,
        &[
            "root",
            "init",
            "-m",
            "1",
            "--out",
            "root.sgl",
            "r1.pub.pem",
            "r1.pub.pem",
        ],
    );
    assert!(err.contains("same key twice"), "{err}");
    assert!(!env.path("root.sgl").exists());

    // A private key file works as well as its public half.
    env.ok(&[
        "root",
        "init",
        "-m",
        "2",
        "--out",
        "root.sgl",
        "r1.pub.pem",
        "r2.pem",
    ]);
    assert_eq!(&env.read("root.sgl")[..8], b"SGL-ROOT");
    let root = env.json(&["inspect", "root.sgl", "--json"]);
    assert_eq!(root["type"], "trust_root");
    assert_eq!(root["root"]["threshold"], 2);
    assert_eq!(root["root"]["keys"].as_array().unwrap().len(), 2);
    let r1 = env.json(&["inspect", "r1.pem", "--json"]);
    assert_eq!(root["root"]["keys"][0]["key_id"], r1["key_id"]);
}

#[test]
fn root_init_and_keyset_create_refuse_a_key_with_a_torsion_component() {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
    let env = Env::new();
    env.keygen("r1");
    // A genuine key plus a point of order 8: a key its owner could sign for twice.
    let twin = ed25519_dalek::VerifyingKey::from_bytes(&sigil_test_support::torsion_twin(1))
        .unwrap()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    env.write("twin.pub.pem", twin.as_bytes());
    let err = env.fails(
        1,
        &[
            "root",
            "init",
            "-m",
            "1",
            "--out",
            "root.sgl",
            "r1.pub.pem",
            "twin.pub.pem",
        ],
    );
    assert!(
        err.contains("step 0: a trust root public key is not in the prime-order subgroup"),
        "{err}"
    );
    assert!(!env.path("root.sgl").exists());
    let err = env.fails(
        1,
        &[
            "keyset",
            "create",
            "-m",
            "1",
            "--key-set-version",
            "1",
            "--out",
            "ks.sgl",
            "twin.pub.pem",
        ],
    );
    assert!(
        err.contains("step 5b: a key set public key is not in the prime-order subgroup"),
        "{err}"
    );
}

#[test]
fn existing_outputs_are_not_overwritten_without_force() {
    let env = Env::release_setup(1);
    env.sign("app.sgl", &["k1.pem"], &[]);

    for (file, args) in [
        (
            "root.sgl",
            vec!["root", "init", "-m", "1", "--out", "root.sgl", "r1.pub.pem"],
        ),
        (
            "ks.sgl",
            vec![
                "keyset",
                "create",
                "-m",
                "1",
                "--key-set-version",
                "9",
                "--out",
                "ks.sgl",
                "k1.pub.pem",
            ],
        ),
        (
            "app.sgl",
            sign_args(
                "ks.sgl",
                "2.0.0",
                "8",
                &["--key", "k1.pem", "--out", "app.sgl"],
            ),
        ),
    ] {
        let before = env.read(file);
        let err = env.fails(1, &args);
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(env.read(file), before, "{file} was modified");
        // --force replaces it.
        let mut forced = args.clone();
        forced.push("--force");
        env.ok(&forced);
        assert_ne!(
            env.read(file),
            before,
            "{file} was not replaced with --force"
        );
    }
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

// ---------------------------------------------------------------------------------------------
// keyset

#[test]
fn keyset_sign_refuses_a_key_that_is_not_in_the_root() {
    let env = Env::release_setup(1);
    env.ok(&[
        "keyset",
        "create",
        "-m",
        "1",
        "--key-set-version",
        "4",
        "--out",
        "new.sgl",
        "k1.pub.pem",
    ]);
    let before = env.read("new.sgl");
    let err = env.fails(
        1,
        &[
            "keyset", "sign", "new.sgl", "--key", "k1.pem", "--root", "root.sgl",
        ],
    );
    assert!(err.contains("is not a root key"), "{err}");
    assert_eq!(
        env.read("new.sgl"),
        before,
        "a refused signature must not touch the file"
    );
    // A public key is not a signing key.
    let err = env.fails(1, &["keyset", "sign", "new.sgl", "--key", "r1.pub.pem"]);
    assert!(err.contains("not an ed25519 private key"), "{err}");
}

#[test]
fn root_threshold_is_met_only_after_the_second_keyset_sign() {
    let env = Env::release_setup(1);
    env.ok(&[
        "keyset",
        "create",
        "-m",
        "1",
        "--key-set-version",
        "4",
        "--product",
        "acme/pump",
        "--out",
        "ks.sgl",
        "--force",
        "k1.pub.pem",
    ]);
    let out = env.ok(&[
        "keyset", "sign", "ks.sgl", "--key", "r1.pem", "--root", "root.sgl",
    ]);
    assert!(out.contains("not met yet: 1 of 2"), "{out}");
    let status = env.json(&["inspect", "ks.sgl", "--root", "root.sgl", "--json"]);
    assert_eq!(status["status"], "incomplete");

    // A bundle signed under it does not verify: step 4, the root threshold.
    env.sign("app.sgl", &["k1.pem"], &[]);
    let err = env.fails(SIGNATURE, &["verify", "app.sgl", "--root", "root.sgl"]);
    assert!(
        err.contains("step 4") && err.contains("threshold is 2"),
        "{err}"
    );
    // Signing with --root refuses such a key set up front.
    let err = env.fails(
        1,
        &sign_args(
            "ks.sgl",
            "1.0.0",
            "1",
            &[
                "--key",
                "k1.pem",
                "--root",
                "root.sgl",
                "--out",
                "other.sgl",
            ],
        ),
    );
    assert!(err.contains("not valid under trust root"), "{err}");

    // The second root key holder signs on "another machine" (into a copy via --out).
    let out = env.ok(&[
        "keyset", "sign", "ks.sgl", "--key", "r2.pem", "--root", "root.sgl", "--out", "ks2.sgl",
    ]);
    assert!(out.contains("root threshold met"), "{out}");
    assert_eq!(
        env.json(&["inspect", "ks2.sgl", "--root", "root.sgl", "--json"])["status"],
        "verified"
    );
    assert_eq!(
        env.json(&["inspect", "ks.sgl", "--json"])["key_set"]["signatures"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    fs::rename(env.path("ks2.sgl"), env.path("ks.sgl")).unwrap();
    env.sign("app.sgl", &["k1.pem"], &["--force"]);
    env.ok(&["verify", "app.sgl", "--root", "root.sgl"]);
}

// ---------------------------------------------------------------------------------------------
// sign

#[test]
fn signed_bundle_verifies_and_carries_the_image_unchanged() {
    let env = Env::release_setup(1);
    env.write("notes.md", b"# 1.2.3\nFixes the occlusion alarm.\n");
    env.write("sbom.json", b"{}");
    env.sign(
        "app.sgl",
        &["k1.pem"],
        &[
            "--alignment",
            "65536",
            "--depends",
            "bootloader>=1.4.0",
            "--min-bootloader-version",
            "2",
            "--release-notes",
            "notes.md",
            "--sbom",
            "sbom.json",
            "--expires",
            "2100-01-01T00:00:00Z",
            "--created",
            "1700000000",
        ],
    );
    let out = env.ok(&[
        "verify",
        "app.sgl",
        "--root",
        "root.sgl",
        "--product",
        "acme/pump",
        "--component",
        "app",
    ]);
    assert!(out.starts_with("OK app.sgl: acme/pump app 1.2.3"), "{out}");

    let v = inspect_bundle(&env, "app.sgl");
    let m = &v["manifest"];
    assert_eq!(v["type"], "bundle");
    assert_eq!(v["status"], "unverified");
    assert_eq!(v["verified"], false);
    assert_eq!(v["header"]["payload_offset"], 65536);
    assert_eq!(m["product"]["vendor"], "acme");
    assert_eq!(m["product"]["device"], "pump");
    assert_eq!(m["component"], "app");
    assert_eq!(m["version"], "1.2.3");
    assert_eq!(m["security_counter"], 7);
    assert_eq!(m["payload_size"], 100_000);
    assert_eq!(m["payload_alignment"], 65536);
    assert_eq!(m["min_bootloader_version"], 2);
    assert_eq!(m["dependencies"][0]["component"], "bootloader");
    assert_eq!(m["dependencies"][0]["min_version"], "1.4.0");
    assert_eq!(m["created"], 1_700_000_000u64);
    assert_eq!(m["expires"], 4_102_444_800u64);
    let sha = |bytes: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    assert_eq!(m["payload_sha256"], sha(&image(100_000)));
    assert_eq!(m["release_notes_sha256"], sha(&env.read("notes.md")));
    assert_eq!(m["sbom_sha256"], sha(b"{}"));

    // The payload is the image, byte for byte, at the payload offset; padding is zero.
    let bundle = env.read("app.sgl");
    assert_eq!(bundle.len(), 65536 + 100_000);
    assert_eq!(&bundle[65536..], &image(100_000)[..]);
    let envelope_end = 32 + v["header"]["envelope_len"].as_u64().unwrap() as usize;
    assert!(bundle[envelope_end..65536].iter().all(|&b| b == 0));

    let verified = env.json(&["inspect", "app.sgl", "--root", "root.sgl", "--json"]);
    assert_eq!(verified["status"], "verified");
    let text = env.ok(&["inspect", "app.sgl"]);
    assert!(text.contains("UNVERIFIED"), "{text}");
    let text = env.ok(&["inspect", "app.sgl", "--root", "root.sgl"]);
    assert!(
        text.contains("VERIFIED under the trust root") && !text.contains("UNVERIFIED"),
        "{text}"
    );
}

#[test]
fn signing_is_reproducible_with_source_date_epoch() {
    let env = Env::release_setup(1);
    for out in ["a.sgl", "b.sgl"] {
        let a = sign_args("ks.sgl", "1.0.0", "1", &["--key", "k1.pem", "--out", out]);
        let out = env.sigil_env(&[("SOURCE_DATE_EPOCH", "1700000000")], &a);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(env.read("a.sgl"), env.read("b.sgl"));
    assert_eq!(
        inspect_bundle(&env, "a.sgl")["manifest"]["created"],
        1_700_000_000u64
    );
}

#[test]
fn sign_refuses_keys_outside_the_key_set_and_products_outside_its_scope() {
    let env = Env::release_setup(1);
    let base = [
        "sign",
        "app.bin",
        "--key-set",
        "ks.sgl",
        "--component",
        "app",
        "--version",
        "1.0.0",
        "--security-counter",
        "1",
        "--out",
        "x.sgl",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let err = env.fails(1, &with(&["--key", "r1.pem", "--product", "acme/pump"]));
    assert!(err.contains("is not a release key"), "{err}");
    let err = env.fails(1, &with(&["--key", "k1.pem", "--product", "acme/other"]));
    assert!(err.contains("limited to product acme/pump"), "{err}");
    let err = env.fails(
        1,
        &with(&[
            "--key",
            "k1.pem",
            "--key",
            "k1.pem",
            "--product",
            "acme/pump",
        ]),
    );
    assert!(err.contains("given twice"), "{err}");
    env.write("empty.bin", b"");
    let mut empty = with(&["--key", "k1.pem", "--product", "acme/pump"]);
    empty[1] = "empty.bin";
    let err = env.fails(1, &empty);
    assert!(err.contains("is empty"), "{err}");
    assert!(!env.path("x.sgl").exists());

    // Invalid metadata is a usage error (exit 2), caught before anything is read.
    env.fails(2, &with(&["--key", "k1.pem", "--product", "acme"]));
    env.fails(
        2,
        &with(&[
            "--key",
            "k1.pem",
            "--product",
            "acme/pump",
            "--depends",
            "bootloader",
        ]),
    );
    let mut bad_version = with(&["--key", "k1.pem", "--product", "acme/pump"]);
    bad_version[6] = "1.0";
    env.fails(2, &bad_version);
    env.fails(
        1,
        &with(&[
            "--key",
            "k1.pem",
            "--product",
            "acme/pump",
            "--alignment",
            "3000",
        ]),
    );
}

#[test]
fn release_threshold_is_met_after_sign_add_on_another_machine() {
    let env = Env::release_setup(2);
    let out = env.ok(&sign_args(
        "ks.sgl",
        "1.2.3",
        "7",
        &["--key", "k1.pem", "--root", "root.sgl", "--out", "app.sgl"],
    ));
    assert!(out.contains("not met yet: 1 of 2"), "{out}");
    let err = env.fails(SIGNATURE, &["verify", "app.sgl", "--root", "root.sgl"]);
    assert!(
        err.contains("step 6") && err.contains("threshold is 2"),
        "{err}"
    );

    // The same key again does not count twice.
    env.ok(&[
        "sign", "add", "app.sgl", "--key", "k1.pem", "--out", "same.sgl",
    ]);
    assert_eq!(env.verify_code("same.sgl", &[]), Some(SIGNATURE));

    // A key outside the key set is refused and the bundle left alone.
    let before = env.read("app.sgl");
    let err = env.fails(1, &["sign", "add", "app.sgl", "--key", "r1.pem"]);
    assert!(err.contains("is not a release key"), "{err}");
    assert_eq!(env.read("app.sgl"), before);

    // The second holder adds a signature in place.
    let out = env.ok(&[
        "sign", "add", "app.sgl", "--key", "k2.pem", "--root", "root.sgl",
    ]);
    assert!(
        out.contains("signatures verify under the trust root"),
        "{out}"
    );
    env.ok(&["verify", "app.sgl", "--root", "root.sgl"]);
    let v = inspect_bundle(&env, "app.sgl");
    assert_eq!(v["manifest"]["signatures"].as_array().unwrap().len(), 2);
    let bundle = env.read("app.sgl");
    assert_eq!(&bundle[bundle.len() - 100_000..], &image(100_000)[..]);

    // --add on something that is not a bundle is a malformed-bundle error.
    env.fails(
        MALFORMED,
        &[
            "sign", "add", "app.bin", "--key", "k2.pem", "--out", "y.sgl",
        ],
    );
}

/// The key id `sigil` prints for a key file, from `sigil inspect --json`.
fn key_id_of(env: &Env, key: &str) -> String {
    env.json(&["inspect", key, "--json"])["key_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

#[test]
fn sign_add_with_a_key_that_already_signed_says_so_and_leaves_the_file_alone() {
    let env = Env::release_setup(2);
    env.sign("app.sgl", &["k1.pem"], &[]);
    let before = env.read("app.sgl");
    let ino = inode(&env.path("app.sgl"));
    let k1 = key_id_of(&env, "k1.pem");

    // Exit 0: the bundle carries this key's signature, which is what was asked.
    let out = env.ok(&["sign", "add", "app.sgl", "--key", "k1.pem"]);
    let headline = out.lines().next().unwrap();
    assert_eq!(
        headline,
        format!("bundle app.sgl: key {k1} already signed this release; file unchanged"),
        "{out}"
    );
    assert!(!out.contains("added"), "{out}");
    assert!(
        out.contains("release signatures: 1 (key set threshold 2)"),
        "{out}"
    );
    assert_eq!(env.read("app.sgl"), before);
    assert_eq!(inode(&env.path("app.sgl")), ino, "the file was rewritten");

    // A new key and a repeated one: each is reported for what happened to it.
    let k2 = key_id_of(&env, "k2.pem");
    let out = env.ok(&[
        "sign", "add", "app.sgl", "--key", "k1.pem", "--key", "k2.pem", "--root", "root.sgl",
    ]);
    assert!(out.contains("added 1 release signature(s)"), "{out}");
    assert!(
        out.contains(&format!("added signature by key {k2}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("key {k1} already signed this release: no change")),
        "{out}"
    );
    env.ok(&["verify", "app.sgl", "--root", "root.sgl"]);

    // Both again, into --out: the copy is written, and the output says it is unchanged.
    let out = env.ok(&[
        "sign", "add", "app.sgl", "--key", "k1.pem", "--key", "k2.pem", "--out", "copy.sgl",
    ]);
    assert!(
        out.contains("every key given already signed this release; written unchanged"),
        "{out}"
    );
    assert_eq!(env.read("copy.sgl"), env.read("app.sgl"));
}

#[test]
fn keyset_sign_with_a_key_that_already_signed_says_so_and_leaves_the_file_alone() {
    let env = Env::release_setup(1);
    let before = env.read("ks.sgl");
    let ino = inode(&env.path("ks.sgl"));
    let r1 = key_id_of(&env, "r1.pem");
    let out = env.ok(&["keyset", "sign", "ks.sgl", "--key", "r1.pem"]);
    assert!(
        out.starts_with(&format!(
            "key set ks.sgl: key {r1} already signed this key set; file unchanged\n"
        )),
        "{out}"
    );
    assert_eq!(env.read("ks.sgl"), before);
    assert_eq!(inode(&env.path("ks.sgl")), ino, "the file was rewritten");
}

#[test]
fn sign_add_moves_the_payload_when_the_envelope_grows_past_the_alignment() {
    let env = Env::release_setup(2);
    // Alignment 1: the payload starts right after the envelope, so a second signature (96
    // bytes) shifts it.
    env.sign("app.sgl", &["k1.pem"], &["--alignment", "1"]);
    let before = inspect_bundle(&env, "app.sgl")["header"]["payload_offset"]
        .as_u64()
        .unwrap();
    env.ok(&[
        "sign", "add", "app.sgl", "--key", "k2.pem", "--out", "both.sgl",
    ]);
    let after = inspect_bundle(&env, "both.sgl")["header"]["payload_offset"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 96);
    env.ok(&["verify", "both.sgl", "--root", "root.sgl"]);
    assert_eq!(&env.read("both.sgl")[after as usize..], &image(100_000)[..]);
    // --out does not replace an existing file without --force.
    let err = env.fails(
        1,
        &[
            "sign", "add", "app.sgl", "--key", "k2.pem", "--out", "both.sgl",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// verify: each attack with its exit code

#[test]
fn verify_rejects_attacks_with_distinct_exit_codes() {
    let env = Env::release_setup(1);
    env.sign("app.sgl", &["k1.pem"], &[]);
    env.ok(&["verify", "app.sgl", "--root", "root.sgl"]);
    let bundle = env.read("app.sgl");
    let offset = inspect_bundle(&env, "app.sgl")["header"]["payload_offset"]
        .as_u64()
        .unwrap() as usize;

    // tampered-payload
    let mut tampered = bundle.clone();
    tampered[offset + 500] ^= 1;
    env.write("tampered-payload.sgl", &tampered);
    let err = env.fails(
        DIGEST,
        &["verify", "tampered-payload.sgl", "--root", "root.sgl"],
    );
    assert!(
        err.contains("tampered-payload.sgl rejected: step 9: payload digest"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");

    // tampered-signature: the last byte of the envelope is the last byte of a signature.
    let envelope_end = 32
        + inspect_bundle(&env, "app.sgl")["header"]["envelope_len"]
            .as_u64()
            .unwrap() as usize;
    let mut forged = bundle.clone();
    forged[envelope_end - 1] ^= 0x40;
    env.write("forged-signature.sgl", &forged);
    env.fails(
        SIGNATURE,
        &["verify", "forged-signature.sgl", "--root", "root.sgl"],
    );

    // truncated-bundle, trailing-garbage, not-a-bundle
    env.write("truncated.sgl", &bundle[..bundle.len() - 1]);
    let err = env.fails(
        MALFORMED,
        &["verify", "truncated.sgl", "--root", "root.sgl"],
    );
    assert!(err.contains("truncated"), "{err}");
    env.write("header-only.sgl", &bundle[..20]);
    env.fails(
        MALFORMED,
        &["verify", "header-only.sgl", "--root", "root.sgl"],
    );
    let mut trailing = bundle.clone();
    trailing.push(0);
    env.write("trailing-garbage.sgl", &trailing);
    env.fails(
        MALFORMED,
        &["verify", "trailing-garbage.sgl", "--root", "root.sgl"],
    );
    env.fails(MALFORMED, &["verify", "app.bin", "--root", "root.sgl"]);
    env.fails(MALFORMED, &["verify", "ks.sgl", "--root", "root.sgl"]);

    // Device policy.
    let err = env.fails(
        POLICY,
        &[
            "verify",
            "app.sgl",
            "--root",
            "root.sgl",
            "--product",
            "acme/monitor",
        ],
    );
    assert!(err.contains("another product"), "{err}");
    env.fails(
        POLICY,
        &[
            "verify",
            "app.sgl",
            "--root",
            "root.sgl",
            "--component",
            "bootloader",
        ],
    );
    let err = env.fails(
        POLICY,
        &[
            "verify",
            "app.sgl",
            "--root",
            "root.sgl",
            "--min-security-counter",
            "8",
        ],
    );
    assert!(
        err.contains("security counter is below the device minimum (rollback)"),
        "{err}"
    );
    assert_eq!(
        env.verify_code("app.sgl", &["--min-security-counter", "7"]),
        Some(0)
    );
    env.fails(
        POLICY,
        &[
            "verify",
            "app.sgl",
            "--root",
            "root.sgl",
            "--min-key-set-version",
            "4",
        ],
    );
    assert_eq!(
        env.verify_code("app.sgl", &["--min-key-set-version", "3"]),
        Some(0)
    );
    env.fails(
        POLICY,
        &[
            "verify",
            "app.sgl",
            "--root",
            "root.sgl",
            "--max-size",
            "64K",
        ],
    );
    assert_eq!(env.verify_code("app.sgl", &["--max-size", "1M"]), Some(0));

    // A bundle under another trust root: its key set is signed by unknown keys.
    env.keygen("x");
    env.ok(&[
        "root",
        "init",
        "-m",
        "1",
        "--out",
        "other-root.sgl",
        "x.pub.pem",
    ]);
    env.fails(
        SIGNATURE,
        &["verify", "app.sgl", "--root", "other-root.sgl"],
    );

    // Operational errors are 1, usage errors 2.
    env.fails(1, &["verify", "missing.sgl", "--root", "root.sgl"]);
    env.fails(1, &["verify", "app.sgl", "--root", "app.bin"]);
    env.fails(2, &["verify", "app.sgl"]);
    env.fails(2, &["frobnicate"]);
}

#[test]
fn verify_streams_a_bundle_from_standard_input() {
    let env = Env::release_setup(1);
    env.sign("app.sgl", &["k1.pem"], &[]);
    let bundle = env.read("app.sgl");
    let run = |bytes: Vec<u8>| {
        env.command()
            .args([
                "verify",
                "-",
                "--root",
                "root.sgl",
                "--product",
                "acme/pump",
            ])
            .write_stdin(bytes)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(run(bundle.clone()), Some(0));
    assert_eq!(run(bundle[..bundle.len() - 10].to_vec()), Some(MALFORMED));
    let mut tampered = bundle;
    tampered[5000] ^= 4;
    assert_eq!(run(tampered), Some(DIGEST));
}

#[test]
fn verify_expiry_is_checked_against_the_given_time() {
    let env = Env::release_setup(1);
    env.sign(
        "app.sgl",
        &["k1.pem"],
        &["--created", "1700000000", "--expires-in", "30days"],
    );
    assert_eq!(env.verify_code("app.sgl", &["--at", "1700000001"]), Some(0));
    env.fails(
        POLICY,
        &[
            "verify",
            "app.sgl",
            "--root",
            "root.sgl",
            "--at",
            "2030-01-01T00:00:00Z",
        ],
    );
    // Without a trusted time the expiry is not checked (the device may have no clock).
    assert_eq!(env.verify_code("app.sgl", &[]), Some(0));
}

#[test]
fn verify_json_reports_success_and_failure() {
    let env = Env::release_setup(1);
    env.sign("app.sgl", &["k1.pem"], &[]);
    let ok = env.json(&["verify", "app.sgl", "--root", "root.sgl", "--json"]);
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["manifest"]["security_counter"], 7);
    assert_eq!(ok["key_set"]["version"], 3);
    assert_eq!(ok["bundle_size"], 4096 + 100_000);

    let out = env.sigil(&[
        "verify",
        "app.sgl",
        "--root",
        "root.sgl",
        "--json",
        "--product",
        "acme/monitor",
    ]);
    assert_eq!(out.status.code(), Some(POLICY));
    let fail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fail["valid"], false);
    assert_eq!(fail["exit_code"], POLICY);
    assert_eq!(fail["class"], "policy");
    assert!(fail["error"].as_str().unwrap().contains("step 7"));
}

// ---------------------------------------------------------------------------------------------
// inspect

#[test]
fn inspect_with_root_reports_an_invalid_bundle_and_fails() {
    let env = Env::release_setup(1);
    env.sign("app.sgl", &["k1.pem"], &[]);
    let mut bundle = env.read("app.sgl");
    let last = bundle.len() - 1;
    bundle[last] ^= 0xff;
    env.write("tampered.sgl", &bundle);
    // Without a root the tampering is invisible: contents are shown, labelled UNVERIFIED.
    assert_eq!(inspect_bundle(&env, "tampered.sgl")["status"], "unverified");
    let out = env.sigil(&["inspect", "tampered.sgl", "--root", "root.sgl", "--json"]);
    assert_eq!(out.status.code(), Some(DIGEST));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "invalid");
    assert!(v["error"].as_str().unwrap().contains("digest"));

    env.write("random.bin", b"hello");
    let err = env.fails(1, &["inspect", "random.bin"]);
    assert!(
        err.contains(
            "not a Sigil bundle, key set, trust root, key record, content-key file or PEM key"
        ),
        "{err}"
    );
    env.write("short.sgl", b"SGL-BNDL\x01\x00");
    env.fails(MALFORMED, &["inspect", "short.sgl"]);
}

#[test]
fn inspect_key_set_json() {
    let env = Env::release_setup(2);
    let v = env.json(&["inspect", "ks.sgl", "--json"]);
    assert_eq!(v["type"], "key_set");
    assert_eq!(v["status"], "unverified");
    assert_eq!(v["key_set"]["version"], 3);
    assert_eq!(v["key_set"]["threshold"], 2);
    assert_eq!(v["key_set"]["product_scope"]["vendor"], "acme");
    assert_eq!(v["key_set"]["keys"].as_array().unwrap().len(), 2);
    assert_eq!(v["key_set"]["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(
        env.json(&["inspect", "ks.sgl", "--json", "--root", "root.sgl"])["status"],
        "verified"
    );
}

// ---------------------------------------------------------------------------------------------
// completions and man page

#[test]
fn completions_and_man_page_are_generated() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.ok(&["completions", shell]);
        assert!(out.len() > 1000 && out.contains("keyset"), "{shell}: {out}");
    }
    env.fails(2, &["completions", "tcsh"]);
    let man = env.ok(&["man"]);
    assert!(man.contains(".TH sigil"), "{man}");
    assert!(man.contains("keygen") && man.contains("verify"));
    env.ok(&["man", "--out-dir", "."]);
    assert!(env.path("sigil.1").exists());
    assert!(env.path("sigil-sign.1").exists());

    let help = env.ok(&["--help"]);
    assert!(
        help.contains("Exit codes:") && help.contains("6  payload digest mismatch"),
        "{help}"
    );
}

// root rotation: root 1 -> 2 -> 3, ceremonies one key per run, releases under root 3

/// Root `n` from keys `rN_a`, `rN_b` (threshold 2), rotated from root `n - 1` and signed by
/// both thresholds, one holder per run as on separate machines; the update is `up{n}.sgl`.
fn rotate_to(env: &Env, n: u32) {
    let (prev, next) = (n - 1, n);
    for k in ["a", "b"] {
        env.keygen(&format!("r{next}_{k}"));
    }
    let from = if prev == 1 {
        "root.sgl".to_owned()
    } else {
        format!("root{prev}.sgl")
    };
    let out = env.ok(&[
        "root",
        "rotate",
        "--from",
        &from,
        "-m",
        "2",
        "--out",
        &format!("up{next}.sgl"),
        "--root-out",
        &format!("root{next}.sgl"),
        &format!("r{next}_a.pub.pem"),
        &format!("r{next}_b.pub.pem"),
    ]);
    assert!(out.contains(&format!("root {prev} -> {next}")), "{out}");
    let prev_keys = if prev == 1 {
        ["r1.pem".to_owned(), "r2.pem".to_owned()]
    } else {
        [format!("r{prev}_a.pem"), format!("r{prev}_b.pem")]
    };
    let next_keys = [format!("r{next}_a.pem"), format!("r{next}_b.pem")];
    for key in prev_keys.iter().chain(&next_keys) {
        env.ok(&[
            "root",
            "sign",
            &format!("up{next}.sgl"),
            "--previous",
            &from,
            "--key",
            key,
        ]);
    }
    let last = env.ok(&[
        "root",
        "sign",
        &format!("up{next}.sgl"),
        "--previous",
        &from,
        "--key",
        &next_keys[1],
    ]);
    assert!(last.contains("already signed"), "{last}");
    assert!(
        last.contains(&format!(
            "root {prev} threshold: met; root {next} threshold: met"
        )),
        "{last}"
    );
}

#[test]
fn a_release_under_root_3_verifies_on_root_1_through_the_chain() {
    let env = Env::release_setup(1);
    rotate_to(&env, 2);
    rotate_to(&env, 3);
    let out = env.ok(&[
        "root",
        "chain",
        "--root",
        "root.sgl",
        "--out",
        "chain.sgl",
        "up2.sgl",
        "up3.sgl",
    ]);
    assert!(out.contains("root 1 -> 3 (2 update(s))"), "{out}");
    // A key set under root 3, signed by root 3's keys.
    env.ok(&[
        "keyset",
        "create",
        "-m",
        "1",
        "--key-set-version",
        "4",
        "--root-version",
        "3",
        "--out",
        "ks3.sgl",
        "k1.pub.pem",
    ]);
    env.ok(&[
        "keyset",
        "sign",
        "ks3.sgl",
        "--key",
        "r3_a.pem",
        "--key",
        "r3_b.pem",
        "--root",
        "root3.sgl",
    ]);
    let signed = env.ok(&sign_args(
        "ks3.sgl",
        "2.0.0",
        "2",
        &[
            "--key",
            "k1.pem",
            "--root",
            "root.sgl",
            "--root-chain",
            "chain.sgl",
            "--out",
            "app3.sgl",
        ],
    ));
    assert!(
        signed.contains("signatures verify under the trust root"),
        "{signed}"
    );
    // A device provisioned with root 1 verifies it; so does one provisioned with root 3.
    env.ok(&["verify", "app3.sgl", "--root", "root.sgl"]);
    env.ok(&["verify", "app3.sgl", "--root", "root3.sgl"]);
    // Inspect shows the chain.
    let text = env.ok(&["inspect", "app3.sgl", "--root", "root.sgl"]);
    assert!(text.contains("VERIFIED"), "{text}");
    assert!(
        text.contains("-> root 2") && text.contains("-> root 3"),
        "{text}"
    );
    assert!(text.contains("signed under root:  version 3"), "{text}");
    let v = env.json(&["inspect", "app3.sgl", "--json"]);
    assert_eq!(v["root_chain"][1]["root_version"], 3);
    assert_eq!(v["root_chain"][1]["signatures_by_previous"], 2);
    let chain = env.ok(&["inspect", "chain.sgl", "--root", "root.sgl"]);
    assert!(
        chain.contains("VERIFIED from the trust root to root 3"),
        "{chain}"
    );
    // Co-signing keeps the chain.
    env.ok(&[
        "sign",
        "add",
        "app3.sgl",
        "--key",
        "k1.pem",
        "--out",
        "app3b.sgl",
    ]);
    env.ok(&["verify", "app3b.sgl", "--root", "root.sgl"]);
    // The old release (root 1's key set, no chain) is refused under root 3: root 1's keys
    // may not sign there (the signature class).
    env.sign("old.sgl", &["k1.pem"], &[]);
    let err = env.fails(SIGNATURE, &["verify", "old.sgl", "--root", "root3.sgl"]);
    assert!(err.contains("step 4"), "{err}");
}

#[test]
fn root_ceremony_errors_are_clear() {
    let env = Env::release_setup(1);
    rotate_to(&env, 2);
    // A key of neither root.
    let err = env.fails(
        1,
        &[
            "root",
            "sign",
            "up2.sgl",
            "--previous",
            "root.sgl",
            "--key",
            "k1.pem",
        ],
    );
    assert!(err.contains("key of neither root 1 nor root 2"), "{err}");
    // The wrong previous root.
    let err = env.fails(
        1,
        &[
            "root",
            "sign",
            "up2.sgl",
            "--previous",
            "root2.sgl",
            "--key",
            "r1.pem",
        ],
    );
    assert!(err.contains("not for the root after 2"), "{err}");
    // An update signed by only the new threshold does not chain.
    env.ok(&[
        "root",
        "rotate",
        "--from",
        "root.sgl",
        "-m",
        "1",
        "--out",
        "half.sgl",
        "k2.pub.pem",
    ]);
    env.ok(&[
        "root",
        "sign",
        "half.sgl",
        "--previous",
        "root.sgl",
        "--key",
        "k2.pem",
    ]);
    let err = env.fails(
        1,
        &[
            "root", "chain", "--root", "root.sgl", "--out", "c.sgl", "half.sgl",
        ],
    );
    assert!(err.contains("step R3"), "{err}");
    assert!(!env.path("c.sgl").exists());
}

// ---------------------------------------------------------------------------------------------
// encrypted releases (FORMAT.md §9)

const DECRYPTION: i32 = 7;

impl Env {
    /// `release_setup(1)` plus X25519 device keys d1, d2, d3.
    fn encryption_setup() -> Self {
        let env = Env::release_setup(1);
        for d in ["d1", "d2", "d3"] {
            env.ok(&["keygen", "--x25519", "--out", &format!("{d}.pem")]);
        }
        env
    }

    /// The recipient id `sigil inspect` reports for a device key file.
    fn recipient_id(&self, key: &str) -> String {
        let v = self.json(&["inspect", key, "--json"]);
        assert_eq!(v["algorithm"], "x25519", "{v}");
        v["keys"][0]["recipient_id"].as_str().unwrap().to_owned()
    }

    /// The key record of `device` beside `bundle`.
    fn record(&self, bundle: &str, device: &str) -> String {
        format!("{bundle}.wkeys/{}.wkey", self.recipient_id(device))
    }

    /// `sigil decrypt` of `bundle` with `key` and `record` into `out`: the exit code.
    fn decrypt(&self, bundle: &str, key: &str, record: &str, out: &str) -> Output {
        self.sigil(&[
            "decrypt",
            bundle,
            "--root",
            "root.sgl",
            "--device-key",
            key,
            "--key-record",
            record,
            "--out",
            out,
        ])
    }
}

use std::process::Output;

#[test]
fn encrypted_release_round_trip_for_each_recipient() {
    let env = Env::encryption_setup();
    let out = env.ok(&sign_args(
        "ks.sgl",
        "1.2.3",
        "7",
        &[
            "--key",
            "k1.pem",
            "--out",
            "app.sgl",
            "--encrypt-to",
            "d1.pub.pem",
            "--encrypt-to",
            "d2.pub.pem",
            "--content-key",
            "app.cek",
        ],
    ));
    assert!(
        out.contains("encrypted (chacha20) for 2 device(s)"),
        "{out}"
    );
    assert_eq!(mode(&env.path("app.cek")), 0o600);
    // The bundle verifies with no key at all (server, mirrors): signatures and ciphertext.
    assert_eq!(env.verify_code("app.sgl", &[]), Some(0));
    // It holds no plaintext: no 64-byte run of the image appears in it.
    let bundle = env.read("app.sgl");
    let plain = image(100_000);
    assert!(!bundle.windows(64).any(|w| w == &plain[5000..5064]));
    // Inspect shows the encryption without decrypting; the records name their devices.
    let v = inspect_bundle(&env, "app.sgl");
    let m = &v["manifest"];
    assert_eq!(m["payload_format"], "encrypted (chacha20)");
    assert_eq!(m["encryption"]["cipher"], "chacha20");
    assert_eq!(
        m["encryption"]["key_commitment"].as_str().unwrap().len(),
        64
    );
    let record = env.record("app.sgl", "d1.pem");
    let r = env.json(&["inspect", &record, "--json"]);
    assert_eq!(r["type"], "key_record");
    assert_eq!(
        r["recipient_id"].as_str().unwrap(),
        env.recipient_id("d1.pem")
    );
    let ck = env.json(&["inspect", "app.cek", "--json"]);
    assert_eq!(ck["type"], "content_key");
    assert_eq!(ck["plaintext_sha256"], m["encryption"]["plaintext_sha256"]);
    assert!(
        !ck.to_string().contains("\"key\""),
        "the key is never shown: {ck}"
    );
    // Each recipient decrypts to the exact image.
    for d in ["d1", "d2"] {
        let key = format!("{d}.pem");
        let dest = format!("{d}.bin");
        let out = env.decrypt("app.sgl", &key, &env.record("app.sgl", &key), &dest);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(env.read(&dest), plain);
        assert_eq!(mode(&env.path(&dest)), 0o600);
    }
}

#[test]
fn wrong_device_key_or_foreign_record_is_refused_before_writing() {
    let env = Env::encryption_setup();
    let sign = |out: &str, cek: &str, version: &str| {
        env.ok(&sign_args(
            "ks.sgl",
            version,
            "7",
            &[
                "--key",
                "k1.pem",
                "--out",
                out,
                "--encrypt-to",
                "d1.pub.pem",
                "--encrypt-to",
                "d2.pub.pem",
                "--content-key",
                cek,
            ],
        ));
    };
    sign("app.sgl", "app.cek", "1.2.3");
    let d1 = env.record("app.sgl", "d1.pem");
    let d2 = env.record("app.sgl", "d2.pem");
    let refused = |key: &str, record: &str, step: &str| {
        let out = env.decrypt("app.sgl", key, record, "out.bin");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(DECRYPTION), "{err}");
        assert!(err.contains(step), "{err}");
        assert!(!env.path("out.bin").exists(), "nothing is written");
    };
    // Device 3 is no recipient: its key does not open device 1's record.
    refused("d3.pem", &d1, "step D2");
    // Device 1 with device 2's record.
    refused("d1.pem", &d2, "step D2");
    // A record relabelled for device 1 yields a key the commitment refuses.
    let mut relabelled = env.read(&d2);
    let id = hex::decode(env.recipient_id("d1.pem")).unwrap();
    relabelled[10..42].copy_from_slice(&id);
    env.write("relabelled.wkey", &relabelled);
    refused("d1.pem", "relabelled.wkey", "step D4");
    // A tampered wrapped key, likewise.
    let mut tampered = env.read(&d1);
    tampered[137] ^= 1;
    env.write("tampered.wkey", &tampered);
    refused("d1.pem", "tampered.wkey", "step D4");
    // The record of another release for the same device.
    env.write("app.bin", &image(50_000));
    sign("next.sgl", "next.cek", "1.2.4");
    refused(
        "d1.pem",
        &env.record("next.sgl", "d1.pem"),
        "another release",
    );
    // A truncated record.
    env.write("short.wkey", &env.read(&d1)[..100]);
    refused("d1.pem", "short.wkey", "step D1");
}

#[test]
fn a_content_key_file_encrypts_one_image_only() {
    let env = Env::encryption_setup();
    let args = |out: &'static str| {
        sign_args(
            "ks.sgl",
            "1.2.3",
            "7",
            &[
                "--key",
                "k1.pem",
                "--out",
                out,
                "--encrypt-to",
                "d1.pub.pem",
                "--content-key",
                "app.cek",
            ],
        )
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let run = |out: &'static str| {
        let a = args(out);
        env.sigil(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(run("a.sgl").status.success());
    // The same image again with the same file: the same ciphertext (nothing new revealed).
    let out = run("b.sgl");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("reused, same image"));
    let digest = |b: &str| inspect_bundle(&env, b)["manifest"]["payload_sha256"].clone();
    assert_eq!(digest("a.sgl"), digest("b.sgl"));
    // Another image with the same file: refused, nothing written.
    env.write("app.bin", &image(100_001));
    let out = run("c.sgl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("keystream reuse"), "{err}");
    assert!(!env.path("c.sgl").exists());
    // Encrypting without a content-key file is refused up front.
    let err = env.fails(
        1,
        &sign_args(
            "ks.sgl",
            "1.2.3",
            "7",
            &[
                "--key",
                "k1.pem",
                "--out",
                "d.sgl",
                "--encrypt-to",
                "d1.pub.pem",
            ],
        ),
    );
    assert!(err.contains("--content-key"), "{err}");
    // And a content-key file without recipients (nothing would be encrypted).
    let err = env.fails(
        1,
        &sign_args(
            "ks.sgl",
            "1.2.3",
            "7",
            &[
                "--key",
                "k1.pem",
                "--out",
                "e.sgl",
                "--content-key",
                "e.cek",
            ],
        ),
    );
    assert!(err.contains("no recipients"), "{err}");
    assert!(!env.path("e.sgl").exists() && !env.path("e.cek").exists());
}

#[test]
fn add_recipient_wraps_the_key_for_a_newly_enrolled_device() {
    let env = Env::encryption_setup();
    // The recipients file: public keys concatenated.
    let mut fleet = env.read("d1.pub.pem");
    fleet.extend(env.read("d2.pub.pem"));
    env.write("fleet.pub.pem", &fleet);
    env.ok(&sign_args(
        "ks.sgl",
        "1.2.3",
        "7",
        &[
            "--key",
            "k1.pem",
            "--out",
            "app.sgl",
            "--recipients",
            "fleet.pub.pem",
            "--content-key",
            "app.cek",
        ],
    ));
    assert_eq!(fs::read_dir(env.path("app.sgl.wkeys")).unwrap().count(), 2);
    let before = env.read("app.sgl");
    let out = env.ok(&[
        "encrypt",
        "add-recipient",
        "app.sgl",
        "--content-key",
        "app.cek",
        "--encrypt-to",
        "d3.pub.pem",
    ]);
    assert!(out.contains("1 key record(s)"), "{out}");
    assert_eq!(env.read("app.sgl"), before, "the bundle is not touched");
    let d3 = env.record("app.sgl", "d3.pem");
    let out = env.decrypt("app.sgl", "d3.pem", &d3, "d3.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.read("d3.bin"), image(100_000));
    // Another release's content-key file does not fit this bundle.
    env.write("app.bin", &image(10_000));
    env.ok(&sign_args(
        "ks.sgl",
        "1.2.4",
        "7",
        &[
            "--key",
            "k1.pem",
            "--out",
            "other.sgl",
            "--encrypt-to",
            "d1.pub.pem",
            "--content-key",
            "other.cek",
        ],
    ));
    let err = env.fails(
        DECRYPTION,
        &[
            "encrypt",
            "add-recipient",
            "app.sgl",
            "--content-key",
            "other.cek",
            "--encrypt-to",
            "d3.pub.pem",
        ],
    );
    assert!(err.contains("does not belong to bundle"), "{err}");
    // A raw bundle has no content key.
    env.sign("raw.sgl", &["k1.pem"], &[]);
    let err = env.fails(
        1,
        &[
            "encrypt",
            "add-recipient",
            "raw.sgl",
            "--content-key",
            "app.cek",
            "--encrypt-to",
            "d3.pub.pem",
        ],
    );
    assert!(err.contains("not encrypted"), "{err}");
}

#[test]
fn x25519_keys_interoperate_with_openssl_both_ways() {
    let env = Env::new();
    // sigil → openssl: the same public key and private key encoding, byte for byte.
    env.ok(&["keygen", "--x25519", "--out", "dev.pem"]);
    assert_eq!(mode(&env.path("dev.pem")), 0o600);
    assert_eq!(
        openssl(&env, &["pkey", "-in", "dev.pem", "-pubout"]),
        env.read("dev.pub.pem")
    );
    assert_eq!(
        openssl(&env, &["pkey", "-in", "dev.pem"]),
        env.read("dev.pem")
    );
    let text = String::from_utf8(openssl(
        &env,
        &["pkey", "-in", "dev.pem", "-noout", "-text"],
    ))
    .unwrap();
    assert!(text.contains("X25519"), "{text}");
    // openssl → sigil: an OpenSSL X25519 key pair is a recipient, and its private key opens
    // the record (the scalar means the same to both).
    openssl(&env, &["genpkey", "-algorithm", "x25519", "-out", "o.pem"]);
    openssl(
        &env,
        &["pkey", "-in", "o.pem", "-pubout", "-out", "o.pub.pem"],
    );
    let setup = Env::encryption_setup();
    setup.write("o.pem", &env.read("o.pem"));
    setup.write("o.pub.pem", &env.read("o.pub.pem"));
    setup.ok(&sign_args(
        "ks.sgl",
        "1.2.3",
        "7",
        &[
            "--key",
            "k1.pem",
            "--out",
            "app.sgl",
            "--encrypt-to",
            "o.pub.pem",
            "--content-key",
            "app.cek",
        ],
    ));
    let record = setup.record("app.sgl", "o.pem");
    let out = setup.decrypt("app.sgl", "o.pem", &record, "o.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(setup.read("o.bin"), image(100_000));
    // An ed25519 key is not a device encryption key.
    let err = setup.fails(
        1,
        &sign_args(
            "ks.sgl",
            "1.2.3",
            "7",
            &[
                "--key",
                "k1.pem",
                "--out",
                "x.sgl",
                "--encrypt-to",
                "k2.pub.pem",
                "--content-key",
                "x.cek",
            ],
        ),
    );
    assert!(err.contains("is not an X25519 public key"), "{err}");
}
