//! Validation and merge: sources → per-layer values → effective values with provenance.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{MAX_REPORTED_PROBLEMS, PolicyError, PolicyErrorKind, PolicyErrors};
use crate::ids::{ActorId, TenantId};
use crate::label::{LabelError, LabelScheme};
use crate::schema::Schema;
use crate::snapshot::is_reserved_permission;
use crate::source::{Doc, PolicySources, Raw, RawKind, TenantSources, parse_doc};
use crate::value::{Layer, Scope, Value, ValueType};

/// Where an effective value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The layer that set it.
    pub layer: Layer,
    /// The file that set it (`None` for schema defaults).
    pub file: Option<String>,
}

/// The values one document sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LayerValues {
    pub(crate) file: String,
    pub(crate) values: BTreeMap<String, Value>,
}

/// Effective values with provenance.
pub(crate) type Effective = BTreeMap<String, (Value, Provenance)>;

/// A validated, merged policy.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    pub(crate) schema: Arc<Schema>,
    pub(crate) scheme: LabelScheme,
    pub(crate) system: LayerValues,
    pub(crate) system_effective: Arc<Effective>,
    pub(crate) tenants: BTreeMap<TenantId, (LayerValues, Arc<Effective>)>,
    pub(crate) users: BTreeMap<(TenantId, ActorId), LayerValues>,
}

struct Ctx<'a> {
    schema: &'a Schema,
    /// The problems listed so far (at most `MAX_REPORTED_PROBLEMS` pushed through `err`).
    errors: Vec<PolicyError>,
    /// Problems found beyond the listed ones: counted, not built.
    unlisted: usize,
}

