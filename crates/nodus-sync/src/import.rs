//! Importing bundles: verify → stage → activate, the replay ledger and the quarantine.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodus_fabric::{Equivocation, Event, EventRef, Rejection as IngestRejection, TenantEventLog};
use nodus_policy::TenantId;
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{RejectReason, Rejection, StoreError};
use crate::format::{BundleId, recipient_fingerprint};
use crate::trust::{Clock, SystemClock, TrustStore};
use crate::verify::{BundleSummary, Checks, Limits, OpaqueEntry, Verified, verify_file};

/// What the host decides for one event at activation (its current policy: known types, labels
/// within the tenant's ceiling, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ingest it.
    Apply,
    /// Keep it in the sync store's quarantine, with why.
    Quarantine(String),
}

/// The host's admission policy, asked per event at activation and again on
/// [`Importer::requarantine`] and [`Importer::release`].
pub trait Admission {
    /// The decision for `event` of `tenant`.
    fn admit(&self, tenant: &TenantId, event: &Event) -> Decision;

    /// The decisions for a whole activation's events of `tenant`, in order, one per event: what
    /// [`Importer::activate`] asks. The default asks [`admit`](Self::admit) per event; override it
    /// when a decision depends on other events of the same bundle (an object whose type the
    /// bundle itself defines, in another chain). A missing decision quarantines its event.
    fn admit_all(&self, tenant: &TenantId, events: &[Event]) -> Vec<Decision> {
        events.iter().map(|e| self.admit(tenant, e)).collect()
    }
}

/// Admits every event (tests; hosts without an import policy).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _tenant: &TenantId, _event: &Event) -> Decision {
        Decision::Apply
    }
}

impl<F: Fn(&TenantId, &Event) -> Decision> Admission for F {
    fn admit(&self, tenant: &TenantId, event: &Event) -> Decision {
        self(tenant, event)
    }
}

/// A bundle verified and kept (as received, still encrypted) in the staging directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedBundle {
    /// What it holds and would apply (as of staging).
    pub summary: BundleSummary,
    /// When it was staged, unix seconds.
    pub staged_at: u64,
    /// The staged file.
    pub path: PathBuf,
}

/// A bundle recorded in the replay ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The bundle id.
    pub bundle_id: BundleId,
    /// The tenant.
    pub tenant: TenantId,
    /// SHA-256 of the file activated.
    pub file_sha256: [u8; 32],
    /// The sender's key id.
    pub sender_key_id: String,
    /// When it was activated, unix seconds.
    pub activated_at: u64,
}

/// An event kept in quarantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedEvent {
    /// Its id in the quarantine (for [`Importer::release`]).
    pub id: u64,
    /// The bundle it came in.
    pub bundle_id: BundleId,
    /// The event (verified: its hash and chain link were checked at activation).
    pub event: Event,
    /// Why it is held.
    pub reason: String,
    /// When it was quarantined (or last re-checked), unix seconds.
    pub at: u64,
}

/// What an activation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivateReport {
    /// The bundle id.
    pub bundle_id: BundleId,
    /// The tenant.
    pub tenant: TenantId,
    /// SHA-256 of the file.
    pub file_sha256: [u8; 32],
    /// Events the log applied.
    pub applied: u64,
    /// Events already held (no effect).
    pub duplicates: u64,
    /// Events held by the log after a gap (behind a quarantined event of their chain).
    pub pending: Vec<EventRef>,
    /// Events the admission quarantined, with why.
    pub quarantined: Vec<(EventRef, String)>,
    /// Equivocations the log found (the host audits each).
    pub equivocations: Vec<Equivocation>,
    /// Events the log refused.
    pub rejected: Vec<IngestRejection>,
    /// The verified `crdt` and `trust` entries, for the host to use (never trusted by this
    /// crate on its own).
    pub opaque: Vec<OpaqueEntry>,
}

/// What a re-check of the quarantine did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Events the admission now allows, ingested and removed from the quarantine.
    pub released: Vec<EventRef>,
    /// Events still held.
    pub remaining: u64,
    /// Events the log applied (released ones and those they unblocked).
    pub applied: u64,
    /// Equivocations the log found.
    pub equivocations: Vec<Equivocation>,
    /// Events the log refused.
    pub rejected: Vec<IngestRejection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    bundle_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, file_sha256 TEXT NOT NULL,
    sender_key_id TEXT NOT NULL, activated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS staged (
    bundle_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, file_sha256 TEXT NOT NULL,
    staged_at INTEGER NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, bundle_id TEXT NOT NULL,
    chain TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, event BLOB NOT NULL,
    reason TEXT NOT NULL, at INTEGER NOT NULL, UNIQUE (tenant, chain, seq, hash));
