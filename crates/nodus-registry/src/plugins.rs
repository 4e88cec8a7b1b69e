//! The plugin registry: signed manifests, checked against the tenant's trust store and policy.
//!
//! A plugin is metadata for now (the sandbox comes later): a [`PluginManifest`] — id, version,
//! tenant, requested capabilities — signed (Ed25519) by an issuer. [`PluginRegistry::load`] checks,
//! in order: the manifest parses and is valid; it is for the loading tenant; the tenant's
//! [`TrustStore`] trusts the issuer and the signature verifies (unknown, revoked, expired and
//! not-yet-valid issuers are refused); the policy (`plugins.allowed`) allows the id. Every refusal is
//! a [`PluginDenied`] with a stable reason code for the audit log. On a policy or trust change,
//! [`PluginRegistry::revalidate`] quarantines what is no longer allowed (kept, inactive, listed) and
//! reinstates what is allowed again. Reads never lock; writes swap a new map.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use nodus_policy::TenantId;
//! use nodus_registry::plugins::{PluginManifest, PluginRegistry, SignedManifest};
//! use nodus_security::vault::TrustStore;
//!
//! let acme = TenantId::new("acme").unwrap();
//! let issuer = SigningKey::from_bytes(&[3; 32]);
//! let trust = TrustStore::in_memory().unwrap();
//! trust.add_issuer(&acme, &issuer.verifying_key().to_bytes(), None, None).unwrap();
//! let manifest = PluginManifest::new("markdown", "1.2.0", acme.clone(), ["notes.read"]);
//! let signed = SignedManifest::sign(&manifest, &issuer).unwrap();
//!
//! let plugins = PluginRegistry::new();
//! let allowed = |id: &str| id == "markdown";
//! let loaded = plugins.load(&acme, &signed, &trust, &allowed).unwrap();
//! assert!(plugins.is_active(&acme, "markdown"));
//! assert!(plugins.load(&acme, &signed, &trust, &|_: &str| false).is_err()); // policy says no
//! # let _ = loaded;
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use nodus_policy::TenantId;
use nodus_security::vault::{TrustStore, TrustVerdict, key_id_for};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The domain tag prefixed to a manifest before signing.
pub const MANIFEST_TAG: &[u8] = b"nodus-plugin-manifest-v1\0";

/// What a plugin is and asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    /// Plugin id: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
    pub id: String,
    /// Version: `MAJOR.MINOR.PATCH`, optionally `-prerelease`.
    pub version: String,
    /// The tenant it is issued for.
    pub tenant: TenantId,
    /// Capabilities it requests (dotted names, e.g. `notes.read`), sorted, no duplicates.
    pub capabilities: Vec<String>,
    /// A description.
    #[serde(default)]
    pub description: String,
}

impl PluginManifest {
    /// A manifest; capabilities are sorted and de-duplicated.
    pub fn new<I>(id: &str, version: &str, tenant: TenantId, capabilities: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut caps: Vec<String> = capabilities
            .into_iter()
            .map(|c| c.as_ref().to_owned())
            .collect();
        caps.sort();
        caps.dedup();
        PluginManifest {
            id: id.to_owned(),
            version: version.to_owned(),
            tenant,
            capabilities: caps,
            description: String::new(),
        }
    }

    /// Checks the id, version and capability names.
    ///
    /// # Errors
    /// A message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self.id.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !id_ok {
            return Err(format!("invalid plugin id `{}`", self.id));
        }
        let (core, pre) = self.version.split_once('-').unwrap_or((&self.version, ""));
        let parts: Vec<&str> = core.split('.').collect();
        let semver = parts.len() == 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_digit())
                    && (p.len() == 1 || !p.starts_with('0'))
            })
            && (self.version.find('-').is_none()
                || (!pre.is_empty()
                    && pre
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')));
        if !semver {
            return Err(format!(
                "invalid version `{}` of plugin `{}`: use MAJOR.MINOR.PATCH",
                self.version, self.id
            ));
        }
        for c in &self.capabilities {
            if c.is_empty()
                || !c.split('.').all(|s| {
                    !s.is_empty()
                        && s.chars().all(|ch| {
                            ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-'
                        })
                })
            {
                return Err(format!("invalid capability `{c}` of plugin `{}`", self.id));
            }
        }
        Ok(())
    }
}

/// A manifest with its issuer's signature. The signed bytes are `MANIFEST_TAG ‖ manifest`, where
/// `manifest` is exactly the JSON text carried here (no re-serialisation before verifying).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest, as JSON text.
    pub manifest: String,
    /// The issuer's key id (`key_id_for(public key)`).
    pub key_id: String,
    /// The Ed25519 signature, base64.
    pub signature: String,
}

