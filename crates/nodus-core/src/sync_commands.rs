//! Air-gap sync built-ins: `sync.keys`, `sync.export`, `sync.verify`, `sync.stage`,
//! `sync.activate`, `sync.recheck` and `sync.status`, over the sealed `.noduspkg` bundles of `nodus-sync`.
//!
//! **Directories.** Everything lives in the instance's *sync directory*
//! ([`NodusBuilder::sync_dir`](crate::NodusBuilder::sync_dir), default `<data_dir>/sync`; an
//! in-memory instance has none unless one is given): `outbox/` (bundles this node wrote),
//! `inbox/` (bundles a courier dropped), `staging/` and `sync.db` (the importer's replay ledger,
//! staged bundles and quarantine, plus this module's peers and exports tables), and
//! `identity.age.sealed` (this node's X25519 age identity, sealed by the vault; never plaintext
//! on disk). Commands name a bundle by its **file name** within `inbox/` or `outbox/`: an absolute
//! path, a separator or `..` is refused (`BadFileName`).
//!
//! **Keys.** Bundles are signed with the node's Ed25519 key in the vault (purpose `node`) through
//! [`VaultBundleSigner`]; the key never leaves the vault. The key id bundles carry is the node id.
//!
//! **Audit.** Every export (`sync.exported`), verification (`sync.verified`), staging
//! (`sync.staged`), activation (`sync.activated`), quarantined event (`sync.quarantined`),
//! released event (`sync.released`) and rejection (`sync.rejected`, with the rejection's stable
//! `code`) is an audit record carrying the bundle id (when known) and the file's SHA-256 (hex);
//! trusting and revoking a peer are `sync.peer_trusted` and `sync.peer_revoked`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nodus_fabric::objects::{Fabric, FabricError};
use nodus_fabric::{
    ChainId, Cursor, Equivocation, Event, EventLogError, EventRef, IngestReport, NewEvent,
    NodeInfo, TenantEventLog, VerifyReport, VersionVector,
};
use nodus_policy::{Label, PolicySnapshot, TenantId};
use nodus_registry::commands::{Command, CommandError, CommandSpec, Context};
use nodus_security::audit::{AuditRecord, Outcome};
use nodus_security::vault::{
    EnvelopeContext, KeyAlgorithm, KeyId, KeyScope, SecretVault, VaultError,
};
use nodus_sync::age::secrecy::ExposeSecret as _;
use nodus_sync::age::x25519::{Identity, Recipient};
use nodus_sync::{
    Admission, BundleId, BundleSigner, BundleSummary, Decision, Exporter, Importer, Rejection,
    SignerError, TrustStore, TrustedKey,
};
use parking_lot::Mutex;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::builtins::{NoInput, instance, tenant_snapshot as snapshot};
use crate::nodus::WeakNodus;

/// The sync directory's name inside the data directory (the default sync directory).
pub const SYNC_DIR: &str = "sync";
/// Where bundles this node writes go, inside the sync directory.
pub const OUTBOX_DIR: &str = "outbox";
/// Where bundles to import are dropped, inside the sync directory.
pub const INBOX_DIR: &str = "inbox";
/// The sealed age identity's file inside the sync directory.
pub const IDENTITY_FILE: &str = "identity.age.sealed";
/// The vault purpose of the system key that seals the age identity.
pub const AGE_SEAL_KEY_PURPOSE: &str = "sync.age";
/// How long an exported bundle stays valid by default (7 days).
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 86_400);

const PEERS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nodus_peers (
    key_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, recipient TEXT NOT NULL,
    added_ms INTEGER NOT NULL, revoked_ms INTEGER, tenants TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS nodus_exports (
    bundle_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, file TEXT NOT NULL,
    file_sha256 TEXT NOT NULL, events INTEGER NOT NULL, peers TEXT NOT NULL, at_ms INTEGER NOT NULL,
    through TEXT NOT NULL DEFAULT '[]');
";

/// Why a sync operation outside a bundle's checks failed (setup, peers, files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The instance has no sync directory (in memory, without `sync_dir`).
    #[error("sync is not configured: this instance has no sync directory (set `sync_dir`)")]
    NotConfigured,
    /// The vault refused to seal, open or sign.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The sync store failed.
    #[error("sync store: {0}")]
    Store(String),
    /// A file operation failed.
    #[error("i/o error at `{path}`: {message}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        message: String,
    },
    /// A peer's keys are not usable.
    #[error("invalid peer keys: {0}")]
    BadPeer(String),
    /// The audit log refused the record; the action was not done.
    #[error("audit log unavailable: {0}")]
    Audit(String),
}

impl From<rusqlite::Error> for SyncError {
    fn from(e: rusqlite::Error) -> Self {
        SyncError::Store(e.to_string())
    }
}

impl From<nodus_sync::StoreError> for SyncError {
    fn from(e: nodus_sync::StoreError) -> Self {
        SyncError::Store(e.to_string())
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> SyncError {
    SyncError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A node's public sync identity, what a peer adds to its trust store: the key id its bundles
/// carry (its node id), its Ed25519 public key (hex) and its age recipient (`age1…`) to encrypt
/// bundles to. What `sync.keys` and [`SyncAdmin::keys`] answer, and what
/// [`SyncAdmin::trust_peer`] takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerKeys {
    /// The key id bundles name (the node id).
    pub key_id: String,
    /// The Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// The age X25519 recipient, `age1…`.
    pub recipient: String,
}

/// A peer in the trust store, as `sync.status` and [`SyncAdmin::peers`] show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerRecord {
    /// Its keys.
    #[serde(flatten)]
    pub keys: PeerKeys,
    /// The tenants whose bundles it may sign (ids, sorted).
    pub tenants: Vec<String>,
    /// When it was trusted, unix ms.
    pub added_ms: u64,
    /// When it was revoked, unix ms (`None`: trusted).
    pub revoked_ms: Option<u64>,
}

/// A [`BundleSigner`] over the node's Ed25519 key in the vault: signs through the vault, never
/// sees the private key.
pub struct VaultBundleSigner {
    vault: Arc<dyn SecretVault>,
    key: KeyId,
    key_id: String,
    public: [u8; 32],
}

impl std::fmt::Debug for VaultBundleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBundleSigner")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl BundleSigner for VaultBundleSigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }
    fn public_key(&self) -> [u8; 32] {
        self.public
    }
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], SignerError> {
        self.vault
            .sign(&self.key, msg)
            .map_err(|e| SignerError::Backend(e.to_string()))
    }
}

/// The [`TenantEventLog`] the importer activates into: every call goes to the fabric's log,
/// except `ingest`, which goes through [`Fabric::ingest`] so the applied events reach the
/// projections in the same transaction as the log. `append` is refused (sync never appends).
struct FabricLog<'a>(&'a Fabric);