";

/// The receiving side: a sync store (`sync.db`: replay ledger, staged bundles, quarantine) and a
/// staging directory under one data directory, the receiver's age identity, its trust store,
/// limits and clock.
///
/// Checks run in the order of `docs/sync.md`; every refusal is a [`Rejection`] and changes
/// nothing (no log event, no ledger row, no staged file). The one exception: a `storage` failure
/// of the sync store *after* the log ingested an activation's events leaves them applied and the
/// bundle staged; activating it again completes (the events are then duplicates).
pub struct Importer {
    conn: Mutex<Connection>,
    staging: PathBuf,
    identity: age::x25519::Identity,
    fingerprint: [u8; 32],
    trust: RwLock<TrustStore>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    skew: u64,
    /// Activations and re-checks run one at a time, so two of the same bundle cannot both pass
    /// the ledger check.
    activating: Mutex<()>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("staging", &self.staging)
            .field("recipient", &self.identity.to_public().to_string())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl Importer {
    /// The sync database's file name in the data directory.
    pub const FILE_NAME: &'static str = "sync.db";
    /// The staging directory's name in the data directory.
    pub const STAGING_DIR: &'static str = "staging";

    /// Opens (creating if needed) the sync store in `data_dir` (`sync.db` and `staging/`), for a
    /// receiver decrypting with `identity` and trusting `trust`. Defaults: [`Limits::default`],
    /// the system clock, 5 minutes of allowed clock skew.
    ///
    /// # Errors
    /// [`StoreError`] when the directory or database cannot be made.
    pub fn open(
        data_dir: &Path,
        identity: age::x25519::Identity,
        trust: TrustStore,
    ) -> Result<Self, StoreError> {
        let staging = data_dir.join(Self::STAGING_DIR);
        fs::create_dir_all(&staging).map_err(|e| io_err(&staging, e))?;
        let conn = Connection::open(data_dir.join(Self::FILE_NAME))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (k, v) VALUES ('format', '1')",
            [],
        )?;
        let fingerprint = recipient_fingerprint(&identity.to_public());
        Ok(Importer {
            conn: Mutex::new(conn),
            staging,
            identity,
            fingerprint,
            trust: RwLock::new(trust),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            skew: 300,
            activating: Mutex::new(()),
        })
    }

