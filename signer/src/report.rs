//! Human-readable and JSON views of decoded documents, shared by `verify` and `inspect`.

use std::fmt::Write as _;

use serde_json::{json, Value};
use sigil_manifests::{KeySet, Manifest, SignatureAdded, SignatureEntry, TrustRoot};

use crate::keyfile::key_id_hex;

fn time_text(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs));
    match t {
        Some(t) => format!("{} ({secs})", humantime::format_rfc3339_seconds(t)),
        None => secs.to_string(),
    }
}

fn opt_hex(d: &Option<[u8; 32]>) -> Value {
    d.map_or(Value::Null, |d| Value::String(hex::encode(d)))
}

/// The manifest as JSON.
pub fn manifest_json(m: &Manifest<'_>) -> Value {
    json!({
        "product": { "vendor": m.product.vendor, "device": m.product.device },
        "component": m.component,
        "version": m.version.to_string(),
        "security_counter": m.security_counter,
        "payload_size": m.payload_size,
        "payload_sha256": hex::encode(m.payload_digest),
        "payload_format": m.payload_format.to_string(),
        "encryption": m.payload_format.encryption().map(|e| json!({
            "cipher": e.cipher.to_string(),
            "plaintext_sha256": hex::encode(e.plaintext_digest),
            "key_commitment": hex::encode(e.key_commitment),
        })),
        "payload_alignment": m.payload_alignment,
        "min_bootloader_version": m.min_bootloader_version,
        "dependencies": m.dependencies.iter().map(|d| json!({
            "component": d.component,
            "min_version": d.min_version.to_string(),
        })).collect::<Vec<_>>(),
        "created": m.created,
        "expires": m.expires,
        "release_notes_sha256": opt_hex(&m.release_notes_digest),
        "sbom_sha256": opt_hex(&m.sbom_digest),
    })
}

/// The manifest as indented text lines.
pub fn manifest_text(m: &Manifest<'_>) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "  product:            {}", m.product);
    let _ = writeln!(s, "  component:          {}", m.component);
    let _ = writeln!(s, "  version:            {}", m.version);
    let _ = writeln!(s, "  security counter:   {}", m.security_counter);
    let _ = writeln!(
        s,
        "  payload:            {} bytes, {}, aligned to {}",
        m.payload_size, m.payload_format, m.payload_alignment
    );
    let _ = writeln!(s, "  payload sha256:     {}", hex::encode(m.payload_digest));
    if let Some(e) = m.payload_format.encryption() {
        let _ = writeln!(
            s,
            "  plaintext sha256:   {} (the image once decrypted)",
            hex::encode(e.plaintext_digest)
        );
        let _ = writeln!(s, "  key commitment:     {}", hex::encode(e.key_commitment));
    }
    if let Some(v) = m.min_bootloader_version {
        let _ = writeln!(s, "  min bootloader:     {v}");
    }
    for d in &m.dependencies {
        let _ = writeln!(
            s,
            "  requires:           {} >= {}",
            d.component, d.min_version
        );
    }
    let _ = writeln!(s, "  created:            {}", time_text(m.created));
    match m.expires {
        Some(e) => {
            let _ = writeln!(s, "  expires:            {}", time_text(e));
        }
        None => {
            let _ = writeln!(s, "  expires:            never");
        }
    }
    if let Some(d) = m.release_notes_digest {
        let _ = writeln!(s, "  release notes sha256: {}", hex::encode(d));
    }
    if let Some(d) = m.sbom_digest {
        let _ = writeln!(s, "  SBOM sha256:        {}", hex::encode(d));
    }
    s
}

/// The key set as JSON (signatures separately).
pub fn key_set_json(k: &KeySet<'_>) -> Value {
    json!({
        "version": k.version,
        "root_version": k.root_version,
        "threshold": k.threshold,
        "product_scope": k.product_scope.map(|p| json!({ "vendor": p.vendor, "device": p.device })),
        "keys": k.keys.iter().map(|key| json!({
            "key_id": key_id_hex(key),
            "public_key": hex::encode(key),
        })).collect::<Vec<_>>(),
    })
}

/// The key set as indented text lines.
pub fn key_set_text(k: &KeySet<'_>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "  version:            {}", k.version);
    let _ = match k.root_version {
        Some(v) => writeln!(s, "  signed under root:  version {v}"),
        None => writeln!(
            s,
            "  signed under root:  the provisioned root (format version 1)"
        ),
    };
    let _ = writeln!(
        s,
        "  threshold:          {} of {} release keys",
        k.threshold,
        k.keys.len()
    );
    match &k.product_scope {
        Some(p) => {
            let _ = writeln!(s, "  product scope:      {p}");
        }
        None => {
            let _ = writeln!(s, "  product scope:      any product");
        }
    }
    for key in k.keys {
        let _ = writeln!(s, "  release key:        {}", key_id_hex(key));
    }
    s
}