fn fabric_to_log(e: FabricError) -> EventLogError {
    match e {
        FabricError::Log(e) => e,
        other => EventLogError::Storage(other.to_string()),
    }
}

impl TenantEventLog for FabricLog<'_> {
    fn node(&self) -> NodeInfo {
        self.0.log().node()
    }
    fn append(&self, _t: &TenantId, _e: Vec<NewEvent>) -> Result<Vec<Event>, EventLogError> {
        Err(EventLogError::Storage(
            "the sync importer does not append local events".into(),
        ))
    }
    fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<IngestReport, EventLogError> {
        self.0
            .ingest(tenant, events)
            .map(|r| r.log)
            .map_err(fabric_to_log)
    }
    fn read_chain(
        &self,
        tenant: &TenantId,
        chain: ChainId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, EventLogError> {
        self.0.log().read_chain(tenant, chain, from_seq, limit)
    }
    fn read_tenant(
        &self,
        tenant: &TenantId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<Cursor>), EventLogError> {
        self.0.log().read_tenant(tenant, cursor, limit)
    }
    fn high_water_marks(&self, tenant: &TenantId) -> Result<VersionVector, EventLogError> {
        self.0.log().high_water_marks(tenant)
    }
    fn pending(&self, tenant: &TenantId) -> Result<Vec<EventRef>, EventLogError> {
        self.0.log().pending(tenant)
    }
    fn quarantined(&self, tenant: &TenantId) -> Result<Vec<Equivocation>, EventLogError> {
        self.0.log().quarantined(tenant)
    }
    fn verify(&self, tenant: &TenantId) -> Result<VerifyReport, EventLogError> {
        self.0.log().verify(tenant)
    }
}

/// The reason text of events quarantined for an unknown type (re-checked after the activation,
/// when the bundle itself defined the type).
const UNKNOWN_TYPE: &str = "unknown type";

/// The reason text of document events quarantined because the tenant's `crdt.allowed_types` does
/// not allow their document type (released by `sync.release` after a policy change).
const DOC_TYPE_NOT_ALLOWED: &str = "document type not allowed";

/// Admission under the current policy: an event whose label does not parse under the tenant's
/// label scheme, or is not dominated by the ceiling, is quarantined; so is an object event of a
/// type the tenant does not know, and a document event of a type `crdt.allowed_types` does not
/// allow.
pub(crate) struct PolicyAdmission<'a> {
    pub(crate) snap: &'a PolicySnapshot,
    pub(crate) ceiling: Label,
    pub(crate) known_types: BTreeSet<String>,
}

impl Admission for PolicyAdmission<'_> {
    /// Types the bundle itself defines (by a `type.defined` event admitted on its own) count as
    /// known for its objects, whatever chain and order they come in: an activation is decided
    /// whole, before anything is applied, so it applies all of a bundle's admissible events in
    /// its one transaction.
    fn admit_all(&self, tenant: &TenantId, events: &[Event]) -> Vec<Decision> {
        let mut defined = BTreeSet::new();
        for e in events {
            if e.kind.as_str() == nodus_fabric::objects::TYPE_DEFINED
                && self.admit(tenant, e) == Decision::Apply
                && let Some(name) = e
                    .payload
                    .to_value()
                    .ok()
                    .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            {
                defined.insert(name);
            }
        }
        if defined.is_empty() {
            return events.iter().map(|e| self.admit(tenant, e)).collect();
        }
        let mut known_types = self.known_types.clone();
        known_types.extend(defined);
        let whole = PolicyAdmission {
            snap: self.snap,
            ceiling: self.ceiling,
            known_types,
        };
        events.iter().map(|e| whole.admit(tenant, e)).collect()
    }

    fn admit(&self, _tenant: &TenantId, event: &Event) -> Decision {
        let scheme = self.snap.label_scheme();
        let label = match scheme.parse(event.label.as_str()) {
            Ok(l) => l,
            Err(_) => {
                return Decision::Quarantine(
                    "label does not parse under the current scheme".into(),
                );
            }
        };
        if !self.ceiling.dominates(label) {
            // No label names: the reason is shown to the caller, who may not dominate it.
            return Decision::Quarantine("label above the import ceiling".into());
        }
        if event.kind.as_str().starts_with("object.") {
            let type_name = event
                .payload
                .to_value()
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
            match type_name {
                Some(t) if self.known_types.contains(&t) => {}
                Some(t) => return Decision::Quarantine(format!("{UNKNOWN_TYPE} `{t}`")),
                None => return Decision::Quarantine(format!("{UNKNOWN_TYPE} (no type named)")),
            }
        }
        if event.kind.as_str().starts_with("doc.") {
            let doc_type = event
                .payload
                .to_value()
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
            let limits = nodus_sync::crdt::CrdtLimits::default().with_policy(self.snap);
            match doc_type {
                Some(t) if limits.allows(&t) => {}
                Some(t) => return Decision::Quarantine(format!("{DOC_TYPE_NOT_ALLOWED} `{t}`")),
                None => {
                    return Decision::Quarantine(format!("{DOC_TYPE_NOT_ALLOWED} (no type named)"));
                }
            }
        }
        Decision::Apply
    }
}

/// The sync subsystem of one instance: the directory, the importer, the peers and exports
/// tables, this node's age identity (only its public half is kept outside the importer) and
/// bundle signer.
pub(crate) struct SyncState {
    dir: PathBuf,
    importer: Importer,
    conn: Mutex<Connection>,
    recipient: Recipient,
    signer: VaultBundleSigner,
}

