//! The configuration built-ins: `config.set`, `config.get`, `config.list` and `config.history`,
//! through the front door like any other command (guarded, rate limited, audited), over the
//! instance's [`ConfigStore`](nodus_fabric::config::ConfigStore).
//!
//! Domains are registered by the host ([`crate::NodusBuilder::config_domain`]), each with a JSON
//! Schema per key. A configuration key `<domain>.<key>` that names a policy key is refused
//! (`ShadowsPolicy`, naming both): at registration against the system policy, and on every
//! `config.set` against the caller's tenant's policy. Labels apply as for objects: a value above
//! the caller is *absent* (`NotSet`). The error codes are [`ConfigError::code`]; see
//! `docs/fabric.md`, "Configuration".

use nodus_fabric::config::{ConfigError, ConfigHistoryEntry, ConfigValue, Scope};
use nodus_policy::PolicySnapshot;
use nodus_registry::commands::{Command, CommandError, CommandSpec, Context};
use serde::Deserialize;
use serde_json::Value;

use crate::builtins::{instance, tenant_snapshot as snapshot};
use crate::nodus::WeakNodus;

fn config_error(e: ConfigError) -> CommandError {
    CommandError::new(e.code(), e.to_string())
}

/// `ShadowsPolicy` when `domain.key` names a key of the snapshot's policy schema.
pub(crate) fn check_shadow(
    snap: &PolicySnapshot,
    domain: &str,
    key: &str,
) -> Result<(), ConfigError> {
    let name = format!("{domain}.{key}");
    if snap.declares(&name) {
        return Err(ConfigError::ShadowsPolicy {
            config_key: name.clone(),
            policy_key: name,
        });
    }
    Ok(())
}

/// Input of `config.set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// The domain.
    pub domain: String,
    /// The key.
    pub key: String,
    /// The value (valid under the key's schema).
    pub value: Value,
    /// `tenant` (default) or `user` (the caller's own value, where the key allows it).
    #[serde(default = "tenant_scope")]
    pub scope: Scope,
    /// The label (default: the caller's clearance).
    #[serde(default)]
    pub label: Option<String>,
    /// The version the caller expects at that label (0: unset); a mismatch is `Conflict`.
    #[serde(default)]
    pub expected_version: Option<u64>,
}

fn tenant_scope() -> Scope {
    Scope::Tenant
}

/// `config.set`: sets a value (one `config.set` event).
pub struct ConfigSet(pub(crate) WeakNodus);

impl Command for ConfigSet {
    type Input = SetConfig;
    type Output = ConfigValue;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("config.set").description("set a configuration value")
    }
    fn call(&self, ctx: &Context, input: SetConfig) -> Result<ConfigValue, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        check_shadow(&snap, &input.domain, &input.key).map_err(config_error)?;
        let out = n
            .inner
            .config
            .set_checked(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                input.scope,
                &input.domain,
                &input.key,
                input.value,
                input.label.as_deref(),
                input.expected_version,
            )
            .map_err(config_error)?;
        let payload = serde_json::json!({
            "domain": out.domain, "key": out.key, "scope": out.scope, "label": out.label,
            "version": out.version,
        });
        let _ = n
            .inner
            .events
            .publish("config.changed", Some(ctx.tenant()), payload);
        Ok(out)
    }
}

/// Input naming a configuration key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    /// The domain.
    pub domain: String,
    /// The key.
    pub key: String,
}

/// `config.get`: the value the caller sees (its own where the key allows and it has one, else the
/// tenant's).
pub struct ConfigGet(pub(crate) WeakNodus);

impl Command for ConfigGet {
    type Input = ConfigKey;
    type Output = ConfigValue;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("config.get").description("read a configuration value")
    }
    fn call(&self, ctx: &Context, input: ConfigKey) -> Result<ConfigValue, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        n.inner
            .config
            .get(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.domain,
                &input.key,
            )
            .map_err(config_error)
    }
}

/// Input of `config.list`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// Only this domain.
    #[serde(default)]
    pub domain: Option<String>,
}

/// `config.list`: every value the caller sees, by domain and key.
pub struct ConfigList(pub(crate) WeakNodus);

impl Command for ConfigList {
    type Input = Option<ListConfig>;
    type Output = Vec<ConfigValue>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("config.list").description("list the configuration values the caller sees")
    }
    fn call(
        &self,
        ctx: &Context,
        input: Option<ListConfig>,
    ) -> Result<Vec<ConfigValue>, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        let input = input.unwrap_or_default();
        n.inner
            .config
            .list(ctx.tenant(), &snap, ctx.subject(), input.domain.as_deref())
            .map_err(config_error)
    }
}

/// `config.history`: the sets of one key the caller may see.
pub struct ConfigHistory(pub(crate) WeakNodus);

impl Command for ConfigHistory {
    type Input = ConfigKey;
    type Output = Vec<ConfigHistoryEntry>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("config.history").description("the history of a configuration value")
    }
    fn call(
        &self,
        ctx: &Context,
        input: ConfigKey,
    ) -> Result<Vec<ConfigHistoryEntry>, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        n.inner
            .config
            .history(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.domain,
                &input.key,
            )
            .map_err(config_error)
    }
}
