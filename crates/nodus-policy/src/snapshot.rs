//! A compiled, immutable view of one tenant's (or one user's) effective policy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::compile::{Effective, Provenance};
use crate::error::AccessError;
use crate::ids::{ActorId, TenantId};
use crate::label::{Label, LabelScheme};
use crate::schema::Schema;
use crate::subject::{PermissionId, PermissionSet, RateClassId, Subject, Symbols};
use crate::value::{Layer, RateLimit, Value};

/// The *-property: which writes are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRule {
    /// No write down (default): the object's label must dominate the subject's clearance.
    NoWriteDown,
    /// The object's label must equal the subject's clearance.
    Equal,
    /// As for reads: the subject's clearance must dominate the object's label.
    Dominates,
}

/// Compiled policy for one tenant (or one user of a tenant), immutable once built.
///
/// Decisions ([`permits`](Self::permits), [`can_read`](Self::can_read),
/// [`can_write`](Self::can_write), [`rate_limit`](Self::rate_limit)) allocate nothing and take no
/// lock for every role, permission and rate class known when the snapshot was built; ones interned
/// later are answered correctly on a slower path.
pub struct PolicySnapshot {
    tenant: Option<TenantId>,
    user: Option<ActorId>,
    epoch: u64,
    hash: [u8; 32],
    values: Arc<Effective>,
    schema: Arc<Schema>,
    scheme: LabelScheme,
    write_rule: WriteRule,
    symbols: Arc<Symbols>,
    /// Indexed by `RoleId`: the role's permissions, `None` when the tenant does not define the role.
    role_perms: Vec<Option<PermissionSet>>,
    /// Indexed by `RoleId`: the role's patterns, for permissions interned after compilation.
    role_patterns: Vec<Option<Vec<String>>>,
    /// `true` when the role map was set by the system layer or the schema default (its patterns
    /// may match reserved permissions), `false` when a tenant or user layer set it.
    roles_from_system: bool,
    compiled_perms: u32,
    /// Indexed by `RateClassId`.
    rates: Vec<Option<RateLimit>>,
    rate_map: BTreeMap<String, RateLimit>,
    compiled_classes: u32,
    max_payload: usize,
}

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySnapshot")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("epoch", &self.epoch)
            .field("hash", &hex::encode(&self.hash[..8]))
            .field("keys", &self.values.len())
            .finish()
    }
}

/// The prefix of every permission whose effect crosses tenants (reloading every tenant, verifying or
/// checkpointing the whole audit log, system keys). Only the system layer may grant such a
/// permission: a tenant or user layer naming one is a
/// [`ReservedPermission`](crate::PolicyErrorKind::ReservedPermission) error, and a wildcard a
/// tenant or user layer sets (`*`) never matches one.
pub const RESERVED_PERMISSION_PREFIX: &str = "system.";

/// `true` when `name` is a permission only the system layer may grant (it starts with
/// [`RESERVED_PERMISSION_PREFIX`]; the comparison is case-sensitive, like every permission name).
///
/// ```
/// use nodus_policy::is_reserved_permission;
/// assert!(is_reserved_permission("system.policy.reload"));
/// assert!(!is_reserved_permission("policy.reload"));
/// ```
pub fn is_reserved_permission(name: &str) -> bool {
    name.starts_with(RESERVED_PERMISSION_PREFIX)
}

/// `true` when a role whose patterns were set by the system layer (`from_system`) or by a tenant or
/// user layer grants `permission` through `pattern`: patterns of a tenant or user layer never
/// match a reserved permission, whatever the wildcard.
fn grants(pattern: &str, permission: &str, from_system: bool) -> bool {
    (from_system || !is_reserved_permission(permission)) && pattern_matches(pattern, permission)
}

fn pattern_matches(pattern: &str, permission: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            permission.len() > prefix.len() + 1
                && permission.starts_with(prefix)
                && permission.as_bytes().get(prefix.len()) == Some(&b'.')
        }
        None => pattern == permission,
    }
}

