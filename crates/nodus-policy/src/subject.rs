//! Subjects, roles and permissions, interned to dense ids.
//!
//! Decisions on the hot path never hash a string: role names, permission names and rate classes
//! are interned once (when a session starts, when a command is registered) into dense ids by a
//! [`Symbols`] table that a `PolicyStore` owns. The table is append-only, so an id stays valid
//! across policy reloads; a snapshot compiles each role's permissions into a [`PermissionSet`]
//! bitset indexed by [`PermissionId`].
//!
//! ```
//! use nodus_policy::{ActorId, Label, LabelScheme, Subject, Symbols, TenantId};
//! let symbols = Symbols::default();
//! let roles = symbols.role_set(["editor", "viewer"]);
//! let scheme = LabelScheme::classic();
//! let acme = TenantId::new("acme").unwrap();
//! let alice = Subject::new(acme, ActorId::new("alice").unwrap(), roles, Label::BOTTOM, &scheme);
//! assert_eq!(alice.roles().len(), 2);
//! assert_eq!(&*symbols.role_name(alice.roles().ids()[0]).unwrap(), "editor");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::{ActorId, Label, LabelScheme, SchemeId, TenantId};

/// A dense, append-only string interner. Interning takes a write lock; looking a name up by id
/// takes a read lock. Neither happens on the decision path.
#[derive(Default)]
pub struct Interner {
    inner: RwLock<InternerInner>,
}

#[derive(Default)]
struct InternerInner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl fmt::Debug for Interner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interner")
            .field("len", &self.len())
            .finish()
    }
}

impl Interner {
    /// The id of `name`, interning it if new.
    pub fn intern(&self, name: &str) -> u32 {
        if let Some(id) = self.get(name) {
            return id;
        }
        let mut inner = self.inner.write();
        if let Some(&id) = inner.ids.get(name) {
            return id;
        }
        // More than u32::MAX distinct names cannot fit in memory; saturate rather than panic.
        let id = u32::try_from(inner.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(name);
        inner.names.push(name.clone());
        inner.ids.insert(name, id);
        id
    }

    /// The id of `name` if it was interned.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.inner.read().ids.get(name).copied()
    }

    /// The name behind `id`.
    pub fn name(&self, id: u32) -> Option<Arc<str>> {
        self.inner.read().names.get(id as usize).cloned()
    }

    /// How many names are interned (ids are `0..len`).
    pub fn len(&self) -> usize {
        self.inner.read().names.len()
    }

    /// `true` when nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of all names, in id order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.inner.read().names.clone()
    }
}

/// A role, interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleId(pub u32);

/// A permission (a command's required permission, e.g. `notes.create`), interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PermissionId(pub u32);

/// A rate class (e.g. `default`, `expensive`), interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateClassId(pub u32);

/// The interning tables a policy store and everything that decides against it share.
#[derive(Debug, Default)]
pub struct Symbols {
    roles: Interner,
    permissions: Interner,
    rate_classes: Interner,
}

impl Symbols {
    /// Interns a role name.
    pub fn role(&self, name: &str) -> RoleId {
        RoleId(self.roles.intern(name))
    }

    /// Interns a set of role names (duplicates collapse).
    pub fn role_set<I>(&self, names: I) -> RoleSet
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        RoleSet::from_ids(names.into_iter().map(|n| self.role(n.as_ref())))
    }

    /// Interns a permission name.
    pub fn permission(&self, name: &str) -> PermissionId {
        PermissionId(self.permissions.intern(name))
    }

    /// Interns a rate class name.
    pub fn rate_class(&self, name: &str) -> RateClassId {
        RateClassId(self.rate_classes.intern(name))
    }

    /// The name of a role.
    pub fn role_name(&self, id: RoleId) -> Option<Arc<str>> {
        self.roles.name(id.0)
    }

    /// The name of a permission.
    pub fn permission_name(&self, id: PermissionId) -> Option<Arc<str>> {
        self.permissions.name(id.0)
    }

    /// The name of a rate class.
    pub fn rate_class_name(&self, id: RateClassId) -> Option<Arc<str>> {
        self.rate_classes.name(id.0)
    }

    /// The role table.
    pub fn roles(&self) -> &Interner {
        &self.roles
    }

    /// The permission table.
    pub fn permissions(&self) -> &Interner {
        &self.permissions
    }

    /// The rate class table.
    pub fn rate_classes(&self) -> &Interner {
        &self.rate_classes
    }
}

/// A subject's roles: a small sorted set of [`RoleId`]s. Cloning never allocates.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RoleSet(Arc<[RoleId]>);

