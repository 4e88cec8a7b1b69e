//! The software vault: key material sealed under a master key, persisted in SQLite.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, params};
use zeroize::Zeroizing;

use super::trust::TrustStore;
use super::{
    EnvelopeContext, HEADER_LEN, KeyAlgorithm, KeyId, KeyMeta, KeyScope, KeyState, MasterKey,
    SecretVault, VaultError, associated_data, check_key_scope, parse_envelope_header, write_header,
};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn storage(e: impl std::fmt::Display) -> VaultError {
    VaultError::Storage(e.to_string())
}

/// One version's unsealed material and counters.
struct Version {
    meta: Mutex<KeyMeta>,
    /// `None` once destroyed.
    secret: RwLock<Option<Zeroizing<[u8; 32]>>>,
    /// Cached Ed25519 key (derived from the secret).
    signing: RwLock<Option<SigningKey>>,
    encryptions: AtomicU64,
    signatures: AtomicU64,
}

/// What `open_checked` returns: the key the header named (its id and entry) and the plaintext.
type Opened = (KeyId, Arc<Key>, Zeroizing<Vec<u8>>);

struct Key {
    scope: KeyScope,
    purpose: String,
    alg: KeyAlgorithm,
    versions: RwLock<Vec<Arc<Version>>>,
}

impl Key {
    fn version(&self, v: u32) -> Option<Arc<Version>> {
        self.versions
            .read()
            .iter()
            .find(|x| x.meta.lock().version == v)
            .cloned()
    }
    /// The active version (the newest one, should a damaged file ever hold two).
    fn active(&self) -> Option<Arc<Version>> {
        active_in(&self.versions.read())
    }
}

fn active_in(versions: &[Arc<Version>]) -> Option<Arc<Version>> {
    versions
        .iter()
        .filter_map(|x| {
            let m = x.meta.lock();
            (m.state == KeyState::Active).then_some((m.version, x))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, x)| x.clone())
}

/// The default [`SecretVault`]: every key's material sealed (XChaCha20-Poly1305) under the
/// [`MasterKey`] with the key's id, version, scope, purpose and algorithm as associated data,
/// persisted in SQLite (or held in memory). Unsealed material lives only in zeroizing buffers.
pub struct SoftVault {
    master: MasterKey,
    conn: Arc<Mutex<Connection>>,
    keys: RwLock<HashMap<KeyId, Arc<Key>>>,
    trust: TrustStore,
}

impl std::fmt::Debug for SoftVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftVault")
            .field("keys", &self.keys.read().len())
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vault_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vault_keys (
    id TEXT NOT NULL, version INTEGER NOT NULL, scope TEXT NOT NULL, purpose TEXT NOT NULL,
    alg INTEGER NOT NULL, state INTEGER NOT NULL, created_ms INTEGER NOT NULL, rotated_from INTEGER,
    encryptions INTEGER NOT NULL DEFAULT 0, signatures INTEGER NOT NULL DEFAULT 0, sealed BLOB,
    PRIMARY KEY (id, version));
";

const CHECK_PLAINTEXT: &[u8] = b"nodus master key check v1";

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn wrap_ad(
    id: &KeyId,
    version: u32,
    scope: &KeyScope,
    purpose: &str,
    alg: KeyAlgorithm,
) -> Vec<u8> {
    let mut ad = b"nodus-keywrap-v1\0".to_vec();
    ad.extend_from_slice(&id.0);
    ad.extend_from_slice(&version.to_be_bytes());
    for s in [scope.encode().as_str(), purpose] {
        ad.extend_from_slice(&(s.len() as u32).to_be_bytes());
        ad.extend_from_slice(s.as_bytes());
    }
    ad.push(alg.byte());
    ad
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| VaultError::Rng)?;
    Ok(b)
}

/// 32 random bytes written straight into a zeroizing buffer (no stray copy on the stack).
fn random_secret() -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut b = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *b).map_err(|_| VaultError::Rng)?;
    Ok(b)
}