/// SHA-256 over the canonical JSON of the effective values (keys sorted; provenance excluded), so
/// equal content ⇒ equal hash.
pub(crate) fn content_hash(values: &Effective) -> [u8; 32] {
    let canonical: BTreeMap<&String, &Value> = values.iter().map(|(k, (v, _))| (k, v)).collect();
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"nodus-policy-v1\0");
    h.update(&bytes);
    h.finalize().into()
}

impl PolicySnapshot {
    pub(crate) fn compile(
        tenant: Option<TenantId>,
        user: Option<ActorId>,
        epoch: u64,
        values: Arc<Effective>,
        schema: Arc<Schema>,
        scheme: LabelScheme,
        symbols: Arc<Symbols>,
    ) -> Self {
        let hash = content_hash(&values);
        let write_rule = match values.get("mac.write_rule") {
            Some((Value::Str(s), _)) if s == "equal" => WriteRule::Equal,
            Some((Value::Str(s), _)) if s == "dominates" => WriteRule::Dominates,
            _ => WriteRule::NoWriteDown,
        };
        // Roles: intern every role the tenant defines, compile patterns against every known permission.
        let permissions = symbols.permissions().names();
        let compiled_perms = u32::try_from(permissions.len()).unwrap_or(u32::MAX);
        let mut role_perms: Vec<Option<PermissionSet>> = Vec::new();
        let mut role_patterns: Vec<Option<Vec<String>>> = Vec::new();
        // Provenance decides whether the role map may reach reserved permissions: the whole map is
        // one key, set by exactly one layer.
        let roles_from_system = values
            .get("rbac.roles")
            .is_none_or(|(_, p)| matches!(p.layer, Layer::Default | Layer::System));
        if let Some((Value::RoleMap(roles), _)) = values.get("rbac.roles") {
            for (role, patterns) in roles {
                let id = symbols.role(role).0 as usize;
                if role_perms.len() <= id {
                    role_perms.resize(id + 1, None);
                    role_patterns.resize(id + 1, None);
                }
                let mut set = PermissionSet::with_capacity(permissions.len());
                for (i, name) in permissions.iter().enumerate() {
                    if patterns.iter().any(|p| grants(p, name, roles_from_system)) {
                        set.insert(PermissionId(i as u32));
                    }
                }
                if let (Some(slot), Some(pslot)) =
                    (role_perms.get_mut(id), role_patterns.get_mut(id))
                {
                    *slot = Some(set);
                    *pslot = Some(patterns.clone());
                }
            }
        }
        let rate_map = match values.get("rate.limits") {
            Some((Value::RateMap(m), _)) => m.clone(),
            _ => BTreeMap::new(),
        };
        for class in rate_map.keys() {
            symbols.rate_class(class);
        }
        let classes = symbols.rate_classes().names();
        let compiled_classes = u32::try_from(classes.len()).unwrap_or(u32::MAX);
        let rates = classes
            .iter()
            .map(|c| rate_map.get(&**c).copied())
            .collect();
        let max_payload = match values.get("limits.max_payload_bytes") {
            Some((Value::Int(i), _)) => usize::try_from(*i).unwrap_or(usize::MAX),
            _ => 1 << 20,
        };
        PolicySnapshot {
            tenant,
            user,
            epoch,
            hash,
            values,
            schema,
            scheme,
            write_rule,
            symbols,
            role_perms,
            role_patterns,
            roles_from_system,
            compiled_perms,
            rates,
            rate_map,
            compiled_classes,
            max_payload,
        }
    }

    /// `true` when the decision tables cover every permission and rate class interned so far, so
    /// every decision takes the fast path. A snapshot built before a name was interned (a command
    /// registered after the policy was loaded) answers that name correctly but by matching
    /// patterns; [`PolicyStore::recompile`](crate::PolicyStore::recompile) rebuilds its tables.
    pub fn is_current(&self) -> bool {
        self.compiled_perms as usize == self.symbols.permissions().len()
            && self.compiled_classes as usize == self.symbols.rate_classes().len()
    }

