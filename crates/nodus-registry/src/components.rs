//! The UI component registry: components the host registers, shown to a tenant only when its policy
//! (`ui.allowed_components`) allows them.
//!
//! A [`ComponentSpec`] is metadata: id, category and a JSON Schema for its props (kept as metadata;
//! props are not validated here). [`ComponentRegistry::revalidate`] applies a tenant's (new) policy:
//! components it no longer allows are quarantined for that tenant — kept, hidden, listed for an
//! admin — and ones allowed again are reinstated.
//!
//! ```
//! use nodus_policy::TenantId;
//! use nodus_registry::components::{ComponentRegistry, ComponentSpec};
//!
//! let ui = ComponentRegistry::new();
//! ui.register(ComponentSpec::new("note-editor", "editor", serde_json::json!({"type": "object"}))).unwrap();
//! ui.register(ComponentSpec::new("admin-panel", "admin", serde_json::json!({}))).unwrap();
//! let acme = TenantId::new("acme").unwrap();
//! let changes = ui.revalidate(&acme, &|id: &str| id == "note-editor");
//! assert_eq!(changes.len(), 1); // admin-panel quarantined for acme
//! assert_eq!(ui.visible(&acme).len(), 1);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use nodus_policy::TenantId;
use parking_lot::Mutex;
use serde::Serialize;

/// A UI component's declaration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentSpec {
    /// Id: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
    pub id: String,
    /// Category (e.g. `editor`, `viewer`, `admin`).
    pub category: String,
    /// JSON Schema of its props (a JSON object).
    pub props_schema: serde_json::Value,
}

impl ComponentSpec {
    /// A spec.
    pub fn new(id: &str, category: &str, props_schema: serde_json::Value) -> Self {
        ComponentSpec {
            id: id.to_owned(),
            category: category.to_owned(),
            props_schema,
        }
    }
}

/// Why a component could not be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// Invalid id.
    #[error("invalid component id `{0}`: use `[a-z0-9][a-z0-9._-]*`, at most 64 bytes")]
    InvalidId(String),
    /// Empty category.
    #[error("component `{0}` has an empty category")]
    EmptyCategory(String),
    /// The props schema is not a JSON object.
    #[error("component `{0}`: its props schema must be a JSON object")]
    SchemaNotObject(String),
    /// Another component has this id.
    #[error("component `{0}` is already registered")]
    Duplicate(String),
}

/// A component whose visibility for a tenant changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentChange {
    /// The tenant.
    pub tenant: TenantId,
    /// The component.
    pub component: String,
    /// `true`: quarantined (hidden); `false`: reinstated.
    pub quarantined: bool,
}

#[derive(Clone, Default)]
struct State {
    specs: BTreeMap<String, Arc<ComponentSpec>>,
    /// Per tenant: the components its policy allows (absent tenant = not yet revalidated = none).
    allowed: BTreeMap<TenantId, BTreeSet<String>>,
}

/// The component registry. Reads never lock; writes swap a new state.
pub struct ComponentRegistry {
    state: ArcSwap<State>,
    write: Mutex<()>,
}

impl std::fmt::Debug for ComponentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRegistry")
            .field("components", &self.state.load().specs.len())
            .finish()
    }
}

impl Default for ComponentRegistry {
    fn default() -> Self {
        Self::new()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

impl ComponentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        ComponentRegistry {
            state: ArcSwap::from_pointee(State::default()),
            write: Mutex::new(()),
        }
    }

    /// Registers a component (hidden from every tenant until a revalidation allows it).
    ///
    /// # Errors
    /// [`ComponentError`].
    pub fn register(&self, spec: ComponentSpec) -> Result<(), ComponentError> {
        if !valid_id(&spec.id) {
            return Err(ComponentError::InvalidId(spec.id));
        }
        if spec.category.trim().is_empty() {
            return Err(ComponentError::EmptyCategory(spec.id));
        }
        if !spec.props_schema.is_object() {
            return Err(ComponentError::SchemaNotObject(spec.id));
        }
        let _w = self.write.lock();
        let mut s = State::clone(&self.state.load());
        if s.specs.contains_key(&spec.id) {
            return Err(ComponentError::Duplicate(spec.id));
        }
        s.specs.insert(spec.id.clone(), Arc::new(spec));
        self.state.store(Arc::new(s));
        Ok(())
    }

