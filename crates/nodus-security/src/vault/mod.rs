//! The secret vault: keys scoped to a tenant or the system, envelope encryption bound to its
//! context, rotation without downtime, crypto-shredding, Ed25519 signing, and a trust store for
//! other issuers' keys. See `docs/security.md` for the key hierarchy, states and byte layouts.
//!
//! ```
//! use nodus_security::vault::{EnvelopeContext, KeyAlgorithm, KeyScope, MasterKey, SecretVault, SoftVault};
//! use nodus_policy::TenantId;
//!
//! let vault = SoftVault::in_memory(MasterKey::from_bytes([7; 32])).unwrap();
//! let acme = TenantId::new("acme").unwrap();
//! let key = vault.generate(&KeyScope::Tenant(acme.clone()), "fields", KeyAlgorithm::XChaCha20Poly1305).unwrap();
//! let ctx = EnvelopeContext::tenant(&acme, "notes", "n1", "body");
//! let sealed = vault.seal(&key.id, b"meet at noon", &ctx).unwrap();
//! assert_eq!(&*vault.open(&sealed, &ctx).unwrap(), b"meet at noon");
//!
//! // Moved to another field: refused, with one opaque error.
//! let other = EnvelopeContext { field: "title", ..ctx };
//! assert!(vault.open(&sealed, &other).is_err());
//!
//! // A key seals only for its own scope: acme's key under globex's context is refused.
//! let globex = TenantId::new("globex").unwrap();
//! let theirs = EnvelopeContext::tenant(&globex, "notes", "n1", "body");
//! assert_eq!(vault.seal(&key.id, b"x", &theirs).unwrap_err().code(), "ScopeMismatch");
//!
//! // Rotation: old ciphertext still opens; rewrap moves it to the new version.
//! vault.rotate(&key.id).unwrap();
//! let rewrapped = vault.rewrap(&sealed, &ctx).unwrap();
//! assert_eq!(&*vault.open(&rewrapped, &ctx).unwrap(), b"meet at noon");
//! ```

mod soft;
mod trust;

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use nodus_policy::TenantId;
use serde::{Deserialize, Serialize};
/// The zeroizing buffer [`SecretVault::open`] returns plaintext in, re-exported so that vault
/// implementations and decorators need no direct `zeroize` dependency.
pub use zeroize::Zeroizing;

pub use soft::SoftVault;
pub use trust::{IssuerInfo, TrustStore, TrustVerdict, key_id_for};

/// Whose key: the system's or one tenant's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// The platform's own keys (e.g. the audit log's signing key).
    System,
    /// One tenant's keys.
    Tenant(TenantId),
}

impl KeyScope {
    pub(crate) fn encode(&self) -> String {
        match self {
            KeyScope::System => "system".into(),
            KeyScope::Tenant(t) => format!("tenant:{t}"),
        }
    }
    pub(crate) fn decode(s: &str) -> Option<KeyScope> {
        if s == "system" {
            return Some(KeyScope::System);
        }
        s.strip_prefix("tenant:")
            .and_then(|t| TenantId::new(t).ok())
            .map(KeyScope::Tenant)
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A key's algorithm; its byte is written in every envelope header, so new algorithms (AES-256-GCM)
/// can be added without a format change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAlgorithm {
    /// XChaCha20-Poly1305 AEAD, random 192-bit nonces (alg byte 1).
    XChaCha20Poly1305,
    /// Ed25519 signatures (alg byte 2).
    Ed25519,
}

impl KeyAlgorithm {
    /// The algorithm byte.
    pub fn byte(self) -> u8 {
        match self {
            KeyAlgorithm::XChaCha20Poly1305 => 1,
            KeyAlgorithm::Ed25519 => 2,
        }
    }
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(KeyAlgorithm::XChaCha20Poly1305),
            2 => Some(KeyAlgorithm::Ed25519),
            _ => None,
        }
    }
}