impl Ctx<'_> {
    fn err(
        &mut self,
        file: &str,
        layer: Layer,
        key: Option<&str>,
        line: Option<u32>,
        kind: PolicyErrorKind,
    ) {
        if self.errors.len() >= MAX_REPORTED_PROBLEMS {
            self.unlisted += 1;
            return;
        }
        self.errors.push(PolicyError {
            file: file.to_owned(),
            layer,
            key: key.map(str::to_owned),
            line,
            kind,
        });
    }

    fn push(&mut self, e: PolicyError) {
        if self.errors.len() >= MAX_REPORTED_PROBLEMS {
            self.unlisted += 1;
        } else {
            self.errors.push(e);
        }
    }

    /// Every problem found, listed or counted.
    fn into_errors(self) -> PolicyErrors {
        PolicyErrors::with_unlisted(self.errors, self.unlisted)
    }

    fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.unlisted == 0
    }

    /// Flattens a document to `(dotted key, raw value)` pairs, reporting unknown keys.
    fn flatten(&mut self, doc: &Doc, layer: Layer) -> Vec<(String, Raw)> {
        let table = match parse_doc(doc, layer) {
            Ok(t) => t,
            Err(e) => {
                self.push(e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        self.walk(doc, layer, "", table, &mut out);
        out
    }

    fn walk(
        &mut self,
        doc: &Doc,
        layer: Layer,
        prefix: &str,
        table: Vec<(String, Raw)>,
        out: &mut Vec<(String, Raw)>,
    ) {
        for (k, raw) in table {
            let path = if prefix.is_empty() {
                k
            } else {
                format!("{prefix}.{k}")
            };
            if self.schema.get(&path).is_some() {
                out.push((path, raw));
                continue;
            }
            let line = raw.line;
            match raw.kind {
                RawKind::Table(inner) if self.schema.is_section(&path) => {
                    self.walk(doc, layer, &path, inner, out);
                }
                _ => {
                    // Suggestions cost a pass over the schema: only for problems that are listed.
                    let hint = if self.errors.len() < MAX_REPORTED_PROBLEMS {
                        self.schema.suggest(&path)
                    } else {
                        None
                    };
                    self.err(
                        &doc.file,
                        layer,
                        Some(&path),
                        Some(line),
                        PolicyErrorKind::UnknownKey(hint),
                    );
                }
            }
        }
    }

    /// Checks scope and type of every pair of a layer; returns the values that passed.
    fn check_layer(
        &mut self,
        doc: &Doc,
        layer: Layer,
        pairs: &[(String, Raw)],
        scheme: Option<&LabelScheme>,
        locked: &[String],
    ) -> LayerValues {
        let mut values = BTreeMap::new();
        for (key, raw) in pairs {
            let Some(spec) = self.schema.get(key) else {
                continue;
            };
            if !spec.scope.allows(layer) {
                self.err(
                    &doc.file,
                    layer,
                    Some(key),
                    Some(raw.line),
                    PolicyErrorKind::AboveScope { scope: spec.scope },
                );
                continue;
            }
            if layer == Layer::User && locked.iter().any(|l| l == key) {
                self.err(
                    &doc.file,
                    layer,
                    Some(key),
                    Some(raw.line),
                    PolicyErrorKind::Locked,
                );
                continue;
            }
            if layer != Layer::System && spec.ty == ValueType::RoleMap {
                self.check_reserved(doc, layer, key, raw);
            }
            match spec.check(raw, scheme) {
                Ok(v) => {
                    values.insert(key.clone(), v);
                }
                Err(kind) => self.err(&doc.file, layer, Some(key), Some(raw.line), kind),
            }
        }
        LayerValues {
            file: doc.file.clone(),
            values,
        }
    }
}

impl Ctx<'_> {
    /// A tenant or user layer's role map may not name a reserved permission: one error per
    /// pattern, at the pattern's line.
    fn check_reserved(&mut self, doc: &Doc, layer: Layer, key: &str, raw: &Raw) {
        let RawKind::Table(roles) = &raw.kind else {
            return;
        };
        for (role, perms) in roles {
            let RawKind::Array(items) = &perms.kind else {
                continue;
            };
            for item in items {
                if let RawKind::Str(p) = &item.kind
                    && is_reserved_permission(p)
                {
                    self.err(
                        &doc.file,
                        layer,
                        Some(key),
                        Some(item.line),
                        PolicyErrorKind::ReservedPermission {
                            role: role.clone(),
                            pattern: p.clone(),
                        },
                    );
                }
            }
        }
    }
}

pub(crate) fn overlay(base: &Effective, layer: Layer, values: &LayerValues) -> Effective {
    let mut out = base.clone();
    for (k, v) in &values.values {
        out.insert(
            k.clone(),
            (
                v.clone(),
                Provenance {
                    layer,
                    file: Some(values.file.clone()),
                },
            ),
        );
    }
    out
}

fn strings_of(e: &Effective, key: &str) -> Vec<String> {
    match e.get(key) {
        Some((Value::Strings(v), _)) => v.clone(),
        _ => Vec::new(),
    }
}

/// Validates everything and merges the layers. Every problem is reported.
pub(crate) fn compile(sources: &PolicySources) -> Result<Compiled, PolicyErrors> {
    let mut schema = Schema::builtin();
    let mut errors = sources.read_errors.clone();
    for doc in &sources.schema {
        schema.extend(doc, false, &mut errors);
    }
    let mut cx = Ctx {
        schema: &schema,
        errors,
        unlisted: 0,
    };
    let empty = Doc {
        file: "system.toml".into(),
        text: String::new(),
    };
    let system_doc = sources.system.as_ref().unwrap_or(&empty);

    // System layer first: it defines the label scheme every label is checked against.
    let system_pairs = cx.flatten(system_doc, Layer::System);
    let unlabelled = cx.check_layer(system_doc, Layer::System, &system_pairs, None, &[]);
    let mut defaults: Effective = BTreeMap::new();
    for (k, v) in cx.schema.defaults() {
        defaults.insert(
            k.clone(),
            (
                v.clone(),
                Provenance {
                    layer: Layer::Default,
                    file: None,
                },
            ),
        );
    }
    let pre = overlay(&defaults, Layer::System, &unlabelled);
    // A `mac.levels` or `mac.compartments` the system layer set but that failed its own check
    // (wrong type, too many entries) is already reported: the scheme is then unknown.
    let mac_failed = system_pairs.iter().any(|(k, _)| {
        (k == "mac.levels" || k == "mac.compartments") && !unlabelled.values.contains_key(k)
    });
    let (scheme, scheme_ok) = if mac_failed {
        (LabelScheme::default(), false)
    } else {
        label_scheme(&mut cx, system_doc, &system_pairs, &pre)
    };
    // Under an invalid scheme (reported once, at its key) labels are only type-checked: checking
    // them against a stand-in scheme would report every label of every file again.
    let checked_scheme = scheme_ok.then_some(&scheme);
    // Labels are checked now that the scheme is known. Only labels that passed the first pass are
    // checked again: a problem the first pass found is already reported, once.
    let label_pairs: Vec<(String, Raw)> = system_pairs
        .iter()
        .filter(|(k, _)| {
            unlabelled.values.contains_key(k)
                && cx.schema.get(k).is_some_and(|s| s.ty == ValueType::Label)
        })
        .cloned()
        .collect();
    let labelled = cx.check_layer(system_doc, Layer::System, &label_pairs, checked_scheme, &[]);
    let mut system = unlabelled;
    system.values.retain(|k, _| {
        !labelled.values.contains_key(k)
            && cx.schema.get(k).is_some_and(|s| s.ty != ValueType::Label)
    });
    system.values.extend(labelled.values);
    check_locks(&mut cx, system_doc, Layer::System, &system_pairs);
    let system_effective = overlay(&defaults, Layer::System, &system);

    let mut tenants = BTreeMap::new();
    let mut users = BTreeMap::new();
    // A base that could not be read is reported on its own: checking every tenant and user against
    // a schema or system layer that is not the real one would bury it under follow-on errors.
    let (tenant_docs, user_docs) = if sources.base_unreadable {
        (&[][..], &[][..])
    } else {
        (&sources.tenants[..], &sources.users[..])
    };
    for (tenant, doc) in tenant_docs {
        let entry = check_tenant(&mut cx, doc, checked_scheme, &system_effective);
        tenants.insert(tenant.clone(), entry);
    }
    for (tenant, actor, doc) in user_docs {
        if sources.unreadable_tenants.contains(tenant) {
            // The tenant file's own error says it all; its users are checked once it reads.
            continue;
        }
        let Some((_, tenant_eff)) = tenants.get(tenant) else {
            cx.err(
                &doc.file,
                Layer::User,
                None,
                None,
                PolicyErrorKind::UnknownTenant(tenant.to_string()),
            );
            continue;
        };
        let values = check_user(&mut cx, doc, checked_scheme, tenant_eff);
        users.insert((tenant.clone(), actor.clone()), values);
    }

    if !cx.is_clean() {
        return Err(cx.into_errors());
    }
    Ok(Compiled {
        schema: Arc::new(schema),
        scheme,
        system,
        system_effective: Arc::new(system_effective),
        tenants,
        users,
    })
}

/// The label scheme from `mac.levels` and `mac.compartments` (defaults ⊕ the system layer,
/// `pre`). A problem names the key at fault, at its line: `mac.levels` for the levels,
/// `mac.compartments` for the compartments (a duplicate of a level name included). A scheme under
/// which a label default of the schema does not parse is an error too: at the system layer's
/// `mac.*` key when the system layer sets the scheme, at the schema's key otherwise. Returns the
/// scheme and whether it is valid (an invalid one is reported and replaced by the classic one).
fn label_scheme(
    cx: &mut Ctx<'_>,
    doc: &Doc,
    pairs: &[(String, Raw)],
    pre: &Effective,
) -> (LabelScheme, bool) {
    let line_of = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, r)| r.line);
    let levels = strings_of(pre, "mac.levels");
    let compartments = strings_of(pre, "mac.compartments");
    let no_compartments: [&str; 0] = [];
    let scheme = LabelScheme::new(&levels, no_compartments)
        .map_err(|e| ("mac.levels", e))
        .and_then(|_| {
            LabelScheme::new(&levels, &compartments).map_err(|e| ("mac.compartments", e))
        });
    let scheme = match scheme {
        Ok(s) => s,
        Err((key, e)) => {
            cx.err(
                &doc.file,
                Layer::System,
                Some(key),
                line_of(key),
                PolicyErrorKind::InvalidLabel(e.to_string()),
            );
            return (LabelScheme::default(), false);
        }
    };
    let schema = cx.schema;
    for spec in schema.keys() {
        let (ValueType::Label, Some(Value::Label(d))) = (spec.ty, &spec.default) else {
            continue;
        };
        let Err(e) = scheme.parse(d) else {
            continue;
        };
        let declared = schema.file_of(&spec.key).unwrap_or("the built-in schema");
        let at_fault = match e {
            LabelError::UnknownCompartment(_) => ["mac.compartments", "mac.levels"],
            _ => ["mac.levels", "mac.compartments"],
        }
        .into_iter()
        .find_map(|k| line_of(k).map(|l| (k, l)));
        match at_fault {
            Some((key, line)) => cx.err(
                &doc.file,
                Layer::System,
                Some(key),
                Some(line),
                PolicyErrorKind::InvalidLabel(format!(
                    "the default `{d}` of `{}` (declared in {declared}) does not parse under this scheme: {e}",
                    spec.key
                )),
            ),
            None => cx.err(
                declared,
                Layer::Default,
                Some(&spec.key),
                schema.line_of(&spec.key),
                PolicyErrorKind::InvalidSchema(format!(
                    "invalid default: invalid label: `{d}`: {e} (under the default label scheme)"
                )),
            ),
        }
    }
    (scheme, true)
}

