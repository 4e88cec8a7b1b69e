//! The SQLite-backed audit log: an asynchronous group-committing writer, signed checkpoints,
//! verification and export.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, unbounded};
use crossbeam_utils::Backoff;
use ed25519_dalek::{Signer as _, SigningKey};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::intake::{Intake, Lane};
use super::merkle::{Hash, Tree, TreeError, leaf_hash, verify_consistency};
use super::note::{
    checkpoint_body, parse_checkpoint_body, parse_verifier_key, signature_line, verifier_key,
    verify_note,
};
use super::record::{AuditRecord, Outcome, StoredRecord, now_ms};

/// Why an audit operation failed. Cloneable: a writer failure is kept and returned to every later
/// call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database could not be opened, read or written.
    #[error("audit storage error: {0}")]
    Storage(String),
    /// The writer stopped after an I/O or fsync error; it does not retry (a retried fsync can lie).
    #[error("the audit writer stopped after an error and accepts nothing more: {0}")]
    WriterStopped(String),
    /// The log was shut down.
    #[error("the audit log is shut down")]
    Closed,
    /// The checkpoint signer failed.
    #[error("checkpoint signing failed: {0}")]
    Signing(String),
    /// The stored log does not verify; it was not opened for writing.
    #[error("the audit log at `{path}` does not verify: {tamper}")]
    Tampered {
        /// The database path.
        path: String,
        /// The first problem.
        tamper: Tamper,
    },
    /// The log was created with another signing key.
    #[error("the audit log was created with signing key `{expected}`, not `{given}`")]
    WrongKey {
        /// The key id recorded in the log.
        expected: String,
        /// The key id of the signer given.
        given: String,
    },
    /// A proof was asked for sizes or indexes the tree does not have.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// An export file could not be written or read.
    #[error("audit export `{path}`: {reason}")]
    Export {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

/// Signs checkpoints (Ed25519). Implemented by [`Ed25519Signer`] and by nodus-core over the vault.
pub trait CheckpointSigner: Send + Sync {
    /// The signed-note key name (usually the log origin).
    fn name(&self) -> &str;
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Signs `message`.
    ///
    /// # Errors
    /// [`AuditError::Signing`].
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], AuditError>;
}

/// A [`CheckpointSigner`] over an in-memory Ed25519 key (for tests, tools and standalone use).
pub struct Ed25519Signer {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Ed25519Signer {
    /// A signer named `name` over `key`.
    pub fn from_signing_key(name: impl Into<String>, key: SigningKey) -> Self {
        Ed25519Signer {
            name: name.into(),
            key,
        }
    }

    /// A signer over a fresh random key.
    ///
    /// # Errors
    /// [`AuditError::Signing`] when the OS RNG fails.
    pub fn generate(name: impl Into<String>) -> Result<Self, AuditError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed).map_err(|e| AuditError::Signing(e.to_string()))?;
        Ok(Self::from_signing_key(name, SigningKey::from_bytes(&seed)))
    }
}

impl CheckpointSigner for Ed25519Signer {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], AuditError> {
        Ok(self.key.sign(message).to_bytes())
    }
}

/// A C2SP tlog checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The log origin.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The tree root.
    #[serde(with = "b64_hash")]
    pub root: [u8; 32],
}

/// A checkpoint with its full signed note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note text (body, blank line, signature line).
    pub note: String,
}

mod b64_hash {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = B64.decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a root is 32 bytes"))
    }
}

/// When a record counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Durability {
    /// After the batch's commit is fsync'd (SQLite `synchronous=FULL`): survives power loss.
    Full,
    /// After the batch's commit (`synchronous=NORMAL` in WAL mode): survives a process crash; the
    /// last commits may be lost on power loss.
    Normal,
}

/// What `record` does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// The caller waits for room.
    Block,
    /// The record is dropped and counted; the writer then appends a signed `audit.gap` record with
    /// the count and time range, so the loss itself is in the log.
    DropWithMarker,
}