/// A key version's state (Tink's model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Encrypts/signs and decrypts/verifies. One active version per key.
    Active,
    /// Decrypts/verifies only (a rotated-out version).
    DecryptOnly,
    /// Temporarily unusable; can be re-enabled.
    Disabled,
    /// Its material is gone for good (crypto-shredding).
    Destroyed,
}

impl KeyState {
    pub(crate) fn byte(self) -> i64 {
        match self {
            KeyState::Active => 0,
            KeyState::DecryptOnly => 1,
            KeyState::Disabled => 2,
            KeyState::Destroyed => 3,
        }
    }
    pub(crate) fn from_byte(b: i64) -> Option<Self> {
        Some(match b {
            0 => KeyState::Active,
            1 => KeyState::DecryptOnly,
            2 => KeyState::Disabled,
            3 => KeyState::Destroyed,
            _ => return None,
        })
    }
}

/// The stable id of a key (all its versions): 16 random bytes, shown as `k` + 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub(crate) [u8; 16]);

impl KeyId {
    /// The raw bytes (as written in envelope headers).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// Parses the `k…` text form.
    pub fn parse(s: &str) -> Option<KeyId> {
        let h = s.strip_prefix('k')?;
        hex::decode(h).ok()?.try_into().ok().map(KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("a key id is `k` followed by 32 hex digits"))
    }
}

/// Metadata of one key version (never its material).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyMeta {
    /// The key.
    pub id: KeyId,
    /// Whose.
    pub scope: KeyScope,
    /// What for (`fields`, `audit.checkpoint`, …); one key per (scope, purpose).
    pub purpose: String,
    /// Algorithm.
    pub alg: KeyAlgorithm,
    /// Version (1 = first).
    pub version: u32,
    /// State.
    pub state: KeyState,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// The version this one replaced, for rotated versions.
    pub rotated_from: Option<u32>,
    /// Envelopes sealed with this version.
    pub encryptions: u64,
    /// Signatures made with this version.
    pub signatures: u64,
}

/// What a ciphertext is bound to: it opens only with the same context.
///
/// The context also names the scope the caller acts in, and a key is used only in its own scope
/// (see [`SecretVault::seal`]): a tenant's data is sealed under [`EnvelopeContext::tenant`] with
/// that tenant's key, system data under [`EnvelopeContext::system`] with a system key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeContext<'a> {
    /// The tenant (`None` for system data).
    pub tenant: Option<&'a TenantId>,
    /// The table or type.
    pub table: &'a str,
    /// The entity id.
    pub entity_id: &'a str,
    /// The field.
    pub field: &'a str,
}

impl<'a> EnvelopeContext<'a> {
    /// A context for `tenant`'s data: only a key of [`KeyScope::Tenant`] for this tenant seals,
    /// opens or rewraps under it.
    pub const fn tenant(
        tenant: &'a TenantId,
        table: &'a str,
        entity_id: &'a str,
        field: &'a str,
    ) -> Self {
        EnvelopeContext {
            tenant: Some(tenant),
            table,
            entity_id,
            field,
        }
    }

    /// A context for the platform's own data (no tenant): only a [`KeyScope::System`] key seals,
    /// opens or rewraps under it.
    pub const fn system(table: &'a str, entity_id: &'a str, field: &'a str) -> Self {
        EnvelopeContext {
            tenant: None,
            table,
            entity_id,
            field,
        }
    }

    /// Whether a key of `scope` may be used under this context: a tenant's key only for that
    /// tenant's context, a system key only for a system context.
    pub fn admits(&self, scope: &KeyScope) -> bool {
        match (scope, self.tenant) {
            (KeyScope::System, None) => true,
            (KeyScope::Tenant(key_tenant), Some(ctx_tenant)) => key_tenant == ctx_tenant,
            _ => false,
        }
    }

    /// The scope this context speaks for, as text: `system` or `tenant:<id>`.
    fn scope_text(&self) -> String {
        match self.tenant {
            None => "system".into(),
            Some(t) => format!("tenant:{t}"),
        }
    }
}

