//! Root rotation through the agent, against the real `sigil-server`: the server hands its root
//! chain to a device that reports an older root; the agent verifies and stages it, then takes a
//! release signed under the new root (its bundle carries the chain the bootloader walks) and
//! refuses one signed under the retired root.

mod common;

use common::*;
use sigil_agent::CycleOutcome;

/// A release for the test device signed under root generation `n` of `sigil_test_support`.
fn release_under_root(n: u32, version: &'static str, counter: u32) -> Vec<u8> {
    sigil_test_support::bundle(&sigil_test_support::Spec {
        counter,
        version,
        payload: payload(150_000, counter as u8),
        ..sigil_test_support::spec_under_root(n)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stages_the_chain_and_installs_a_release_under_root_3() {
    let server = RealServer::start().await;
    let (s, v) = server.put_root_chain(sigil_test_support::chain(1, 3)).await;
    assert_eq!(s, 200, "{v}");
    server
        .enrol_upload_deploy(release_under_root(3, "1.1.0", 2))
        .await;
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let mut agent = device.agent();
    assert_eq!(agent.root_version(), 1, "provisioned with root 1");
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert_eq!(
        agent.root_version(),
        3,
        "the server's chain was verified and staged"
    );
    let staged = std::fs::read(device.dir.path().join("state").join("root-chain.sgl")).unwrap();
    assert_eq!(staged, sigil_test_support::chain(1, 3));
    drop(agent);
    // The bootloader (built with root 1) walks the bundle's chain and runs it on trial.
    let image = device.reboot();
    assert!(image.is_trial());
    assert_eq!(image.security_counter(), 2);
    // A new agent process finds the staged chain again.
    assert_eq!(device.agent().root_version(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_chain_a_release_under_the_retired_root_is_refused() {
    let server = RealServer::start().await;
    // Uploaded before the rotation reached the server, so it was accepted then.
    server
        .enrol_upload_deploy(bundle(&Spec::new("1.1.0", 2)))
        .await;
    let (s, v) = server.put_root_chain(sigil_test_support::chain(1, 3)).await;
    assert_eq!(s, 200, "{v}");
    let device = Device::provision(&DeviceOptions::new(&server.url));
    let mut agent = device.agent();
    match agent.run_once().await.unwrap() {
        CycleOutcome::Failed(reason) => {
            assert!(reason.contains("older than root 3"), "{reason}")
        }
        other => panic!("a release under root 1 was not refused: {other:?}"),
    }
    assert!(!device.install_requested());
}