/// Configuration of an [`AuditLog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The checkpoint origin line (and signed-note key name), e.g. `nodus.local/audit`.
    pub origin: String,
    /// Durability mode.
    pub durability: Durability,
    /// Overflow policy.
    pub overflow: Overflow,
    /// Queue capacity in records.
    pub queue_capacity: usize,
    /// Sign a checkpoint at least every this many records.
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: "nodus.local/audit".into(),
            durability: Durability::Full,
            overflow: Overflow::Block,
            queue_capacity: 65_536,
            checkpoint_every: 1024,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Writer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditStats {
    /// Records accepted into the queue.
    pub enqueued: u64,
    /// Records written (gap records included).
    pub written: u64,
    /// Records dropped under `DropWithMarker`.
    pub dropped: u64,
    /// Deepest the queue has been (sampled every 64th enqueue).
    pub max_queue_depth: u64,
    /// Group commits.
    pub batches: u64,
    /// Fsync'd commits (`Full` mode).
    pub fsyncs: u64,
    /// Duration of the last fsync'd commit, µs.
    pub last_fsync_micros: u64,
    /// Longest fsync'd commit, µs.
    pub max_fsync_micros: u64,
}

/// What kind of tampering verification found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// A record's bytes changed.
    ModifiedRecord,
    /// A record is missing (deleted).
    MissingRecord,
    /// A record is stored at another index than it was written at.
    ReorderedRecord,
    /// Records below the latest checkpoint's size are gone.
    TruncatedTail,
    /// A checkpoint's signature does not verify with the log's key.
    BadCheckpointSignature,
    /// A checkpoint's root does not match the records, or contradicts another checkpoint.
    InconsistentCheckpoint,
    /// Something unparseable.
    Malformed,
}

/// The first problem verification found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?} at index {index}: {detail}")]
pub struct Tamper {
    /// The first bad index.
    pub index: u64,
    /// What is wrong.
    pub kind: TamperKind,
    /// Details.
    pub detail: String,
}

/// The result of verifying a log or an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `true` when nothing is wrong.
    pub valid: bool,
    /// Records in the log.
    pub size: u64,
    /// Stored checkpoints.
    pub checkpoints: usize,
    /// The latest checkpoint.
    pub latest: Option<Checkpoint>,
    /// The first problem, if any.
    pub problem: Option<Tamper>,
}

/// Summary of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Records exported.
    pub records: u64,
    /// Checkpoints exported.
    pub checkpoints: usize,
}

/// The sink every audited action goes to. Object safe; `AuditLog` is the default.
pub trait AuditSink: Send + Sync {
    /// Enqueues a record. The hot path: it allocates nothing and, under `DropWithMarker`, never
    /// blocks. After a writer failure every call returns the stored error.
    ///
    /// # Errors
    /// [`AuditError::WriterStopped`] or [`AuditError::Closed`].
    fn record(&self, record: AuditRecord) -> Result<(), AuditError>;
    /// Whether the sink can take records now: `Err` once the writer stopped or the log was shut
    /// down. The dispatcher asks before running a handler, so nothing acts unaudited. Cheap (an
    /// atomic load); the default says yes.
    ///
    /// # Errors
    /// The error `record` would return.
    fn check(&self) -> Result<(), AuditError> {
        Ok(())
    }
    /// A barrier: returns once everything enqueued before it is durable, with the checkpoint
    /// covering it.
    ///
    /// # Errors
    /// The writer's error.
    fn flush(&self) -> Result<SignedCheckpoint, AuditError>;
    /// Re-derives the tree from the stored records and checks every stored checkpoint.
    ///
    /// # Errors
    /// Storage errors (tampering is reported in the report, not as an error).
    fn verify(&self) -> Result<VerifyReport, AuditError>;
    /// Writer counters.
    fn stats(&self) -> AuditStats;
    /// Records durable in the tree.
    ///
    /// # Errors
    /// Storage errors.
    fn size(&self) -> Result<u64, AuditError>;
    /// The latest stored checkpoint.
    ///
    /// # Errors
    /// Storage errors.
    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError>;
    /// The last `n` records, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn tail(&self, n: usize) -> Result<Vec<StoredRecord>, AuditError>;
    /// The log's Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Drains the queue, signs a final checkpoint and joins the writer. Idempotent.
    ///
    /// # Errors
    /// The writer's error.
    fn shutdown(&self) -> Result<(), AuditError>;
}