/// Opens a key version's sealed material (`nonce ‖ ciphertext ‖ tag`) under the master cipher.
fn unseal_with(
    cipher: &XChaCha20Poly1305,
    id: &KeyId,
    version: u32,
    scope: &KeyScope,
    purpose: &str,
    alg: KeyAlgorithm,
    sealed: &[u8],
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let (n, ct) = sealed
        .split_at_checked(24)
        .ok_or(VaultError::Authentication)?;
    let nonce = XNonce::try_from(n).map_err(|_| VaultError::Authentication)?;
    let ad = wrap_ad(id, version, scope, purpose, alg);
    let pt = Zeroizing::new(
        cipher
            .decrypt(&nonce, Payload { msg: ct, aad: &ad })
            .map_err(|_| VaultError::Authentication)?,
    );
    if pt.len() != 32 {
        return Err(VaultError::Authentication);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&pt);
    Ok(out)
}

/// A nonce from the thread-local CSPRNG (ChaCha-based, seeded from the OS).
fn nonce() -> [u8; 24] {
    use rand::RngExt as _;
    rand::rng().random()
}

/// Stores a new version's row.
fn insert_row(conn: &Connection, meta: &KeyMeta, sealed: &[u8]) -> Result<(), VaultError> {
    conn.execute(
        "INSERT INTO vault_keys (id, version, scope, purpose, alg, state, created_ms, rotated_from, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![meta.id.to_string(), meta.version, meta.scope.encode(), meta.purpose, meta.alg.byte(), meta.state.byte(), meta.created_ms as i64, meta.rotated_from, sealed],
    )
    .map_err(storage)?;
    Ok(())
}

/// Writes the usage counters of every version of `key`.
fn write_usage(conn: &Connection, key: &Key) -> Result<(), VaultError> {
    for v in key.versions.read().iter() {
        let meta = v.meta.lock();
        conn.execute(
            "UPDATE vault_keys SET encryptions = ?1, signatures = ?2 WHERE id = ?3 AND version = ?4",
            params![v.encryptions.load(Ordering::Relaxed) as i64, v.signatures.load(Ordering::Relaxed) as i64, meta.id.to_string(), meta.version],
        )
        .map_err(storage)?;
    }
    Ok(())
}

impl SoftVault {
    /// Opens (or creates) the vault file at `path`. A wrong master key is refused and nothing is
    /// changed; a damaged file gives [`VaultError::Corrupt`].
    ///
    /// # Errors
    /// [`VaultError`].
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, VaultError> {
        if path.exists() {
            // An existing file must be a database: SQLite would silently treat an empty or
            // cut-short file as a new, empty vault, losing every key without a word.
            let mut head = [0u8; 16];
            let read = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
            if read.is_err() || &head != SQLITE_MAGIC {
                return Err(VaultError::Corrupt(format!(
                    "`{}` exists but is not a vault database (empty, truncated or damaged); move it away to create a new vault",
                    path.display()
                )));
            }
        }
        let conn = Connection::open(path)
            .map_err(|e| VaultError::Corrupt(format!("`{}`: {e}", path.display())))?;
        Self::start(conn, master)
    }

    /// A vault held entirely in memory.
    ///
    /// # Errors
    /// [`VaultError`].
    pub fn in_memory(master: MasterKey) -> Result<Self, VaultError> {
        Self::start(Connection::open_in_memory().map_err(storage)?, master)
    }

