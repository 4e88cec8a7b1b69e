//! The trust store: per tenant, the issuer keys it accepts (with validity windows) and a
//! versioned, monotonic revocation list.

use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};
use nodus_policy::TenantId;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::VaultError;

fn storage(e: impl std::fmt::Display) -> VaultError {
    VaultError::Storage(e.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The key id of an Ed25519 public key: hex of the first 8 bytes of `SHA-256("nodus-key-id-v1\0" ‖ pk)`.
pub fn key_id_for(public_key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"nodus-key-id-v1\0");
    h.update(public_key);
    let d: [u8; 32] = h.finalize().into();
    hex::encode(d.get(..8).unwrap_or_default())
}

/// What verifying against the trust store concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustVerdict {
    /// A trusted issuer signed it.
    Trusted,
    /// The tenant does not know this issuer.
    UnknownIssuer,
    /// The issuer was revoked.
    Revoked,
    /// The issuer's validity window has ended.
    Expired,
    /// The issuer's validity window has not started.
    NotYetValid,
    /// The signature does not verify (strictly).
    BadSignature,
}

/// One accepted issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssuerInfo {
    /// Its key id.
    pub key_id: String,
    /// Its public key, hex.
    pub public_key: String,
    /// Valid from (unix ms).
    pub valid_from_ms: Option<u64>,
    /// Valid until (unix ms).
    pub valid_until_ms: Option<u64>,
    /// Whether it is revoked.
    pub revoked: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS trust_issuers (tenant TEXT NOT NULL, key_id TEXT NOT NULL, public_key BLOB NOT NULL,
    valid_from INTEGER, valid_until INTEGER, PRIMARY KEY (tenant, key_id));
CREATE TABLE IF NOT EXISTS trust_revocations (tenant TEXT NOT NULL, key_id TEXT NOT NULL, list_version INTEGER NOT NULL,
    PRIMARY KEY (tenant, key_id));
";

/// Per-tenant issuer keys and revocations, persisted in SQLite (the vault's file, or memory).
#[derive(Clone)]
pub struct TrustStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustStore")
    }
}

impl TrustStore {
    /// A trust store held in memory.
    ///
    /// # Errors
    /// Storage errors.
    pub fn in_memory() -> Result<Self, VaultError> {
        Self::on_connection(Arc::new(Mutex::new(
            Connection::open_in_memory().map_err(storage)?,
        )))
    }

    pub(crate) fn on_connection(conn: Arc<Mutex<Connection>>) -> Result<Self, VaultError> {
        conn.lock()
            .execute_batch(SCHEMA)
            .map_err(|e| VaultError::Corrupt(e.to_string()))?;
        Ok(TrustStore { conn })
    }

    /// Trusts `public_key` for `tenant` within an optional validity window; returns its key id.
    ///
    /// # Errors
    /// [`VaultError::BadPublicKey`] for an invalid or weak (small-order) key.
    pub fn add_issuer(
        &self,
        tenant: &TenantId,
        public_key: &[u8; 32],
        valid_from_ms: Option<u64>,
        valid_until_ms: Option<u64>,
    ) -> Result<String, VaultError> {
        let vk = VerifyingKey::from_bytes(public_key)
            .map_err(|_| VaultError::BadPublicKey("not a valid Ed25519 point"))?;
        if vk.is_weak() {
            return Err(VaultError::BadPublicKey("weak (small-order) key"));
        }
        let id = key_id_for(public_key);
        self.conn
            .lock()
            .execute(
                "INSERT OR REPLACE INTO trust_issuers (tenant, key_id, public_key, valid_from, valid_until) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant.as_str(), id, public_key.as_slice(), valid_from_ms.map(|v| v as i64), valid_until_ms.map(|v| v as i64)],
            )
            .map_err(storage)?;
        Ok(id)
    }

