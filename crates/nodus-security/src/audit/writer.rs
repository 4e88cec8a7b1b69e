//! The writer thread: drains the intake, group-commits batches and signs checkpoints.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, params};

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::config::{AuditConfig, Durability};
use super::error::{AuditError, storage};
use super::intake::Intake;
use super::merkle::{Hash, Tree, leaf_hash, verify_consistency};
use super::note::{checkpoint_body, signature_line};
use super::record::{AuditRecord, Outcome, now_ms};
use super::signer::CheckpointSigner;
use super::witness;

/// Requests to the writer thread (records travel through the [`Intake`] lanes instead).
pub(crate) enum Ctl {
    Flush(Sender<Result<SignedCheckpoint, AuditError>>),
    Shutdown(Sender<Result<(), AuditError>>),
}

/// Writer-side counters (the recording side's are per lane, in the [`Intake`]).
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) last_fsync_us: AtomicU64,
    pub(crate) max_fsync_us: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) tree: RwLock<Tree>,
    /// Leaves committed (the tree may hold a batch's leaves before its commit).
    pub(crate) durable: AtomicU64,
    pub(crate) latest: RwLock<Option<SignedCheckpoint>>,
    pub(crate) failed: AtomicBool,
    pub(crate) error: Mutex<Option<AuditError>>,
    pub(crate) closed: AtomicBool,
    pub(crate) counters: Counters,
}

impl Shared {
    pub(crate) fn fail(&self, e: AuditError) -> AuditError {
        let stopped = AuditError::WriterStopped(e.to_string());
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(stopped.clone());
        }
        self.failed.store(true, Ordering::SeqCst);
        slot.clone().unwrap_or(stopped)
    }

    pub(crate) fn check(&self) -> Result<(), AuditError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(self
                .error
                .lock()
                .clone()
                .unwrap_or(AuditError::WriterStopped("unknown".into())));
        }
        // SeqCst: pairs with `shutdown` (see `record`).
        if self.closed.load(Ordering::SeqCst) {
            return Err(AuditError::Closed);
        }
        Ok(())
    }
}

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) intake: Arc<Intake>,
    pub(crate) ctl: Receiver<Ctl>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) signer: Arc<dyn CheckpointSigner>,
    pub(crate) config: AuditConfig,
    /// The witness file (file-backed logs), replaced after each durable checkpoint.
    pub(crate) witness: Option<PathBuf>,
}

const MAX_BATCH: usize = 8192;

/// Stops the log for good if the writer thread panics, so that no caller waits for it forever.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(AuditError::WriterStopped(
                "the audit writer thread panicked".into(),
            ));
        }
    }
}

