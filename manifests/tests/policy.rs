//! The device-policy checks that compare versions (step 7g, newer than what runs, and 7j,
//! dependencies): each refuses exactly what it must, in SemVer precedence.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use sigil_manifests::*;
use sigil_test_support::*;

fn with_dependency(spec: &Spec, component: &'static str, min: &'static str) -> Vec<u8> {
    let mut m = manifest_for(spec);
    m.dependencies
        .push(Dependency {
            component,
            min_version: Version::parse(min).unwrap(),
        })
        .unwrap();
    bundle_from(spec, &m.encode().unwrap())
}

#[test]
fn only_a_strictly_newer_version_passes_newer_than() {
    let spec = Spec::default(); // 1.2.0
    let b = bundle(&spec);
    for (running, ok) in [
        ("1.1.9", true),
        ("1.2.0-rc.1", true), // a pre-release sorts before its release
        ("1.2.0", false),
        ("1.2.1", false),
        ("1.10.0", false), // numeric, not textual, order
    ] {
        let policy = policy().with_newer_than(Version::parse(running).unwrap());
        let got = verify(&b, policy);
        if ok {
            assert!(got.is_ok(), "running {running}: {got:?}");
        } else {
            assert_eq!(got, Err(Error::NotNewer), "running {running}");
        }
    }
}

#[test]
fn dependencies_need_the_component_at_least_at_the_minimum() {
    let spec = Spec::default();
    let b = with_dependency(&spec, "bootloader", "2.0.0");
    let installed = |component: &'static str, version: &'static str| InstalledComponent {
        component,
        version: Version::parse(version).unwrap(),
    };
    // Without installed components the dependency check is off.
    assert!(verify(&b, policy()).is_ok());
    for (have, ok) in [
        (vec![installed("bootloader", "2.0.0")], true),
        (vec![installed("bootloader", "2.10.0")], true),
        (
            vec![
                installed("other", "1.0.0"),
                installed("bootloader", "3.0.0"),
            ],
            true,
        ),
        (vec![installed("bootloader", "1.9.9")], false),
        (vec![installed("bootloader", "2.0.0-rc.2")], false),
        (vec![installed("other", "9.0.0")], false),
        (vec![], false),
    ] {
        let got = verify(&b, policy().with_installed(&have));
        if ok {
            assert!(got.is_ok(), "{have:?}: {got:?}");
        } else {
            assert_eq!(got, Err(Error::DependencyUnmet), "{have:?}");
        }
    }
}
