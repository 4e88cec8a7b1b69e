//! The audit log handle: opening, the recording hot path, proofs and the `AuditSink` methods.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crossbeam_channel::{Sender, bounded, unbounded};
use crossbeam_utils::Backoff;
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OpenFlags, params};

use super::checkpoint::SignedCheckpoint;
use super::config::{AuditConfig, AuditStats, Durability, Overflow, WitnessConfig};
use super::error::{AuditError, storage};
use super::intake::{Intake, Lane};
use super::merkle::{Tree, TreeError, leaf_hash};
use super::record::{AuditRecord, StoredRecord};
use super::signer::CheckpointSigner;
use super::sink::AuditSink;
use super::store::{MEMORY_DB, SCHEMA, load_material, open_conn, tail_conn};
use super::verify::{TamperKind, VerifyReport, tamper, verify_material};
use super::witness;
use super::writer::{Counters, Ctl, Shared, Writer};

/// The default [`AuditSink`]: records as leaves of an RFC 6962 Merkle tree in SQLite (WAL), signed
/// C2SP checkpoints every N records or T ms, one writer thread draining bounded per-thread-lane
/// queues in group commits. See `docs/audit.md`.
pub struct AuditLog {
    intake: Arc<Intake>,
    ctl: Sender<Ctl>,
    shared: Arc<Shared>,
    pub(crate) reader: Mutex<Connection>,
    config: AuditConfig,
    public_key: [u8; 32],
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The witness of a file-backed log being opened.
struct WitnessState {
    path: PathBuf,
    /// The witness note, `None` when the file does not exist.
    note: Option<String>,
    accept_missing: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.config.origin)
            .field("size", &self.shared.tree.read().len())
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path` with its witness beside it (`<path>.witness`, see
    /// [`open_with_witness`](Self::open_with_witness)). An existing log is verified first; a log
    /// that does not verify, was created with another key, or does not extend its witness is
    /// refused, and nothing is written.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn open(
        path: &Path,
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        Self::open_with_witness(path, signer, config, WitnessConfig::default())
    }

    /// Opens (or creates) the log at `path`, keeping its latest signed checkpoint in the witness
    /// file `witness` names, too. Opening checks, in this order, before anything is written:
    /// the database verifies ([`AuditError::Tampered`]) with this signer's key
    /// ([`AuditError::WrongKey`]); the witness, if present, is a canonical checkpoint of this log
    /// signed by that key ([`AuditError::Witness`]); the log extends it (a consistency proof from
    /// the witnessed size and root to the stored tree) and still stores a checkpoint covering it
    /// ([`AuditError::WitnessNotExtended`]); a log with records or checkpoints has a witness
    /// unless `witness.accept_missing` ([`AuditError::WitnessMissing`]). After each new
    /// checkpoint is durable in the database the writer replaces the witness atomically.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn open_with_witness(
        path: &Path,
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
        witness: WitnessConfig,
    ) -> Result<Self, AuditError> {
        let wpath = witness
            .path
            .clone()
            .unwrap_or_else(|| witness::default_path(path));
        let note = witness::read(&wpath)?;
        if let Some(dir) = wpath.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            // Found now rather than at the first checkpoint, where it would stop the writer.
            return Err(AuditError::Witness {
                witness: wpath.display().to_string(),
                reason: format!("its directory `{}` does not exist", dir.display()),
            });
        }
        let target = path.display().to_string();
        if let Some(note) = &note
            && !path.exists()
        {
            // The whole database is gone: refuse before creating an empty one.
            let w = witness::parse(
                &wpath,
                note,
                &config.origin,
                signer.name(),
                &signer.public_key(),
            )?;
            if w.size > 0 {
                return Err(AuditError::WitnessNotExtended {
                    db: target,
                    witness: wpath.display().to_string(),
                    tamper: tamper(
                        0,
                        TamperKind::WitnessNotExtended,
                        format!(
                            "the log (no database) does not extend the witnessed checkpoint of size {}",
                            w.size
                        ),
                    ),
                });
            }
        }
        let writer = open_conn(&target, false)?;
        writer
            .execute_batch("PRAGMA journal_mode=WAL;")
            .map_err(storage)?;
        Self::start(
            writer,
            || open_conn(&target, false),
            target.clone(),
            signer,
            config,
            Some(WitnessState {
                path: wpath,
                note,
                accept_missing: witness.accept_missing,
            }),
        )
    }

    /// A log kept entirely in memory (same behaviour, nothing on disk).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn in_memory(
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        let n = MEMORY_DB.fetch_add(1, Ordering::Relaxed);
        // A shared-cache in-memory database (no size cap, private to the process). In shared-cache
        // mode a reader's table lock makes the writer's statement fail with
        // SQLITE_LOCKED_SHAREDCACHE at once (the busy timeout does not apply); rusqlite's
        // `unlock_notify` feature makes the statement wait for the lock instead.
        let uri = format!(
            "file:nodus-audit-{}-{n}?mode=memory&cache=shared",
            std::process::id()
        );
        let writer = open_conn(&uri, true)?;
        Self::start(
            writer,
            || open_conn(&uri, true),
            "<memory>".into(),
            signer,
            config,
            None,
        )
    }

    fn start(
        writer: Connection,
        reader: impl FnOnce() -> Result<Connection, AuditError>,
        label: String,
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
        witness: Option<WitnessState>,
    ) -> Result<Self, AuditError> {
        let sync = match config.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        writer
            .execute_batch(&format!("PRAGMA synchronous={sync}; {SCHEMA}"))
            .map_err(storage)?;
        let public_key = signer.public_key();
        let pk_b64 = B64.encode(public_key);
        let m = load_material(&writer)?;
        let fresh = m.records.is_empty() && m.checkpoints.is_empty();
        // The log's own origin and key name (a fresh log takes them from the configuration).
        let (origin, key_name) = if fresh {
            (config.origin.clone(), signer.name().to_owned())
        } else {
            (m.origin.clone(), m.key_name.clone())
        };
        if !fresh && m.public_key != public_key {
            return Err(AuditError::WrongKey {
                expected: B64.encode(m.public_key),
                given: pk_b64,
            });
        }
        let witnessed = match &witness {
            Some(WitnessState {
                path,
                note: Some(note),
                ..
            }) => match witness::parse(path, note, &origin, &key_name, &public_key) {
                Ok(w) => Some(w),
                Err(e) => {
                    // The database's own checks come first (`Tampered`), then the witness's.
                    if let Some(t) = verify_material(&m, &public_key, None).problem {
                        return Err(AuditError::Tampered {
                            path: label,
                            tamper: t,
                        });
                    }
                    return Err(e);
                }
            },
            _ => None,
        };
        let report = verify_material(&m, &public_key, witnessed.as_ref());
        if let Some(t) = report.problem {
            return Err(match (&witness, t.kind) {
                (Some(w), TamperKind::WitnessNotExtended | TamperKind::UncoveredSignedHistory) => {
                    AuditError::WitnessNotExtended {
                        db: label,
                        witness: w.path.display().to_string(),
                        tamper: t,
                    }
                }
                _ => AuditError::Tampered {
                    path: label,
                    tamper: t,
                },
            });
        }
        if let Some(w) = &witness
            && w.note.is_none()
            && !fresh
            && !w.accept_missing
        {
            return Err(AuditError::WitnessMissing {
                db: label,
                witness: w.path.display().to_string(),
            });
        }
        // Every check passed: from here on, writing is allowed.
        if fresh {
            writer
                .execute(
                    "INSERT OR REPLACE INTO meta (k, v) VALUES ('origin', ?1), ('public_key', ?2), ('key_name', ?3), ('format', 'nodus-audit-v1')",
                    params![config.origin, pk_b64, signer.name()],
                )
                .map_err(storage)?;
        }
        let mut tree = Tree::new();
        for (_, leaf, _) in &m.records {
            tree.push(leaf_hash(leaf));
        }
        drop(m);
        let latest = match writer.query_row(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        ) {
            Ok(note) => SignedCheckpoint::from_note(note),
            Err(_) => None,
        };
        if let (Some(w), Some(l)) = (&witness, &latest)
            && w.note.is_none()
        {
            // `accept_missing`: start the witness from the latest checkpoint now.
            witness::write(&w.path, &l.note)?;
        }
        let reader = reader()?;
        let durable = AtomicU64::new(tree.len());
        let shared = Arc::new(Shared {
            durable,
            tree: RwLock::new(tree),
            latest: RwLock::new(latest),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            closed: AtomicBool::new(false),
            counters: Counters {
                written: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                fsyncs: AtomicU64::new(0),
                last_fsync_us: AtomicU64::new(0),
                max_fsync_us: AtomicU64::new(0),
            },
        });
        let intake = Arc::new(Intake::new(config.queue_capacity));
        let (ctl, ctl_rx) = unbounded();
        let w = Writer {
            conn: writer,
            intake: intake.clone(),
            ctl: ctl_rx,
            shared: shared.clone(),
            signer,
            config: config.clone(),
            witness: witness.map(|w| w.path),
        };
        let handle = std::thread::Builder::new()
            .name("nodus-audit-writer".into())
            .spawn(move || w.run())
            .map_err(storage)?;
        intake.set_writer(handle.thread().clone());
        Ok(AuditLog {
            intake,
            ctl,
            shared,
            reader: Mutex::new(reader),
            config,
            public_key,
            writer: Mutex::new(Some(handle)),
        })
    }

    fn durable_bound(&self, size: u64) -> Result<(), AuditError> {
        let len = self.shared.durable.load(Ordering::Acquire);
        if size > len {
            return Err(AuditError::Tree(TreeError::SizeTooLarge { size, len }));
        }
        Ok(())
    }

    /// The root of the first `size` records.
    ///
    /// # Errors
    /// [`AuditError::Tree`] for a size beyond the log.
    pub fn root(&self, size: u64) -> Result<[u8; 32], AuditError> {
        self.durable_bound(size)?;
        Ok(self.shared.tree.read().root(size)?)
    }

    /// The inclusion proof of record `index` in the tree of `size` records.
    ///
    /// # Errors
    /// [`AuditError::Tree`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, AuditError> {
        self.durable_bound(size)?;
        Ok(self.shared.tree.read().inclusion_proof(index, size)?)
    }

    /// The consistency proof between sizes `size1` and `size2`.
    ///
    /// # Errors
    /// [`AuditError::Tree`].
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<[u8; 32]>, AuditError> {
        self.durable_bound(size2)?;
        Ok(self.shared.tree.read().consistency_proof(size1, size2)?)
    }

    /// Every stored checkpoint, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, AuditError> {
        let conn = self.reader.lock();
        let mut stmt = conn
            .prepare("SELECT note FROM checkpoints ORDER BY size")
            .map_err(storage)?;
        let notes = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(notes
            .into_iter()
            .filter_map(SignedCheckpoint::from_note)
            .collect())
    }

    /// The last `n` records of an audit database file (offline, read-only).
    ///
    /// # Errors
    /// Storage errors.
    pub fn tail_db(db: &Path, n: usize) -> Result<Vec<StoredRecord>, AuditError> {
        let conn =
            Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
        tail_conn(&conn, n)
    }
}

impl AuditLog {
    #[inline]
    fn enqueue(&self, lane: &Lane, record: AuditRecord) -> Result<(), AuditError> {
        self.shared.check()?;
        match self.config.overflow {
            Overflow::DropWithMarker => match lane.queue.push(record) {
                Ok(()) => lane.count_enqueued(),
                Err(r) => lane.count_drop(r.time_ms),
            },
            Overflow::Block => {
                let mut r = record;
                let backoff = Backoff::new();
                while let Err(back) = lane.queue.push(r) {
                    r = back;
                    self.intake.wake();
                    self.shared.check()?;
                    if backoff.is_completed() {
                        std::thread::sleep(Duration::from_micros(50));
                    } else {
                        backoff.snooze();
                    }
                }
                lane.count_enqueued();
            }
        }
        Ok(())
    }
}

impl AuditSink for AuditLog {
    #[inline]
    fn check(&self) -> Result<(), AuditError> {
        self.shared.check()
    }

    #[inline]
    fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        let Some(lane) = self.intake.lane() else {
            return Err(AuditError::Closed);
        };
        // In flight from before the `closed` check until after the push (SeqCst pairs with
        // `shutdown`'s store of `closed` and its wait for zero): a record that passed the check
        // is in a lane before the writer's final drain.
        let gate = &lane.counters.in_flight;
        gate.fetch_add(1, Ordering::SeqCst);
        let result = self.enqueue(lane, record);
        gate.fetch_sub(1, Ordering::Release);
        if result.is_ok() {
            self.intake.nudge();
        }
        result
    }

    fn flush(&self) -> Result<SignedCheckpoint, AuditError> {
        self.shared.check()?;
        let (tx, rx) = bounded(1);
        self.ctl
            .send(Ctl::Flush(tx))
            .map_err(|_| AuditError::Closed)?;
        self.intake.wake();
        rx.recv()
            .map_err(|_| self.shared.check().err().unwrap_or(AuditError::Closed))?
    }

    fn verify(&self) -> Result<VerifyReport, AuditError> {
        // The latest checkpoint this log signed is its own witness: read it before the stored
        // state, so that state includes it (it is published after its commit).
        let witnessed = self
            .shared
            .latest
            .read()
            .as_ref()
            .map(|l| l.checkpoint.clone());
        let m = load_material(&self.reader.lock())?;
        Ok(verify_material(&m, &self.public_key, witnessed.as_ref()))
    }

    fn stats(&self) -> AuditStats {
        let c = &self.shared.counters;
        AuditStats {
            enqueued: self.intake.sum(|l| &l.enqueued),
            written: c.written.load(Ordering::Relaxed),
            dropped: self.intake.sum(|l| &l.dropped),
            max_queue_depth: self.intake.max_depth(),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            last_fsync_micros: c.last_fsync_us.load(Ordering::Relaxed),
            max_fsync_micros: c.max_fsync_us.load(Ordering::Relaxed),
        }
    }

    fn size(&self) -> Result<u64, AuditError> {
        Ok(self.shared.durable.load(Ordering::Acquire))
    }

    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        Ok(self.shared.latest.read().clone())
    }

    fn tail(&self, n: usize) -> Result<Vec<StoredRecord>, AuditError> {
        tail_conn(&self.reader.lock(), n)
    }

    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    fn shutdown(&self) -> Result<(), AuditError> {
        let Some(handle) = self.writer.lock().take() else {
            return self.shared.error.lock().clone().map_or(Ok(()), Err);
        };
        // Refuse new records first, wait for calls that already passed the check to finish
        // their push, then let the writer drain everything that was accepted.
        self.shared.closed.store(true, Ordering::SeqCst);
        let backoff = Backoff::new();
        while !self.intake.quiescent() {
            backoff.snooze();
        }
        let (tx, rx) = bounded(1);
        let result = match self.ctl.send(Ctl::Shutdown(tx)) {
            Ok(()) => {
                self.intake.wake();
                rx.recv().unwrap_or(Ok(()))
            }
            Err(_) => Ok(()),
        };
        let _ = handle.join();
        match self.shared.error.lock().clone() {
            Some(e) => Err(e),
            None => result,
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