/// The trust root as JSON.
pub fn root_json(r: &TrustRoot) -> Value {
    json!({
        "root_version": r.root_version,
        "threshold": r.threshold,
        "keys": r.keys.iter().map(|key| json!({
            "key_id": key_id_hex(key),
            "public_key": hex::encode(key),
        })).collect::<Vec<_>>(),
    })
}

/// What adding signatures to one document did: per key, in the order given.
#[derive(Debug, Default)]
pub struct Additions {
    /// (hex key id, outcome).
    pub keys: Vec<(String, SignatureAdded)>,
}

impl Additions {
    /// Records what adding the signature of `key_id` did.
    pub fn record(&mut self, key_id: String, outcome: SignatureAdded) {
        self.keys.push((key_id, outcome));
    }

    /// Whether any signature was added or replaced (the document's bytes changed).
    pub fn changed(&self) -> bool {
        self.keys
            .iter()
            .any(|(_, o)| *o != SignatureAdded::Unchanged)
    }

    fn count(&self, outcome: SignatureAdded) -> usize {
        self.keys.iter().filter(|(_, o)| *o == outcome).count()
    }

    /// The report of a signing command: the headline, what happened to `what` (e.g. "bundle
    /// app.sgl"), whose signatures are `kind` ("release", "root") over `over` ("this release",
    /// "this key set"), then one line per key given. Ends with a newline.
    pub fn summary(&self, what: &str, kind: &str, over: &str, written: bool) -> String {
        let mut s = self.headline(what, kind, over, written);
        s.push('\n');
        s.push_str(&self.lines(over));
        s
    }

    fn headline(&self, what: &str, kind: &str, over: &str, written: bool) -> String {
        let (new, replaced) = (
            self.count(SignatureAdded::New),
            self.count(SignatureAdded::Replaced),
        );
        if !self.changed() {
            let who = match &self.keys[..] {
                [(id, _)] => format!("key {id} already signed {over}"),
                _ => format!("every key given already signed {over}"),
            };
            let file = if written {
                "written unchanged"
            } else {
                "file unchanged"
            };
            return format!("{what}: {who}; {file}");
        }
        let mut line = format!("{what}: added {new} {kind} signature(s)");
        if replaced > 0 {
            line.push_str(&format!(", replaced {replaced} that differed"));
        }
        line
    }

    fn lines(&self, over: &str) -> String {
        let mut s = String::new();
        for (id, outcome) in &self.keys {
            let _ = match outcome {
                SignatureAdded::New => writeln!(s, "  added signature by key {id}"),
                SignatureAdded::Replaced => writeln!(
                    s,
                    "  replaced the signature by key {id} (the old entry did not match)"
                ),
                SignatureAdded::Unchanged => {
                    writeln!(s, "  key {id} already signed {over}: no change")
                }
            };
        }
        s
    }
}

/// The key ids of a signature list as JSON.
pub fn signatures_json(sigs: &[SignatureEntry]) -> Value {
    Value::Array(
        sigs.iter()
            .map(|e| json!({ "key_id": hex::encode(e.key_id) }))
            .collect(),
    )
}

/// A root chain as JSON: per update, the new root's version, keys, threshold and the counts of
/// signatures by the previous and the new root (unverified unless the caller says otherwise).
pub fn chain_json(chain: &[u8]) -> Value {
    let updates: Vec<Value> = sigil_manifests::RootChainView::parse(chain)
        .map(|c| {
            c.updates()
                .map(|u| {
                    let root = sigil_manifests::TrustRootRef::decode(u.root);
                    json!({
                        "root_version": u.version().ok(),
                        "threshold": root.as_ref().ok().map(|r| r.threshold),
                        "keys": root.as_ref().map(|r| r.keys.iter().map(key_id_hex).collect::<Vec<_>>()).unwrap_or_default(),
                        "signatures_by_previous": u.by_previous.len(),
                        "signatures_by_new": u.by_new.len(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!(updates)
}

/// A root chain as indented text lines.
pub fn chain_text(chain: &[u8]) -> String {
    let mut s = String::new();
    let view = match sigil_manifests::RootChainView::parse(chain) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(s, "  root chain:         invalid ({e})");
            return s;
        }
    };
    for u in view.updates() {
        let version = u
            .version()
            .map_or_else(|_| "?".to_owned(), |v| v.to_string());
        let root = sigil_manifests::TrustRootRef::decode(u.root);
        let keys = root.as_ref().map_or(0, |r| r.keys.len());
        let threshold = root.as_ref().map_or(0, |r| r.threshold);
        let _ = writeln!(
            s,
            "  root update:        -> root {version}: {threshold} of {keys} keys; signed by {} previous, {} new root key(s)",
            u.by_previous.len(),
            u.by_new.len()
        );
    }
    s
}