impl SignedManifest {
    /// Signs `manifest` with `key`.
    ///
    /// # Errors
    /// A message when the manifest does not serialise.
    pub fn sign(manifest: &PluginManifest, key: &SigningKey) -> Result<Self, String> {
        let text = serde_json::to_string(manifest).map_err(|e| e.to_string())?;
        let mut msg = MANIFEST_TAG.to_vec();
        msg.extend_from_slice(text.as_bytes());
        let sig = key.sign(&msg).to_bytes();
        Ok(SignedManifest {
            manifest: text,
            key_id: key_id_for(&key.verifying_key().to_bytes()),
            signature: B64.encode(sig),
        })
    }

    fn message(&self) -> Vec<u8> {
        let mut msg = MANIFEST_TAG.to_vec();
        msg.extend_from_slice(self.manifest.as_bytes());
        msg
    }
}

/// Why a plugin was refused or quarantined (stable codes for the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DenyReason {
    /// The manifest does not parse or is invalid.
    InvalidManifest,
    /// The manifest is issued for another tenant.
    TenantMismatch,
    /// The tenant does not trust the issuer.
    UnknownIssuer,
    /// The issuer was revoked.
    Revoked,
    /// The issuer's validity has ended.
    Expired,
    /// The issuer's validity has not started.
    NotYetValid,
    /// The signature does not verify.
    BadSignature,
    /// `plugins.allowed` does not list the plugin.
    NotAllowedByPolicy,
    /// The trust store could not be read.
    TrustStoreUnavailable,
}

impl DenyReason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::InvalidManifest => "InvalidManifest",
            DenyReason::TenantMismatch => "TenantMismatch",
            DenyReason::UnknownIssuer => "UnknownIssuer",
            DenyReason::Revoked => "Revoked",
            DenyReason::Expired => "Expired",
            DenyReason::NotYetValid => "NotYetValid",
            DenyReason::BadSignature => "BadSignature",
            DenyReason::NotAllowedByPolicy => "NotAllowedByPolicy",
            DenyReason::TrustStoreUnavailable => "TrustStoreUnavailable",
        }
    }
}

/// A refused load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("plugin `{plugin}` for tenant `{tenant}` refused: {} ({detail})", reason.code())]
pub struct PluginDenied {
    /// Why.
    pub reason: DenyReason,
    /// The plugin id (as far as it could be read).
    pub plugin: String,
    /// The tenant.
    pub tenant: TenantId,
    /// Details.
    pub detail: String,
}

/// Whether a loaded plugin may run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PluginState {
    /// Allowed by trust and policy.
    Active,
    /// Kept but inactive: trust or policy no longer allows it.
    Quarantined {
        /// Why.
        reason: DenyReason,
    },
}

/// A loaded plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    /// Its manifest.
    pub manifest: PluginManifest,
    /// Its signed form (kept for revalidation).
    pub signed: SignedManifest,
    /// Its state.
    pub state: PluginState,
}

/// What a load or revalidation changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Newly loaded.
    Loaded,
    /// The same id and version was already loaded (idempotent).
    Unchanged,
    /// Another version replaced the loaded one.
    Replaced {
        /// The version replaced.
        previous: String,
    },
    /// Quarantined by a revalidation.
    Quarantined {
        /// Why.
        reason: DenyReason,
    },
    /// Allowed again by a revalidation.
    Reinstated,
}

/// One plugin's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginChange {
    /// The tenant.
    pub tenant: TenantId,
    /// The plugin id.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// What changed.
    pub change: ChangeKind,
}

type PluginMap = BTreeMap<(TenantId, String), Arc<PluginInfo>>;

/// The plugin registry.
pub struct PluginRegistry {
    map: ArcSwap<PluginMap>,
    write: Mutex<()>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.map.load().len())
            .finish()
    }
}

impl Default for PluginRegistry {
    fn default() -> Self {
        Self::new()
    }
}