impl SyncState {
    /// Opens (creating on first use) the sync directory: its inbox and outbox, the sealed age
    /// identity, the peers table and the importer with the stored trust.
    pub(crate) fn open(
        dir: &Path,
        vault: Arc<dyn SecretVault>,
        node: &crate::NodeIdentity,
    ) -> Result<SyncState, SyncError> {
        for sub in [OUTBOX_DIR, INBOX_DIR] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
        }
        let identity = load_identity(dir, &vault)?;
        let recipient = identity.to_public();
        let node_key = vault
            .find(&KeyScope::System, crate::NODE_KEY_PURPOSE)?
            .ok_or_else(|| SyncError::Store("the node key is missing from the vault".into()))?;
        let signer = VaultBundleSigner {
            vault,
            key: node_key,
            key_id: node.node_id.to_string(),
            public: node.public_key,
        };
        let importer = Importer::open(dir, identity, TrustStore::new())?;
        let conn = Connection::open(dir.join(Importer::FILE_NAME))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(PEERS_SCHEMA)?;
        let state = SyncState {
            dir: dir.to_path_buf(),
            importer,
            conn: Mutex::new(conn),
            recipient,
            signer,
        };
        let peers = state.peers()?;
        state.importer.update_trust(|t| {
            for p in &peers {
                if let Ok(key) = trusted_key(&p.keys) {
                    t.insert(key.for_tenants(p.tenants.iter().cloned()));
                    if p.revoked_ms.is_some() {
                        t.revoke(&p.keys.key_id);
                    }
                }
            }
        });
        Ok(state)
    }

    /// The node's batch and bundle signer (the node key in the vault).
    pub(crate) fn signer(&self) -> &VaultBundleSigner {
        &self.signer
    }

    fn keys(&self) -> PeerKeys {
        PeerKeys {
            key_id: self.signer.key_id.clone(),
            public_key: hex::encode(self.signer.public),
            recipient: self.recipient.to_string(),
        }
    }

    fn peers(&self) -> Result<Vec<PeerRecord>, SyncError> {
        let conn = self.conn.lock();
        let mut st = conn.prepare(
            "SELECT key_id, public_key, recipient, added_ms, revoked_ms, tenants FROM nodus_peers
             ORDER BY key_id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(PeerRecord {
                    keys: PeerKeys {
                        key_id: r.get(0)?,
                        public_key: r.get(1)?,
                        recipient: r.get(2)?,
                    },
                    // Unreadable tenants trust the peer for none (fail closed).
                    tenants: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                    added_ms: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    revoked_ms: r
                        .get::<_, Option<i64>>(4)?
                        .map(|v| u64::try_from(v).unwrap_or(0)),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn peer(&self, key_id: &str) -> Result<Option<PeerRecord>, SyncError> {
        Ok(self.peers()?.into_iter().find(|p| p.keys.key_id == key_id))
    }
}

fn trusted_key(keys: &PeerKeys) -> Result<TrustedKey, SyncError> {
    let public: [u8; 32] = hex::decode(&keys.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SyncError::BadPeer("`public_key` is not 64 hex digits".into()))?;
    Recipient::from_str(&keys.recipient)
        .map_err(|_| SyncError::BadPeer(format!("`{}` is not an age recipient", keys.recipient)))?;
    let id = &keys.key_id;
    let valid_id = !id.is_empty()
        && id.len() <= 128
        && id.char_indices().all(|(i, c)| {
            c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | '@' | ':' | '-'))
        });
    if !valid_id {
        return Err(SyncError::BadPeer(format!(
            "key id `{}` is not 1 to 128 characters of `A-Z a-z 0-9 . _ @ : -`",
            id.chars().take(40).collect::<String>()
        )));
    }
    Ok(TrustedKey::new(keys.key_id.clone(), public))
}

/// The age identity: opened from its sealed file, or generated and sealed on first use. The
/// envelope is bound to a system context, so only this vault's system key opens it.
fn load_identity(dir: &Path, vault: &Arc<dyn SecretVault>) -> Result<Identity, SyncError> {
    let ctx = EnvelopeContext::system("sync", "age-identity", "x25519");
    let path = dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(envelope) => {
            let plain = vault.open(&envelope, &ctx)?;
            let text = std::str::from_utf8(&plain)
                .map_err(|_| SyncError::Store(format!("`{IDENTITY_FILE}` is corrupt")))?;
            Identity::from_str(text)
                .map_err(|_| SyncError::Store(format!("`{IDENTITY_FILE}` is corrupt")))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = match vault.find(&KeyScope::System, AGE_SEAL_KEY_PURPOSE)? {
                Some(k) => k,
                None => {
                    vault
                        .generate(
                            &KeyScope::System,
                            AGE_SEAL_KEY_PURPOSE,
                            KeyAlgorithm::XChaCha20Poly1305,
                        )?
                        .id
                }
            };
            let identity = Identity::generate();
            let secret = identity.to_string();
            let envelope = vault.seal(&key, secret.expose_secret().as_bytes(), &ctx)?;
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            let written = (|| -> io::Result<()> {
                use std::io::Write as _;
                let mut f = fs::File::create(&tmp)?;
                f.write_all(&envelope)?;
                f.sync_all()?;
                fs::rename(&tmp, &path)
            })();
            written.map_err(|e| io_err(&path, e))?;
            Ok(identity)
        }
        Err(e) => Err(io_err(&path, e)),
    }
}

/// The host's handle on sync administration: this node's keys, the trust store of peers.
/// Trusting and revoking are audited.
#[derive(Debug)]
pub struct SyncAdmin<'a> {
    nodus: &'a crate::Nodus,
}

impl<'a> SyncAdmin<'a> {
    pub(crate) fn new(nodus: &'a crate::Nodus) -> Self {
        SyncAdmin { nodus }
    }

