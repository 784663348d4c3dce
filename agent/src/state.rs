//! Durable agent state: the update in progress and the queue of reports not yet delivered.
//!
//! Layout of the state directory:
//!
//! | file | content |
//! |---|---|
//! | `state.json` | [`AgentState`]: the update in progress (and its download checkpoint), releases refused before |
//! | `reports/<seq>.json` | one [`Report`] each, sent in sequence order, deleted once the server accepted it |
//! | `lock` | empty; held with an exclusive `flock` by the one agent using the directory |
//!
//! One agent at a time: a second one (a `--once` run beside the service, say) would interleave
//! its writes to the staging slot and this state with the first's, so [`StateDir::open`] refuses
//! it while the lock is held. The kernel drops the lock when the holder exits or is killed.
//!
//! Every file is written atomically: a temporary file in the same directory, `fsync`, `rename`,
//! then `fsync` of the directory, so a power cut leaves either the old or the new content.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most releases remembered as refused.
const MAX_REJECTED: usize = 32;
/// Most reports kept queued; the oldest progress reports are dropped first beyond this.
const MAX_QUEUED: usize = 256;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file or directory operation failed.
    #[error("state directory: cannot {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A state file does not parse.
    #[error("state file {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Another agent holds the directory's lock.
    #[error("state directory {dir} is in use by another sigil-agent (lock held on {dir}/lock)")]
    Busy {
        /// The state directory.
        dir: PathBuf,
    },
}

/// Where an update is, as far as the agent is concerned (the boot-control phase is the other
/// half of the truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Downloading into the staging slot; `checkpoint` bytes are synced and can be resumed.
    Downloading {
        /// Synced, sector-aligned prefix of the bundle in the slot.
        checkpoint: u64,
        /// Earlier cycles whose download was interrupted.
        #[serde(default)]
        interrupted: u32,
    },
    /// Verified in the slot and marked pending; waiting for permission to reboot.
    Staged {
        /// How often the permission hook said "not now".
        deferrals: u32,
    },
    /// The reboot hook ran; the next boot installs the update.
    Installing,
    /// The image on trial failed its health check; it is not confirmed.
    HealthFailed,
}

/// The update the agent is working on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// Server deployment id, for reports.
    pub deployment: Option<i64>,
    /// Release (bundle) id.
    pub release: String,
    /// Download URL as offered.
    pub url: String,
    /// Version of the bundle, once its manifest is authenticated.
    pub version: Option<String>,
    /// The phase.
    #[serde(flatten)]
    pub phase: UpdatePhase,
}

/// Everything the agent keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The update in progress.
    pub update: Option<UpdateRecord>,
    /// Releases refused (verification or policy), never downloaded again; newest last.
    #[serde(default)]
    pub rejected: Vec<String>,
}

impl AgentState {
    /// Remembers a refused release.
    pub fn reject(&mut self, release: &str) {
        if !self.rejected.iter().any(|r| r == release) {
            self.rejected.push(release.to_owned());
        }
        while self.rejected.len() > MAX_REJECTED {
            self.rejected.remove(0);
        }
    }

    /// Whether a release was refused before.
    pub fn is_rejected(&self, release: &str) -> bool {
        self.rejected.iter().any(|r| r == release)
    }
}

/// The state a report tells the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// Nothing in progress.
    Idle,
    /// Downloading (the detail carries the progress).
    Downloading,
    /// Verified in the staging slot and marked pending.
    Staged,
    /// The install-permission hook (or the maintenance window) said "not now".
    Deferred,
    /// Rebooting into the update.
    Installing,
    /// Running the update on trial.
    Installed,
    /// The update is confirmed.
    Confirmed,
    /// The bootloader reverted to the previous image.
    Reverted,
    /// The update failed before it was installed (the detail says why).
    Failed,
}

impl ReportState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Idle => "idle",
            ReportState::Downloading => "downloading",
            ReportState::Staged => "staged",
            ReportState::Deferred => "deferred",
            ReportState::Installing => "installing",
            ReportState::Installed => "installed",
            ReportState::Confirmed => "confirmed",
            ReportState::Reverted => "reverted",
            ReportState::Failed => "failed",
        }
    }
}

/// One state change to tell the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Queue order.
    pub seq: u64,
    /// When it happened (Unix seconds).
    pub at: u64,
    /// The state.
    pub state: ReportState,
    /// The deployment it concerns.
    pub deployment: Option<i64>,
    /// Human-readable detail (progress, reason).
    pub detail: Option<String>,
    /// Version running when it happened.
    pub version: String,
    /// Security counter of the running image when it happened.
    pub security_counter: u32,
}

/// The state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    reports: PathBuf,
    /// Holds the exclusive lock for as long as the directory is open.
    _lock: fs::File,
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StateError + 'p {
    move |source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", path))?;
    tmp.as_file().sync_all().map_err(io("sync", path))?;
    tmp.persist(path).map_err(|e| StateError::Io {
        op: "rename into place",
        path: path.to_owned(),
        source: e.error,
    })?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

