//! Shared fixtures for the objects tests: a policy, subjects, fabrics.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use nodus_fabric::{Fabric, NodeId, SqliteEventLog};
use nodus_policy::{ActorId, PolicySnapshot, PolicySources, PolicyStore, Subject, TenantId};
use serde_json::{Value, json};

pub const SYSTEM: &str = r#"
[mac]
compartments = ["CRYPTO", "NOFORN"]
"#;

pub const TENANT: &str = r#"
[rbac.roles]
user = ["objects.*"]
"#;

pub fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

pub fn snapshot() -> Arc<PolicySnapshot> {
    let store = PolicyStore::new(
        PolicySources::new()
            .with_system("system.toml", SYSTEM)
            .with_tenant(tenant(), "tenants/acme.toml", TENANT),
    )
    .unwrap();
    store.snapshot(&tenant()).unwrap()
}

pub fn subject(snap: &PolicySnapshot, actor: &str, clearance: &str) -> Subject {
    let scheme = snap.label_scheme();
    Subject::new(
        tenant(),
        ActorId::new(actor).unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        scheme.parse(clearance).unwrap(),
        scheme,
    )
}

pub fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

pub fn fabric(n: u8) -> Fabric {
    Fabric::new(Arc::new(SqliteEventLog::in_memory(node(n)).unwrap())).unwrap()
}

pub fn note_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 50},
            "n": {"type": "number"},
            "tag": {"type": ["string", "number", "boolean", "null"]},
            "body": {"type": "string"},
            "secret": {"type": "string"},
            "codeword": {"type": "string"}
        },
        "required": ["title"]
    })
}

pub fn note_fields() -> Value {
    json!({
        "title": {"indexed": true},
        "n": {"indexed": true},
        "tag": {"indexed": true},
        "secret": {"encrypted": true},
        "codeword": {"indexed": true, "classification": "SECRET"}
    })
}

pub fn with_note(f: &Fabric, snap: &PolicySnapshot) {
    f.define_type(&tenant(), snap, "note", note_schema(), note_fields())
        .unwrap();
}
