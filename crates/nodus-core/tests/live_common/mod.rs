//! Helpers for the live sync tests: nodes on one transport, trusted pairwise, compared through
//! the public commands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::path::Path;
use std::time::{Duration, Instant};

use nodus_core::security::audit::StoredRecord;
use nodus_core::sync::DiffTransport;
use nodus_core::{Context, LiveSyncOptions, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};

pub const SYSTEM: &str = r#"
[audit]
durability = "normal"
checkpoint_every = 256
checkpoint_interval = "50ms"
"#;

pub const TENANT: &str = r#"
[rbac.roles]
admin = ["*"]

[rate.limits]
default = { rate = 100000, per = "1s", burst = 100000 }
admin = { rate = 100000, per = "1s", burst = 100000 }
"#;

pub fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

pub fn options() -> LiveSyncOptions {
    LiveSyncOptions {
        status_every: Duration::from_millis(100),
        resend_after: Duration::from_millis(300),
        retry_after: Duration::from_millis(50),
        ..LiveSyncOptions::default()
    }
}

pub fn node(dir: &Path, seed: u8, transport: impl DiffTransport + 'static) -> Nodus {
    Nodus::builder()
        .data_dir(dir)
        .master_key(MasterKey::from_bytes([seed; 32]))
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant(), "tenants/acme.toml", TENANT),
        )
        .sync(transport)
        .live_sync_options(options())
        .build()
        .unwrap()
}

/// Every node trusts every other for the tenant.
pub fn trust_all(nodes: &[&Nodus]) {
    for a in nodes {
        for b in nodes {
            if a.node().node_id != b.node().node_id {
                a.sync()
                    .trust_peer(&b.sync().keys().unwrap(), &[tenant()])
                    .unwrap();
            }
        }
    }
}

pub fn ctx(n: &Nodus) -> Context {
    let s = n
        .subject(
            &tenant(),
            nodus_core::ActorId::new("alice").unwrap(),
            &["admin"],
            "UNCLASSIFIED",
        )
        .unwrap();
    n.context(&tenant(), s, "s1")
}

pub fn call(n: &Nodus, cmd: &str, input: Value) -> Result<Value, String> {
    n.dispatch(&ctx(n), cmd, &input.to_string())
        .map_err(|e| format!("{}: {e}", e.code()))
}

pub fn ok(n: &Nodus, cmd: &str, input: Value) -> Value {
    call(n, cmd, input.clone()).unwrap_or_else(|e| panic!("{cmd} {input}: {e}"))
}

pub fn define_case(n: &Nodus) {
    ok(
        n,
        "types.define",
        json!({"name": "case", "schema": {"type": "object", "properties": {
            "title": {"type": "string"}, "n": {"type": "integer"}, "by": {"type": "string"}}}}),
    );
}

/// What a host sees of the tenant: every object as `objects.list` and `objects.get` return it.
pub fn view(n: &Nodus) -> Value {
    let list = match call(
        n,
        "objects.list",
        json!({"type_name": "case", "filter": [], "sort": null, "limit": 500, "cursor": null}),
    ) {
        Ok(v) => v,
        Err(_) => return Value::Null,
    };
    let mut objects = Vec::new();
    if let Some(items) = list["items"].as_array() {
        for o in items {
            let id = o["id"].as_str().unwrap_or_default();
            objects.push(
                call(n, "objects.get", json!({"type": "case", "id": id})).unwrap_or(Value::Null),
            );
        }
    }
    json!({"list": list, "objects": objects})
}

/// Waits until `cond` holds, up to `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Waits until every node shows the same objects, with nothing pending and no peer behind.
pub fn converged(nodes: &[&Nodus], limit: Duration) -> bool {
    wait_until(limit, || {
        let views: Vec<Value> = nodes.iter().map(|n| view(n)).collect();
        let same = views.windows(2).all(|w| w[0] == w[1]) && views[0] != Value::Null;
        same && nodes.iter().all(|n| {
            let s = n.live_sync_status(&tenant()).unwrap();
            s.pending == 0 && s.peers.iter().all(|p| p.lag == 0)
        })
    })
}

pub fn audit_records(n: &Nodus) -> Vec<StoredRecord> {
    n.flush_audit().unwrap();
    let size = n.audit_log().size().unwrap();
    n.audit_log().tail(size as usize).unwrap()
}