impl StateDir {
    /// Opens (creating if needed) the state directory, takes its lock (refused with
    /// [`StateError::Busy`] while another agent holds it) and removes stale temporary files.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let reports = dir.join("reports");
        fs::create_dir_all(&reports).map_err(io("create", &reports))?;
        let lock_path = dir.join("lock");
        // `flock` needs no write access: an existing lock file is opened read-only, so a
        // read-only state directory still passes `--check-config`.
        let lock = fs::File::open(&lock_path)
            .or_else(|_| {
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
            })
            .map_err(io("open", &lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StateError::Busy {
                    dir: dir.to_owned(),
                })
            }
            Err(e) => return Err(io("lock", &lock_path)(e.into())),
        }
        for d in [dir, reports.as_path()] {
            for entry in fs::read_dir(d).map_err(io("list", d))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(StateDir {
            dir: dir.to_owned(),
            reports,
            _lock: lock,
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state (default when none was saved).
    pub fn load(&self) -> Result<AgentState, StateError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Saves the state atomically.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: self.state_path(),
            message: e.to_string(),
        })?;
        write_atomic(&self.state_path(), &bytes)
    }

    fn queued_paths(&self) -> Result<Vec<(u64, PathBuf)>, StateError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.reports)
            .map_err(io("list", &self.reports))?
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((seq, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Queues a report durably; returns it with its sequence number.
    pub fn enqueue(&self, mut report: Report) -> Result<Report, StateError> {
        let mut queued = self.queued_paths()?;
        report.seq = queued.last().map_or(1, |(s, _)| s.saturating_add(1));
        // Bound the queue: drop the oldest progress reports, then the oldest of any kind.
        while queued.len() >= MAX_QUEUED {
            let victim = queued
                .iter()
                .position(|(_, p)| {
                    self.read_report(p)
                        .is_ok_and(|r| r.state == ReportState::Downloading)
                })
                .unwrap_or(0);
            let (_, path) = queued.remove(victim);
            let _ = fs::remove_file(path);
        }
        let path = self.reports.join(format!("{:020}.json", report.seq));
        let bytes = serde_json::to_vec(&report).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &bytes)?;
        Ok(report)
    }

    fn read_report(&self, path: &Path) -> Result<Report, StateError> {
        let bytes = fs::read(path).map_err(io("read", path))?;
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Queued reports, oldest first (a corrupt file is removed with a warning).
    pub fn queued(&self) -> Result<Vec<Report>, StateError> {
        let mut out = Vec::new();
        for (_, path) in self.queued_paths()? {
            match self.read_report(&path) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a corrupt queued report");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(out)
    }

    /// Removes a delivered report.
    pub fn remove(&self, seq: u64) -> Result<(), StateError> {
        let path = self.reports.join(format!("{seq:020}.json"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: ReportState) -> Report {
        Report {
            seq: 0,
            at: 1,
            state,
            deployment: Some(3),
            detail: None,
            version: "1.0.0".into(),
            security_counter: 1,
        }
    }

    #[test]
    fn state_and_queue_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), AgentState::default());
        let mut st = AgentState {
            update: Some(UpdateRecord {
                deployment: Some(1),
                release: "ab".into(),
                url: "/api/v1/bundles/ab".into(),
                version: None,
                phase: UpdatePhase::Downloading {
                    checkpoint: 4096,
                    interrupted: 1,
                },
            }),
            rejected: Vec::new(),
        };
        st.reject("cd");
        s.save(&st).unwrap();
        let a = s.enqueue(report(ReportState::Downloading)).unwrap();
        let b = s.enqueue(report(ReportState::Staged)).unwrap();
        assert!(b.seq > a.seq);
        drop(s);

        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), st);
        let q = s.queued().unwrap();
        assert_eq!(
            q.iter().map(|r| r.state).collect::<Vec<_>>(),
            [ReportState::Downloading, ReportState::Staged]
        );
        s.remove(a.seq).unwrap();
        assert_eq!(s.queued().unwrap().len(), 1);
    }

    #[test]
    fn one_agent_at_a_time_uses_a_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let tmp = dir.path().join(".tmp-inflight");
        fs::write(&tmp, b"x").unwrap();
        let err = StateDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Busy { .. }), "{err:?}");
        assert!(err.to_string().contains("in use by another sigil-agent"));
        // The refused opener touched nothing: the holder's temporary file is still there.
        assert!(tmp.exists());
        drop(first);
        StateDir::open(dir.path()).unwrap();
        assert!(
            !tmp.exists(),
            "stale temporaries are cleaned by the next holder"
        );
    }

    #[test]
    fn queue_is_bounded_dropping_progress_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        s.enqueue(report(ReportState::Failed)).unwrap();
        for _ in 0..MAX_QUEUED + 5 {
            s.enqueue(report(ReportState::Downloading)).unwrap();
        }
        let q = s.queued().unwrap();
        assert_eq!(q.len(), MAX_QUEUED);
        assert_eq!(q[0].state, ReportState::Failed);
    }
}