/// The key-scope rule every [`SecretVault`] applies to `seal`, `open` and `rewrap` before any
/// cryptography: `key` (whose scope is `scope`) may be used only under a context of the same scope
/// ([`EnvelopeContext::admits`]). Public so that other vault backends apply the very same rule.
///
/// # Errors
/// [`VaultError::ScopeMismatch`], naming the key and the context's scope only (never the key's
/// own tenant, which the caller may not know).
pub fn check_key_scope(
    key: &KeyId,
    scope: &KeyScope,
    ctx: &EnvelopeContext<'_>,
) -> Result<(), VaultError> {
    if ctx.admits(scope) {
        Ok(())
    } else {
        Err(VaultError::ScopeMismatch {
            key: key.to_string(),
            context: ctx.scope_text(),
        })
    }
}

/// Why a vault operation failed. Key material and plaintext never appear in these messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// Every decryption failure — wrong context, tampered header or body, a key id or version that
    /// does not exist — is this one opaque error.
    #[error("decryption failed: the ciphertext or its context is not authentic")]
    Authentication,
    /// No key with this id.
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    /// The key has no such version.
    #[error("key `{key}` has no version {version}")]
    UnknownVersion {
        /// The key.
        key: String,
        /// The version.
        version: u32,
    },
    /// A key for this scope and purpose exists already.
    #[error("a key for purpose `{purpose}` in scope `{scope}` exists already")]
    KeyExists {
        /// Scope.
        scope: String,
        /// Purpose.
        purpose: String,
    },
    /// The version was destroyed: what it protected is gone for good.
    #[error("key `{key}` version {version} was destroyed")]
    KeyDestroyed {
        /// The key.
        key: String,
        /// The version.
        version: u32,
    },
    /// The version is disabled.
    #[error("key `{key}` version {version} is disabled")]
    KeyDisabled {
        /// The key.
        key: String,
        /// The version.
        version: u32,
    },
    /// The operation needs another kind of key.
    #[error("key `{key}` is {actual:?}, this operation needs {needed}")]
    WrongAlgorithm {
        /// The key.
        key: String,
        /// Its algorithm.
        actual: KeyAlgorithm,
        /// What the operation needs.
        needed: &'static str,
    },
    /// The state change is not allowed (e.g. disabling the active version).
    #[error("key `{key}` version {version}: {reason}")]
    InvalidState {
        /// The key.
        key: String,
        /// The version.
        version: u32,
        /// Why.
        reason: &'static str,
    },
    /// The vault was sealed with another master key.
    #[error("wrong master key: this vault was sealed with another one (nothing was changed)")]
    WrongMasterKey,
    /// The master key could not be read.
    #[error("invalid master key from {source_name}: {reason}")]
    InvalidMasterKey {
        /// Where it came from (a path or variable name).
        source_name: String,
        /// Why (never the key itself).
        reason: String,
    },
    /// The vault file is damaged.
    #[error("the vault is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("vault storage error: {0}")]
    Storage(String),
    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Rng,
    /// A public key is weak (small order) or invalid.
    #[error("public key rejected: {0}")]
    BadPublicKey(&'static str),
    /// A text envelope is not `nodus:v1:<base64>`.
    #[error("a text envelope is `nodus:v1:<base64>`")]
    BadTextEnvelope,
    /// The key is not a key of the context's scope: a tenant's key used under another tenant's
    /// (or a system) context, or a system key under a tenant's context. Refused before any
    /// cryptography; nothing was sealed, opened or counted. Names the context's scope only, never
    /// the key's.
    #[error(
        "key `{key}` cannot be used in scope `{context}`: a key seals and opens only for its own scope"
    )]
    ScopeMismatch {
        /// The key (for `open` and `rewrap`, the one the envelope's header names).
        key: String,
        /// The context's scope: `system` or `tenant:<id>`.
        context: String,
    },
}