    fn state(&self) -> Result<&'a SyncState, SyncError> {
        self.nodus
            .inner
            .sync
            .as_deref()
            .ok_or(SyncError::NotConfigured)
    }

    /// The sync directory.
    ///
    /// # Errors
    /// [`SyncError::NotConfigured`].
    pub fn dir(&self) -> Result<&'a Path, SyncError> {
        Ok(&self.state()?.dir)
    }

    /// This node's public sync identity, for a peer's trust store.
    ///
    /// # Errors
    /// [`SyncError::NotConfigured`].
    pub fn keys(&self) -> Result<PeerKeys, SyncError> {
        Ok(self.state()?.keys())
    }

    /// Every peer, trusted or revoked, by key id.
    ///
    /// # Errors
    /// [`SyncError`].
    pub fn peers(&self) -> Result<Vec<PeerRecord>, SyncError> {
        self.state()?.peers()
    }

    /// Trusts a peer for bundles of `tenants` (its bundles for those tenants are accepted, and
    /// bundles can be exported to it; a bundle it signs for any other tenant is refused with
    /// `key_not_for_tenant`). Trusting it again replaces its tenants. A revoked peer stays
    /// revoked. Audited as `sync.peer_trusted`, with the tenants.
    ///
    /// # Errors
    /// [`SyncError::BadPeer`] for unusable keys or no tenant; storage and audit errors.
    pub fn trust_peer(&self, keys: &PeerKeys, tenants: &[TenantId]) -> Result<(), SyncError> {
        let state = self.state()?;
        if tenants.is_empty() {
            return Err(SyncError::BadPeer(
                "a peer is trusted for at least one tenant".into(),
            ));
        }
        let mut names: Vec<String> = tenants.iter().map(|t| t.as_str().to_owned()).collect();
        names.sort();
        names.dedup();
        let key = trusted_key(keys)?.for_tenants(names.iter().cloned());
        let names_json =
            serde_json::to_string(&names).map_err(|e| SyncError::BadPeer(e.to_string()))?;
        let now = self.nodus.now_ms();
        let mut rec = AuditRecord::new("sync.peer_trusted", Outcome::Allowed);
        rec.time_ms = now;
        rec.detail.insert("key_id".into(), keys.key_id.clone());
        rec.detail
            .insert("public_key".into(), keys.public_key.clone());
        rec.detail
            .insert("recipient".into(), keys.recipient.clone());
        rec.detail.insert("tenants".into(), names.join(","));
        self.nodus
            .audit_event(rec)
            .map_err(|e| SyncError::Audit(e.to_string()))?;
        state.conn.lock().execute(
            "INSERT INTO nodus_peers (key_id, public_key, recipient, added_ms, tenants)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key_id) DO UPDATE SET public_key = excluded.public_key,
                 recipient = excluded.recipient, tenants = excluded.tenants",
            params![
                keys.key_id,
                keys.public_key,
                keys.recipient,
                to_i64(now),
                names_json
            ],
        )?;
        state.importer.update_trust(|t| t.insert(key));
        Ok(())
    }

    /// Revokes a peer for good: its bundles are refused (`revoked_key`) and no bundle is exported
    /// to it. Returns `false` when it is unknown. Audited as `sync.peer_revoked`.
    ///
    /// # Errors
    /// Storage and audit errors.
    pub fn revoke_peer(&self, key_id: &str) -> Result<bool, SyncError> {
        let state = self.state()?;
        let now = self.nodus.now_ms();
        let n = state.conn.lock().execute(
            "UPDATE nodus_peers SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE key_id = ?1",
            params![key_id, to_i64(now)],
        )?;
        state.importer.update_trust(|t| {
            t.revoke(key_id);
        });
        let mut rec = AuditRecord::new(
            "sync.peer_revoked",
            if n > 0 {
                Outcome::Allowed
            } else {
                Outcome::Error
            },
        );
        rec.time_ms = now;
        if n == 0 {
            rec.reason = Some(Cow::Borrowed("UnknownPeer"));
        }
        rec.detail.insert("key_id".into(), key_id.to_owned());
        self.nodus
            .audit_event(rec)
            .map_err(|e| SyncError::Audit(e.to_string()))?;
        Ok(n > 0)
    }
}

// ---- commands ----------------------------------------------------------------------------------

fn state(n: &crate::Nodus) -> Result<&SyncState, CommandError> {
    n.inner.sync.as_deref().ok_or_else(|| {
        CommandError::new(
            "SyncNotConfigured",
            "this instance has no sync directory (set `sync_dir`)",
        )
    })
}

/// A bundle's file name within a sync subdirectory: one plain component, no separators, no
/// `..`, not hidden, at most 200 bytes.
fn file_in(dir: &Path, name: &str) -> Result<PathBuf, CommandError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains(['/', '\\', ':', '\0'])
        && Path::new(name).components().count() == 1
        && matches!(
            Path::new(name).components().next(),
            Some(std::path::Component::Normal(_))
        );
    if ok {
        Ok(dir.join(name))
    } else {
        Err(CommandError::new(
            "BadFileName",
            format!(
                "`{}` is not a plain file name: name a bundle by its file name in the sync directory (no path, separator or `..`)",
                name.chars().take(64).collect::<String>()
            ),
        ))
    }
}

fn record(ctx: &Context, kind: &'static str, outcome: Outcome, time_ms: u64) -> AuditRecord {
    let mut rec = AuditRecord::new(kind, outcome);
    rec.time_ms = time_ms;
    rec.tenant = Some(ctx.tenant().clone());
    rec.actor = Some(ctx.actor().clone());
    rec.session = Some(ctx.session().clone());
    rec
}

fn audit(n: &crate::Nodus, rec: AuditRecord) -> Result<(), CommandError> {
    n.audit_event(rec)
        .map_err(|e| CommandError::new("AuditUnavailable", e.to_string()))
}

/// Audits a rejection (`sync.rejected`, reason = its code) and turns it into the command's error
/// (`BundleRejected`, the message naming the code).
fn rejected(n: &crate::Nodus, ctx: &Context, op: &str, file: &str, r: &Rejection) -> CommandError {
    let mut rec = record(ctx, "sync.rejected", Outcome::Denied, n.now_ms());
    rec.reason = Some(Cow::Borrowed(r.code()));
    rec.detail.insert("op".into(), op.to_owned());
    if !file.is_empty() {
        rec.detail.insert("file".into(), file.to_owned());
    }
    if let Some(id) = r.bundle_id {
        rec.detail.insert("bundle_id".into(), id.to_string());
    }
    rec.detail
        .insert("file_sha256".into(), hex::encode(r.file_sha256));
    if let Err(e) = audit(n, rec) {
        return e;
    }
    CommandError::new(
        "BundleRejected",
        format!("bundle rejected (`{}`): {}", r.code(), r.reason),
    )
}

/// One `sync.equivocation` record per equivocation the log found (kept in its quarantine, never
/// applied): the chain, seq and both hashes.
fn audit_equivocations(
    n: &crate::Nodus,
    ctx: &Context,
    found: &[Equivocation],
    bundle: Option<&BundleId>,
    sha: &str,
) -> Result<(), CommandError> {
    for e in found {
        let mut rec = record(ctx, "sync.equivocation", Outcome::Denied, n.now_ms());
        rec.reason = Some(Cow::Borrowed("Equivocation"));
        if let Some(b) = bundle {
            rec.detail.insert("bundle_id".into(), b.to_string());
        }
        if !sha.is_empty() {
            rec.detail.insert("file_sha256".into(), sha.to_owned());
        }
        rec.detail.insert(
            "event".into(),
            format!("{}:{}", e.conflicting.chain(), e.conflicting.seq),
        );
        rec.detail
            .insert("stored_hash".into(), e.stored.hash.to_string());
        rec.detail
            .insert("conflicting_hash".into(), e.conflicting.hash.to_string());
        audit(n, rec)?;
    }
    Ok(())
}

fn store_err(e: impl std::fmt::Display) -> CommandError {
    CommandError::new("SyncStoreFailed", e.to_string())
}

/// A bundle as verification or staging describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleInfo {
    /// The bundle id.
    pub bundle_id: String,
    /// The tenant.
    pub tenant: String,
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// The file's length.
    pub file_len: u64,
    /// The sender's key id.
    pub sender_key_id: String,
    /// When it was made, unix seconds.
    pub created_at: u64,
    /// When it expires, unix seconds.
    pub expires_at: u64,
    /// Events in the bundle.
    pub events: u64,
    /// Events this node does not hold yet.
    pub new_events: u64,
}