    /// Sets the size caps.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the clock expiry is checked against.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How far in the future a bundle's `created_at` may be (default 5 minutes).
    #[must_use]
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.skew = skew.as_secs();
        self
    }

    /// Changes the trust store (add, revoke keys).
    pub fn update_trust(&self, f: impl FnOnce(&mut TrustStore)) {
        f(&mut self.trust.write());
    }

    /// This receiver's age recipient (give it to senders).
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.identity.to_public()
    }

    fn verify_inner(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        path: &Path,
        collect: bool,
    ) -> Result<Verified, Rejection> {
        let trust = self.trust.read();
        let replayed = |id: &BundleId| -> Result<bool, String> {
            self.conn
                .lock()
                .query_row(
                    "SELECT 1 FROM ledger WHERE bundle_id = ?1",
                    [id.to_string()],
                    |_| Ok(()),
                )
                .optional()
                .map(|r| r.is_some())
                .map_err(|e| e.to_string())
        };
        let checks = Checks {
            limits: self.limits,
            trust: &trust,
            now: self.clock.now_unix(),
            skew: self.skew,
            identity: &self.identity,
            fingerprint: self.fingerprint,
            replayed: &replayed,
        };
        verify_file(&checks, path, tenant, log, collect)
    }

    /// Runs every check on the bundle at `path` for `tenant` against `log`, and says what it
    /// would apply. A dry run: changes nothing (like `git bundle verify`).
    ///
    /// # Errors
    /// [`Rejection`] naming the first failed check.
    pub fn verify(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        path: &Path,
    ) -> Result<BundleSummary, Rejection> {
        self.verify_inner(log, tenant, path, false)
            .map(|v| v.summary)
    }

    /// Copies the bundle at `path` into the staging directory (as received: still encrypted;
    /// plaintext never touches the disk), verifies the copy and records it. Staging a bundle that
    /// is staged already returns the existing record.
    ///
    /// # Errors
    /// [`Rejection`]; the copy is removed then.
    pub fn stage(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        path: &Path,
    ) -> Result<StagedBundle, Rejection> {
        let io = |e: io::Error| Rejection {
            reason: RejectReason::Io(e.to_string()),
            bundle_id: None,
            file_sha256: [0; 32],
        };
        let mut tmp_name = [0u8; 8];
        getrandom::fill(&mut tmp_name).map_err(|e| io(io::Error::other(e.to_string())))?;
        let tmp = self
            .staging
            .join(format!(".incoming-{}", hex::encode(tmp_name)));
        let copied = (|| -> io::Result<()> {
            let src = fs::File::open(path)?;
            let mut src = io::Read::take(src, self.limits.max_file.saturating_add(1));
            let mut dst = fs::File::create(&tmp)?;
            io::copy(&mut src, &mut dst)?;
            dst.sync_all()
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        let result = self.verify_inner(log, tenant, &tmp, false).and_then(|v| {
            let s = v.summary;
            let reject = |reason| Rejection {
                reason,
                bundle_id: Some(s.bundle_id),
                file_sha256: s.file_sha256,
            };
            if let Some(existing) = self
                .staged_one(&s.bundle_id)
                .map_err(|e| reject(RejectReason::Storage(e.to_string())))?
            {
                let _ = fs::remove_file(&tmp);
                return Ok(existing);
            }
            let dest = self.staged_path(&s.bundle_id);
            fs::rename(&tmp, &dest).map_err(|e| reject(RejectReason::Io(e.to_string())))?;
            let staged_at = self.clock.now_unix();
            let json =
                serde_json::to_string(&s).map_err(|e| reject(RejectReason::Storage(e.to_string())));
            let inserted = json.and_then(|json| {
                self.conn
                    .lock()
                    .execute(
                        "INSERT INTO staged (bundle_id, tenant, file_sha256, staged_at, summary)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            s.bundle_id.to_string(),
                            s.tenant.as_str(),
                            hex::encode(s.file_sha256),
                            to_i64(staged_at),
                            json
                        ],
                    )
                    .map_err(|e| reject(RejectReason::Storage(e.to_string())))
            });
            if let Err(e) = inserted {
                let _ = fs::remove_file(&dest);
                return Err(e);
            }
            Ok(StagedBundle {
                summary: s,
                staged_at,
                path: dest,
            })
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn staged_path(&self, id: &BundleId) -> PathBuf {
        self.staging.join(format!("{id}.noduspkg"))
    }

    fn staged_one(&self, id: &BundleId) -> Result<Option<StagedBundle>, StoreError> {
        let row: Option<(String, i64)> = self
            .conn
            .lock()
            .query_row(
                "SELECT summary, staged_at FROM staged WHERE bundle_id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(json, at)| self.staged_row(&json, at)).transpose()
    }

    fn staged_row(&self, json: &str, at: i64) -> Result<StagedBundle, StoreError> {
        let summary: BundleSummary =
            serde_json::from_str(json).map_err(|_| StoreError::Corrupt("staged.summary".into()))?;
        Ok(StagedBundle {
            path: self.staged_path(&summary.bundle_id),
            summary,
            staged_at: u64::try_from(at).unwrap_or(0),
        })
    }

    /// The staged bundles, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn staged(&self) -> Result<Vec<StagedBundle>, StoreError> {
        let rows: Vec<(String, i64)> = {
            let conn = self.conn.lock();
            let mut st = conn
                .prepare("SELECT summary, staged_at FROM staged ORDER BY staged_at, bundle_id")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        rows.iter()
            .map(|(json, at)| self.staged_row(json, *at))
            .collect()
    }

    /// Drops a staged bundle (its record and file). Returns `false` when it was not staged.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn discard(&self, bundle_id: &BundleId) -> Result<bool, StoreError> {
        let n = self.conn.lock().execute(
            "DELETE FROM staged WHERE bundle_id = ?1",
            [bundle_id.to_string()],
        )?;
        let path = self.staged_path(bundle_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
        Ok(n > 0)
    }

    /// Whether a bundle id is in the replay ledger.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn is_imported(&self, bundle_id: &BundleId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .lock()
            .query_row(
                "SELECT 1 FROM ledger WHERE bundle_id = ?1",
                [bundle_id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The replay ledger, in activation order.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn imported(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT bundle_id, tenant, file_sha256, sender_key_id, activated_at FROM ledger
             ORDER BY activated_at, rowid",
        )?;
        let rows: Vec<(String, String, String, String, i64)> = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, tenant, sha, key, at)| {
                Ok(LedgerEntry {
                    bundle_id: id
                        .parse()
                        .map_err(|_| StoreError::Corrupt("ledger.bundle_id".into()))?,
                    tenant: TenantId::new(tenant)
                        .map_err(|_| StoreError::Corrupt("ledger.tenant".into()))?,
                    file_sha256: crate::format::lower_hex::<32>(&sha)
                        .ok_or_else(|| StoreError::Corrupt("ledger.file_sha256".into()))?,
                    sender_key_id: key,
                    activated_at: u64::try_from(at).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Re-verifies a staged bundle (every check again, against the log and clock of now), asks
    /// `admit` about each new event, ingests the admitted ones into `log` in **one** `ingest`
    /// call (all or nothing), keeps the others in the quarantine, records the bundle in the
    /// replay ledger and removes it from staging.
    ///
    /// Events after a quarantined event of the same chain are held by the log (pending) until
    /// the quarantined one is released.
    ///
    /// # Errors
    /// [`Rejection`]; nothing is applied or recorded then (but see the type's documentation for a
    /// sync store failure after the ingest).
    pub fn activate(
        &self,
        log: &dyn TenantEventLog,
        bundle_id: &BundleId,
        admit: &dyn Admission,
    ) -> Result<ActivateReport, Rejection> {
        let _one_at_a_time = self.activating.lock();
        let not_staged = || Rejection {
            reason: RejectReason::NotStaged(*bundle_id),
            bundle_id: Some(*bundle_id),
            file_sha256: [0; 32],
        };
        let staged = self
            .staged_one(bundle_id)
            .map_err(|e| Rejection {
                reason: RejectReason::Storage(e.to_string()),
                bundle_id: Some(*bundle_id),
                file_sha256: [0; 32],
            })?
            .ok_or_else(not_staged)?;
        let tenant = staged.summary.tenant.clone();
        let v = self.verify_inner(log, &tenant, &staged.path, true)?;
        let sha = v.summary.file_sha256;
        let reject = |reason| Rejection {
            reason,
            bundle_id: Some(*bundle_id),
            file_sha256: sha,
        };
        if v.summary.bundle_id != *bundle_id {
            return Err(reject(RejectReason::Malformed(
                "the staged file holds another bundle".into(),
            )));
        }
        let mut apply = Vec::with_capacity(v.events.len());
        let mut held = Vec::new();
        let decisions =
            admit
                .admit_all(&tenant, &v.events)
                .into_iter()
                .chain(std::iter::repeat_with(|| {
                    Decision::Quarantine("the admission gave no decision".into())
                }));
        for (e, decision) in v.events.into_iter().zip(decisions) {
            match decision {
                Decision::Apply => apply.push(e),
                Decision::Quarantine(why) => held.push((e, why)),
            }
        }
        let report = log
            .ingest(&tenant, apply)
            .map_err(|e| reject(RejectReason::Storage(e.to_string())))?;
        // The log has the events; now the ledger, the quarantine and staging, in one transaction.
        // A crash between the two leaves the bundle staged: activating it again is idempotent.
        let now = self.clock.now_unix();
        let recorded = (|| -> Result<(), rusqlite::Error> {
            let mut conn = self.conn.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (e, why) in &held {
                tx.execute(
                    "INSERT OR IGNORE INTO quarantine
                     (tenant, bundle_id, chain, seq, hash, event, reason, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        tenant.as_str(),
                        bundle_id.to_string(),
                        e.chain().to_string(),
                        to_i64(e.seq),
                        e.hash.to_string(),
                        e.canonical_bytes(),
                        why,
                        to_i64(now)
                    ],
                )?;
            }
            tx.execute(
                "INSERT INTO ledger (bundle_id, tenant, file_sha256, sender_key_id, activated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    bundle_id.to_string(),
                    tenant.as_str(),
                    hex::encode(sha),
                    v.summary.sender_key_id,
                    to_i64(now)
                ],
            )?;
            tx.execute(
                "DELETE FROM staged WHERE bundle_id = ?1",
                [bundle_id.to_string()],
            )?;
            tx.commit()
        })();
        recorded.map_err(|e| reject(RejectReason::Storage(e.to_string())))?;
        let _ = fs::remove_file(&staged.path);
        Ok(ActivateReport {
            bundle_id: *bundle_id,
            tenant,
            file_sha256: sha,
            applied: report.applied.len() as u64,
            duplicates: report.duplicates,
            pending: report.pending,
            quarantined: held
                .iter()
                .map(|(e, why)| (e.event_ref(), why.clone()))
                .collect(),
            equivocations: report.equivocations,
            rejected: report.rejected,
            opaque: v.opaque,
        })
    }

    /// The events held in quarantine (of one tenant, or all), oldest first.
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::Corrupt`] when a stored event does not decode to its hash.
    pub fn quarantined(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<QuarantinedEvent>, StoreError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT id, tenant, bundle_id, hash, event, reason, at FROM quarantine
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id",
        )?;
        let rows: Vec<QuarantineRow> = st
            .query_map([tenant.map(TenantId::as_str)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, tenant, bundle, hash, bytes, reason, at)| {
                let corrupt = || StoreError::Corrupt(format!("quarantine.{id}"));
                let event = Event::decode(&bytes).map_err(|_| corrupt())?;
                if event.hash.to_string() != hash || event.tenant.as_str() != tenant {
                    return Err(corrupt());
                }
                Ok(QuarantinedEvent {
                    id: u64::try_from(id).map_err(|_| corrupt())?,
                    bundle_id: bundle.parse().map_err(|_| corrupt())?,
                    event,
                    reason,
                    at: u64::try_from(at).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Asks `admit` again about every quarantined event: those it now allows are ingested (one
    /// `ingest` call per tenant) and leave the quarantine; the others stay, with the new reason.
    ///
    /// # Errors
    /// [`StoreError`]; nothing leaves the quarantine then.
    pub fn requarantine(
        &self,
        log: &dyn TenantEventLog,
        admit: &dyn Admission,
    ) -> Result<ReleaseReport, StoreError> {
        self.recheck(log, None, admit)
    }

    /// Like [`requarantine`](Self::requarantine), for the quarantined events `ids` only (an
    /// operator's decision is passed as `admit`).
    ///
    /// # Errors
    /// [`StoreError`]; nothing leaves the quarantine then.
    pub fn release(
        &self,
        log: &dyn TenantEventLog,
        ids: &[u64],
        admit: &dyn Admission,
    ) -> Result<ReleaseReport, StoreError> {
        self.recheck(log, Some(ids), admit)
    }

    fn recheck(
        &self,
        log: &dyn TenantEventLog,
        ids: Option<&[u64]>,
        admit: &dyn Admission,
    ) -> Result<ReleaseReport, StoreError> {
        let _one_at_a_time = self.activating.lock();
        let all = self.quarantined(None)?;
        let mut by_tenant: BTreeMap<TenantId, Vec<QuarantinedEvent>> = BTreeMap::new();
        let mut still: Vec<(u64, String)> = Vec::new();
        let mut remaining = 0u64;
        for q in all {
            if ids.is_some_and(|ids| !ids.contains(&q.id)) {
                remaining += 1;
                continue;
            }
            match admit.admit(&q.event.tenant, &q.event) {
                Decision::Apply => by_tenant.entry(q.event.tenant.clone()).or_default().push(q),
                Decision::Quarantine(why) => {
                    remaining += 1;
                    still.push((q.id, why));
                }
            }
        }
        let mut out = ReleaseReport {
            remaining,
            ..ReleaseReport::default()
        };
        let now = self.clock.now_unix();
        for (tenant, qs) in by_tenant {
            let events: Vec<Event> = qs.iter().map(|q| q.event.clone()).collect();
            let report = log.ingest(&tenant, events)?;
            out.applied += report.applied.len() as u64;
            out.equivocations.extend(report.equivocations);
            out.rejected.extend(report.rejected);
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            for q in &qs {
                tx.execute("DELETE FROM quarantine WHERE id = ?1", [to_i64(q.id)])?;
                out.released.push(q.event.event_ref());
            }
            tx.commit()?;
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        for (id, why) in &still {
            tx.execute(
                "UPDATE quarantine SET reason = ?2, at = ?3 WHERE id = ?1",
                params![to_i64(*id), why, to_i64(now)],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }
}

/// `(id, tenant, bundle_id, hash, event, reason, at)`.
type QuarantineRow = (i64, String, String, String, Vec<u8>, String, i64);

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
