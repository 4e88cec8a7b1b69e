//! Shared fixtures for nodus-core's integration tests: a small policy, three commands.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_core::{
    ActorId, Command, CommandError, CommandSpec, Context, Label, MasterKey, Nodus, PolicySources,
    Subject, TenantId,
};
use serde::{Deserialize, Serialize};

pub const SYSTEM: &str = r#"
[mac]
compartments = ["CRYPTO", "NOFORN"]

[audit]
durability = "normal"
checkpoint_every = 64
checkpoint_interval = "50ms"
"#;

pub fn tenant_toml(viewer_can_create: bool) -> String {
    let viewer = if viewer_can_create {
        r#"["notes.read", "notes.create"]"#
    } else {
        r#"["notes.read"]"#
    };
    format!(
        r#"
[rbac.roles]
viewer = {viewer}
editor = ["notes.*", "reports.read"]
admin = ["*"]

[rate.limits]
default = {{ rate = 10000, per = "1s", burst = 10000 }}
strict = {{ rate = 2, per = "1s", burst = 2 }}

[limits]
max_payload_bytes = 256
"#
    )
}

pub fn sources(viewer_can_create: bool) -> PolicySources {
    PolicySources::new()
        .with_system("system.toml", SYSTEM)
        .with_tenant(
            tenant("acme"),
            "tenants/acme.toml",
            &tenant_toml(viewer_can_create),
        )
        .with_tenant(tenant("globex"), "tenants/globex.toml", &tenant_toml(false))
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

pub fn actor(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct NewNote {
    pub title: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct Note {
    pub id: u64,
    pub title: String,
}

/// `notes.create`: echoes the title; fails with `EmptyTitle` on an empty one.
pub struct CreateNote;
impl Command for CreateNote {
    type Input = NewNote;
    type Output = Note;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.create")
    }
    fn call(&self, _ctx: &Context, input: NewNote) -> Result<Note, CommandError> {
        if input.title.is_empty() {
            return Err(CommandError::new("EmptyTitle", "a note needs a title"));
        }
        Ok(Note {
            id: 1,
            title: input.title,
        })
    }
}

/// `reports.read`: needs clearance SECRET//CRYPTO.
pub struct ReadReport;
impl Command for ReadReport {
    type Input = ();
    type Output = &'static str;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("reports.read").min_label("SECRET//CRYPTO")
    }
    fn call(&self, _ctx: &Context, _: ()) -> Result<&'static str, CommandError> {
        Ok("the report")
    }
}

/// `notes.export`: rate class `strict` (2 per second, burst 2).
pub struct ExportNotes;
impl Command for ExportNotes {
    type Input = ();
    type Output = u32;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.export").rate_class("strict")
    }
    fn call(&self, _ctx: &Context, _: ()) -> Result<u32, CommandError> {
        Ok(7)
    }
}

/// A trivial command for allocation counting and benches.
pub struct Ping;
impl Command for Ping {
    type Input = u64;
    type Output = u64;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.ping").permission("notes.read")
    }
    fn call(&self, _ctx: &Context, input: u64) -> Result<u64, CommandError> {
        Ok(input + 1)
    }
}

pub fn master() -> MasterKey {
    MasterKey::from_bytes([7u8; 32])
}

pub fn build_in_memory() -> Nodus {
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(false))
        .command(CreateNote)
        .command(ReadReport)
        .command(ExportNotes)
        .command(Ping)
        .build()
        .unwrap()
}

/// A subject of a tenant that has no policy (so `Nodus::subject` cannot make it), under the current
/// label scheme.
pub fn unknown_tenant_subject(nodus: &Nodus, t: &str, a: &str, roles: &[&str]) -> Subject {
    let scheme = nodus.policy().system_snapshot().label_scheme().clone();
    Subject::new(
        tenant(t),
        actor(a),
        nodus.policy().symbols().role_set(roles),
        Label::BOTTOM,
        &scheme,
    )
}

pub fn ctx(nodus: &Nodus, t: &str, a: &str, roles: &[&str], clearance: &str) -> Context {
    let tenant = tenant(t);
    let subject = nodus.subject(&tenant, actor(a), roles, clearance).unwrap();
    nodus.context(&tenant, subject, "session-1")
}