/// Requests to the writer thread (records travel through the [`Intake`] lanes instead).
enum Ctl {
    Flush(Sender<Result<SignedCheckpoint, AuditError>>),
    Shutdown(Sender<Result<(), AuditError>>),
}

/// Writer-side counters (the recording side's are per lane, in the [`Intake`]).
struct Counters {
    written: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    last_fsync_us: AtomicU64,
    max_fsync_us: AtomicU64,
}

struct Shared {
    tree: RwLock<Tree>,
    /// Leaves committed (the tree may hold a batch's leaves before its commit).
    durable: AtomicU64,
    latest: RwLock<Option<SignedCheckpoint>>,
    failed: AtomicBool,
    error: Mutex<Option<AuditError>>,
    closed: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn fail(&self, e: AuditError) -> AuditError {
        let stopped = AuditError::WriterStopped(e.to_string());
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(stopped.clone());
        }
        self.failed.store(true, Ordering::SeqCst);
        slot.clone().unwrap_or(stopped)
    }

    fn check(&self) -> Result<(), AuditError> {
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

/// The default [`AuditSink`]: records as leaves of an RFC 6962 Merkle tree in SQLite (WAL), signed
/// C2SP checkpoints every N records or T ms, one writer thread draining bounded per-thread-lane
/// queues in group commits. See `docs/audit.md`.
pub struct AuditLog {
    intake: Arc<Intake>,
    ctl: Sender<Ctl>,
    shared: Arc<Shared>,
    reader: Mutex<Connection>,
    config: AuditConfig,
    public_key: [u8; 32],
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.config.origin)
            .field("size", &self.shared.tree.read().len())
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL, time_ms INTEGER NOT NULL);
";

static MEMORY_DB: AtomicU64 = AtomicU64::new(0);

fn open_conn(target: &str, uri: bool) -> Result<Connection, AuditError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if uri {
        flags |= OpenFlags::SQLITE_OPEN_URI;
    }
    let c = Connection::open_with_flags(target, flags).map_err(storage)?;
    c.busy_timeout(Duration::from_secs(10)).map_err(storage)?;
    Ok(c)
}

/// Everything a verification needs, from a database or an export.
struct Material {
    origin: String,
    key_name: String,
    public_key: [u8; 32],
    records: Vec<(u64, Vec<u8>, Option<Vec<u8>>)>,
    checkpoints: Vec<(u64, String)>,
}

fn load_material(conn: &Connection) -> Result<Material, AuditError> {
    let meta = |k: &str| -> Result<Option<String>, AuditError> {
        conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| {
            r.get::<_, String>(0)
        })
        .map(Some)
        .or_else(|e| {
            if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
                Ok(None)
            } else {
                Err(storage(e))
            }
        })
    };
    let origin = meta("origin")?.unwrap_or_default();
    let key_name = meta("key_name")?.unwrap_or_else(|| origin.clone());
    let pk = meta("public_key")?
        .and_then(|p| B64.decode(p).ok())
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .unwrap_or([0; 32]);
    let mut stmt = conn
        .prepare("SELECT seq, leaf, hash FROM records ORDER BY seq")
        .map_err(storage)?;
    let records = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Vec<u8>>(1)?,
                Some(r.get::<_, Vec<u8>>(2)?),
            ))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    let mut stmt = conn
        .prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .map_err(storage)?;
    let checkpoints = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    Ok(Material {
        origin,
        key_name,
        public_key: pk,
        records,
        checkpoints,
    })
}

fn tamper(index: u64, kind: TamperKind, detail: impl Into<String>) -> Tamper {
    Tamper {
        index,
        kind,
        detail: detail.into(),
    }
}