/// Validates a tenant document against the system layer: its values and its effective policy.
fn check_tenant(
    cx: &mut Ctx<'_>,
    doc: &Doc,
    scheme: Option<&LabelScheme>,
    system_effective: &Effective,
) -> (LayerValues, Arc<Effective>) {
    let pairs = cx.flatten(doc, Layer::Tenant);
    let values = cx.check_layer(doc, Layer::Tenant, &pairs, scheme, &[]);
    check_locks(cx, doc, Layer::Tenant, &pairs);
    let effective = overlay(system_effective, Layer::Tenant, &values);
    (values, Arc::new(effective))
}

/// Validates a user document against its tenant's effective policy (and its locks).
fn check_user(
    cx: &mut Ctx<'_>,
    doc: &Doc,
    scheme: Option<&LabelScheme>,
    tenant_effective: &Effective,
) -> LayerValues {
    let locked = strings_of(tenant_effective, "policy.lock");
    let pairs = cx.flatten(doc, Layer::User);
    cx.check_layer(doc, Layer::User, &pairs, scheme, &locked)
}

/// One tenant's layer, validated and merged against an already compiled policy's schema, label
/// scheme and system layer.
pub(crate) struct CompiledTenant {
    pub(crate) values: LayerValues,
    pub(crate) effective: Arc<Effective>,
    pub(crate) users: BTreeMap<ActorId, LayerValues>,
}

