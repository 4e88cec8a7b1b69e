//! The plugin registry: signed manifests, trust and policy checks, quarantine.