    /// The same snapshot — same tenant, user, epoch, values and content hash — with its decision
    /// tables rebuilt against every name interned so far.
    pub(crate) fn recompiled(&self) -> PolicySnapshot {
        PolicySnapshot::compile(
            self.tenant.clone(),
            self.user.clone(),
            self.epoch,
            self.values.clone(),
            self.schema.clone(),
            self.scheme.clone(),
            self.symbols.clone(),
        )
    }

    /// The tenant (`None` for the system snapshot).
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// The user, for a per-user snapshot.
    pub fn user(&self) -> Option<&ActorId> {
        self.user.as_ref()
    }

    /// The store epoch at which this content was published.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// SHA-256 of the effective values.
    pub fn content_hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The label scheme (`mac.levels`, `mac.compartments`).
    pub fn label_scheme(&self) -> &LabelScheme {
        &self.scheme
    }

    /// The write rule (`mac.write_rule`).
    pub fn write_rule(&self) -> WriteRule {
        self.write_rule
    }

    /// `true` when one of the subject's roles grants `permission`.
    #[inline]
    pub fn permits(&self, subject: &Subject, permission: PermissionId) -> bool {
        for role in subject.roles().ids() {
            let Some(Some(set)) = self.role_perms.get(role.0 as usize) else {
                continue;
            };
            if permission.0 < self.compiled_perms {
                if set.contains(permission) {
                    return true;
                }
            } else if self.permits_slow(role.0 as usize, permission) {
                return true;
            }
        }
        false
    }

    #[cold]
    fn permits_slow(&self, role: usize, permission: PermissionId) -> bool {
        let Some(name) = self.symbols.permission_name(permission) else {
            return false;
        };
        match self.role_patterns.get(role) {
            Some(Some(patterns)) => patterns
                .iter()
                .any(|p| grants(p, &name, self.roles_from_system)),
            _ => false,
        }
    }

    /// No read up: the subject's clearance must dominate the object's label.
    #[inline]
    pub fn can_read(&self, subject: &Subject, object: Label) -> bool {
        subject.clearance().dominates(object)
    }

    /// Writes by `mac.write_rule` (default: no write down).
    #[inline]
    pub fn can_write(&self, subject: &Subject, object: Label) -> bool {
        let c = subject.clearance();
        match self.write_rule {
            WriteRule::NoWriteDown => object.dominates(c),
            WriteRule::Equal => object == c,
            WriteRule::Dominates => c.dominates(object),
        }
    }

    /// The limit of a rate class, if the policy configures one.
    #[inline]
    pub fn rate_limit(&self, class: RateClassId) -> Option<RateLimit> {
        if class.0 < self.compiled_classes {
            self.rates.get(class.0 as usize).copied().flatten()
        } else {
            let name = self.symbols.rate_class_name(class)?;
            self.rate_map.get(&*name).copied()
        }
    }