/// Validates one tenant's documents against `base` (the loaded schema, label scheme and system
/// layer). Only these documents' problems are reported; a tenant file that could not be read is
/// reported alone (its users are not checked against a tenant layer that does not exist).
pub(crate) fn compile_tenant(
    base: &Compiled,
    sources: &TenantSources,
) -> Result<CompiledTenant, PolicyErrors> {
    let mut cx = Ctx {
        schema: &base.schema,
        errors: sources.read_errors.clone(),
        unlisted: 0,
    };
    let Some(doc) = &sources.doc else {
        return Err(cx.into_errors());
    };
    let (values, effective) =
        check_tenant(&mut cx, doc, Some(&base.scheme), &base.system_effective);
    let mut users = BTreeMap::new();
    for (actor, udoc) in &sources.users {
        let v = check_user(&mut cx, udoc, Some(&base.scheme), &effective);
        users.insert(actor.clone(), v);
    }
    if !cx.is_clean() {
        return Err(cx.into_errors());
    }
    Ok(CompiledTenant {
        values,
        effective,
        users,
    })
}

/// `policy.lock` may only name user-scoped keys.
fn check_locks(cx: &mut Ctx<'_>, doc: &Doc, layer: Layer, pairs: &[(String, Raw)]) {
    for (key, raw) in pairs {
        if key != "policy.lock" {
            continue;
        }
        let RawKind::Array(items) = &raw.kind else {
            continue;
        };
        for item in items {
            let RawKind::Str(locked) = &item.kind else {
                continue;
            };
            let reason = match cx.schema.get(locked) {
                None => Some("no such key".to_owned()),
                Some(s) if s.scope != Scope::User => Some(format!(
                    "its scope is `{}`, only user-scoped keys can be locked",
                    s.scope
                )),
                Some(_) => None,
            };
            if let Some(reason) = reason {
                cx.err(
                    &doc.file,
                    layer,
                    Some(key),
                    Some(item.line),
                    PolicyErrorKind::BadLock {
                        key: locked.clone(),
                        reason,
                    },
                );
            }
        }
    }
}