fn check(
    tenant: &TenantId,
    signed: &SignedManifest,
    trust: &TrustStore,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<PluginManifest, PluginDenied> {
    let deny = |reason, plugin: &str, detail: String| PluginDenied {
        reason,
        plugin: plugin.to_owned(),
        tenant: tenant.clone(),
        detail,
    };
    let manifest: PluginManifest = serde_json::from_str(&signed.manifest)
        .map_err(|e| deny(DenyReason::InvalidManifest, "?", e.to_string()))?;
    manifest
        .validate()
        .map_err(|e| deny(DenyReason::InvalidManifest, &manifest.id, e))?;
    if &manifest.tenant != tenant {
        return Err(deny(
            DenyReason::TenantMismatch,
            &manifest.id,
            format!("issued for tenant `{}`", manifest.tenant),
        ));
    }
    let sig = B64.decode(&signed.signature).map_err(|_| {
        deny(
            DenyReason::BadSignature,
            &manifest.id,
            "signature is not base64".into(),
        )
    })?;
    let verdict = trust
        .verify(tenant, &signed.key_id, &signed.message(), &sig)
        .map_err(|e| {
            deny(
                DenyReason::TrustStoreUnavailable,
                &manifest.id,
                e.to_string(),
            )
        })?;
    let reason = match verdict {
        TrustVerdict::Trusted => None,
        TrustVerdict::UnknownIssuer => Some(DenyReason::UnknownIssuer),
        TrustVerdict::Revoked => Some(DenyReason::Revoked),
        TrustVerdict::Expired => Some(DenyReason::Expired),
        TrustVerdict::NotYetValid => Some(DenyReason::NotYetValid),
        TrustVerdict::BadSignature => Some(DenyReason::BadSignature),
    };
    if let Some(r) = reason {
        return Err(deny(r, &manifest.id, format!("issuer `{}`", signed.key_id)));
    }
    if !allowed(&manifest.id) {
        return Err(deny(
            DenyReason::NotAllowedByPolicy,
            &manifest.id,
            "not in `plugins.allowed`".into(),
        ));
    }
    Ok(manifest)
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        PluginRegistry {
            map: ArcSwap::from_pointee(BTreeMap::new()),
            write: Mutex::new(()),
        }
    }

    /// Loads a signed manifest for `tenant` (see the module docs for the checks, in order).
    ///
    /// # Errors
    /// [`PluginDenied`] with a stable reason.
    pub fn load(
        &self,
        tenant: &TenantId,
        signed: &SignedManifest,
        trust: &TrustStore,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<PluginChange, PluginDenied> {
        let manifest = check(tenant, signed, trust, allowed)?;
        let _w = self.write.lock();
        let mut map = PluginMap::clone(&self.map.load());
        let key = (tenant.clone(), manifest.id.clone());
        let change = match map.get(&key) {
            Some(old)
                if old.manifest.version == manifest.version && old.state == PluginState::Active =>
            {
                ChangeKind::Unchanged
            }
            Some(old) if old.manifest.version == manifest.version => ChangeKind::Reinstated,
            Some(old) => ChangeKind::Replaced {
                previous: old.manifest.version.clone(),
            },
            None => ChangeKind::Loaded,
        };
        let version = manifest.version.clone();
        map.insert(
            key,
            Arc::new(PluginInfo {
                manifest,
                signed: signed.clone(),
                state: PluginState::Active,
            }),
        );
        self.map.store(Arc::new(map));
        Ok(PluginChange {
            tenant: tenant.clone(),
            plugin: signed_id(signed),
            version,
            change,
        })
    }

    /// Re-checks every plugin of `tenant` against its (new) trust store and policy: plugins no longer
    /// allowed are quarantined, allowed ones reinstated. Returns the changes.
    pub fn revalidate(
        &self,
        tenant: &TenantId,
        trust: &TrustStore,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Vec<PluginChange> {
        let _w = self.write.lock();
        let mut map = PluginMap::clone(&self.map.load());
        let mut changes = Vec::new();
        for ((t, id), info) in map.iter_mut() {
            if t != tenant {
                continue;
            }
            let state = match check(tenant, &info.signed, trust, allowed) {
                Ok(_) => PluginState::Active,
                Err(d) => PluginState::Quarantined { reason: d.reason },
            };
            if state != info.state {
                let change = match &state {
                    PluginState::Active => ChangeKind::Reinstated,
                    PluginState::Quarantined { reason } => {
                        ChangeKind::Quarantined { reason: *reason }
                    }
                };
                changes.push(PluginChange {
                    tenant: tenant.clone(),
                    plugin: id.clone(),
                    version: info.manifest.version.clone(),
                    change,
                });
                let mut n = PluginInfo::clone(info);
                n.state = state;
                *info = Arc::new(n);
            }
        }
        self.map.store(Arc::new(map));
        changes
    }

    /// Tenants that have plugins.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut v: Vec<TenantId> = self.map.load().keys().map(|(t, _)| t.clone()).collect();
        v.dedup();
        v
    }

    /// Every plugin of `tenant`, active or quarantined.
    pub fn list(&self, tenant: &TenantId) -> Vec<PluginInfo> {
        self.map
            .load()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, p)| PluginInfo::clone(p))
            .collect()
    }

    /// One plugin.
    pub fn get(&self, tenant: &TenantId, id: &str) -> Option<PluginInfo> {
        self.map
            .load()
            .get(&(tenant.clone(), id.to_owned()))
            .map(|p| PluginInfo::clone(p))
    }

    /// `true` when the plugin is loaded and active.
    pub fn is_active(&self, tenant: &TenantId, id: &str) -> bool {
        self.get(tenant, id)
            .is_some_and(|p| p.state == PluginState::Active)
    }
}