impl VaultError {
    /// The stable code of this error (its variant's name, e.g. `"ScopeMismatch"`), for audit
    /// reasons and host-facing errors.
    pub const fn code(&self) -> &'static str {
        match self {
            VaultError::Authentication => "Authentication",
            VaultError::UnknownKey(_) => "UnknownKey",
            VaultError::UnknownVersion { .. } => "UnknownVersion",
            VaultError::KeyExists { .. } => "KeyExists",
            VaultError::KeyDestroyed { .. } => "KeyDestroyed",
            VaultError::KeyDisabled { .. } => "KeyDisabled",
            VaultError::WrongAlgorithm { .. } => "WrongAlgorithm",
            VaultError::InvalidState { .. } => "InvalidState",
            VaultError::WrongMasterKey => "WrongMasterKey",
            VaultError::InvalidMasterKey { .. } => "InvalidMasterKey",
            VaultError::Corrupt(_) => "Corrupt",
            VaultError::Storage(_) => "Storage",
            VaultError::Rng => "Rng",
            VaultError::BadPublicKey(_) => "BadPublicKey",
            VaultError::BadTextEnvelope => "BadTextEnvelope",
            VaultError::ScopeMismatch { .. } => "ScopeMismatch",
        }
    }
}

/// The vault interface. Object safe; [`SoftVault`] is the default.
pub trait SecretVault: Send + Sync {
    /// Generates a key for `purpose` in `scope` (version 1, active).
    ///
    /// # Errors
    /// [`VaultError::KeyExists`] when the scope already has a key for this purpose.
    fn generate(
        &self,
        scope: &KeyScope,
        purpose: &str,
        alg: KeyAlgorithm,
    ) -> Result<KeyMeta, VaultError>;
    /// The key for `purpose` in `scope`.
    ///
    /// # Errors
    /// Storage errors.
    fn find(&self, scope: &KeyScope, purpose: &str) -> Result<Option<KeyId>, VaultError>;
    /// Metadata of every version of every key (of one scope when given).
    ///
    /// # Errors
    /// Storage errors.
    fn list(&self, scope: Option<&KeyScope>) -> Result<Vec<KeyMeta>, VaultError>;
    /// Adds a new active version; the previous active one becomes decrypt-only.
    ///
    /// # Errors
    /// [`VaultError::UnknownKey`].
    fn rotate(&self, key: &KeyId) -> Result<KeyMeta, VaultError>;
    /// Disables a non-active version.
    ///
    /// # Errors
    /// [`VaultError`].
    fn disable(&self, key: &KeyId, version: u32) -> Result<(), VaultError>;
    /// Re-enables a disabled version (as decrypt-only).
    ///
    /// # Errors
    /// [`VaultError`].
    fn enable(&self, key: &KeyId, version: u32) -> Result<(), VaultError>;
    /// Destroys a non-active version's material for good.
    ///
    /// # Errors
    /// [`VaultError`].
    fn destroy(&self, key: &KeyId, version: u32) -> Result<(), VaultError>;
    /// Seals `plaintext` with the key's active version, bound to `ctx`.
    ///
    /// **Key scope:** the key must belong to the context's scope — a [`KeyScope::Tenant`] key
    /// only under a context for that same tenant ([`EnvelopeContext::tenant`]), a
    /// [`KeyScope::System`] key only under a system context ([`EnvelopeContext::system`]). Anything
    /// else is refused before any cryptography and nothing is counted ([`check_key_scope`]).
    ///
    /// # Errors
    /// [`VaultError::ScopeMismatch`] for a key of another scope; [`VaultError::UnknownKey`],
    /// [`VaultError::WrongAlgorithm`] and other [`VaultError`]s.
    fn seal(
        &self,
        key: &KeyId,
        plaintext: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Vec<u8>, VaultError>;
    /// Opens an envelope with exactly the key version its header names.
    ///
    /// **Key scope:** the key the header names must belong to the context's scope, as for
    /// [`SecretVault::seal`]; this is checked before any cryptography (and before the version's
    /// state is looked at).
    ///
    /// # Errors
    /// [`VaultError::ScopeMismatch`] when the header names a key of another scope;
    /// [`VaultError::Authentication`] for any inauthentic input; `KeyDestroyed` / `KeyDisabled`.
    fn open(
        &self,
        envelope: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError>;
    /// Re-encrypts an envelope under the key's active version without returning the plaintext.
    ///
    /// **Key scope:** as [`SecretVault::open`]: the key the header names must belong to the
    /// context's scope, checked before any cryptography; nothing is counted on refusal.
    ///
    /// # Errors
    /// As [`SecretVault::open`], including [`VaultError::ScopeMismatch`].
    fn rewrap(&self, envelope: &[u8], ctx: &EnvelopeContext<'_>) -> Result<Vec<u8>, VaultError>;
    /// Signs with the key's active version (Ed25519).
    ///
    /// # Errors
    /// [`VaultError`].
    fn sign(&self, key: &KeyId, message: &[u8]) -> Result<[u8; 64], VaultError>;
    /// Verifies (strictly) a signature made by `version`.
    ///
    /// # Errors
    /// [`VaultError::Authentication`] for a bad signature.
    fn verify(
        &self,
        key: &KeyId,
        version: u32,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), VaultError>;
    /// The Ed25519 public key of a version (`None` = active).
    ///
    /// # Errors
    /// [`VaultError`].
    fn public_key(&self, key: &KeyId, version: Option<u32>) -> Result<[u8; 32], VaultError>;
}

/// The key that seals every key in a [`SoftVault`]. Zeroized on drop; never printed.
pub struct MasterKey(pub(crate) Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn decode_key_text(text: &str, source_name: &str) -> Result<MasterKey, VaultError> {
    let t = text.trim();
    let bad = |reason: &str| VaultError::InvalidMasterKey {
        source_name: source_name.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = Zeroizing::new(
        if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| bad("not hex"))?
        } else {
            B64.decode(t)
                .map_err(|_| bad("neither 64 hex digits nor base64"))?
        },
    );
    key_from_slice(&bytes).ok_or_else(|| bad("a master key is 32 bytes"))
}

/// Copies exactly 32 bytes straight into a zeroizing buffer (no stray copy on the stack).
fn key_from_slice(bytes: &[u8]) -> Option<MasterKey> {
    if bytes.len() != 32 {
        return None;
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(bytes);
    Some(MasterKey(k))
}

impl MasterKey {
    /// A master key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// Reads a master key file: 32 raw bytes, or 64 hex digits, or base64 of 32 bytes.
    ///
    /// # Errors
    /// [`VaultError::InvalidMasterKey`] naming the path (never the content).
    pub fn from_file(path: &Path) -> Result<Self, VaultError> {
        let name = path.display().to_string();
        let raw =
            Zeroizing::new(
                std::fs::read(path).map_err(|e| VaultError::InvalidMasterKey {
                    source_name: name.clone(),
                    reason: e.to_string(),
                })?,
            );
        if let Some(key) = key_from_slice(&raw) {
            return Ok(key);
        }
        let text = std::str::from_utf8(&raw).map_err(|_| VaultError::InvalidMasterKey {
            source_name: name.clone(),
            reason: "not 32 bytes, hex or base64".into(),
        })?;
        decode_key_text(text, &name)
    }

    /// Reads a master key from an environment variable (64 hex digits or base64).
    ///
    /// # Errors
    /// [`VaultError::InvalidMasterKey`] naming the variable.
    pub fn from_env(var: &str) -> Result<Self, VaultError> {
        let v = Zeroizing::new(
            std::env::var(var).map_err(|e| VaultError::InvalidMasterKey {
                source_name: format!("${var}"),
                reason: e.to_string(),
            })?,
        );
        decode_key_text(&v, &format!("${var}"))
    }

    /// A random master key for development. Logs a loud warning: data sealed with it is lost
    /// when the process ends unless the key is saved somewhere.
    ///
    /// # Errors
    /// [`VaultError::Rng`].
    pub fn generate_for_development() -> Result<Self, VaultError> {
        tracing::warn!(
            "NODUS: using a randomly generated DEVELOPMENT master key; anything sealed with it is unreadable after this process exits. Do not use in production."
        );
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *k).map_err(|_| VaultError::Rng)?;
        Ok(MasterKey(k))
    }
}

/// The envelope format byte.
pub const ENVELOPE_FORMAT: u8 = 1;
/// Header length: format, alg, key id (16), version (4), nonce (24).
pub const HEADER_LEN: usize = 1 + 1 + 16 + 4 + 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// A parsed envelope header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Format byte (1).
    pub format: u8,
    /// Algorithm.
    pub alg: KeyAlgorithm,
    /// Key id.
    pub key_id: KeyId,
    /// Key version.
    pub key_version: u32,
    /// Nonce.
    pub nonce: [u8; 24],
}

/// Parses an envelope header.
///
/// # Errors
/// [`VaultError::Authentication`] for anything that is not a valid v1 header (opaque on purpose).
pub fn parse_envelope_header(envelope: &[u8]) -> Result<EnvelopeHeader, VaultError> {
    let h = envelope
        .get(..HEADER_LEN)
        .ok_or(VaultError::Authentication)?;
    if envelope.len() < HEADER_LEN + TAG_LEN {
        return Err(VaultError::Authentication);
    }
    let (fmt_b, rest) = h.split_first().ok_or(VaultError::Authentication)?;
    let (alg_b, rest) = rest.split_first().ok_or(VaultError::Authentication)?;
    if *fmt_b != ENVELOPE_FORMAT {
        return Err(VaultError::Authentication);
    }
    let alg = KeyAlgorithm::from_byte(*alg_b).ok_or(VaultError::Authentication)?;
    let key_id = KeyId(
        rest.get(..16)
            .and_then(|s| s.try_into().ok())
            .ok_or(VaultError::Authentication)?,
    );
    let key_version = u32::from_be_bytes(
        rest.get(16..20)
            .and_then(|s| s.try_into().ok())
            .ok_or(VaultError::Authentication)?,
    );
    let nonce: [u8; 24] = rest
        .get(20..44)
        .and_then(|s| s.try_into().ok())
        .ok_or(VaultError::Authentication)?;
    Ok(EnvelopeHeader {
        format: *fmt_b,
        alg,
        key_id,
        key_version,
        nonce,
    })
}

pub(crate) fn write_header(
    out: &mut Vec<u8>,
    alg: KeyAlgorithm,
    key: &KeyId,
    version: u32,
    nonce: &[u8; 24],
) {
    out.push(ENVELOPE_FORMAT);
    out.push(alg.byte());
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(nonce);
}

/// The associated data: a domain tag, the full header, then the context, each field
/// length-prefixed (u32 big-endian), the tenant with a presence byte.
pub(crate) fn associated_data(header: &[u8], ctx: &EnvelopeContext<'_>) -> Vec<u8> {
    let mut ad = Vec::with_capacity(
        64 + header.len() + ctx.table.len() + ctx.entity_id.len() + ctx.field.len(),
    );
    ad.extend_from_slice(b"nodus-envelope-v1\0");
    ad.extend_from_slice(header);
    match ctx.tenant {
        None => ad.push(0),
        Some(t) => {
            ad.push(1);
            lp(&mut ad, t.as_str());
        }
    }
    lp(&mut ad, ctx.table);
    lp(&mut ad, ctx.entity_id);
    lp(&mut ad, ctx.field);
    ad
}

fn lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `nodus:v1:<base64>`, the text form of an envelope for JSON.
pub fn envelope_to_text(envelope: &[u8]) -> String {
    format!("nodus:v1:{}", B64.encode(envelope))
}

/// Parses `nodus:v1:<base64>`.
///
/// # Errors
/// [`VaultError::BadTextEnvelope`].
pub fn envelope_from_text(s: &str) -> Result<Vec<u8>, VaultError> {
    let b = s
        .strip_prefix("nodus:v1:")
        .ok_or(VaultError::BadTextEnvelope)?;
    B64.decode(b).map_err(|_| VaultError::BadTextEnvelope)
}
