//! The agent against the real `sigil-server` on loopback, with the bootloader's host boot
//! logic playing each reboot on the same flash file.

mod common;

use common::*;
use sigil_agent::CycleOutcome;
use sigil_bootloader::{Outcome, Phase};

fn states(reports: &[(String, String)]) -> Vec<&str> {
    reports.iter().map(|(s, _)| s.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_check_in_to_confirmed() {
    let server = RealServer::start().await;
    let update = bundle(&Spec::new("1.1.0", 2));
    let (release, dep) = server.enrol_upload_deploy(update.clone()).await;
    let hooks = tempfile::tempdir().unwrap();
    let rebooted = hooks.path().join("rebooted");
    let mut opts = DeviceOptions::new(&server.url);
    opts.reboot = format!("touch {}", rebooted.display());
    opts.health_check = Some("test \"$SIGIL_RUNNING_VERSION\" = 1.1.0".to_owned());
    let device = Device::provision(&opts);

    let mut agent = device.agent();
    assert_eq!(agent.running().unwrap().version, "1.0.0");
    let outcome = agent.run_once().await.unwrap();
    assert_eq!(outcome, CycleOutcome::RebootRequested);
    assert!(rebooted.exists(), "the reboot hook ran");
    assert!(device.install_requested());
    assert_eq!(server.member_status(dep).await, "staged");
    drop(agent);

    // The reboot: the bootloader verifies the staged bundle, swaps it in, boots it on trial.
    let image = device.reboot();
    assert!(image.is_trial());
    assert_eq!(image.security_counter(), 2);

    // After boot: a new agent process finds the trial image, runs the health check, confirms.
    let mut agent = device.agent();
    assert_eq!(agent.run_once().await.unwrap(), CycleOutcome::Confirmed);
    // The confirm is a request: the floor rises at the next boot, by the bootloader.
    assert!(device.confirm_requested());
    assert_eq!(device.boot_state().min_security_counter, 1);
    assert!(!device.reboot().is_trial());
    let state = device.boot_state();
    assert_eq!(
        (state.phase, state.outcome),
        (Phase::Idle, Outcome::Confirmed)
    );
    assert_eq!(
        state.min_security_counter, 2,
        "the counter rose only at confirm"
    );
    assert!(
        agent.queued_reports().unwrap().is_empty(),
        "every report was delivered"
    );

    assert_eq!(server.member_status(dep).await, "confirmed");
    let (_, d) = server
        .call(
            "GET",
            &format!("/api/v1/devices/{DEVICE_ID}"),
            &server.operator,
            None,
        )
        .await;
    assert_eq!(
        (d["version"].as_str(), d["state"].as_str()),
        (Some("1.1.0"), Some("confirmed"))
    );
    let reports = server.reports().await;
    let seen = states(&reports);
    for expected in [
        "downloading",
        "staged",
        "installing",
        "installed",
        "confirmed",
    ] {
        assert!(seen.contains(&expected), "{expected} missing from {seen:?}");
    }
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "downloading" && d.contains('%')),
        "progress reported: {reports:?}"
    );

    // Next cycle: nothing more to do; the same release is not offered again.
    assert_eq!(agent.run_once().await.unwrap(), CycleOutcome::UpToDate);
    assert!(agent.state().update.is_none());
    let _ = release;

    // The flash holds the new image as active; another boot is a normal one.
    let image = device.reboot();
    assert!(!image.is_trial());
    assert_eq!(image.security_counter(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_hook_defers_twice_then_allows() {
    let server = RealServer::start().await;
    let (_, dep) = server
        .enrol_upload_deploy(bundle(&Spec::new("1.1.0", 2)))
        .await;
    let hooks = tempfile::tempdir().unwrap();
    let counter = hooks.path().join("asked");
    let rebooted = hooks.path().join("rebooted");
    let mut opts = DeviceOptions::new(&server.url);
    // Says "not now" (75) the first two times it is asked, then "go".
    opts.install_permission = Some(format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ] || exit 75",
        c = counter.display()
    ));
    opts.reboot = format!("touch {}", rebooted.display());
    let device = Device::provision(&opts);

    let mut agent = device.agent();
    let first = agent.run_once().await.unwrap();
    assert!(
        matches!(&first, CycleOutcome::Deferred(why) if why.contains("75")),
        "{first:?}"
    );
    assert!(!rebooted.exists(), "never rebooted against the hook");
    assert!(
        device.install_requested(),
        "staged and pending while deferred"
    );
    let second = agent.run_once().await.unwrap();
    assert!(matches!(second, CycleOutcome::Deferred(_)), "{second:?}");
    assert!(!rebooted.exists());
    assert_eq!(
        agent.run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert!(rebooted.exists());
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");

    let reports = server.reports().await;
    let deferred = reports.iter().filter(|(s, _)| s == "deferred").count();
    assert_eq!(deferred, 2, "{reports:?}");
    assert_eq!(states(&reports).last(), Some(&"installing"));
    // Deferrals are neutral for the rollout.
    assert_eq!(server.member_status(dep).await, "staged");

    // The reboot ends the agent process; the one started after it takes the state directory.
    drop(agent);
    device.reboot();
    assert_eq!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::Confirmed
    );
    assert_eq!(server.member_status(dep).await, "confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_failure_reverts_and_is_reported() {
    let server = RealServer::start().await;
    let (release, dep) = server
        .enrol_upload_deploy(bundle(&Spec::new("1.1.0", 2)))
        .await;
    let mut opts = DeviceOptions::new(&server.url);
    opts.health_check = Some("exit 1".to_owned());
    let device = Device::provision(&opts);

    assert_eq!(
        device.agent().run_once().await.unwrap(),
        CycleOutcome::RebootRequested
    );
    assert!(device.reboot().is_trial());

    let mut agent = device.agent();
    let outcome = agent.run_once().await.unwrap();
    assert!(
        matches!(&outcome, CycleOutcome::HealthCheckFailed(why) if why.contains("status 1")),
        "{outcome:?}"
    );
    let state = device.boot_state();
    assert_eq!(state.phase, Phase::Trial, "not confirmed");
    assert_eq!(state.min_security_counter, 1, "the counter did not rise");
    drop(agent);

    // The trial budget is spent: the next boot reverts to 1.0.0.
    let image = device.reboot();
    assert!(!image.is_trial());
    assert_eq!(image.security_counter(), 1);
    let state = device.boot_state();
    assert_eq!(
        (state.phase, state.outcome),
        (Phase::Idle, Outcome::Reverted)
    );

    let mut agent = device.agent();
    assert_eq!(agent.run_once().await.unwrap(), CycleOutcome::Reverted);
    assert_eq!(agent.running().unwrap().version, "1.0.0");
    assert_eq!(server.member_status(dep).await, "reverted");
    let reports = server.reports().await;
    assert_eq!(states(&reports).last(), Some(&"reverted"), "{reports:?}");
    assert!(
        reports
            .iter()
            .any(|(s, d)| s == "installed" && d.contains("health check")),
        "{reports:?}"
    );

    // The reverted release is not tried again.
    let again = agent.run_once().await.unwrap();
    assert!(
        matches!(&again, CycleOutcome::UpToDate)
            || matches!(&again, CycleOutcome::AlreadyRefused(r) if *r == release),
        "{again:?}"
    );
    assert_eq!(device.boot_state().phase, Phase::Idle);
}
