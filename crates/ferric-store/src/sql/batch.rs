//! Group commit of fenced node saves (issue 18, item 3).
//!
//! Every node save takes the one-row revision counter and holds it until its
//! commit: that is what keeps the change feed gapless and in commit order,
//! and it serialises the saves of the whole cluster on that row, each across
//! its commit's flush. So the saves of one process are committed together:
//! a save joins a queue; whoever finds no batch running takes the queue as
//! it is and commits it as one transaction, and the saves that arrive
//! meanwhile form the next batch. Nothing waits for a batch to fill (a save
//! alone is committed at once); batches grow only with the contention they
//! relieve.
//!
//! In a batch of `k` saves, each save is still its own fenced UPDATE
//! (`reservation`, `lock_task` and `lock_epoch` checked against its token),
//! and its release, when asked, follows it in the same transaction. A save
//! whose token no longer holds the lock is refused alone (nothing of it is
//! written; the others commit). Then the counter is taken once, last, for
//! all `k`: revisions `last - k + 1 ..= last` in the batch's order, one
//! multi-row UPDATE of the nodes' revisions and one multi-row INSERT of the
//! change rows, one COMMIT. Any other error (a name taken, a lost
//! connection, a deadlock) rolls the batch back and each of its saves is
//! retried in a transaction of its own, so an error belongs to the save
//! that caused it.
//!
//! A batch runs in its own tokio task: a caller that gives up (an HTTP
//! client going away drops its handler) cannot cut a batch short that
//! carries other callers' saves, nor leave its outcome unknown to them.

use super::changes::CounterTurn;
use super::SqlStore;
use crate::types::*;
use crate::{StoreError, StoreResult};
use ferric_core::Node;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

/// A save checked by [`SqlStore::prepare_save`], waiting for its batch.
pub(crate) struct SaveRequest {
    pub(super) token: LockToken,
    pub(super) node: Node,
    pub(super) release: bool,
}

pub(super) type SaveOutcome = StoreResult<(Node, Option<Release>)>;

struct PendingSave {
    /// Which caller's (see `SaveBatcher::next_id`).
    id: u64,
    req: SaveRequest,
    reply: oneshot::Sender<SaveOutcome>,
}

/// The queue of saves and the one running batch of a store (shared by its
/// clones).
#[derive(Default)]
pub(super) struct SaveBatcher {
    queue: std::sync::Mutex<Vec<PendingSave>>,
    /// Held by the running batch (moved into its task).
    running: Arc<Mutex<()>>,
    batches: AtomicU64,
    saves: AtomicU64,
    retried: AtomicU64,
    /// Off: every save commits alone (`SqlStore::set_group_commit`).
    off: AtomicBool,
    /// Numbers the saves, so that a caller knows its own in a batch.
    next_id: AtomicU64,
}

/// What the batcher has done since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveBatchStats {
    /// Transactions that committed (or tried to) more than one save.
    pub batches: u64,
    /// Saves committed in those batches.
    pub batched_saves: u64,
    /// Batches rolled back and retried one save at a time.
    pub retried_batches: u64,
}

impl SaveBatcher {
    fn push(&self, p: PendingSave) {
        // A poisoned queue only means a thread panicked while pushing or
        // taking: the Vec itself is intact.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(p);
    }

