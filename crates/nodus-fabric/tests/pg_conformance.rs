//! The conformance suite on `PgEventLog`: every log in a fresh random schema of the database at
//! `NODUS_PG_URL` (skipped, with a message, when it is not set), dropped at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;
mod pg_common;

use nodus_fabric::{Durability, PgEventLog, TenantEventLog};

#[test]
fn conformance_full_durability() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "conf_full");
    conformance::run_all(&|| {
        Box::new(
            PgEventLog::connect(
                &url,
                &schemas.fresh(),
                conformance::fresh_node(),
                Durability::Full,
            )
            .unwrap(),
        ) as Box<dyn TenantEventLog>
    });
}

#[test]
fn conformance_normal_durability() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "conf_normal");
    conformance::run_all(&|| {
        Box::new(
            PgEventLog::connect(
                &url,
                &schemas.fresh(),
                conformance::fresh_node(),
                Durability::Normal,
            )
            .unwrap(),
        ) as Box<dyn TenantEventLog>
    });
}
