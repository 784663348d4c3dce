//! Group commit for device check-ins.
//!
//! Every check-in writes (a report, the device's state, maybe its rollout status), and the
//! SQLite backend has one writer. Committing each check-in on its own made every request queue
//! for the writer's lock behind all the others, one commit each: a single commit that the kernel
//! held up for 15–30 ms (page-cache writeback, another thread's `fsync`, the writer thread
//! losing its core on a busy machine) stalled every in-flight check-in, the backlog then drained
//! one commit at a time, and the blocking pool grew to hundreds of threads parked on the lock.
//!
//! Here check-ins join a queue instead. One task on the blocking pool drains it: it takes
//! everything queued (up to [`MAX_BATCH`]), records it in one transaction through
//! [`crate::store::CheckInStore::check_in_batch`], answers each check-in, and goes on while more are waiting. A slow
//! commit now delays one batch, and everything that queued meanwhile is committed by the next
//! one. Each check-in is answered only after the commit that holds it, so what a device was told
//! is exactly what is stored.
//!
//! A store whose batches can commit side by side (PostgreSQL, where each batch is a
//! transaction on its own connection) gets several drain tasks
//! ([`crate::store::CheckInStore::batch_writers`]): with one, a replica's check-in rate was
//! bounded by one batch's round trips and commit at a time while the database had cores idle.
//!
//! The same queue groups the token lookups of concurrent requests ([`PrincipalQueue`]): each
//! request still looks its token up when it arrives (nothing is cached, so a token revoked
//! through any replica fails the next request on every replica), but the lookups that arrive
//! while one group runs go to the database together as one statement
//! ([`crate::store::TokenStore::principals`]) instead of one round trip each.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::Db;
use crate::error::ApiError;
use crate::store::{now_secs, Assignment, CheckIn, Principal, Store, StoreError, StoreResult};

/// Most check-ins committed in one transaction: bounds how long one batch holds the writer.
pub const MAX_BATCH: usize = 256;

/// Check-ins waiting per running drain task before another one starts (where the store has
/// several writers).
const BACKLOG: usize = 32;

type Reply<R> = oneshot::Sender<StoreResult<R>>;

/// What a queue runs for a group of jobs: one result per job, in the group's order.
type RunGroup<J, R> = dyn Fn(&dyn Store, &[J]) -> StoreResult<Vec<StoreResult<R>>> + Send + Sync;

struct Queue<J, R> {
    jobs: Vec<(J, Reply<R>)>,
    /// Drain tasks running (each sees any job queued before it stops); at most the store's
    /// [`crate::store::CheckInStore::batch_writers`].
    draining: usize,
}

/// Jobs of concurrent requests, run in groups on the blocking pool (see the module
/// documentation).
pub struct GroupQueue<J, R> {
    db: Db,
    run: Box<RunGroup<J, R>>,
    /// Drain tasks allowed at once.
    writers: usize,
    queue: Mutex<Queue<J, R>>,
}

/// The check-in queue (one per server).
pub type CheckInQueue = GroupQueue<CheckIn, Option<Assignment>>;

/// The token lookup queue (one per server).
pub type PrincipalQueue = GroupQueue<[u8; 32], Option<Principal>>;

impl CheckInQueue {
    /// A queue recording into `db`, keeping the last `keep` reports per device.
    pub fn new(db: Db, keep: u32) -> Arc<Self> {
        GroupQueue::with_run(
            db,
            Box::new(move |s: &dyn Store, batch: &[CheckIn]| {
                s.check_in_batch(batch, now_secs(), keep)
            }),
        )
    }
}

impl PrincipalQueue {
    /// A queue looking token hashes up in `db`.
    pub fn new(db: Db) -> Arc<Self> {
        GroupQueue::with_run(
            db,
            Box::new(|s: &dyn Store, hashes: &[[u8; 32]]| {
                Ok(s.principals(hashes, now_secs())?
                    .into_iter()
                    .map(Ok)
                    .collect())
            }),
        )
    }
}