impl Writer {
    pub(crate) fn run(mut self) {
        let _guard = PanicGuard(self.shared.clone());
        let mut last_cp = Instant::now();
        let mut batch: Vec<AuditRecord> = Vec::with_capacity(MAX_BATCH);
        let mut flushes: Vec<Sender<Result<SignedCheckpoint, AuditError>>> = Vec::new();
        let mut start = 0usize;
        loop {
            let mut shutdown: Option<Sender<Result<(), AuditError>>> = None;
            let mut disconnected = false;
            loop {
                match self.ctl.try_recv() {
                    Ok(Ctl::Flush(tx)) => flushes.push(tx),
                    Ok(Ctl::Shutdown(tx)) => shutdown = Some(tx),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            let stopping = shutdown.is_some() || disconnected;
            let force = !flushes.is_empty() || stopping;
            start = start.wrapping_add(1);
            let drained = if force {
                self.drain_forced(&mut batch, &mut last_cp, stopping)
            } else {
                self.intake.drain_into(&mut batch, MAX_BATCH, start);
                let n = batch.len();
                let due = last_cp.elapsed() >= self.config.checkpoint_interval;
                self.commit(&mut batch, false, due).map(|made| {
                    if made {
                        last_cp = Instant::now();
                    }
                    n
                })
            };
            match drained {
                Ok(n) => {
                    if force {
                        let latest = self.shared.latest.read().clone();
                        for f in flushes.drain(..) {
                            let _ = f.send(latest.clone().ok_or(AuditError::Closed));
                        }
                    }
                    if let Some(s) = shutdown {
                        let _ = s.send(Ok(()));
                        return;
                    }
                    if disconnected {
                        return;
                    }
                    if n == 0 {
                        self.park(last_cp);
                    }
                }
                Err(e) => {
                    let e = self.shared.fail(e);
                    for f in flushes.drain(..) {
                        let _ = f.send(Err(e.clone()));
                    }
                    if let Some(s) = shutdown.take() {
                        let _ = s.send(Err(e.clone()));
                    }
                    // Answer every request still queued, then stop for good (no retry).
                    while let Ok(m) = self.ctl.try_recv() {
                        match m {
                            Ctl::Flush(tx) => {
                                let _ = tx.send(Err(e.clone()));
                            }
                            Ctl::Shutdown(tx) => {
                                let _ = tx.send(Err(e.clone()));
                            }
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Sleeps until a record or a request arrives, or the next checkpoint is due.
    fn park(&self, last_cp: Instant) {
        let timeout = self
            .config
            .checkpoint_interval
            .saturating_sub(last_cp.elapsed())
            .max(Duration::from_millis(1));
        if self.intake.prepare_to_park() && self.ctl.is_empty() {
            std::thread::park_timeout(timeout);
        }
        self.intake.unparked();
    }

    /// For a flush or shutdown: writes everything queued when the request was seen (when
    /// `stopping`, everything queued at all), in batches of at most `MAX_BATCH`, and ends with a
    /// checkpoint covering it. Records enqueued before the request are all in the lanes by now (the
    /// request was sent after them), so taking each lane's current length covers them, without
    /// chasing records that keep arriving.
    fn drain_forced(
        &mut self,
        batch: &mut Vec<AuditRecord>,
        last_cp: &mut Instant,
        stopping: bool,
    ) -> Result<usize, AuditError> {
        let intake = self.intake.clone();
        let mut total = 0usize;
        loop {
            for lane in intake.lanes() {
                let mut left = lane.queue.len();
                while left > 0 {
                    let Some(r) = lane.queue.pop() else { break };
                    batch.push(r);
                    left -= 1;
                    if batch.len() >= MAX_BATCH {
                        total += batch.len();
                        let due = last_cp.elapsed() >= self.config.checkpoint_interval;
                        if self.commit(batch, false, due)? {
                            *last_cp = Instant::now();
                        }
                    }
                }
            }
            // When stopping, records that raced the `closed` flag are taken too.
            if !stopping || intake.is_empty() {
                break;
            }
        }
        total += batch.len();
        self.commit(batch, true, true)?;
        *last_cp = Instant::now();
        Ok(total)
    }

    /// Writes the batch (with a gap record first if records were dropped) in one transaction. A
    /// checkpoint is signed at every multiple of `checkpoint_every` records inside the batch, and at
    /// its end when forced (flush, shutdown) or due (interval). Returns whether a checkpoint was made.
    fn commit(
        &mut self,
        batch: &mut Vec<AuditRecord>,
        force: bool,
        due: bool,
    ) -> Result<bool, AuditError> {
        let c = &self.shared.counters;
        let drops = self.intake.take_pending_drops(now_ms());
        if drops.count > 0 {
            let (dropped, first, last) = (drops.count, drops.first_ms, drops.last_ms);
            let gap = AuditRecord::new("audit.gap", Outcome::Error)
                .reason("Dropped")
                .detail("dropped", dropped.to_string())
                .detail("first_ms", first.to_string())
                .detail("last_ms", last.to_string());
            batch.insert(0, gap);
        }
        let mut last_cp = self
            .shared
            .latest
            .read()
            .as_ref()
            .map(|l| (l.checkpoint.size, l.checkpoint.root));
        let had_cp = last_cp.is_some();
        let base = self.shared.durable.load(Ordering::Acquire);
        if batch.is_empty() {
            // Nothing to write: only a checkpoint can be owed (records written since the last
            // one, or a first checkpoint on a flush).
            let behind = base > last_cp.map_or(0, |(s, _)| s);
            let owed = (behind && (force || due)) || (force && !had_cp);
            if !owed {
                return Ok(false);
            }
        }
        let every = self.config.checkpoint_every.max(1);
        // A commit that signs a checkpoint is followed by a witness write; the witness must never
        // get ahead of what is durable, so under `Normal` that commit is fsync'd too.
        let end = base + batch.len() as u64;
        let last_size = last_cp.map_or(0, |(s, _)| s);
        let will_sign = end.saturating_sub(last_size) >= every
            || (end > last_size && (force || due))
            || (force && !had_cp);
        let sync_up =
            will_sign && self.witness.is_some() && self.config.durability == Durability::Normal;
        if sync_up {
            self.conn
                .execute_batch("PRAGMA synchronous=FULL")
                .map_err(storage)?;
        }
        let start = Instant::now();
        let tx = self.conn.transaction().map_err(storage)?;
        let mut made: Option<SignedCheckpoint> = None;
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO records (seq, leaf, hash) VALUES (?1, ?2, ?3)")
                .map_err(storage)?;
            let mut pending: Vec<Hash> = Vec::with_capacity(batch.len());
            for (i, r) in batch.iter().enumerate() {
                let seq = base + i as u64;
                let leaf = r.leaf_bytes(seq);
                let h = leaf_hash(&leaf);
                stmt.execute(params![seq as i64, leaf, h.as_slice()])
                    .map_err(storage)?;
                pending.push(h);
                let size = seq + 1;
                if size - last_cp.map_or(0, |(s, _)| s) >= every {
                    let cp = sign_checkpoint(
                        &self.shared,
                        &*self.signer,
                        &self.config.origin,
                        &tx,
                        &mut pending,
                        size,
                        last_cp,
                    )?;
                    last_cp = Some((size, cp.checkpoint.root));
                    made = Some(cp);
                }
            }
            let size = base + batch.len() as u64;
            let behind = size > last_cp.map_or(0, |(s, _)| s);
            if (behind && (force || due)) || (force && !had_cp && made.is_none()) {
                let cp = sign_checkpoint(
                    &self.shared,
                    &*self.signer,
                    &self.config.origin,
                    &tx,
                    &mut pending,
                    size,
                    last_cp,
                )?;
                made = Some(cp);
            } else {
                self.shared.tree.write().extend(pending.drain(..));
            }
        }
        tx.commit().map_err(storage)?;
        let micros = start.elapsed().as_micros() as u64;
        if sync_up {
            self.conn
                .execute_batch("PRAGMA synchronous=NORMAL")
                .map_err(storage)?;
        }
        self.shared
            .durable
            .store(base + batch.len() as u64, Ordering::Release);
        c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        if self.config.durability == Durability::Full {
            c.fsyncs.fetch_add(1, Ordering::Relaxed);
            c.last_fsync_us.store(micros, Ordering::Relaxed);
            c.max_fsync_us.fetch_max(micros, Ordering::Relaxed);
        }
        batch.clear();
        let was_made = made.is_some();
        if let Some(m) = made {
            // Durable in the database first, then the witness, then published.
            if let Some(w) = &self.witness {
                witness::write(w, &m.note)?;
            }
            *self.shared.latest.write() = Some(m);
        }
        Ok(was_made)
    }
}

/// Appends `pending` leaves to the tree and signs and stores the checkpoint of `size`, after
/// checking it is consistent with the previous one (a checkpoint never contradicts an earlier one).
fn sign_checkpoint(
    shared: &Shared,
    signer: &dyn CheckpointSigner,
    origin: &str,
    tx: &rusqlite::Transaction<'_>,
    pending: &mut Vec<Hash>,
    size: u64,
    prev: Option<(u64, Hash)>,
) -> Result<SignedCheckpoint, AuditError> {
    let mut t = shared.tree.write();
    t.extend(pending.drain(..));
    let root = t.root(size)?;
    if let Some((ps, pr)) = prev.filter(|(s, _)| *s > 0) {
        let proof = t.consistency_proof(ps, size)?;
        if !verify_consistency(ps, size, &pr, &root, &proof) {
            return Err(AuditError::Storage(
                "a new checkpoint would contradict the previous one".into(),
            ));
        }
    }
    drop(t);
    let body = checkpoint_body(origin, size, &root);
    let sig = signer.sign(body.as_bytes())?;
    let note = format!(
        "{body}\n{}",
        signature_line(signer.name(), &signer.public_key(), &sig)
    );
    tx.execute(
        "INSERT OR REPLACE INTO checkpoints (size, note, time_ms) VALUES (?1, ?2, ?3)",
        params![size as i64, note, now_ms() as i64],
    )
    .map_err(storage)?;
    Ok(SignedCheckpoint {
        checkpoint: Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        },
        note,
    })
}
