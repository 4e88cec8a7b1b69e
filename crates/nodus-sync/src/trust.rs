//! Who signs bundles, whom a receiver trusts, and the clock it checks expiry against.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::Signer as _;

/// Why a signer could not sign, or a key id is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The key id is not 1 to 128 characters of `A-Z a-z 0-9 . _ @ : -` starting with a letter or
    /// digit.
    #[error(
        "key id `{0}` is not 1 to 128 characters of `A-Z a-z 0-9 . _ @ : -` starting with a letter or digit"
    )]
    KeyId(String),
    /// The signing backend failed (a vault, an HSM).
    #[error("signing failed: {0}")]
    Backend(String),
}

pub(crate) fn check_key_id(s: &str) -> Result<(), SignerError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.char_indices().all(|(i, c)| {
            c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | '@' | ':' | '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(SignerError::KeyId(s.chars().take(40).collect()))
    }
}

/// Signs bundle manifests. Implement it over a vault or an HSM; [`Ed25519BundleSigner`] holds a
/// key in memory.
pub trait BundleSigner {
    /// The id receivers know the key by (1 to 128 characters of `A-Z a-z 0-9 . _ @ : -`).
    fn key_id(&self) -> &str;
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// An Ed25519 signature over `msg` (the DSSE pre-authentication encoding of the manifest).
    ///
    /// # Errors
    /// [`SignerError::Backend`] when the key cannot be used.
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], SignerError>;
}

/// A [`BundleSigner`] over an in-memory Ed25519 key.
pub struct Ed25519BundleSigner {
    key_id: String,
    key: ed25519_dalek::SigningKey,
}

impl Ed25519BundleSigner {
    /// A signer named `key_id`.
    ///
    /// # Errors
    /// [`SignerError::KeyId`] when `key_id` is not a valid key id.
    pub fn new(
        key_id: impl Into<String>,
        key: ed25519_dalek::SigningKey,
    ) -> Result<Self, SignerError> {
        let key_id = key_id.into();
        check_key_id(&key_id)?;
        Ok(Ed25519BundleSigner { key_id, key })
    }

    /// The entry a receiver puts in its [`TrustStore`] for this signer.
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey::new(self.key_id.clone(), self.public_key())
    }
}

impl fmt::Debug for Ed25519BundleSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519BundleSigner")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl BundleSigner for Ed25519BundleSigner {
    fn key_id(&self) -> &str {
        &self.key_id
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], SignerError> {
        Ok(self.key.sign(msg).to_bytes())
    }
}

/// A sender key a receiver trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key id bundles name.
    pub key_id: String,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// After this time (unix seconds) the key is no longer trusted; `None`: no end.
    pub not_after: Option<u64>,
    /// A revoked key is never trusted again.
    pub revoked: bool,
    /// The tenants whose bundles the key may sign; `None`: every tenant. A bundle for another
    /// tenant is refused (`key_not_for_tenant`) before its signature is checked.
    pub tenants: Option<std::collections::BTreeSet<String>>,
}

impl TrustedKey {
    /// A key trusted without an end.
    pub fn new(key_id: impl Into<String>, public_key: [u8; 32]) -> Self {
        TrustedKey {
            key_id: key_id.into(),
            public_key,
            not_after: None,
            revoked: false,
            tenants: None,
        }
    }

    /// Limits the key to bundles of these tenants.
    #[must_use]
    pub fn for_tenants<T: Into<String>>(mut self, tenants: impl IntoIterator<Item = T>) -> Self {
        self.tenants = Some(tenants.into_iter().map(Into::into).collect());
        self
    }
    /// Sets the end of trust.
    #[must_use]
    pub fn not_after(mut self, unix_seconds: u64) -> Self {
        self.not_after = Some(unix_seconds);
        self
    }
}

/// The sender keys a receiver trusts, by key id.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    keys: BTreeMap<String, TrustedKey>,
}

impl TrustStore {
    /// An empty store: nothing is trusted.
    pub fn new() -> Self {
        TrustStore::default()
    }
    /// Adds or replaces a key (a revoked key stays revoked).
    pub fn insert(&mut self, key: TrustedKey) {
        let revoked = self.keys.get(&key.key_id).is_some_and(|k| k.revoked);
        let mut key = key;
        key.revoked |= revoked;
        self.keys.insert(key.key_id.clone(), key);
    }
    /// With a key added.
    #[must_use]
    pub fn with(mut self, key: TrustedKey) -> Self {
        self.insert(key);
        self
    }
    /// Revokes a key; returns `false` when it is unknown.
    pub fn revoke(&mut self, key_id: &str) -> bool {
        match self.keys.get_mut(key_id) {
            Some(k) => {
                k.revoked = true;
                true
            }
            None => false,
        }
    }
    /// The key named `key_id`.
    pub fn get(&self, key_id: &str) -> Option<&TrustedKey> {
        self.keys.get(key_id)
    }
}

/// The time a receiver checks expiry against: the host gives it.
pub trait Clock: Send + Sync {
    /// Now, unix seconds.
    fn now_unix(&self) -> u64;
}

/// The system clock (0 if it is before 1970).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock stopped at a given time (tests, replays of an audit).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert!(check_key_id("node-a:2026").is_ok());
        assert!(check_key_id("").is_err());
        assert!(check_key_id("-x").is_err());
        assert!(check_key_id("a b").is_err());
    }

    #[test]
    fn revoked_stays_revoked() {
        let mut t = TrustStore::new().with(TrustedKey::new("a", [1; 32]));
        assert!(t.revoke("a"));
        t.insert(TrustedKey::new("a", [1; 32]));
        assert!(t.get("a").unwrap().revoked);
        assert!(!t.revoke("b"));
    }
}
