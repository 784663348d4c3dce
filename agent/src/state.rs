//! Durable agent state: the update in progress and the queue of reports not yet delivered.
//!
//! Layout of the state directory:
//!
//! | file | content |
//! |---|---|
//! | `state.json` | [`AgentState`]: the update in progress (and its download checkpoint), releases refused before |
//! | `state.json.prev` | the generation before the current `state.json` (kept for recovery) |
//! | `state.json.corrupt` | the last `state.json` that could not be read, moved aside for inspection |
//! | `reports/<seq>.json` | one [`Report`] each, sent in sequence order, deleted once the server accepted it |
//! | `lock` | empty; held with an exclusive `flock` by the one agent using the directory |
//!
//! One agent at a time: a second one (a `--once` run beside the service, say) would interleave
//! its writes to the staging slot and this state with the first's, so [`StateDir::open`] refuses
//! it while the lock is held. The kernel drops the lock when the holder exits or is killed.
//!
//! Every file is written atomically: a temporary file in the same directory, `fsync`, `rename`,
//! then `fsync` of the directory, so a power cut leaves either the old or the new content.
//!
//! # Generations and recovery
//!
//! Saving the state first renames the current `state.json` (when it was read or written intact)
//! to `state.json.prev`, then renames the new content into place. [`StateDir::load`] never
//! fails on a bad state file:
//!
//! | `state.json` | `state.json.prev` | loaded | [`Recovery`] |
//! |---|---|---|---|
//! | parses | any | `state.json` | none |
//! | missing | missing | the empty state (first start) | none |
//! | missing (power cut between the two renames) | parses | `.prev` | [`Recovery::Previous`] |
//! | corrupt or unreadable | parses | `.prev` (the bad file is moved to `.corrupt`) | [`Recovery::Previous`] |
//! | corrupt, unreadable or missing | corrupt, unreadable or missing | the empty state | [`Recovery::Rebuilt`] |
//!
//! An older or empty state is safe: the agent reconciles it with what the flash says (the
//! protected boot state, the pending request, the staged bundle, which it verifies again)
//! before it acts, and reports the recovery to the server.

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
        /// Earlier cycles whose download failed (reported `download_failed`) in a row.
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
    /// Manifest digest (hex) of the staged bundle the install request names, once staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Sequence number of the protected boot state when the install was requested: if it is
    /// unchanged and the request is gone, the bootloader did not act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_sequence: Option<u32>,
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
    /// The server's last reason for withholding an assigned release (an encrypted release
    /// without this device's key record), reported once when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
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

/// The state a report tells the server: the wire enum `sigil-server` parses
/// ([`sigil_protocol::CheckInState`]).
pub use sigil_protocol::CheckInState as ReportState;

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

/// How a state file that could not be used was recovered (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// `state.json` was missing, corrupt or unreadable; the previous generation was loaded.
    Previous {
        /// What was wrong with `state.json`.
        problem: String,
    },
    /// No generation could be read; the agent starts from the empty state and what the flash
    /// says.
    Rebuilt {
        /// What was wrong with `state.json` and `state.json.prev`.
        problem: String,
    },
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Previous { problem } => {
                write!(f, "{problem}; recovered the previous generation")
            }
            Recovery::Rebuilt { problem } => write!(
                f,
                "{problem}; no generation was usable, rebuilt from the flash and boot state"
            ),
        }
    }
}

/// The state as loaded, and how it was recovered if the state file was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The state.
    pub state: AgentState,
    /// `Some` if `state.json` was not usable.
    pub recovery: Option<Recovery>,
}

/// The state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    reports: PathBuf,
    /// Whether `state.json` holds a good generation (read intact or written by us): only a
    /// good one is kept as `state.json.prev` when the next is saved.
    current_good: std::cell::Cell<bool>,
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
    replace(path, bytes, None)
}