impl From<&BundleSummary> for BundleInfo {
    fn from(s: &BundleSummary) -> Self {
        BundleInfo {
            bundle_id: s.bundle_id.to_string(),
            tenant: s.tenant.to_string(),
            file_sha256: hex::encode(s.file_sha256),
            file_len: s.file_len,
            sender_key_id: s.sender_key_id.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            events: s.events,
            new_events: s.new_events,
        }
    }
}

fn summary_record(
    n: &crate::Nodus,
    ctx: &Context,
    kind: &'static str,
    file: &str,
    s: &BundleSummary,
) -> AuditRecord {
    let mut rec = record(ctx, kind, Outcome::Allowed, n.now_ms());
    rec.detail.insert("file".into(), file.to_owned());
    rec.detail
        .insert("bundle_id".into(), s.bundle_id.to_string());
    rec.detail
        .insert("file_sha256".into(), hex::encode(s.file_sha256));
    rec.detail
        .insert("sender_key_id".into(), s.sender_key_id.clone());
    rec.detail.insert("events".into(), s.events.to_string());
    rec.detail
        .insert("new_events".into(), s.new_events.to_string());
    rec
}

/// `sync.keys`: this node's public sync identity ([`PeerKeys`]), for a peer's trust store.
pub struct SyncKeys(pub(crate) WeakNodus);

impl Command for SyncKeys {
    type Input = Option<NoInput>;
    type Output = PeerKeys;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.keys").description("this node's public sync identity")
    }
    fn call(&self, _ctx: &Context, _input: Option<NoInput>) -> Result<PeerKeys, CommandError> {
        let n = instance(&self.0)?;
        Ok(state(&n)?.keys())
    }
}

/// Input of `sync.export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The receivers, by key id (trusted, not revoked peers; 1 to 128).
    pub to: Vec<String>,
    /// The file name in the outbox (default `<tenant>-<bundle id>.noduspkg`); never overwritten.
    #[serde(default)]
    pub file: Option<String>,
    /// Validity in hours (default 168: 7 days).
    #[serde(default)]
    pub ttl_hours: Option<u64>,
    /// Only what follows the last export to these peers (per chain, the lowest seq any of them
    /// was sent); default `false`: the whole log. If a previous bundle never arrived, the
    /// receiver refuses this one (`missing_prerequisite`): export again without it.
    #[serde(default)]
    pub since_last: bool,
}

/// What `sync.export` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportInfo {
    /// The bundle id.
    pub bundle_id: String,
    /// The file name in the outbox.
    pub file: String,
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// Bytes written.
    pub file_len: u64,
    /// Events in the bundle.
    pub events: u64,
    /// The receivers' key ids.
    pub to: Vec<String>,
    /// Each chain's range in the bundle: `"<chain>"` → `[from, to]`.
    pub chains: BTreeMap<String, [u64; 2]>,
    /// Whether the bundle starts after the last export to these peers (`since_last`).
    pub incremental: bool,
}

/// Per chain, the highest seq exported to a peer (stored as JSON with each export).
type Through = Vec<(ChainId, u64)>;

/// What every peer in `to` was sent already: per chain, the lowest of their last exports' marks
/// (a chain some peer was never sent is absent), as a version vector read back from the log.
fn since_last(
    s: &SyncState,
    log: &dyn TenantEventLog,
    tenant: &TenantId,
    to: &[String],
) -> Result<(VersionVector, Through), CommandError> {
    let mut common: Option<BTreeMap<ChainId, u64>> = None;
    for peer in to {
        let row: Option<String> = {
            let conn = s.conn.lock();
            let mut st = conn
                .prepare(
                    "SELECT through, peers FROM nodus_exports WHERE tenant = ?1
                     ORDER BY at_ms DESC, rowid DESC",
                )
                .map_err(store_err)?;
            let rows = st
                .query_map([tenant.as_str()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(store_err)?;
            let mut found = None;
            for row in rows {
                let (through, peers) = row.map_err(store_err)?;
                if peers.split(',').any(|p| p == peer) {
                    found = Some(through);
                    break;
                }
            }
            found
        };
        let marks: BTreeMap<ChainId, u64> = match row {
            Some(json) => serde_json::from_str::<Through>(&json)
                .map_err(store_err)?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        common = Some(match common {
            None => marks,
            Some(c) => c
                .into_iter()
                .filter_map(|(chain, seq)| marks.get(&chain).map(|m| (chain, seq.min(*m))))
                .collect(),
        });
    }
    let mut since = VersionVector::new();
    let mut through = Through::new();
    for (chain, seq) in common.unwrap_or_default() {
        if let Some(e) = log
            .read_chain(tenant, chain, seq, 1)
            .map_err(store_err)?
            .into_iter()
            .find(|e| e.seq == seq)
        {
            since.insert(chain, nodus_fabric::ChainHead { seq, hash: e.hash });
            through.push((chain, seq));
        }
    }
    Ok((since, through))
}

/// `sync.export`: writes a bundle of the caller's tenant's whole event log (every label: grant
/// the permission to roles trusted with that), signed by this node and encrypted to the named
/// peers, into the outbox. Audited as `sync.exported`.
pub struct SyncExport(pub(crate) WeakNodus);

impl Command for SyncExport {
    type Input = ExportRequest;
    type Output = ExportInfo;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.export")
            .rate_class("admin")
            .description("export the tenant's events as a sealed bundle for peers")
    }
    fn call(&self, ctx: &Context, input: ExportRequest) -> Result<ExportInfo, CommandError> {
        let n = instance(&self.0)?;
        let s = state(&n)?;
        let outbox = s.dir.join(OUTBOX_DIR);
        let named = input
            .file
            .as_deref()
            .map(|f| file_in(&outbox, f))
            .transpose()?;
        if input.to.is_empty() {
            return Err(CommandError::new(
                "NoRecipients",
                "name at least one peer in `to`",
            ));
        }
        let mut recipients = Vec::with_capacity(input.to.len());
        for key_id in &input.to {
            let peer = s
                .peer(key_id)
                .map_err(store_err)?
                .filter(|p| p.revoked_ms.is_none())
                .ok_or_else(|| {
                    CommandError::new(
                        "UnknownPeer",
                        format!(
                            "`{}` is not a trusted peer",
                            key_id.chars().take(64).collect::<String>()
                        ),
                    )
                })?;
            let r = Recipient::from_str(&peer.keys.recipient).map_err(|_| {
                CommandError::new(
                    "UnknownPeer",
                    format!("peer `{key_id}` has no usable recipient"),
                )
            })?;
            recipients.push(r);
        }
        let ttl = input
            .ttl_hours
            .map_or(DEFAULT_TTL, |h| Duration::from_secs(h.saturating_mul(3600)));
        let log = n.inner.event_log.as_ref();
        let (since, mut through) = if input.since_last {
            since_last(s, log, ctx.tenant(), &input.to)?
        } else {
            (VersionVector::new(), Through::new())
        };
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| CommandError::new("ExportFailed", e.to_string()))?;
        let tmp = outbox.join(format!(".export-{}", hex::encode(rnd)));
        let exported = (|| -> Result<_, String> {
            let f = fs::File::create(&tmp).map_err(|e| e.to_string())?;
            let mut w = io::BufWriter::new(f);
            let report = Exporter::new()
                .export(
                    log,
                    ctx.tenant(),
                    &since,
                    &s.signer,
                    &recipients,
                    ttl,
                    &mut w,
                )
                .map_err(|e| e.to_string())?;
            let f = w.into_inner().map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
            let dest = match &named {
                Some(p) => p.clone(),
                None => outbox.join(format!("{}-{}.noduspkg", ctx.tenant(), report.bundle_id)),
            };
            // A hard link never replaces an existing file: an outbox file is never overwritten.
            fs::hard_link(&tmp, &dest).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => "the file exists already in the outbox".to_owned(),
                _ => e.to_string(),
            })?;
            let _ = fs::remove_file(&tmp);
            Ok((report, dest))
        })();
        let (report, dest) = match exported {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                let mut rec = record(ctx, "sync.exported", Outcome::Error, n.now_ms());
                rec.reason = Some(Cow::Borrowed("ExportFailed"));
                audit(&n, rec)?;
                return Err(CommandError::new("ExportFailed", e));
            }
        };
        let file = dest
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let now = n.now_ms();
        let mut rec = record(ctx, "sync.exported", Outcome::Allowed, now);
        rec.detail.insert("file".into(), file.clone());
        rec.detail
            .insert("bundle_id".into(), report.bundle_id.to_string());
        rec.detail
            .insert("file_sha256".into(), hex::encode(report.file_sha256));
        rec.detail
            .insert("events".into(), report.events.to_string());
        rec.detail.insert("to".into(), input.to.join(","));
        // No bundle leaves unaudited: without the record, the file is removed.
        if let Err(e) = audit(&n, rec) {
            let _ = fs::remove_file(&dest);
            return Err(e);
        }
        for c in &report.chains {
            match through.iter_mut().find(|(chain, _)| *chain == c.chain) {
                Some((_, seq)) => *seq = (*seq).max(c.to),
                None => through.push((c.chain, c.to)),
            }
        }
        let through_json = serde_json::to_string(&through).map_err(store_err)?;
        s.conn
            .lock()
            .execute(
                "INSERT INTO nodus_exports
                 (bundle_id, tenant, file, file_sha256, events, peers, at_ms, through)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    report.bundle_id.to_string(),
                    ctx.tenant().as_str(),
                    file,
                    hex::encode(report.file_sha256),
                    to_i64(report.events),
                    input.to.join(","),
                    to_i64(now),
                    through_json
                ],
            )
            .map_err(store_err)?;
        Ok(ExportInfo {
            bundle_id: report.bundle_id.to_string(),
            file,
            file_sha256: hex::encode(report.file_sha256),
            file_len: report.file_len,
            events: report.events,
            to: input.to,
            chains: report
                .chains
                .iter()
                .map(|c| (c.chain.to_string(), [c.from, c.to]))
                .collect(),
            incremental: input.since_last,
        })
    }
}