    /// Revokes an issuer for `tenant`; returns the new revocation-list version (monotonic). Revoking
    /// twice keeps the original entry.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke(&self, tenant: &TenantId, key_id: &str) -> Result<u64, VaultError> {
        let conn = self.conn.lock();
        let current: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(list_version), 0) FROM trust_revocations WHERE tenant = ?1",
                [tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(storage)?;
        let changed = conn
            .execute("INSERT OR IGNORE INTO trust_revocations (tenant, key_id, list_version) VALUES (?1, ?2, ?3)", params![tenant.as_str(), key_id, current + 1])
            .map_err(storage)?;
        Ok(if changed == 1 {
            current as u64 + 1
        } else {
            current as u64
        })
    }

    /// The tenant's revocation-list version (0 = nothing revoked).
    ///
    /// # Errors
    /// Storage errors.
    pub fn revocation_version(&self, tenant: &TenantId) -> Result<u64, VaultError> {
        let v: i64 = self
            .conn
            .lock()
            .query_row(
                "SELECT COALESCE(MAX(list_version), 0) FROM trust_revocations WHERE tenant = ?1",
                [tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(storage)?;
        Ok(v as u64)
    }

    /// The tenant's issuers.
    ///
    /// # Errors
    /// Storage errors.
    pub fn issuers(&self, tenant: &TenantId) -> Result<Vec<IssuerInfo>, VaultError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(
                "SELECT i.key_id, i.public_key, i.valid_from, i.valid_until, r.key_id IS NOT NULL FROM trust_issuers i
                 LEFT JOIN trust_revocations r ON r.tenant = i.tenant AND r.key_id = i.key_id WHERE i.tenant = ?1 ORDER BY i.key_id",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([tenant.as_str()], |r| {
                Ok(IssuerInfo {
                    key_id: r.get(0)?,
                    public_key: hex::encode(r.get::<_, Vec<u8>>(1)?),
                    valid_from_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    valid_until_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    revoked: r.get(4)?,
                })
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        Ok(rows)
    }

    /// Verifies `signature` over `message` by issuer `key_id` for `tenant`, now.
    ///
    /// # Errors
    /// Storage errors (a bad signature is a verdict, not an error).
    pub fn verify(
        &self,
        tenant: &TenantId,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<TrustVerdict, VaultError> {
        self.verify_at(tenant, key_id, message, signature, now_ms())
    }

    /// As [`TrustStore::verify`], at time `now_ms`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn verify_at(
        &self,
        tenant: &TenantId,
        key_id: &str,
        message: &[u8],
        signature: &[u8],
        now_ms: u64,
    ) -> Result<TrustVerdict, VaultError> {
        let conn = self.conn.lock();
        let row: Option<(Vec<u8>, Option<i64>, Option<i64>)> = conn
            .query_row(
                "SELECT public_key, valid_from, valid_until FROM trust_issuers WHERE tenant = ?1 AND key_id = ?2",
                params![tenant.as_str(), key_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(storage)?;
        let Some((pk, from, until)) = row else {
            return Ok(TrustVerdict::UnknownIssuer);
        };
        let revoked: bool = conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM trust_revocations WHERE tenant = ?1 AND key_id = ?2)",
                params![tenant.as_str(), key_id],
                |r| r.get(0),
            )
            .map_err(storage)?;
        drop(conn);
        if revoked {
            return Ok(TrustVerdict::Revoked);
        }
        if from.is_some_and(|f| now_ms < f as u64) {
            return Ok(TrustVerdict::NotYetValid);
        }
        if until.is_some_and(|u| now_ms >= u as u64) {
            return Ok(TrustVerdict::Expired);
        }
        let Ok(pk) = <[u8; 32]>::try_from(pk.as_slice()) else {
            return Ok(TrustVerdict::BadSignature);
        };
        let (Ok(vk), Ok(sig)) = (
            VerifyingKey::from_bytes(&pk),
            <[u8; 64]>::try_from(signature),
        ) else {
            return Ok(TrustVerdict::BadSignature);
        };
        Ok(
            match vk.verify_strict(message, &Signature::from_bytes(&sig)) {
                Ok(()) => TrustVerdict::Trusted,
                Err(_) => TrustVerdict::BadSignature,
            },
        )
    }
}