/// [`write_atomic`], first renaming the current `path` to `keep` when given (both renames
/// within one directory, synced once at the end).
fn replace(path: &Path, bytes: &[u8], keep: Option<&Path>) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", path))?;
    tmp.as_file().sync_all().map_err(io("sync", path))?;
    if let Some(keep) = keep {
        match fs::rename(path, keep) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("keep the previous generation as", keep)(e)),
        }
    }
    tmp.persist(path).map_err(|e| StateError::Io {
        op: "rename into place",
        path: path.to_owned(),
        source: e.error,
    })?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// Reads and parses a state file: `Ok(None)` if it does not exist, `Err` with what is wrong.
fn read_state(path: &Path) -> Result<Option<AgentState>, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is corrupt ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{} is unreadable ({e})", path.display())),
    }
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
            current_good: std::cell::Cell::new(false),
            _lock: lock,
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn prev_path(&self) -> PathBuf {
        self.dir.join("state.json.prev")
    }

    /// The saved state: the current generation, else the previous one, else the empty state,
    /// with how it was recovered (the table in the module documentation). Never fails: a state
    /// file that cannot be read must not stop the agent.
    pub fn load(&self) -> Loaded {
        let path = self.state_path();
        let problem = match read_state(&path) {
            Ok(Some(state)) => {
                self.current_good.set(true);
                return Loaded {
                    state,
                    recovery: None,
                };
            }
            Ok(None) => format!("{} is missing", path.display()),
            Err(problem) => {
                // Kept for inspection; the next save writes a fresh state.json.
                let aside = self.dir.join("state.json.corrupt");
                if let Err(e) = fs::rename(&path, &aside) {
                    tracing::warn!(error = %e, "cannot move the corrupt state file aside");
                }
                problem
            }
        };
        self.current_good.set(false);
        match read_state(&self.prev_path()) {
            Ok(Some(state)) => {
                let recovery = Recovery::Previous { problem };
                tracing::warn!(%recovery, "state file recovered");
                Loaded {
                    state,
                    recovery: Some(recovery),
                }
            }
            // First start: nothing was ever saved.
            Ok(None) if !path.exists() && !self.dir.join("state.json.corrupt").exists() => Loaded {
                state: AgentState::default(),
                recovery: None,
            },
            Ok(None) => {
                let recovery = Recovery::Rebuilt {
                    problem: format!("{problem}, and there is no previous generation"),
                };
                tracing::warn!(%recovery, "state file recovered");
                Loaded {
                    state: AgentState::default(),
                    recovery: Some(recovery),
                }
            }
            Err(prev) => {
                let recovery = Recovery::Rebuilt {
                    problem: format!("{problem}, and {prev}"),
                };
                tracing::warn!(%recovery, "state file recovered");
                Loaded {
                    state: AgentState::default(),
                    recovery: Some(recovery),
                }
            }
        }
    }

    /// Saves the state atomically, keeping the current generation (if good) as
    /// `state.json.prev`.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: self.state_path(),
            message: e.to_string(),
        })?;
        let prev = self.prev_path();
        let keep = self.current_good.get().then_some(prev.as_path());
        replace(&self.state_path(), &bytes, keep)?;
        self.current_good.set(true);
        Ok(())
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
        assert_eq!(
            s.load(),
            Loaded {
                state: AgentState::default(),
                recovery: None
            },
            "a first start is not a recovery"
        );
        let mut st = AgentState {
            update: Some(UpdateRecord {
                deployment: Some(1),
                release: "ab".into(),
                url: "/api/v1/bundles/ab".into(),
                version: None,
                digest: None,
                boot_sequence: None,
                phase: UpdatePhase::Downloading {
                    checkpoint: 4096,
                    interrupted: 1,
                },
            }),
            rejected: Vec::new(),
            withheld: Some("no key record".into()),
        };
        st.reject("cd");
        s.save(&st).unwrap();
        let a = s.enqueue(report(ReportState::Downloading)).unwrap();
        let b = s.enqueue(report(ReportState::Staged)).unwrap();
        assert!(b.seq > a.seq);
        drop(s);

        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(
            s.load(),
            Loaded {
                state: st,
                recovery: None
            }
        );
        let q = s.queued().unwrap();
        assert_eq!(
            q.iter().map(|r| r.state).collect::<Vec<_>>(),
            [ReportState::Downloading, ReportState::Staged]
        );
        s.remove(a.seq).unwrap();
        assert_eq!(s.queued().unwrap().len(), 1);
    }

    fn generation(n: u32) -> AgentState {
        AgentState {
            update: None,
            rejected: vec![format!("release-{n}")],
            withheld: None,
        }
    }

    #[test]
    fn a_corrupt_state_file_recovers_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        s.save(&generation(1)).unwrap();
        s.save(&generation(2)).unwrap();
        let prev = fs::read(dir.path().join("state.json.prev")).unwrap();
        assert_eq!(
            serde_json::from_slice::<AgentState>(&prev).unwrap(),
            generation(1),
            "the previous generation is kept"
        );
        drop(s);
        // Bit rot / a torn write by a filesystem without atomic rename.
        fs::write(dir.path().join("state.json"), b"{\"update\": nul").unwrap();

        let s = StateDir::open(dir.path()).unwrap();
        let loaded = s.load();
        assert_eq!(loaded.state, generation(1));
        assert!(
            matches!(&loaded.recovery, Some(Recovery::Previous { problem }) if problem.contains("corrupt")),
            "{:?}",
            loaded.recovery
        );
        assert_eq!(
            fs::read(dir.path().join("state.json.corrupt")).unwrap(),
            b"{\"update\": nul",
            "the bad file is kept for inspection"
        );
        // The next save writes a fresh current generation and keeps the good previous one
        // (not the corrupt file).
        s.save(&generation(3)).unwrap();
        let prev = fs::read(dir.path().join("state.json.prev")).unwrap();
        assert_eq!(
            serde_json::from_slice::<AgentState>(&prev).unwrap(),
            generation(1)
        );
        drop(s);
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(
            s.load(),
            Loaded {
                state: generation(3),
                recovery: None
            }
        );
    }

    #[test]
    fn a_power_cut_between_the_renames_loads_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        s.save(&generation(1)).unwrap();
        s.save(&generation(2)).unwrap();
        drop(s);
        // After the first rename (current -> prev), before the second (new -> current).
        fs::rename(
            dir.path().join("state.json"),
            dir.path().join("state.json.prev"),
        )
        .unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        let loaded = s.load();
        assert_eq!(loaded.state, generation(2));
        assert!(
            matches!(&loaded.recovery, Some(Recovery::Previous { problem }) if problem.contains("missing")),
            "{:?}",
            loaded.recovery
        );
    }

    #[test]
    fn with_no_usable_generation_the_agent_starts_empty_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        s.save(&generation(1)).unwrap();
        s.save(&generation(2)).unwrap();
        drop(s);
        fs::write(dir.path().join("state.json"), b"\xff\xfe").unwrap();
        fs::write(dir.path().join("state.json.prev"), b"[]").unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        let loaded = s.load();
        assert_eq!(loaded.state, AgentState::default());
        match &loaded.recovery {
            Some(r @ Recovery::Rebuilt { problem }) => {
                assert!(problem.contains("state.json is corrupt"), "{problem}");
                assert!(problem.contains("state.json.prev is corrupt"), "{problem}");
                assert!(r.to_string().contains("rebuilt from the flash"), "{r}");
            }
            other => panic!("{other:?}"),
        }
        // Saving works again, and a corrupt previous generation is not kept over a good one.
        s.save(&generation(3)).unwrap();
        s.save(&generation(4)).unwrap();
        drop(s);
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.load().state, generation(4));
        let prev = fs::read(dir.path().join("state.json.prev")).unwrap();
        assert_eq!(
            serde_json::from_slice::<AgentState>(&prev).unwrap(),
            generation(3)
        );
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
    fn report_states_serialize_as_their_wire_names() {
        for state in ReportState::ALL {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, serde_json::json!(state.as_str()));
            assert_eq!(serde_json::from_value::<ReportState>(json).unwrap(), state);
        }
        assert_eq!(ReportState::DownloadFailed.as_str(), "download_failed");
        assert_eq!(ReportState::Failed.as_str(), "failed");
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