/// Input naming a bundle file in the inbox.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// The file name in the sync directory's `inbox/`.
    pub file: String,
}

/// `sync.verify`: every check of the bundle in the inbox for the caller's tenant, a dry run.
/// Audited as `sync.verified`, or `sync.rejected` with the code.
pub struct SyncVerify(pub(crate) WeakNodus);

impl Command for SyncVerify {
    type Input = BundleFile;
    type Output = BundleInfo;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.verify")
            .rate_class("admin")
            .description("verify a bundle in the inbox (a dry run)")
    }
    fn call(&self, ctx: &Context, input: BundleFile) -> Result<BundleInfo, CommandError> {
        let n = instance(&self.0)?;
        let s = state(&n)?;
        let path = file_in(&s.dir.join(INBOX_DIR), &input.file)?;
        let log = FabricLog(&n.inner.fabric);
        match s.importer.verify(&log, ctx.tenant(), &path) {
            Ok(summary) => {
                audit(
                    &n,
                    summary_record(&n, ctx, "sync.verified", &input.file, &summary),
                )?;
                Ok(BundleInfo::from(&summary))
            }
            Err(r) => Err(rejected(&n, ctx, "verify", &input.file, &r)),
        }
    }
}

/// `sync.stage`: verifies the bundle in the inbox and keeps it (still encrypted) in staging.
/// Audited as `sync.staged`, or `sync.rejected` with the code.
pub struct SyncStage(pub(crate) WeakNodus);

impl Command for SyncStage {
    type Input = BundleFile;
    type Output = BundleInfo;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.stage")
            .rate_class("admin")
            .description("verify and stage a bundle from the inbox")
    }
    fn call(&self, ctx: &Context, input: BundleFile) -> Result<BundleInfo, CommandError> {
        let n = instance(&self.0)?;
        let s = state(&n)?;
        let path = file_in(&s.dir.join(INBOX_DIR), &input.file)?;
        let log = FabricLog(&n.inner.fabric);
        match s.importer.stage(&log, ctx.tenant(), &path) {
            Ok(staged) => {
                audit(
                    &n,
                    summary_record(&n, ctx, "sync.staged", &input.file, &staged.summary),
                )?;
                Ok(BundleInfo::from(&staged.summary))
            }
            Err(r) => Err(rejected(&n, ctx, "stage", &input.file, &r)),
        }
    }
}

/// Input of `sync.activate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// The staged bundle's id.
    pub bundle_id: String,
}

/// What `sync.activate` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActivateInfo {
    /// The bundle id.
    pub bundle_id: String,
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// Events applied (to the log and the projections).
    pub applied: u64,
    /// Events already held.
    pub duplicates: u64,
    /// Events of the tenant held by the log after a gap (e.g. behind a quarantined event of
    /// their chain), after this activation.
    pub pending: u64,
    /// Events quarantined, with why (`"<chain>:<seq>"` → reason).
    pub quarantined: BTreeMap<String, String>,
    /// Equivocations found.
    pub equivocations: u64,
    /// Events the log refused.
    pub rejected: u64,
}

fn known_types(
    n: &crate::Nodus,
    ctx: &Context,
    snap: &PolicySnapshot,
) -> Result<BTreeSet<String>, CommandError> {
    Ok(n.inner
        .fabric
        .list_types(ctx.tenant(), snap)
        .map_err(store_err)?
        .iter()
        .map(|t| t.name().as_str().to_owned())
        .collect())
}