fn signed_id(s: &SignedManifest) -> String {
    serde_json::from_str::<PluginManifest>(&s.manifest)
        .map(|m| m.id)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn setup() -> (TrustStore, SigningKey, String) {
        let trust = TrustStore::in_memory().unwrap();
        let key = SigningKey::from_bytes(&[11; 32]);
        let id = trust
            .add_issuer(&t("acme"), &key.verifying_key().to_bytes(), None, None)
            .unwrap();
        (trust, key, id)
    }

    fn yes(_: &str) -> bool {
        true
    }

    #[test]
    fn load_checks_in_order_and_reports_stable_reasons() {
        let (trust, key, issuer) = setup();
        let reg = PluginRegistry::new();
        let m = PluginManifest::new("kv", "1.0.0", t("acme"), ["notes.read", "notes.read"]);
        assert_eq!(m.capabilities, vec!["notes.read"]);
        let s = SignedManifest::sign(&m, &key).unwrap();
        assert_eq!(
            reg.load(&t("acme"), &s, &trust, &yes).unwrap().change,
            ChangeKind::Loaded
        );
        assert_eq!(
            reg.load(&t("acme"), &s, &trust, &yes).unwrap().change,
            ChangeKind::Unchanged
        );
        let v2 = SignedManifest::sign(
            &PluginManifest::new("kv", "1.1.0", t("acme"), ["notes.read"]),
            &key,
        )
        .unwrap();
        assert_eq!(
            reg.load(&t("acme"), &v2, &trust, &yes).unwrap().change,
            ChangeKind::Replaced {
                previous: "1.0.0".into()
            }
        );
        // Tenant mismatch, policy, bad signature, unknown issuer, invalid manifest.
        assert_eq!(
            reg.load(&t("globex"), &s, &trust, &yes).unwrap_err().reason,
            DenyReason::TenantMismatch
        );
        assert_eq!(
            reg.load(&t("acme"), &s, &trust, &|_| false)
                .unwrap_err()
                .reason,
            DenyReason::NotAllowedByPolicy
        );
        let mut tampered = s.clone();
        tampered.manifest = tampered.manifest.replace("notes.read", "notes.write");
        assert_eq!(
            reg.load(&t("acme"), &tampered, &trust, &yes)
                .unwrap_err()
                .reason,
            DenyReason::BadSignature
        );
        let stranger = SignedManifest::sign(&m, &SigningKey::from_bytes(&[12; 32])).unwrap();
        assert_eq!(
            reg.load(&t("acme"), &stranger, &trust, &yes)
                .unwrap_err()
                .reason,
            DenyReason::UnknownIssuer
        );
        let bad = SignedManifest::sign(
            &PluginManifest::new("Bad Id", "1.0", t("acme"), Vec::<&str>::new()),
            &key,
        )
        .unwrap();
        let e = reg.load(&t("acme"), &bad, &trust, &yes).unwrap_err();
        assert_eq!(e.reason, DenyReason::InvalidManifest);
        assert!(e.to_string().contains("InvalidManifest"), "{e}");
        // Revoked and expired issuers.
        trust.revoke(&t("acme"), &issuer).unwrap();
        assert_eq!(
            reg.load(&t("acme"), &s, &trust, &yes).unwrap_err().reason,
            DenyReason::Revoked
        );
        let trust2 = TrustStore::in_memory().unwrap();
        trust2
            .add_issuer(&t("acme"), &key.verifying_key().to_bytes(), None, Some(1))
            .unwrap();
        assert_eq!(
            reg.load(&t("acme"), &s, &trust2, &yes).unwrap_err().reason,
            DenyReason::Expired
        );
    }

    #[test]
    fn revalidation_quarantines_and_reinstates() {
        let (trust, key, issuer) = setup();
        let reg = PluginRegistry::new();
        for id in ["kv", "markdown"] {
            let s = SignedManifest::sign(&PluginManifest::new(id, "1.0.0", t("acme"), ["x"]), &key)
                .unwrap();
            reg.load(&t("acme"), &s, &trust, &yes).unwrap();
        }
        let only_kv = |id: &str| id == "kv";
        let changes = reg.revalidate(&t("acme"), &trust, &only_kv);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].change,
            ChangeKind::Quarantined {
                reason: DenyReason::NotAllowedByPolicy
            }
        );
        assert!(!reg.is_active(&t("acme"), "markdown"));
        assert_eq!(
            reg.list(&t("acme")).len(),
            2,
            "quarantined plugins are kept and listed"
        );
        assert_eq!(
            reg.revalidate(&t("acme"), &trust, &yes)[0].change,
            ChangeKind::Reinstated
        );
        trust.revoke(&t("acme"), &issuer).unwrap();
        let changes = reg.revalidate(&t("acme"), &trust, &yes);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.change
            == ChangeKind::Quarantined {
                reason: DenyReason::Revoked
            }));
        assert_eq!(reg.tenants(), vec![t("acme")]);
    }
}
