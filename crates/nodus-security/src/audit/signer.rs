//! Checkpoint signers.

use ed25519_dalek::{Signer as _, SigningKey};
use zeroize::Zeroizing;

use super::error::AuditError;

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