    fn take(&self) -> Vec<PendingSave> {
        std::mem::take(
            &mut *self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The error every save of a batch gets when its COMMIT fails (one
/// `sqlx::Error` cannot be handed to several callers): the same text, and
/// still "unavailable" when the original was.
fn shared_failure(e: &StoreError) -> StoreError {
    let text = format!("the group commit of this save failed: {e}");
    StoreError::Database(if e.is_unavailable() {
        sqlx::Error::Io(std::io::Error::other(text))
    } else {
        sqlx::Error::Protocol(text)
    })
}

impl SqlStore {
    /// The fenced save (`Store::save_node`, `Store::save_node_and_release`),
    /// committed in a batch with whatever other saves of this process are
    /// waiting (see the module documentation).
    pub(super) async fn save_node_impl(
        &self,
        token: &LockToken,
        n: &Node,
        release: bool,
    ) -> SaveOutcome {
        let req = Self::prepare_save(token, n, release)?;
        if self.saves.off.load(Ordering::Relaxed) {
            return self.save_one(&req).await;
        }
        let (reply, mut outcome) = oneshot::channel();
        let batcher = &self.saves;
        let id = batcher.next_id.fetch_add(1, Ordering::Relaxed);
        batcher.push(PendingSave { id, req, reply });
        let running = match batcher.running.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                tracing::debug!("waiting for the running batch of node saves");
                tokio::select! {
                    biased;
                    // Taken by the running batch (or a later one).
                    r = &mut outcome => return r.unwrap_or_else(|_| Err(batch_gone())),
                    g = batcher.running.clone().lock_owned() => g,
                }
            }
        };
        // This save is either still queued (it goes in this batch) or in a
        // batch that already ran or runs now (the reply comes from there).
        let batch = batcher.take();
        match batch.as_slice() {
            [] => drop(running),
            // Only this caller's save: nobody else's outcome rides on it, so
            // it runs here (no task, no clone of the store).
            [p] if p.id == id => {
                let result = self.save_one(&p.req).await;
                drop(running);
                return result;
            }
            _ => {
                let store = self.clone();
                tokio::spawn(async move { store.run_save_batch(batch, running).await });
            }
        }
        outcome.await.unwrap_or_else(|_| Err(batch_gone()))
    }

    /// Turn group commit off (every save in a transaction of its own, as
    /// before it existed) or back on, for this store and its clones. On by
    /// default; `ferric bench scale` measures its saves both ways.
    pub fn set_group_commit(&self, on: bool) {
        self.saves.off.store(!on, Ordering::Relaxed);
    }

    /// How many saves were committed together so far.
    pub fn save_batch_stats(&self) -> SaveBatchStats {
        SaveBatchStats {
            batches: self.saves.batches.load(Ordering::Relaxed),
            batched_saves: self.saves.saves.load(Ordering::Relaxed),
            retried_batches: self.saves.retried.load(Ordering::Relaxed),
        }
    }

    /// A batch in its own task (a lone save of the leading caller runs in
    /// that caller instead).
    async fn run_save_batch(&self, mut batch: Vec<PendingSave>, _running: OwnedMutexGuard<()>) {
        if batch.len() == 1 {
            if let Some(p) = batch.pop() {
                let _ = p.reply.send(self.save_one(&p.req).await);
            }
            return;
        }
        // One order for the row locks of every batch (a batch's nodes are
        // locked by its tasks, so another process never writes them, but
        // the order costs nothing).
        batch.sort_by_key(|p| p.req.token.node);
        self.saves.batches.fetch_add(1, Ordering::Relaxed);
        self.saves
            .saves
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let reqs: Vec<&SaveRequest> = batch.iter().map(|p| &p.req).collect();
        match self.save_many(&reqs).await {
            Ok(outcomes) => {
                for (p, o) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(o);
                }
            }
            Err(BatchError::Commit(e)) => {
                tracing::warn!("the commit of {} node saves failed: {e}", reqs.len());
                for p in batch {
                    let _ = p.reply.send(Err(shared_failure(&e)));
                }
            }
            Err(BatchError::Statement(e)) => {
                tracing::debug!(
                    "a batch of {} node saves was rolled back ({e}); saving each alone",
                    reqs.len()
                );
                self.saves.retried.fetch_add(1, Ordering::Relaxed);
                for p in batch {
                    let _ = p.reply.send(self.save_one(&p.req).await);
                }
            }
        }
    }

    /// Several saves in one transaction (see the module documentation).
    /// `Ok` holds each save's own outcome (a fenced refusal is one);
    /// `Err` means nothing was written.
    async fn save_many(&self, reqs: &[&SaveRequest]) -> Result<Vec<SaveOutcome>, BatchError> {
        let _g = self.write_guard().await;
        let mut turn = CounterTurn::default();
        let mut tx = self.begin_write().await?;
        let mut outcomes: Vec<SaveOutcome> = Vec::with_capacity(reqs.len());
        for req in reqs {
            match self.save_statement(&mut tx, req).await? {
                None => outcomes.push(Err(self.diagnose_fenced(&mut tx, &req.token).await)),
                Some(saved) => {
                    let released = self.finish_release(&mut tx, req, saved.released).await?;
                    outcomes.push(Ok((saved.node, released)));
                }
            }
        }
        let saved = outcomes.iter().filter(|o| o.is_ok()).count() as i64;
        if saved == 0 {
            tx.rollback().await.map_err(BatchError::statement)?;
            return Ok(outcomes);
        }
        // The counter last, once: this batch's revisions in its order.
        let last = self.bump_revisions(&mut tx, saved, &mut turn).await?;
        #[cfg(feature = "testing")]
        crate::testing::hold_revision_if_triggered().await;
        let mut rev = last - saved;
        let mut nodes: Vec<&Node> = Vec::with_capacity(saved as usize);
        for (node, released) in outcomes.iter_mut().flatten() {
            rev += 1;
            node.revision = rev;
            if let Some(granted) = released
                .as_mut()
                .and_then(|r| r.granted_to.as_mut())
                .and_then(|g| g.node.as_mut())
            {
                // Read before the stamp: the row carries this revision now.
                granted.revision = rev;
            }
            nodes.push(node);
        }
        self.write_revisions(&mut tx, &nodes).await?;
        self.record_changes(&mut tx, ChangeKind::Updated, &nodes)
            .await?;
        tx.commit()
            .await
            .map_err(|e| BatchError::Commit(e.into()))?;
        for (o, req) in outcomes.iter().zip(reqs) {
            if let Ok((_, Some(r))) = o {
                self.wake_sqlite_grantee(req.token.node, r);
            }
        }
        Ok(outcomes)
    }
}

/// Why a batch wrote nothing.
enum BatchError {
    /// A statement failed: the transaction is rolled back (dropped), and
    /// each save is retried alone.
    Statement(StoreError),
    /// The COMMIT failed: its outcome is the database's to say, so it is
    /// not retried (a retried save_and_release could find its own release
    /// committed and report the lock lost).
    Commit(StoreError),
}

impl BatchError {
    fn statement(e: impl Into<StoreError>) -> BatchError {
        BatchError::Statement(e.into())
    }
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> BatchError {
        BatchError::Statement(e)
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> BatchError {
        BatchError::Statement(e.into())
    }
}

/// The batch carrying a save ended without a reply: its task panicked or
/// its runtime shut down. Whether the save committed is unknown.
fn batch_gone() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conformance::MixedSaves;
    use crate::testing::{register, Engine, TestStore};
    use crate::Store;
    use std::time::Duration;

