//! A [`SecretVault`] decorator that leaves evidence of every key-scope refusal in the audit log.
//!
//! The vault itself has no access to the audit log; it refuses a key used outside its scope with
//! [`VaultError::ScopeMismatch`] (see `docs/security.md`, "Key scope"). [`AuditedVault`] wraps any
//! vault and records each such refusal as a `vault.scope_denied` record.

use std::fmt;
use std::sync::Arc;

use nodus_security::audit::{AuditRecord, AuditSink, Outcome};
use nodus_security::vault::{
    EnvelopeContext, KeyAlgorithm, KeyId, KeyMeta, KeyScope, SecretVault, VaultError, Zeroizing,
};

/// A [`SecretVault`] that delegates every call to an inner vault and records every key-scope
/// refusal ([`VaultError::ScopeMismatch`] from `seal`, `open` or `rewrap`) in an [`AuditSink`].
///
/// The record has kind [`AuditedVault::SCOPE_DENIED`] (`vault.scope_denied`), outcome
/// [`Outcome::Denied`], reason `ScopeMismatch`, the *context's* tenant (none for a system
/// context), and the details `op` (`seal`, `open` or `rewrap`), `key` (the key id; for `open` and
/// `rewrap` the one the envelope's header names), `table` and `field`. Never plaintext, never the
/// key's own scope. Successful calls and other errors are not recorded here (the dispatcher audits
/// the command that made the call).
///
/// The refusal is returned whether or not the audit sink takes the record; if it does not (its
/// writer stopped), a `WARN` is logged.
///
/// ```
/// use std::sync::Arc;
/// use nodus_core::AuditedVault;
/// use nodus_core::security::audit::{AuditConfig, AuditLog, AuditSink, Ed25519Signer};
/// use nodus_core::security::vault::{EnvelopeContext, KeyAlgorithm, KeyScope, MasterKey, SecretVault, SoftVault};
/// use nodus_core::TenantId;
///
/// let signer = Arc::new(Ed25519Signer::generate("example/audit").unwrap());
/// let log = Arc::new(AuditLog::in_memory(signer, AuditConfig::default()).unwrap());
/// let inner = Arc::new(SoftVault::in_memory(MasterKey::from_bytes([7; 32])).unwrap());
/// let vault = AuditedVault::new(inner, log.clone());
///
/// let (acme, globex) = (TenantId::new("acme").unwrap(), TenantId::new("globex").unwrap());
/// let key = vault.generate(&KeyScope::Tenant(globex), "fields", KeyAlgorithm::XChaCha20Poly1305).unwrap();
/// let err = vault.seal(&key.id, b"x", &EnvelopeContext::tenant(&acme, "notes", "n1", "body")).unwrap_err();
/// assert_eq!(err.code(), "ScopeMismatch");
/// log.flush().unwrap();
/// assert_eq!(log.tail(1).unwrap()[0].record.kind, AuditedVault::SCOPE_DENIED);
/// ```
pub struct AuditedVault {
    inner: Arc<dyn SecretVault>,
    audit: Arc<dyn AuditSink>,
}

impl fmt::Debug for AuditedVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditedVault").finish_non_exhaustive()
    }
}

impl AuditedVault {
    /// The audit record kind of a key-scope refusal.
    pub const SCOPE_DENIED: &'static str = "vault.scope_denied";

    /// Wraps `inner`, recording its key-scope refusals in `audit`.
    pub fn new(inner: Arc<dyn SecretVault>, audit: Arc<dyn AuditSink>) -> Self {
        AuditedVault { inner, audit }
    }

    /// The wrapped vault (calls made on it directly are not audited).
    pub fn inner(&self) -> &Arc<dyn SecretVault> {
        &self.inner
    }

    /// Records `result`'s error if it is a scope refusal, then returns `result` unchanged.
    fn audited<T>(
        &self,
        op: &'static str,
        ctx: &EnvelopeContext<'_>,
        result: Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        if let Err(VaultError::ScopeMismatch { key, .. }) = &result {
            let mut rec = AuditRecord::new(Self::SCOPE_DENIED, Outcome::Denied)
                .reason("ScopeMismatch")
                .detail("op", op)
                .detail("key", key.as_str())
                .detail("table", ctx.table)
                .detail("field", ctx.field);
            rec.tenant = ctx.tenant.cloned();
            if let Err(e) = self.audit.record(rec) {
                tracing::warn!(
                    op,
                    key = %key,
                    error = %e,
                    "a vault key-scope refusal could not be audited"
                );
            }
        }
        result
    }
}