/// Re-derives the tree from the records and checks every checkpoint against it and against `key`.
fn verify_material(m: &Material, key: &[u8; 32]) -> VerifyReport {
    let mut tree = Tree::new();
    let mut problem: Option<Tamper> = None;
    for (i, (seq, leaf, stored_hash)) in m.records.iter().enumerate() {
        let i = i as u64;
        if *seq != i {
            problem = Some(tamper(
                i,
                TamperKind::MissingRecord,
                format!("expected record {i}, found record {seq}"),
            ));
            break;
        }
        match AuditRecord::decode(leaf) {
            Err(why) => {
                problem = Some(tamper(
                    i,
                    TamperKind::ModifiedRecord,
                    format!("record does not decode: {why}"),
                ));
                break;
            }
            Ok((inner, _)) if inner != i => {
                problem = Some(tamper(
                    i,
                    TamperKind::ReorderedRecord,
                    format!("record written as {inner} is stored at {i}"),
                ));
                break;
            }
            Ok(_) => {}
        }
        let h = leaf_hash(leaf);
        if let Some(stored) = stored_hash
            && stored.as_slice() != h
        {
            problem = Some(tamper(
                i,
                TamperKind::ModifiedRecord,
                "record bytes do not match their leaf hash",
            ));
            break;
        }
        tree.push(h);
    }
    let size = tree.len();
    let mut latest = None;
    let name_key = verifier_key(&m.key_name, key);
    let vkey = parse_verifier_key(&name_key);
    let mut prev: Option<(u64, Hash)> = None;
    for (stored_size, note) in &m.checkpoints {
        if problem.is_some() {
            break;
        }
        let text = match vkey.as_ref().ok().map(|k| verify_note(note, k)) {
            Some(Ok(t)) => t,
            _ => {
                problem = Some(tamper(
                    *stored_size,
                    TamperKind::BadCheckpointSignature,
                    "checkpoint signature does not verify with the log key",
                ));
                break;
            }
        };
        let Ok((origin, cp_size, root)) = parse_checkpoint_body(text) else {
            problem = Some(tamper(
                *stored_size,
                TamperKind::Malformed,
                "checkpoint body does not parse",
            ));
            break;
        };
        if cp_size != *stored_size || origin != m.origin {
            problem = Some(tamper(
                *stored_size,
                TamperKind::InconsistentCheckpoint,
                "checkpoint stored under another size or origin",
            ));
            break;
        }
        if cp_size > size {
            problem = Some(tamper(
                size,
                TamperKind::TruncatedTail,
                format!("log has {size} records, checkpoint {cp_size} was signed"),
            ));
            break;
        }
        match tree.root(cp_size) {
            Ok(r) if r == root => {}
            _ => {
                let from = prev.map_or(0, |(s, _)| s);
                problem = Some(tamper(
                    from,
                    TamperKind::ModifiedRecord,
                    format!("records {from}..{cp_size} do not match the signed checkpoint root"),
                ));
                break;
            }
        }
        if let Some((ps, pr)) = prev.filter(|(s, _)| *s > 0) {
            let consistent = tree
                .consistency_proof(ps, cp_size)
                .map(|p| verify_consistency(ps, cp_size, &pr, &root, &p))
                .unwrap_or(false);
            if !consistent {
                problem = Some(tamper(
                    ps,
                    TamperKind::InconsistentCheckpoint,
                    format!("checkpoint {cp_size} contradicts checkpoint {ps}"),
                ));
                break;
            }
        }
        prev = Some((cp_size, root));
        latest = Some(Checkpoint {
            origin,
            size: cp_size,
            root,
        });
    }
    VerifyReport {
        valid: problem.is_none(),
        size,
        checkpoints: m.checkpoints.len(),
        latest,
        problem,
    }
}

/// Verifies an audit database file offline with `key` (or, when `None`, the key stored in the file
/// itself — which proves integrity against accidents, not against someone who can rewrite the file).
///
/// # Errors
/// Storage errors.
pub fn verify_db(path: &Path, key: Option<&[u8; 32]>) -> Result<VerifyReport, AuditError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    let m = load_material(&conn)?;
    Ok(verify_material(&m, key.unwrap_or(&m.public_key)))
}

