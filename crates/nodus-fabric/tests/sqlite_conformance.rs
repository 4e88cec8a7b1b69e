//! The conformance suite on `SqliteEventLog`, in memory and on file.
#![allow(clippy::unwrap_used)]

mod conformance;

use nodus_fabric::{Durability, SqliteEventLog, TenantEventLog};

#[test]
fn in_memory() {
    conformance::run_all(&|| {
        Box::new(SqliteEventLog::in_memory(conformance::fresh_node()).unwrap())
            as Box<dyn TenantEventLog>
    });
}

#[test]
fn on_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0u32);
    conformance::run_all(&|| {
        n.set(n.get() + 1);
        let path = dir.path().join(format!("fabric-{}.db", n.get()));
        Box::new(
            SqliteEventLog::open(&path, conformance::fresh_node(), Durability::Normal).unwrap(),
        ) as Box<dyn TenantEventLog>
    });
}