impl SecretVault for AuditedVault {
    fn generate(
        &self,
        scope: &KeyScope,
        purpose: &str,
        alg: KeyAlgorithm,
    ) -> Result<KeyMeta, VaultError> {
        self.inner.generate(scope, purpose, alg)
    }

    fn find(&self, scope: &KeyScope, purpose: &str) -> Result<Option<KeyId>, VaultError> {
        self.inner.find(scope, purpose)
    }

    fn list(&self, scope: Option<&KeyScope>) -> Result<Vec<KeyMeta>, VaultError> {
        self.inner.list(scope)
    }

    fn rotate(&self, key: &KeyId) -> Result<KeyMeta, VaultError> {
        self.inner.rotate(key)
    }

    fn disable(&self, key: &KeyId, version: u32) -> Result<(), VaultError> {
        self.inner.disable(key, version)
    }

    fn enable(&self, key: &KeyId, version: u32) -> Result<(), VaultError> {
        self.inner.enable(key, version)
    }

    fn destroy(&self, key: &KeyId, version: u32) -> Result<(), VaultError> {
        self.inner.destroy(key, version)
    }

    fn seal(
        &self,
        key: &KeyId,
        plaintext: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        self.audited("seal", ctx, self.inner.seal(key, plaintext, ctx))
    }

    fn open(
        &self,
        envelope: &[u8],
        ctx: &EnvelopeContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.audited("open", ctx, self.inner.open(envelope, ctx))
    }

    fn rewrap(&self, envelope: &[u8], ctx: &EnvelopeContext<'_>) -> Result<Vec<u8>, VaultError> {
        self.audited("rewrap", ctx, self.inner.rewrap(envelope, ctx))
    }

    fn sign(&self, key: &KeyId, message: &[u8]) -> Result<[u8; 64], VaultError> {
        self.inner.sign(key, message)
    }

    fn verify(
        &self,
        key: &KeyId,
        version: u32,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), VaultError> {
        self.inner.verify(key, version, message, signature)
    }