/// The export file format (see `docs/audit.md`).
#[derive(Serialize, Deserialize)]
struct ExportFile {
    format: String,
    origin: String,
    key_name: String,
    public_key: String,
    verifier_key: String,
    records: Vec<ExportRecord>,
    checkpoints: Vec<ExportCheckpoint>,
}

#[derive(Serialize, Deserialize)]
struct ExportRecord {
    seq: u64,
    leaf: String,
}

#[derive(Serialize, Deserialize)]
struct ExportCheckpoint {
    size: u64,
    note: String,
}

const EXPORT_FORMAT: &str = "nodus-audit-export-v1";

fn export_err(path: &Path, reason: impl std::fmt::Display) -> AuditError {
    AuditError::Export {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_export(path: &Path) -> Result<Material, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|e| export_err(path, e))?;
    let f: ExportFile = serde_json::from_str(&text).map_err(|e| export_err(path, e))?;
    if f.format != EXPORT_FORMAT {
        return Err(export_err(path, format!("unknown format `{}`", f.format)));
    }
    let public_key = B64
        .decode(&f.public_key)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| export_err(path, "bad public key"))?;
    let mut records = Vec::with_capacity(f.records.len());
    for r in f.records {
        let leaf = B64
            .decode(&r.leaf)
            .map_err(|e| export_err(path, format!("record {}: {e}", r.seq)))?;
        records.push((r.seq, leaf, None));
    }
    Ok(Material {
        origin: f.origin,
        key_name: f.key_name,
        public_key,
        records,
        checkpoints: f
            .checkpoints
            .into_iter()
            .map(|c| (c.size, c.note))
            .collect(),
    })
}

/// The offline verifier: needs only an export file and a trusted public key.
///
/// # Errors
/// [`AuditError::Export`] when the file cannot be read or parsed.
pub fn verify_export(path: &Path, trusted_key: &[u8; 32]) -> Result<VerifyReport, AuditError> {
    let m = read_export(path)?;
    if &m.public_key != trusted_key {
        let mut r = verify_material(&m, trusted_key);
        if r.problem.is_none() {
            r.problem = Some(tamper(
                0,
                TamperKind::BadCheckpointSignature,
                "the export names another key than the trusted one",
            ));
            r.valid = false;
        }
        return Ok(r);
    }
    Ok(verify_material(&m, trusted_key))
}

/// An export's records, checkpoints and public key.
pub type ExportContents = (Vec<StoredRecord>, Vec<SignedCheckpoint>, [u8; 32]);

/// Reads an export's records and checkpoints (for tools: proofs, listings).
///
/// # Errors
/// [`AuditError::Export`].
pub fn read_export_records(path: &Path) -> Result<ExportContents, AuditError> {
    let m = read_export(path)?;
    let mut records = Vec::new();
    for (seq, leaf, _) in &m.records {
        let (_, record) = AuditRecord::decode(leaf)
            .map_err(|e| export_err(path, format!("record {seq}: {e}")))?;
        records.push(StoredRecord { seq: *seq, record });
    }
    let mut cps = Vec::new();
    for (_, note) in m.checkpoints {
        let body = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
        if let Ok((origin, size, root)) = parse_checkpoint_body(&body) {
            cps.push(SignedCheckpoint {
                checkpoint: Checkpoint { origin, size, root },
                note,
            });
        }
    }
    Ok((records, cps, m.public_key))
}

/// Leaf hashes of an export, for proofs.
///
/// # Errors
/// [`AuditError::Export`].
pub fn export_tree(path: &Path) -> Result<Tree, AuditError> {
    let m = read_export(path)?;
    let mut t = Tree::new();
    for (_, leaf, _) in &m.records {
        t.push(leaf_hash(leaf));
    }
    Ok(t)
}