    /// `limits.max_payload_bytes`.
    #[inline]
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload
    }

    /// Whether the schema this snapshot was built under declares `key` (set or not). Hosts use it
    /// to keep their own names (configuration keys, …) from shadowing policy keys.
    pub fn declares(&self, key: &str) -> bool {
        self.schema.get(key).is_some()
    }

    /// The effective value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).map(|(v, _)| v)
    }

    /// Which layer and file set `key`.
    pub fn provenance(&self, key: &str) -> Option<&Provenance> {
        self.values.get(key).map(|(_, p)| p)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        requested: &'static str,
        f: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<T, AccessError> {
        match self.values.get(key) {
            Some((v, _)) => f(v).ok_or_else(|| AccessError::WrongType {
                key: key.to_owned(),
                actual: v.type_name(),
                requested,
            }),
            None if self.schema.get(key).is_some() => Err(AccessError::Unset(key.to_owned())),
            None => Err(AccessError::Unknown(key.to_owned())),
        }
    }

    /// A bool key.
    ///
    /// # Errors
    /// [`AccessError`] when the key is unknown, unset or not a bool.
    pub fn get_bool(&self, key: &str) -> Result<bool, AccessError> {
        self.typed(key, "bool", |v| {
            if let Value::Bool(b) = v {
                Some(*b)
            } else {
                None
            }
        })
    }

    /// An integer key.
    ///
    /// # Errors
    /// As [`get_bool`](Self::get_bool).
    pub fn get_int(&self, key: &str) -> Result<i64, AccessError> {
        self.typed(key, "integer", |v| {
            if let Value::Int(i) = v {
                Some(*i)
            } else {
                None
            }
        })
    }

    /// A float key.
    ///
    /// # Errors
    /// As [`get_bool`](Self::get_bool).
    pub fn get_float(&self, key: &str) -> Result<f64, AccessError> {
        self.typed(key, "float", |v| {
            if let Value::Float(f) = v {
                Some(*f)
            } else {
                None
            }
        })
    }

    /// A string or enum key.
    ///
    /// # Errors
    /// As [`get_bool`](Self::get_bool).
    pub fn get_str(&self, key: &str) -> Result<&str, AccessError> {
        self.typed(key, "string", |v| {
            if let Value::Str(s) = v {
                Some(s.as_str())
            } else {
                None
            }
        })
    }

    /// A duration key.
    ///
    /// # Errors
    /// As [`get_bool`](Self::get_bool).
    pub fn get_duration(&self, key: &str) -> Result<Duration, AccessError> {
        self.typed(key, "duration", |v| {
            if let Value::Duration(d) = v {
                Some(*d)
            } else {
                None
            }
        })
    }

    /// A string-list key.
    ///
    /// # Errors
    /// As [`get_bool`](Self::get_bool).
    pub fn get_strings(&self, key: &str) -> Result<&[String], AccessError> {
        self.typed(key, "string_list", |v| {
            if let Value::Strings(s) = v {
                Some(s.as_slice())
            } else {
                None
            }
        })
    }

    /// A label key, parsed with this snapshot's scheme.
    ///
    /// # Errors
    /// As [`get_bool`](Self::get_bool).
    pub fn get_label(&self, key: &str) -> Result<Label, AccessError> {
        self.typed(key, "label", |v| {
            if let Value::Label(s) = v {
                self.scheme.parse(s).ok()
            } else {
                None
            }
        })
    }

    /// Every effective value with its provenance, as JSON:
    /// `{ "<key>": { "value": …, "layer": "tenant", "file": "tenants/acme.toml" } }`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, (v, p)) in self.values.iter() {
            m.insert(
                k.clone(),
                serde_json::json!({ "value": v, "layer": p.layer, "file": p.file }),
            );
        }
        serde_json::Value::Object(m)
    }

    pub(crate) fn values(&self) -> &Effective {
        &self.values
    }

    /// The effective values, shared (snapshots and the compiled sources hold one copy).
    pub(crate) fn values_shared(&self) -> &Arc<Effective> {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("*", "anything.at.all"));
        assert!(pattern_matches("notes.*", "notes.read"));
        assert!(pattern_matches("notes.*", "notes.a.b"));
        assert!(!pattern_matches("notes.*", "notes"));
        assert!(!pattern_matches("notes.*", "notesx.read"));
        assert!(pattern_matches("notes.read", "notes.read"));
        assert!(!pattern_matches("notes.read", "notes.reads"));
    }

    #[test]
    fn tenant_patterns_never_grant_reserved_permissions() {
        for p in ["*", "system.*", "system.policy.reload", "system.policy.*"] {
            assert!(grants(p, "system.policy.reload", true), "{p}");
            assert!(!grants(p, "system.policy.reload", false), "{p}");
        }
        assert!(grants("*", "policy.reload", false));
        assert!(!grants("notes.*", "system.notes.x", true));
    }
}
