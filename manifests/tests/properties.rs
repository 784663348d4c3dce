//! Property tests: round-trips, ordering, and arbitrary bytes through every decoder without a
//! panic (the in-tree complement of the fuzz target in `manifests/fuzz`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use sigil_manifests::*;
use sigil_test_support::*;

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._+-]{1,64}"
}

fn pre() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "(0|[1-9][0-9]{0,5}|[A-Za-z-][0-9A-Za-z-]{0,6})(\\.(0|[1-9][0-9]{0,5}|[A-Za-z-][0-9A-Za-z-]{0,6})){0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn manifest_round_trips(
        vendor in ident(), device in ident(), component in ident(),
        major: u32, minor: u32, patch: u32, pre in pre(),
        counter: u32, size in 1u64.., digest: [u8; 32], align_log in 0u32..=20,
        min_bl: Option<u32>, created: u64, expires: Option<u64>,
        notes: Option<[u8; 32]>, sbom: Option<[u8; 32]>,
    ) {
        let m = Manifest {
            product: ProductId { vendor: &vendor, device: &device },
            component: &component,
            version: Version { major, minor, patch, pre: &pre },
            security_counter: counter,
            payload_size: size,
            payload_digest: digest,
            payload_format: PayloadFormat::Raw,
            payload_alignment: 1 << align_log,
            min_bootloader_version: min_bl,
            dependencies: heapless::Vec::from_slice(&[Dependency {
                component: &component,
                min_version: Version { major, minor: 0, patch: 0, pre: "" },
            }]).unwrap(),
            created,
            expires,
            release_notes_digest: notes,
            sbom_digest: sbom,
        };
        let bytes = m.encode().unwrap();
        prop_assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn version_display_parses_back_and_orders_like_semver(
        a in (any::<u32>(), any::<u32>(), any::<u32>(), pre()),
        b in (any::<u32>(), any::<u32>(), any::<u32>(), pre()),
    ) {
        let va = Version { major: a.0, minor: a.1, patch: a.2, pre: &a.3 };
        let vb = Version { major: b.0, minor: b.1, patch: b.2, pre: &b.3 };
        let sa = va.to_string();
        let sb = vb.to_string();
        prop_assert_eq!(Version::parse(&sa).unwrap(), va);
        let reference = semver::Version::parse(&sa).unwrap().cmp(&semver::Version::parse(&sb).unwrap());
        prop_assert_eq!(va.cmp(&vb), reference);
    }

    #[test]
    fn the_envelope_parser_reads_exactly_what_postcard_writes(
        key_set in proptest::collection::vec(any::<u8>(), 0..300),
        manifest in proptest::collection::vec(any::<u8>(), 0..300),
        ks_sigs in proptest::collection::vec((any::<[u8; 32]>(), any::<[u8; 32]>()), 0..=8),
        m_sigs in proptest::collection::vec((any::<[u8; 32]>(), any::<[u8; 32]>()), 0..=8),
    ) {
        let entry = |(id, half): &([u8; 32], [u8; 32])| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(half);
            signature[32..].copy_from_slice(id);
            SignatureEntry { key_id: *id, signature }
        };
        let envelope = Envelope {
            signed_key_set: SignedKeySet {
                key_set: &key_set,
                signatures: ks_sigs.iter().map(entry).collect(),
            },
            manifest: &manifest,
            manifest_signatures: m_sigs.iter().map(entry).collect(),
        };
        let bytes = postcard::to_allocvec(&envelope).unwrap();
        prop_assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
        // Any strict prefix is refused, and so is any extra byte.
        prop_assert!(Envelope::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(Envelope::decode(&longer), Err(Error::TrailingBytes(Document::Envelope)));
    }

    /// The hand-written decoders accept exactly what postcard's encoder writes: a mutated
    /// document is either refused or re-encodes to the very bytes that were accepted.
    #[test]
    fn decoders_accept_only_canonical_encodings(
        which in 0usize..7,
        at: prop::sample::Index,
        byte: u8,
        op in 0u8..4,
        pre in pre(),
        deps in 0usize..=4,
        notes: Option<[u8; 32]>,
    ) {
        let spec = Spec { scope: Some(product()), ..Spec::default() };
        let mut manifest = manifest_for(&spec);
        manifest.version.pre = &pre;
        manifest.expires = Some(1_800_000_000);
        manifest.release_notes_digest = notes;
        for _ in 0..deps {
            manifest.dependencies.push(Dependency {
                component: "base",
                min_version: Version { major: 1, minor: 2, patch: 3, pre: &pre },
            }).unwrap();
        }
        let signed = SignedKeySet {
            key_set: &[1, 2, 3],
            signatures: [SignatureEntry { key_id: [7; 32], signature: [9; 64] }].into_iter().collect(),
        };
        let original = match which {
            0 => root().encode().unwrap(),
            1 => key_set_bytes(&spec),
            2 => signed.encode().unwrap(),
            3 => key_set_bytes(&spec_under_root(3)),
            4 => root_update(2),
            5 => chain(1, 3),
            _ => manifest.encode().unwrap(),
        };
        let mut bytes = original.clone();
        let i = at.index(bytes.len() + 1);
        match op {
            0 if i < bytes.len() => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            // Stretch a one-byte varint (or anything) into an overlong two-byte form.
            3 if i < bytes.len() && bytes[i] < 0x80 => {
                bytes[i] |= 0x80;
                bytes.insert(i + 1, 0);
            }
            _ if i < bytes.len() => { bytes.remove(i); }
            _ => bytes.push(byte),
        }
        let reencoded = match which {
            0 => TrustRoot::decode(&bytes).map(|d| d.encode().unwrap()),
            1 => KeySet::decode(&bytes).map(|d| d.encode().unwrap()),
            2 => SignedKeySet::decode(&bytes).map(|d| d.encode().unwrap()),
            3 => KeySet::decode(&bytes).map(|d| d.encode().unwrap()),
            4 => RootUpdate::decode(&bytes).map(|d| d.encode().unwrap()),
            5 => rotation::decode_chain(&bytes).and_then(|updates| {
                let encoded: Vec<Vec<u8>> = updates
                    .iter()
                    .map(|u| RootUpdate::decode(u).unwrap().encode().unwrap())
                    .collect();
                rotation::encode_chain(&encoded)
            }),
            _ => Manifest::decode(&bytes).map(|d| d.encode().unwrap()),
        };
        if let Ok(reencoded) = reencoded {
            prop_assert_eq!(reencoded, bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = TrustRoot::decode(&bytes);
        let _ = KeySet::decode(&bytes);
        let _ = SignedKeySet::decode(&bytes);
        let _ = Manifest::decode(&bytes);
        let _ = Envelope::decode(&bytes);
        let _ = RootUpdate::decode(&bytes);
        let _ = RootChainView::parse(&bytes);
        let _ = UnverifiedBundle::parse(&bytes);
        let _ = verify(&bytes, policy());
    }

    #[test]
    fn arbitrary_bodies_behind_valid_prefixes_never_panic(
        which in 0usize..7,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let tags: [&[u8; 8]; 7] = [
            b"SGL-ROOT", b"SGL-KSET", b"SGL-SKEY", b"SGL-MNFT", b"SGL-BNDL", b"SGL-RUPD", b"SGL-RCHN",
        ];
        let mut bytes = tags[which].to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&body);
        let _ = TrustRoot::decode(&bytes);
        let _ = KeySet::decode(&bytes);
        let _ = SignedKeySet::decode(&bytes);
        let _ = Manifest::decode(&bytes);
        let _ = RootUpdate::decode(&bytes);
        let _ = RootChainView::parse(&bytes);
        let _ = UnverifiedBundle::parse(&bytes);
        let _ = verify(&bytes, policy());
        let _ = verify(&bytes, policy().with_root_floor(floor_of(2)));
    }

    #[test]
    fn chunking_does_not_change_the_verdict(
        cuts in proptest::collection::vec(0usize..1700, 0..12),
        flip in proptest::option::of((0usize..1700, 1u8..=255)),
    ) {
        let mut b = bundle(&Spec::default());
        if let Some((at, mask)) = flip {
            let at = at % b.len();
            b[at] ^= mask;
        }
        let whole = verify(&b, policy());
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (b.len() + 1)).collect();
        cuts.sort_unstable();
        let root = root();
        let mut buf = [0u8; MAX_ENVELOPE_LEN];
        let mut v = BundleVerifier::new(&root, policy(), &mut buf);
        let mut start = 0;
        let mut fed = Ok(());
        for end in cuts.into_iter().chain([b.len()]) {
            if fed.is_ok() {
                fed = v.feed(&b[start..end]);
            }
            start = end;
        }
        let chunked = fed.and_then(|()| v.finish()).map(|v| (v.security_counter(), v.key_set_version()));
        prop_assert_eq!(chunked, whole);
        prop_assert_eq!(whole.is_ok(), flip.is_none());
        // In place (no envelope buffer), the same verdict; bytes after the bundle are not read.
        let in_place = |region: &[u8]| {
            verify_in_place(&root, policy(), region).map(|v| (v.security_counter(), v.key_set_version()))
        };
        prop_assert_eq!(in_place(&b), whole);
        let mut region = b.clone();
        region.extend_from_slice(&[0xa5; 40]);
        prop_assert_eq!(in_place(&region).is_ok(), flip.is_none());
    }

    #[test]
    fn mutated_bundles_are_rejected(at in 0usize..1700, mask in 1u8..=255) {
        let mut b = bundle(&Spec::default());
        let at = at % b.len();
        b[at] ^= mask;
        prop_assert!(verify(&b, policy()).is_err());
    }
}

/// After an error the verifier keeps answering with it, even for an empty chunk.
#[test]
fn an_error_sticks_even_for_an_empty_chunk() {
    let root = root();
    let mut buf = [0u8; MAX_ENVELOPE_LEN];
    let mut v = BundleVerifier::new(&root, policy(), &mut buf);
    let first = v.feed(&[0x5a; 40]);
    assert!(first.is_err());
    assert_eq!(v.feed(&[]), first);
    assert_eq!(v.finish().map(|_| ()), first);
}
