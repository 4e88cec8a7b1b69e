//! Helpers for the tests that need a PostgreSQL server: the URL from `NODUS_PG_URL`, and fresh
//! random schemas that are dropped when the test ends (also when it fails).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;

/// `NODUS_PG_URL`, or `None` after saying on stderr that the test is skipped.
pub fn url() -> Option<String> {
    match std::env::var("NODUS_PG_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            eprintln!("skipping: NODUS_PG_URL is not set");
            None
        }
    }
}

/// A raw client, for what the tests do behind the log's back.
pub fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// A random schema name starting with `nodus_test_<prefix>_`.
pub fn random_schema(prefix: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    format!("nodus_test_{prefix}_{}", hex::encode(b))
}

/// Hands out fresh schemas and drops them all on drop.
pub struct Schemas {
    url: String,
    prefix: String,
    made: RefCell<Vec<String>>,
}

impl Schemas {
    pub fn new(url: &str, prefix: &str) -> Self {
        Schemas {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            made: RefCell::new(Vec::new()),
        }
    }

    /// A new schema name (the log creates the schema).
    pub fn fresh(&self) -> String {
        let s = random_schema(&self.prefix);
        self.made.borrow_mut().push(s.clone());
        s
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let made = self.made.borrow();
        if made.is_empty() {
            return;
        }
        // Best effort: a leftover schema is harmless (random name) and visible by its prefix.
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            for s in made.iter() {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
            }
        }
    }
}