    /// Holds the batcher while every save of a round queues, so that they
    /// are all committed in one batch; the round's checks then hold for a
    /// batch of every fate, and with a taken name (rolled back, each save
    /// retried alone).
    async fn one_batch_of_every_fate(engine: Engine) {
        let Some(t) = TestStore::open(engine).await else {
            return;
        };
        let store: Arc<dyn Store> = t.store.clone();
        register(&*store, "cond-a").await;
        register(&*store, "cond-b").await;
        for (round, duplicate) in [(0, false), (1, true)] {
            let before = t.store.save_batch_stats();
            let saves = MixedSaves::prepare(&*store, round, duplicate).await;
            let running = t.store.saves.running.clone().lock_owned().await;
            let started = saves.spawn(store.clone());
            let mut queued = 0;
            for _ in 0..500 {
                queued = t.store.saves.queue.lock().unwrap().len();
                if queued == saves.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(queued, saves.len(), "every save queued");
            drop(running);
            let n = saves.len();
            saves.check(&*store, started).await;
            let after = t.store.save_batch_stats();
            assert_eq!(
                (
                    after.batches - before.batches,
                    after.batched_saves - before.batched_saves,
                    after.retried_batches - before.retried_batches
                ),
                (1, n as u64, u64::from(duplicate)),
                "one batch of {n}"
            );
        }
        t.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_batch_of_every_fate_sqlite() {
        one_batch_of_every_fate(Engine::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_batch_of_every_fate_postgres() {
        one_batch_of_every_fate(Engine::Postgres).await;
    }

    /// A save alone is not held back waiting for company: it is committed
    /// in a transaction of its own, not counted as a batch.
    #[tokio::test]
    async fn a_save_alone_is_committed_at_once_and_not_counted_as_a_batch() {
        let t = TestStore::open(Engine::Sqlite).await.unwrap();
        let s: &dyn Store = &*t.store;
        register(s, "cond-a").await;
        let n = crate::testing::fake_node(s, "alone", ferric_core::ProvisionState::Enroll).await;
        let token = s
            .try_acquire(
                n,
                &Claim {
                    holder: "cond-a".into(),
                    task_id: uuid::Uuid::new_v4(),
                    purpose: "edit".into(),
                },
            )
            .await
            .unwrap();
        let node = s.get_node(&n.into()).await.unwrap();
        let before = t.store.save_batch_stats();
        let saved = tokio::time::timeout(Duration::from_secs(5), s.save_node(&token, &node))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(saved.revision, node.revision + 1);
        assert_eq!(t.store.save_batch_stats(), before);
        t.cleanup().await;
    }
}
