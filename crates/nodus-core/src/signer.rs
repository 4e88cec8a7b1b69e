//! Signs audit checkpoints with a vault key, so the audit log's signing key lives (sealed) in the
//! vault like every other key.

use std::sync::Arc;

use nodus_security::audit::{AuditError, CheckpointSigner};
use nodus_security::vault::{KeyId, SecretVault, VaultError};

/// The vault purpose of the audit log's checkpoint signing key.
pub const AUDIT_KEY_PURPOSE: &str = "audit.checkpoint";

/// A [`CheckpointSigner`] backed by a system-scoped Ed25519 key in a [`SecretVault`].
pub(crate) struct VaultSigner {
    vault: Arc<dyn SecretVault>,
    key: KeyId,
    name: String,
    public: [u8; 32],
}

impl VaultSigner {
    /// Finds (or creates on first use) the system key with purpose [`AUDIT_KEY_PURPOSE`].
    pub(crate) fn new(vault: Arc<dyn SecretVault>, name: &str) -> Result<Self, VaultError> {
        let (key, public) = crate::node::system_signing_key(&vault, AUDIT_KEY_PURPOSE)?;
        Ok(VaultSigner {
            vault,
            key,
            name: name.to_owned(),
            public,
        })
    }
}

impl CheckpointSigner for VaultSigner {
    fn name(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], AuditError> {
        self.vault
            .sign(&self.key, message)
            .map_err(|e| AuditError::Signing(e.to_string()))
    }
}
