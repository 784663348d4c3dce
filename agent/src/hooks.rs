//! Hook commands: the device maker's say in when the device reboots and whether an update is
//! healthy.
//!
//! Hooks are argv lists run without a shell, stdin closed, stdout/stderr inherited (they land
//! in the journal), each in its own process group, which is killed after `hooks.timeout`. They
//! get these environment variables:
//!
//! | variable | value |
//! |---|---|
//! | `SIGIL_HOOK` | `install_permission`, `reboot` or `health_check` |
//! | `SIGIL_RUNNING_VERSION` | version of the running image |
//! | `SIGIL_UPDATE_VERSION` | version of the staged / trial image (when known) |
//! | `SIGIL_RELEASE` | release id (when known) |
//! | `SIGIL_DEPLOYMENT` | deployment id (when known) |
//!
//! # Contract (exit codes)
//!
//! | hook | exit 0 | exit 75 (`EX_TEMPFAIL`) | anything else, a signal, a timeout, cannot start |
//! |---|---|---|---|
//! | `install_permission` | reboot into the update now | **not now**: report `deferred`, ask again after `poll.defer_interval` | treated as "not now" (fail safe), with the reason reported |
//! | `reboot` | reboot requested (the agent waits to be killed) | — | logged; the agent asks again next cycle |
//! | `health_check` | healthy: confirm, report `confirmed` | — | unhealthy: do not confirm; the bootloader reverts after its trial budget; `reverted` is reported after the revert boot |
//!
//! The agent never reboots the device unless `install_permission` exited 0 (or is not
//! configured) in the same cycle.

use std::fmt;
use std::time::Duration;

use tokio::process::Command;

/// The exit code that means "not now" (`EX_TEMPFAIL` from `sysexits.h`).
pub const EXIT_NOT_NOW: i32 = 75;

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    /// Exited with this code.
    Exited(i32),
    /// Killed by a signal.
    Signalled,
    /// Ran longer than the timeout and was killed.
    TimedOut,
    /// Could not be started.
    NotStarted(String),
}

impl HookResult {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        *self == HookResult::Exited(0)
    }
}

impl fmt::Display for HookResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookResult::Exited(c) => write!(f, "exited with status {c}"),
            HookResult::Signalled => f.write_str("was killed by a signal"),
            HookResult::TimedOut => f.write_str("timed out and was killed"),
            HookResult::NotStarted(e) => write!(f, "could not be started: {e}"),
        }
    }
}

/// Variables given to a hook.
#[derive(Debug, Default, Clone)]
pub struct HookEnv<'a> {
    /// Running version.
    pub running_version: &'a str,
    /// Update version.
    pub update_version: Option<&'a str>,
    /// Release id.
    pub release: Option<&'a str>,
    /// Deployment id.
    pub deployment: Option<i64>,
}

/// Runs hook `name` (`argv`) with `env`, killing it after `timeout`.
pub async fn run(name: &str, argv: &[String], env: &HookEnv<'_>, timeout: Duration) -> HookResult {
    let Some((program, args)) = argv.split_first() else {
        return HookResult::NotStarted("empty command".to_owned());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        // Its own process group, so that a timeout ends everything the hook started.
        .process_group(0)
        .env("SIGIL_HOOK", name)
        .env("SIGIL_RUNNING_VERSION", env.running_version);
    if let Some(v) = env.update_version {
        cmd.env("SIGIL_UPDATE_VERSION", v);
    }
    if let Some(r) = env.release {
        cmd.env("SIGIL_RELEASE", r);
    }
    if let Some(d) = env.deployment {
        cmd.env("SIGIL_DEPLOYMENT", d.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookResult::NotStarted(format!("{program}: {e}")),
    };
    let result = match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            // The group first: a shell's children would otherwise outlive it.
            if let Some(pid) = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            HookResult::TimedOut
        }
        Ok(Err(e)) => HookResult::NotStarted(format!("{program}: {e}")),
        Ok(Ok(status)) => match status.code() {
            Some(c) => HookResult::Exited(c),
            None => HookResult::Signalled,
        },
    };
    tracing::info!(hook = name, result = %result, "hook finished");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_codes_timeouts_and_env() {
        let env = HookEnv {
            running_version: "1.0.0",
            update_version: Some("1.1.0"),
            ..HookEnv::default()
        };
        let t = Duration::from_secs(10);
        assert_eq!(
            run("x", &sh("exit 0"), &env, t).await,
            HookResult::Exited(0)
        );
        assert_eq!(
            run("x", &sh("exit 75"), &env, t).await,
            HookResult::Exited(EXIT_NOT_NOW)
        );
        assert_eq!(
            run(
                "x",
                &sh("test \"$SIGIL_UPDATE_VERSION\" = 1.1.0 && test \"$SIGIL_HOOK\" = x"),
                &env,
                t
            )
            .await,
            HookResult::Exited(0)
        );
        assert_eq!(
            run("x", &sh("sleep 5"), &env, Duration::from_millis(200)).await,
            HookResult::TimedOut
        );
        assert!(matches!(
            run("x", &["/nonexistent/hook".to_owned()], &env, t).await,
            HookResult::NotStarted(_)
        ));
    }

    /// A timeout ends what the hook started too, not only the hook's own process.
    #[tokio::test]
    async fn timeout_kills_the_hooks_children() {
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("late");
        let script = format!("(sleep 1; touch '{}') & sleep 5", late.display());
        let r = run(
            "x",
            &sh(&script),
            &HookEnv::default(),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(r, HookResult::TimedOut);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!late.exists(), "a child of the timed-out hook kept running");
    }
}