impl RoleSet {
    /// A set from ids (sorted, duplicates removed).
    pub fn from_ids(ids: impl IntoIterator<Item = RoleId>) -> Self {
        let mut v: Vec<RoleId> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        RoleSet(Arc::from(v))
    }

    /// The ids, sorted.
    pub fn ids(&self) -> &[RoleId] {
        &self.0
    }

    /// Number of roles.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` when the subject has no role.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `true` when the set holds `role`.
    pub fn contains(&self, role: RoleId) -> bool {
        self.0.binary_search(&role).is_ok()
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter().map(|r| r.0)).finish()
    }
}

/// A set of permissions as a bitset indexed by [`PermissionId`].
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet(Box<[u64]>);

impl PermissionSet {
    /// An empty set able to hold ids below `capacity` without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        PermissionSet(vec![0u64; capacity.div_ceil(64)].into_boxed_slice())
    }

    /// Adds a permission, growing the set if needed.
    pub fn insert(&mut self, p: PermissionId) {
        let word = (p.0 / 64) as usize;
        if word >= self.0.len() {
            let mut v = std::mem::take(&mut self.0).into_vec();
            v.resize(word + 1, 0);
            self.0 = v.into_boxed_slice();
        }
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1u64 << (p.0 % 64);
        }
    }

    /// `true` when the set holds `p`.
    #[inline]
    pub fn contains(&self, p: PermissionId) -> bool {
        match self.0.get((p.0 / 64) as usize) {
            Some(w) => w & (1u64 << (p.0 % 64)) != 0,
            None => false,
        }
    }

    /// Adds every permission of `other`.
    pub fn union_with(&mut self, other: &PermissionSet) {
        if other.0.len() > self.0.len() {
            let mut v = std::mem::take(&mut self.0).into_vec();
            v.resize(other.0.len(), 0);
            self.0 = v.into_boxed_slice();
        }
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }

    /// The ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = PermissionId> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            (0..64u32)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| PermissionId(i as u32 * 64 + b))
        })
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|p| p.0)).finish()
    }
}

/// Who is acting: an actor of one tenant, their roles within that tenant and their clearance.
///
/// A subject belongs to the tenant it was made for: a decision for another tenant refuses it
/// (`TenantMismatch`) instead of evaluating its role names against that tenant's roles. Its
/// clearance is interned under one label scheme, whose [`SchemeId`] it records: after the scheme
/// changes (a level renamed, reordered, added or removed) the subject is stale and must be made
/// again; it is never reinterpreted under the new names.
///
/// Build one per session (interning role names once) and reuse it for every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    tenant: TenantId,
    actor: ActorId,
    roles: RoleSet,
    clearance: Label,
    scheme: SchemeId,
}

impl Subject {
    /// A subject of `tenant` with `roles` and a `clearance` parsed under `scheme`.
    pub fn new(
        tenant: TenantId,
        actor: ActorId,
        roles: RoleSet,
        clearance: Label,
        scheme: &LabelScheme,
    ) -> Self {
        Subject {
            tenant,
            actor,
            roles,
            clearance,
            scheme: scheme.id(),
        }
    }

    /// The tenant this subject belongs to.
    #[inline]
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The label scheme the clearance was interned under.
    #[inline]
    pub fn scheme(&self) -> SchemeId {
        self.scheme
    }

    /// The actor.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The subject's roles.
    pub fn roles(&self) -> &RoleSet {
        &self.roles
    }

    /// The subject's clearance label.
    pub fn clearance(&self) -> Label {
        self.clearance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_is_dense_and_stable() {
        let i = Interner::default();
        assert_eq!(i.intern("a"), 0);
        assert_eq!(i.intern("b"), 1);
        assert_eq!(i.intern("a"), 0);
        assert_eq!(i.get("c"), None);
        assert_eq!(&*i.name(1).unwrap(), "b");
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn permission_set_grows_and_answers() {
        let mut s = PermissionSet::with_capacity(10);
        s.insert(PermissionId(3));
        s.insert(PermissionId(200));
        assert!(s.contains(PermissionId(3)));
        assert!(s.contains(PermissionId(200)));
        assert!(!s.contains(PermissionId(4)));
        assert!(!s.contains(PermissionId(10_000)));
        let mut t = PermissionSet::default();
        t.union_with(&s);
        assert_eq!(t.iter().map(|p| p.0).collect::<Vec<_>>(), vec![3, 200]);
    }

    #[test]
    fn role_set_sorts_and_dedups() {
        let sy = Symbols::default();
        let s = sy.role_set(["b", "a", "b"]);
        assert_eq!(s.len(), 2);
        assert!(s.contains(sy.role("a")));
        assert!(!s.contains(sy.role("z")));
    }
}