    fn public_key(&self, key: &KeyId, version: Option<u32>) -> Result<[u8; 32], VaultError> {
        self.inner.public_key(key, version)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use std::collections::BTreeMap;

    use nodus_policy::TenantId;
    use nodus_security::audit::{AuditConfig, AuditLog, Ed25519Signer};
    use nodus_security::vault::{MasterKey, SoftVault};

    use super::*;

    fn setup() -> (AuditedVault, Arc<AuditLog>) {
        let signer = Arc::new(Ed25519Signer::generate("test/audit").unwrap());
        let log = Arc::new(AuditLog::in_memory(signer, AuditConfig::default()).unwrap());
        let inner = Arc::new(SoftVault::in_memory(MasterKey::from_bytes([4; 32])).unwrap());
        (AuditedVault::new(inner, log.clone()), log)
    }

    fn records(log: &AuditLog) -> Vec<AuditRecord> {
        log.flush().unwrap();
        log.tail(1000)
            .unwrap()
            .into_iter()
            .map(|s| s.record)
            .collect()
    }

    fn detail(op: &str, key: &KeyId, table: &str, field: &str) -> BTreeMap<String, String> {
        [
            ("op", op),
            ("key", &key.to_string()),
            ("table", table),
            ("field", field),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn one_record_per_scope_refusal_and_none_on_success() {
        let (vault, log) = setup();
        let acme = TenantId::new("acme").unwrap();
        let globex = TenantId::new("globex-private-name").unwrap();
        let theirs = vault
            .generate(
                &KeyScope::Tenant(globex.clone()),
                "fields",
                KeyAlgorithm::XChaCha20Poly1305,
            )
            .unwrap()
            .id;
        let system = vault
            .generate(&KeyScope::System, "fields", KeyAlgorithm::XChaCha20Poly1305)
            .unwrap()
            .id;
        let their_ctx = EnvelopeContext::tenant(&globex, "notes", "n1", "body");
        let our_ctx = EnvelopeContext::tenant(&acme, "notes", "n1", "body");
        let sys_ctx = EnvelopeContext::system("settings", "smtp", "password");

        // Success (and the other key operations) leave nothing here.
        let sealed = vault.seal(&theirs, b"top secret", &their_ctx).unwrap();
        assert_eq!(&*vault.open(&sealed, &their_ctx).unwrap(), b"top secret");
        let sealed = vault.rewrap(&sealed, &their_ctx).unwrap();
        let sys_sealed = vault.seal(&system, b"smtp pass", &sys_ctx).unwrap();
        vault.rotate(&theirs).unwrap();
        assert!(records(&log).is_empty());

        // Other errors are not scope refusals: not recorded here either.
        assert_eq!(
            vault
                .open(
                    &sealed,
                    &EnvelopeContext {
                        field: "x",
                        ..their_ctx
                    }
                )
                .unwrap_err(),
            VaultError::Authentication
        );
        assert!(records(&log).is_empty());

        // Each refusal: one record.
        for e in [
            vault.seal(&theirs, b"top secret", &our_ctx).unwrap_err(),
            vault.open(&sealed, &our_ctx).unwrap_err(),
            vault.rewrap(&sealed, &our_ctx).unwrap_err(),
            vault.open(&sys_sealed, &our_ctx).unwrap_err(),
            vault.seal(&theirs, b"top secret", &sys_ctx).unwrap_err(),
        ] {
            assert_eq!(e.code(), "ScopeMismatch");
        }
        let recs = records(&log);
        assert_eq!(recs.len(), 5);
        let expected = [
            (Some(&acme), detail("seal", &theirs, "notes", "body")),
            (Some(&acme), detail("open", &theirs, "notes", "body")),
            (Some(&acme), detail("rewrap", &theirs, "notes", "body")),
            (Some(&acme), detail("open", &system, "notes", "body")),
            (None, detail("seal", &theirs, "settings", "password")),
        ];
        for (rec, (tenant, detail)) in recs.iter().zip(expected) {
            assert_eq!(rec.kind, AuditedVault::SCOPE_DENIED);
            assert_eq!(rec.kind, "vault.scope_denied");
            assert_eq!(rec.outcome, Outcome::Denied);
            assert_eq!(rec.reason.as_deref(), Some("ScopeMismatch"));
            assert_eq!(rec.tenant.as_ref(), tenant);
            assert_eq!(rec.detail, detail);
            // Nothing of the plaintext, and nothing of the key's tenant when the caller is
            // another tenant.
            let text = format!("{rec:?}");
            assert!(!text.contains("top secret") && !text.contains("smtp pass"));
            if tenant == Some(&acme) {
                assert!(!text.contains("globex-private-name"), "{text}");
            }
        }

        // And success still records nothing more.
        assert_eq!(&*vault.open(&sealed, &their_ctx).unwrap(), b"top secret");
        assert_eq!(records(&log).len(), 5);
        assert!(log.verify().unwrap().valid);
    }

    /// The audit log being down never turns a refusal into a success.
    #[test]
    fn a_refusal_stands_when_the_audit_log_is_down() {
        let (vault, log) = setup();
        let (acme, globex) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("globex").unwrap(),
        );
        let theirs = vault
            .generate(
                &KeyScope::Tenant(globex),
                "fields",
                KeyAlgorithm::XChaCha20Poly1305,
            )
            .unwrap()
            .id;
        log.shutdown().unwrap();
        let ctx = EnvelopeContext::tenant(&acme, "notes", "n1", "body");
        assert!(matches!(
            vault.seal(&theirs, b"x", &ctx),
            Err(VaultError::ScopeMismatch { .. })
        ));
    }

    #[test]
    fn every_operation_is_delegated() {
        let (vault, log) = setup();
        let signing = vault
            .generate(&KeyScope::System, "sign", KeyAlgorithm::Ed25519)
            .unwrap();
        assert_eq!(
            vault.find(&KeyScope::System, "sign").unwrap(),
            Some(signing.id)
        );
        let sig = vault.sign(&signing.id, b"m").unwrap();
        vault.verify(&signing.id, 1, b"m", &sig).unwrap();
        let pk = vault.public_key(&signing.id, None).unwrap();
        assert_eq!(vault.inner().public_key(&signing.id, Some(1)).unwrap(), pk);
        vault.rotate(&signing.id).unwrap();
        vault.disable(&signing.id, 1).unwrap();
        assert!(matches!(
            vault.verify(&signing.id, 1, b"m", &sig),
            Err(VaultError::KeyDisabled { version: 1, .. })
        ));
        vault.enable(&signing.id, 1).unwrap();
        vault.destroy(&signing.id, 1).unwrap();
        let states: Vec<_> = vault
            .list(Some(&KeyScope::System))
            .unwrap()
            .into_iter()
            .map(|m| (m.version, m.state, m.signatures))
            .collect();
        assert_eq!(
            states,
            [
                (1, nodus_security::vault::KeyState::Destroyed, 1),
                (2, nodus_security::vault::KeyState::Active, 0)
            ]
        );
        assert!(format!("{vault:?}").starts_with("AuditedVault"));
        assert!(records(&log).is_empty());
    }
}