/// The admission of the caller's tenant under the current policy: the tenant's import ceiling
/// when its policy sets one (a value that does not parse under the current scheme is an error,
/// never silently replaced), else the caller's clearance; the types the tenant knows now.
fn admission<'a>(
    n: &crate::Nodus,
    ctx: &Context,
    snap: &'a PolicySnapshot,
) -> Result<PolicyAdmission<'a>, CommandError> {
    let ceiling = match snap.get_str("sync.import_ceiling") {
        Ok(text) => snap.label_scheme().parse(text).map_err(|e| {
            CommandError::new(
                "BadSetting",
                format!("`sync.import_ceiling` (`{text}`) is not a label: {e}"),
            )
        })?,
        Err(_) => ctx.subject().clearance(),
    };
    Ok(PolicyAdmission {
        snap,
        ceiling,
        known_types: known_types(n, ctx, snap)?,
    })
}

/// `sync.activate`: re-verifies a staged bundle of the caller's tenant, admits each new event
/// under the *current* policy (a label that does not parse or is above the import ceiling, an
/// object of an unknown type → quarantine), applies the admitted ones to the log and the
/// projections in one transaction, and records the bundle in the replay ledger. The import
/// ceiling is the tenant's `sync.import_ceiling` policy key when the schema declares it, else the
/// caller's clearance. Audited as `sync.activated`, one `sync.quarantined` per quarantined event,
/// or `sync.rejected`.
pub struct SyncActivate(pub(crate) WeakNodus);

impl Command for SyncActivate {
    type Input = ActivateRequest;
    type Output = ActivateInfo;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.activate")
            .rate_class("admin")
            .description("activate a staged bundle under the current policy")
    }
    fn call(&self, ctx: &Context, input: ActivateRequest) -> Result<ActivateInfo, CommandError> {
        let n = instance(&self.0)?;
        let s = state(&n)?;
        let not_staged = || {
            CommandError::new(
                "NotStaged",
                format!(
                    "bundle `{}` is not staged",
                    input.bundle_id.chars().take(64).collect::<String>()
                ),
            )
        };
        let id = BundleId::from_str(&input.bundle_id).map_err(|_| not_staged())?;
        // Only a bundle staged for the caller's own tenant.
        let mine = s
            .importer
            .staged()
            .map_err(store_err)?
            .into_iter()
            .any(|b| b.summary.bundle_id == id && &b.summary.tenant == ctx.tenant());
        if !mine {
            return Err(not_staged());
        }
        let snap = snapshot(&n, ctx)?;
        let fabric = &n.inner.fabric;
        let admission = admission(&n, ctx, &snap)?;
        let log = FabricLog(fabric);
        let report = s
            .importer
            .activate(&log, &id, &admission)
            .map_err(|r| rejected(&n, ctx, "activate", "", &r))?;
        // Decided whole (`PolicyAdmission::admit_all`): objects of a type the bundle defines were
        // applied with it, in the one transaction.
        let quarantined: BTreeMap<String, String> = report
            .quarantined
            .iter()
            .map(|(r, why)| (format!("{}:{}", r.chain, r.seq), why.clone()))
            .collect();
        let applied = report.applied;
        let pending = log.pending(ctx.tenant()).map_err(store_err)?.len() as u64;
        n.inner.objects_cache.invalidate_tenant(ctx.tenant());
        let now = n.now_ms();
        let sha = hex::encode(report.file_sha256);
        let mut rec = record(ctx, "sync.activated", Outcome::Allowed, now);
        rec.detail
            .insert("bundle_id".into(), report.bundle_id.to_string());
        rec.detail.insert("file_sha256".into(), sha.clone());
        rec.detail.insert("applied".into(), applied.to_string());
        rec.detail
            .insert("duplicates".into(), report.duplicates.to_string());
        rec.detail
            .insert("quarantined".into(), quarantined.len().to_string());
        rec.detail.insert(
            "equivocations".into(),
            report.equivocations.len().to_string(),
        );
        audit(&n, rec)?;
        audit_equivocations(
            &n,
            ctx,
            &report.equivocations,
            Some(&report.bundle_id),
            &sha,
        )?;
        for (event, why) in &quarantined {
            let mut rec = record(ctx, "sync.quarantined", Outcome::Denied, now);
            rec.reason = Some(Cow::Borrowed("PolicyAdmission"));
            rec.detail
                .insert("bundle_id".into(), report.bundle_id.to_string());
            rec.detail.insert("file_sha256".into(), sha.clone());
            rec.detail.insert("event".into(), event.clone());
            rec.detail.insert("why".into(), why.clone());
            audit(&n, rec)?;
        }
        let _ = n.inner.events.publish(
            "sync.activated",
            Some(ctx.tenant()),
            serde_json::json!({
                "bundle_id": report.bundle_id.to_string(),
                "applied": applied,
                "quarantined": quarantined.len(),
            }),
        );
        Ok(ActivateInfo {
            bundle_id: report.bundle_id.to_string(),
            file_sha256: sha,
            applied,
            duplicates: report.duplicates,
            pending,
            quarantined,
            equivocations: report.equivocations.len() as u64,
            rejected: report.rejected.len() as u64,
        })
    }
}

/// What `sync.recheck` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecheckInfo {
    /// Events the current policy now admits, applied and out of the quarantine
    /// (`"<chain>:<seq>"`).
    pub released: Vec<String>,
    /// Events applied (the released ones and those they unblocked).
    pub applied: u64,
    /// Events of the tenant still held.
    pub remaining: u64,
}

/// `sync.recheck`: asks the *current* policy again (import ceiling, label scheme, known types)
/// about every event of the caller's tenant held in the quarantine; those it now admits are
/// applied (with the pending events they unblock). Each release is audited as `sync.released`.
pub struct SyncRecheck(pub(crate) WeakNodus);