    /// Applies a tenant's policy: returns the components quarantined or reinstated for it.
    pub fn revalidate(
        &self,
        tenant: &TenantId,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Vec<ComponentChange> {
        let _w = self.write.lock();
        let mut s = State::clone(&self.state.load());
        let before = s.allowed.get(tenant).cloned();
        let now: BTreeSet<String> = s.specs.keys().filter(|id| allowed(id)).cloned().collect();
        let mut changes = Vec::new();
        for id in s.specs.keys() {
            let was = before.as_ref().is_some_and(|b| b.contains(id));
            let is = now.contains(id);
            // A first revalidation reports only what is hidden; later ones report every change.
            if was != is && (before.is_some() || !is) {
                changes.push(ComponentChange {
                    tenant: tenant.clone(),
                    component: id.clone(),
                    quarantined: !is,
                });
            } else if before.is_none() && !is {
                changes.push(ComponentChange {
                    tenant: tenant.clone(),
                    component: id.clone(),
                    quarantined: true,
                });
            }
        }
        s.allowed.insert(tenant.clone(), now);
        self.state.store(Arc::new(s));
        changes
    }

    /// `true` when `tenant` may show component `id`.
    pub fn is_allowed(&self, tenant: &TenantId, id: &str) -> bool {
        self.state
            .load()
            .allowed
            .get(tenant)
            .is_some_and(|a| a.contains(id))
    }

    /// The components `tenant` may show.
    pub fn visible(&self, tenant: &TenantId) -> Vec<ComponentSpec> {
        let s = self.state.load();
        let Some(allowed) = s.allowed.get(tenant) else {
            return Vec::new();
        };
        allowed
            .iter()
            .filter_map(|id| s.specs.get(id))
            .map(|c| ComponentSpec::clone(c))
            .collect()
    }

    /// The components hidden from `tenant` by its policy (for an admin).
    pub fn quarantined(&self, tenant: &TenantId) -> Vec<String> {
        let s = self.state.load();
        let allowed = s.allowed.get(tenant);
        s.specs
            .keys()
            .filter(|id| !allowed.is_some_and(|a| a.contains(*id)))
            .cloned()
            .collect()
    }

    /// Tenants whose visibility has been set by a revalidation (so that a caller revalidating
    /// after a reload can include tenants the new policy no longer has).
    pub fn tenants(&self) -> Vec<TenantId> {
        self.state.load().allowed.keys().cloned().collect()
    }

    /// Every registered component.
    pub fn all(&self) -> Vec<ComponentSpec> {
        self.state
            .load()
            .specs
            .values()
            .map(|c| ComponentSpec::clone(c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn registration_is_validated() {
        let r = ComponentRegistry::new();
        r.register(ComponentSpec::new("note-editor", "editor", json!({})))
            .unwrap();
        assert_eq!(
            r.register(ComponentSpec::new("note-editor", "x", json!({}))),
            Err(ComponentError::Duplicate("note-editor".into()))
        );
        assert!(matches!(
            r.register(ComponentSpec::new("Bad Id", "x", json!({}))),
            Err(ComponentError::InvalidId(_))
        ));
        assert!(matches!(
            r.register(ComponentSpec::new("a", " ", json!({}))),
            Err(ComponentError::EmptyCategory(_))
        ));
        assert!(matches!(
            r.register(ComponentSpec::new("b", "x", json!([1]))),
            Err(ComponentError::SchemaNotObject(_))
        ));
    }

    #[test]
    fn tenants_see_only_what_their_policy_allows() {
        let r = ComponentRegistry::new();
        for id in ["a", "b", "c"] {
            r.register(ComponentSpec::new(id, "x", json!({}))).unwrap();
        }
        assert!(
            r.visible(&t("acme")).is_empty(),
            "nothing is visible before a policy allows it"
        );
        let changes = r.revalidate(&t("acme"), &|id: &str| id != "c");
        assert_eq!(
            changes,
            vec![ComponentChange {
                tenant: t("acme"),
                component: "c".into(),
                quarantined: true
            }]
        );
        assert!(r.is_allowed(&t("acme"), "a") && !r.is_allowed(&t("acme"), "c"));
        assert!(!r.is_allowed(&t("globex"), "a"));
        assert_eq!(r.quarantined(&t("acme")), vec!["c".to_string()]);
        let changes = r.revalidate(&t("acme"), &|id: &str| id == "c");
        assert_eq!(changes.len(), 3);
        assert_eq!(
            r.visible(&t("acme"))
                .iter()
                .map(|c| c.id.clone())
                .collect::<Vec<_>>(),
            vec!["c".to_string()]
        );
        assert_eq!(r.all().len(), 3);
        assert_eq!(r.tenants(), vec![t("acme")]);
    }

    #[test]
    fn a_tenant_revalidated_with_nothing_allowed_sees_nothing() {
        let r = ComponentRegistry::new();
        for id in ["a", "b"] {
            r.register(ComponentSpec::new(id, "x", json!({}))).unwrap();
        }
        r.revalidate(&t("gone"), &|_: &str| true);
        assert_eq!(r.visible(&t("gone")).len(), 2);
        // What a caller does for a tenant its new policy no longer has.
        let changes = r.revalidate(&t("gone"), &|_: &str| false);
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.quarantined));
        assert!(r.visible(&t("gone")).is_empty());
        assert_eq!(
            r.quarantined(&t("gone")),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