impl<J: Send + 'static, R: Send + 'static> GroupQueue<J, R> {
    fn with_run(db: Db, run: Box<RunGroup<J, R>>) -> Arc<Self> {
        let writers = db.store().batch_writers().max(1);
        Arc::new(GroupQueue {
            db,
            run,
            writers,
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                draining: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue<J, R>> {
        // The queue is consistent between statements: a panic elsewhere cannot leave it torn.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job; answers once its group has run (for a check-in: is committed).
    pub async fn submit(self: &Arc<Self>, job: J) -> Result<R, ApiError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.jobs.push((job, reply));
            // One drain task; another (up to what the store commits side by side; SQLite: one)
            // only once a backlog builds up behind the running ones, since at a pace one task
            // keeps up with, more would only split the same jobs into smaller groups.
            let start = q.draining == 0
                || (q.draining < self.writers
                    && q.jobs.len() >= BACKLOG.saturating_mul(q.draining));
            if start {
                q.draining += 1;
            }
            start
        };
        if start {
            let queue = Arc::clone(self);
            tokio::task::spawn_blocking(move || queue.drain());
        }
        let result = answer.await.map_err(|_| {
            ApiError::Internal(anyhow::anyhow!(
                "the store's group task stopped before answering"
            ))
        })?;
        Ok(result?)
    }

    /// Runs groups until the queue is empty.
    fn drain(&self) {
        let _guard = DrainGuard(self);
        loop {
            let jobs = {
                let mut q = self.lock();
                if q.jobs.is_empty() {
                    q.draining = q.draining.saturating_sub(1);
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                q.jobs.drain(..n).collect::<Vec<_>>()
            };
            let (batch, replies): (Vec<J>, Vec<Reply<R>>) = jobs.into_iter().unzip();
            match (self.run)(self.db.store(), &batch) {
                Ok(results) if results.len() == replies.len() => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        // A client that went away no longer waits for its answer.
                        let _ = reply.send(result);
                    }
                }
                Ok(results) => {
                    let e = format!(
                        "a group of {} returned {} results",
                        replies.len(),
                        results.len()
                    );
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Backend(e.clone())));
                    }
                }
                Err(e) => {
                    // The same error for each (an unavailable database stays a 503).
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Should a drain task unwind, the check-ins it left queued are answered with an error (their
/// reply channels close) and the next check-in starts a new drain task.
struct DrainGuard<'a, J, R>(&'a GroupQueue<J, R>);

impl<J, R> Drop for DrainGuard<'_, J, R> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.jobs.clear();
            q.draining = q.draining.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use crate::store::{CheckInState, Device, SqliteStore};

    fn check_in(id: &str, version: &str) -> CheckIn {
        CheckIn {
            device_id: id.to_owned(),
            version: version.to_owned(),
            security_counter: 1,
            state: CheckInState::Idle,
            deployment_id: None,
            detail: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_check_ins_are_each_recorded_and_a_bad_one_fails_alone() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let audit = crate::store::AuditEvent::new(
            "t",
            crate::store::AuditAction::DeviceEnrol,
            "d",
            serde_json::json!({}),
        );
        for i in 0..20 {
            store
                .enrol_device(&Device::example(&format!("d{i}")), &audit)
                .unwrap();
        }
        let queue = CheckInQueue::new(Db::new(store.clone()), 5);
        let mut tasks = Vec::new();
        for round in 0..10 {
            for i in 0..20 {
                let q = Arc::clone(&queue);
                let c = check_in(&format!("d{i}"), &format!("1.0.{round}"));
                tasks.push(tokio::spawn(async move { q.submit(c).await }));
            }
            let q = Arc::clone(&queue);
            tasks.push(tokio::spawn(async move {
                q.submit(check_in("unknown", "1.0.0")).await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(None) => {}
                Ok(Some(_)) => panic!("nothing is deployed"),
                Err(ApiError::NotFound(_)) => failed += 1,
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(failed, 10, "only the unknown device's check-ins fail");
        for i in 0..20 {
            let reports = store.reports(&format!("d{i}"), 100).unwrap();
            assert_eq!(reports.len(), 5, "every check-in stored, trimmed to `keep`");
            assert!(store
                .device(&format!("d{i}"))
                .unwrap()
                .unwrap()
                .last_seen
                .is_some());
        }
        // The drain task answers the last batch before it clears its flag: give it the time a
        // loaded machine may need to get there (it must stop, not keep spinning).
        let mut stopped = false;
        for _ in 0..500 {
            if queue.lock().draining == 0 {
                stopped = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(stopped, "the drain task stops when the queue is empty");
    }
}