impl Command for SyncRecheck {
    type Input = Option<NoInput>;
    type Output = RecheckInfo;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.recheck")
            .rate_class("admin")
            .description("re-check the tenant's quarantined sync events under the current policy")
    }
    fn call(&self, ctx: &Context, _input: Option<NoInput>) -> Result<RecheckInfo, CommandError> {
        let n = instance(&self.0)?;
        let s = state(&n)?;
        let held = s
            .importer
            .quarantined(Some(ctx.tenant()))
            .map_err(store_err)?;
        if held.is_empty() {
            return Ok(RecheckInfo {
                released: Vec::new(),
                applied: 0,
                remaining: 0,
            });
        }
        let snap = snapshot(&n, ctx)?;
        let admission = admission(&n, ctx, &snap)?;
        let log = FabricLog(&n.inner.fabric);
        let ids: Vec<u64> = held.iter().map(|q| q.id).collect();
        let report = s
            .importer
            .release(&log, &ids, &admission)
            .map_err(store_err)?;
        n.inner.objects_cache.invalidate_tenant(ctx.tenant());
        let ledger = s.importer.imported().map_err(store_err)?;
        let now = n.now_ms();
        let mut released = Vec::with_capacity(report.released.len());
        for r in &report.released {
            let event = format!("{}:{}", r.chain, r.seq);
            let bundle = held
                .iter()
                .find(|q| q.event.chain() == r.chain && q.event.seq == r.seq)
                .map(|q| q.bundle_id);
            let mut rec = record(ctx, "sync.released", Outcome::Allowed, now);
            rec.detail.insert("event".into(), event.clone());
            if let Some(b) = bundle {
                rec.detail.insert("bundle_id".into(), b.to_string());
                if let Some(l) = ledger.iter().find(|l| l.bundle_id == b) {
                    rec.detail
                        .insert("file_sha256".into(), hex::encode(l.file_sha256));
                }
            }
            audit(&n, rec)?;
            released.push(event);
        }
        audit_equivocations(&n, ctx, &report.equivocations, None, "")?;
        let remaining = s
            .importer
            .quarantined(Some(ctx.tenant()))
            .map_err(store_err)?
            .len() as u64;
        if !released.is_empty() {
            let _ = n.inner.events.publish(
                "sync.released",
                Some(ctx.tenant()),
                serde_json::json!({"released": released.len(), "remaining": remaining}),
            );
        }
        Ok(RecheckInfo {
            released,
            applied: report.applied,
            remaining,
        })
    }
}

/// One peer in `sync.status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// The peer's key id.
    pub key_id: String,
    /// `trusted` or `revoked`.
    pub state: &'static str,
    /// The last bundle of the caller's tenant exported to it, unix ms.
    pub last_export_ms: Option<u64>,
    /// The last bundle of the caller's tenant from it activated here, unix ms.
    pub last_import_ms: Option<u64>,
}

/// A bundle in `sync.status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleStatus {
    /// The bundle id.
    pub bundle_id: String,
    /// SHA-256 of the file, hex.
    pub file_sha256: String,
    /// The sender's key id (for exports: this node).
    pub sender_key_id: String,
    /// When it was staged, activated or exported, unix seconds.
    pub at: u64,
}

/// What `sync.status` answers: the air-gap posture of the caller's tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// This node's public sync identity.
    pub node: PeerKeys,
    /// Bundles staged, not yet activated.
    pub staged: Vec<BundleStatus>,
    /// Bundles activated (the replay ledger), oldest first.
    pub activated: Vec<BundleStatus>,
    /// Bundles exported, oldest first.
    pub exported: Vec<BundleStatus>,
    /// Events held in quarantine.
    pub quarantined: u64,
    /// Every peer, with the last exchange of this tenant with it.
    pub peers: Vec<PeerStatus>,
    /// Live sync of this tenant, when the instance runs a sync agent
    /// ([`NodusBuilder::sync`](crate::NodusBuilder::sync)): counters and the live peers.
    pub live: Option<crate::sync_agent::LiveStatus>,
}

/// `sync.status`: the air-gap posture report of the caller's tenant — staged vs activated
/// bundles, exports, quarantined events, trusted and revoked peers with the last exchange per
/// peer.
pub struct SyncStatusCommand(pub(crate) WeakNodus);

impl Command for SyncStatusCommand {
    type Input = Option<NoInput>;
    type Output = SyncStatus;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("sync.status").description("the tenant's air-gap sync posture")
    }
    fn call(&self, ctx: &Context, _input: Option<NoInput>) -> Result<SyncStatus, CommandError> {
        let n = instance(&self.0)?;
        let s = state(&n)?;
        let tenant = ctx.tenant();
        let staged = s
            .importer
            .staged()
            .map_err(store_err)?
            .into_iter()
            .filter(|b| &b.summary.tenant == tenant)
            .map(|b| BundleStatus {
                bundle_id: b.summary.bundle_id.to_string(),
                file_sha256: hex::encode(b.summary.file_sha256),
                sender_key_id: b.summary.sender_key_id,
                at: b.staged_at,
            })
            .collect();
        let ledger: Vec<_> = s
            .importer
            .imported()
            .map_err(store_err)?
            .into_iter()
            .filter(|e| &e.tenant == tenant)
            .collect();
        let exported: Vec<(BundleStatus, String)> = {
            let conn = s.conn.lock();
            let mut st = conn
                .prepare(
                    "SELECT bundle_id, file_sha256, peers, at_ms FROM nodus_exports
                     WHERE tenant = ?1 ORDER BY at_ms, rowid",
                )
                .map_err(store_err)?;
            st.query_map([tenant.as_str()], |r| {
                Ok((
                    BundleStatus {
                        bundle_id: r.get(0)?,
                        file_sha256: r.get(1)?,
                        sender_key_id: s.signer.key_id.clone(),
                        at: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0) / 1000,
                    },
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(store_err)?
            .collect::<Result<_, _>>()
            .map_err(store_err)?
        };
        let quarantined = s
            .importer
            .quarantined(Some(tenant))
            .map_err(store_err)?
            .len() as u64;
        let peers = s
            .peers()
            .map_err(store_err)?
            .into_iter()
            .map(|p| {
                let id = &p.keys.key_id;
                PeerStatus {
                    state: if p.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "trusted"
                    },
                    last_export_ms: exported
                        .iter()
                        .filter(|(_, to)| to.split(',').any(|k| k == id))
                        .map(|(b, _)| b.at.saturating_mul(1000))
                        .max(),
                    last_import_ms: ledger
                        .iter()
                        .filter(|e| &e.sender_key_id == id)
                        .map(|e| e.activated_at.saturating_mul(1000))
                        .max(),
                    key_id: id.clone(),
                }
            })
            .collect();
        Ok(SyncStatus {
            node: s.keys(),
            staged,
            activated: ledger
                .into_iter()
                .map(|e| BundleStatus {
                    bundle_id: e.bundle_id.to_string(),
                    file_sha256: hex::encode(e.file_sha256),
                    sender_key_id: e.sender_key_id,
                    at: e.activated_at,
                })
                .collect(),
            exported: exported.into_iter().map(|(b, _)| b).collect(),
            quarantined,
            peers,
            live: crate::sync_agent::live_status(&n, tenant),
        })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let d = Path::new("/sync/inbox");
        assert!(file_in(d, "a.noduspkg").is_ok());
        for bad in [
            "",
            "..",
            ".",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "c:x",
        ] {
            assert_eq!(
                file_in(d, bad).unwrap_err().code(),
                "BadFileName",
                "{bad:?}"
            );
        }
    }
}