    fn start(conn: Connection, master: MasterKey) -> Result<Self, VaultError> {
        let corrupt = |e: rusqlite::Error| VaultError::Corrupt(e.to_string());
        let cipher = XChaCha20Poly1305::new_from_slice(&*master.0)
            .map_err(|_| VaultError::Corrupt("master key".into()))?;
        // Read-only checks first: a wrong master key must leave the file untouched. A damaged
        // or truncated file is refused before anything in it is believed.
        let problems: Vec<String> = conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(corrupt)?;
        if problems.first().map(String::as_str) != Some("ok") {
            return Err(VaultError::Corrupt(format!(
                "the database fails its integrity check: {}",
                problems.join("; ")
            )));
        }
        let table_exists = |name: &str| -> Result<bool, VaultError> {
            conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                [name],
                |r| r.get(0),
            )
            .map_err(corrupt)
        };
        let check: Option<Vec<u8>> = if table_exists("vault_meta")? {
            conn.query_row("SELECT v FROM vault_meta WHERE k = 'check'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(corrupt)?
        } else {
            None
        };
        match &check {
            Some(sealed) => {
                let (n, ct) = sealed
                    .split_at_checked(24)
                    .ok_or_else(|| VaultError::Corrupt("master key check value".into()))?;
                let nonce = XNonce::try_from(n)
                    .map_err(|_| VaultError::Corrupt("master key check value".into()))?;
                let pt = Zeroizing::new(
                    cipher
                        .decrypt(
                            &nonce,
                            Payload {
                                msg: ct,
                                aad: b"nodus-master-check",
                            },
                        )
                        .map_err(|_| VaultError::WrongMasterKey)?,
                );
                if pt.as_slice() != CHECK_PLAINTEXT {
                    return Err(VaultError::WrongMasterKey);
                }
            }
            None if table_exists("vault_keys")? => {
                // No check value but possibly keys (the row was lost): the master key must
                // unseal a key's material before anything is written.
                let probe: Option<(String, i64, String, String, i64, Vec<u8>)> = conn
                    .query_row(
                        "SELECT id, version, scope, purpose, alg, sealed FROM vault_keys WHERE sealed IS NOT NULL LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                    )
                    .optional()
                    .map_err(corrupt)?;
                if let Some((id, version, scope, purpose, alg, sealed)) = probe {
                    let parsed = (
                        KeyId::parse(&id),
                        u32::try_from(version).ok(),
                        KeyScope::decode(&scope),
                        u8::try_from(alg).ok().and_then(KeyAlgorithm::from_byte),
                    );
                    let (Some(kid), Some(version), Some(scope), Some(alg)) = parsed else {
                        return Err(VaultError::Corrupt(format!(
                            "key `{id}` version {version}: bad metadata"
                        )));
                    };
                    unseal_with(&cipher, &kid, version, &scope, &purpose, alg, &sealed)
                        .map_err(|_| VaultError::WrongMasterKey)?;
                }
            }
            None => {}
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
        )
        .map_err(corrupt)?;
        conn.execute_batch(SCHEMA).map_err(corrupt)?;
        if check.is_none() {
            let n = random::<24>()?;
            let ct = cipher
                .encrypt(
                    &XNonce::from(n),
                    Payload {
                        msg: CHECK_PLAINTEXT,
                        aad: b"nodus-master-check",
                    },
                )
                .map_err(|_| VaultError::Corrupt("sealing the check value".into()))?;
            let mut v = n.to_vec();
            v.extend_from_slice(&ct);
            conn.execute("INSERT INTO vault_meta (k, v) VALUES ('check', ?1)", [v])
                .map_err(storage)?;
        }
        drop(cipher);
        let conn = Arc::new(Mutex::new(conn));
        let trust = TrustStore::on_connection(conn.clone())?;
        let vault = SoftVault {
            master,
            conn,
            keys: RwLock::new(HashMap::new()),
            trust,
        };
        vault.load()?;
        Ok(vault)
    }

    fn load(&self) -> Result<(), VaultError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT id, version, scope, purpose, alg, state, created_ms, rotated_from, encryptions, signatures, sealed FROM vault_keys ORDER BY id, version")
            .map_err(|e| VaultError::Corrupt(e.to_string()))?;
        type Row = (
            String,
            i64,
            String,
            String,
            i64,
            i64,
            i64,
            Option<i64>,
            i64,
            i64,
            Option<Vec<u8>>,
        );
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })
            .map_err(|e| VaultError::Corrupt(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| VaultError::Corrupt(e.to_string()))?;
        // Release the connection before taking `keys` (lock order: `keys` → `conn`).
        drop(stmt);
        drop(conn);
        let mut keys: HashMap<KeyId, Arc<Key>> = HashMap::new();
        for (id, version, scope, purpose, alg, state, created, rotated_from, enc, sig, sealed) in
            rows
        {
            let bad =
                |what: &str| VaultError::Corrupt(format!("key `{id}` version {version}: {what}"));
            let kid = KeyId::parse(&id).ok_or_else(|| bad("bad id"))?;
            let scope = KeyScope::decode(&scope).ok_or_else(|| bad("bad scope"))?;
            let alg = u8::try_from(alg)
                .ok()
                .and_then(KeyAlgorithm::from_byte)
                .ok_or_else(|| bad("bad algorithm"))?;
            let state = KeyState::from_byte(state).ok_or_else(|| bad("bad state"))?;
            let version = u32::try_from(version).map_err(|_| bad("bad version"))?;
            let secret = match (&sealed, state) {
                (_, KeyState::Destroyed) => None,
                (Some(s), _) => Some(
                    self.unseal(&kid, version, &scope, &purpose, alg, s)
                        .map_err(|_| bad("material does not unseal (tampered metadata?)"))?,
                ),
                (None, _) => return Err(bad("material missing")),
            };
            let signing = match (&secret, alg) {
                (Some(s), KeyAlgorithm::Ed25519) => Some(SigningKey::from_bytes(s)),
                _ => None,
            };
            let meta = KeyMeta {
                id: kid,
                scope: scope.clone(),
                purpose: purpose.clone(),
                alg,
                version,
                state,
                created_ms: created as u64,
                rotated_from: rotated_from.and_then(|r| u32::try_from(r).ok()),
                encryptions: enc as u64,
                signatures: sig as u64,
            };
            let v = Arc::new(Version {
                meta: Mutex::new(meta),
                secret: RwLock::new(secret),
                signing: RwLock::new(signing),
                encryptions: AtomicU64::new(enc as u64),
                signatures: AtomicU64::new(sig as u64),
            });
            let key = keys.entry(kid).or_insert_with(|| {
                Arc::new(Key {
                    scope,
                    purpose,
                    alg,
                    versions: RwLock::new(Vec::new()),
                })
            });
            key.versions.write().push(v);
        }
        *self.keys.write() = keys;
        Ok(())
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, VaultError> {
        XChaCha20Poly1305::new_from_slice(&*self.master.0)
            .map_err(|_| VaultError::Corrupt("master key".into()))
    }

    fn seal_material(
        &self,
        id: &KeyId,
        version: u32,
        scope: &KeyScope,
        purpose: &str,
        alg: KeyAlgorithm,
        secret: &[u8; 32],
    ) -> Result<Vec<u8>, VaultError> {
        let n = random::<24>()?;
        let ad = wrap_ad(id, version, scope, purpose, alg);
        let ct = self
            .cipher()?
            .encrypt(
                &XNonce::from(n),
                Payload {
                    msg: secret,
                    aad: &ad,
                },
            )
            .map_err(|_| VaultError::Rng)?;
        let mut out = n.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(
        &self,
        id: &KeyId,
        version: u32,
        scope: &KeyScope,
        purpose: &str,
        alg: KeyAlgorithm,
        sealed: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        unseal_with(&self.cipher()?, id, version, scope, purpose, alg, sealed)
    }

    fn key(&self, id: &KeyId) -> Result<Arc<Key>, VaultError> {
        self.keys
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| VaultError::UnknownKey(id.to_string()))
    }

    /// Makes a new active version's material and metadata (not yet stored).
    fn new_version(
        &self,
        id: KeyId,
        key: &Key,
        version: u32,
        rotated_from: Option<u32>,
    ) -> Result<(KeyMeta, Arc<Version>, Vec<u8>), VaultError> {
        let secret = random_secret()?;
        let sealed =
            self.seal_material(&id, version, &key.scope, &key.purpose, key.alg, &secret)?;
        let meta = KeyMeta {
            id,
            scope: key.scope.clone(),
            purpose: key.purpose.clone(),
            alg: key.alg,
            version,
            state: KeyState::Active,
            created_ms: now_ms(),
            rotated_from,
            encryptions: 0,
            signatures: 0,
        };
        let signing = (key.alg == KeyAlgorithm::Ed25519).then(|| SigningKey::from_bytes(&secret));
        let v = Arc::new(Version {
            meta: Mutex::new(meta.clone()),
            secret: RwLock::new(Some(secret)),
            signing: RwLock::new(signing),
            encryptions: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
        });
        Ok((meta, v, sealed))
    }

    // Lock order, everywhere: `keys` → `conn` → a key's `versions` → a version's `meta`.

    fn set_state(
        &self,
        id: &KeyId,
        version: u32,
        state: KeyState,
        destroy: bool,
    ) -> Result<(), VaultError> {
        let key = self.key(id)?;
        let v = key
            .version(version)
            .ok_or_else(|| VaultError::UnknownVersion {
                key: id.to_string(),
                version,
            })?;
        let mut conn = self.conn.lock();
        let meta = v.meta.lock();
        let invalid = |reason| VaultError::InvalidState {
            key: id.to_string(),
            version,
            reason,
        };
        match (meta.state, state) {
            (KeyState::Destroyed, _) => {
                return Err(VaultError::KeyDestroyed {
                    key: id.to_string(),
                    version,
                });
            }
            (KeyState::Active, _) => {
                return Err(invalid(
                    "the active version cannot be disabled or destroyed; rotate first",
                ));
            }
            (KeyState::DecryptOnly, KeyState::DecryptOnly) => {
                return Err(invalid("the version is already enabled"));
            }
            _ => {}
        }
        drop(meta);
        let tx = conn.transaction().map_err(storage)?;
        write_usage(&tx, &key)?;
        if destroy {
            tx.execute(
                "UPDATE vault_keys SET state = ?1, sealed = NULL WHERE id = ?2 AND version = ?3",
                params![state.byte(), id.to_string(), version],
            )
            .map_err(storage)?;
        } else {
            tx.execute(
                "UPDATE vault_keys SET state = ?1 WHERE id = ?2 AND version = ?3",
                params![state.byte(), id.to_string(), version],
            )
            .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        v.meta.lock().state = state;
        if destroy {
            *v.secret.write() = None;
            *v.signing.write() = None;
            // Crypto-shredding: `secure_delete` zeroed the freed bytes in the page; move the page
            // into the main file and empty the write-ahead log, which still holds the old page.
            // The destruction itself is committed: a checkpoint that cannot finish now is worth a
            // warning, not an error.
            let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
            if checkpoint != Ok(0) {
                tracing::warn!(
                    key = %id,
                    version,
                    "the destroyed version's sealed material stays in the vault's write-ahead log until another connection lets it be checkpointed"
                );
            }
        }
        Ok(())
    }

    fn persist_usage(&self, key: &Key) -> Result<(), VaultError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(storage)?;
        write_usage(&tx, key)?;
        tx.commit().map_err(storage)
    }

    /// Persists every usage counter (also done on every state change and on drop).
    ///
    /// # Errors
    /// Storage errors.
    pub fn sync(&self) -> Result<(), VaultError> {
        let keys: Vec<Arc<Key>> = self.keys.read().values().cloned().collect();
        for k in keys {
            self.persist_usage(&k)?;
        }
        Ok(())
    }

    /// The trust store kept in the same file.
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    /// The key's active version, after checking the key has the algorithm the operation needs.
    fn active_of(
        id: &KeyId,
        key: &Key,
        alg: KeyAlgorithm,
        needed: &'static str,
    ) -> Result<Arc<Version>, VaultError> {
        if key.alg != alg {
            return Err(VaultError::WrongAlgorithm {
                key: id.to_string(),
                actual: key.alg,
                needed,
            });
        }
        key.active()
            .ok_or_else(|| VaultError::UnknownKey(id.to_string()))
    }

    fn usable(id: &KeyId, v: &Version) -> Result<(), VaultError> {
        let m = v.meta.lock();
        match m.state {
            KeyState::Destroyed => Err(VaultError::KeyDestroyed {
                key: id.to_string(),
                version: m.version,
            }),
            KeyState::Disabled => Err(VaultError::KeyDisabled {
                key: id.to_string(),
                version: m.version,
            }),
            _ => Ok(()),
        }
    }

    fn seal_with(
        &self,
        id: &KeyId,
        key: &Key,
        plaintext: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let v = Self::active_of(
            id,
            key,
            KeyAlgorithm::XChaCha20Poly1305,
            "an encryption key",
        )?;
        let version = v.meta.lock().version;
        let secret = v.secret.read();
        let secret = secret.as_ref().ok_or_else(|| VaultError::KeyDestroyed {
            key: id.to_string(),
            version,
        })?;
        let n = nonce();
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        write_header(&mut out, key.alg, id, version, &n);
        let ad = associated_data(&out, ctx);
        let cipher =
            XChaCha20Poly1305::new_from_slice(&**secret).map_err(|_| VaultError::Authentication)?;
        // Encrypt in place behind the header: one buffer, no second allocation or copy.
        out.extend_from_slice(plaintext);
        let body = out
            .get_mut(HEADER_LEN..)
            .ok_or(VaultError::Authentication)?;
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from(n), &ad, body.into())
            .map_err(|_| VaultError::Authentication)?;
        out.extend_from_slice(&tag);
        v.encryptions.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Opens an envelope with exactly the key version its header names, after checking that key's
    /// scope against `ctx`; returns the key too, for `rewrap`.
    fn open_checked(
        &self,
        envelope: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Opened, VaultError> {
        let h = parse_envelope_header(envelope)?;
        if h.alg != KeyAlgorithm::XChaCha20Poly1305 {
            return Err(VaultError::Authentication);
        }
        let key = self
            .keys
            .read()
            .get(&h.key_id)
            .cloned()
            .ok_or(VaultError::Authentication)?;
        // The scope first: another tenant learns nothing of the key's algorithm or version states,
        // and nothing is decrypted.
        check_key_scope(&h.key_id, &key.scope, ctx)?;
        if key.alg != h.alg {
            return Err(VaultError::Authentication);
        }
        let v = key
            .version(h.key_version)
            .ok_or(VaultError::Authentication)?;
        Self::usable(&h.key_id, &v)?;
        let secret = v.secret.read();
        let secret = secret.as_ref().ok_or_else(|| VaultError::KeyDestroyed {
            key: h.key_id.to_string(),
            version: h.key_version,
        })?;
        let (header, body) = envelope
            .split_at_checked(HEADER_LEN)
            .ok_or(VaultError::Authentication)?;
        let ad = associated_data(header, ctx);
        let cipher =
            XChaCha20Poly1305::new_from_slice(&**secret).map_err(|_| VaultError::Authentication)?;
        let pt = cipher
            .decrypt(
                &XNonce::from(h.nonce),
                Payload {
                    msg: body,
                    aad: &ad,
                },
            )
            .map_err(|_| VaultError::Authentication)?;
        Ok((h.key_id, key, Zeroizing::new(pt)))
    }
}

impl Drop for SoftVault {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

impl SecretVault for SoftVault {
    fn generate(
        &self,
        scope: &KeyScope,
        purpose: &str,
        alg: KeyAlgorithm,
    ) -> Result<KeyMeta, VaultError> {
        let mut keys = self.keys.write();
        if keys
            .values()
            .any(|k| &k.scope == scope && k.purpose == purpose)
        {
            return Err(VaultError::KeyExists {
                scope: scope.encode(),
                purpose: purpose.to_owned(),
            });
        }
        let id = KeyId(random::<16>()?);
        let key = Arc::new(Key {
            scope: scope.clone(),
            purpose: purpose.to_owned(),
            alg,
            versions: RwLock::new(Vec::new()),
        });
        let (meta, v, sealed) = self.new_version(id, &key, 1, None)?;
        insert_row(&self.conn.lock(), &meta, &sealed)?;
        key.versions.write().push(v);
        keys.insert(id, key);
        Ok(meta)
    }

    fn find(&self, scope: &KeyScope, purpose: &str) -> Result<Option<KeyId>, VaultError> {
        Ok(self
            .keys
            .read()
            .iter()
            .find(|(_, k)| &k.scope == scope && k.purpose == purpose)
            .map(|(id, _)| *id))
    }

    fn list(&self, scope: Option<&KeyScope>) -> Result<Vec<KeyMeta>, VaultError> {
        let mut out = Vec::new();
        for k in self.keys.read().values() {
            if scope.is_some_and(|s| s != &k.scope) {
                continue;
            }
            for v in k.versions.read().iter() {
                let mut m = v.meta.lock().clone();
                m.encryptions = v.encryptions.load(Ordering::Relaxed);
                m.signatures = v.signatures.load(Ordering::Relaxed);
                out.push(m);
            }
        }
        out.sort_by(|a, b| {
            (a.scope.encode(), &a.purpose, a.version).cmp(&(
                b.scope.encode(),
                &b.purpose,
                b.version,
            ))
        });
        Ok(out)
    }

    fn rotate(&self, key_id: &KeyId) -> Result<KeyMeta, VaultError> {
        let key = self.key(key_id)?;
        let mut conn = self.conn.lock();
        // Holding the version list for writing serialises rotations of this key.
        let mut versions = key.versions.write();
        let old = active_in(&versions);
        let next = versions
            .iter()
            .map(|v| v.meta.lock().version)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| VaultError::InvalidState {
                key: key_id.to_string(),
                version: u32::MAX,
                reason: "the key has no version numbers left",
            })?;
        let from = old.as_ref().map(|o| o.meta.lock().version);
        let (meta, v, sealed) = self.new_version(*key_id, &key, next, from)?;
        // The new version and the old one's demotion land together or not at all.
        let tx = conn.transaction().map_err(storage)?;
        insert_row(&tx, &meta, &sealed)?;
        if let Some(from) = from {
            tx.execute(
                "UPDATE vault_keys SET state = ?1 WHERE id = ?2 AND version = ?3",
                params![KeyState::DecryptOnly.byte(), key_id.to_string(), from],
            )
            .map_err(storage)?;
        }
        for existing in versions.iter() {
            let m = existing.meta.lock();
            tx.execute(
                "UPDATE vault_keys SET encryptions = ?1, signatures = ?2 WHERE id = ?3 AND version = ?4",
                params![existing.encryptions.load(Ordering::Relaxed) as i64, existing.signatures.load(Ordering::Relaxed) as i64, key_id.to_string(), m.version],
            )
            .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        if let Some(old) = old {
            old.meta.lock().state = KeyState::DecryptOnly;
        }
        versions.push(v);
        Ok(meta)
    }

    fn disable(&self, key: &KeyId, version: u32) -> Result<(), VaultError> {
        self.set_state(key, version, KeyState::Disabled, false)
    }

    fn enable(&self, key: &KeyId, version: u32) -> Result<(), VaultError> {
        self.set_state(key, version, KeyState::DecryptOnly, false)
    }

    fn destroy(&self, key: &KeyId, version: u32) -> Result<(), VaultError> {
        self.set_state(key, version, KeyState::Destroyed, true)
    }

    fn seal(
        &self,
        key: &KeyId,
        plaintext: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let k = self.key(key)?;
        // The scope first: before the algorithm, the state or any cryptography.
        check_key_scope(key, &k.scope, ctx)?;
        self.seal_with(key, &k, plaintext, ctx)
    }

    fn open(
        &self,
        envelope: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.open_checked(envelope, ctx).map(|(_, _, pt)| pt)
    }

    fn rewrap(&self, envelope: &[u8], ctx: &EnvelopeContext<'_>) -> Result<Vec<u8>, VaultError> {
        let (id, key, pt) = self.open_checked(envelope, ctx)?;
        self.seal_with(&id, &key, &pt, ctx)
    }

    fn sign(&self, key_id: &KeyId, message: &[u8]) -> Result<[u8; 64], VaultError> {
        let key = self.key(key_id)?;
        let v = Self::active_of(key_id, &key, KeyAlgorithm::Ed25519, "a signing key")?;
        let sk = v.signing.read();
        let sk = sk.as_ref().ok_or_else(|| VaultError::KeyDestroyed {
            key: key_id.to_string(),
            version: v.meta.lock().version,
        })?;
        let sig = sk.sign(message).to_bytes();
        v.signatures.fetch_add(1, Ordering::Relaxed);
        Ok(sig)
    }

    fn verify(
        &self,
        key_id: &KeyId,
        version: u32,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), VaultError> {
        let pk = self.public_key(key_id, Some(version))?;
        let v = self
            .key(key_id)?
            .version(version)
            .ok_or_else(|| VaultError::UnknownVersion {
                key: key_id.to_string(),
                version,
            })?;
        Self::usable(key_id, &v)?;
        let vk = VerifyingKey::from_bytes(&pk)
            .map_err(|_| VaultError::BadPublicKey("not a valid Ed25519 point"))?;
        vk.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| VaultError::Authentication)
    }

    fn public_key(&self, key_id: &KeyId, version: Option<u32>) -> Result<[u8; 32], VaultError> {
        let key = self.key(key_id)?;
        if key.alg != KeyAlgorithm::Ed25519 {
            return Err(VaultError::WrongAlgorithm {
                key: key_id.to_string(),
                actual: key.alg,
                needed: "a signing key",
            });
        }
        let v = match version {
            Some(n) => key.version(n).ok_or_else(|| VaultError::UnknownVersion {
                key: key_id.to_string(),
                version: n,
            })?,
            None => key
                .active()
                .ok_or_else(|| VaultError::UnknownKey(key_id.to_string()))?,
        };
        let sk = v.signing.read();
        let sk = sk.as_ref().ok_or_else(|| VaultError::KeyDestroyed {
            key: key_id.to_string(),
            version: v.meta.lock().version,
        })?;
        Ok(sk.verifying_key().to_bytes())
    }
}