impl AuditLog {
    /// Opens (or creates) the log at `path`. An existing log is verified first; a log that does not
    /// verify, or was created with another key, is refused.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn open(
        path: &Path,
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        let target = path.display().to_string();
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
        )
    }

    fn start(
        writer: Connection,
        reader: impl FnOnce() -> Result<Connection, AuditError>,
        label: String,
        signer: Arc<dyn CheckpointSigner>,
        config: AuditConfig,
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
        if m.records.is_empty() && m.checkpoints.is_empty() {
            writer
                .execute(
                    "INSERT OR REPLACE INTO meta (k, v) VALUES ('origin', ?1), ('public_key', ?2), ('key_name', ?3), ('format', 'nodus-audit-v1')",
                    params![config.origin, pk_b64, signer.name()],
                )
                .map_err(storage)?;
        } else {
            if m.public_key != public_key {
                return Err(AuditError::WrongKey {
                    expected: B64.encode(m.public_key),
                    given: pk_b64,
                });
            }
            let report = verify_material(&m, &public_key);
            if let Some(t) = report.problem {
                return Err(AuditError::Tampered {
                    path: label,
                    tamper: t,
                });
            }
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
            Ok(note) => {
                let body = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
                parse_checkpoint_body(&body)
                    .ok()
                    .map(|(origin, size, root)| SignedCheckpoint {
                        checkpoint: Checkpoint { origin, size, root },
                        note,
                    })
            }
            Err(_) => None,
        };
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
            .filter_map(|note| {
                let body = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
                parse_checkpoint_body(&body)
                    .ok()
                    .map(|(origin, size, root)| SignedCheckpoint {
                        checkpoint: Checkpoint { origin, size, root },
                        note,
                    })
            })
            .collect())
    }

    /// Writes a self-contained export (records, checkpoints, the log's public key) to `path`.
    ///
    /// # Errors
    /// Storage or export errors.
    pub fn export(&self, path: &Path) -> Result<ExportSummary, AuditError> {
        let m = load_material(&self.reader.lock())?;
        write_export(&m, path)
    }

    /// Exports an audit database file (offline, read-only).
    ///
    /// # Errors
    /// Storage or export errors.
    pub fn export_db(db: &Path, path: &Path) -> Result<ExportSummary, AuditError> {
        let conn =
            Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
        write_export(&load_material(&conn)?, path)
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

fn write_export(m: &Material, path: &Path) -> Result<ExportSummary, AuditError> {
    let f = ExportFile {
        format: EXPORT_FORMAT.into(),
        origin: m.origin.clone(),
        key_name: m.key_name.clone(),
        public_key: B64.encode(m.public_key),
        verifier_key: verifier_key(&m.key_name, &m.public_key),
        records: m
            .records
            .iter()
            .map(|(seq, leaf, _)| ExportRecord {
                seq: *seq,
                leaf: B64.encode(leaf),
            })
            .collect(),
        checkpoints: m
            .checkpoints
            .iter()
            .map(|(size, note)| ExportCheckpoint {
                size: *size,
                note: note.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&f).map_err(|e| export_err(path, e))?;
    std::fs::write(path, text).map_err(|e| export_err(path, e))?;
    Ok(ExportSummary {
        records: m.records.len() as u64,
        checkpoints: m.checkpoints.len(),
    })
}

fn tail_conn(conn: &Connection, n: usize) -> Result<Vec<StoredRecord>, AuditError> {
    let mut stmt = conn
        .prepare("SELECT seq, leaf FROM records ORDER BY seq DESC LIMIT ?1")
        .map_err(storage)?;
    let rows = stmt
        .query_map([n as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, leaf) in rows.into_iter().rev() {
        let (_, record) = AuditRecord::decode(&leaf)
            .map_err(|e| AuditError::Storage(format!("record {seq}: {e}")))?;
        out.push(StoredRecord { seq, record });
    }
    Ok(out)
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
        let m = load_material(&self.reader.lock())?;
        Ok(verify_material(&m, &self.public_key))
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

struct Writer {
    conn: Connection,
    intake: Arc<Intake>,
    ctl: Receiver<Ctl>,
    shared: Arc<Shared>,
    signer: Arc<dyn CheckpointSigner>,
    config: AuditConfig,
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
    fn run(mut self) {
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
        let start = Instant::now();
        let tx = self.conn.transaction().map_err(storage)?;
        let mut made: Option<SignedCheckpoint> = None;
        let every = self.config.checkpoint_every.max(1);
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
